/* provision-runtime: the command line.  Only this file prints and exits. */
#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "caps.h"
#include "config.h"
#include "container.h"
#include "sealed.h"
#include "util.h"

#ifndef PR_VERSION
#define PR_VERSION "0.1.0"
#endif
#define SPEC_VERSION "1.1.0"

static int fail(const pr_error *err) {
  pr_log_error(err);
  return 1;
}

static int usage_error(const char *fmt, const char *arg) {
  char buf[512];
  snprintf(buf, sizeof buf, fmt, arg);
  pr_log_errorf("%s", buf);
  return 2;
}

/* --systemd-cgroup, as runc takes it: accepted by every command, it matters only to
 * create/run, which check the cgroupsPath is systemd's "slice:prefix:name" (runc's
 * specconv) and that systemd runs (its cgroups manager.New: /run/systemd/system is a
 * directory, sd_booted(3)).  On a host with systemd this runtime has no systemd driver
 * to offer, so it says so instead of quietly using cgroupfs paths. */
static int check_systemd_cgroup(const struct pr_config *cfg, pr_error *err) {
  const char *p = cfg->cgroups_path;
  if (p && *p) {
    const char *c1 = strchr(p, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
    if (!c2 || strchr(c2 + 1, ':'))
      return pr_fail(err, 0, "expected cgroupsPath to be of format \"slice:prefix:name\" for systemd cgroups, got \"%s\" instead", p);
  }
  struct stat st;
  if (lstat("/run/systemd/system", &st) < 0 || !S_ISDIR(st.st_mode))
    return pr_fail(err, 0, "systemd not running on this host, cannot use systemd cgroups manager");
  return pr_fail(err, 0, "--systemd-cgroup: this runtime has no systemd cgroup driver; use cgroupfs paths");
}

static const struct { const char *name; int sig; } signals[] = {
    {"HUP", SIGHUP}, {"INT", SIGINT}, {"QUIT", SIGQUIT}, {"ILL", SIGILL}, {"TRAP", SIGTRAP},
    {"ABRT", SIGABRT}, {"IOT", SIGIOT}, {"BUS", SIGBUS}, {"FPE", SIGFPE}, {"KILL", SIGKILL},
    {"USR1", SIGUSR1}, {"SEGV", SIGSEGV}, {"USR2", SIGUSR2}, {"PIPE", SIGPIPE}, {"ALRM", SIGALRM},
    {"TERM", SIGTERM}, {"STKFLT", SIGSTKFLT}, {"CHLD", SIGCHLD}, {"CONT", SIGCONT}, {"STOP", SIGSTOP},
    {"TSTP", SIGTSTP}, {"TTIN", SIGTTIN}, {"TTOU", SIGTTOU}, {"URG", SIGURG}, {"XCPU", SIGXCPU},
    {"XFSZ", SIGXFSZ}, {"VTALRM", SIGVTALRM}, {"PROF", SIGPROF}, {"WINCH", SIGWINCH}, {"IO", SIGIO},
    {"POLL", SIGPOLL}, {"PWR", SIGPWR}, {"SYS", SIGSYS},
};

static int parse_signal(const char *s) {
  char *end;
  long n = strtol(s, &end, 10);
  if (*s && !*end) return n > 0 && n <= SIGRTMAX ? (int)n : -1;
  if (strncasecmp(s, "SIG", 3) == 0) s += 3;
  for (size_t i = 0; i < sizeof signals / sizeof signals[0]; i++)
    if (strcasecmp(s, signals[i].name) == 0) return signals[i].sig;
  if (strncasecmp(s, "RTMIN+", 6) == 0) return SIGRTMIN + atoi(s + 6);
  if (strncasecmp(s, "RTMAX-", 6) == 0) return SIGRTMAX - atoi(s + 6);
  return -1;
}

/* Minimal long-option parser: accepts --opt value, --opt=value, -o value,
 * and both "-opt" and "--opt" spellings like runc's urfave/cli. */
struct opt {
  const char *name, *alias;
  bool takes_value;
  const char **value;
  bool *flag;
  char **list; /* repeatable option: values collected here (NULL-terminated, max 63) */
};

static int parse_opts(int argc, char **argv, struct opt *opts, char ***rest, int *nrest) {
  static char *pos[256];
  int np = 0;
  for (int i = 0; i < argc; i++) {
    char *a = argv[i];
    if (strcmp(a, "--") == 0) {
      for (i++; i < argc && np < 255; i++) pos[np++] = argv[i];
      break;
    }
    if (a[0] != '-' || a[1] == '\0') {
      /* Like urfave/cli (runc): options end at the first positional
       * argument; the rest (exec's command) is passed through untouched. */
      for (; i < argc && np < 255; i++)
        if (!(np == 1 && strcmp(argv[i], "--") == 0)) pos[np++] = argv[i]; /* exec ID -- CMD */
      break;
    }
    const char *name = a + (a[1] == '-' ? 2 : 1);
    const char *eq = strchr(name, '=');
    size_t len = eq ? (size_t)(eq - name) : strlen(name);
    struct opt *o = NULL;
    for (struct opt *p = opts; p->name; p++)
      if ((strlen(p->name) == len && strncmp(p->name, name, len) == 0) ||
          (p->alias && strlen(p->alias) == len && strncmp(p->alias, name, len) == 0))
        o = p;
    if (!o) return usage_error("unknown option %s", a);
    if (o->takes_value) {
      if (eq) *o->value = eq + 1;
      else if (i + 1 < argc) *o->value = argv[++i];
      else return usage_error("option %s needs a value", a);
      if (o->list) {
        size_t n = 0;
        while (o->list[n]) n++;
        if (n < 63) o->list[n] = (char *)*o->value;
      }
    } else {
      *o->flag = !(eq && (strcmp(eq + 1, "false") == 0 || strcmp(eq + 1, "0") == 0));
    }
  }
  pos[np] = NULL;
  *rest = pos;
  *nrest = np;
  return 0;
}

static int cmd_features(void) {
  json_object *o = json_object_new_object(), *a;
  json_object_object_add(o, "ociVersionMin", json_object_new_string("1.0.0"));
  json_object_object_add(o, "ociVersionMax", json_object_new_string(SPEC_VERSION));
  a = json_object_new_array();
  for (int k = 0; k < HOOK__COUNT; k++) json_object_array_add(a, json_object_new_string(hook_kind_name(k)));
  json_object_object_add(o, "hooks", a);
  static const char *mopts[] = {"async", "atime", "bind", "defaults", "dev", "diratime", "dirsync", "exec",
                                "mand", "noatime", "nodev", "nodiratime", "noexec", "nomand", "norelatime",
                                "nostrictatime", "nosuid", "private", "rbind", "relatime", "remount", "ro",
                                "rprivate", "rshared", "rslave", "runbindable", "rw", "shared", "slave",
                                "strictatime", "suid", "sync", "unbindable", NULL};
  a = json_object_new_array();
  for (int i = 0; mopts[i]; i++) json_object_array_add(a, json_object_new_string(mopts[i]));
  json_object_object_add(o, "mountOptions", a);
  json_object *lx = json_object_new_object();
  a = json_object_new_array();
  for (int n = 0; n < NS__COUNT; n++) json_object_array_add(a, json_object_new_string(ns_name((enum pr_ns)n)));
  json_object_object_add(lx, "namespaces", a);
  a = json_object_new_array();
  for (int c = 0; c <= cap_last_cap(); c++) json_object_array_add(a, json_object_new_string(cap_name(c)));
  json_object_object_add(lx, "capabilities", a);
  json_object *cg = json_object_new_object();
  json_object_object_add(cg, "v1", json_object_new_boolean(1));
  json_object_object_add(cg, "v2", json_object_new_boolean(1));
  json_object_object_add(cg, "systemd", json_object_new_boolean(0));
  json_object_object_add(cg, "systemdUser", json_object_new_boolean(0));
  json_object_object_add(lx, "cgroup", cg);
  json_object *sc = json_object_new_object();
  json_object_object_add(sc, "enabled", json_object_new_boolean(1));
  static const char *acts[] = {"SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS",
                               "SCMP_ACT_KILL_THREAD", "SCMP_ACT_LOG", "SCMP_ACT_TRACE", "SCMP_ACT_TRAP", NULL};
  static const char *ops[] = {"SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT", "SCMP_CMP_LE", "SCMP_CMP_LT",
                              "SCMP_CMP_MASKED_EQ", "SCMP_CMP_NE", NULL};
  a = json_object_new_array();
  for (int i = 0; acts[i]; i++) json_object_array_add(a, json_object_new_string(acts[i]));
  json_object_object_add(sc, "actions", a);
  a = json_object_new_array();
  for (int i = 0; ops[i]; i++) json_object_array_add(a, json_object_new_string(ops[i]));
  json_object_object_add(sc, "operators", a);
  a = json_object_new_array();
  json_object_array_add(a, json_object_new_string("SCMP_ARCH_X86_64"));
  json_object_array_add(a, json_object_new_string("SCMP_ARCH_X86"));
  json_object_array_add(a, json_object_new_string("SCMP_ARCH_X32"));
  json_object_object_add(sc, "archs", a);
  json_object_object_add(lx, "seccomp", sc);
  json_object *aa = json_object_new_object();
  json_object_object_add(aa, "enabled", json_object_new_boolean(0));
  json_object_object_add(lx, "apparmor", aa);
  json_object *se = json_object_new_object();
  json_object_object_add(se, "enabled", json_object_new_boolean(0));
  json_object_object_add(lx, "selinux", se);
  json_object_object_add(o, "linux", lx);
  json_object *an = json_object_new_object();
  json_object_object_add(an, "org.provisioner.runtime.version", json_object_new_string(PR_VERSION));
  json_object_object_add(o, "annotations", an);
  printf("%s\n", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_NOSLASHESCAPE));
  json_object_put(o);
  return 0;
}

