/* The supervision loop: spawn, capture output, run the healthcheck (health.c) while the command
 * runs, wait, decide on a restart, back off. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "shim.h"

/* In a child of the supervisor, before exec: it dies with the supervisor (an unsupervised orphan
 * would hold the container's ports and make a later start run it twice; checked after arming, in
 * case the supervisor died in between), leads its own process group, starts with default signal
 * handling and an empty mask, reads `in` (or /dev/null) and writes to `out` / `err`. */
void shim_child_prepare(pid_t shim, int in, int out, int err) {
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (getppid() != shim)
    _exit(127);
  setpgid(0, 0);
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, NULL);
  signal(SIGPIPE, SIG_DFL);
  signal(SIGHUP, SIG_DFL);
  int src = in >= 0 ? in : open("/dev/null", O_RDONLY);
  if (src >= 0)
    dup2(src, 0);
  dup2(out, 1);
  dup2(err, 2);
}

#define LINE_MAX_BYTES 16384 /* Docker splits log lines at 16 KiB too */
#define BACKOFF_START_MS 100

static int sig_pipe[2] = {-1, -1};
static int stdin_pipe[2] = {-1, -1}; /* --keep-stdin: the read end is each run's stdin */

static void on_signal(int sig) {
  int saved = errno;
  unsigned char b = (unsigned char)sig;
  (void)!write(sig_pipe[1], &b, 1);
  errno = saved;
}

static int setup_signals(pr_error *err) {
  if (pipe2(sig_pipe, O_CLOEXEC | O_NONBLOCK) < 0)
    return pr_fail(err, errno, "pipe");
  struct sigaction sa = {0};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART | SA_NOCLDSTOP;
  int handled[] = {SIGCHLD, SIGTERM, SIGINT, SIGUSR1};
  for (size_t i = 0; i < sizeof handled / sizeof handled[0]; i++)
    if (sigaction(handled[i], &sa, NULL) < 0)
      return pr_fail(err, errno, "sigaction");
  signal(SIGPIPE, SIG_IGN);
  signal(SIGHUP, SIG_IGN); /* a daemon: the session it came from may hang up */
  return 0;
}

struct stream {
  const char *name;
  int fd;
  size_t used;
  char buf[LINE_MAX_BYTES];
};

struct run {
  const struct shim_config *cfg;
  struct log_writer log;
  struct shim_state st;
  struct stream out, err;
  pid_t child;
  bool child_alive;
  int wait_status;
  bool stopping;
  int64_t kill_deadline; /* 0: none */
  struct health health;
};

static void save_state(struct run *r) {
  pr_error e = {0};
  (void)state_write(r->cfg->state_path, &r->st, &e); /* best effort: the loop must go on */
}

static void emit(struct run *r, struct stream *s, const char *data, size_t len) {
  pr_error e = {0};
  (void)log_record(&r->log, s->name, data, len, &e); /* a full disk must not kill the child */
}

/* Splits buffered bytes into lines; a partial line waits unless the buffer is full. */
static void drain_lines(struct run *r, struct stream *s, bool flush_all) {
  size_t start = 0;
  for (size_t i = 0; i < s->used; i++) {
    if (s->buf[i] == '\n') {
      emit(r, s, s->buf + start, i + 1 - start);
      start = i + 1;
    }
  }
  if (start < s->used && (flush_all || (start == 0 && s->used == sizeof s->buf))) {
    emit(r, s, s->buf + start, s->used - start);
    start = s->used;
  }
  memmove(s->buf, s->buf + start, s->used - start);
  s->used -= start;
}

/* Reads what is available; returns false at EOF (and closes the fd). */
static bool read_stream(struct run *r, struct stream *s) {
  for (;;) {
    ssize_t n = read(s->fd, s->buf + s->used, sizeof s->buf - s->used);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0 && errno == EAGAIN)
      return true;
    if (n <= 0) {
      drain_lines(r, s, true);
      close(s->fd);
      s->fd = -1;
      return false;
    }
    s->used += (size_t)n;
    drain_lines(r, s, false);
  }
}

/* Starts the command in its own process group with stdout/stderr on pipes. A failed exec is
 * reported through a close-on-exec pipe, so "not found" is told apart from "exited 127". */
