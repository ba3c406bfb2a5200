/* The container's healthcheck, run by the shim itself (as Docker's daemon does per container, see
 * moby daemon/health.go), so health costs no process of its own between checks.
 *
 * Schedule: a check runs `interval` after the container (re)started and `interval` after each
 * check ended; SIGUSR1 asks for one now (what `provision up` does once the runtime reports the
 * container running, so a 30 s interval does not delay it). A check runs longer than `timeout`:
 * its process group and the process the runtime started in the container (its pid from the
 * check's pid file; the runtime's exec makes it a session leader) get SIGKILL, and the result is
 * a failure ("Health check exceeded timeout"), as Docker reports it.
 *
 * With a start interval (compose's start_interval, Docker's --health-start-interval), checks come
 * that often instead while the container is still "starting" within its start period.
 *
 * Rules (health_apply, moby's handleProbeResult): exit 0 -> healthy, streak 0; anything else ->
 * streak + 1 and unhealthy at `retries`, except that failures while still "starting" within
 * `start_period` of the container's start do not count. Every (re)start resets to "starting". */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "shim.h"

const char *health_status_name(enum health_status s) {
  switch (s) {
  case HEALTH_STARTING: return "starting";
  case HEALTH_HEALTHY: return "healthy";
  case HEALTH_UNHEALTHY: return "unhealthy";
  }
  return "starting";
}

void health_apply(struct health_state *s, const struct health_config *c, int exit_code, int64_t since_start_ms) {
  s->checks++;
  if (exit_code == 0) {
    s->failing_streak = 0;
    s->status = HEALTH_HEALTHY;
    return;
  }
  /* Never healthy yet and still in the start period: the service may be booting. */
  if (s->status == HEALTH_STARTING && since_start_ms < c->start_period_ms)
    return;
  s->failing_streak++;
  if (s->failing_streak >= c->retries)
    s->status = HEALTH_UNHEALTHY;
}

int health_write(const char *path, const struct health_state *s, pr_error *err) {
  /* the output escaped (6 bytes per byte at worst) plus the fixed fields */
  static char buf[HEALTH_OUTPUT_MAX * 6 + 1024];
  size_t n = sizeof buf, off = 0;
  off += snprintf(buf + off, n - off,
                  "{\"status\": \"%s\", \"failing_streak\": %d, \"checks\": %d, \"pid\": %d, \"restart_count\": %d, "
                  "\"exit_code\": ",
                  health_status_name(s->status), s->failing_streak, s->checks, (int)s->pid, s->restart_count);
  if (s->checks > 0)
    off += snprintf(buf + off, n - off, "%d", s->exit_code);
  else
    off += snprintf(buf + off, n - off, "null");
  off += snprintf(buf + off, n - off, ", \"started_at\": \"%s\", \"checked_at\": \"%s\", \"output\": \"",
                  s->started_at, s->checked_at);
  off += json_escape(buf + off, s->output, s->output_len);
  off += snprintf(buf + off, n - off, "\"}\n");
  if (off >= n)
    return pr_fail(err, 0, "health state too large");
  return write_file_atomic(path, buf, off, err);
}

static void save(struct health *h) {
  pr_error e = {0};
  (void)health_write(h->cfg->path, &h->st, &e); /* best effort: supervision goes on */
}

/* When the next check is due after `now`: the start interval while still starting in the start period. */
static int64_t next_due(const struct health *h, int64_t now) {
  const struct health_config *c = h->cfg;
  bool starting = h->st.status == HEALTH_STARTING && now - h->run_started < c->start_period_ms;
  return now + (starting && c->start_interval_ms > 0 ? c->start_interval_ms : c->interval_ms);
}

void health_reset(struct health *h, pid_t container_pid, int restart_count, int64_t now) {
  if (!h->cfg)
    return;
  health_abort(h);
  h->st = (struct health_state){.status = HEALTH_STARTING, .pid = container_pid, .restart_count = restart_count};
  format_time(h->st.started_at, sizeof h->st.started_at);
  h->run_started = now;
  h->due = next_due(h, now);
  save(h);
}

void health_now(struct health *h) {
  if (h->cfg && h->run_started && !h->pid)
    h->due = now_ms();
}

static int spawn_check(struct health *h, pr_error *err) {
  int outp[2];
  if (pipe2(outp, O_CLOEXEC) < 0)
    return pr_fail(err, errno, "pipe");
  if (h->cfg->pid_path)
    unlink(h->cfg->pid_path); /* only a pid this check writes may be killed */
  pid_t shim = getpid();
  pid_t pid = fork();
  if (pid < 0) {
    int e = errno;
    close(outp[0]);
    close(outp[1]);
    return pr_fail(err, e, "fork");
  }
  if (pid == 0) {
    shim_child_prepare(shim, -1, outp[1], outp[1]);
    execvp(h->cfg->argv[0], h->cfg->argv);
    dprintf(2, "exec %s: %s\n", h->cfg->argv[0], strerror(errno));
    _exit(127);
  }
  setpgid(pid, pid);
  close(outp[1]);
  fcntl(outp[0], F_SETFL, O_NONBLOCK);
  h->pid = pid;
  h->fd = outp[0];
  h->out_len = 0;
  h->timed_out = false;
  h->check_started = now_ms();
  h->deadline = h->check_started + h->cfg->timeout_ms;
  h->due = 0;
  return 0;
}

