#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

void pr_freep(void *p) { free(*(void **)p); }
void pr_closep(int *fd) {
  if (*fd >= 0) {
    int saved = errno;
    close(*fd);
    errno = saved;
  }
}

static void oom(void) {
  static const char m[] = "provision-runtime: out of memory\n";
  (void)!write(2, m, sizeof(m) - 1);
  _exit(70);
}
void *xmalloc(size_t n) { void *p = malloc(n ? n : 1); if (!p) oom(); return p; }
void *xcalloc(size_t n, size_t sz) { void *p = calloc(n ? n : 1, sz ? sz : 1); if (!p) oom(); return p; }
void *xrealloc(void *p, size_t n) { p = realloc(p, n ? n : 1); if (!p) oom(); return p; }
char *xstrdup(const char *s) { if (!s) return NULL; char *r = strdup(s); if (!r) oom(); return r; }
char *xasprintf(const char *fmt, ...) {
  va_list ap;
  char *r = NULL;
  va_start(ap, fmt);
  if (vasprintf(&r, fmt, ap) < 0) oom();
  va_end(ap);
  return r;
}

int write_all(int fd, const void *buf, size_t len) {
  const char *p = buf;
  while (len > 0) {
    ssize_t n = write(fd, p, len);
    if (n < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

int write_file_at(int dirfd, const char *path, const char *data, size_t len, pr_error *err) {
  cleanup_close int fd = openat(dirfd, path, O_WRONLY | O_CLOEXEC | O_TRUNC | O_CREAT, 0644);
  if (fd < 0) return pr_fail(err, errno, "open %s", path);
  if (write_all(fd, data, len) < 0) return pr_fail(err, errno, "write %s", path);
  return 0;
}

int write_file(const char *path, const char *data, size_t len, pr_error *err) {
  return write_file_at(AT_FDCWD, path, data, len, err);
}

int write_file_atomic(const char *path, const char *data, size_t len, mode_t mode, bool durable, pr_error *err) {
  cleanup_free char *tmp = xasprintf("%s.tmpXXXXXX", path);
  cleanup_close int fd = mkostemp(tmp, O_CLOEXEC);
  if (fd < 0) return pr_fail(err, errno, "create %s", tmp);
  if (fchmod(fd, mode) < 0 || write_all(fd, data, len) < 0 || (durable && fsync(fd) < 0) ||
      rename(tmp, path) < 0) {
    int e = errno;
    unlink(tmp);
    return pr_fail(err, e, "write %s", path);
  }
  return 0;
}

int read_file(const char *path, char **out, size_t *len, pr_error *err) {
  cleanup_close int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return pr_fail(err, errno, "open %s", path);
  size_t cap = 4096, n = 0;
  cleanup_free char *buf = xmalloc(cap);
  for (;;) {
    if (n + 1 >= cap) buf = xrealloc(buf, cap *= 2);
    ssize_t r = read(fd, buf + n, cap - n - 1);
    if (r < 0) {
      if (errno == EINTR) continue;
      return pr_fail(err, errno, "read %s", path);
    }
    if (r == 0) break;
    n += (size_t)r;
  }
  buf[n] = '\0';
  if (len) *len = n;
  *out = steal_ptr(&buf);
  return 0;
}

int mkdir_p(const char *path, mode_t mode, pr_error *err) {
  cleanup_free char *p = xstrdup(path);
  for (char *s = p + 1; ; s++) {
    if (*s == '/' || *s == '\0') {
      char c = *s;
      *s = '\0';
      if (mkdir(p, mode) < 0 && errno != EEXIST) return pr_fail(err, errno, "mkdir %s", p);
      *s = c;
      if (c == '\0') break;
    }
  }
  return 0;
}

char *path_clean(const char *path) {
  size_t n = strlen(path);
  char *out = xmalloc(n + 2);
  size_t o = 0;
  const char *s = path;
  while (*s) {
    while (*s == '/') s++;
    if (!*s) break;
    const char *e = strchr(s, '/');
    size_t l = e ? (size_t)(e - s) : strlen(s);
    if (l == 1 && s[0] == '.') {
    } else if (l == 2 && s[0] == '.' && s[1] == '.') {
      while (o > 0 && out[o - 1] != '/') o--;
      if (o > 0) o--;
    } else {
      out[o++] = '/';
      memcpy(out + o, s, l);
      o += l;
    }
    s += l;
  }
  if (o == 0) out[o++] = '/';
  out[o] = '\0';
  return out;
}

bool str_has_prefix(const char *s, const char *p) { return strncmp(s, p, strlen(p)) == 0; }

int unix_addr(const char *path, struct sockaddr_un *addr, int *dirfd, pr_error *err) {
  memset(addr, 0, sizeof *addr);
  addr->sun_family = AF_UNIX;
  *dirfd = -1;
  if (strlen(path) < sizeof addr->sun_path) {
    strcpy(addr->sun_path, path);
    return 0;
  }
  const char *slash = strrchr(path, '/');
  if (!slash || strlen(slash) + 32 >= sizeof addr->sun_path) return pr_fail(err, ENAMETOOLONG, "socket %s", path);
  cleanup_free char *dir = slash == path ? xstrdup("/") : strndup(path, (size_t)(slash - path));
  *dirfd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (*dirfd < 0) return pr_fail(err, errno, "socket directory %s", dir);
  snprintf(addr->sun_path, sizeof addr->sun_path, "/proc/self/fd/%d%s", *dirfd, slash);
  return 0;
}
