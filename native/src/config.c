/* config.json → struct pr_config.  Top level, process and hooks; the linux
 * section, mounts and seccomp live in their own files. */
#include "config.h"

#include <errno.h>
#include <json-c/json.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <unistd.h>

#include "caps.h"
#include "json.h"
#include "util.h"

static const struct { const char *name; int res; } rlimit_names[] = {
    {"RLIMIT_AS", RLIMIT_AS}, {"RLIMIT_CORE", RLIMIT_CORE}, {"RLIMIT_CPU", RLIMIT_CPU},
    {"RLIMIT_DATA", RLIMIT_DATA}, {"RLIMIT_FSIZE", RLIMIT_FSIZE}, {"RLIMIT_LOCKS", RLIMIT_LOCKS},
    {"RLIMIT_MEMLOCK", RLIMIT_MEMLOCK}, {"RLIMIT_MSGQUEUE", RLIMIT_MSGQUEUE},
    {"RLIMIT_NICE", RLIMIT_NICE}, {"RLIMIT_NOFILE", RLIMIT_NOFILE}, {"RLIMIT_NPROC", RLIMIT_NPROC},
    {"RLIMIT_RSS", RLIMIT_RSS}, {"RLIMIT_RTPRIO", RLIMIT_RTPRIO}, {"RLIMIT_RTTIME", RLIMIT_RTTIME},
    {"RLIMIT_SIGPENDING", RLIMIT_SIGPENDING}, {"RLIMIT_STACK", RLIMIT_STACK},
};

static int parse_caps(json_object *caps, const char *field, struct pr_caps *out, pr_error *err) {
  static const char *sets[] = {"bounding", "effective", "inheritable", "permitted", "ambient"};
  uint64_t *dst[] = {&out->bounding, &out->effective, &out->inheritable, &out->permitted, &out->ambient};
  out->given = true;
  for (size_t s = 0; s < 5; s++) {
    json_object *arr;
    cleanup_free char *f = jfield(field, sets[s]);
    if (jget_array(caps, sets[s], field, &arr, err) < 0) return -1;
    *dst[s] = 0;
    for (size_t i = 0; arr && i < json_object_array_length(arr); i++) {
      json_object *e = json_object_array_get_idx(arr, i);
      if (!json_object_is_type(e, json_type_string))
        return pr_fail(err, 0, "%s[%zu]: expected a string", f, i);
      int cap = cap_from_name(json_object_get_string(e));
      if (cap < 0)
        return pr_fail(err, 0, "%s[%zu]: unknown capability \"%s\"", f, i, json_object_get_string(e));
      /* Capabilities newer than this kernel are skipped, as runc does
       * (it only warns), so one config works across kernels. */
      if (cap <= cap_last_cap()) *dst[s] |= 1ULL << cap;
    }
  }
  return 0;
}

