/* Messages between the runtime and the container's init over a
 * SOCK_SEQPACKET socketpair (one message per send, so no framing). */
#ifndef PR_SYNC_H
#define PR_SYNC_H
#include <stddef.h>
#include <stdint.h>

#include "error.h"

enum pr_sync_type {
  SYNC_GO = 1,        /* parent → init: cgroup and id maps are in place; value = host pid */
  SYNC_HOOKS,         /* init → parent: run createRuntime hooks now */
  SYNC_HOOKS_DONE,    /* parent → init */
  SYNC_READY,         /* init → parent: waiting for start */
  SYNC_START,         /* parent → init (run only) */
  SYNC_ERROR,         /* either way: text is the error line */
  SYNC_ABORT,         /* parent → init: give up */
  SYNC_PID,           /* stage-1 child → parent: value = the init's host pid */
};

struct pr_sync_msg {
  uint32_t type;
  int32_t value;
  char text[2048];
};

int sync_send(int fd, enum pr_sync_type type, int value, const char *text);
/* Returns 0 on a message, -1 with err on EOF/failure. */
int sync_recv(int fd, struct pr_sync_msg *m, pr_error *err);
/* Sends SYNC_ERROR carrying err->msg. */
void sync_send_error(int fd, const pr_error *err);
#endif
