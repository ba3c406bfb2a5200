/* The operation list the parsers append to (config_linux.c, config_mounts.c, devices.c).
 * Kept apart from config.c so that those parsers, which config.c calls, do not call back
 * into it. */
#include <string.h>

#include "config.h"
#include "util.h"

struct pr_op *config_add_op(struct pr_config *c, enum pr_op_kind kind, const char *field) {
  c->ops = xrealloc(c->ops, (c->n_ops + 1) * sizeof(*c->ops));
  struct pr_op *op = &c->ops[c->n_ops++];
  memset(op, 0, sizeof(*op));
  op->kind = kind;
  op->field = xstrdup(field);
  return op;
}