int config_parse_process(struct pr_process *p, json_object *proc, const char *field, pr_error *err) {
  json_object *o, *arr;
  const char *s;
  int64_t v;
  bool present;
  if (jget_bool(proc, "terminal", field, &p->terminal, err) < 0) return -1;
  if (jget_object(proc, "consoleSize", field, &o, err) < 0) return -1;
  if (o) {
    if (jget_int64(o, "height", "process.consoleSize", &present, &v, err) < 0) return -1;
    if (present) p->console_height = (unsigned)v;
    if (jget_int64(o, "width", "process.consoleSize", &present, &v, err) < 0) return -1;
    if (present) p->console_width = (unsigned)v;
  }
  if (jget_object(proc, "user", field, &o, err) < 0) return -1;
  if (o) {
    cleanup_free char *uf = jfield(field, "user");
    if (jget_int64(o, "uid", uf, &present, &v, err) < 0) return -1;
    if (present) p->uid = (uint32_t)v;
    if (jget_int64(o, "gid", uf, &present, &v, err) < 0) return -1;
    if (present) p->gid = (uint32_t)v;
    if (jget_int64(o, "umask", uf, &present, &v, err) < 0) return -1;
    if (present) { p->has_umask = true; p->umask = (mode_t)v & 0777; }
    if (jget_array(o, "additionalGids", uf, &arr, err) < 0) return -1;
    if (arr) {
      p->n_additional_gids = json_object_array_length(arr);
      p->additional_gids = xcalloc(p->n_additional_gids, sizeof(uint32_t));
      for (size_t i = 0; i < p->n_additional_gids; i++) {
        json_object *e = json_object_array_get_idx(arr, i);
        if (!json_object_is_type(e, json_type_int))
          return pr_fail(err, 0, "%s.additionalGids[%zu]: expected an integer", uf, i);
        p->additional_gids[i] = (uint32_t)json_object_get_int64(e);
      }
    }
  }
  cleanup_free char *af = jfield(field, "args");
  if (jget_array(proc, "args", field, &arr, err) < 0) return -1;
  if (!arr || json_object_array_length(arr) == 0)
    return pr_fail(err, 0, "%s: must contain at least one element", af);
  if (jstr_array(arr, af, &p->args, err) < 0) return -1;
  cleanup_free char *ef = jfield(field, "env");
  if (jget_array(proc, "env", field, &arr, err) < 0) return -1;
  if (jstr_array(arr, ef, &p->env, err) < 0) return -1;
  if (jget_string(proc, "cwd", field, false, &s, err) < 0) return -1;
  if (s && s[0] != '/') return pr_fail(err, 0, "%s.cwd: must be an absolute path, got \"%s\"", field, s);
  p->cwd = xstrdup(s ? s : "/");
  if (jget_object(proc, "capabilities", field, &o, err) < 0) return -1;
  if (o) {
    cleanup_free char *cf = jfield(field, "capabilities");
    if (parse_caps(o, cf, &p->caps, err) < 0) return -1;
  }
  if (jget_array(proc, "rlimits", field, &arr, err) < 0) return -1;
  if (arr) {
    p->n_rlimits = json_object_array_length(arr);
    p->rlimits = xcalloc(p->n_rlimits, sizeof(*p->rlimits));
    for (size_t i = 0; i < p->n_rlimits; i++) {
      json_object *e = json_object_array_get_idx(arr, i);
      cleanup_free char *rf = xasprintf("%s.rlimits[%zu]", field, i);
      if (!json_object_is_type(e, json_type_object)) return pr_fail(err, 0, "%s: expected an object", rf);
      if (jget_string(e, "type", rf, true, &s, err) < 0) return -1;
      size_t k;
      for (k = 0; k < sizeof(rlimit_names) / sizeof(rlimit_names[0]); k++)
        if (strcmp(rlimit_names[k].name, s) == 0) break;
      if (k == sizeof(rlimit_names) / sizeof(rlimit_names[0]))
        return pr_fail(err, 0, "%s.type: unknown rlimit \"%s\"", rf, s);
      p->rlimits[i].resource = rlimit_names[k].res;
      p->rlimits[i].name = rlimit_names[k].name;
      if (jget_int64(e, "soft", rf, &present, &v, err) < 0) return -1;
      if (!present) return pr_fail(err, 0, "%s.soft: required field is missing", rf);
      p->rlimits[i].soft = v < 0 ? RLIM_INFINITY : (uint64_t)v;
      if (jget_int64(e, "hard", rf, &present, &v, err) < 0) return -1;
      if (!present) return pr_fail(err, 0, "%s.hard: required field is missing", rf);
      p->rlimits[i].hard = v < 0 ? RLIM_INFINITY : (uint64_t)v;
      if (p->rlimits[i].soft > p->rlimits[i].hard)
        return pr_fail(err, 0, "%s: soft limit %s is above the hard limit", rf, p->rlimits[i].name);
    }
  }
  if (jget_bool(proc, "noNewPrivileges", field, &p->no_new_privileges, err) < 0) return -1;
  if (jget_int64(proc, "oomScoreAdj", field, &present, &v, err) < 0) return -1;
  if (present) {
    if (v < -1000 || v > 1000)
      return pr_fail(err, 0, "%s.oomScoreAdj: %lld is outside -1000..1000", field, (long long)v);
    p->has_oom_score_adj = true;
    p->oom_score_adj = (int)v;
  }
  return 0;
}

