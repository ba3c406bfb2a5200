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

int mounts_resolve(struct pr_container *ct, const char *path, bool create, bool make_file, char **out,
                   pr_error *err) {
  cleanup_free char *rel = xstrdup(path[0] == '/' ? path + 1 : path);
  if (!*rel) {
    *out = xstrdup(ct->cfg->rootfs);
    return 0;
  }
  cleanup_close int fd = open_in_root(ct->rootfd, rel);
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
  char link[64], buf[PATH_MAX];
  snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
  ssize_t n = readlink(link, buf, sizeof buf - 1);
  if (n < 0) return pr_fail(err, errno, "readlink %s", link);
  buf[n] = '\0';
  *out = xstrdup(buf);
  return 0;
}

static bool in_userns(struct pr_container *ct) { return ct->cfg->ns[NS_USER].present; }

static int bind_remount(const char *target, unsigned long flags, const char *field, pr_error *err) {
  unsigned long locked = mounts_locked_flags(target) & ~MS_RDONLY;
  if (mount(NULL, target, NULL, MS_REMOUNT | MS_BIND | flags | locked, NULL) < 0)
    return pr_fail(err, errno, "%s: remounting %s", field, target);
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
  cleanup_free char *target = NULL;
  if (mounts_resolve(ct, op->b, true, !is_dir, &target, err) < 0) return pr_prefix(err, "%s.destination", op->field);
  if (bind) {
    if (mount(op->a, target, NULL, op->flags & (MS_BIND | MS_REC), NULL) < 0)
      return pr_fail(err, errno, "%s: bind-mounting %s on %s", op->field, op->a, op->b);
    if (op->remount_flags && bind_remount(target, op->remount_flags, op->field, err) < 0) return -1;
  } else {
    unsigned long flags = op->flags & ~MS_REMOUNT;
    if (mount(op->a, target, op->c, flags, op->data) < 0) {
      int e = errno;
      /* sysfs and mqueue cannot be mounted from a user namespace that does not
       * own the net/ipc namespace; runc falls back to a bind of the host's. */
      const char *host = strcmp(op->c, "sysfs") == 0 ? "/sys" : strcmp(op->c, "mqueue") == 0 ? "/dev/mqueue" : NULL;
      if (e == EPERM && in_userns(ct) && host) {
        if (mount(host, target, NULL, MS_BIND | MS_REC, NULL) < 0)
          return pr_fail(err, errno, "%s: bind-mounting host %s on %s", op->field, host, op->b);
        if (flags & ~(MS_BIND | MS_REC) && bind_remount(target, flags & ~(MS_BIND | MS_REC), op->field, err) < 0) return -1;
      } else {
        return pr_fail(err, e, "%s: mounting %s (type %s) on %s", op->field, op->a, op->c, op->b);
      }
    }
  }
  if (op->propagation && mount(NULL, target, NULL, op->propagation, NULL) < 0)
    return pr_fail(err, errno, "%s: setting propagation on %s", op->field, op->b);
  return 0;
}

static int mask_path(const struct pr_op *op, pr_error *err) {
  struct stat st;
  if (stat(op->a, &st) < 0) return errno == ENOENT ? 0 : pr_fail(err, errno, "%s: %s", op->field, op->a);
  /* Same as runc: a directory gets an empty read-only tmpfs, a file /dev/null. */
  int r = S_ISDIR(st.st_mode) ? mount("tmpfs", op->a, "tmpfs", MS_RDONLY, NULL)
                              : mount("/dev/null", op->a, NULL, MS_BIND, NULL);
  if (r < 0) return pr_fail(err, errno, "%s: masking %s", op->field, op->a);
  return 0;
}

static int readonly_path(const struct pr_op *op, pr_error *err) {
  if (mount(op->a, op->a, NULL, MS_BIND | MS_REC, NULL) < 0)
    return errno == ENOENT ? 0 : pr_fail(err, errno, "%s: bind-mounting %s", op->field, op->a);
  return bind_remount(op->a, MS_RDONLY | MS_REC, op->field, err);
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
      cleanup_free char *target = NULL;
      if (mounts_resolve(ct, op->b, true, false, &target, err) < 0) return pr_prefix(err, "%s.destination", op->field);
      if (cgroup_mount(&ct->cg, target, op->flags & ~(MS_BIND | MS_REC | MS_REMOUNT), ct->cfg->ns[NS_CGROUP].present, err) < 0)
        return pr_prefix(err, "%s", op->field);
      return 0;
    }
    case OP_PIVOT: return mounts_pivot(ct, err);
    case OP_PROPAGATION:
      if (mount(NULL, "/", NULL, op->propagation, NULL) < 0) return pr_fail(err, errno, "%s", op->field);
      return 0;
    case OP_MASK: return mask_path(op, err);
    case OP_READONLY: return readonly_path(op, err);
    case OP_ROOT_RO: return bind_remount("/", MS_RDONLY, op->field, err);
    default: return pr_fail(err, 0, "%s: not a mount operation", op->field);
  }
}
