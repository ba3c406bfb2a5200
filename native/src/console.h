#ifndef PR_CONSOLE_H
#define PR_CONSOLE_H
#include "error.h"
/* Connects to the --console-socket path. */
int console_connect(const char *path, pr_error *err);
/* In the container (after pivot_root): opens a pty from its devpts, sends
 * the master to sock with SCM_RIGHTS (runc's protocol), and makes the slave
 * the controlling terminal and stdio, also bound over /dev/console. */
int console_setup(int sock, unsigned rows, unsigned cols, pr_error *err);
int console_send_fd(int sock, int fd, const char *name, pr_error *err);
int console_recv_fd(int sock, pr_error *err);
/* Copies stdin → master and master → stdout until the container side
 * closes (run with a terminal and no --console-socket). */
int console_proxy(int master, pr_error *err);
#endif
