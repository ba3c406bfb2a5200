#ifndef PR_CONSOLE_H
#define PR_CONSOLE_H
#include <stdbool.h>

#include "error.h"
/* Connects to the --console-socket path. */
int console_connect(const char *path, pr_error *err);
/* In the container (after pivot_root): opens a pty from its devpts, sends
 * the master to sock with SCM_RIGHTS (runc's protocol), and makes the slave
 * the controlling terminal and stdio (bound over /dev/console when asked). */
/* bind_console: the init's /dev/console becomes the pty (runc does this for the container's
 * first process only). exec passes false: it runs in the container's live mount namespace,
 * where a bind mount would outlive the exec'd process and, once its pty is gone, leave a
 * mount over a deleted node that makes the next mount there fail with ENOENT. */
int console_setup(int sock, unsigned rows, unsigned cols, bool bind_console, pr_error *err);
int console_send_fd(int sock, int fd, const char *name, pr_error *err);
int console_recv_fd(int sock, pr_error *err);
/* Copies stdin → master and master → stdout until the container side
 * closes (run with a terminal and no --console-socket). */
int console_proxy(int master, pr_error *err);
#endif
