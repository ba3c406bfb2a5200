/* The runtime side of create and run: clone the init into its namespaces,
 * put it in its cgroup, write its id maps, answer its hook requests, record
 * the state.  Any failure before READY undoes everything (kill the init,
 * remove the cgroups we made and the state directory). */
#include "container.h"

#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "console.h"
#include "hooks.h"
#include "state.h"
#include "sync.h"
#include "syscalls.h"
#include "util.h"

static char *now_rfc3339(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  struct tm tm;
  gmtime_r(&ts.tv_sec, &tm);
  char b[64];
  size_t n = strftime(b, sizeof b, "%Y-%m-%dT%H:%M:%S", &tm);
  snprintf(b + n, sizeof b - n, ".%09ldZ", ts.tv_nsec);
  return xstrdup(b);
}

static int write_idmap(pid_t pid, const char *file, const struct pr_idmap *m, size_t n, const char *field,
                       pr_error *err) {
  char buf[4096];
  size_t len = 0;
  for (size_t i = 0; i < n && len < sizeof buf - 40; i++)
    len += (size_t)snprintf(buf + len, sizeof buf - len, "%u %u %u\n", m[i].container_id, m[i].host_id, m[i].size);
  cleanup_free char *path = xasprintf("/proc/%d/%s", pid, file);
  if (write_file(path, buf, len, err) < 0) return pr_prefix(err, "%s", field);
  return 0;
}

static int listen_start_sock(const char *dir, pr_error *err) {
  struct sockaddr_un addr;
  cleanup_free char *path = xasprintf("%s/start.sock", dir);
  cleanup_close int dirfd = -1;
  if (unix_addr(path, &addr, &dirfd, err) < 0) return pr_prefix(err, "--root");
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return pr_fail(err, errno, "socket");
  if (bind(fd, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(fd, 1) < 0) {
    int e = errno;
    close(fd);
    return pr_fail(err, e, "listening on %s", path);
  }
  return fd;
}

static int open_join_namespaces(struct pr_container *ct, pr_error *err) {
  for (int n = 0; n < NS__COUNT; n++) {
    ct->ns_fds[n] = -1;
    if (!ct->cfg->ns[n].path) continue;
    ct->ns_fds[n] = open(ct->cfg->ns[n].path, O_RDONLY | O_CLOEXEC);
    if (ct->ns_fds[n] < 0)
      return pr_fail(err, errno, "linux.namespaces: %s namespace path %s", ns_name((enum pr_ns)n), ct->cfg->ns[n].path);
  }
  return 0;
}

struct created {
  struct pr_container ct;
  struct pr_state st;
  pid_t pid;
  int sync_fd;      /* parent end */
  int console_peer; /* run with a terminal and no --console-socket: receives the pty */
};

static void undo(struct created *c) {
  if (c->pid > 0) {
    kill(c->pid, SIGKILL);
    while (waitpid(c->pid, NULL, 0) < 0 && errno == EINTR) {}
  }
  if (c->ct.cg.drv) cgroup_destroy(&c->ct.cg, NULL);
  if (c->ct.state_dir) state_dir_remove(c->ct.state_dir);
}

/* Descriptors the init needs, opened before anything is created: the namespaces
 * to join, --stdin/--stdout/--stderr files, the console socket. */
static int open_inputs(struct pr_config *cfg, const struct pr_create_opts *o, bool for_run, struct created *c,
                       pr_error *err) {
  struct pr_container *ct = &c->ct;
  if (!cfg->ns[NS_MOUNT].present)
    return pr_fail(err, 0, "config.json: linux.namespaces: a mount namespace is required");
  if (cfg->process.terminal && !o->console_socket && !(for_run && !o->detach))
    return pr_fail(err, 0, "config.json: process.terminal is true but no --console-socket was given");
  if (open_join_namespaces(ct, err) < 0) return -1;
  for (int k = 0; k < 3; k++) {
    ct->stdio_fds[k] = -1;
    if (!o->stdio[k]) continue;
    ct->stdio_fds[k] = open(o->stdio[k], (k == 0 ? O_RDONLY : O_WRONLY | O_CREAT | O_APPEND) | O_CLOEXEC, 0644);
    if (ct->stdio_fds[k] < 0) return pr_fail(err, errno, "--%s %s", k == 0 ? "stdin" : k == 1 ? "stdout" : "stderr", o->stdio[k]);
  }
  if (o->console_socket && cfg->process.terminal && (ct->console_fd = console_connect(o->console_socket, err)) < 0)
    return -1;
  if (cfg->process.terminal && !o->console_socket) {
    /* run without --console-socket: we are the console socket's other end */
    int cp[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, cp) < 0) return pr_fail(err, errno, "socketpair");
    c->console_peer = cp[0];
    ct->console_fd = cp[1];
  }
  return 0;
}

