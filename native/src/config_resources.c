/* linux.resources → (file, value) pairs for both cgroup versions.  The v1→v2
 * conversions follow the formulas runc documents in
 * docs/cgroup-v2.md ("CPU shares to weight", "blkio weight to io.weight"). */
#include <errno.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "json.h"
#include "util.h"

static void add(struct pr_resources *r, const char *field, const char *v1c, const char *v1f, char *v1v,
                const char *v2c, const char *v2f, char *v2v) {
  r->v = xrealloc(r->v, (r->n + 1) * sizeof(*r->v));
  r->v[r->n++] = (struct pr_cg_setting){xstrdup(field), v1c, v1f, v1v, v2c, v2f, v2v};
}

static char *num_or_max(int64_t v) { return v < 0 ? xstrdup("max") : xasprintf("%" PRId64, v); }

static int memory(struct pr_resources *r, json_object *m, pr_error *err) {
  const char *F = "linux.resources.memory";
  int64_t limit = 0, swap = 0, v;
  bool has_limit, has_swap, present, b = false;
  if (jget_int64(m, "limit", F, &has_limit, &limit, err) < 0) return -1;
  if (jget_int64(m, "swap", F, &has_swap, &swap, err) < 0) return -1;
  if (has_limit)
    add(r, "linux.resources.memory.limit", "memory", "memory.limit_in_bytes", xasprintf("%" PRId64, limit),
        "memory", "memory.max", num_or_max(limit));
  if (has_swap) {
    if (has_limit && limit >= 0 && swap >= 0 && swap < limit)
      return pr_fail(err, 0, "%s.swap: %" PRId64 " is below memory.limit %" PRId64 " (swap includes memory)", F, swap, limit);
    /* v2 counts swap separately from memory, v1 memsw counts both. */
    char *v2 = swap < 0 ? xstrdup("max") : has_limit && limit >= 0 ? xasprintf("%" PRId64, swap - limit) : NULL;
    add(r, "linux.resources.memory.swap", "memory", "memory.memsw.limit_in_bytes", xasprintf("%" PRId64, swap),
        "memory", v2 ? "memory.swap.max" : NULL, v2);
  }
  if (jget_int64(m, "reservation", F, &present, &v, err) < 0) return -1;
  if (present)
    add(r, "linux.resources.memory.reservation", "memory", "memory.soft_limit_in_bytes",
        xasprintf("%" PRId64, v), "memory", "memory.low", num_or_max(v));
  if (jget_int64(m, "swappiness", F, &present, &v, err) < 0) return -1;
  if (present && v >= 0) {
    if (v > 100) return pr_fail(err, 0, "%s.swappiness: %" PRId64 " is above 100", F, v);
    add(r, "linux.resources.memory.swappiness", "memory", "memory.swappiness", xasprintf("%" PRId64, v),
        NULL, NULL, NULL);
  }
  if (jget_bool(m, "disableOOMKiller", F, &b, err) < 0) return -1;
  if (b) add(r, "linux.resources.memory.disableOOMKiller", "memory", "memory.oom_control", xstrdup("1"), NULL, NULL, NULL);
  return 0;
}

