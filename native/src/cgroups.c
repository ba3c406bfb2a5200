#include "cgroups.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <time.h>
#include <unistd.h>

#include "util.h"

const struct pr_cg_driver *cgroup_detect(void) {
  struct statfs s;
  if (statfs("/sys/fs/cgroup", &s) == 0 && s.f_type == CGROUP2_SUPER_MAGIC) return &cg_v2_driver;
  if (statfs("/sys/fs/cgroup/unified", &s) == 0 && s.f_type == CGROUP2_SUPER_MAGIC) return &cg_hybrid_driver;
  return &cg_v1_driver;
}

const struct pr_cg_driver *cgroup_driver_by_name(const char *name) {
  const struct pr_cg_driver *all[] = {&cg_v1_driver, &cg_hybrid_driver, &cg_v2_driver};
  for (size_t i = 0; i < 3; i++)
    if (strcmp(all[i]->name, name) == 0) return all[i];
  return NULL;
}

/* Our own cgroup for a v1 controller ("memory") or v2 (""), from
 * /proc/self/cgroup; relative cgroupsPath values are taken from there. */
char *cg_self_path(const char *ctrl) {
  cleanup_free char *s = NULL;
  if (read_file("/proc/self/cgroup", &s, NULL, NULL) < 0) return xstrdup("/");
  for (char *line = strtok(s, "\n"); line; line = strtok(NULL, "\n")) {
    char *c1 = strchr(line, ':');
    if (!c1) continue;
    char *c2 = strchr(c1 + 1, ':');
    if (!c2) continue;
    *c2 = '\0';
    const char *ctrls = c1 + 1;
    if (*ctrl == '\0' ? *ctrls == '\0' : ({
          bool m = false;
          cleanup_free char *dup = xstrdup(ctrls);
          for (char *save, *t = strtok_r(dup, ",", &save); t; t = strtok_r(NULL, ",", &save))
            if (strcmp(t, ctrl) == 0) m = true;
          m;
        }))
      return xstrdup(c2 + 1);
  }
  return xstrdup("/");
}

static int copy_parent_file(const char *dir, const char *file, pr_error *err) {
  cleanup_free char *mine = xasprintf("%s/%s", dir, file);
  cleanup_free char *cur = NULL;
  if (read_file(mine, &cur, NULL, NULL) == 0 && cur[0] != '\n' && cur[0] != '\0') return 0;
  cleanup_free char *pdir = xstrdup(dir);
  *strrchr(pdir, '/') = '\0';
  cleanup_free char *theirs = xasprintf("%s/%s", pdir, file);
  cleanup_free char *val = NULL;
  size_t len;
  if (read_file(theirs, &val, &len, err) < 0) return -1;
  return write_file(mine, val, len, err);
}

int cg_mkdir_path(struct pr_cgroup *cg, const char *base, const char *rel, bool cpuset, const char *v2_enable,
                  pr_error *err) {
  cleanup_free char *full = xasprintf("%s%s", base, rel);
  size_t blen = strlen(base);
  for (char *s = full + blen + 1;; s++) {
    if (*s != '/' && *s != '\0') continue;
    char c = *s;
    *s = '\0';
    if (v2_enable && *v2_enable) {
      /* Enable the controllers in the parent before creating the child. */
      cleanup_free char *pdir = xstrdup(full);
      *strrchr(pdir, '/') = '\0';
      cleanup_free char *sc = xasprintf("%s/cgroup.subtree_control", pdir);
      if (write_file(sc, v2_enable, strlen(v2_enable), err) < 0)
        return pr_prefix(err, "linux.cgroupsPath: enabling controllers \"%s\"", v2_enable);
    }
    if (mkdir(full, 0755) == 0) {
      if (cg->n_created == CG_MAX_DIRS) return pr_fail(err, 0, "linux.cgroupsPath: too deep");
      cg->created[cg->n_created++] = xstrdup(full);
      if (cpuset && (copy_parent_file(full, "cpuset.cpus", err) < 0 || copy_parent_file(full, "cpuset.mems", err) < 0))
        return pr_prefix(err, "linux.cgroupsPath: initialising cpuset");
    } else if (errno != EEXIST) {
      return pr_fail(err, errno, "linux.cgroupsPath: mkdir %s", full);
    }
    *s = c;
    if (c == '\0') break;
  }
  if (cg->n_leaves == CG_MAX_DIRS) return pr_fail(err, 0, "linux.cgroupsPath: too many hierarchies");
  cg->leaves[cg->n_leaves++] = xstrdup(full);
  return 0;
}

int cgroup_add_pid(struct pr_cgroup *cg, pid_t pid, pr_error *err) {
  char buf[32];
  int n = snprintf(buf, sizeof buf, "%d", pid);
  for (size_t i = 0; i < cg->n_leaves; i++) {
    cleanup_free char *p = xasprintf("%s/cgroup.procs", cg->leaves[i]);
    if (write_file(p, buf, (size_t)n, err) < 0) return pr_prefix(err, "linux.cgroupsPath: joining cgroup");
  }
  return 0;
}

static bool is_v2_leaf(const struct pr_cgroup *cg, size_t i) {
  return cg->leaf_names[i] && (cg->leaf_names[i][0] == '\0' || strcmp(cg->leaf_names[i], "unified") == 0);
}

const char *cgroup_v2_leaf(const struct pr_cgroup *cg) {
  for (size_t i = 0; i < cg->n_leaves; i++)
    if (is_v2_leaf(cg, i)) return cg->leaves[i];
  return NULL;
}

