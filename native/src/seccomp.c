/* OCI seccomp JSON → libseccomp.  Unknown syscall names are skipped, as runc
 * and crun do, so one profile works across kernels and architectures. */
#include "seccomp.h"

#include <errno.h>
#include <json-c/json.h>
#include <linux/seccomp.h>
#include <seccomp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "util.h"

static int parse_action(const char *s, int64_t errno_ret, bool has_errno, const char *field, uint32_t *out,
                        pr_error *err) {
  int e = has_errno ? (int)errno_ret : EPERM;
  if (strcmp(s, "SCMP_ACT_KILL") == 0 || strcmp(s, "SCMP_ACT_KILL_THREAD") == 0) *out = SCMP_ACT_KILL;
  else if (strcmp(s, "SCMP_ACT_KILL_PROCESS") == 0) *out = SCMP_ACT_KILL_PROCESS;
  else if (strcmp(s, "SCMP_ACT_TRAP") == 0) *out = SCMP_ACT_TRAP;
  else if (strcmp(s, "SCMP_ACT_ERRNO") == 0) *out = SCMP_ACT_ERRNO((uint32_t)e);
  else if (strcmp(s, "SCMP_ACT_TRACE") == 0) *out = SCMP_ACT_TRACE((uint32_t)e);
  else if (strcmp(s, "SCMP_ACT_ALLOW") == 0) *out = SCMP_ACT_ALLOW;
  else if (strcmp(s, "SCMP_ACT_LOG") == 0) *out = SCMP_ACT_LOG;
  else if (strcmp(s, "SCMP_ACT_NOTIFY") == 0)
    return pr_fail(err, 0, "%s: SCMP_ACT_NOTIFY needs a listenerPath, which this runtime does not support", field);
  else return pr_fail(err, 0, "%s: unknown seccomp action \"%s\"", field, s);
  return 0;
}

static int parse_op(const char *s, const char *field, int *out, pr_error *err) {
  static const struct { const char *n; int op; } t[] = {
      {"SCMP_CMP_NE", SCMP_CMP_NE}, {"SCMP_CMP_LT", SCMP_CMP_LT}, {"SCMP_CMP_LE", SCMP_CMP_LE},
      {"SCMP_CMP_EQ", SCMP_CMP_EQ}, {"SCMP_CMP_GE", SCMP_CMP_GE}, {"SCMP_CMP_GT", SCMP_CMP_GT},
      {"SCMP_CMP_MASKED_EQ", SCMP_CMP_MASKED_EQ}};
  for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++)
    if (strcmp(s, t[i].n) == 0) { *out = t[i].op; return 0; }
  return pr_fail(err, 0, "%s: unknown seccomp operator \"%s\"", field, s);
}

static int parse_arch(const char *s, const char *field, uint32_t *out, pr_error *err) {
  /* "SCMP_ARCH_X86_64" → "x86_64", the spelling seccomp_arch_resolve_name knows. */
  if (!str_has_prefix(s, "SCMP_ARCH_")) return pr_fail(err, 0, "%s: unknown architecture \"%s\"", field, s);
  char buf[64];
  snprintf(buf, sizeof buf, "%s", s + 10);
  for (char *p = buf; *p; p++) *p = (char)(*p >= 'A' && *p <= 'Z' ? *p - 'A' + 'a' : *p);
  if (strcmp(buf, "x86") == 0) snprintf(buf, sizeof buf, "x86");
  uint32_t a = seccomp_arch_resolve_name(buf);
  if (a == 0) return pr_fail(err, 0, "%s: unknown architecture \"%s\"", field, s);
  *out = a;
  return 0;
}

