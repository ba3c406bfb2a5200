#ifndef PR_DEVICES_H
#define PR_DEVICES_H
#include "config.h"
#include "error.h"
struct pr_container;
int devices_do_op(struct pr_container *ct, const struct pr_op *op, pr_error *err);
/* The default device rules every container gets in the devices cgroup,
 * as "c 1:3 rwm" strings, NULL-terminated. */
extern const char *const default_device_rules[];
#endif
