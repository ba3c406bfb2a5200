/* The container's init: the cloned child.  It runs the operation list built
 * by config.c, reports READY, waits for `start`, then becomes the user
 * process.  Errors travel to the runtime as one SYNC_ERROR message; only
 * the runtime prints. */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cgroups.h"
#include "console.h"
#include "container.h"
#include "devices.h"
#include "hooks.h"
#include "mounts.h"
#include "state.h"
#include "sync.h"
#include "util.h"

static char *hook_state(struct pr_container *ct, const char *status) {
  struct pr_state st = {.id = (char *)ct->id, .bundle = ct->cfg->bundle, .rootfs = ct->cfg->rootfs,
                        .created = "", .oci_version = ct->cfg->oci_version,
                        .annotations_json = ct->cfg->annotations_json, .pid = ct->host_pid};
  return state_oci_json(&st, status);
}

static int join_namespaces(struct pr_container *ct, pr_error *err) {
  /* The user namespace first: it decides which others we may enter. */
  static const enum pr_ns order[] = {NS_USER, NS_IPC, NS_UTS, NS_NET, NS_CGROUP, NS_TIME, NS_MOUNT};
  for (size_t i = 0; i < sizeof(order) / sizeof(order[0]); i++) {
    enum pr_ns n = order[i];
    if (ct->ns_fds[n] < 0) continue;
    if (setns(ct->ns_fds[n], ns_clone_flag(n)) < 0)
      return pr_fail(err, errno, "linux.namespaces: joining %s namespace %s", ns_name(n), ct->cfg->ns[n].path);
    close(ct->ns_fds[n]);
    ct->ns_fds[n] = -1;
  }
  return 0;
}

static int run_ops(struct pr_container *ct, pr_error *err) {
  struct pr_config *c = ct->cfg;
  for (size_t i = 0; i < c->n_ops; i++) {
    struct pr_op *op = &c->ops[i];
    switch (op->kind) {
      case OP_MKDEV:
      case OP_SYMLINK:
        if (devices_do_op(ct, op, err) < 0) return -1;
        break;
      case OP_HOOKS: {
        struct pr_sync_msg m;
        if (c->hooks[HOOK_CREATE_RUNTIME].n) {
          if (sync_send(ct->sync_fd, SYNC_HOOKS, 0, NULL) < 0) return pr_fail(err, errno, "sync");
          if (sync_recv(ct->sync_fd, &m, err) < 0) return -1;
          if (m.type != SYNC_HOOKS_DONE) _exit(1); /* the runtime reported the error */
        }
        if (c->hooks[HOOK_CREATE_CONTAINER].n) {
          cleanup_free char *s = hook_state(ct, "creating");
          if (hooks_run(&c->hooks[HOOK_CREATE_CONTAINER], HOOK_CREATE_CONTAINER, s, err) < 0) return -1;
        }
        break;
      }
      case OP_SYSCTL:
        if (write_file(op->a, op->b, strlen(op->b), err) < 0) return pr_prefix(err, "%s", op->field);
        break;
      case OP_HOSTNAME:
        if (sethostname(op->a, strlen(op->a)) < 0) return pr_fail(err, errno, "hostname: sethostname");
        break;
      case OP_DOMAINNAME:
        if (setdomainname(op->a, strlen(op->a)) < 0) return pr_fail(err, errno, "domainname: setdomainname");
        break;
      default:
        if (mounts_do_op(ct, op, err) < 0) return -1;
    }
  }
  return 0;
}

/* Blocks until `start` (create path: a connection on start.sock; run path:
 * SYNC_START).  Returns the fd to report late errors on. */
static int wait_start(struct pr_container *ct, pr_error *err) {
  if (ct->start_listen_fd >= 0) {
    int fd;
    do fd = accept4(ct->start_listen_fd, NULL, NULL, SOCK_CLOEXEC); while (fd < 0 && errno == EINTR);
    if (fd < 0) return pr_fail(err, errno, "waiting for start");
    close(ct->start_listen_fd);
    ct->start_listen_fd = -1;
    return fd;
  }
  struct pr_sync_msg m;
  if (sync_recv(ct->sync_fd, &m, err) < 0) return -1;
  if (m.type != SYNC_START) _exit(1);
  return ct->sync_fd;
}

/* A new time namespace applies to the children of the unsharing process and
 * its offsets can only be written before a process is in it
 * (time_namespaces(7)); so unshare, write the offsets, then move ourselves
 * in through /proc/self/ns/time_for_children. */
static int new_time_ns(struct pr_config *c, pr_error *err) {
  if (unshare(0x80 /* CLONE_NEWTIME */) < 0) return pr_fail(err, errno, "linux.namespaces: creating a time namespace");
  if (c->time_offsets[0] &&
      write_file("/proc/self/timens_offsets", c->time_offsets, strlen(c->time_offsets), err) < 0)
    return pr_prefix(err, "linux.timeOffsets");
  cleanup_close int fd = open("/proc/self/ns/time_for_children", O_RDONLY | O_CLOEXEC);
  if (fd < 0 || setns(fd, 0x80) < 0) return pr_fail(err, errno, "linux.namespaces: entering the new time namespace");
  return 0;
}

