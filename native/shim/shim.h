/* provision-shim: a tiny per-container supervisor.
 *
 * It daemonizes (double fork + setsid, so it outlives the CLI that started it), runs one
 * command with stdout/stderr captured into a JSON-lines log in Docker's json-file shape
 * ({"log":...,"stream":...,"time":...}) with size-capped rotation, restarts the command per
 * a Docker restart policy with exponential backoff (100 ms doubling, capped, reset after a
 * run of >= 10 s, as Docker's restartmanager does), and keeps pid, exit code, restart count
 * and state in a state file written atomically (temp + rename). SIGTERM stops the child
 * with the configured stop signal, then SIGKILL after the timeout; no restart follows.
 * With --health-cmd it also runs the container's healthcheck while the command runs (health.c:
 * Docker's schedule and rules, state in a health file written the same way; SIGUSR1: check now).
 *
 * Error handling follows native/'s house style: fallible functions fill a pr_error and
 * return -1; only main() prints. */
#ifndef SHIM_H
#define SHIM_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "error.h"

void shim_closep(int *fd);
#define cleanup_close __attribute__((cleanup(shim_closep)))

enum policy_kind { POLICY_NO, POLICY_ON_FAILURE, POLICY_ALWAYS, POLICY_UNLESS_STOPPED };

struct shim_config {
  const char *name;
  const char *state_path;
  const char *pid_path;
  const char *stop_path; /* optional file holding a stop timeout (seconds) for the next stop */
  const char *log_path;
  long long log_max_size;
  int log_max_files;
  enum policy_kind policy;
  int max_retries; /* on-failure:N; 0 means unlimited */
  const char *policy_text;
  int stop_signal;
  long stop_timeout_ms;
  long backoff_max_ms;
  long backoff_reset_ms;
  bool foreground;
  /* docker run -i / compose stdin_open: the command's stdin is a pipe the supervisor keeps open
   * (and never writes), so a program reading it waits instead of seeing end of file */
  bool keep_stdin;
  char **argv;
  /* conmon's --exit-command: run once the supervisor is done for good (pid file released),
   * e.g. `provision --root R container autoremove ID` for `run -d --rm`. NULL: none. */
  char **exit_argv;
  /* --on-change: run (detached, not waited for) whenever the command exits or its health changes,
   * e.g. `provision --root R container balance GROUP` to repoint a replicated service's published
   * ports at its healthy replicas. NULL: none. */
  char **change_argv;
  /* the container's healthcheck (health.c); health.argv NULL: none */
  struct health_config {
    char **change_argv;    /* the shim's --on-change, run when the status changes */
    char **argv;           /* one check: e.g. `provision-runtime exec --pid-file F ID -- CMD...` */
    const char *path;      /* the health file (JSON, replaced atomically) */
    const char *pid_path;  /* where the check writes the pid to kill on timeout (optional) */
    long interval_ms, timeout_ms, start_period_ms;
    long start_interval_ms;  /* between checks while starting within the start period (0: interval_ms) */
    int retries;
  } health;
};

/* util.c */
int64_t now_ms(void);               /* CLOCK_MONOTONIC */
void format_time(char *buf, size_t n); /* RFC 3339 UTC with nanoseconds */
int write_all(int fd, const void *buf, size_t len);
int write_file_atomic(const char *path, const char *data, size_t len, pr_error *err);
void run_hook(char *const *argv);    /* argv NULL: nothing; else run detached, not waited for */
int parse_policy(const char *text, struct shim_config *cfg, pr_error *err);
int parse_signal(const char *text, pr_error *err);

/* log.c */
struct log_writer {
  int fd;
  const char *path;
  long long size;
  long long max_size;
  int max_files;
};
int log_open(struct log_writer *w, const char *path, long long max_size, int max_files, pr_error *err);
int log_record(struct log_writer *w, const char *stream, const char *data, size_t len, pr_error *err);
void log_close(struct log_writer *w);
size_t json_escape(char *out, const char *data, size_t len); /* out holds 6*len+1 bytes */

/* state.c */
struct shim_state {
  const char *name;
  const char *policy;
  pid_t shim_pid;
  pid_t pid;            /* current or last child */
  const char *status;   /* "running", "restarting", "exited" */
  bool has_exit;
  int exit_code;
  int restart_count;
  long backoff_ms;      /* the delay before the latest restart */
  bool stop_requested;
  char started_at[48];
  char finished_at[48];
  char error[512];
};
int state_write(const char *path, const struct shim_state *st, pr_error *err);

/* health.c */
#define HEALTH_OUTPUT_MAX 4096 /* Docker keeps the first 4 KiB of a check's output too */
enum health_status { HEALTH_STARTING, HEALTH_HEALTHY, HEALTH_UNHEALTHY };
struct health_state {
  enum health_status status;
  int failing_streak;
  int checks;        /* since the container's latest start */
  int exit_code;     /* of the latest check; -1: timed out */
  pid_t pid;         /* the container run the state is about */
  int restart_count; /* and its restart count */
  char started_at[48];
  char checked_at[48];
  char output[HEALTH_OUTPUT_MAX];
  size_t output_len;
};
struct health {
  const struct health_config *cfg; /* NULL: no healthcheck, every call is a no-op */
  struct health_state st;
  pid_t pid;              /* the running check, 0: none */
  int fd;                 /* its stdout+stderr, -1: none */
  bool timed_out;
  int64_t run_started;    /* the container's start (0: not running) */
  int64_t check_started;
  int64_t due;            /* the next check (0: none scheduled) */
  int64_t deadline;       /* the running check's timeout */
  size_t out_len;
  char out[HEALTH_OUTPUT_MAX];
};
const char *health_status_name(enum health_status s);
void health_apply(struct health_state *s, const struct health_config *c, int exit_code, int64_t since_start_ms);
int health_write(const char *path, const struct health_state *s, pr_error *err);
void health_reset(struct health *h, pid_t container_pid, int restart_count, int64_t now);
void health_now(struct health *h);
void health_tick(struct health *h, int64_t now);
void health_read(struct health *h);
bool health_reaped(struct health *h, pid_t pid, int wait_status);
void health_abort(struct health *h);
int health_poll_timeout(const struct health *h, int64_t now);

/* main.c */
void run_exit_command(const struct shim_config *cfg);

/* supervise.c: runs until the command is done for good. notify_fd (or -1) receives
 * "ok <shim pid> <child pid>\n" once the first start succeeded, or "error <message>\n". */
int supervise(const struct shim_config *cfg, int notify_fd, pr_error *err);
/* in a forked child, before exec; `in` < 0: stdin is /dev/null */
void shim_child_prepare(pid_t shim, int in, int out, int err);
#endif