int config_parse_seccomp(struct pr_config *c, json_object *sc, pr_error *err) {
  const char *F = "linux.seccomp";
  struct pr_seccomp *s = xcalloc(1, sizeof(*s));
  const char *str;
  int64_t eret = 0;
  bool has_eret;
  json_object *arr;
  if (jget_string(sc, "defaultAction", F, true, &str, err) < 0) return -1;
  if (jget_int64(sc, "defaultErrnoRet", F, &has_eret, &eret, err) < 0) return -1;
  if (parse_action(str, eret, has_eret, "linux.seccomp.defaultAction", &s->default_action, err) < 0) return -1;
  if (jget_array(sc, "architectures", F, &arr, err) < 0) return -1;
  s->n_arches = arr ? json_object_array_length(arr) : 0;
  s->arches = xcalloc(s->n_arches, sizeof(uint32_t));
  for (size_t i = 0; i < s->n_arches; i++) {
    cleanup_free char *f = xasprintf("%s.architectures[%zu]", F, i);
    json_object *e = json_object_array_get_idx(arr, i);
    if (!json_object_is_type(e, json_type_string)) return pr_fail(err, 0, "%s: expected a string", f);
    if (parse_arch(json_object_get_string(e), f, &s->arches[i], err) < 0) return -1;
  }
  if (jget_array(sc, "flags", F, &arr, err) < 0) return -1;
  for (size_t i = 0; arr && i < json_object_array_length(arr); i++) {
    const char *fl = json_object_get_string(json_object_array_get_idx(arr, i));
    if (fl && strcmp(fl, "SECCOMP_FILTER_FLAG_LOG") == 0) s->flags |= SECCOMP_FILTER_FLAG_LOG;
    else if (fl && strcmp(fl, "SECCOMP_FILTER_FLAG_SPEC_ALLOW") == 0) s->flags |= SECCOMP_FILTER_FLAG_SPEC_ALLOW;
    else if (fl && strcmp(fl, "SECCOMP_FILTER_FLAG_TSYNC") == 0) { /* single-threaded: nothing to sync */ }
    else return pr_fail(err, 0, "%s.flags[%zu]: unsupported flag \"%s\"", F, i, fl ? fl : "");
  }
  if (jget_array(sc, "syscalls", F, &arr, err) < 0) return -1;
  s->n_rules = arr ? json_object_array_length(arr) : 0;
  s->rules = xcalloc(s->n_rules, sizeof(*s->rules));
  for (size_t i = 0; i < s->n_rules; i++) {
    json_object *e = json_object_array_get_idx(arr, i), *names, *args;
    cleanup_free char *f = xasprintf("%s.syscalls[%zu]", F, i);
    struct pr_seccomp_rule *r = &s->rules[i];
    if (!json_object_is_type(e, json_type_object)) return pr_fail(err, 0, "%s: expected an object", f);
    if (jget_string(e, "action", f, true, &str, err) < 0) return -1;
    if (jget_int64(e, "errnoRet", f, &has_eret, &eret, err) < 0) return -1;
    cleanup_free char *af = xasprintf("%s.action", f);
    if (parse_action(str, eret, has_eret, af, &r->action, err) < 0) return -1;
    if (jget_array(e, "names", f, &names, err) < 0) return -1;
    size_t nn = names ? json_object_array_length(names) : 0;
    r->syscalls = xcalloc(nn, sizeof(int));
    for (size_t k = 0; k < nn; k++) {
      const char *name = json_object_get_string(json_object_array_get_idx(names, k));
      int nr = name ? seccomp_syscall_resolve_name(name) : __NR_SCMP_ERROR;
      if (nr != __NR_SCMP_ERROR) r->syscalls[r->n_syscalls++] = nr;
    }
    if (jget_array(e, "args", f, &args, err) < 0) return -1;
    r->n_args = args ? json_object_array_length(args) : 0;
    r->args = xcalloc(r->n_args, sizeof(*r->args));
    for (size_t k = 0; k < r->n_args; k++) {
      json_object *a = json_object_array_get_idx(args, k);
      cleanup_free char *gf = xasprintf("%s.args[%zu]", f, k);
      int64_t v;
      bool present;
      if (jget_int64(a, "index", gf, &present, &v, err) < 0) return -1;
      if (!present || v < 0 || v > 5) return pr_fail(err, 0, "%s.index: must be 0..5", gf);
      r->args[k].index = (unsigned)v;
      if (jget_int64(a, "value", gf, &present, &v, err) < 0) return -1;
      r->args[k].value = (uint64_t)v;
      if (jget_int64(a, "valueTwo", gf, &present, &v, err) < 0) return -1;
      r->args[k].value_two = present ? (uint64_t)v : 0;
      if (jget_string(a, "op", gf, true, &str, err) < 0) return -1;
      cleanup_free char *of = xasprintf("%s.op", gf);
      if (parse_op(str, of, &r->args[k].op, err) < 0) return -1;
    }
  }
  c->seccomp = s;
  c->seccomp_json = xstrdup(json_object_to_json_string_ext(sc, JSON_C_TO_STRING_PLAIN));
  return 0;
}

int seccomp_apply(const struct pr_seccomp *s, pr_error *err) {
  scmp_filter_ctx ctx = seccomp_init(s->default_action);
  if (!ctx) return pr_fail(err, 0, "linux.seccomp: seccomp_init failed");
  int r;
  for (size_t i = 0; i < s->n_arches; i++) {
    r = seccomp_arch_add(ctx, s->arches[i]);
    if (r < 0 && r != -EEXIST) {
      seccomp_release(ctx);
      return pr_fail(err, -r, "linux.seccomp.architectures[%zu]", i);
    }
  }
  /* libseccomp sets no_new_privs itself before loading unless told not to.  That
   * is process.noNewPrivileges' decision alone (process_exec sets it when asked):
   * with it false, a setuid binary in the container must still gain its owner's
   * ids, so the filter is loaded while we still hold CAP_SYS_ADMIN instead (runc
   * does the same: libcontainer/seccomp/seccomp_linux.go, SetNoNewPrivsBit(false)). */
  r = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_NNP, 0);
  if (r < 0) {
    seccomp_release(ctx);
    return pr_fail(err, -r, "linux.seccomp: keeping no_new_privs as configured");
  }
  if (s->flags & SECCOMP_FILTER_FLAG_LOG) seccomp_attr_set(ctx, SCMP_FLTATR_CTL_LOG, 1);
  if (s->flags & SECCOMP_FILTER_FLAG_SPEC_ALLOW) seccomp_attr_set(ctx, SCMP_FLTATR_CTL_SSB, 1);
  for (size_t i = 0; i < s->n_rules; i++) {
    const struct pr_seccomp_rule *rule = &s->rules[i];
    /* libseccomp refuses a rule whose action equals the default one. */
    if (rule->action == s->default_action) continue;
    struct scmp_arg_cmp cmp[6];
    for (size_t k = 0; k < rule->n_args && k < 6; k++)
      cmp[k] = (struct scmp_arg_cmp){rule->args[k].index, (enum scmp_compare)rule->args[k].op,
                                     rule->args[k].value, rule->args[k].value_two};
    for (size_t k = 0; k < rule->n_syscalls; k++) {
      r = seccomp_rule_add_array(ctx, rule->action, rule->syscalls[k], (unsigned)rule->n_args, cmp);
      if (r < 0) {
        seccomp_release(ctx);
        return pr_fail(err, -r, "linux.seccomp.syscalls[%zu]: adding rule for %s", i,
                       seccomp_syscall_resolve_num_arch(SCMP_ARCH_NATIVE, rule->syscalls[k]));
      }
    }
  }
  r = seccomp_load(ctx);
  seccomp_release(ctx);
  if (r < 0) return pr_fail(err, -r, "linux.seccomp: loading the filter");
  return 0;
}
