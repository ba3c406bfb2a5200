/* Error out-parameter in the style of crun's libcrun_error_t: a fallible
 * function fills *err and returns a negative value; only main() prints. */
#ifndef PR_ERROR_H
#define PR_ERROR_H
#include <stddef.h>

typedef struct pr_error {
  int errnum;      /* errno that caused it, 0 if none */
  char msg[2048];  /* complete one-line message */
} pr_error;

/* Sets *err to the formatted message (": strerror(errnum)" appended when
 * errnum != 0) and returns -1.  Safe to call with err == NULL. */
int pr_fail(pr_error *err, int errnum, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Prepends "prefix: " to an already set error; returns -1. */
int pr_prefix(pr_error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#endif
