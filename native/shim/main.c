/* provision-shim: option parsing and daemonizing. See shim.h for what it does.
 *
 *   provision-shim --state F --pid-file F --log F [--name N] [--restart POLICY]
 *                  [--stop-signal SIG] [--stop-timeout SECS] [--stop-file F]
 *                  [--log-max-size BYTES] [--log-max-files N] [--backoff-max-ms MS]
 *                  [--backoff-reset-ms MS] [--exit-command PATH [--exit-command-arg ARG]...]
 *                  [--health-cmd PATH [--health-cmd-arg ARG]... --health-file F [--health-pid-file F]
 *                   [--health-interval SECS] [--health-timeout SECS] [--health-retries N]
 *                   [--health-start-period SECS]]
 *                  [--on-change PATH [--on-change-arg ARG]...]
 *                  [--keep-stdin] [--foreground] -- COMMAND [ARG...]
 *
 * --exit-command (as conmon's): once the command is done for good and the pid file is released,
 * PATH runs with the ARGs, detached, stdio on /dev/null; the shim does not wait for it.
 *
 * --on-change: PATH with the ARGs runs (detached, not waited for) whenever the command exits or the
 * healthcheck's status changes: what keeps a replicated service's published ports on its healthy
 * replicas.
 *
 * --keep-stdin (docker run -i, compose stdin_open): the command's stdin is a pipe the supervisor holds
 * open and never writes, instead of /dev/null, so a program reading stdin waits rather than ending.
 *
 * --health-cmd (the container's healthcheck, health.c): PATH with the ARGs runs every interval while
 * the command runs; the health state goes to the --health-file. Defaults are Docker's: 30 s
 * interval, 30 s timeout, 3 retries, no start period. SIGUSR1 asks for a check now.
 *
 * Without --foreground the launcher returns once the command has started, printing
 * "<shim pid> <child pid>", or fails with the reason (e.g. exec: No such file or directory);
 * the supervisor itself runs on, detached (double fork + setsid), with stdio on /dev/null. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "shim.h"

static void usage(void) {
  fprintf(stderr, "usage: provision-shim --state F --pid-file F --log F [--name N] [--restart POLICY]\n"
                  "       [--stop-signal SIG] [--stop-timeout SECS] [--stop-file F] [--log-max-size BYTES]\n"
                  "       [--log-max-files N] [--backoff-max-ms MS] [--backoff-reset-ms MS] [--keep-stdin] [--foreground]\n"
                  "       [--exit-command PATH [--exit-command-arg ARG]...] [--on-change PATH [--on-change-arg ARG]...]\n"
                  "       [--health-cmd PATH [--health-cmd-arg ARG]... --health-file F [--health-pid-file F]\n"
                  "        [--health-interval SECS] [--health-timeout SECS] [--health-retries N]\n"
                  "        [--health-start-period SECS] [--health-start-interval SECS]] -- COMMAND [ARG...]\n");
}

/* A duration in seconds (fractions allowed) as milliseconds; negative on a bad value. */
static long parse_secs(const char *text, double min_secs) {
  char *end;
  double secs = strtod(text, &end);
  if (end == text || *end || secs < min_secs || secs > 86400.0 * 365)
    return -1;
  return (long)(secs * 1000 + 0.5);
}

enum { OPT_CHANGE = 250, OPT_CHANGE_ARG, OPT_HEALTH_CMD = 256, OPT_HEALTH_ARG, OPT_HEALTH_FILE, OPT_HEALTH_PID, OPT_HEALTH_INTERVAL,
       OPT_HEALTH_TIMEOUT, OPT_HEALTH_RETRIES, OPT_HEALTH_START, OPT_HEALTH_START_INTERVAL };