static const char *hook_names[HOOK__COUNT] = {"createRuntime", "createContainer", "startContainer",
                                              "poststart", "poststop"};
const char *hook_kind_name(enum pr_hook_kind k) { return hook_names[k]; }

int config_parse_hooks(struct pr_hooks_list *hl, json_object *hooks, pr_error *err) {
  for (int k = 0; k < HOOK__COUNT; k++) {
    json_object *arr;
    if (jget_array(hooks, hook_names[k], "hooks", &arr, err) < 0) return -1;
    if (!arr) continue;
    struct pr_hooks_list *l = &hl[k];
    l->n = json_object_array_length(arr);
    l->v = xcalloc(l->n, sizeof(*l->v));
    for (size_t i = 0; i < l->n; i++) {
      json_object *h = json_object_array_get_idx(arr, i), *a;
      cleanup_free char *f = xasprintf("hooks.%s[%zu]", hook_names[k], i);
      const char *path;
      int64_t t;
      bool present;
      if (!json_object_is_type(h, json_type_object)) return pr_fail(err, 0, "%s: expected an object", f);
      if (jget_string(h, "path", f, true, &path, err) < 0) return -1;
      if (path[0] != '/') return pr_fail(err, 0, "%s.path: must be absolute, got \"%s\"", f, path);
      l->v[i].path = xstrdup(path);
      cleanup_free char *af = jfield(f, "args");
      if (jget_array(h, "args", f, &a, err) < 0 || jstr_array(a, af, &l->v[i].args, err) < 0) return -1;
      if (!l->v[i].args[0]) {
        free(l->v[i].args);
        l->v[i].args = xcalloc(2, sizeof(char *));
        l->v[i].args[0] = xstrdup(path);
      }
      cleanup_free char *ef = jfield(f, "env");
      if (jget_array(h, "env", f, &a, err) < 0 || jstr_array(a, ef, &l->v[i].env, err) < 0) return -1;
      if (jget_int64(h, "timeout", f, &present, &t, err) < 0) return -1;
      if (present && t <= 0) return pr_fail(err, 0, "%s.timeout: must be positive", f);
      l->v[i].timeout = present ? (int)t : 0;
    }
  }
  return 0;
}

static int check_version(const char *v, pr_error *err) {
  /* Any 1.x is accepted (the spec promises compatibility within a major). */
  if (strncmp(v, "1.", 2) != 0 || v[2] < '0' || v[2] > '9')
    return pr_fail(err, 0, "ociVersion: unsupported version \"%s\" (this runtime accepts 1.x)", v);
  return 0;
}

