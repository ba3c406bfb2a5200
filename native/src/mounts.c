/* Building the container's mount tree: everything below runs in the new
 * mount namespace, before and after pivot_root(2). */
#include "mounts.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "cgroups.h"
#include "container.h"
#include "syscalls.h"
#include "util.h"

unsigned long mounts_locked_flags(const char *path) {
  struct statvfs s;
  unsigned long f = 0;
  if (statvfs(path, &s) < 0) return 0;
  if (s.f_flag & ST_NOSUID) f |= MS_NOSUID;
  if (s.f_flag & ST_NODEV) f |= MS_NODEV;
  if (s.f_flag & ST_NOEXEC) f |= MS_NOEXEC;
  if (s.f_flag & ST_RDONLY) f |= MS_RDONLY;
  return f;
}

/* The mount ID of the mount fd lies on (/proc/self/fdinfo, Linux 3.15). */
static int mount_id(int fd) {
  char path[64];
  snprintf(path, sizeof path, "/proc/self/fdinfo/%d", fd);
  cleanup_free char *s = NULL;
  if (read_file(path, &s, NULL, NULL) < 0) return -1;
  const char *m = strstr(s, "mnt_id:");
  return m ? atoi(m + 7) : -1;
}

/* pivot_root(2) refuses a new root whose parent mount is shared.  With the default rslave
 * nothing here is shared, but rootfsPropagation shared/rshared keeps the host's shared
 * mounts shared: make the one mount holding the rootfs private (just that one, so
 * volumes elsewhere keep propagating), as runc does (rootfsParentMountPrivate). */
