/* mounts[] → OP_MOUNT operations, with option strings split into mount(2)
 * flags, propagation flags and filesystem data the way runc's
 * libcontainer/specconv parseMountOptions does. */
#include <errno.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>

#include "config.h"
#include "json.h"
#include "util.h"

static const struct { const char *name; bool clear; unsigned long flag; } mount_flags[] = {
    {"async", true, MS_SYNCHRONOUS},  {"atime", true, MS_NOATIME},     {"bind", false, MS_BIND},
    {"defaults", false, 0},           {"dev", true, MS_NODEV},         {"diratime", true, MS_NODIRATIME},
    {"dirsync", false, MS_DIRSYNC},   {"exec", true, MS_NOEXEC},       {"mand", false, MS_MANDLOCK},
    {"noatime", false, MS_NOATIME},   {"nodev", false, MS_NODEV},      {"nodiratime", false, MS_NODIRATIME},
    {"noexec", false, MS_NOEXEC},     {"nomand", true, MS_MANDLOCK},   {"norelatime", true, MS_RELATIME},
    {"nostrictatime", true, MS_STRICTATIME}, {"nosuid", false, MS_NOSUID}, {"rbind", false, MS_BIND | MS_REC},
    {"relatime", false, MS_RELATIME}, {"remount", false, MS_REMOUNT},  {"ro", false, MS_RDONLY},
    {"rw", true, MS_RDONLY},          {"strictatime", false, MS_STRICTATIME}, {"suid", true, MS_NOSUID},
    {"sync", false, MS_SYNCHRONOUS},
};
static const struct { const char *name; unsigned long flag; } prop_flags[] = {
    {"private", MS_PRIVATE}, {"rprivate", MS_PRIVATE | MS_REC}, {"shared", MS_SHARED},
    {"rshared", MS_SHARED | MS_REC}, {"slave", MS_SLAVE}, {"rslave", MS_SLAVE | MS_REC},
    {"unbindable", MS_UNBINDABLE}, {"runbindable", MS_UNBINDABLE | MS_REC},
};

int parse_mount_options(json_object *opts, const char *field, unsigned long *flags, unsigned long *clear,
                        unsigned long *prop, char **data, bool *bind, bool *rec, pr_error *err) {
  size_t cap = 1, len = 0;
  char *d = xcalloc(1, 1);
  *flags = *clear = *prop = 0;
  *bind = *rec = false;
  for (size_t i = 0; opts && i < json_object_array_length(opts); i++) {
    json_object *e = json_object_array_get_idx(opts, i);
    if (!json_object_is_type(e, json_type_string)) {
      free(d);
      return pr_fail(err, 0, "%s.options[%zu]: expected a string", field, i);
    }
    const char *o = json_object_get_string(e);
    bool done = false;
    for (size_t k = 0; !done && k < sizeof(mount_flags) / sizeof(mount_flags[0]); k++)
      if (strcmp(o, mount_flags[k].name) == 0) {
        if (mount_flags[k].clear) { *flags &= ~mount_flags[k].flag; *clear |= mount_flags[k].flag; }
        else *flags |= mount_flags[k].flag;
        done = true;
      }
    for (size_t k = 0; !done && k < sizeof(prop_flags) / sizeof(prop_flags[0]); k++)
      if (strcmp(o, prop_flags[k].name) == 0) { *prop = prop_flags[k].flag; done = true; }
    /* crun's "tmpcopyup" and fstab-only "X-" options carry no kernel meaning. */
    if (!done && (strcmp(o, "tmpcopyup") == 0 || str_has_prefix(o, "X-") || strcmp(o, "recursive") == 0)) done = true;
    if (!done) {
      size_t l = strlen(o);
      while (len + l + 2 > cap) d = xrealloc(d, cap *= 2 + l);
      if (len) d[len++] = ',';
      memcpy(d + len, o, l + 1);
      len += l;
    }
  }
  if (*flags & MS_BIND) {
    *bind = true;
    *rec = (*flags & MS_REC) != 0;
  }
  if (len == 0) { free(d); d = NULL; }
  *data = d;
  return 0;
}

int config_parse_mounts(struct pr_config *c, json_object *arr, pr_error *err) {
  for (size_t i = 0; arr && i < json_object_array_length(arr); i++) {
    json_object *m = json_object_array_get_idx(arr, i), *opts;
    cleanup_free char *f = xasprintf("mounts[%zu]", i);
    const char *dest, *type, *src;
    if (!json_object_is_type(m, json_type_object)) return pr_fail(err, 0, "%s: expected an object", f);
    if (jget_string(m, "destination", f, true, &dest, err) < 0) return -1;
    if (dest[0] != '/') return pr_fail(err, 0, "%s.destination: must be absolute, got \"%s\"", f, dest);
    if (jget_string(m, "type", f, false, &type, err) < 0) return -1;
    if (jget_string(m, "source", f, false, &src, err) < 0) return -1;
    if (jget_array(m, "options", f, &opts, err) < 0) return -1;
    unsigned long flags, clear, prop;
    char *data;
    bool bind, rec;
    if (parse_mount_options(opts, f, &flags, &clear, &prop, &data, &bind, &rec, err) < 0) return -1;
    if (type && strcmp(type, "bind") == 0) {
      bind = true;
      flags |= MS_BIND;
    }
    if (!bind && (!type || !*type))
      return pr_fail(err, 0, "%s.type: required for a non-bind mount of %s", f, dest);
    if (bind && (!src || !*src)) return pr_fail(err, 0, "%s.source: a bind mount needs a source", f);
    struct pr_op *op = config_add_op(c, type && strcmp(type, "cgroup") == 0 ? OP_CGROUP_MOUNT : OP_MOUNT, f);
    op->b = path_clean(dest);
    op->c = xstrdup(bind ? NULL : type);
    if (bind && src[0] != '/') {
      cleanup_free char *j = xasprintf("%s/%s", c->bundle, src);
      op->a = path_clean(j);
    } else {
      op->a = xstrdup(src ? src : (type ? type : "none"));
    }
    op->flags = flags;
    op->propagation = prop;
    /* A bind mount ignores most flags; they need a second MS_REMOUNT pass. */
    op->remount_flags = bind ? (flags & ~(MS_BIND | MS_REC | MS_REMOUNT)) : 0;
    op->data = data;
    if (strcmp(op->b, "/dev/pts") == 0 && type && strcmp(type, "devpts") == 0) c->has_dev_pts = true;
  }
  return 0;
}