static int cpu(struct pr_resources *r, json_object *c, pr_error *err) {
  const char *F = "linux.resources.cpu";
  int64_t v, quota = -1, period = 0;
  bool present, has_quota, has_period;
  const char *s;
  if (jget_int64(c, "shares", F, &present, &v, err) < 0) return -1;
  if (present && v > 0) {
    if (v < 2 || v > 262144) return pr_fail(err, 0, "%s.shares: %" PRId64 " is outside 2..262144", F, v);
    add(r, "linux.resources.cpu.shares", "cpu", "cpu.shares", xasprintf("%" PRId64, v), "cpu", "cpu.weight",
        xasprintf("%" PRId64, 1 + ((v - 2) * 9999) / 262142));
  }
  if (jget_int64(c, "quota", F, &has_quota, &quota, err) < 0) return -1;
  if (jget_int64(c, "period", F, &has_period, &period, err) < 0) return -1;
  if (has_period && period > 0)
    add(r, "linux.resources.cpu.period", "cpu", "cpu.cfs_period_us", xasprintf("%" PRId64, period), NULL, NULL, NULL);
  if (has_quota && quota != 0)
    add(r, "linux.resources.cpu.quota", "cpu", "cpu.cfs_quota_us", xasprintf("%" PRId64, quota), NULL, NULL, NULL);
  if ((has_quota && quota != 0) || (has_period && period > 0)) {
    cleanup_free char *q = has_quota && quota > 0 ? xasprintf("%" PRId64, quota) : xstrdup("max");
    add(r, has_quota ? "linux.resources.cpu.quota" : "linux.resources.cpu.period", NULL, NULL, NULL, "cpu",
        "cpu.max", xasprintf("%s %" PRId64, q, has_period && period > 0 ? period : 100000));
  }
  if (jget_int64(c, "realtimePeriod", F, &present, &v, err) < 0) return -1;
  if (present && v > 0) add(r, "linux.resources.cpu.realtimePeriod", "cpu", "cpu.rt_period_us", xasprintf("%" PRId64, v), NULL, NULL, NULL);
  if (jget_int64(c, "realtimeRuntime", F, &present, &v, err) < 0) return -1;
  if (present && v != 0) add(r, "linux.resources.cpu.realtimeRuntime", "cpu", "cpu.rt_runtime_us", xasprintf("%" PRId64, v), NULL, NULL, NULL);
  if (jget_string(c, "cpus", F, false, &s, err) < 0) return -1;
  if (s && *s) add(r, "linux.resources.cpu.cpus", "cpuset", "cpuset.cpus", xstrdup(s), "cpuset", "cpuset.cpus", xstrdup(s));
  if (jget_string(c, "mems", F, false, &s, err) < 0) return -1;
  if (s && *s) add(r, "linux.resources.cpu.mems", "cpuset", "cpuset.mems", xstrdup(s), "cpuset", "cpuset.mems", xstrdup(s));
  return 0;
}

static int blkio_devices(struct pr_resources *r, json_object *b, const char *key, const char *v1f,
                         const char *v2key, pr_error *err) {
  json_object *arr;
  cleanup_free char *F = xasprintf("linux.resources.blockIO.%s", key);
  if (jget_array(b, key, "linux.resources.blockIO", &arr, err) < 0) return -1;
  for (size_t i = 0; arr && i < json_object_array_length(arr); i++) {
    json_object *e = json_object_array_get_idx(arr, i);
    cleanup_free char *f = xasprintf("%s[%zu]", F, i);
    int64_t maj, min, rate;
    bool p1, p2, p3;
    if (jget_int64(e, "major", f, &p1, &maj, err) < 0 || jget_int64(e, "minor", f, &p2, &min, err) < 0 ||
        jget_int64(e, v2key ? "rate" : "weight", f, &p3, &rate, err) < 0)
      return -1;
    if (!p1 || !p2 || !p3) return pr_fail(err, 0, "%s: needs major, minor and %s", f, v2key ? "rate" : "weight");
    add(r, f, "blkio", v1f, xasprintf("%" PRId64 ":%" PRId64 " %" PRId64, maj, min, rate), "io",
        v2key ? "io.max" : "io.weight",
        v2key ? xasprintf("%" PRId64 ":%" PRId64 " %s=%" PRId64, maj, min, v2key, rate)
              : xasprintf("%" PRId64 ":%" PRId64 " %" PRId64, maj, min, 1 + (rate - 10) * 9999 / 990));
  }
  return 0;
}

