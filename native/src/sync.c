#include "sync.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>

int sync_send(int fd, enum pr_sync_type type, int value, const char *text) {
  struct pr_sync_msg m = {.type = type, .value = value};
  size_t len = offsetof(struct pr_sync_msg, text);
  if (text) {
    size_t l = strnlen(text, sizeof(m.text) - 1);
    memcpy(m.text, text, l);
    m.text[l] = '\0';
    len += l + 1;
  }
  ssize_t r;
  do r = send(fd, &m, len, MSG_NOSIGNAL); while (r < 0 && errno == EINTR);
  return r < 0 ? -1 : 0;
}

int sync_recv(int fd, struct pr_sync_msg *m, pr_error *err) {
  ssize_t r;
  memset(m, 0, sizeof(*m));
  do r = recv(fd, m, sizeof(*m) - 1, 0); while (r < 0 && errno == EINTR);
  if (r < 0) return pr_fail(err, errno, "reading from the container init");
  if (r == 0) return pr_fail(err, 0, "the container init exited unexpectedly");
  if ((size_t)r < offsetof(struct pr_sync_msg, text)) return pr_fail(err, 0, "short message from the container init");
  return 0;
}

void sync_send_error(int fd, const pr_error *err) { sync_send(fd, SYNC_ERROR, err->errnum, err->msg); }
