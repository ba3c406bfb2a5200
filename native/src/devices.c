/* Device nodes: the spec's default set (null, zero, full, random, urandom,
 * tty, with ptmx as a link to the devpts instance), then linux.devices.  In a
 * user namespace mknod is refused, so, like runc, we bind the host node. */
#include "devices.h"

#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "container.h"
#include "json.h"
#include "mounts.h"
#include "util.h"

static const struct { const char *path; unsigned maj, min; } defaults[] = {
    {"/dev/null", 1, 3}, {"/dev/zero", 1, 5}, {"/dev/full", 1, 7},
    {"/dev/random", 1, 8}, {"/dev/urandom", 1, 9}, {"/dev/tty", 5, 0},
};

/* Like runc's AllowedDevices: mknod of any node is allowed (using it is
 * not), then full access to the default devices and ptys. */
const char *const default_device_rules[] = {
    "c *:* m", "b *:* m", "c 1:3 rwm", "c 1:5 rwm", "c 1:7 rwm", "c 1:8 rwm", "c 1:9 rwm", "c 5:0 rwm",
    "c 5:1 rwm", "c 5:2 rwm", "c 136:* rwm", NULL,
};

int config_add_devices(struct pr_config *c, json_object *devs, pr_error *err) {
  size_t n = devs ? json_object_array_length(devs) : 0;
  size_t first = c->n_ops;
  for (size_t i = 0; i < n; i++) {
    json_object *d = json_object_array_get_idx(devs, i);
    cleanup_free char *f = xasprintf("linux.devices[%zu]", i);
    const char *path, *type;
    int64_t v;
    bool present;
    if (!json_object_is_type(d, json_type_object)) return pr_fail(err, 0, "%s: expected an object", f);
    if (jget_string(d, "path", f, true, &path, err) < 0) return -1;
    if (path[0] != '/') return pr_fail(err, 0, "%s.path: must be absolute, got \"%s\"", f, path);
    if (jget_string(d, "type", f, true, &type, err) < 0) return -1;
    if (strlen(type) != 1 || !strchr("cbup", type[0]))
      return pr_fail(err, 0, "%s.type: unknown device type \"%s\" (want c, b, u or p)", f, type);
    struct pr_op *op = config_add_op(c, OP_MKDEV, f);
    op->b = path_clean(path);
    op->dev_type = type[0] == 'u' ? 'c' : type[0];
    if (type[0] != 'p') {
      if (jget_int64(d, "major", f, &present, &v, err) < 0) return -1;
      if (!present) return pr_fail(err, 0, "%s.major: required for type %s", f, type);
      op->major = (uint64_t)v;
      if (jget_int64(d, "minor", f, &present, &v, err) < 0) return -1;
      if (!present) return pr_fail(err, 0, "%s.minor: required for type %s", f, type);
      op->minor = (uint64_t)v;
    }
    if (jget_int64(d, "fileMode", f, &present, &v, err) < 0) return -1;
    op->mode = present ? (mode_t)v & 07777 : 0666;
    if (jget_int64(d, "uid", f, &present, &v, err) < 0) return -1;
    op->uid = present ? (uint32_t)v : 0;
    if (jget_int64(d, "gid", f, &present, &v, err) < 0) return -1;
    op->gid = present ? (uint32_t)v : 0;
    /* Also allow it in the devices cgroup, as runc's specconv does. */
    struct pr_resources *r = &c->resources;
    r->dev_rules = xrealloc(r->dev_rules, (r->n_dev_rules + 1) * sizeof(*r->dev_rules));
    r->dev_rules[r->n_dev_rules++] = (struct pr_dev_rule){true, op->dev_type == 'p' ? 'a' : op->dev_type,
                                                          (int64_t)op->major, (int64_t)op->minor, "rwm"};
    if (op->dev_type == 'p') r->n_dev_rules--; /* fifos are not policed by the devices cgroup */
  }
  for (size_t d = 0; d < sizeof(defaults) / sizeof(defaults[0]); d++) {
    bool overridden = false;
    for (size_t i = first; i < c->n_ops; i++)
      if (strcmp(c->ops[i].b, defaults[d].path) == 0) overridden = true;
    if (overridden) continue;
    struct pr_op *op = config_add_op(c, OP_MKDEV, "default devices");
    op->b = xstrdup(defaults[d].path);
    op->dev_type = 'c';
    op->major = defaults[d].maj;
    op->minor = defaults[d].min;
    op->mode = 0666;
    op->optional = false;
  }
  static const char *links[][2] = {{"/dev/fd", "/proc/self/fd"}, {"/dev/stdin", "/proc/self/fd/0"},
                                   {"/dev/stdout", "/proc/self/fd/1"}, {"/dev/stderr", "/proc/self/fd/2"}};
  for (size_t i = 0; i < 4; i++) {
    struct pr_op *op = config_add_op(c, OP_SYMLINK, "default devices");
    op->a = xstrdup(links[i][1]);
    op->b = xstrdup(links[i][0]);
  }
  if (c->has_dev_pts) {
    struct pr_op *op = config_add_op(c, OP_SYMLINK, "default devices");
    op->a = xstrdup("pts/ptmx");
    op->b = xstrdup("/dev/ptmx");
  }
  return 0;
}