/* runc update's flags as a linux.resources object. */
static char *update_flags_json(const char *memory, const char *pids, const char *shares, const char *quota,
                               const char *period) {
  json_object *o = json_object_new_object(), *m = json_object_new_object(), *p = json_object_new_object(),
              *c = json_object_new_object();
  if (memory) json_object_object_add(m, "limit", json_object_new_int64(strtoll(memory, NULL, 10)));
  if (pids) json_object_object_add(p, "limit", json_object_new_int64(strtoll(pids, NULL, 10)));
  if (shares) json_object_object_add(c, "shares", json_object_new_int64(strtoll(shares, NULL, 10)));
  if (quota) json_object_object_add(c, "quota", json_object_new_int64(strtoll(quota, NULL, 10)));
  if (period) json_object_object_add(c, "period", json_object_new_int64(strtoll(period, NULL, 10)));
  json_object_object_add(o, "memory", m);
  json_object_object_add(o, "pids", p);
  json_object_object_add(o, "cpu", c);
  char *r = xstrdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
  json_object_put(o);
  return r;
}

static const char *usage =
    "usage: provision-runtime [--root DIR] [--log FILE] [--log-format text|json] COMMAND\n"
    "  create [--bundle DIR] [--pid-file F] [--console-socket S] ID\n"
    "  start ID | state ID | list [--format json] | ps ID\n"
    "  kill [--all] ID [SIGNAL] | pause ID | resume ID\n"
    "  update [-r FILE|-] [--memory B] [--pids-limit N] [--cpu-share N] [--cpu-quota N] [--cpu-period N] ID\n"
    "  delete [--force] ID\n"
    "  run [--bundle DIR] [--pid-file F] [--console-socket S] [--detach] ID\n"
    "  exec [--process F] [--cwd D] [--env K=V] [--user U[:G]] [--tty] [--console-socket S]\n"
    "       [--pid-file F] [--detach] ID [--] [CMD ARGS...]\n"
    "  features | --version\n";

