/* cgroup v1 and hybrid drivers. */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cgroups.h"
#include "devices.h"
#include "mounts.h"
#include "util.h"

static bool has_token(const char *list, const char *tok) {
  size_t l = strlen(tok);
  for (const char *p = list; *p;) {
    const char *e = strchr(p, ',');
    size_t n = e ? (size_t)(e - p) : strlen(p);
    if (n == l && strncmp(p, tok, l) == 0) return true;
    if (!e) break;
    p = e + 1;
  }
  return false;
}

/* Every v1 hierarchy the host mounts under /sys/fs/cgroup: one directory
 * each, named after its controllers ("memory", "cpu,cpuacct",
 * "net_cls,net_prio") or its name ("systemd"); the per-controller symlinks
 * distributions add for co-mounted ones ("cpu" -> "cpu,cpuacct") are
 * skipped so each hierarchy is joined once. */
static int v1_create(struct pr_cgroup *cg, const struct pr_resources *res, pr_error *err) {
  (void)res;
  DIR *d = opendir("/sys/fs/cgroup");
  if (!d) return pr_fail(err, errno, "opendir /sys/fs/cgroup");
  int ret = 0;
  for (struct dirent *e; ret == 0 && (e = readdir(d)) != NULL;) {
    if (e->d_name[0] == '.' || strcmp(e->d_name, "unified") == 0) continue;
    cleanup_free char *base = xasprintf("/sys/fs/cgroup/%s", e->d_name);
    cleanup_free char *procs = xasprintf("%s/cgroup.procs", base);
    struct stat st;
    if (lstat(base, &st) < 0 || !S_ISDIR(st.st_mode) || access(procs, F_OK) < 0) continue;
    if (cg->n_leaves + 1 >= CG_MAX_DIRS) break;
    cleanup_free char *rel = NULL;
    if (cg->path[0] == '/') {
      rel = xstrdup(cg->path);
    } else {
      /* /proc/self/cgroup names a hierarchy by its controller list */
      cleanup_free char *key = strcmp(e->d_name, "systemd") == 0 ? xstrdup("name=systemd") : xstrdup(e->d_name);
      char *comma = strchr(key, ',');
      if (comma) *comma = '\0';
      cleanup_free char *self = cg_self_path(key);
      rel = xasprintf("%s/%s", strcmp(self, "/") == 0 ? "" : self, cg->path);
    }
    cg->leaf_names[cg->n_leaves] = xstrdup(e->d_name);
    ret = cg_mkdir_path(cg, base, rel, has_token(e->d_name, "cpuset"), NULL, err);
  }
  closedir(d);
  return ret;
}

static int hybrid_create(struct pr_cgroup *cg, const struct pr_resources *res, pr_error *err) {
  if (v1_create(cg, res, err) < 0) return -1;
  /* systemd's hybrid layout also tracks processes in the empty v2 tree. */
  cleanup_free char *rel = NULL;
  if (cg->path[0] == '/') rel = xstrdup(cg->path);
  else {
    cleanup_free char *self = cg_self_path("");
    rel = xasprintf("%s/%s", strcmp(self, "/") == 0 ? "" : self, cg->path);
  }
  cg->leaf_names[cg->n_leaves] = "unified";
  /* Only bookkeeping (no controllers live there): a read-only or otherwise
   * unusable unified tree must not stop the container. */
  pr_error ignored = {0};
  if (cg_mkdir_path(cg, "/sys/fs/cgroup/unified", rel, false, NULL, &ignored) < 0) cg->leaf_names[cg->n_leaves] = NULL;
  (void)err;
  return 0;
}

static const char *leaf_for(struct pr_cgroup *cg, const char *ctrl) {
  for (size_t i = 0; i < cg->n_leaves; i++)
    if (cg->leaf_names[i] && has_token(cg->leaf_names[i], ctrl)) return cg->leaves[i];
  return NULL;
}

static int write_cg(const char *leaf, const char *file, const char *value, const char *field, pr_error *err) {
  cleanup_free char *p = xasprintf("%s/%s", leaf, file);
  if (write_file(p, value, strlen(value), err) < 0) {
    int e = err ? err->errnum : 0;
    return pr_fail(err, e, "%s: writing \"%s\" to %s", field, value, p);
  }
  return 0;
}