static int spawn(struct run *r, pr_error *err) {
  int outp[2], errp[2], execp[2];
  if (pipe2(outp, O_CLOEXEC) < 0 || pipe2(errp, O_CLOEXEC) < 0 || pipe2(execp, O_CLOEXEC) < 0)
    return pr_fail(err, errno, "pipe");
  pid_t shim = getpid();
  pid_t pid = fork();
  if (pid < 0)
    return pr_fail(err, errno, "fork");
  if (pid == 0) {
    shim_child_prepare(shim, stdin_pipe[0], outp[1], errp[1]);
    execvp(r->cfg->argv[0], r->cfg->argv);
    int e = errno;
    (void)!write(execp[1], &e, sizeof e);
    _exit(127);
  }
  setpgid(pid, pid); /* also here, so the group exists before anyone signals it */
  close(outp[1]);
  close(errp[1]);
  close(execp[1]);
  int e = 0;
  ssize_t n;
  do
    n = read(execp[0], &e, sizeof e);
  while (n < 0 && errno == EINTR);
  close(execp[0]);
  r->child = pid;
  r->child_alive = true;
  r->out.fd = outp[0];
  r->err.fd = errp[0];
  fcntl(outp[0], F_SETFL, O_NONBLOCK);
  fcntl(errp[0], F_SETFL, O_NONBLOCK);
  if (n == (ssize_t)sizeof e) {
    char msg[300];
    int len = snprintf(msg, sizeof msg, "exec %s: %s\n", r->cfg->argv[0], strerror(e));
    emit(r, &r->err, msg, (size_t)len);
    return pr_fail(err, e, "exec %s", r->cfg->argv[0]);
  }
  return 0;
}

static long stop_timeout_ms(const struct shim_config *cfg) {
  if (cfg->stop_path) {
    char buf[32] = {0};
    int fd = open(cfg->stop_path, O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
      ssize_t n = read(fd, buf, sizeof buf - 1);
      close(fd);
      char *end;
      double secs = n > 0 ? strtod(buf, &end) : -1;
      if (n > 0 && end != buf && secs >= 0)
        return (long)(secs * 1000);
    }
  }
  return cfg->stop_timeout_ms;
}

static void request_stop(struct run *r) {
  if (r->stopping)
    return;
  r->stopping = true;
  r->st.stop_requested = true;
  if (r->child_alive) {
    kill(-r->child, r->cfg->stop_signal);
    r->kill_deadline = now_ms() + stop_timeout_ms(r->cfg);
  }
  save_state(r);
}

/* Reaps every exited child: the command, a health check, or a stray (none expected). Peeks first
 * (WNOWAIT) so each pid is reaped by its own waitpid with its status kept. */
static void reap(struct run *r) {
  for (;;) {
    siginfo_t si;
    si.si_pid = 0;
    if (waitid(P_ALL, 0, &si, WEXITED | WNOHANG | WNOWAIT) < 0 || si.si_pid == 0)
      return;
    int status = 0;
    if (waitpid(si.si_pid, &status, WNOHANG) != si.si_pid)
      return;
    if (r->child_alive && si.si_pid == r->child) {
      r->child_alive = false;
      r->wait_status = status;
    } else {
      health_reaped(&r->health, si.si_pid, status);
    }
  }
}

/* Handles pending signals: a stop request, a check asked for now, exited children. */
static void handle_signals(struct run *r) {
  unsigned char b[64];
  ssize_t n;
  while ((n = read(sig_pipe[0], b, sizeof b)) > 0) {
    for (ssize_t i = 0; i < n; i++) {
      if (b[i] == SIGTERM || b[i] == SIGINT)
        request_stop(r);
      else if (b[i] == SIGUSR1 && r->child_alive && !r->stopping)
        health_now(&r->health);
    }
  }
  reap(r);
}

/* Waits until the child exited and its output is drained. */
static void wait_child(struct run *r) {
  int64_t drain_deadline = 0;
  for (;;) {
    int64_t now = now_ms();
    if (r->child_alive && !r->stopping)
      health_tick(&r->health, now);
    struct pollfd p[4] = {{sig_pipe[0], POLLIN, 0}, {r->out.fd, POLLIN, 0}, {r->err.fd, POLLIN, 0},
                          {r->health.fd, POLLIN, 0}};
    int timeout = -1;
    if (r->kill_deadline && r->child_alive)
      timeout = r->kill_deadline > now ? (int)(r->kill_deadline - now) : 0;
    int ht = r->child_alive && !r->stopping ? health_poll_timeout(&r->health, now) : -1;
    if (ht >= 0 && (timeout < 0 || ht < timeout))
      timeout = ht;
    if (!r->child_alive || r->stopping)
      health_abort(&r->health); /* no checks of a container that is gone or going */
    if (!r->child_alive) {
      if (r->out.fd < 0 && r->err.fd < 0)
        return;
      /* The main process is gone: like a container whose init exits, its group goes too.
       * Then read what is left, but do not wait on pipes held open by escaped processes. */
      if (!drain_deadline) {
        kill(-r->child, SIGKILL);
        drain_deadline = now + 200;
      }
      if (now >= drain_deadline)
        break;
      timeout = (int)(drain_deadline - now);
    }
    p[3].fd = r->health.fd; /* health_abort may have closed it */
    int rc = poll(p, 4, timeout);
    if (rc < 0 && errno != EINTR)
      break;
    if (p[3].revents && r->health.fd >= 0)
      health_read(&r->health);
    if (p[0].revents)
      handle_signals(r);
    if (p[1].revents && r->out.fd >= 0)
      read_stream(r, &r->out);
    if (p[2].revents && r->err.fd >= 0)
      read_stream(r, &r->err);
    if (r->kill_deadline && r->child_alive && now_ms() >= r->kill_deadline) {
      kill(-r->child, SIGKILL);
      r->kill_deadline = 0;
    }
  }
  for (struct stream *s = &r->out; s; s = (s == &r->out ? &r->err : NULL)) {
    if (s->fd >= 0) {
      drain_lines(r, s, true);
      close(s->fd);
      s->fd = -1;
    }
  }
}

