/* Small helpers: time, atomic writes, policy and signal parsing. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "shim.h"

void shim_closep(int *fd) {
  if (*fd >= 0) {
    int saved = errno;
    close(*fd);
    errno = saved;
  }
}

int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void format_time(char *buf, size_t n) {
  struct timespec ts;
  struct tm tm;
  clock_gettime(CLOCK_REALTIME, &ts);
  gmtime_r(&ts.tv_sec, &tm);
  size_t k = strftime(buf, n, "%Y-%m-%dT%H:%M:%S", &tm);
  snprintf(buf + k, n - k, ".%09ldZ", ts.tv_nsec);
}

int write_all(int fd, const void *buf, size_t len) {
  const char *p = buf;
  while (len > 0) {
    ssize_t w = write(fd, p, len);
    if (w < 0) {
      if (errno == EINTR)
        continue;
      return -1;
    }
    p += w;
    len -= (size_t)w;
  }
  return 0;
}

/* Readers (the Python side) must see the old or the new state, never a torn one: write a
 * temp file in the same directory, fsync, rename over. */
int write_file_atomic(const char *path, const char *data, size_t len, pr_error *err) {
  char tmp[PATH_MAX];
  if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp)
    return pr_fail(err, ENAMETOOLONG, "%s", path);
  cleanup_close int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0)
    return pr_fail(err, errno, "open %s", tmp);
  if (write_all(fd, data, len) < 0 || fsync(fd) < 0) {
    int e = errno;
    unlink(tmp);
    return pr_fail(err, e, "write %s", tmp);
  }
  if (rename(tmp, path) < 0) {
    int e = errno;
    unlink(tmp);
    return pr_fail(err, e, "rename %s", tmp);
  }
  return 0;
}

/* Docker's --restart values: no | on-failure[:N] | always | unless-stopped. The shim treats
 * always and unless-stopped alike; they differ only at boot, where the host agent brings
 * back "always" containers and "unless-stopped" ones the user did not stop. */
int parse_policy(const char *text, struct shim_config *cfg, pr_error *err) {
  cfg->policy_text = text;
  cfg->max_retries = 0;
  if (strcmp(text, "no") == 0) {
    cfg->policy = POLICY_NO;
  } else if (strcmp(text, "always") == 0) {
    cfg->policy = POLICY_ALWAYS;
  } else if (strcmp(text, "unless-stopped") == 0) {
    cfg->policy = POLICY_UNLESS_STOPPED;
  } else if (strncmp(text, "on-failure", 10) == 0 && (text[10] == '\0' || text[10] == ':')) {
    cfg->policy = POLICY_ON_FAILURE;
    if (text[10] == ':') {
      char *end;
      errno = 0;
      long n = strtol(text + 11, &end, 10);
      if (errno || end == text + 11 || *end || n < 0 || n > INT_MAX)
        return pr_fail(err, 0, "bad restart policy %s: the retry count must be a number >= 0", text);
      cfg->max_retries = (int)n;
    }
  } else {
    return pr_fail(err, 0, "bad restart policy %s (want no, on-failure[:N], always or unless-stopped)", text);
  }
  return 0;
}

static const struct {
  const char *name;
  int sig;
} signals[] = {
    {"HUP", SIGHUP},   {"INT", SIGINT},   {"QUIT", SIGQUIT}, {"KILL", SIGKILL},
    {"USR1", SIGUSR1}, {"USR2", SIGUSR2}, {"TERM", SIGTERM}, {"WINCH", SIGWINCH},
    {"STOP", SIGSTOP}, {"CONT", SIGCONT}, {"PWR", SIGPWR},   {"ABRT", SIGABRT},
};

int parse_signal(const char *text, pr_error *err) {
  char *end;
  long n = strtol(text, &end, 10);
  if (end != text && *end == '\0') {
    if (n <= 0 || n >= 65)
      return pr_fail(err, 0, "bad signal %s", text);
    return (int)n;
  }
  const char *s = strncasecmp(text, "SIG", 3) == 0 ? text + 3 : text;
  for (size_t i = 0; i < sizeof signals / sizeof signals[0]; i++)
    if (strcasecmp(s, signals[i].name) == 0)
      return signals[i].sig;
  return pr_fail(err, 0, "bad signal %s", text);
}

void run_hook(char *const *argv) {
  if (!argv)
    return;
  /* Twice forked: the grandchild is reparented to init, so no zombie waits on this loop. */
  pid_t pid = fork();
  if (pid < 0)
    return;
  if (pid == 0) {
    if (fork() == 0) {
      setsid();
      int null = open("/dev/null", O_RDWR);
      if (null >= 0) {
        dup2(null, 0);
        dup2(null, 1);
        dup2(null, 2);
      }
      execv(argv[0], argv);
    }
    _exit(0);
  }
  while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
    ;
}