static int blockio(struct pr_resources *r, json_object *b, pr_error *err) {
  const char *F = "linux.resources.blockIO";
  int64_t v;
  bool present;
  if (jget_int64(b, "weight", F, &present, &v, err) < 0) return -1;
  if (present && v > 0) {
    if (v < 10 || v > 1000) return pr_fail(err, 0, "%s.weight: %" PRId64 " is outside 10..1000", F, v);
    add(r, "linux.resources.blockIO.weight", "blkio", "blkio.weight", xasprintf("%" PRId64, v), "io", "io.weight",
        xasprintf("default %" PRId64, 1 + (v - 10) * 9999 / 990));
  }
  if (jget_int64(b, "leafWeight", F, &present, &v, err) < 0) return -1;
  if (present && v > 0)
    add(r, "linux.resources.blockIO.leafWeight", "blkio", "blkio.leaf_weight", xasprintf("%" PRId64, v), NULL, NULL, NULL);
  if (blkio_devices(r, b, "weightDevice", "blkio.weight_device", NULL, err) < 0) return -1;
  if (blkio_devices(r, b, "throttleReadBpsDevice", "blkio.throttle.read_bps_device", "rbps", err) < 0) return -1;
  if (blkio_devices(r, b, "throttleWriteBpsDevice", "blkio.throttle.write_bps_device", "wbps", err) < 0) return -1;
  if (blkio_devices(r, b, "throttleReadIOPSDevice", "blkio.throttle.read_iops_device", "riops", err) < 0) return -1;
  if (blkio_devices(r, b, "throttleWriteIOPSDevice", "blkio.throttle.write_iops_device", "wiops", err) < 0) return -1;
  return 0;
}

static int devices(struct pr_resources *r, json_object *arr, pr_error *err) {
  r->has_devices = true;
  r->n_dev_rules = json_object_array_length(arr);
  r->dev_rules = xcalloc(r->n_dev_rules, sizeof(*r->dev_rules));
  for (size_t i = 0; i < r->n_dev_rules; i++) {
    json_object *e = json_object_array_get_idx(arr, i);
    cleanup_free char *f = xasprintf("linux.resources.devices[%zu]", i);
    struct pr_dev_rule *d = &r->dev_rules[i];
    const char *s;
    bool present;
    if (!json_object_is_type(e, json_type_object)) return pr_fail(err, 0, "%s: expected an object", f);
    if (jget_bool(e, "allow", f, &d->allow, err) < 0) return -1;
    if (jget_string(e, "type", f, false, &s, err) < 0) return -1;
    d->type = s && *s ? s[0] : 'a';
    if (!strchr("acb", d->type) || (s && strlen(s) != 1)) return pr_fail(err, 0, "%s.type: must be a, c or b", f);
    if (jget_int64(e, "major", f, &present, &d->major, err) < 0) return -1;
    if (!present) d->major = -1;
    if (jget_int64(e, "minor", f, &present, &d->minor, err) < 0) return -1;
    if (!present) d->minor = -1;
    if (jget_string(e, "access", f, false, &s, err) < 0) return -1;
    if (!s || !*s) s = "rwm";
    if (strlen(s) > 3 || strspn(s, "rwm") != strlen(s)) return pr_fail(err, 0, "%s.access: must use r, w, m", f);
    snprintf(d->access, sizeof(d->access), "%s", s);
  }
  return 0;
}

/* net_cls and net_prio are cgroup v1 controllers; v2 has nothing to write them to
 * (classification is done with eBPF there), so like runc's fs2 manager the v2 drivers
 * skip them without a word.  On v1 they are required like any other setting: runc fails
 * when the hierarchy is not mounted ("cannot set net_cls limit"), and so do we. */
