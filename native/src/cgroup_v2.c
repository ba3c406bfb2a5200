/* cgroup v2 driver (unified hierarchy). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <unistd.h>

#include "cgroups.h"
#include "mounts.h"
#include "util.h"

#define V2_ROOT "/sys/fs/cgroup"

static bool has_word(const char *list, const char *w) {
  size_t l = strlen(w);
  for (const char *p = list; (p = strstr(p, w)) != NULL; p += l)
    if ((p == list || p[-1] == ' ') && (p[l] == ' ' || p[l] == '\n' || p[l] == '\0')) return true;
  return false;
}

static int v2_check_available(const char *ctrl, const char *field, pr_error *err) {
  cleanup_free char *avail = NULL;
  if (read_file(V2_ROOT "/cgroup.controllers", &avail, NULL, err) < 0) return -1;
  if (has_word(avail, ctrl)) return 0;
  size_t n = strlen(avail);
  while (n && avail[n - 1] == '\n') avail[--n] = '\0';
  return pr_fail(err, 0, "%s: the cgroup v2 \"%s\" controller is not available on this host (cgroup.controllers: \"%s\")",
                 field, ctrl, avail);
}

static int v2_create(struct pr_cgroup *cg, const struct pr_resources *res, pr_error *err) {
  char enable[256] = "";
  for (size_t i = 0; i < res->n; i++) {
    const char *c = res->v[i].v2_ctrl;
    if (!c || !res->v[i].v2_file) continue;
    if (v2_check_available(c, res->v[i].field, err) < 0) return -1;
    char word[40];
    snprintf(word, sizeof word, "+%s", c);
    if (!strstr(enable, word) && strlen(enable) + strlen(word) + 2 < sizeof enable) {
      if (*enable) strcat(enable, " ");
      strcat(enable, word);
    }
  }
  cleanup_free char *rel = NULL;
  if (cg->path[0] == '/') rel = xstrdup(cg->path);
  else {
    /* Relative to the parent of our own cgroup, like runc (libcontainer/cgroups/fs2/defaultpath.go):
     * on a systemd host our own cgroup is a unit or session scope with processes in it, and the
     * "no internal processes" rule keeps controllers from being enabled below it. */
    cleanup_free char *self = cg_self_path("");
    char *slash = strrchr(self, '/');
    if (slash) *slash = '\0'; /* "/a/b" -> "/a", "/a" and "/" -> "" */
    rel = xasprintf("%s/%s", self, cg->path);
  }
  cg->leaf_names[cg->n_leaves] = "";
  return cg_mkdir_path(cg, V2_ROOT, rel, false, enable, err);
}

/* Enables ctrl on every level above leaf (root first) so leaf gets its
 * files: needed by `update` for a controller the create did not ask for. */
static int v2_enable_above(const char *leaf, const char *ctrl, const char *field, pr_error *err) {
  if (v2_check_available(ctrl, field, err) < 0) return -1;
  cleanup_free char *path = xstrdup(leaf);
  char word[40];
  snprintf(word, sizeof word, "+%s", ctrl);
  for (char *s = path + strlen(V2_ROOT);; s++) {
    if (*s != '/' && *s != '\0') continue;
    char c = *s;
    *s = '\0';
    if (strcmp(path, leaf) == 0) break;
    cleanup_free char *sc = xasprintf("%s/cgroup.subtree_control", path);
    if (write_file(sc, word, strlen(word), err) < 0) return pr_prefix(err, "%s: enabling the \"%s\" controller", field, ctrl);
    *s = c;
    if (c == '\0') break;
  }
  return 0;
}

static int v2_settings(struct pr_cgroup *cg, const struct pr_resources *res, pr_error *err) {
  for (size_t i = 0; i < res->n; i++) {
    const struct pr_cg_setting *s = &res->v[i];
    if (!s->v2_file) continue; /* v1-only knobs (swappiness, rt, ...) have no v2 file */
    cleanup_free char *p = xasprintf("%s/%s", cg->leaves[0], s->v2_file);
    if (s->v2_ctrl && access(p, F_OK) < 0 && v2_enable_above(cg->leaves[0], s->v2_ctrl, s->field, err) < 0) return -1;
    if (write_file(p, s->v2_value, strlen(s->v2_value), err) < 0) {
      int e = err ? err->errnum : 0;
      return pr_fail(err, e, "%s: writing \"%s\" to %s", s->field, s->v2_value, p);
    }
  }
  return 0;
}

static int v2_apply(struct pr_cgroup *cg, const struct pr_resources *res, pr_error *err) {
  if (v2_settings(cg, res, err) < 0) return -1;
  return cg2_devices_attach(cg->leaves[0], res, err);
}

static int v2_mount(struct pr_cgroup *cg, int rootfd, int target, unsigned long flags, bool cgroupns, pr_error *err) {
  unsigned long f = (flags & (MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)) | MS_NOSUID | MS_NODEV | MS_NOEXEC;
  /* In our own cgroup namespace a fresh cgroup2 mount is rooted at the
   * container's cgroup (cgroup_namespaces(7)). */
  if (cgroupns) return mounts_attach(rootfd, target, "cgroup2", "cgroup2", f, NULL, NULL, "mounting cgroup2", err);
  cleanup_close int mnt = -1;
  cleanup_free char *what = xasprintf("bind-mounting %s", cg->leaves[0]);
  if (mounts_attach(rootfd, target, cg->leaves[0], NULL, MS_BIND, NULL, &mnt, what, err) < 0) return -1;
  char mp[PROC_FD_PATH_LEN];
  if (mount(NULL, proc_fd_path(mnt, mp), NULL, MS_REMOUNT | MS_BIND | f, NULL) < 0)
    return pr_fail(err, errno, "remounting %s", cg->leaves[0]);
  return 0;
}

const struct pr_cg_driver cg_v2_driver = {"v2", v2_create, v2_apply, v2_settings, v2_mount};