int main(int argc, char **argv) {
  const char *root = "/run/provision-runtime", *log_file = NULL, *log_format = "text";
  bool debug = false, systemd_cgroup = false, help = false, version = false;
  int i = 1;
  pr_log_init("provision-runtime", NULL, false);
  /* global options come before the command */
  for (; i < argc && argv[i][0] == '-'; i++) {
    const char *a = argv[i] + (argv[i][1] == '-' ? 2 : 1);
    const char *eq = strchr(a, '=');
    size_t len = eq ? (size_t)(eq - a) : strlen(a);
    const char **dst = NULL;
    if (len == 4 && strncmp(a, "root", 4) == 0) dst = &root;
    else if (len == 3 && strncmp(a, "log", 3) == 0) dst = &log_file;
    else if (len == 10 && strncmp(a, "log-format", 10) == 0) dst = &log_format;
    else if (len == 5 && strncmp(a, "debug", 5) == 0) { debug = true; continue; }
    else if (len == 14 && strncmp(a, "systemd-cgroup", 14) == 0) { systemd_cgroup = true; continue; }
    else if ((len == 4 && strncmp(a, "help", 4) == 0) || (len == 1 && *a == 'h')) { help = true; continue; }
    else if ((len == 7 && strncmp(a, "version", 7) == 0) || (len == 1 && *a == 'v')) { version = true; continue; }
    else return usage_error("unknown global option %s", argv[i]);
    if (eq) *dst = eq + 1;
    else if (i + 1 < argc) *dst = argv[++i];
    else return usage_error("option %s needs a value", argv[i]);
  }
  (void)debug;
  pr_log_init("provision-runtime", log_file, strcmp(log_format, "json") == 0);
  if (version) {
    printf("provision-runtime version %s\nspec: %s\n", PR_VERSION, SPEC_VERSION);
    return 0;
  }
  if (help || i >= argc) {
    fputs(usage, help ? stdout : stderr);
    return help ? 0 : 2;
  }
  if (strcmp(log_format, "text") != 0 && strcmp(log_format, "json") != 0)
    return usage_error("--log-format must be text or json, not \"%s\"", log_format);
  const char *cmd = argv[i++];
  /* Commands that put a process of ours into a container run from a sealed copy. */
  if ((strcmp(cmd, "create") == 0 || strcmp(cmd, "run") == 0 || strcmp(cmd, "exec") == 0)) {
    pr_error serr = {0};
    if (sealed_reexec(argv, &serr) < 0) return fail(&serr);
  }
  int sub_argc = argc - i;
  char **sub_argv = argv + i;
  pr_error err = {0};

  const char *bundle = ".", *pid_file = NULL, *console_socket = NULL, *process = NULL, *cwd = NULL, *user = NULL;
  const char *env1 = NULL, *stdio[3] = {NULL, NULL, NULL};
  static char *envs[64];
  bool force = false, all = false, detach = false, tty = false, nnp = false, ignored = false;
  const char *format = NULL, *preserve = NULL, *resources = NULL, *memory = NULL, *pids_limit = NULL;
  const char *cpu_shares = NULL, *cpu_quota = NULL, *cpu_period = NULL;
  struct opt opts[] = {
      {"bundle", "b", true, &bundle, NULL},   {"pid-file", NULL, true, &pid_file, NULL},
      {"console-socket", NULL, true, &console_socket, NULL},
      {"force", "f", false, NULL, &force},    {"all", "a", false, NULL, &all},
      {"detach", "d", false, NULL, &detach},  {"process", "p", true, &process, NULL},
      {"cwd", NULL, true, &cwd, NULL},        {"user", "u", true, &user, NULL},
      {"env", "e", true, &env1, NULL, envs},        {"tty", "t", false, NULL, &tty},
      {"no-new-privs", NULL, false, NULL, &nnp},
      /* runc flags that tools pass and that need no action here */
      {"no-pivot", NULL, false, NULL, &ignored}, {"no-new-keyring", NULL, false, NULL, &ignored},
      {"preserve-fds", NULL, true, &preserve, NULL}, {"format", NULL, true, &format, NULL},
      {"keep", NULL, false, NULL, &ignored},
      /* update */
      {"resources", "r", true, &resources, NULL}, {"memory", NULL, true, &memory, NULL},
      {"pids-limit", NULL, true, &pids_limit, NULL}, {"cpu-share", NULL, true, &cpu_shares, NULL},
      {"cpu-quota", NULL, true, &cpu_quota, NULL}, {"cpu-period", NULL, true, &cpu_period, NULL},
      /* provision-runtime extension: the container's stdio from files, for
       * callers that cannot hand over descriptors (runc needs the caller's). */
      {"stdin", NULL, true, &stdio[0], NULL}, {"stdout", NULL, true, &stdio[1], NULL},
      {"stderr", NULL, true, &stdio[2], NULL}, {NULL, NULL, false, NULL, NULL}};
  char **pos;
  int npos = 0;
  int pr = parse_opts(sub_argc, sub_argv, opts, &pos, &npos);
  if (pr != 0) return pr;

  if (strcmp(cmd, "features") == 0) return cmd_features();
  if (strcmp(cmd, "list") == 0) {
    cleanup_free char *out = NULL;
    if (container_list(root, format && strcmp(format, "json") == 0, &out, &err) < 0) return fail(&err);
    fputs(out, stdout);
    return 0;
  }
  if (npos < 1) return usage_error("%s: missing container id", cmd);
  const char *id = pos[0];

  if (strcmp(cmd, "create") == 0 || strcmp(cmd, "run") == 0) {
    struct pr_config *cfg;
    if (config_load(bundle, &cfg, &err) < 0) return fail(&err);
    if (systemd_cgroup && check_systemd_cgroup(cfg, &err) < 0) return fail(&err);
    struct pr_create_opts o = {root, id, bundle, pid_file, console_socket, detach, {stdio[0], stdio[1], stdio[2]},
                               preserve ? atoi(preserve) : 0};
    if (o.preserve_fds < 0 || o.preserve_fds > 1000) return usage_error("--preserve-fds: bad count \"%s\"", preserve);
    cfg->process.preserve_fds = o.preserve_fds;
    if (strcmp(cmd, "create") == 0) return container_create(cfg, &o, &err) < 0 ? fail(&err) : 0;
    int code = 0;
    if (container_run(cfg, &o, &code, &err) < 0) return fail(&err);
    return code;
  }
  if (strcmp(cmd, "start") == 0) return container_start(root, id, &err) < 0 ? fail(&err) : 0;
  if (strcmp(cmd, "state") == 0) {
    cleanup_free char *json = NULL;
    if (container_state(root, id, &json, &err) < 0) return fail(&err);
    printf("%s\n", json);
    return 0;
  }
  if (strcmp(cmd, "kill") == 0) {
    int sig = SIGTERM;
    if (npos > 1 && (sig = parse_signal(pos[1])) < 0) return usage_error("unknown signal \"%s\"", pos[1]);
    return container_kill(root, id, sig, all, &err) < 0 ? fail(&err) : 0;
  }
  if (strcmp(cmd, "update") == 0) {
    /* runc's `update -r FILE` (or `-r -` for stdin) and its common flags */
    cleanup_free char *json = NULL;
    if (resources) {
      if (strcmp(resources, "-") == 0) {
        size_t cap = 4096, n = 0;
        json = xmalloc(cap);
        for (ssize_t r; (r = read(0, json + n, cap - n - 1)) > 0;)
          if ((n += (size_t)r) + 1 >= cap) json = xrealloc(json, cap *= 2);
        json[n] = '\0';
      } else if (read_file(resources, &json, NULL, &err) < 0) {
        return fail(&err);
      }
    } else {
      json = update_flags_json(memory, pids_limit, cpu_shares, cpu_quota, cpu_period);
    }
    return container_update(root, id, json, &err) < 0 ? fail(&err) : 0;
  }
  if (strcmp(cmd, "ps") == 0) {
    cleanup_free char *out = NULL;
    if (container_ps(root, id, &out, &err) < 0) return fail(&err);
    fputs(out, stdout);
    return 0;
  }
  if (strcmp(cmd, "pause") == 0 || strcmp(cmd, "resume") == 0)
    return container_pause(root, id, strcmp(cmd, "pause") == 0, &err) < 0 ? fail(&err) : 0;
  if (strcmp(cmd, "delete") == 0) return container_delete(root, id, force, &err) < 0 ? fail(&err) : 0;
  if (strcmp(cmd, "exec") == 0) {
    struct pr_exec_opts o = {process, pos + 1, env1 ? envs : NULL, cwd, user, tty, console_socket, pid_file, detach, nnp};
    int code = 0;
    if (container_exec(root, id, &o, &code, &err) < 0) return fail(&err);
    return code;
  }
  return usage_error("unknown command \"%s\"", cmd);
}
