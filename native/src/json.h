/* JSON helpers: type-checked getters that name the field on error, e.g.
 * `linux.resources.memory.limit: expected an integer`.  A missing key or a JSON null
 * is "absent" (0 returned, *out untouched or NULL) unless required. */
#ifndef PR_JSON_H
#define PR_JSON_H
#include <stdbool.h>
#include <stdint.h>

#include "error.h"

struct json_object;

/* "field.key" (or "key" when field is empty), newly allocated. */
char *jfield(const char *field, const char *key);
int jget_string(struct json_object *o, const char *key, const char *field, bool required, const char **out,
                pr_error *err);
int jget_bool(struct json_object *o, const char *key, const char *field, bool *out, pr_error *err);
/* Integers above INT64_MAX (uint64 "unlimited" values) come back as -1. */
int jget_int64(struct json_object *o, const char *key, const char *field, bool *present, int64_t *out,
               pr_error *err);
int jget_array(struct json_object *o, const char *key, const char *field, struct json_object **out, pr_error *err);
int jget_object(struct json_object *o, const char *key, const char *field, struct json_object **out, pr_error *err);
/* A JSON array of strings → NULL-terminated char* array. */
int jstr_array(struct json_object *arr, const char *field, char ***out, pr_error *err);
#endif
