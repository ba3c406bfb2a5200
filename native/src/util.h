/* Small helpers: cleanup attributes (as in bubblewrap's utils.h) and file IO. */
#ifndef PR_UTIL_H
#define PR_UTIL_H
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "error.h"

void pr_freep(void *p);
void pr_closep(int *fd);
#define cleanup_free __attribute__((cleanup(pr_freep)))
#define cleanup_close __attribute__((cleanup(pr_closep)))

/* Returns the fd and disarms the cleanup of the variable holding it. */
static inline int steal_fd(int *fd) { int r = *fd; *fd = -1; return r; }
static inline void *steal_ptr(void *pp) { void **p = pp; void *r = *p; *p = NULL; return r; }

void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t sz);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

int write_all(int fd, const void *buf, size_t len);
int write_file(const char *path, const char *data, size_t len, pr_error *err);
int write_file_at(int dirfd, const char *path, const char *data, size_t len, pr_error *err);
/* Atomic write: temp file in the same directory, (fsync if durable), rename.
 * Runtime state under /run is volatile by nature (tmpfs on real hosts, and
 * meaningless after a reboot), so it skips the fsync, as runc does. */
int write_file_atomic(const char *path, const char *data, size_t len, mode_t mode, bool durable, pr_error *err);
int read_file(const char *path, char **out, size_t *len, pr_error *err);
int mkdir_p(const char *path, mode_t mode, pr_error *err);
/* Lexically normalise an absolute path inside a root (drops ., .. never escapes). */
char *path_clean(const char *path);
bool str_has_prefix(const char *s, const char *p);
/* The address of a unix socket at path, whatever its length.  sun_path holds 107 bytes,
 * less than <root>/<64-hex id>/start.sock under a deep --root: a longer path is reached
 * through its directory, /proc/self/fd/N/NAME, with *dirfd (to close after the bind or
 * connect) holding N; -1 when the path fits. */
struct sockaddr_un;
int unix_addr(const char *path, struct sockaddr_un *addr, int *dirfd, pr_error *err);
#endif
