#include "console.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <termios.h>
#include <unistd.h>

#include "util.h"

int console_connect(const char *path, pr_error *err) {
  struct sockaddr_un addr;
  cleanup_close int dirfd = -1;
  if (unix_addr(path, &addr, &dirfd, err) < 0) return pr_prefix(err, "--console-socket");
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

int console_setup(int sock, unsigned rows, unsigned cols, bool bind_console, pr_error *err) {
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
  if (bind_console) {
    /* /dev/console of the container is the pty, as in runc. */
    int f = open("/dev/console", O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
    if (f >= 0) close(f);
    if (mount(name, "/dev/console", NULL, MS_BIND, NULL) < 0)
      return pr_fail(err, errno, "process.terminal: bind-mounting %s on /dev/console", name);
  }
  if (ioctl(slave, TIOCSCTTY, 0) < 0) return pr_fail(err, errno, "process.terminal: TIOCSCTTY");
  for (int i = 0; i < 3; i++)
    if (dup2(slave, i) < 0) return pr_fail(err, errno, "process.terminal: dup2");
  return 0;
}

int console_recv_fd(int sock, pr_error *err) {
  char name[256], buf[CMSG_SPACE(sizeof(int))];
  struct iovec iov = {name, sizeof name};
  struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = buf, .msg_controllen = sizeof buf};
  ssize_t n;
  do n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC); while (n < 0 && errno == EINTR);
  struct cmsghdr *c = n > 0 ? CMSG_FIRSTHDR(&msg) : NULL;
  if (!c || c->cmsg_type != SCM_RIGHTS) return pr_fail(err, n < 0 ? errno : 0, "process.terminal: no pty from the container");
  int fd;
  memcpy(&fd, CMSG_DATA(c), sizeof fd);
  return fd;
}

static volatile sig_atomic_t winch;
static void on_winch(int sig) { (void)sig; winch = 1; }

static void copy_winsize(int master) {
  struct winsize ws;
  if (ioctl(0, TIOCGWINSZ, &ws) == 0) ioctl(master, TIOCSWINSZ, &ws);
}

int console_proxy(int master, pr_error *err) {
  /* What `runc run` does without --console-socket: our stdin/stdout become
   * the pty's other end (raw mode when stdin is a terminal). */
  struct termios saved;
  bool raw = isatty(0) && tcgetattr(0, &saved) == 0;
  if (raw) {
    struct termios t = saved;
    cfmakeraw(&t);
    tcsetattr(0, TCSANOW, &t);
    copy_winsize(master);
    signal(SIGWINCH, on_winch);
  }
  struct pollfd fds[2] = {{0, POLLIN, 0}, {master, POLLIN, 0}};
  char buf[8192];
  int ret = 0;
  for (;;) {
    if (winch) {
      winch = 0;
      copy_winsize(master);
    }
    int r = poll(fds, 2, -1);
    if (r < 0) {
      if (errno == EINTR) continue;
      ret = pr_fail(err, errno, "poll");
      break;
    }
    if (fds[1].revents & (POLLIN | POLLHUP | POLLERR)) {
      ssize_t n = read(master, buf, sizeof buf);
      if (n <= 0) break; /* EIO: the container side of the pty is closed */
      if (write_all(1, buf, (size_t)n) < 0) break;
    }
    if (fds[0].revents & (POLLIN | POLLHUP)) {
      ssize_t n = read(0, buf, sizeof buf);
      if (n <= 0) fds[0].fd = -1; /* stdin closed: keep showing output */
      else if (write_all(master, buf, (size_t)n) < 0) break;
    }
  }
  if (raw) tcsetattr(0, TCSANOW, &saved);
  return ret;
}
