/* The container log: JSON lines in Docker's json-file shape
 *   {"log":"hello\n","stream":"stdout","time":"2026-11-22T21:40:00.123456789Z"}
 * so `logs --timestamps` and `--tail` need no guessing. Size-capped rotation as Docker's
 * max-size/max-file: when a record would push the file past max_size, path.(N-2) ... path.1
 * shift up one, the oldest falls off, and a fresh file starts; max_files counts the live file.
 * A file holds at least one record, so one 16 KiB line of control bytes (escaped 6x) can take a
 * file past max_size once: the total stays under max_files * max(max_size, ~100 KiB). */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "shim.h"

static int open_log(struct log_writer *w, pr_error *err) {
  w->fd = open(w->path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
  if (w->fd < 0)
    return pr_fail(err, errno, "open log %s", w->path);
  struct stat st;
  w->size = fstat(w->fd, &st) == 0 ? st.st_size : 0;
  return 0;
}

int log_open(struct log_writer *w, const char *path, long long max_size, int max_files, pr_error *err) {
  w->path = path;
  w->max_size = max_size;
  w->max_files = max_files < 1 ? 1 : max_files;
  return open_log(w, err);
}

static int rotate(struct log_writer *w, pr_error *err) {
  char from[PATH_MAX], to[PATH_MAX];
  close(w->fd);
  w->fd = -1;
  if (w->max_files > 1) {
    for (int i = w->max_files - 1; i >= 1; i--) {
      if (i == 1)
        snprintf(from, sizeof from, "%s", w->path);
      else
        snprintf(from, sizeof from, "%s.%d", w->path, i - 1);
      snprintf(to, sizeof to, "%s.%d", w->path, i);
      if (rename(from, to) < 0 && errno != ENOENT)
        return pr_fail(err, errno, "rotate %s", from);
    }
  } else if (unlink(w->path) < 0 && errno != ENOENT) {
    return pr_fail(err, errno, "rotate %s", w->path);
  }
  return open_log(w, err);
}

/* Escapes data into out (JSON string body). out must hold 6*len+1 bytes. */
size_t json_escape(char *out, const char *data, size_t len) {
  static const char hex[] = "0123456789abcdef";
  size_t o = 0;
  for (size_t i = 0; i < len; i++) {
    unsigned char c = (unsigned char)data[i];
    switch (c) {
    case '"': out[o++] = '\\'; out[o++] = '"'; break;
    case '\\': out[o++] = '\\'; out[o++] = '\\'; break;
    case '\n': out[o++] = '\\'; out[o++] = 'n'; break;
    case '\r': out[o++] = '\\'; out[o++] = 'r'; break;
    case '\t': out[o++] = '\\'; out[o++] = 't'; break;
    default:
      if (c < 0x20 || c == 0x7f) {
        memcpy(out + o, "\\u00", 4);
        out[o + 4] = hex[c >> 4];
        out[o + 5] = hex[c & 15];
        o += 6;
      } else {
        out[o++] = (char)c;
      }
    }
  }
  return o;
}

int log_record(struct log_writer *w, const char *stream, const char *data, size_t len, pr_error *err) {
  char ts[48];
  /* Lines are cut at 16 KiB before they get here (as Docker does), so this stays small. */
  static char rec[16384 * 6 + 256];
  if (len > 16384)
    len = 16384;
  format_time(ts, sizeof ts);
  size_t o = 0;
  memcpy(rec, "{\"log\":\"", 8);
  o = 8;
  o += json_escape(rec + o, data, len);
  o += snprintf(rec + o, sizeof rec - o, "\",\"stream\":\"%s\",\"time\":\"%s\"}\n", stream, ts);
  if (w->size > 0 && w->size + (long long)o > w->max_size && rotate(w, err) < 0)
    return -1;
  if (write_all(w->fd, rec, o) < 0)
    return pr_fail(err, errno, "write log %s", w->path);
  w->size += (long long)o;
  return 0;
}

void log_close(struct log_writer *w) {
  if (w->fd >= 0)
    close(w->fd);
  w->fd = -1;
}