static int parse_args(int argc, char **argv, struct shim_config *cfg, pr_error *err) {
  static const struct option opts[] = {
      {"name", required_argument, 0, 'n'},         {"state", required_argument, 0, 's'},
      {"pid-file", required_argument, 0, 'p'},     {"log", required_argument, 0, 'l'},
      {"restart", required_argument, 0, 'r'},      {"stop-signal", required_argument, 0, 'S'},
      {"stop-timeout", required_argument, 0, 'T'}, {"stop-file", required_argument, 0, 'F'},
      {"log-max-size", required_argument, 0, 'M'}, {"log-max-files", required_argument, 0, 'N'},
      {"backoff-max-ms", required_argument, 0, 'B'}, {"backoff-reset-ms", required_argument, 0, 'R'},
      {"foreground", no_argument, 0, 'f'},         {"keep-stdin", no_argument, 0, 'k'},
      {"exit-command", required_argument, 0, 'x'}, {"exit-command-arg", required_argument, 0, 'a'},
      {"on-change", required_argument, 0, OPT_CHANGE},
      {"on-change-arg", required_argument, 0, OPT_CHANGE_ARG},
      {"health-cmd", required_argument, 0, OPT_HEALTH_CMD},
      {"health-cmd-arg", required_argument, 0, OPT_HEALTH_ARG},
      {"health-file", required_argument, 0, OPT_HEALTH_FILE},
      {"health-pid-file", required_argument, 0, OPT_HEALTH_PID},
      {"health-interval", required_argument, 0, OPT_HEALTH_INTERVAL},
      {"health-timeout", required_argument, 0, OPT_HEALTH_TIMEOUT},
      {"health-retries", required_argument, 0, OPT_HEALTH_RETRIES},
      {"health-start-period", required_argument, 0, OPT_HEALTH_START},
      {"health-start-interval", required_argument, 0, OPT_HEALTH_START_INTERVAL},
      {"help", no_argument, 0, 'h'},               {0, 0, 0, 0},
  };
  *cfg = (struct shim_config){
      .name = "", .log_max_size = 10 * 1024 * 1024, .log_max_files = 3, .policy = POLICY_NO,
      .policy_text = "no", .stop_signal = SIGTERM, .stop_timeout_ms = 10000,
      .backoff_max_ms = 60000, .backoff_reset_ms = 10000,
      .health = {.interval_ms = 30000, .timeout_ms = 30000, .retries = 3},
  };
  int c;
  char *end;
  size_t n_exit = 0;
  /* argv has room for every exit argument: at most argc of them, plus the path and NULL */
  cfg->exit_argv = NULL;
  char **exit_argv = calloc((size_t)argc + 2, sizeof(char *));
  size_t n_health = 0, n_change = 0;
  char **health_argv = calloc((size_t)argc + 2, sizeof(char *));
  char **change_argv = calloc((size_t)argc + 2, sizeof(char *));
  if (!exit_argv || !health_argv || !change_argv)
    return pr_fail(err, errno, "calloc");
  while ((c = getopt_long(argc, argv, "+", opts, NULL)) != -1) {
    switch (c) {
    case 'n': cfg->name = optarg; break;
    case 's': cfg->state_path = optarg; break;
    case 'p': cfg->pid_path = optarg; break;
    case 'l': cfg->log_path = optarg; break;
    case 'F': cfg->stop_path = optarg; break;
    case 'f': cfg->foreground = true; break;
    case 'k': cfg->keep_stdin = true; break;
    case 'x':
      if (optarg[0] != '/')
        return pr_fail(err, 0, "--exit-command must be an absolute path (got %s)", optarg);
      exit_argv[0] = optarg;
      if (n_exit == 0)
        n_exit = 1;
      cfg->exit_argv = exit_argv;
      break;
    case 'a':
      if (n_exit == 0)
        n_exit = 1; /* the path's slot; --exit-command must come too (checked below) */
      exit_argv[n_exit++] = optarg;
      break;
    case 'r':
      if (parse_policy(optarg, cfg, err) < 0)
        return -1;
      break;
    case 'S': {
      int sig = parse_signal(optarg, err);
      if (sig < 0)
        return -1;
      cfg->stop_signal = sig;
      break;
    }
    case 'T': {
      double secs = strtod(optarg, &end);
      if (end == optarg || *end || secs < 0)
        return pr_fail(err, 0, "bad --stop-timeout %s", optarg);
      cfg->stop_timeout_ms = (long)(secs * 1000);
      break;
    }
    case 'M':
      cfg->log_max_size = strtoll(optarg, &end, 10);
      if (end == optarg || *end || cfg->log_max_size < 1024)
        return pr_fail(err, 0, "bad --log-max-size %s (bytes, at least 1024)", optarg);
      break;
    case 'N':
      cfg->log_max_files = (int)strtol(optarg, &end, 10);
      if (end == optarg || *end || cfg->log_max_files < 1 || cfg->log_max_files > 100)
        return pr_fail(err, 0, "bad --log-max-files %s", optarg);
      break;
    case 'B':
      cfg->backoff_max_ms = strtol(optarg, &end, 10);
      if (end == optarg || *end || cfg->backoff_max_ms < 100)
        return pr_fail(err, 0, "bad --backoff-max-ms %s", optarg);
      break;
    case 'R':
      cfg->backoff_reset_ms = strtol(optarg, &end, 10);
      if (end == optarg || *end || cfg->backoff_reset_ms < 0)
        return pr_fail(err, 0, "bad --backoff-reset-ms %s", optarg);
      break;
    case OPT_CHANGE:
      if (optarg[0] != '/')
        return pr_fail(err, 0, "--on-change must be an absolute path (got %s)", optarg);
      change_argv[0] = optarg;
      if (n_change == 0)
        n_change = 1;
      cfg->change_argv = change_argv;
      break;
    case OPT_CHANGE_ARG:
      if (n_change == 0)
        n_change = 1;
      change_argv[n_change++] = optarg;
      break;
    case OPT_HEALTH_CMD:
      health_argv[0] = optarg;
      if (n_health == 0)
        n_health = 1;
      cfg->health.argv = health_argv;
      break;
    case OPT_HEALTH_ARG:
      if (n_health == 0)
        n_health = 1;
      health_argv[n_health++] = optarg;
      break;
    case OPT_HEALTH_FILE: cfg->health.path = optarg; break;
    case OPT_HEALTH_PID: cfg->health.pid_path = optarg; break;
    case OPT_HEALTH_INTERVAL:
    case OPT_HEALTH_TIMEOUT:
    case OPT_HEALTH_START: {
      /* Docker wants interval and timeout >= 1 ms; a start period may be 0 */
      long ms = parse_secs(optarg, c == OPT_HEALTH_START ? 0 : 0.001);
      if (ms < 0)
        return pr_fail(err, 0, "bad --%s %s", c == OPT_HEALTH_INTERVAL ? "health-interval"
                         : c == OPT_HEALTH_TIMEOUT ? "health-timeout" : "health-start-period", optarg);
      *(c == OPT_HEALTH_INTERVAL ? &cfg->health.interval_ms
        : c == OPT_HEALTH_TIMEOUT ? &cfg->health.timeout_ms : &cfg->health.start_period_ms) = ms;
      break;
    }
    case OPT_HEALTH_START_INTERVAL: {
      long ms = parse_secs(optarg, 0.001);
      if (ms < 0)
        return pr_fail(err, 0, "bad --health-start-interval %s", optarg);
      cfg->health.start_interval_ms = ms;
      break;
    }
    case OPT_HEALTH_RETRIES:
      cfg->health.retries = (int)strtol(optarg, &end, 10);
      if (end == optarg || *end || cfg->health.retries < 1 || cfg->health.retries > 1000000)
        return pr_fail(err, 0, "bad --health-retries %s (at least 1)", optarg);
      break;
    case 'h': usage(); exit(0);
    default: usage(); exit(2);
    }
  }
  if (!cfg->state_path || !cfg->pid_path || !cfg->log_path)
    return pr_fail(err, 0, "--state, --pid-file and --log are required");
  if (n_exit > 0 && !cfg->exit_argv)
    return pr_fail(err, 0, "--exit-command-arg needs --exit-command");
  if (n_change > 0 && !cfg->change_argv)
    return pr_fail(err, 0, "--on-change-arg needs --on-change");
  cfg->health.change_argv = cfg->change_argv;
  if (n_health > 0 && !cfg->health.argv)
    return pr_fail(err, 0, "--health-cmd-arg needs --health-cmd");
  if (cfg->health.argv && !cfg->health.path)
    return pr_fail(err, 0, "--health-cmd needs --health-file");
  if (!cfg->health.argv && (cfg->health.path || cfg->health.pid_path))
    return pr_fail(err, 0, "--health-file and --health-pid-file need --health-cmd");
  /* The daemon works from / (so it pins no mount): make the paths absolute first. */
  const char **paths[] = {&cfg->state_path, &cfg->pid_path, &cfg->log_path, &cfg->stop_path,
                          &cfg->health.path, &cfg->health.pid_path};
  for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
    if (*paths[i] && (*paths[i])[0] != '/') {
      char *abs = NULL, cwd[4096];
      if (!getcwd(cwd, sizeof cwd) || asprintf(&abs, "%s/%s", cwd, *paths[i]) < 0)
        return pr_fail(err, errno, "resolve %s", *paths[i]);
      *paths[i] = abs; /* lives as long as the process */
    }
  }
  if (optind >= argc)
    return pr_fail(err, 0, "no command given");
  cfg->argv = argv + optind;
  return 0;
}