/* The directory holding path (resolved in the root, created if missing) and the last
 * component's name: nodes and links are made relative to that descriptor. */
static int open_parent(struct pr_container *ct, const struct pr_op *op, const char **name, pr_error *err) {
  cleanup_free char *parent = xstrdup(op->b);
  *strrchr(parent, '/') = '\0';
  *name = strrchr(op->b, '/') + 1;
  int fd = mounts_open(ct, *parent ? parent : "/", true, false, err);
  return fd < 0 ? pr_prefix(err, "%s", op->field) : fd;
}

static int mkdev(struct pr_container *ct, const struct pr_op *op, pr_error *err) {
  const char *name;
  cleanup_close int dir = open_parent(ct, op, &name, err);
  if (dir < 0) return -1;
  mode_t type = op->dev_type == 'b' ? S_IFBLK : op->dev_type == 'p' ? S_IFIFO : S_IFCHR;
  unlinkat(dir, name, 0); /* replace whatever the image shipped */
  if (mknodat(dir, name, type | op->mode, makedev(op->major, op->minor)) == 0) {
    if (fchmodat(dir, name, op->mode, 0) < 0 || fchownat(dir, name, op->uid, op->gid, AT_SYMLINK_NOFOLLOW) < 0)
      return pr_fail(err, errno, "%s: setting owner and mode of %s", op->field, op->b);
    return 0;
  }
  if (errno != EPERM) return pr_fail(err, errno, "%s: mknod %s", op->field, op->b);
  /* In a user namespace: bind the host's node over an empty file. */
  int fd = openat(dir, name, O_CREAT | O_WRONLY | O_NOFOLLOW | O_CLOEXEC, 0644);
  if (fd < 0) return pr_fail(err, errno, "%s: creating %s", op->field, op->b);
  close(fd);
  cleanup_close int node = openat(dir, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
  if (node < 0) return pr_fail(err, errno, "%s: opening %s", op->field, op->b);
  cleanup_free char *what = xasprintf("%s: bind-mounting host %s", op->field, op->b);
  return mounts_attach(ct->rootfd, node, op->b, NULL, MS_BIND, NULL, NULL, what, err);
}

static int symlink_op(struct pr_container *ct, const struct pr_op *op, pr_error *err) {
  const char *name;
  cleanup_close int dir = open_parent(ct, op, &name, err);
  if (dir < 0) return -1;
  if (strcmp(op->b, "/dev/ptmx") == 0) unlinkat(dir, name, 0);
  if (symlinkat(op->a, dir, name) < 0 && errno != EEXIST)
    return pr_fail(err, errno, "%s: symlink %s -> %s", op->field, op->b, op->a);
  return 0;
}

int devices_do_op(struct pr_container *ct, const struct pr_op *op, pr_error *err) {
  return op->kind == OP_MKDEV ? mkdev(ct, op, err) : symlink_op(ct, op, err);
}
