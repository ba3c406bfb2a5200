/* exec: run another process in a running container.  The runtime enters the
 * container's pid namespace (which only affects children), forks, and the
 * child joins the cgroup and the other namespaces (user first, mount last),
 * then finishes like the init does. */
#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cgroups.h"
#include "console.h"
#include "container.h"
#include "state.h"
#include "util.h"

static const struct { const char *file; int flag; } ns_files[] = {
    {"user", CLONE_NEWUSER}, {"ipc", CLONE_NEWIPC}, {"uts", CLONE_NEWUTS}, {"net", CLONE_NEWNET},
    {"cgroup", CLONE_NEWCGROUP}, {"time", 0x80 /* CLONE_NEWTIME */}, {"pid", CLONE_NEWPID}, {"mnt", CLONE_NEWNS},
};
#define N_NS (sizeof(ns_files) / sizeof(ns_files[0]))

static int build_process(struct pr_state *st, const struct pr_exec_opts *o, struct pr_process *p, pr_error *err) {
  memset(p, 0, sizeof(*p));
  p->personality = -1;
  if (o->process_file) {
    if (config_parse_process_file(o->process_file, p, err) < 0) return -1;
  } else {
    if (!o->args || !o->args[0]) return pr_fail(err, 0, "exec: give a command after the id, or --process FILE");
    json_object *j = json_tokener_parse(st->config_process_json ? st->config_process_json : "{}");
    /* Start from the container's process (user, caps, env, rlimits), with
     * the command replaced, like runc exec. */
    json_object_object_del(j, "args");
    json_object *args = json_object_new_array();
    for (char **a = o->args; *a; a++) json_object_array_add(args, json_object_new_string(*a));
    json_object_object_add(j, "args", args);
    json_object_object_del(j, "terminal");
    json_object_object_del(j, "cwd");
    int r = config_parse_process(p, j, "process", err);
    json_object_put(j);
    if (r < 0) return -1;
  }
  if (o->cwd) p->cwd = xstrdup(o->cwd);
  if (o->tty) p->terminal = true;
  if (o->no_new_privs) p->no_new_privileges = true;
  if (o->user) {
    char *colon;
    p->uid = (uint32_t)strtoul(o->user, &colon, 10);
    if (*colon == ':') p->gid = (uint32_t)strtoul(colon + 1, NULL, 10);
  }
  size_t n = 0, m = 0;
  while (p->env && p->env[n]) n++;
  while (o->env_add && o->env_add[m]) m++;
  p->env = xrealloc(p->env, (n + m + 1) * sizeof(char *));
  for (size_t i = 0; i < m; i++) p->env[n + i] = xstrdup(o->env_add[i]);
  p->env[n + m] = NULL;
  return 0;
}

static void exec_child(struct pr_state *st, struct pr_process *p, struct pr_seccomp *sc, int *fds, int console_fd,
                       int errpipe) {
  pr_error err = {0};
  cleanup_free char *path = NULL;
  /* Same cheap path as the init: v1 by moving this (single) thread. */
  if (cgroup_join_self_v1(&st->cg, &err) < 0 || cgroup_add_pid_v2(&st->cg, getpid(), &err) < 0) goto fail;
  for (size_t i = 0; i < N_NS; i++) {
    if (fds[i] < 0 || ns_files[i].flag == CLONE_NEWPID) continue;
    if (setns(fds[i], ns_files[i].flag) < 0) {
      pr_fail(&err, errno, "joining the container's %s namespace", ns_files[i].file);
      goto fail;
    }
  }
  if (st->userns && (setresgid(0, 0, 0) < 0 || setresuid(0, 0, 0) < 0)) {
    pr_fail(&err, errno, "becoming root in the container's user namespace");
    goto fail;
  }
  if (setsid() < 0) {
    pr_fail(&err, errno, "setsid");
    goto fail;
  }
  if (p->terminal && console_setup(console_fd, p->console_height, p->console_width, false, &err) < 0) goto fail;
  if (process_set_oom(p, &err) < 0 || process_set_rlimits(p, &err) < 0) goto fail;
  if (chdir(p->cwd) < 0) {
    pr_fail(&err, errno, "process.cwd: %s", p->cwd);
    goto fail;
  }
  if (process_find_exec(p, &path, &err) < 0) goto fail;
  process_exec(p, sc, path, errpipe, &err);
fail:
  (void)!write(errpipe, err.msg, strlen(err.msg));
  _exit(127);
}

