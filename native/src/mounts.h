#ifndef PR_MOUNTS_H
#define PR_MOUNTS_H
#include <stdbool.h>

#include "config.h"
#include "error.h"

struct pr_container;
/* Makes / a slave tree and bind-mounts the rootfs onto itself so it can be
 * the new root of pivot_root(2). */
int mounts_prepare_rootfs(struct pr_container *ct, pr_error *err);
/* Resolves path (absolute, inside the container) under the rootfs, following symlinks as
 * if rooted there (openat2 RESOLVE_IN_ROOT), creating missing directories, and the last
 * component as a file when make_file.  Returns an O_PATH descriptor of what it resolved:
 * everything done to the target afterwards goes through it (never through a path string,
 * which a symlink swapped in meanwhile could redirect, CVE-2021-30465). */
int mounts_open(struct pr_container *ct, const char *path, bool create, bool make_file, pr_error *err);
/* "/proc/self/fd/N": a path naming exactly the object fd refers to. */
#define PROC_FD_PATH_LEN 32
const char *proc_fd_path(int fd, char buf[PROC_FD_PATH_LEN]);
/* mount(2) onto what target (below the root rootfd) refers to; what describes it for the
 * error.  With new_mnt, also returns an O_PATH descriptor of the root of the mount just
 * made (for remounts and propagation changes), checked to be a mount stacked there, not
 * whatever took the target's name meanwhile. */
int mounts_attach(int rootfd, int target, const char *source, const char *type, unsigned long flags,
                  const char *data, int *new_mnt, const char *what, pr_error *err);
int mounts_do_op(struct pr_container *ct, const struct pr_op *op, pr_error *err);
int mounts_pivot(struct pr_container *ct, pr_error *err);
/* MS_NOSUID|MS_NODEV|MS_NOEXEC|... currently set on the mount holding path:
 * a bind remount must repeat them or the kernel refuses it in a user ns. */
unsigned long mounts_locked_flags(const char *path);
#endif
