/* The one error and log convention of native/ (the runtime in src/ and the shim in shim/).
 *
 * Errors: an out-parameter in the style of crun's libcrun_error_t.  A fallible function
 * fills *err and returns a negative value; it never prints.  Only main() reports, through
 * pr_log_error().  The one exception is pr_warn(): a problem that must not fail the
 * command (a poststart hook, say) is logged where it happens, as runc's logrus warnings are.
 *
 * Logging: pr_log_init() names the program and, optionally, a log file (runc's --log /
 * --log-format): every line goes to stderr as "prog: msg" and, when a file is set, to it as
 * text (time="..." level=error msg="...") or JSON ({"level":"error","msg":"...","time":"..."},
 * the logrus shape containerd's runc shim parses from runc's --log to report why a call
 * failed).  Plain libc only: the shim links nothing else. */
#ifndef PR_ERROR_H
#define PR_ERROR_H
#include <stdbool.h>
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

/* prog: the prefix of stderr lines; file: NULL for stderr only; json: the file's format. */
void pr_log_init(const char *prog, const char *file, bool json);
/* main() reporting the error that ends the command. */
void pr_log_error(const pr_error *err);
/* main() reporting a message that is not a pr_error (usage errors). */
void pr_log_errorf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* A non-fatal problem, logged where it happens (level "warning"). */
void pr_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
#endif
