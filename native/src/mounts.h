#ifndef PR_MOUNTS_H
#define PR_MOUNTS_H
#include <stdbool.h>

#include "config.h"
#include "error.h"

struct pr_container;
/* Makes / a slave tree and bind-mounts the rootfs onto itself so it can be
 * the new root of pivot_root(2). */
int mounts_prepare_rootfs(struct pr_container *ct, pr_error *err);
/* Resolves path (absolute, inside the container) under the rootfs, following
 * symlinks as if rooted there (openat2 RESOLVE_IN_ROOT), creating missing
 * directories, and the last component as a file when make_file.  Returns the
 * host path in *out. */
int mounts_resolve(struct pr_container *ct, const char *path, bool create, bool make_file, char **out,
                   pr_error *err);
int mounts_do_op(struct pr_container *ct, const struct pr_op *op, pr_error *err);
int mounts_pivot(struct pr_container *ct, pr_error *err);
/* MS_NOSUID|MS_NODEV|MS_NOEXEC|... currently set on the mount holding path:
 * a bind remount must repeat them or the kernel refuses it in a user ns. */
unsigned long mounts_locked_flags(const char *path);
#endif