static int v1_devices(struct pr_cgroup *cg, const struct pr_resources *res, pr_error *err) {
  const char *leaf = leaf_for(cg, "devices");
  if (!leaf) return 0;
  /* A new cgroup inherits the parent's allow-all: start from deny-all, then
   * the config's rules in order, then the default devices (runc appends its
   * AllowedDevices after the spec's rules the same way). */
  if (write_cg(leaf, "devices.deny", "a", "linux.resources.devices", err) < 0) return -1;
  for (size_t i = 0; i < res->n_dev_rules; i++) {
    const struct pr_dev_rule *d = &res->dev_rules[i];
    char rule[96], maj[24], min[24];
    if (d->major < 0) snprintf(maj, sizeof maj, "*"); else snprintf(maj, sizeof maj, "%lld", (long long)d->major);
    if (d->minor < 0) snprintf(min, sizeof min, "*"); else snprintf(min, sizeof min, "%lld", (long long)d->minor);
    if (d->type == 'a') snprintf(rule, sizeof rule, "a");
    else snprintf(rule, sizeof rule, "%c %s:%s %s", d->type, maj, min, d->access);
    char field[64];
    snprintf(field, sizeof field, "linux.resources.devices[%zu]", i);
    if (write_cg(leaf, d->allow ? "devices.allow" : "devices.deny", rule, field, err) < 0) return -1;
  }
  for (int i = 0; default_device_rules[i]; i++)
    if (write_cg(leaf, "devices.allow", default_device_rules[i], "default devices", err) < 0) return -1;
  return 0;
}

static int v1_settings(struct pr_cgroup *cg, const struct pr_resources *res, pr_error *err) {
  for (size_t i = 0; i < res->n; i++) {
    const struct pr_cg_setting *s = &res->v[i];
    if (!s->v1_file) {
      if (!s->v2_ctrl && s->v2_file && !s->v1_ctrl && strncmp(s->field, "linux.resources.unified", 23) == 0)
        return pr_fail(err, 0, "%s: needs cgroup v2, this host uses cgroup v1", s->field);
      if (strncmp(s->field, "linux.resources.unified", 23) == 0)
        return pr_fail(err, 0, "%s: needs cgroup v2, this host uses cgroup v1", s->field);
      continue;
    }
    const char *leaf = leaf_for(cg, s->v1_ctrl);
    if (!leaf) return pr_fail(err, 0, "%s: the cgroup v1 \"%s\" controller is not mounted on this host", s->field, s->v1_ctrl);
    if (write_cg(leaf, s->v1_file, s->v1_value, s->field, err) < 0) return -1;
  }
  return 0;
}

static int v1_apply(struct pr_cgroup *cg, const struct pr_resources *res, pr_error *err) {
  if (v1_settings(cg, res, err) < 0) return -1;
  return v1_devices(cg, res, err);
}

static int v1_mount(struct pr_cgroup *cg, int rootfd, int target, unsigned long flags, bool cgroupns, pr_error *err) {
  (void)cgroupns;
  /* Like runc without systemd: a tmpfs with one bind mount of the
   * container's own cgroup per hierarchy, so the limits read back as the
   * container's.  Everything below goes through the new tmpfs's descriptor: it is
   * ours alone, so names inside it need no further care. */
  cleanup_close int tmpfs = -1;
  if (mounts_attach(rootfd, target, "tmpfs", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=755", &tmpfs,
                    "mounting tmpfs for cgroups", err) < 0)
    return -1;
  char base[PROC_FD_PATH_LEN];
  proc_fd_path(tmpfs, base);
  for (size_t i = 0; i < cg->n_leaves; i++) {
    if (strcmp(cg->leaf_names[i], "unified") == 0) continue;
    cleanup_free char *dst = xasprintf("%s/%s", base, cg->leaf_names[i]);
    if (mkdirat(tmpfs, cg->leaf_names[i], 0755) < 0 && errno != EEXIST)
      return pr_fail(err, errno, "mkdir %s in the cgroup tmpfs", cg->leaf_names[i]);
    if (mount(cg->leaves[i], dst, NULL, MS_BIND, NULL) < 0) return pr_fail(err, errno, "bind-mounting %s", cg->leaves[i]);
    unsigned long f = (flags | mounts_locked_flags(dst)) & (MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC);
    if (mount(NULL, dst, NULL, MS_REMOUNT | MS_BIND | f | MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0)
      return pr_fail(err, errno, "remounting %s", cg->leaf_names[i]);
    /* co-mounted: "cpu" and "cpuacct" links to "cpu,cpuacct", as hosts have */
    if (strchr(cg->leaf_names[i], ',')) {
      cleanup_free char *names = xstrdup(cg->leaf_names[i]);
      for (char *save, *t = strtok_r(names, ",", &save); t; t = strtok_r(NULL, ",", &save))
        if (symlinkat(cg->leaf_names[i], tmpfs, t) < 0 && errno != EEXIST)
          return pr_fail(err, errno, "symlink %s in the cgroup tmpfs", t);
    }
  }
  if (flags & MS_RDONLY && mount(NULL, base, NULL, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=755") < 0)
    return pr_fail(err, errno, "remounting the cgroup tmpfs read-only");
  return 0;
}

const struct pr_cg_driver cg_v1_driver = {"v1", v1_create, v1_apply, v1_settings, v1_mount};
const struct pr_cg_driver cg_hybrid_driver = {"hybrid", hybrid_create, v1_apply, v1_settings, v1_mount};