static int make_parent_private(const char *rootfs, pr_error *err) {
  cleanup_close int fd = open(rootfs, O_PATH | O_CLOEXEC);
  if (fd < 0) return pr_fail(err, errno, "root.path: open %s", rootfs);
  int id = mount_id(fd);
  cleanup_free char *info = NULL;
  if (id < 0 || read_file("/proc/self/mountinfo", &info, NULL, err) < 0)
    return pr_fail(err, errno, "root.path: finding the mount holding %s", rootfs);
  for (char *save, *line = strtok_r(info, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
    /* ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE ... */
    char mp[PATH_MAX];
    int mid, n = 0;
    if (sscanf(line, "%d %*d %*s %*s %4095s %*s%n", &mid, mp, &n) < 2 || mid != id) continue;
    const char *dash = strstr(line + n, " - ");
    if (!strstr(line + n, "shared:") || (dash && strstr(line + n, "shared:") > dash)) return 0;
    /* mountinfo escapes space, tab, newline and backslash as \ooo */
    char *o = mp;
    for (const char *i = mp; *i; o++)
      if (i[0] == '\\' && i[1] >= '0' && i[1] <= '3' && i[2] && i[3]) {
        *o = (char)((i[1] - '0') * 64 + (i[2] - '0') * 8 + (i[3] - '0'));
        i += 4;
      } else {
        *o = *i++;
      }
    *o = '\0';
    if (mount(NULL, mp, NULL, MS_PRIVATE, NULL) < 0)
      return pr_fail(err, errno, "linux.rootfsPropagation: making %s (the mount holding the rootfs) private", mp);
    return 0;
  }
  return 0;
}

int mounts_prepare_rootfs(struct pr_container *ct, pr_error *err) {
  struct pr_config *c = ct->cfg;
  /* Nothing we mount may propagate back to the host (runc uses rslave unless
   * rootfsPropagation asks for more). */
  unsigned long prop = c->rootfs_propagation ? c->rootfs_propagation : MS_SLAVE | MS_REC;
  if (mount(NULL, "/", NULL, prop | MS_REC, NULL) < 0)
    return pr_fail(err, errno, "linux.rootfsPropagation: making / %s", prop & MS_SHARED ? "shared" : "slave");
  if ((prop & MS_SHARED) && make_parent_private(c->rootfs, err) < 0) return -1;
  if (mount(c->rootfs, c->rootfs, NULL, MS_BIND | MS_REC, NULL) < 0)
    return pr_fail(err, errno, "root.path: bind-mounting %s onto itself", c->rootfs);
  ct->rootfd = open(c->rootfs, O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (ct->rootfd < 0) return pr_fail(err, errno, "root.path: open %s", c->rootfs);
  return 0;
}

static int open_in_root(int rootfd, const char *rel) {
  struct pr_open_how how = {O_PATH | O_CLOEXEC, 0, RESOLVE_IN_ROOT};
  int fd = sys_openat2(rootfd, rel, &how);
  if (fd < 0 && errno == ENOSYS) fd = openat(rootfd, rel, O_PATH | O_CLOEXEC); /* pre-5.6 kernels */
  return fd;
}

const char *proc_fd_path(int fd, char buf[PROC_FD_PATH_LEN]) {
  snprintf(buf, PROC_FD_PATH_LEN, "/proc/self/fd/%d", fd);
  return buf;
}

int mounts_open(struct pr_container *ct, const char *path, bool create, bool make_file, pr_error *err) {
  cleanup_free char *rel = xstrdup(path[0] == '/' ? path + 1 : path);
  if (!*rel) {
    int fd = dup(ct->rootfd);
    return fd < 0 ? pr_fail(err, errno, "dup") : fd;
  }
  int fd = open_in_root(ct->rootfd, rel);
  if (fd < 0 && errno == ENOENT && create) {
    /* Walk the prefixes, creating what is missing; each step re-resolves in
     * the root so a symlink in the image cannot point us outside it. */
    for (char *s = rel;; s++) {
      if (*s != '/' && *s != '\0') continue;
      char saved = *s;
      *s = '\0';
      cleanup_close int cur = open_in_root(ct->rootfd, rel);
      if (cur < 0 && errno == ENOENT) {
        char *slash = strrchr(rel, '/');
        cleanup_close int parent = slash ? ({ *slash = '\0'; int p = open_in_root(ct->rootfd, rel); *slash = '/'; p; })
                                         : dup(ct->rootfd);
        const char *name = slash ? slash + 1 : rel;
        if (parent < 0) return pr_fail(err, errno, "resolving %s", path);
        if (saved == '\0' && make_file) {
          int f = openat(parent, name, O_CREAT | O_WRONLY | O_CLOEXEC | O_NOFOLLOW, 0644);
          if (f < 0 && errno != EEXIST) return pr_fail(err, errno, "creating %s", path);
          if (f >= 0) close(f);
        } else if (mkdirat(parent, name, 0755) < 0 && errno != EEXIST) {
          return pr_fail(err, errno, "creating directory %s", rel);
        }
      } else if (cur < 0) {
        return pr_fail(err, errno, "resolving %s", path);
      }
      *s = saved;
      if (saved == '\0') break;
    }
    fd = open_in_root(ct->rootfd, rel);
  }
  if (fd < 0) return pr_fail(err, errno, "resolving %s", path);
  return fd;
}

/* Where a mount on target will be reachable: the directory holding target, resolved
 * again inside the root (so it cannot be anywhere else, whatever was swapped meanwhile),
 * and target's name in it; taken before mounting, as target itself keeps naming the
 * covered object. */
static int locate(int rootfd, int target, int *parent, char **name, const char *what, pr_error *err) {
  char tp[PROC_FD_PATH_LEN], rp[PROC_FD_PATH_LEN], link[PATH_MAX], root[PATH_MAX];
  ssize_t n = readlink(proc_fd_path(target, tp), link, sizeof link - 1);
  ssize_t rn = readlink(proc_fd_path(rootfd, rp), root, sizeof root - 1);
  if (n <= 0 || rn <= 0) return pr_fail(err, errno, "%s: readlink %s", what, n <= 0 ? tp : rp);
  link[n] = root[rn] = '\0';
  if (strncmp(link, root, (size_t)rn) != 0 || link[rn] != '/' || !link[rn + 1])
    return pr_fail(err, 0, "%s: %s is not below the rootfs %s", what, link, root);
  char *rel = link + rn + 1, *slash = strrchr(rel, '/');
  *name = xstrdup(slash ? slash + 1 : rel);
  if (slash) *slash = '\0';
  *parent = slash ? open_in_root(rootfd, rel) : dup(rootfd);
  if (*parent < 0) return pr_fail(err, errno, "%s: opening the parent of %s", what, link);
  return 0;
}

int mounts_attach(int rootfd, int target, const char *source, const char *type, unsigned long flags,
                  const char *data, int *new_mnt, const char *what, pr_error *err) {
  char tp[PROC_FD_PATH_LEN];
  cleanup_close int parent = -1;
  cleanup_free char *name = NULL;
  if (new_mnt && locate(rootfd, target, &parent, &name, what, err) < 0) return -1;
  /* The magic link names exactly the object resolved earlier: a symlink swapped in for
   * it since then is never followed (runc mounts through /proc/self/fd/N the same way). */
  if (mount(source, proc_fd_path(target, tp), type, flags, data) < 0) return pr_fail(err, errno, "%s", what);
  if (!new_mnt) return 0;
  /* The new mount is on top of target's name: open that name again, but accept only a
   * mount stacked there (not a symlink or directory that took the name meanwhile). */
  int m = openat(parent, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
  int mid = m >= 0 ? mount_id(m) : -1;
  if (m < 0 || mid < 0 || mid == mount_id(target)) {
    if (m >= 0) close(m);
    return pr_fail(err, 0, "%s: the mount point was replaced while mounting", what);
  }
  *new_mnt = m;
  return 0;
}

static bool in_userns(struct pr_container *ct) { return ct->cfg->ns[NS_USER].present; }

/* MS_REMOUNT|MS_BIND of the mount mnt refers to (the root of a mount). */
static int bind_remount(int mnt, unsigned long flags, const char *what, pr_error *err) {
  char mp[PROC_FD_PATH_LEN];
  proc_fd_path(mnt, mp);
  unsigned long locked = mounts_locked_flags(mp) & ~MS_RDONLY;
  if (mount(NULL, mp, NULL, MS_REMOUNT | MS_BIND | flags | locked, NULL) < 0)
    return pr_fail(err, errno, "%s: remounting", what);
  return 0;
}

static int do_mount(struct pr_container *ct, const struct pr_op *op, pr_error *err) {
  bool bind = op->c == NULL;
  bool is_dir = true;
  if (bind) {
    struct stat st;
    if (stat(op->a, &st) < 0) return pr_fail(err, errno, "%s.source: %s", op->field, op->a);
    is_dir = S_ISDIR(st.st_mode);
  }
  cleanup_close int target = mounts_open(ct, op->b, true, !is_dir, err);
  if (target < 0) return pr_prefix(err, "%s.destination", op->field);
  cleanup_close int mnt = -1;
  cleanup_free char *what = NULL;
  if (bind) {
    what = xasprintf("%s: bind-mounting %s on %s", op->field, op->a, op->b);
    bool follow = op->remount_flags || op->propagation;
    if (mounts_attach(ct->rootfd, target, op->a, NULL, op->flags & (MS_BIND | MS_REC), NULL, follow ? &mnt : NULL, what, err) < 0)
      return -1;
    if (op->remount_flags && bind_remount(mnt, op->remount_flags, what, err) < 0) return -1;
  } else {
    unsigned long flags = op->flags & ~MS_REMOUNT;
    what = xasprintf("%s: mounting %s (type %s) on %s", op->field, op->a, op->c, op->b);
    if (mounts_attach(ct->rootfd, target, op->a, op->c, flags, op->data, op->propagation ? &mnt : NULL, what, err) < 0) {
      int e = err->errnum;
      /* sysfs and mqueue cannot be mounted from a user namespace that does not
       * own the net/ipc namespace; runc falls back to a bind of the host's. */
      const char *host = strcmp(op->c, "sysfs") == 0 ? "/sys" : strcmp(op->c, "mqueue") == 0 ? "/dev/mqueue" : NULL;
      if (!(e == EPERM && in_userns(ct) && host)) return -1;
      free(what);
      what = xasprintf("%s: bind-mounting host %s on %s", op->field, host, op->b);
      unsigned long rf = flags & ~(MS_BIND | MS_REC);
      if (mounts_attach(ct->rootfd, target, host, NULL, MS_BIND | MS_REC, NULL, rf || op->propagation ? &mnt : NULL, what, err) < 0)
        return -1;
      if (rf && bind_remount(mnt, rf, what, err) < 0) return -1;
    }
  }
  char mp[PROC_FD_PATH_LEN];
  if (op->propagation && mount(NULL, proc_fd_path(mnt, mp), NULL, op->propagation, NULL) < 0)
    return pr_fail(err, errno, "%s: setting propagation on %s", op->field, op->b);
  return 0;
}

/* maskedPaths and readonlyPaths run after pivot_root: the paths resolve inside the
 * container's root, which nothing can leave.  Each target is opened once and masked
 * through its descriptor, so what is checked is what gets covered. */

/* The mask source: the container's /dev/null, which must be the null device (char 1:3).
 * Anything else there (another node, a symlink to a writable /proc file) would be bound
 * over every masked path, readable or writable from inside (runc checks the same since
 * CVE-2025-31133: verifyDevNull). */
static int open_dev_null(const char *field, pr_error *err) {
  int fd = open("/dev/null", O_PATH | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return pr_fail(err, errno, "%s: opening the container's /dev/null to mask with", field);
  struct stat st;
  if (fstat(fd, &st) < 0 || !S_ISCHR(st.st_mode) || st.st_rdev != makedev(1, 3)) {
    close(fd);
    return pr_fail(err, 0, "%s: the container's /dev/null is not the null device (char 1:3), refusing to mask with it",
                   field);
  }
  return fd;
}

static int mask_path(const struct pr_op *op, pr_error *err) {
  cleanup_close int target = open(op->a, O_PATH | O_CLOEXEC);
  if (target < 0) return errno == ENOENT ? 0 : pr_fail(err, errno, "%s: %s", op->field, op->a);
  struct stat st;
  if (fstat(target, &st) < 0) return pr_fail(err, errno, "%s: %s", op->field, op->a);
  char tp[PROC_FD_PATH_LEN], np[PROC_FD_PATH_LEN];
  int r;
  /* As the spec wants them unreadable and runc does it: a directory gets an empty
   * read-only tmpfs; anything else (file, device node, socket, fifo) /dev/null. */
  if (S_ISDIR(st.st_mode)) {
    r = mount("tmpfs", proc_fd_path(target, tp), "tmpfs", MS_RDONLY, NULL);
  } else {
    cleanup_close int null = open_dev_null(op->field, err);
    if (null < 0) return -1;
    r = mount(proc_fd_path(null, np), proc_fd_path(target, tp), NULL, MS_BIND, NULL);
  }
  if (r < 0) return pr_fail(err, errno, "%s: masking %s", op->field, op->a);
  return 0;
}

static int remount_path(const char *path, unsigned long flags, const char *field, pr_error *err) {
  unsigned long locked = mounts_locked_flags(path) & ~MS_RDONLY;
  if (mount(NULL, path, NULL, MS_REMOUNT | MS_BIND | flags | locked, NULL) < 0)
    return pr_fail(err, errno, "%s: remounting %s", field, path);
  return 0;
}

static int readonly_path(const struct pr_op *op, pr_error *err) {
  if (mount(op->a, op->a, NULL, MS_BIND | MS_REC, NULL) < 0)
    return errno == ENOENT ? 0 : pr_fail(err, errno, "%s: bind-mounting %s", op->field, op->a);
  return remount_path(op->a, MS_RDONLY | MS_REC, op->field, err);
}

int mounts_pivot(struct pr_container *ct, pr_error *err) {
  /* pivot_root(".", ".") stacks the old root on top of the new one; we then
   * detach it.  This avoids needing a directory for put_old (the approach
   * documented in pivot_root(2) and used by lxc and runc). */
  if (chdir(ct->cfg->rootfs) < 0) return pr_fail(err, errno, "root.path: chdir %s", ct->cfg->rootfs);
  if (sys_pivot_root(".", ".") < 0) return pr_fail(err, errno, "root.path: pivot_root to %s", ct->cfg->rootfs);
  if (mount(NULL, ".", NULL, MS_SLAVE | MS_REC, NULL) < 0) return pr_fail(err, errno, "making the old root a slave");
  if (umount2(".", MNT_DETACH) < 0) return pr_fail(err, errno, "detaching the old root");
  if (chdir("/") < 0) return pr_fail(err, errno, "chdir /");
  return 0;
}

int mounts_do_op(struct pr_container *ct, const struct pr_op *op, pr_error *err) {
  switch (op->kind) {
    case OP_MOUNT: return do_mount(ct, op, err);
    case OP_CGROUP_MOUNT: {
      cleanup_close int target = mounts_open(ct, op->b, true, false, err);
      if (target < 0) return pr_prefix(err, "%s.destination", op->field);
      if (cgroup_mount(&ct->cg, ct->rootfd, target, op->flags & ~(MS_BIND | MS_REC | MS_REMOUNT), ct->cfg->ns[NS_CGROUP].present, err) < 0)
        return pr_prefix(err, "%s", op->field);
      return 0;
    }
    case OP_PIVOT: return mounts_pivot(ct, err);
    case OP_PROPAGATION:
      if (mount(NULL, "/", NULL, op->propagation, NULL) < 0) return pr_fail(err, errno, "%s", op->field);
      return 0;
    case OP_MASK: return mask_path(op, err);
    case OP_READONLY: return readonly_path(op, err);
    case OP_ROOT_RO: return remount_path("/", MS_RDONLY, op->field, err);
    default: return pr_fail(err, 0, "%s: not a mount operation", op->field);
  }
}