static bool should_restart(const struct run *r) {
  if (r->stopping)
    return false;
  switch (r->cfg->policy) {
  case POLICY_NO:
    return false;
  case POLICY_ON_FAILURE:
    return r->st.exit_code != 0 && (r->cfg->max_retries == 0 || r->st.restart_count < r->cfg->max_retries);
  case POLICY_ALWAYS:
  case POLICY_UNLESS_STOPPED:
    return true;
  }
  return false;
}

/* Sleeps for ms unless a stop arrives first; returns false if stopping. */
static bool backoff_sleep(struct run *r, long ms) {
  int64_t until = now_ms() + ms;
  while (!r->stopping) {
    int64_t now = now_ms();
    if (now >= until)
      return true;
    struct pollfd p = {sig_pipe[0], POLLIN, 0};
    if (poll(&p, 1, (int)(until - now)) > 0)
      handle_signals(r);
  }
  return false;
}

static void notify(int *fd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void notify(int *fd, const char *fmt, ...) {
  if (*fd < 0)
    return;
  char buf[600];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  (void)write_all(*fd, buf, n < (int)sizeof buf ? (size_t)n : sizeof buf - 1);
  close(*fd);
  *fd = -1;
}

int supervise(const struct shim_config *cfg, int notify_fd, pr_error *err) {
  static struct run r; /* static: two 16 KiB line buffers stay off the stack */
  r.cfg = cfg;
  r.out.name = "stdout";
  r.err.name = "stderr";
  r.out.fd = r.err.fd = -1;
  r.st.name = cfg->name;
  r.st.policy = cfg->policy_text;
  r.st.shim_pid = getpid();
  r.health.cfg = cfg->health.argv ? &cfg->health : NULL;
  r.health.fd = -1;
  if (setup_signals(err) < 0 || log_open(&r.log, cfg->log_path, cfg->log_max_size, cfg->log_max_files, err) < 0 ||
      (cfg->keep_stdin && pipe2(stdin_pipe, O_CLOEXEC) < 0 && pr_fail(err, errno, "pipe") < 0)) {
    notify(&notify_fd, "error %s\n", err->msg);
    return -1;
  }
  long delay = 0;
  for (;;) {
    int64_t started = now_ms();
    format_time(r.st.started_at, sizeof r.st.started_at);
    pr_error serr = {0};
    int rc = spawn(&r, &serr);
    if (rc < 0 && notify_fd >= 0) {
      /* The first start failed outright: tell the caller, leave an exited state. */
      wait_child(&r);
      r.st.pid = r.child;
      r.st.status = "exited";
      r.st.has_exit = true;
      r.st.exit_code = 127;
      format_time(r.st.finished_at, sizeof r.st.finished_at);
      snprintf(r.st.error, sizeof r.st.error, "%.*s", (int)sizeof r.st.error - 1, serr.msg);
      save_state(&r);
      notify(&notify_fd, "error %s\n", serr.msg);
      *err = serr;
      return -1;
    }
    r.st.pid = r.child;
    r.st.status = "running";
    r.st.error[0] = '\0';
    if (rc < 0)
      snprintf(r.st.error, sizeof r.st.error, "%.*s", (int)sizeof r.st.error - 1, serr.msg);
    save_state(&r);
    /* after the state: whoever reads this run's health then finds this run's state too */
    health_reset(&r.health, r.child, r.st.restart_count, now_ms()); /* "starting" again, as Docker does */
    notify(&notify_fd, "ok %d %d\n", (int)getpid(), (int)r.child);
    if (r.st.restart_count > 0)
      run_hook(cfg->change_argv); /* back after a restart (the first start's caller knows already) */

    wait_child(&r);
    int ws = r.wait_status;
    r.st.has_exit = true;
    r.st.exit_code = WIFEXITED(ws) ? WEXITSTATUS(ws) : WIFSIGNALED(ws) ? 128 + WTERMSIG(ws) : 255;
    format_time(r.st.finished_at, sizeof r.st.finished_at);
    r.kill_deadline = 0;

    if (!should_restart(&r))
      break;
    long ran = (long)(now_ms() - started);
    delay = (ran >= cfg->backoff_reset_ms || delay == 0) ? BACKOFF_START_MS : delay * 2;
    if (delay > cfg->backoff_max_ms)
      delay = cfg->backoff_max_ms;
    r.st.status = "restarting";
    r.st.backoff_ms = delay;
    save_state(&r);
    run_hook(cfg->change_argv); /* it is down for a while: a balanced port skips it */
    if (!backoff_sleep(&r, delay))
      break;
    r.st.restart_count++;
  }
  r.st.status = "exited";
  save_state(&r);
  run_hook(cfg->change_argv);
  log_close(&r.log);
  return 0;
}
