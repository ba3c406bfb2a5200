/* Running from a sealed copy of our own binary (CVE-2019-5736). */
#ifndef PR_SEALED_H
#define PR_SEALED_H
#include "error.h"

/* Unless the running binary already cannot be opened for writing (a sealed memfd, a
 * read-only mount), re-executes it, with the same argv and environment, from a read-only
 * clone of its mount or a sealed memfd copy (sealed.c): returns 0 when already sealed,
 * otherwise only on failure.  Called by the commands that put a process of ours into a
 * container. */
int sealed_reexec(char **argv, pr_error *err);
#endif
