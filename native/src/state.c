#include "state.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util.h"

int state_check_id(const char *id, pr_error *err) {
  /* Same alphabet runc accepts (^[\w+-\.]+$), and never "." or "..". */
  if (!*id || strcmp(id, ".") == 0 || strcmp(id, "..") == 0 || strlen(id) > 1024)
    return pr_fail(err, 0, "invalid container id \"%s\"", id);
  for (const char *p = id; *p; p++)
    if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || strchr("_+-.", *p)))
      return pr_fail(err, 0, "invalid container id \"%s\": use letters, digits, _ + - .", id);
  return 0;
}

char *state_dir_path(const char *root, const char *id) { return xasprintf("%s/%s", root, id); }

int state_dir_create(const char *root, const char *id, char **dir, pr_error *err) {
  if (state_check_id(id, err) < 0) return -1;
  if (mkdir(root, 0700) < 0 && errno != EEXIST) {
    if (errno != ENOENT || mkdir_p(root, 0700, err) < 0) return pr_fail(err, errno, "--root %s", root);
  }
  char *d = state_dir_path(root, id);
  if (mkdir(d, 0700) < 0) {
    int e = errno;
    free(d);
    if (e == EEXIST) return pr_fail(err, 0, "container \"%s\" already exists", id);
    return pr_fail(err, e, "creating state directory in %s", root);
  }
  *dir = d;
  return 0;
}

void state_dir_remove(const char *dir) {
  DIR *d = opendir(dir);
  if (d) {
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
      if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) unlinkat(dirfd(d), e->d_name, 0);
    closedir(d);
  }
  rmdir(dir);
}

int proc_stat(pid_t pid, unsigned long long *start, char *state) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/stat", pid);
  cleanup_free char *s = NULL;
  if (read_file(path, &s, NULL, NULL) < 0) return -1;
  /* comm may contain spaces and parentheses: parse from the last ')'. */
  char *p = strrchr(s, ')');
  if (!p) return -1;
  p += 2;
  if (state) *state = *p;
  for (int field = 3; field < 22; field++) {
    p = strchr(p, ' ');
    if (!p) return -1;
    p++;
  }
  if (start) *start = strtoull(p, NULL, 10);
  return 0;
}

static json_object *str_array(char **v, size_t n) {
  json_object *a = json_object_new_array();
  for (size_t i = 0; i < n; i++) json_object_array_add(a, json_object_new_string(v[i]));
  return a;
}

int state_write(const char *dir, const struct pr_state *st, pr_error *err) {
  json_object *o = json_object_new_object();
  json_object_object_add(o, "ociVersion", json_object_new_string(st->oci_version));
  json_object_object_add(o, "id", json_object_new_string(st->id));
  json_object_object_add(o, "pid", json_object_new_int(st->pid));
  json_object_object_add(o, "pidStartTime", json_object_new_uint64(st->start_time));
  json_object_object_add(o, "bundle", json_object_new_string(st->bundle));
  json_object_object_add(o, "rootfs", json_object_new_string(st->rootfs));
  json_object_object_add(o, "created", json_object_new_string(st->created));
  json_object_object_add(o, "annotations", json_tokener_parse(st->annotations_json));
  json_object_object_add(o, "hooks", json_tokener_parse(st->hooks_json));
  if (st->config_process_json)
    json_object_object_add(o, "process", json_tokener_parse(st->config_process_json));
  if (st->seccomp_json) json_object_object_add(o, "seccomp", json_tokener_parse(st->seccomp_json));
  json_object_object_add(o, "userns", json_object_new_boolean(st->userns));
  json_object *cg = json_object_new_object();
  json_object_object_add(cg, "driver", json_object_new_string(st->cg.drv ? st->cg.drv->name : "none"));
  json_object_object_add(cg, "path", json_object_new_string(st->cg.path ? st->cg.path : ""));
  json_object_object_add(cg, "leaves", str_array((char **)st->cg.leaves, st->cg.n_leaves));
  json_object_object_add(cg, "leafNames", str_array((char **)st->cg.leaf_names, st->cg.n_leaves));
  json_object_object_add(cg, "created", str_array((char **)st->cg.created, st->cg.n_created));
  json_object_object_add(o, "cgroup", cg);
  const char *s = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN);
  cleanup_free char *path = xasprintf("%s/state.json", dir);
  int r = write_file_atomic(path, s, strlen(s), 0600, false, err);
  json_object_put(o);
  return r;
}

static char *jstr(json_object *o, const char *k) {
  json_object *v;
  return json_object_object_get_ex(o, k, &v) && json_object_is_type(v, json_type_string)
             ? xstrdup(json_object_get_string(v)) : xstrdup("");
}

