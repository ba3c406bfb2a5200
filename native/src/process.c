/* The last steps before execve(2), shared by the container init and exec:
 * identity, capabilities, umask, no_new_privs, seccomp.  The order mirrors
 * runc's standard_init_linux.go: seccomp is loaded early (while we still have
 * CAP_SYS_ADMIN) unless noNewPrivileges lets an unprivileged process load it
 * last, right before exec, so the filter does not constrain our own setup. */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "caps.h"
#include "container.h"
#include "seccomp.h"
#include "syscalls.h"
#include "util.h"

int process_find_exec(const struct pr_process *p, char **out, pr_error *err) {
  const char *name = p->args[0];
  struct stat st;
  if (strchr(name, '/')) {
    if (stat(name, &st) < 0) return pr_fail(err, errno, "process.args[0]: %s", name);
    if (!S_ISREG(st.st_mode) || !(st.st_mode & 0111)) return pr_fail(err, EACCES, "process.args[0]: %s", name);
    *out = xstrdup(name);
    return 0;
  }
  const char *path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
  for (char **e = p->env; e && *e; e++)
    if (str_has_prefix(*e, "PATH=")) path = *e + 5;
  cleanup_free char *dup = xstrdup(path);
  for (char *save, *dir = strtok_r(dup, ":", &save); dir; dir = strtok_r(NULL, ":", &save)) {
    cleanup_free char *cand = xasprintf("%s/%s", *dir ? dir : ".", name);
    if (stat(cand, &st) == 0 && S_ISREG(st.st_mode) && (st.st_mode & 0111)) {
      *out = steal_ptr(&cand);
      return 0;
    }
  }
  return pr_fail(err, 0, "process.args[0]: executable file \"%s\" not found in $PATH", name);
}

int process_set_rlimits(const struct pr_process *p, pr_error *err) {
  for (size_t i = 0; i < p->n_rlimits; i++) {
    const struct pr_rlimit *r = &p->rlimits[i];
    struct rlimit rl = {r->soft, r->hard};
    if (setrlimit(r->resource, &rl) < 0) {
      int e = errno;
      struct rlimit cur;
      getrlimit(r->resource, &cur);
      if (e == EPERM)
        return pr_fail(err, 0,
                       "process.rlimits[%zu]: raising %s to hard=%llu is not permitted: the current hard limit is %llu "
                       "and the runtime lacks CAP_SYS_RESOURCE",
                       i, r->name, (unsigned long long)r->hard, (unsigned long long)cur.rlim_max);
      return pr_fail(err, e, "process.rlimits[%zu]: setting %s", i, r->name);
    }
  }
  return 0;
}

int process_set_oom(const struct pr_process *p, pr_error *err) {
  if (!p->has_oom_score_adj) return 0;
  char buf[16];
  int n = snprintf(buf, sizeof buf, "%d", p->oom_score_adj);
  cleanup_close int fd = open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC);
  if (fd < 0 || write(fd, buf, (size_t)n) != n) {
    if (errno == EACCES || errno == EPERM)
      return pr_fail(err, 0, "process.oomScoreAdj: setting %d is not permitted (lowering it needs CAP_SYS_RESOURCE)",
                     p->oom_score_adj);
    return pr_fail(err, errno, "process.oomScoreAdj: writing %d", p->oom_score_adj);
  }
  return 0;
}

int process_exec(struct pr_process *p, const struct pr_seccomp *sc, const char *path, int report_fd, pr_error *err) {
  (void)report_fd;
  /* Mark every descriptor above stdio close-on-exec: nothing of ours leaks
   * into the container (the start channel is already CLOEXEC). */
  unsigned first = 3 + (unsigned)p->preserve_fds;
  if (sys_close_range(first, ~0U, CLOSE_RANGE_CLOEXEC) < 0)
    for (int fd = (int)first; fd < 65536; fd++) fcntl(fd, F_SETFD, FD_CLOEXEC);
  /* --preserve-fds (systemd socket activation): those stay open, as in runc. */
  for (int fd = 3; fd < (int)first; fd++) fcntl(fd, F_SETFD, 0);
  if (sc && !p->no_new_privileges && seccomp_apply(sc, err) < 0) return -1;
  if (p->caps.given) {
    if (caps_drop_bounding(&p->caps, err) < 0) return -1;
    if (prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) < 0) return pr_fail(err, errno, "prctl(PR_SET_KEEPCAPS)");
  }
  if (setgroups(p->n_additional_gids, p->additional_gids) < 0 && !(errno == EPERM && p->n_additional_gids == 0))
    return pr_fail(err, errno, "process.user.additionalGids: setgroups");
  if (setresgid(p->gid, p->gid, p->gid) < 0) return pr_fail(err, errno, "process.user.gid: setting gid %u", p->gid);
  if (setresuid(p->uid, p->uid, p->uid) < 0) return pr_fail(err, errno, "process.user.uid: setting uid %u", p->uid);
  if (p->caps.given) {
    prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0);
    if (caps_apply(&p->caps, err) < 0) return -1;
  }
  umask(p->has_umask ? p->umask : 022);
  if (p->personality >= 0 && personality((unsigned long)p->personality) < 0)
    return pr_fail(err, errno, "linux.personality");
  if (p->no_new_privileges && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
    return pr_fail(err, errno, "process.noNewPrivileges");
  if (sc && p->no_new_privileges && seccomp_apply(sc, err) < 0) return -1;
  execve(path, p->args, p->env);
  return pr_fail(err, errno, "process.args[0]: exec %s", path);
}
