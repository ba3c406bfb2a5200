#ifndef PR_HOOKS_H
#define PR_HOOKS_H
#include "config.h"
#include "error.h"
/* Runs the hooks of one kind in order, each with the state JSON on stdin.
 * Stops at the first failure (the caller decides whether that is fatal:
 * poststart and poststop failures are only warnings per the spec). */
int hooks_run(const struct pr_hooks_list *l, enum pr_hook_kind kind, const char *state_json, pr_error *err);
#endif
