#include "hooks.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "syscalls.h"
#include "util.h"

static int run_one(const struct pr_hook *h, const char *field, const char *state_json, pr_error *err) {
  int pfd[2], efd[2];
  if (pipe2(pfd, O_CLOEXEC) < 0) return pr_fail(err, errno, "%s: pipe", field);
  if (pipe2(efd, O_CLOEXEC) < 0) {
    close(pfd[0]);
    close(pfd[1]);
    return pr_fail(err, errno, "%s: pipe", field);
  }
  pid_t pid = fork();
  if (pid < 0) {
    close(pfd[0]);
    close(pfd[1]);
    close(efd[0]);
    close(efd[1]);
    return pr_fail(err, errno, "%s: fork", field);
  }
  if (pid == 0) {
    dup2(pfd[0], 0);
    /* None of the runtime's descriptors reach the hook. */
    if (sys_close_range(3, ~0U, CLOSE_RANGE_CLOEXEC) < 0)
      for (int fd = 3; fd < 1024; fd++) fcntl(fd, F_SETFD, FD_CLOEXEC);
    signal(SIGPIPE, SIG_DFL);
    execve(h->path, h->args, h->env);
    int e = errno; /* the parent reports it: only main prints */
    (void)!write(efd[1], &e, sizeof e);
    _exit(127);
  }
  close(efd[1]);
  int exec_errno = 0;
  ssize_t got;
  do got = read(efd[0], &exec_errno, sizeof exec_errno); while (got < 0 && errno == EINTR);
  close(efd[0]);
  if (got == (ssize_t)sizeof exec_errno) {
    close(pfd[0]);
    close(pfd[1]);
    while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {}
    return pr_fail(err, exec_errno, "%s: exec %s", field, h->path);
  }
  close(pfd[0]);
  /* A hook that does not read stdin must not make us fail (EPIPE). */
  void (*old)(int) = signal(SIGPIPE, SIG_IGN);
  (void)write_all(pfd[1], state_json, strlen(state_json));
  close(pfd[1]);
  signal(SIGPIPE, old);
  if (h->timeout > 0) {
    cleanup_close int pidfd = sys_pidfd_open(pid, 0);
    if (pidfd >= 0) {
      struct pollfd p = {pidfd, POLLIN, 0};
      int r;
      do r = poll(&p, 1, h->timeout * 1000); while (r < 0 && errno == EINTR);
      if (r == 0) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        return pr_fail(err, 0, "%s: %s timed out after %d s", field, h->path, h->timeout);
      }
    }
  }
  int status;
  while (waitpid(pid, &status, 0) < 0)
    if (errno != EINTR) return pr_fail(err, errno, "%s: waitpid", field);
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return 0;
  if (WIFEXITED(status)) return pr_fail(err, 0, "%s: %s exited with status %d", field, h->path, WEXITSTATUS(status));
  return pr_fail(err, 0, "%s: %s killed by signal %d", field, h->path, WTERMSIG(status));
}

int hooks_run(const struct pr_hooks_list *l, enum pr_hook_kind kind, const char *state_json, pr_error *err) {
  for (size_t i = 0; i < l->n; i++) {
    char field[64];
    snprintf(field, sizeof field, "hooks.%s[%zu]", hook_kind_name(kind), i);
    if (run_one(&l->v[i], field, state_json, err) < 0) return -1;
  }
  return 0;
}