static int network(struct pr_resources *r, json_object *n, pr_error *err) {
  const char *F = "linux.resources.network";
  int64_t v;
  bool present;
  json_object *arr;
  if (jget_int64(n, "classID", F, &present, &v, err) < 0) return -1;
  if (present && (v < 0 || v > UINT32_MAX)) return pr_fail(err, 0, "%s.classID: %" PRId64 " is not a 32-bit class id", F, v);
  if (present && v != 0) /* 0 means none, as for runc */
    add(r, "linux.resources.network.classID", "net_cls", "net_cls.classid", xasprintf("%" PRId64, v), NULL, NULL, NULL);
  if (jget_array(n, "priorities", F, &arr, err) < 0) return -1;
  for (size_t i = 0; arr && i < json_object_array_length(arr); i++) {
    json_object *e = json_object_array_get_idx(arr, i);
    cleanup_free char *f = xasprintf("%s.priorities[%zu]", F, i);
    const char *name;
    if (!json_object_is_type(e, json_type_object)) return pr_fail(err, 0, "%s: expected an object", f);
    if (jget_string(e, "name", f, true, &name, err) < 0) return -1;
    if (!*name || strpbrk(name, " \n/")) return pr_fail(err, 0, "%s.name: \"%s\" is not an interface name", f, name);
    if (jget_int64(e, "priority", f, &present, &v, err) < 0) return -1;
    if (!present) return pr_fail(err, 0, "%s.priority: required field is missing", f);
    if (v < 0 || v > UINT32_MAX) return pr_fail(err, 0, "%s.priority: %" PRId64 " is out of range", f, v);
    /* one "IFNAME PRIO" line per write, as the file wants it */
    add(r, f, "net_prio", "net_prio.ifpriomap", xasprintf("%s %" PRId64, name, v), NULL, NULL, NULL);
  }
  return 0;
}

int config_parse_resources(struct pr_config *c, json_object *res, pr_error *err) {
  struct pr_resources *r = &c->resources;
  json_object *o;
  int64_t v;
  bool present;
  if (jget_object(res, "memory", "linux.resources", &o, err) < 0) return -1;
  if (o && memory(r, o, err) < 0) return -1;
  if (jget_object(res, "cpu", "linux.resources", &o, err) < 0) return -1;
  if (o && cpu(r, o, err) < 0) return -1;
  if (jget_object(res, "pids", "linux.resources", &o, err) < 0) return -1;
  if (o) {
    if (jget_int64(o, "limit", "linux.resources.pids", &present, &v, err) < 0) return -1;
    if (present) add(r, "linux.resources.pids.limit", "pids", "pids.max", v > 0 ? xasprintf("%" PRId64, v) : xstrdup("max"),
                     "pids", "pids.max", v > 0 ? xasprintf("%" PRId64, v) : xstrdup("max"));
  }
  if (jget_object(res, "blockIO", "linux.resources", &o, err) < 0) return -1;
  if (o && blockio(r, o, err) < 0) return -1;
  if (jget_object(res, "network", "linux.resources", &o, err) < 0) return -1;
  if (o && network(r, o, err) < 0) return -1;
  if (jget_array(res, "devices", "linux.resources", &o, err) < 0) return -1;
  if (o && devices(r, o, err) < 0) return -1;
  if (jget_object(res, "unified", "linux.resources", &o, err) < 0) return -1;
  if (o) {
    json_object_object_foreach(o, key, val) {
      cleanup_free char *f = xasprintf("linux.resources.unified.%s", key);
      if (!json_object_is_type(val, json_type_string)) return pr_fail(err, 0, "%s: expected a string", f);
      if (strchr(key, '/') || key[0] == '.') return pr_fail(err, 0, "%s: not a cgroup file name", f);
      /* The controller is the part before the dot (memory.high → memory). */
      const char *dot = strchr(key, '.');
      char *ctrl = dot ? strndup(key, (size_t)(dot - key)) : NULL;
      if (ctrl && strcmp(ctrl, "cgroup") == 0) { free(ctrl); ctrl = NULL; }
      add(r, f, NULL, NULL, NULL, ctrl, xstrdup(key), xstrdup(json_object_get_string(val)));
    }
  }
  return 0;
}