int cgroup_join_self_v1(struct pr_cgroup *cg, pr_error *err) {
  for (size_t i = 0; i < cg->n_leaves; i++) {
    if (is_v2_leaf(cg, i)) continue;
    cleanup_free char *p = xasprintf("%s/tasks", cg->leaves[i]);
    if (write_file(p, "0", 1, err) < 0) return pr_prefix(err, "linux.cgroupsPath: joining cgroup");
  }
  return 0;
}

int cgroup_add_pid_v2(struct pr_cgroup *cg, pid_t pid, pr_error *err) {
  const char *leaf = cgroup_v2_leaf(cg);
  if (!leaf) return 0;
  char buf[32];
  int n = snprintf(buf, sizeof buf, "%d", pid);
  cleanup_free char *p = xasprintf("%s/cgroup.procs", leaf);
  if (write_file(p, buf, (size_t)n, err) < 0) return pr_prefix(err, "linux.cgroupsPath: joining cgroup");
  return 0;
}

int cgroup_destroy(struct pr_cgroup *cg, pr_error *err) {
  int ret = 0;
  for (size_t i = cg->n_created; i-- > 0;) {
    /* Leaves are the container's own: a killed task leaves its cgroup a
     * moment after it is reaped, so retry EBUSY briefly.  A parent we made
     * that now holds another container's cgroup is simply left in place. */
    bool leaf = false;
    for (size_t k = 0; k < cg->n_leaves; k++) leaf |= strcmp(cg->leaves[k], cg->created[i]) == 0;
    for (int attempt = 0;; attempt++) {
      if (rmdir(cg->created[i]) == 0 || errno == ENOENT) break;
      if (errno == EBUSY && !leaf) break;
      if (errno != EBUSY || attempt >= 400) {
        ret = pr_fail(err, errno, "removing cgroup %s", cg->created[i]);
        break;
      }
      struct timespec ts = {0, 5 * 1000 * 1000};
      nanosleep(&ts, NULL);
    }
  }
  return ret;
}

int cgroup_mount(struct pr_cgroup *cg, int rootfd, int target, unsigned long flags, bool cgroupns, pr_error *err) {
  return cg->drv->mount(cg, rootfd, target, flags, cgroupns, err);
}

int cgroup_pids(struct pr_cgroup *cg, pid_t **out, size_t *n, pr_error *err) {
  *out = NULL;
  *n = 0;
  if (cg->n_leaves == 0) return 0;
  cleanup_free char *p = xasprintf("%s/cgroup.procs", cg->leaves[0]);
  cleanup_free char *s = NULL;
  if (read_file(p, &s, NULL, err) < 0) return -1;
  for (char *save, *t = strtok_r(s, "\n", &save); t; t = strtok_r(NULL, "\n", &save)) {
    *out = xrealloc(*out, (*n + 1) * sizeof(pid_t));
    (*out)[(*n)++] = (pid_t)atoi(t);
  }
  return 0;
}

/* v1: freezer.state (FROZEN/THAWED) in the freezer hierarchy; v2:
 * cgroup.freeze, done once cgroup.events says "frozen 1". */
static const char *freezer_leaf(const struct pr_cgroup *cg, bool *v2) {
  for (size_t i = 0; i < cg->n_leaves; i++)
    if (cg->leaf_names[i] && strcmp(cg->leaf_names[i], "freezer") == 0) { /* never co-mounted */
      *v2 = false;
      return cg->leaves[i];
    }
  *v2 = true;
  for (size_t i = 0; i < cg->n_leaves; i++)
    if (cg->leaf_names[i] && cg->leaf_names[i][0] == '\0') return cg->leaves[i];
  return NULL;
}

bool cgroup_is_frozen(const struct pr_cgroup *cg) {
  bool v2;
  const char *leaf = freezer_leaf(cg, &v2);
  if (!leaf) return false;
  cleanup_free char *p = xasprintf("%s/%s", leaf, v2 ? "cgroup.freeze" : "freezer.state");
  cleanup_free char *s = NULL;
  if (read_file(p, &s, NULL, NULL) < 0) return false;
  return v2 ? s[0] == '1' : str_has_prefix(s, "FROZEN") || str_has_prefix(s, "FREEZING");
}

int cgroup_freeze(struct pr_cgroup *cg, bool freeze, pr_error *err) {
  bool v2;
  const char *leaf = freezer_leaf(cg, &v2);
  if (!leaf) return pr_fail(err, 0, "this host has no cgroup freezer for the container");
  cleanup_free char *p = xasprintf("%s/%s", leaf, v2 ? "cgroup.freeze" : "freezer.state");
  const char *want = v2 ? (freeze ? "1" : "0") : (freeze ? "FROZEN" : "THAWED");
  if (write_file(p, want, strlen(want), err) < 0) return -1;
  cleanup_free char *check = xasprintf("%s/%s", leaf, v2 ? "cgroup.events" : "freezer.state");
  for (int i = 0; i < 1000; i++) {
    cleanup_free char *s = NULL;
    if (read_file(check, &s, NULL, err) < 0) return -1;
    bool done = v2 ? strstr(s, freeze ? "frozen 1" : "frozen 0") != NULL : str_has_prefix(s, want);
    if (done) return 0;
    struct timespec ts = {0, 1000 * 1000};
    nanosleep(&ts, NULL);
  }
  return pr_fail(err, 0, "timed out waiting for %s to become %s", check, want);
}
