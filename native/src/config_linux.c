/* The linux section of config.json: namespaces, id mappings, cgroups path,
 * propagation, and the post-pivot_root operations (masked/readonly paths,
 * sysctl, hostname). */
#include <errno.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <sys/mount.h>

#include "config.h"
#include "json.h"
#include "util.h"

static const struct { const char *name; enum pr_ns ns; int flag; } ns_table[] = {
    {"mount", NS_MOUNT, CLONE_NEWNS}, {"pid", NS_PID, CLONE_NEWPID},
    {"uts", NS_UTS, CLONE_NEWUTS},    {"ipc", NS_IPC, CLONE_NEWIPC},
    {"network", NS_NET, CLONE_NEWNET},{"user", NS_USER, CLONE_NEWUSER},
    {"cgroup", NS_CGROUP, CLONE_NEWCGROUP}, {"time", NS_TIME, 0x80 /* CLONE_NEWTIME */},
};

const char *ns_name(enum pr_ns ns) {
  for (size_t i = 0; i < sizeof(ns_table) / sizeof(ns_table[0]); i++)
    if (ns_table[i].ns == ns) return ns_table[i].name;
  return "?";
}
int ns_clone_flag(enum pr_ns ns) {
  for (size_t i = 0; i < sizeof(ns_table) / sizeof(ns_table[0]); i++)
    if (ns_table[i].ns == ns) return ns_table[i].flag;
  return 0;
}

static int parse_namespaces(struct pr_config *c, json_object *arr, pr_error *err) {
  for (size_t i = 0; arr && i < json_object_array_length(arr); i++) {
    json_object *e = json_object_array_get_idx(arr, i);
    cleanup_free char *f = xasprintf("linux.namespaces[%zu]", i);
    const char *type, *path;
    if (!json_object_is_type(e, json_type_object)) return pr_fail(err, 0, "%s: expected an object", f);
    if (jget_string(e, "type", f, true, &type, err) < 0) return -1;
    if (jget_string(e, "path", f, false, &path, err) < 0) return -1;
    size_t k;
    for (k = 0; k < sizeof(ns_table) / sizeof(ns_table[0]); k++)
      if (strcmp(ns_table[k].name, type) == 0) break;
    if (k == sizeof(ns_table) / sizeof(ns_table[0]))
      return pr_fail(err, 0, "%s.type: unknown namespace type \"%s\"", f, type);
    struct pr_ns_spec *ns = &c->ns[ns_table[k].ns];
    if (ns->present) return pr_fail(err, 0, "%s.type: namespace \"%s\" listed twice", f, type);
    ns->present = true;
    if (path && *path) {
      if (path[0] != '/') return pr_fail(err, 0, "%s.path: must be absolute, got \"%s\"", f, path);
      ns->path = xstrdup(path);
    }
  }
  return 0;
}

static int parse_idmaps(json_object *arr, const char *field, struct pr_idmap **out, size_t *n,
                        pr_error *err) {
  *n = arr ? json_object_array_length(arr) : 0;
  *out = xcalloc(*n, sizeof(**out));
  for (size_t i = 0; i < *n; i++) {
    json_object *e = json_object_array_get_idx(arr, i);
    cleanup_free char *f = xasprintf("%s[%zu]", field, i);
    int64_t v[3];
    const char *keys[] = {"containerID", "hostID", "size"};
    if (!json_object_is_type(e, json_type_object)) return pr_fail(err, 0, "%s: expected an object", f);
    for (int k = 0; k < 3; k++) {
      bool present;
      if (jget_int64(e, keys[k], f, &present, &v[k], err) < 0) return -1;
      if (!present) return pr_fail(err, 0, "%s.%s: required field is missing", f, keys[k]);
      if (v[k] < 0 || v[k] > UINT32_MAX) return pr_fail(err, 0, "%s.%s: out of range", f, keys[k]);
    }
    (*out)[i] = (struct pr_idmap){(uint32_t)v[0], (uint32_t)v[1], (uint32_t)v[2]};
  }
  return 0;
}

