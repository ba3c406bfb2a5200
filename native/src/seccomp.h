#ifndef PR_SECCOMP_H
#define PR_SECCOMP_H
#include "config.h"
#include "error.h"
/* Loads the filter into the calling thread. */
int seccomp_apply(const struct pr_seccomp *s, pr_error *err);
#endif