/* The state directory (with start.sock for create) and the cgroup, created and
 * limited before the clone so the init never runs unconstrained. */
static int prepare_state_and_cgroup(struct pr_config *cfg, const struct pr_create_opts *o, bool for_run,
                                    struct created *c, pr_error *err) {
  struct pr_container *ct = &c->ct;
  if (state_dir_create(o->root, o->id, &ct->state_dir, err) < 0) return -1;
  if (!for_run && (ct->start_listen_fd = listen_start_sock(ct->state_dir, err)) < 0) return -1;
  ct->cg.drv = cgroup_detect();
  ct->cg.path = cfg->cgroups_path && *cfg->cgroups_path ? xstrdup(cfg->cgroups_path) : xasprintf("/%s", o->id);
  if (ct->cg.drv->create(&ct->cg, &cfg->resources, err) < 0 || ct->cg.drv->apply(&ct->cg, &cfg->resources, err) < 0)
    return -1;
  return 0;
}

/* Clones the init into its new namespaces (the child runs init_main and never
 * returns here).  *into_cgroup tells whether clone3 already placed it in its v2
 * cgroup. */
static int clone_init(struct created *c, bool for_run, bool *into_cgroup, pr_error *err) {
  struct pr_container *ct = &c->ct;
  struct pr_config *cfg = ct->cfg;
  int sp[2];
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sp) < 0) return pr_fail(err, errno, "socketpair");
  c->sync_fd = sp[0];
  ct->sync_fd = sp[1];
  unsigned long flags = 0;
  for (int n = 0; n < NS__COUNT; n++)
    if (cfg->ns[n].present && !cfg->ns[n].path && n != NS_CGROUP && n != NS_TIME)
      flags |= (unsigned long)ns_clone_flag((enum pr_ns)n);
  /* Joining a pid namespace only affects children: enter it here, so the
   * clone below is born inside it. */
  if (cfg->ns[NS_PID].path && setns(ct->ns_fds[NS_PID], CLONE_NEWPID) < 0)
    return pr_fail(err, errno, "linux.namespaces: joining pid namespace %s", cfg->ns[NS_PID].path);
  if (cfg->ns[NS_USER].path) {
    /* Namespaces created for a container that joins a user namespace must
     * be owned by that user namespace, so they cannot come from this clone:
     * the child enters the user namespace, unshares them and forks the init
     * (runc's nsexec does the same dance).  run waits for that grandchild,
     * so become its reaper. */
    ct->unshare_flags = flags;
    flags = 0;
    if (for_run) prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
  }
  /* v2 (or hybrid's unified tree): be born in the cgroup via clone3; v1:
   * the init joins itself (cgroup_join_self_v1).  Older kernels fall back
   * to clone + a cgroup.procs write (finish_clone). */
  *into_cgroup = false;
  pid_t pid = -1;
  const char *v2leaf = cgroup_v2_leaf(&ct->cg);
  if (v2leaf) {
    cleanup_close int cgfd = open(v2leaf, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (cgfd >= 0) {
      pid = sys_clone3_fork(flags, cgfd);
      *into_cgroup = pid >= 0;
    }
  }
  if (pid < 0) pid = sys_clone_fork(flags);
  if (pid < 0) return pr_fail(err, errno, "clone (namespaces 0x%lx)", flags);
  if (pid == 0) {
    close(c->sync_fd);
    init_main(ct);
  }
  c->pid = pid;
  close(ct->sync_fd);
  return 0;
}

/* The runtime's half of the clone: learn the init's pid from a stage-1 child,
 * drop what only the init needed, put it in its v2 cgroup if clone3 could not,
 * and write the id maps of a new user namespace. */
