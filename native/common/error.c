#include "error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

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

static const char *log_prog = "provision";
static const char *log_file;
static bool log_json;

void pr_log_init(const char *prog, const char *file, bool json) {
  log_prog = prog;
  log_file = file;
  log_json = json;
}

/* s as the body of a JSON string (RFC 8259: quote, backslash and control characters). */
static void json_escape_to(FILE *f, const char *s) {
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    if (*p == '"' || *p == '\\') fprintf(f, "\\%c", *p);
    else if (*p == '\n') fputs("\\n", f);
    else if (*p == '\t') fputs("\\t", f);
    else if (*p < 0x20) fprintf(f, "\\u%04x", *p);
    else fputc(*p, f);
  }
}

static void log_line(const char *level, const char *msg) {
  if (strcmp(level, "error") == 0) fprintf(stderr, "%s: %s\n", log_prog, msg);
  else fprintf(stderr, "%s: %s: %s\n", log_prog, level, msg);
  if (!log_file) return;
  FILE *f = fopen(log_file, "ae");
  if (!f) return;
  char ts[64];
  time_t t = time(NULL);
  struct tm tm;
  gmtime_r(&t, &tm);
  strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%SZ", &tm);
  if (log_json) {
    /* logrus' JSONFormatter: keys sorted, RFC 3339 time */
    fprintf(f, "{\"level\":\"%s\",\"msg\":\"", level);
    json_escape_to(f, msg);
    fprintf(f, "\",\"time\":\"%s\"}\n", ts);
  } else {
    fprintf(f, "time=\"%s\" level=%s msg=\"%s\"\n", ts, level, msg);
  }
  fclose(f);
}

void pr_log_error(const pr_error *err) { log_line("error", err->msg); }

void pr_log_errorf(const char *fmt, ...) {
  char buf[2048];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  log_line("error", buf);
}

void pr_warn(const char *fmt, ...) {
  char buf[2048];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  log_line("warning", buf);
}
