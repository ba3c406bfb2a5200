/* Thin wrappers for the raw syscalls glibc 2.36 does not wrap (or wraps too
 * late for older hosts).  Each returns -1 with errno set, and ENOSYS where the
 * kernel headers lack the number, so callers can fall back. */
#ifndef PR_SYSCALLS_H
#define PR_SYSCALLS_H
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <linux/capability.h>

#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

struct pr_open_how {
  uint64_t flags;
  uint64_t mode;
  uint64_t resolve;
};
#ifndef RESOLVE_IN_ROOT
#define RESOLVE_IN_ROOT 0x10
#endif
#ifndef RESOLVE_NO_MAGICLINKS
#define RESOLVE_NO_MAGICLINKS 0x02
#endif

static inline int sys_pivot_root(const char *new_root, const char *put_old) {
#ifdef SYS_pivot_root
  return (int)syscall(SYS_pivot_root, new_root, put_old);
#else
  errno = ENOSYS;
  return -1;
#endif
}

/* fork()-like clone: a NULL stack makes the child continue on a copy of the
 * parent's stack, which is what lets us pass CLONE_NEW* flags at fork time
 * (the same trick crun's libcrun_run_linux_container uses). */
static inline pid_t sys_clone_fork(unsigned long flags) {
  return (pid_t)syscall(SYS_clone, flags | SIGCHLD, NULL, NULL, NULL, NULL);
}

#ifndef CLONE_INTO_CGROUP
#define CLONE_INTO_CGROUP 0x200000000ULL
#endif
struct pr_clone_args {
  uint64_t flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls, set_tid, set_tid_size,
      cgroup;
};

/* fork()-like clone3 that also places the child straight into a cgroup v2
 * directory (CLONE_INTO_CGROUP, Linux 5.7): no migration afterwards, so no
 * cgroup_threadgroup_rwsem write lock and its RCU grace period. */
static inline pid_t sys_clone3_fork(unsigned long flags, int cgroup_fd) {
#ifdef SYS_clone3
  struct pr_clone_args a = {0};
  a.flags = flags | (cgroup_fd >= 0 ? CLONE_INTO_CGROUP : 0);
  a.exit_signal = SIGCHLD;
  a.cgroup = cgroup_fd >= 0 ? (uint64_t)cgroup_fd : 0;
  return (pid_t)syscall(SYS_clone3, &a, sizeof(a));
#else
  errno = ENOSYS;
  return -1;
#endif
}

static inline int sys_close_range(unsigned first, unsigned last, unsigned flags) {
#ifdef SYS_close_range
  return (int)syscall(SYS_close_range, first, last, flags);
#else
  errno = ENOSYS;
  return -1;
#endif
}

static inline int sys_pidfd_open(pid_t pid, unsigned flags) {
#ifdef SYS_pidfd_open
  return (int)syscall(SYS_pidfd_open, pid, flags);
#else
  errno = ENOSYS;
  return -1;
#endif
}

static inline int sys_pidfd_send_signal(int pidfd, int sig) {
#ifdef SYS_pidfd_send_signal
  return (int)syscall(SYS_pidfd_send_signal, pidfd, sig, NULL, 0);
#else
  errno = ENOSYS;
  return -1;
#endif
}

static inline int sys_openat2(int dirfd, const char *path, struct pr_open_how *how) {
#ifdef SYS_openat2
  return (int)syscall(SYS_openat2, dirfd, path, how, sizeof(*how));
#else
  errno = ENOSYS;
  return -1;
#endif
}

/* The new mount API (Linux 5.2; mount_setattr 5.12).  Constants from linux/mount.h, which
 * clashes with glibc's sys/mount.h. */
#ifndef OPEN_TREE_CLONE
#define OPEN_TREE_CLONE 1
#endif
#ifndef OPEN_TREE_CLOEXEC
#define OPEN_TREE_CLOEXEC 02000000 /* O_CLOEXEC */
#endif
#ifndef MOUNT_ATTR_RDONLY
#define MOUNT_ATTR_RDONLY 0x00000001
#define MOUNT_ATTR_NOSUID 0x00000002
#define MOUNT_ATTR_NODEV 0x00000004
#define MOUNT_ATTR_NOEXEC 0x00000008
#endif
struct pr_mount_attr {
  uint64_t attr_set, attr_clr, propagation, userns_fd;
};

static inline int sys_open_tree(int dirfd, const char *path, unsigned flags) {
#ifdef SYS_open_tree
  return (int)syscall(SYS_open_tree, dirfd, path, flags);
#else
  errno = ENOSYS;
  return -1;
#endif
}

static inline int sys_mount_setattr(int dirfd, const char *path, unsigned flags, struct pr_mount_attr *attr) {
#ifdef SYS_mount_setattr
  return (int)syscall(SYS_mount_setattr, dirfd, path, flags, attr, sizeof(*attr));
#else
  errno = ENOSYS;
  return -1;
#endif
}

static inline int sys_bpf(int cmd, void *attr, unsigned size) {
#ifdef SYS_bpf
  return (int)syscall(SYS_bpf, cmd, attr, size);
#else
  errno = ENOSYS;
  return -1;
#endif
}

static inline int sys_capset(struct __user_cap_header_struct *h, struct __user_cap_data_struct *d) {
  return (int)syscall(SYS_capset, h, d);
}

static inline int sys_capget(struct __user_cap_header_struct *h, struct __user_cap_data_struct *d) {
  return (int)syscall(SYS_capget, h, d);
}
#endif