static int finish_clone(struct created *c, bool into_cgroup, pr_error *err) {
  struct pr_container *ct = &c->ct;
  struct pr_config *cfg = ct->cfg;
  if (ct->unshare_flags) {
    struct pr_sync_msg m;
    int st;
    if (sync_recv(c->sync_fd, &m, err) < 0) return -1;
    while (waitpid(c->pid, &st, 0) < 0 && errno == EINTR) {}
    if (m.type == SYNC_ERROR) {
      c->pid = 0;
      return pr_fail(err, 0, "%s", m.text);
    }
    c->pid = m.value;
  }
  if (ct->start_listen_fd >= 0) {
    close(ct->start_listen_fd);
    ct->start_listen_fd = -1;
  }
  if (ct->console_fd >= 0) close(ct->console_fd);
  if (!into_cgroup && cgroup_add_pid_v2(&ct->cg, c->pid, err) < 0) return -1;
  if (cfg->ns[NS_USER].present && !cfg->ns[NS_USER].path) {
    if (write_idmap(c->pid, "uid_map", cfg->uid_map, cfg->n_uid_map, "linux.uidMappings", err) < 0 ||
        write_idmap(c->pid, "gid_map", cfg->gid_map, cfg->n_gid_map, "linux.gidMappings", err) < 0)
      return -1;
  }
  return 0;
}

/* The state as hooks see it (and as state.json will record it). */
static void fill_state(struct created *c, const struct pr_create_opts *o) {
  struct pr_config *cfg = c->ct.cfg;
  struct pr_state *st = &c->st;
  st->id = (char *)o->id;
  st->bundle = cfg->bundle;
  st->rootfs = cfg->rootfs;
  st->oci_version = cfg->oci_version;
  st->annotations_json = cfg->annotations_json;
  st->hooks_json = cfg->hooks_json;
  st->config_process_json = cfg->process_json;
  st->seccomp_json = cfg->seccomp_json;
  st->userns = cfg->ns[NS_USER].present;
  st->pid = c->pid;
  st->created = now_rfc3339();
  st->cg = c->ct.cg;
}

/* Lets the init go and serves it until READY: it may ask for the
 * createRuntime hooks, which run here, in the runtime's namespaces. */
static int sync_until_ready(struct created *c, pr_error *err) {
  if (sync_send(c->sync_fd, SYNC_GO, c->pid, NULL) < 0) return pr_fail(err, errno, "starting the container init");
  for (;;) {
    struct pr_sync_msg m;
    if (sync_recv(c->sync_fd, &m, err) < 0) return -1;
    if (m.type == SYNC_READY) return 0;
    if (m.type == SYNC_ERROR) {
      pr_fail(err, 0, "%s", m.text);
      err->errnum = m.value;
      return -1;
    }
    if (m.type == SYNC_HOOKS) {
      struct pr_hooks_list *hooks = &c->ct.cfg->hooks[HOOK_CREATE_RUNTIME];
      cleanup_free char *s = state_oci_json(&c->st, "creating");
      if (hooks_run(hooks, HOOK_CREATE_RUNTIME, s, err) < 0) {
        sync_send(c->sync_fd, SYNC_ABORT, 0, NULL);
        return -1;
      }
      sync_send(c->sync_fd, SYNC_HOOKS_DONE, 0, NULL);
    }
  }
}

/* state.json (with the init's start time, so a recycled pid is never taken for
 * it) and --pid-file. */
static int record_state(struct created *c, const struct pr_create_opts *o, pr_error *err) {
  if (proc_stat(c->pid, &c->st.start_time, NULL) < 0) return pr_fail(err, errno, "reading /proc/%d/stat", c->pid);
  if (state_write(c->ct.state_dir, &c->st, err) < 0) return -1;
  if (o->pid_file) {
    char buf[32];
    int n = snprintf(buf, sizeof buf, "%d", c->pid);
    if (write_file_atomic(o->pid_file, buf, (size_t)n, 0644, false, err) < 0) return pr_prefix(err, "--pid-file");
  }
  return 0;
}

/* Everything create and run share, up to the init reporting READY.  Any
 * failure after the state directory exists undoes it all. */