void health_read(struct health *h) {
  char scratch[4096];
  while (h->fd >= 0) {
    char *dst = h->out_len < sizeof h->out ? h->out + h->out_len : scratch;
    size_t room = h->out_len < sizeof h->out ? sizeof h->out - h->out_len : sizeof scratch;
    ssize_t n = read(h->fd, dst, room);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0 && errno == EAGAIN)
      return;
    if (n <= 0) {
      close(h->fd);
      h->fd = -1;
      return;
    }
    if (dst != scratch) /* beyond the cap the output is read and dropped (Docker keeps 4 KiB too) */
      h->out_len += (size_t)n;
  }
}

/* Kills the check: the runtime's exec (its process group) and what it started in the container,
 * which is in a session of its own there. That pid is still the exec's unreaped child while the
 * exec lives (we kill it first), so it cannot have been recycled. */
static void kill_check(struct health *h) {
  if (!h->pid)
    return;
  if (h->cfg->pid_path) {
    char buf[32] = {0};
    int fd = open(h->cfg->pid_path, O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
      ssize_t n = read(fd, buf, sizeof buf - 1);
      close(fd);
      long inner = n > 0 ? strtol(buf, NULL, 10) : 0;
      if (inner > 1 && inner != h->pid) {
        kill(-(pid_t)inner, SIGKILL);
        kill((pid_t)inner, SIGKILL);
      }
    }
  }
  kill(-h->pid, SIGKILL);
}

/* The check's process ended: read what is left (not waiting on escaped holders), record. */
static void finish(struct health *h, int wait_status) {
  if (h->fd >= 0)
    health_read(h);
  if (h->fd >= 0) {
    close(h->fd);
    h->fd = -1;
  }
  int64_t now = now_ms();
  int code;
  if (h->timed_out) {
    code = -1;
    h->out_len = (size_t)snprintf(h->out, sizeof h->out, "Health check exceeded timeout (%gs)",
                                  (double)h->cfg->timeout_ms / 1000.0);
  } else {
    code = WIFEXITED(wait_status) ? WEXITSTATUS(wait_status) : WIFSIGNALED(wait_status) ? 128 + WTERMSIG(wait_status) : 255;
  }
  h->pid = 0;
  h->deadline = 0;
  enum health_status before = h->st.status;
  health_apply(&h->st, h->cfg, code, h->check_started - h->run_started);
  h->st.exit_code = code;
  memcpy(h->st.output, h->out, h->out_len);
  h->st.output_len = h->out_len;
  format_time(h->st.checked_at, sizeof h->st.checked_at);
  h->due = next_due(h, now);
  save(h);
  if (h->st.status != before)
    run_hook(h->cfg->change_argv);
}

bool health_reaped(struct health *h, pid_t pid, int wait_status) {
  if (!h->cfg || !h->pid || pid != h->pid)
    return false;
  finish(h, wait_status);
  return true;
}

void health_abort(struct health *h) {
  if (!h->cfg)
    return;
  if (h->pid) {
    kill_check(h);
    waitpid(h->pid, NULL, 0);
    h->pid = 0;
  }
  if (h->fd >= 0) {
    close(h->fd);
    h->fd = -1;
  }
  h->due = h->deadline = 0;
  h->run_started = 0;
}

void health_tick(struct health *h, int64_t now) {
  if (!h->cfg || !h->run_started)
    return;
  if (h->pid && !h->timed_out && now >= h->deadline) {
    h->timed_out = true;
    kill_check(h);
  }
  if (!h->pid && h->due && now >= h->due) {
    pr_error e = {0};
    if (spawn_check(h, &e) < 0) { /* fork failed: count it as a failed check, try again later */
      h->check_started = now;
      h->out_len = (size_t)snprintf(h->out, sizeof h->out, "%s", e.msg);
      h->timed_out = false;
      finish(h, 255 << 8);
    }
  }
}

int health_poll_timeout(const struct health *h, int64_t now) {
  if (!h->cfg || !h->run_started)
    return -1;
  int64_t next = 0;
  if (h->pid && !h->timed_out)
    next = h->deadline;
  else if (!h->pid && h->due)
    next = h->due;
  if (!next)
    return -1;
  return next > now ? (int)(next - now) : 0;
}
