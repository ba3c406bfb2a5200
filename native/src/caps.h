#ifndef PR_CAPS_H
#define PR_CAPS_H
#include <stdint.h>

#include "config.h"
#include "error.h"

int cap_from_name(const char *name);
const char *cap_name(int cap);
int cap_last_cap(void);
/* Drops every capability not in caps->bounding from the bounding set. */
int caps_drop_bounding(const struct pr_caps *caps, pr_error *err);
/* Sets effective/permitted/inheritable, then raises the ambient set. */
int caps_apply(const struct pr_caps *caps, pr_error *err);
#endif