static int do_create(struct pr_config *cfg, const struct pr_create_opts *o, bool for_run, struct created *c,
                     pr_error *err) {
  struct pr_container *ct = &c->ct;
  memset(c, 0, sizeof(*c));
  ct->cfg = cfg;
  ct->id = o->id;
  ct->console_fd = ct->start_listen_fd = ct->rootfd = -1;
  for (int n = 0; n < NS__COUNT; n++) ct->ns_fds[n] = -1;
  c->console_peer = -1;
  if (open_inputs(cfg, o, for_run, c, err) < 0) return -1;
  bool into_cgroup;
  if (prepare_state_and_cgroup(cfg, o, for_run, c, err) < 0 || clone_init(c, for_run, &into_cgroup, err) < 0 ||
      finish_clone(c, into_cgroup, err) < 0)
    goto fail;
  fill_state(c, o);
  if (sync_until_ready(c, err) < 0 || record_state(c, o, err) < 0) goto fail;
  return 0;
fail:
  undo(c);
  return -1;
}

int container_create(struct pr_config *cfg, const struct pr_create_opts *o, pr_error *err) {
  struct created c;
  if (do_create(cfg, o, false, &c, err) < 0) return -1;
  close(c.sync_fd);
  return 0;
}

/* After start: the init execs the user process, which closes the channel
 * (CLOEXEC); an error message instead means the exec or a startContainer
 * hook failed. */
int container_read_start_result(int fd, pr_error *err) {
  char buf[sizeof(struct pr_sync_msg)];
  ssize_t n;
  do n = recv(fd, buf, sizeof buf - 1, 0); while (n < 0 && errno == EINTR);
  if (n <= 0) return 0;
  struct pr_sync_msg *m = (struct pr_sync_msg *)buf;
  buf[n] = '\0';
  if ((size_t)n > offsetof(struct pr_sync_msg, text) && m->type == SYNC_ERROR) return pr_fail(err, 0, "%s", m->text);
  return 0;
}

static pid_t forward_to;
static void forward_signal(int sig) {
  if (forward_to > 0) kill(forward_to, sig);
}

void container_release(struct pr_state *st, const char *dir) {
  cgroup_destroy(&st->cg, NULL);
  if (st->hooks[HOOK_POSTSTOP].n) {
    pr_error e = {0};
    cleanup_free char *s = state_oci_json(st, "stopped");
    if (hooks_run(&st->hooks[HOOK_POSTSTOP], HOOK_POSTSTOP, s, &e) < 0)
      pr_warn("%s", e.msg);
  }
  state_dir_remove(dir);
}

int container_run(struct pr_config *cfg, const struct pr_create_opts *o, int *exit_code, pr_error *err) {
  struct created c;
  if (do_create(cfg, o, !o->detach, &c, err) < 0) return -1;
  if (o->detach) {
    close(c.sync_fd);
    return container_start(o->root, o->id, err);
  }
  for (int k = 0; k < HOOK__COUNT; k++) c.st.hooks[k] = cfg->hooks[k];
  forward_to = c.pid;
  struct sigaction sa = {.sa_handler = forward_signal};
  sigemptyset(&sa.sa_mask);
  int sigs[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH};
  for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++) sigaction(sigs[i], &sa, NULL);
  int r = 0, master = -1;
  if (c.console_peer >= 0) {
    if ((master = console_recv_fd(c.console_peer, err)) < 0) r = -1;
    close(c.console_peer);
  }
  if (r == 0 && (sync_send(c.sync_fd, SYNC_START, 0, NULL) < 0 || container_read_start_result(c.sync_fd, err) < 0)) r = -1;
  close(c.sync_fd);
  if (r == 0 && cfg->hooks[HOOK_POSTSTART].n) {
    pr_error e = {0};
    cleanup_free char *s = state_oci_json(&c.st, "running");
    if (hooks_run(&cfg->hooks[HOOK_POSTSTART], HOOK_POSTSTART, s, &e) < 0)
      pr_warn("%s", e.msg);
  }
  if (master >= 0) {
    if (r == 0) console_proxy(master, NULL);
    close(master);
  }
  int status = 0;
  while (waitpid(c.pid, &status, 0) < 0)
    if (errno != EINTR) break;
  *exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  container_release(&c.st, c.ct.state_dir);
  return r;
}

