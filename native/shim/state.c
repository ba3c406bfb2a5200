/* The state file: a small JSON object written by hand (no JSON library, to stay tiny), always
 * replaced atomically so readers never see half of it. */
#include <stdio.h>
#include <string.h>

#include "shim.h"

/* Appends s as a JSON string literal. Returns the new length, or n on truncation. */
static size_t put_string(char *buf, size_t off, size_t n, const char *s) {
  if (off >= n)
    return n;
  buf[off++] = '"';
  for (const unsigned char *p = (const unsigned char *)s; *p && off + 7 < n; p++) {
    switch (*p) {
    case '"': off += snprintf(buf + off, n - off, "\\\""); break;
    case '\\': off += snprintf(buf + off, n - off, "\\\\"); break;
    case '\n': off += snprintf(buf + off, n - off, "\\n"); break;
    case '\t': off += snprintf(buf + off, n - off, "\\t"); break;
    default:
      if (*p < 0x20)
        off += snprintf(buf + off, n - off, "\\u%04x", *p);
      else
        buf[off++] = (char)*p;
    }
  }
  if (off + 1 < n)
    buf[off++] = '"';
  buf[off < n ? off : n - 1] = '\0';
  return off;
}

int state_write(const char *path, const struct shim_state *st, pr_error *err) {
  char buf[2048];
  size_t n = sizeof buf, off = 0;
  off += snprintf(buf + off, n - off, "{\"name\": ");
  off = put_string(buf, off, n, st->name ? st->name : "");
  off += snprintf(buf + off, n - off, ", \"status\": ");
  off = put_string(buf, off, n, st->status);
  off += snprintf(buf + off, n - off, ", \"shim_pid\": %d, \"pid\": %d, \"exit_code\": ", (int)st->shim_pid,
                  (int)st->pid);
  if (st->has_exit)
    off += snprintf(buf + off, n - off, "%d", st->exit_code);
  else
    off += snprintf(buf + off, n - off, "null");
  off += snprintf(buf + off, n - off, ", \"restart_count\": %d, \"backoff_ms\": %ld, \"policy\": ",
                  st->restart_count, st->backoff_ms);
  off = put_string(buf, off, n, st->policy ? st->policy : "no");
  off += snprintf(buf + off, n - off, ", \"stop_requested\": %s, \"started_at\": ", st->stop_requested ? "true" : "false");
  off = put_string(buf, off, n, st->started_at);
  off += snprintf(buf + off, n - off, ", \"finished_at\": ");
  off = put_string(buf, off, n, st->finished_at);
  off += snprintf(buf + off, n - off, ", \"error\": ");
  off = put_string(buf, off, n, st->error);
  off += snprintf(buf + off, n - off, "}\n");
  if (off >= n)
    return pr_fail(err, 0, "state too large");
  return write_file_atomic(path, buf, off, err);
}