static size_t load_list(json_object *o, const char *k, char **dst) {
  json_object *a;
  if (!json_object_object_get_ex(o, k, &a) || !json_object_is_type(a, json_type_array)) return 0;
  size_t n = json_object_array_length(a);
  if (n > CG_MAX_DIRS) n = CG_MAX_DIRS;
  for (size_t i = 0; i < n; i++) dst[i] = xstrdup(json_object_get_string(json_object_array_get_idx(a, i)));
  return n;
}

int state_load(const char *root, const char *id, struct pr_state *st, pr_error *err) {
  if (state_check_id(id, err) < 0) return -1;
  memset(st, 0, sizeof(*st));
  cleanup_free char *path = xasprintf("%s/%s/state.json", root, id);
  json_object *o = json_object_from_file(path);
  if (!o) {
    cleanup_free char *dir = state_dir_path(root, id);
    if (access(dir, F_OK) < 0) return pr_fail(err, 0, "container \"%s\" does not exist", id);
    return pr_fail(err, 0, "container \"%s\": state file %s is missing or corrupt", id, path);
  }
  json_object *v;
  st->id = jstr(o, "id");
  st->bundle = jstr(o, "bundle");
  st->rootfs = jstr(o, "rootfs");
  st->created = jstr(o, "created");
  st->oci_version = jstr(o, "ociVersion");
  st->pid = json_object_object_get_ex(o, "pid", &v) ? json_object_get_int(v) : 0;
  st->start_time = json_object_object_get_ex(o, "pidStartTime", &v) ? json_object_get_uint64(v) : 0;
  st->annotations_json = xstrdup(json_object_object_get_ex(o, "annotations", &v) && v ? json_object_to_json_string(v) : "{}");
  st->hooks_json = xstrdup(json_object_object_get_ex(o, "hooks", &v) && v ? json_object_to_json_string(v) : "{}");
  if (json_object_object_get_ex(o, "process", &v) && v) st->config_process_json = xstrdup(json_object_to_json_string(v));
  if (json_object_object_get_ex(o, "seccomp", &v) && v) st->seccomp_json = xstrdup(json_object_to_json_string(v));
  st->userns = json_object_object_get_ex(o, "userns", &v) && json_object_get_boolean(v);
  if (json_object_object_get_ex(o, "hooks", &v) && v && config_parse_hooks(st->hooks, v, err) < 0) {
    json_object_put(o);
    return pr_prefix(err, "%s", path);
  }
  if (json_object_object_get_ex(o, "cgroup", &v)) {
    cleanup_free char *drv = jstr(v, "driver");
    st->cg.drv = cgroup_driver_by_name(drv);
    st->cg.path = jstr(v, "path");
    st->cg.n_leaves = load_list(v, "leaves", st->cg.leaves);
    load_list(v, "leafNames", (char **)st->cg.leaf_names);
    st->cg.n_created = load_list(v, "created", st->cg.created);
  }
  json_object_put(o);
  return 0;
}

const char *state_status(const char *root, const struct pr_state *st) {
  unsigned long long start;
  char s;
  if (st->pid <= 0 || proc_stat(st->pid, &start, &s) < 0 || start != st->start_time || s == 'Z' || s == 'X')
    return "stopped";
  cleanup_free char *sock = xasprintf("%s/%s/start.sock", root, st->id);
  if (access(sock, F_OK) == 0) return "created";
  return cgroup_is_frozen(&st->cg) ? "paused" : "running";
}

char *state_oci_json_ext(const struct pr_state *st, const char *status, bool pretty) {
  json_object *o = json_object_new_object();
  json_object_object_add(o, "ociVersion", json_object_new_string(st->oci_version));
  json_object_object_add(o, "id", json_object_new_string(st->id));
  json_object_object_add(o, "status", json_object_new_string(status));
  json_object_object_add(o, "pid", json_object_new_int(strcmp(status, "stopped") == 0 ? 0 : st->pid));
  json_object_object_add(o, "bundle", json_object_new_string(st->bundle));
  json_object_object_add(o, "rootfs", json_object_new_string(st->rootfs));
  json_object_object_add(o, "created", json_object_new_string(st->created));
  json_object_object_add(o, "owner", json_object_new_string(""));
  /* omitted when empty, as runc's state does (the spec makes it optional) */
  json_object *ann = json_tokener_parse(st->annotations_json);
  if (ann && json_object_is_type(ann, json_type_object) && json_object_object_length(ann) > 0)
    json_object_object_add(o, "annotations", ann);
  else if (ann)
    json_object_put(ann);
  char *r = xstrdup(json_object_to_json_string_ext(
      o, (pretty ? JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED : JSON_C_TO_STRING_PLAIN) | JSON_C_TO_STRING_NOSLASHESCAPE));
  json_object_put(o);
  return r;
}

char *state_oci_json(const struct pr_state *st, const char *status) { return state_oci_json_ext(st, status, false); }
