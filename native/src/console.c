#include "console.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <termios.h>
#include <unistd.h>

#include "util.h"

int console_connect(const char *path, pr_error *err) {
  struct sockaddr_un addr = {.sun_family = AF_UNIX};
  if (strlen(path) >= sizeof(addr.sun_path)) return pr_fail(err, 0, "--console-socket: path too long: %s", path);
  strcpy(addr.sun_path, path);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return pr_fail(err, errno, "--console-socket: socket");
  if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
    int e = errno;
    close(fd);
    return pr_fail(err, e, "--console-socket: connect %s", path);
  }
  return fd;
}

int console_send_fd(int sock, int fd, const char *name, pr_error *err) {
  char buf[CMSG_SPACE(sizeof(int))];
  memset(buf, 0, sizeof buf);
  struct iovec iov = {(void *)name, strlen(name)};
  struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = buf, .msg_controllen = sizeof buf};
  struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int));
  memcpy(CMSG_DATA(c), &fd, sizeof(int));
  if (sendmsg(sock, &msg, MSG_NOSIGNAL) < 0) return pr_fail(err, errno, "--console-socket: sending the pty master");
  return 0;
}

int console_setup(int sock, unsigned rows, unsigned cols, pr_error *err) {
  cleanup_close int master = open("/dev/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC);
  if (master < 0) return pr_fail(err, errno, "process.terminal: open /dev/ptmx (is /dev/pts mounted?)");
  if (unlockpt(master) < 0) return pr_fail(err, errno, "process.terminal: unlockpt");
  char name[64];
  if (ptsname_r(master, name, sizeof name) != 0) return pr_fail(err, errno, "process.terminal: ptsname");
  cleanup_close int slave = open(name, O_RDWR | O_NOCTTY | O_CLOEXEC);
  if (slave < 0) return pr_fail(err, errno, "process.terminal: open %s", name);
  if (rows || cols) {
    struct winsize ws = {.ws_row = (unsigned short)rows, .ws_col = (unsigned short)cols};
    ioctl(slave, TIOCSWINSZ, &ws);
  }
  if (console_send_fd(sock, master, name, err) < 0) return -1;
  /* /dev/console of the container is the pty, as in runc. */
  int f = open("/dev/console", O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
  if (f >= 0) close(f);
  if (mount(name, "/dev/console", NULL, MS_BIND, NULL) < 0)
    return pr_fail(err, errno, "process.terminal: bind-mounting %s on /dev/console", name);
  if (ioctl(slave, TIOCSCTTY, 0) < 0) return pr_fail(err, errno, "process.terminal: TIOCSCTTY");
  for (int i = 0; i < 3; i++)
    if (dup2(slave, i) < 0) return pr_fail(err, errno, "process.terminal: dup2");
  return 0;
}