static int parse_propagation(const char *s, const char *field, unsigned long *out, pr_error *err) {
  static const struct { const char *n; unsigned long f; } t[] = {
      {"shared", MS_SHARED}, {"rshared", MS_SHARED | MS_REC}, {"slave", MS_SLAVE},
      {"rslave", MS_SLAVE | MS_REC}, {"private", MS_PRIVATE}, {"rprivate", MS_PRIVATE | MS_REC},
      {"unbindable", MS_UNBINDABLE}, {"runbindable", MS_UNBINDABLE | MS_REC}};
  for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++)
    if (strcmp(s, t[i].n) == 0) { *out = t[i].f; return 0; }
  return pr_fail(err, 0, "%s: unknown propagation \"%s\"", field, s);
}

int config_parse_linux(struct pr_config *c, json_object *lx, pr_error *err) {
  json_object *arr, *o;
  const char *s;
  if (jget_array(lx, "namespaces", "linux", &arr, err) < 0) return -1;
  if (parse_namespaces(c, arr, err) < 0) return -1;
  if (jget_array(lx, "uidMappings", "linux", &arr, err) < 0) return -1;
  if (parse_idmaps(arr, "linux.uidMappings", &c->uid_map, &c->n_uid_map, err) < 0) return -1;
  if (jget_array(lx, "gidMappings", "linux", &arr, err) < 0) return -1;
  if (parse_idmaps(arr, "linux.gidMappings", &c->gid_map, &c->n_gid_map, err) < 0) return -1;
  if (c->ns[NS_USER].present && !c->ns[NS_USER].path && (c->n_uid_map == 0 || c->n_gid_map == 0))
    return pr_fail(err, 0, "linux.uidMappings: a new user namespace needs uidMappings and gidMappings");
  if (!c->ns[NS_USER].present && (c->n_uid_map || c->n_gid_map))
    return pr_fail(err, 0, "linux.uidMappings: mappings given without a user namespace");
  if (jget_string(lx, "cgroupsPath", "linux", false, &s, err) < 0) return -1;
  c->cgroups_path = xstrdup(s);
  if (jget_object(lx, "resources", "linux", &o, err) < 0) return -1;
  if (o && config_parse_resources(c, o, err) < 0) return -1;
  if (jget_object(lx, "seccomp", "linux", &o, err) < 0) return -1;
  if (o && config_parse_seccomp(c, o, err) < 0) return -1;
  if (jget_object(lx, "timeOffsets", "linux", &o, err) < 0) return -1;
  if (o) {
    if (!c->ns[NS_TIME].present || c->ns[NS_TIME].path)
      return pr_fail(err, 0, "linux.timeOffsets: needs a new time namespace in linux.namespaces");
    size_t len = 0;
    json_object_object_foreach(o, clock, val) {
      cleanup_free char *f = xasprintf("linux.timeOffsets.%s", clock);
      if (strcmp(clock, "monotonic") != 0 && strcmp(clock, "boottime") != 0)
        return pr_fail(err, 0, "%s: unknown clock (monotonic or boottime)", f);
      int64_t secs = 0, nsecs = 0;
      bool present;
      if (jget_int64(val, "secs", f, &present, &secs, err) < 0 || jget_int64(val, "nanosecs", f, &present, &nsecs, err) < 0)
        return -1;
      if (nsecs < 0 || nsecs >= 1000000000) return pr_fail(err, 0, "%s.nanosecs: must be 0..999999999", f);
      len += (size_t)snprintf(c->time_offsets + len, sizeof c->time_offsets - len, "%s %lld %lld\n", clock,
                              (long long)secs, (long long)nsecs);
    }
  }
  c->process.personality = -1;
  if (jget_object(lx, "personality", "linux", &o, err) < 0) return -1;
  if (o) {
    if (jget_string(o, "domain", "linux.personality", true, &s, err) < 0) return -1;
    if (strcmp(s, "LINUX") == 0) c->process.personality = 0x0000;        /* PER_LINUX */
    else if (strcmp(s, "LINUX32") == 0) c->process.personality = 0x0008; /* PER_LINUX32 */
    else return pr_fail(err, 0, "linux.personality.domain: unknown domain \"%s\" (LINUX or LINUX32)", s);
  }
  if (jget_string(lx, "rootfsPropagation", "linux", false, &s, err) < 0) return -1;
  if (s && parse_propagation(s, "linux.rootfsPropagation", &c->rootfs_propagation, err) < 0) return -1;
  return 0;
}

/* Valid only in a namespace we own; mirrors runc's validator
 * (libcontainer/configs/validate: sysctl) so both accept the same configs. */