/* Holds an exclusive lock on the pid file for the shim's lifetime: a second shim for the same
 * container fails here instead of racing the first. */
static int take_pid_file(const char *path, pr_error *err) {
  int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0)
    return pr_fail(err, errno, "open %s", path);
  if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
    int e = errno;
    close(fd);
    if (e == EWOULDBLOCK)
      return pr_fail(err, 0, "already supervised (pid file %s is locked)", path);
    return pr_fail(err, e, "lock %s", path);
  }
  char buf[32];
  int n = snprintf(buf, sizeof buf, "%d\n", (int)getpid());
  if (ftruncate(fd, 0) < 0 || write_all(fd, buf, (size_t)n) < 0) {
    int e = errno;
    close(fd);
    return pr_fail(err, e, "write %s", path);
  }
  return fd; /* kept open: the lock lives as long as we do */
}

static void close_inherited(int keep) {
  for (int fd = 3; fd < 1024; fd++)
    if (fd != keep)
      close(fd);
}

static int run_daemon(struct shim_config *cfg, int notify_fd, pr_error *err) {
  cleanup_close int pidfd = take_pid_file(cfg->pid_path, err);
  if (pidfd < 0) {
    if (notify_fd >= 0) {
      char buf[600];
      int n = snprintf(buf, sizeof buf, "error %s\n", err->msg);
      (void)write_all(notify_fd, buf, (size_t)n);
    }
    return -1;
  }
  int rc = supervise(cfg, notify_fd, err);
  /* Gone for good: drop the pid file so nobody signals a recycled pid. */
  unlink(cfg->pid_path);
  if (rc == 0 && cfg->exit_argv) {
    /* Release the lock first: the exit command sees this container as not running. */
    shim_closep(&pidfd);
    pidfd = -1;
    run_exit_command(cfg);
  }
  return rc;
}

