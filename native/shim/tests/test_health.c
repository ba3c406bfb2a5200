/* The healthcheck rules without processes (`make -C native/shim check`): health_apply against
 * Docker's (moby daemon/health.go handleProbeResult) and the health file health_write makes. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../shim.h"

static int failures;

#define CHECK(cond)                                                              \
  do {                                                                           \
    if (!(cond)) {                                                               \
      fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);   \
      failures++;                                                                \
    }                                                                            \
  } while (0)

static const struct health_config cfg3 = {.interval_ms = 200, .timeout_ms = 1000, .retries = 3};

/* a run of results: '0' passes, anything else fails; every check `step` ms after the previous */
static struct health_state run(const struct health_config *c, const char *results, int64_t step) {
  struct health_state s = {.status = HEALTH_STARTING};
  int64_t t = 0;
  for (const char *p = results; *p; p++, t += step)
    health_apply(&s, c, *p == '0' ? 0 : 1, t);
  return s;
}

static void test_rules(void) {
  struct health_state s = run(&cfg3, "0", 200);
  CHECK(s.status == HEALTH_HEALTHY && s.failing_streak == 0 && s.checks == 1);
  s = run(&cfg3, "11", 200); /* fewer failures than retries: still starting */
  CHECK(s.status == HEALTH_STARTING && s.failing_streak == 2);
  s = run(&cfg3, "111", 200);
  CHECK(s.status == HEALTH_UNHEALTHY && s.failing_streak == 3);
  s = run(&cfg3, "1110", 200); /* recovers at once on a pass */
  CHECK(s.status == HEALTH_HEALTHY && s.failing_streak == 0 && s.checks == 4);
  s = run(&cfg3, "0110", 200); /* a pass resets the streak */
  CHECK(s.status == HEALTH_HEALTHY && s.failing_streak == 0);
  s = run(&cfg3, "011", 200); /* healthy stays healthy below retries */
  CHECK(s.status == HEALTH_HEALTHY && s.failing_streak == 2);
  s = run(&cfg3, "0111", 200);
  CHECK(s.status == HEALTH_UNHEALTHY && s.failing_streak == 3);
  /* a timed-out check (-1) is a failure like any other */
  struct health_state t = {.status = HEALTH_STARTING};
  health_apply(&t, &(struct health_config){.retries = 1}, -1, 0);
  CHECK(t.status == HEALTH_UNHEALTHY && t.failing_streak == 1);
}

static void test_start_period(void) {
  struct health_config c = cfg3;
  c.start_period_ms = 1000;
  /* checks at 0, 200, ..., 1200 ms: the five inside the start period do not count (as before in
   * the Python monitor: 6 failures in the first 1.2 s, only the one at 1.2 s counts) */
  struct health_state s = run(&c, "111111", 200);
  CHECK(s.status == HEALTH_STARTING && s.failing_streak == 1 && s.checks == 6);
  s = run(&c, "1111110", 200);
  CHECK(s.status == HEALTH_HEALTHY && s.failing_streak == 0 && s.checks == 7);
  s = run(&c, "11111111", 200); /* 1.0, 1.2, 1.4 s count: unhealthy */
  CHECK(s.status == HEALTH_UNHEALTHY && s.failing_streak == 3);
  /* once healthy, the start period no longer excuses a failure (Docker: only while "starting") */
  s = run(&c, "0111", 100);
  CHECK(s.status == HEALTH_UNHEALTHY && s.failing_streak == 3);
}

static char *slurp(const char *path) {
  static char buf[65536];
  FILE *f = fopen(path, "r");
  if (!f)
    return NULL;
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = '\0';
  return buf;
}

static void test_write(void) {
  char dir[] = "/tmp/shim-health-test-XXXXXX";
  if (!mkdtemp(dir)) {
    perror("mkdtemp");
    failures++;
    return;
  }
  char path[128];
  snprintf(path, sizeof path, "%s/c.health.json", dir);
  struct health_state s = {.status = HEALTH_STARTING, .pid = 42, .restart_count = 2};
  strcpy(s.started_at, "2026-11-23T01:00:00.000000000Z");
  pr_error err = {0};
  CHECK(health_write(path, &s, &err) == 0);
  char *text = slurp(path);
  CHECK(text && strcmp(text, "{\"status\": \"starting\", \"failing_streak\": 0, \"checks\": 0, \"pid\": 42, "
                             "\"restart_count\": 2, \"exit_code\": null, \"started_at\": "
                             "\"2026-11-23T01:00:00.000000000Z\", \"checked_at\": \"\", \"output\": \"\"}\n") == 0);
  health_apply(&s, &cfg3, 1, 0);
  s.exit_code = 1;
  const char out[] = "say \"no\"\n\ttab\\\x01";
  memcpy(s.output, out, sizeof out - 1);
  s.output_len = sizeof out - 1;
  CHECK(health_write(path, &s, &err) == 0);
  text = slurp(path);
  CHECK(text && strstr(text, "\"exit_code\": 1,") && strstr(text, "\"failing_streak\": 1,"));
  CHECK(text && strstr(text, "\"output\": \"say \\\"no\\\"\\n\\ttab\\\\\\u0001\"}"));
  /* the largest output (4 KiB of control bytes, 6x escaped) still fits */
  memset(s.output, 1, HEALTH_OUTPUT_MAX);
  s.output_len = HEALTH_OUTPUT_MAX;
  CHECK(health_write(path, &s, &err) == 0);
  text = slurp(path);
  CHECK(text && strlen(text) > HEALTH_OUTPUT_MAX * 6);
  char tmp[160];
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  CHECK(access(tmp, F_OK) != 0); /* written aside, renamed into place */
  unlink(path);
  rmdir(dir);
}

int main(void) {
  test_rules();
  test_start_period();
  test_write();
  if (failures) {
    fprintf(stderr, "test_health: %d check(s) failed\n", failures);
    return 1;
  }
  printf("test_health: all checks passed\n");
  return 0;
}