static int parse_config(struct pr_config *c, json_object *root, pr_error *err) {
  const char *s;
  json_object *o, *arr;
  if (!json_object_is_type(root, json_type_object)) return pr_fail(err, 0, "expected a JSON object");
  if (jget_string(root, "ociVersion", "", true, &s, err) < 0) return -1;
  if (check_version(s, err) < 0) return -1;
  c->oci_version = xstrdup(s);
  if (jget_object(root, "root", "", &o, err) < 0) return -1;
  if (!o) return pr_fail(err, 0, "root: required field is missing");
  if (jget_string(o, "path", "root", true, &s, err) < 0) return -1;
  c->rootfs = s[0] == '/' ? path_clean(s) : ({
    cleanup_free char *j = xasprintf("%s/%s", c->bundle, s);
    path_clean(j);
  });
  if (access(c->rootfs, F_OK) < 0) return pr_fail(err, errno, "root.path: %s", c->rootfs);
  if (jget_bool(o, "readonly", "root", &c->root_readonly, err) < 0) return -1;
  if (jget_object(root, "process", "", &o, err) < 0) return -1;
  if (!o) return pr_fail(err, 0, "process: required field is missing");
  if (config_parse_process(&c->process, o, "process", err) < 0) return -1;
  c->process_json = xstrdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
  if (jget_string(root, "hostname", "", false, &s, err) < 0) return -1;
  c->hostname = xstrdup(s);
  if (jget_string(root, "domainname", "", false, &s, err) < 0) return -1;
  c->domainname = xstrdup(s);
  if (jget_object(root, "hooks", "", &o, err) < 0) return -1;
  if (o && config_parse_hooks(c->hooks, o, err) < 0) return -1;
  c->hooks_json = xstrdup(o ? json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN) : "{}");
  if (jget_object(root, "annotations", "", &o, err) < 0) return -1;
  c->annotations_json = xstrdup(o ? json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN) : "{}");
  /* Order matters: linux.* fills namespaces (needed by the mount code to
   * decide sysfs vs bind), then mounts, then devices, then post-pivot ops. */
  if (jget_object(root, "linux", "", &o, err) < 0) return -1;
  if (!o) o = json_object_new_object();
  if (jget_array(root, "mounts", "", &arr, err) < 0) return -1;
  if (config_parse_linux(c, o, err) < 0) return -1;
  if (config_parse_mounts(c, arr, err) < 0) return -1;
  json_object *devs;
  if (jget_array(o, "devices", "linux", &devs, err) < 0) return -1;
  if (config_add_devices(c, devs, err) < 0) return -1;
  if (config_add_final_ops(c, o, err) < 0) return -1;
  if (c->hostname && *c->hostname && !c->ns[NS_UTS].present)
    return pr_fail(err, 0, "hostname: setting a hostname needs a new uts namespace in linux.namespaces");
  return 0;
}

int config_load(const char *bundle, struct pr_config **out, pr_error *err) {
  struct pr_config *c = xcalloc(1, sizeof(*c));
  char abs[PATH_MAX];
  if (realpath(bundle, abs) == NULL) {
    free(c);
    return pr_fail(err, errno, "bundle %s", bundle);
  }
  c->bundle = xstrdup(abs);
  cleanup_free char *path = xasprintf("%s/config.json", abs);
  cleanup_free char *text = NULL;
  size_t len;
  if (read_file(path, &text, &len, err) < 0) {
    config_free(c);
    return -1;
  }
  json_tokener *tok = json_tokener_new();
  /* Strict: json-c otherwise accepts trailing commas and other non-JSON. */
  json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
  json_object *root = json_tokener_parse_ex(tok, text, (int)len);
  enum json_tokener_error jerr = json_tokener_get_error(tok);
  if (root == NULL || jerr != json_tokener_success) {
    /* Count the line so the message points somewhere useful. */
    size_t off = json_tokener_get_parse_end(tok), line = 1;
    for (size_t i = 0; i < off && i < len; i++) line += text[i] == '\n';
    json_tokener_free(tok);
    config_free(c);
    if (root) json_object_put(root);
    return pr_fail(err, 0, "config.json: invalid JSON at line %zu: %s", line,
                   json_tokener_error_desc(jerr == json_tokener_success ? json_tokener_continue : jerr));
  }
  json_tokener_free(tok);
  int r = parse_config(c, root, err);
  json_object_put(root);
  if (r < 0) {
    config_free(c);
    return pr_prefix(err, "config.json");
  }
  *out = c;
  return 0;
}

int config_parse_process_file(const char *path, struct pr_process *p, pr_error *err) {
  json_object *root = json_object_from_file(path);
  if (!root) return pr_fail(err, 0, "%s: cannot read or parse JSON", path);
  int r = config_parse_process(p, root, "", err);
  json_object_put(root);
  if (r < 0) return pr_prefix(err, "%s", path);
  return 0;
}

void config_free(struct pr_config *c) {
  /* The runtime is a short-lived process: the config lives until exit, so
   * only the top-level block is released here. */
  free(c);
}
