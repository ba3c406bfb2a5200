#include "error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int pr_fail(pr_error *err, int errnum, const char *fmt, ...) {
  if (err == NULL) return -1;
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
  va_end(ap);
  if (errnum != 0 && n >= 0 && (size_t)n < sizeof(err->msg))
    snprintf(err->msg + n, sizeof(err->msg) - (size_t)n, ": %s", strerror(errnum));
  err->errnum = errnum;
  return -1;
}

int pr_prefix(pr_error *err, const char *fmt, ...) {
  if (err == NULL) return -1;
  char prefix[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(prefix, sizeof(prefix), fmt, ap);
  va_end(ap);
  char old[sizeof(err->msg)];
  memcpy(old, err->msg, sizeof(old));
  snprintf(err->msg, sizeof(err->msg), "%.500s: %.1500s", prefix, old);
  return -1;
}