static int check_sysctl(struct pr_config *c, const char *key, const char *field, pr_error *err) {
  static const char *ipc[] = {"kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem",
                              "kernel.shmall", "kernel.shmmax", "kernel.shmmni",
                              "kernel.shm_rmid_forced", NULL};
  for (int i = 0; ipc[i]; i++)
    if (strcmp(key, ipc[i]) == 0) {
      if (!c->ns[NS_IPC].present) return pr_fail(err, 0, "%s: \"%s\" needs an ipc namespace", field, key);
      return 0;
    }
  if (str_has_prefix(key, "fs.mqueue.")) {
    if (!c->ns[NS_IPC].present) return pr_fail(err, 0, "%s: \"%s\" needs an ipc namespace", field, key);
    return 0;
  }
  if (str_has_prefix(key, "net.")) {
    if (!c->ns[NS_NET].present) return pr_fail(err, 0, "%s: \"%s\" needs a network namespace", field, key);
    return 0;
  }
  if (strcmp(key, "kernel.hostname") == 0 || strcmp(key, "kernel.domainname") == 0) {
    if (!c->ns[NS_UTS].present) return pr_fail(err, 0, "%s: \"%s\" needs a uts namespace", field, key);
    return 0;
  }
  return pr_fail(err, 0, "%s: \"%s\" is not a namespaced sysctl", field, key);
}

int config_add_final_ops(struct pr_config *c, json_object *lx, pr_error *err) {
  json_object *arr, *o;
  config_add_op(c, OP_HOOKS, "hooks");
  config_add_op(c, OP_PIVOT, "root.path");
  if (c->rootfs_propagation) config_add_op(c, OP_PROPAGATION, "linux.rootfsPropagation")->propagation = c->rootfs_propagation;
  /* sysctls go before readonlyPaths makes /proc/sys read-only (runc's order). */
  if (jget_object(lx, "sysctl", "linux", &o, err) < 0) return -1;
  if (o) {
    json_object_object_foreach(o, key, val) {
      cleanup_free char *f = xasprintf("linux.sysctl.%s", key);
      if (!json_object_is_type(val, json_type_string)) return pr_fail(err, 0, "%s: expected a string", f);
      if (check_sysctl(c, key, f, err) < 0) return -1;
      struct pr_op *op = config_add_op(c, OP_SYSCTL, f);
      op->a = xasprintf("/proc/sys/%s", key);
      for (char *p = op->a + 10; *p; p++) if (*p == '.') *p = '/';
      op->b = xstrdup(json_object_get_string(val));
    }
  }
  const char *lists[] = {"maskedPaths", "readonlyPaths"};
  enum pr_op_kind kinds[] = {OP_MASK, OP_READONLY};
  for (int l = 0; l < 2; l++) {
    if (jget_array(lx, lists[l], "linux", &arr, err) < 0) return -1;
    for (size_t i = 0; arr && i < json_object_array_length(arr); i++) {
      json_object *e = json_object_array_get_idx(arr, i);
      cleanup_free char *f = xasprintf("linux.%s[%zu]", lists[l], i);
      if (!json_object_is_type(e, json_type_string)) return pr_fail(err, 0, "%s: expected a string", f);
      const char *p = json_object_get_string(e);
      if (p[0] != '/') return pr_fail(err, 0, "%s: must be absolute, got \"%s\"", f, p);
      config_add_op(c, kinds[l], f)->a = path_clean(p);
    }
  }
  if (c->root_readonly) config_add_op(c, OP_ROOT_RO, "root.readonly");
  /* An empty hostname is a hostname too: the container's new UTS namespace gets it
   * instead of a copy of the host's.  Without a new one (the host's, or one joined)
   * there is nothing of ours to set, and "" asks for nothing there. */
  bool new_uts = c->ns[NS_UTS].present && !c->ns[NS_UTS].path;
  if (c->hostname && (*c->hostname || new_uts)) config_add_op(c, OP_HOSTNAME, "hostname")->a = xstrdup(c->hostname);
  if (c->domainname && *c->domainname) {
    if (!c->ns[NS_UTS].present) return pr_fail(err, 0, "domainname: needs a uts namespace");
    config_add_op(c, OP_DOMAINNAME, "domainname")->a = xstrdup(c->domainname);
  }
  return 0;
}
