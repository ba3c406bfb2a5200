/* cgroups behind one small table of function pointers: v1 (one hierarchy per
 * controller), hybrid (v1 plus the empty "unified" v2 tree systemd mounts)
 * and v2 (single hierarchy, controllers enabled top-down via
 * cgroup.subtree_control, see Documentation/admin-guide/cgroup-v2.rst). */
#ifndef PR_CGROUPS_H
#define PR_CGROUPS_H
#include <stdbool.h>
#include <sys/types.h>

#include "config.h"
#include "error.h"

#define CG_MAX_DIRS 64

struct pr_cgroup;
struct pr_cg_driver {
  const char *name;
  /* Computes the leaf directories and creates what is missing. */
  int (*create)(struct pr_cgroup *cg, const struct pr_resources *res, pr_error *err);
  int (*apply)(struct pr_cgroup *cg, const struct pr_resources *res, pr_error *err);
  /* apply without touching device rules (update on a running container) */
  int (*update)(struct pr_cgroup *cg, const struct pr_resources *res, pr_error *err);
  /* Mounts the container's view of its cgroup(s) on target (an O_PATH descriptor below
   * the container's root, rootfd; see mounts_attach). */
  int (*mount)(struct pr_cgroup *cg, int rootfd, int target, unsigned long flags, bool cgroupns, pr_error *err);
};

struct pr_cgroup {
  const struct pr_cg_driver *drv;
  char *path;                    /* linux.cgroupsPath, or /<id> */
  char *leaves[CG_MAX_DIRS];     /* the container's cgroup in every hierarchy */
  const char *leaf_names[CG_MAX_DIRS]; /* controller (v1) or "" */
  size_t n_leaves;
  char *created[CG_MAX_DIRS];    /* directories we made, parents first */
  size_t n_created;
};

/* Picks the driver for this host by looking at /sys/fs/cgroup. */
const struct pr_cg_driver *cgroup_detect(void);
const struct pr_cg_driver *cgroup_driver_by_name(const char *name);
int cgroup_add_pid(struct pr_cgroup *cg, pid_t pid, pr_error *err);
/* Removes the directories we created (deepest first), retrying while the
 * last exiting tasks are still being released. */
int cgroup_destroy(struct pr_cgroup *cg, pr_error *err);
int cgroup_mount(struct pr_cgroup *cg, int rootfd, int target, unsigned long flags, bool cgroupns, pr_error *err);
/* The v2 leaf (pure v2, or hybrid's "unified"), or NULL. */
const char *cgroup_v2_leaf(const struct pr_cgroup *cg);
/* Run by the container's init on itself: joins every v1 hierarchy by
 * writing "0" to its `tasks` file.  Moving only the current thread lets the
 * kernel skip the global cgroup_threadgroup_rwsem (Linux 6.x,
 * cgroup_procs_write_start), which otherwise costs an RCU grace period per
 * container start; the init is single-threaded so this moves all of it. */
int cgroup_join_self_v1(struct pr_cgroup *cg, pr_error *err);
/* Writes pid into the v2 leaf's cgroup.procs (when clone3 could not). */
int cgroup_add_pid_v2(struct pr_cgroup *cg, pid_t pid, pr_error *err);
/* pause/resume: freezes or thaws every task of the container. */
int cgroup_freeze(struct pr_cgroup *cg, bool freeze, pr_error *err);
bool cgroup_is_frozen(const struct pr_cgroup *cg);
/* Lists the pids in the container's cgroup (first leaf). */
int cgroup_pids(struct pr_cgroup *cg, pid_t **out, size_t *n, pr_error *err);

/* shared helpers for the drivers */
int cg_mkdir_path(struct pr_cgroup *cg, const char *base, const char *rel, bool cpuset, const char *v2_enable, pr_error *err);
char *cg_self_path(const char *ctrl);
/* v2 device rules as an eBPF program attached to leaf (cgroup_v2_devices.c). */
int cg2_devices_attach(const char *leaf, const struct pr_resources *res, pr_error *err);
extern const struct pr_cg_driver cg_v1_driver, cg_hybrid_driver, cg_v2_driver;
#endif