int container_exec(const char *root, const char *id, const struct pr_exec_opts *o, int *exit_code, pr_error *err) {
  struct pr_state st;
  if (state_load(root, id, &st, err) < 0) return -1;
  const char *status = state_status(root, &st);
  if (strcmp(status, "running") != 0)
    return pr_fail(err, 0, "cannot exec in container \"%s\": it is %s, not running", id, status);
  struct pr_process p;
  if (build_process(&st, o, &p, err) < 0) return -1;
  struct pr_seccomp *sc = NULL;
  if (st.seccomp_json) {
    struct pr_config tmp = {0};
    json_object *j = json_tokener_parse(st.seccomp_json);
    int r = config_parse_seccomp(&tmp, j, err);
    json_object_put(j);
    if (r < 0) return -1;
    sc = tmp.seccomp;
  }
  int console_fd = -1;
  if (p.terminal) {
    if (!o->console_socket) return pr_fail(err, 0, "exec: a terminal needs --console-socket");
    if ((console_fd = console_connect(o->console_socket, err)) < 0) return -1;
  }
  int fds[N_NS];
  for (size_t i = 0; i < N_NS; i++) {
    fds[i] = -1;
    cleanup_free char *theirs = xasprintf("/proc/%d/ns/%s", st.pid, ns_files[i].file);
    cleanup_free char *mine = xasprintf("/proc/self/ns/%s", ns_files[i].file);
    struct stat a, b;
    if (stat(theirs, &a) < 0) {
      if (errno == ENOENT) continue; /* a namespace type this kernel lacks */
      return pr_fail(err, errno, "exec: %s", theirs);
    }
    /* Entering our own namespace is refused for user namespaces: skip it. */
    if (stat(mine, &b) == 0 && a.st_ino == b.st_ino && a.st_dev == b.st_dev) continue;
    if ((fds[i] = open(theirs, O_RDONLY | O_CLOEXEC)) < 0) return pr_fail(err, errno, "exec: open %s", theirs);
  }
  for (size_t i = 0; i < N_NS; i++)
    if (fds[i] >= 0 && ns_files[i].flag == CLONE_NEWPID && setns(fds[i], CLONE_NEWPID) < 0)
      return pr_fail(err, errno, "exec: joining the container's pid namespace");
  int errpipe[2];
  if (pipe2(errpipe, O_CLOEXEC) < 0) return pr_fail(err, errno, "pipe");
  pid_t pid = fork();
  if (pid < 0) return pr_fail(err, errno, "fork");
  if (pid == 0) {
    close(errpipe[0]);
    exec_child(&st, &p, sc, fds, console_fd, errpipe[1]);
  }
  close(errpipe[1]);
  char msg[2048];
  ssize_t n;
  do n = read(errpipe[0], msg, sizeof msg - 1); while (n < 0 && errno == EINTR);
  close(errpipe[0]);
  if (n > 0) {
    msg[n] = '\0';
    waitpid(pid, NULL, 0);
    return pr_fail(err, 0, "exec: %s", msg);
  }
  if (o->pid_file) {
    char buf[32];
    int l = snprintf(buf, sizeof buf, "%d", pid);
    if (write_file_atomic(o->pid_file, buf, (size_t)l, 0644, false, err) < 0) return pr_prefix(err, "--pid-file");
  }
  if (o->detach) {
    *exit_code = 0;
    return 0;
  }
  int wst = 0;
  while (waitpid(pid, &wst, 0) < 0)
    if (errno != EINTR) break;
  *exit_code = WIFEXITED(wst) ? WEXITSTATUS(wst) : 128 + WTERMSIG(wst);
  return 0;
}