static int setup(struct pr_container *ct, char **exec_path, pr_error *err) {
  struct pr_config *c = ct->cfg;
  struct pr_sync_msg m;
  if (!ct->unshare_flags && cgroup_join_self_v1(&ct->cg, err) < 0) return -1;
  if (sync_recv(ct->sync_fd, &m, err) < 0) return -1;
  if (m.type != SYNC_GO) _exit(1);
  ct->host_pid = m.value;
  for (int k = 0; k < 3; k++)
    if (ct->stdio_fds[k] >= 0 && dup2(ct->stdio_fds[k], k) < 0) return pr_fail(err, errno, "redirecting stdio");
  if (join_namespaces(ct, err) < 0) return -1;
  if (c->ns[NS_USER].present) {
    /* Become root of the new user namespace now that the maps exist. */
    if (setresgid(0, 0, 0) < 0 || setresuid(0, 0, 0) < 0)
      return pr_fail(err, errno, "linux.uidMappings: container uid/gid 0 is not mapped");
  }
  /* The cgroup namespace is unshared only now, after the runtime moved us
   * into our cgroup, so that cgroup becomes the namespace root (runc does
   * the same in nsexec). */
  if (c->ns[NS_CGROUP].present && !c->ns[NS_CGROUP].path && unshare(CLONE_NEWCGROUP) < 0)
    return pr_fail(err, errno, "linux.namespaces: creating cgroup namespace");
  if (c->ns[NS_TIME].present && !c->ns[NS_TIME].path && new_time_ns(c, err) < 0) return -1;
  if (process_set_oom(&c->process, err) < 0) return -1;
  if (mounts_prepare_rootfs(ct, err) < 0) return -1;
  if (run_ops(ct, err) < 0) return -1;
  if (setsid() < 0) return pr_fail(err, errno, "setsid");
  if (c->process.terminal && console_setup(ct->console_fd, c->process.console_height, c->process.console_width, true, err) < 0)
    return -1;
  if (ct->console_fd >= 0) close(ct->console_fd);
  if (process_set_rlimits(&c->process, err) < 0) return -1;
  if (chdir(c->process.cwd) < 0) return pr_fail(err, errno, "process.cwd: %s", c->process.cwd);
  if (process_find_exec(&c->process, exec_path, err) < 0) return -1;
  return 0;
}

/* Stage 1 for a container joining a user namespace: enter it, create the
 * other namespaces inside it, fork the init, report its pid, exit. */
static void stage1(struct pr_container *ct) {
  pr_error err = {0};
  if (cgroup_join_self_v1(&ct->cg, &err) < 0 || join_namespaces(ct, &err) < 0) goto fail;
  if (unshare((int)ct->unshare_flags) < 0) {
    pr_fail(&err, errno, "linux.namespaces: creating namespaces in the joined user namespace");
    goto fail;
  }
  pid_t pid = fork();
  if (pid < 0) {
    pr_fail(&err, errno, "fork");
    goto fail;
  }
  if (pid > 0) {
    sync_send(ct->sync_fd, SYNC_PID, pid, NULL);
    _exit(0);
  }
  return; /* the init continues */
fail:
  sync_send_error(ct->sync_fd, &err);
  _exit(1);
}

void init_main(struct pr_container *ct) {
  pr_error err = {0};
  cleanup_free char *path = NULL;
  if (ct->unshare_flags) stage1(ct);
  /* Die with the runtime while we are still being set up (not after a
   * stage 1: our parent is gone by design). */
  else prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
  if (setup(ct, &path, &err) < 0) {
    sync_send_error(ct->sync_fd, &err);
    _exit(1);
  }
  /* After create the init outlives the runtime; under `run` it must not
   * outlive it (a killed `run` takes its container along). */
  if (ct->start_listen_fd >= 0) prctl(PR_SET_PDEATHSIG, 0, 0, 0, 0);
  if (sync_send(ct->sync_fd, SYNC_READY, 0, NULL) < 0) _exit(1);
  int report = wait_start(ct, &err);
  if (report < 0) _exit(1);
  if (report != ct->sync_fd) close(ct->sync_fd);
  if (ct->cfg->hooks[HOOK_START_CONTAINER].n) {
    cleanup_free char *s = hook_state(ct, "created");
    if (hooks_run(&ct->cfg->hooks[HOOK_START_CONTAINER], HOOK_START_CONTAINER, s, &err) < 0) {
      sync_send_error(report, &err);
      _exit(1);
    }
  }
  process_exec(&ct->cfg->process, ct->cfg->seccomp, path, report, &err);
  sync_send_error(report, &err);
  _exit(127);
}
