#ifndef PR_CONTAINER_H
#define PR_CONTAINER_H
#include <stdbool.h>
#include <sys/types.h>

#include "cgroups.h"
#include "config.h"
#include "error.h"

struct pr_container {
  struct pr_config *cfg;
  const char *id;
  char *state_dir;       /* <root>/<id> */
  int sync_fd;           /* child end of the parent<->init socketpair */
  int start_listen_fd;   /* listening start.sock for create, -1 for run */
  int console_fd;        /* connected --console-socket, -1 if none */
  int ns_fds[NS__COUNT]; /* namespaces to join, -1 otherwise */
  int rootfd;            /* O_PATH of the rootfs, in the init */
  int stdio_fds[3];      /* to dup2 onto 0-2 in the init, -1 = inherit */
  pid_t host_pid;        /* init's pid as seen by the runtime */
  /* Joining a user namespace by path: the cloned child enters it, unshares
   * these (owned by that user namespace then) and forks the real init. */
  unsigned long unshare_flags;
  struct pr_cgroup cg;
};

struct pr_create_opts {
  const char *root;          /* --root */
  const char *id;
  const char *bundle;
  const char *pid_file;
  const char *console_socket;
  bool detach;               /* run -d */
  const char *stdio[3];      /* --stdin/--stdout/--stderr files, NULL = inherit */
  int preserve_fds;          /* --preserve-fds: fds 3..3+N-1 go to the container */
};

/* create: returns 0 with the init waiting for start. */
int container_create(struct pr_config *cfg, const struct pr_create_opts *o, pr_error *err);
/* run: create + start + wait; *exit_code gets the process's status
 * (128+signal when killed). */
int container_run(struct pr_config *cfg, const struct pr_create_opts *o, int *exit_code, pr_error *err);
int container_start(const char *root, const char *id, pr_error *err);
int container_kill(const char *root, const char *id, int sig, bool all, pr_error *err);
int container_delete(const char *root, const char *id, bool force, pr_error *err);
int container_state(const char *root, const char *id, char **json, pr_error *err);
/* `ps`: the host pids in the container's cgroup, as a JSON array (runc ps --format json). */
int container_ps(const char *root, const char *id, char **out, pr_error *err);
/* update: new linux.resources (JSON) for a running container's cgroup. */
int container_update(const char *root, const char *id, const char *resources_json, pr_error *err);
/* pause (freeze the cgroup) or resume it. */
int container_pause(const char *root, const char *id, bool pause, pr_error *err);
/* `list`: a table like runc's, or a JSON array of state objects. */
int container_list(const char *root, bool json_format, char **out, pr_error *err);

struct pr_exec_opts {
  const char *process_file;
  char **args;     /* after -- */
  char **env_add;  /* -e */
  const char *cwd;
  const char *user;/* uid[:gid] */
  bool tty;
  const char *console_socket;
  const char *pid_file;
  bool detach;
  bool no_new_privs;
};
int container_exec(const char *root, const char *id, const struct pr_exec_opts *o, int *exit_code, pr_error *err);

/* shared by container.c and lifecycle.c */
struct pr_state;
/* Reads the init's answer to start: EOF (exec happened) or an error line. */
int container_read_start_result(int fd, pr_error *err);
/* After the process is gone: cgroups, poststop hooks, state directory. */
void container_release(struct pr_state *st, const char *dir);

/* The init (child side), never returns. */
void init_main(struct pr_container *ct) __attribute__((noreturn));
/* Process finalisation shared by init and exec: rlimits are done by the
 * caller; this does identity, caps, umask, NNP, seccomp and execve. */
int process_exec(struct pr_process *p, const struct pr_seccomp *sc, const char *path, int report_fd, pr_error *err);
/* $PATH lookup of args[0] using the process's own environment. */
int process_find_exec(const struct pr_process *p, char **out, pr_error *err);
int process_set_rlimits(const struct pr_process *p, pr_error *err);
int process_set_oom(const struct pr_process *p, pr_error *err);
#endif
