/* Type-checked getters over json-c that name the offending field (its JSON path) in the
 * error.  A leaf: it depends on json-c, util and error only, so every config*.c (and
 * devices.c, seccomp.c) can use it without going through config.c. */
#include "json.h"

#include <errno.h>
#include <json-c/json.h>
#include <stdint.h>
#include <stdlib.h>

#include "util.h"

char *jfield(const char *field, const char *key) {
  return field && *field ? xasprintf("%s.%s", field, key) : xstrdup(key);
}

int jget_string(json_object *o, const char *key, const char *field, bool required, const char **out,
                pr_error *err) {
  json_object *v;
  *out = NULL;
  if (!json_object_object_get_ex(o, key, &v) || json_object_is_type(v, json_type_null)) {
    if (!required) return 0;
    cleanup_free char *f = jfield(field, key);
    return pr_fail(err, 0, "%s: required field is missing", f);
  }
  if (!json_object_is_type(v, json_type_string)) {
    cleanup_free char *f = jfield(field, key);
    return pr_fail(err, 0, "%s: expected a string", f);
  }
  *out = json_object_get_string(v);
  return 0;
}

int jget_bool(json_object *o, const char *key, const char *field, bool *out, pr_error *err) {
  json_object *v;
  if (!json_object_object_get_ex(o, key, &v) || json_object_is_type(v, json_type_null)) return 0;
  if (!json_object_is_type(v, json_type_boolean)) {
    cleanup_free char *f = jfield(field, key);
    return pr_fail(err, 0, "%s: expected true or false", f);
  }
  *out = json_object_get_boolean(v);
  return 0;
}

int jget_int64(json_object *o, const char *key, const char *field, bool *present, int64_t *out,
               pr_error *err) {
  json_object *v;
  if (present) *present = false;
  if (!json_object_object_get_ex(o, key, &v) || json_object_is_type(v, json_type_null)) return 0;
  if (!json_object_is_type(v, json_type_int)) {
    cleanup_free char *f = jfield(field, key);
    return pr_fail(err, 0, "%s: expected an integer", f);
  }
  errno = 0;
  *out = json_object_get_int64(v);
  /* json-c saturates values above INT64_MAX; uint64 limits like
   * 18446744073709551615 come back through get_uint64. */
  if (*out == INT64_MAX) {
    uint64_t u = json_object_get_uint64(v);
    if (u > (uint64_t)INT64_MAX) *out = -1; /* treated as "unlimited" by callers */
  }
  if (present) *present = true;
  return 0;
}

int jget_array(json_object *o, const char *key, const char *field, json_object **out, pr_error *err) {
  json_object *v;
  *out = NULL;
  if (!json_object_object_get_ex(o, key, &v) || json_object_is_type(v, json_type_null)) return 0;
  if (!json_object_is_type(v, json_type_array)) {
    cleanup_free char *f = jfield(field, key);
    return pr_fail(err, 0, "%s: expected an array", f);
  }
  *out = v;
  return 0;
}

int jget_object(json_object *o, const char *key, const char *field, json_object **out, pr_error *err) {
  json_object *v;
  *out = NULL;
  if (!json_object_object_get_ex(o, key, &v) || json_object_is_type(v, json_type_null)) return 0;
  if (!json_object_is_type(v, json_type_object)) {
    cleanup_free char *f = jfield(field, key);
    return pr_fail(err, 0, "%s: expected an object", f);
  }
  *out = v;
  return 0;
}

int jstr_array(json_object *arr, const char *field, char ***out, pr_error *err) {
  size_t n = arr ? json_object_array_length(arr) : 0;
  char **v = xcalloc(n + 1, sizeof(char *));
  for (size_t i = 0; i < n; i++) {
    json_object *e = json_object_array_get_idx(arr, i);
    if (!json_object_is_type(e, json_type_string)) {
      free(v);
      return pr_fail(err, 0, "%s[%zu]: expected a string", field, i);
    }
    v[i] = xstrdup(json_object_get_string(e));
  }
  *out = v;
  return 0;
}