void run_exit_command(const struct shim_config *cfg) {
  /* Forked and not waited for (conmon does the same): it may take the container's locks and
   * remove the very files this process was writing. Its child is reparented to init (or a
   * subreaper); stdio is already /dev/null in the daemon. */
  pid_t pid = fork();
  if (pid != 0)
    return;
  setsid();
  execv(cfg->exit_argv[0], cfg->exit_argv);
  _exit(127);
}

int main(int argc, char **argv) {
  struct shim_config cfg;
  pr_error err = {0};
  pr_log_init("provision-shim", NULL, false);
  if (parse_args(argc, argv, &cfg, &err) < 0) {
    pr_log_error(&err);
    return 2;
  }
  if (cfg.foreground) {
    if (run_daemon(&cfg, -1, &err) < 0) {
      pr_log_error(&err);
      return 1;
    }
    return 0;
  }

  int notify[2];
  if (pipe2(notify, O_CLOEXEC) < 0) {
    pr_fail(&err, errno, "pipe");
    pr_log_error(&err);
    return 1;
  }
  pid_t pid = fork();
  if (pid < 0) {
    pr_fail(&err, errno, "fork");
    pr_log_error(&err);
    return 1;
  }
  if (pid > 0) {
    /* The launcher: wait for the daemon's word, then report and leave. */
    close(notify[1]);
    char buf[700];
    size_t used = 0;
    ssize_t n;
    while (used < sizeof buf - 1 && ((n = read(notify[0], buf + used, sizeof buf - 1 - used)) > 0 ||
                                     (n < 0 && errno == EINTR)))
      if (n > 0)
        used += (size_t)n;
    buf[used] = '\0';
    waitpid(pid, NULL, 0);
    int spid, cpid;
    if (sscanf(buf, "ok %d %d", &spid, &cpid) == 2) {
      printf("%d %d\n", spid, cpid);
      return 0;
    }
    char *nl = strchr(buf, '\n');
    if (nl)
      *nl = '\0';
    pr_log_errorf("%s", strncmp(buf, "error ", 6) == 0 ? buf + 6 : "supervisor died before starting");
    return 1;
  }
  /* First child: new session, then fork again so the daemon is no session leader and can
   * never reacquire a terminal; it is reparented to init (or a subreaper). */
  close(notify[0]);
  if (setsid() < 0)
    _exit(1);
  pid = fork();
  if (pid != 0)
    _exit(pid < 0 ? 1 : 0);
  int devnull = open("/dev/null", O_RDWR);
  if (devnull >= 0) {
    dup2(devnull, 0);
    dup2(devnull, 1);
    dup2(devnull, 2);
    if (devnull > 2)
      close(devnull);
  }
  close_inherited(notify[1]);
  if (chdir("/") < 0)
    _exit(1);
  return run_daemon(&cfg, notify[1], &err) < 0 ? 1 : 0;
}
