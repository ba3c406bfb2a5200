/* Parser tests: no root, no namespaces, only config.c & co turning JSON into
 * the operation list (`make -C native check`). */
#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../src/config.h"
#include "../src/util.h"

static char dir[] = "/tmp/prt-config-test-XXXXXX";
static int failures;

#define CHECK(cond)                                                        \
  do {                                                                     \
    if (!(cond)) {                                                         \
      fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
      failures++;                                                          \
    }                                                                      \
  } while (0)

static struct pr_config *load(const char *json, pr_error *err) {
  cleanup_free char *p = xasprintf("%s/config.json", dir);
  write_file(p, json, strlen(json), NULL);
  struct pr_config *c = NULL;
  memset(err, 0, sizeof(*err));
  return config_load(dir, &c, err) < 0 ? NULL : c;
}

static void expect_error(const char *json, const char *msg) {
  pr_error err;
  struct pr_config *c = load(json, &err);
  CHECK(c == NULL);
  if (strcmp(err.msg, msg) != 0) {
    fprintf(stderr, "want: %s\n got: %s\n", msg, err.msg);
    failures++;
  }
}

#define BASE "\"ociVersion\": \"1.0.2\", \"root\": {\"path\": \"rootfs\"}, \"process\": {\"args\": [\"true\"]}"

int main(void) {
  if (!mkdtemp(dir)) return 2;
  cleanup_free char *rootfs = xasprintf("%s/rootfs", dir);
  mkdir(rootfs, 0755);

  /* errors name the field */
  expect_error("{\"ociVersion\": \"1.0.2\", \"process\": {\"args\": [\"true\"]}}",
               "config.json: root: required field is missing");
  expect_error("{" BASE ", \"linux\": {\"namespaces\": [{\"type\": \"pid\"}, {\"type\": \"foo\"}]}}",
               "config.json: linux.namespaces[1].type: unknown namespace type \"foo\"");
  expect_error("{\"ociVersion\": \"2.0\", \"root\": {\"path\": \"rootfs\"}}",
               "config.json: ociVersion: unsupported version \"2.0\" (this runtime accepts 1.x)");
  expect_error("{" BASE ", \"process\": {\"args\": []}}",
               "config.json: process.args: must contain at least one element");
  expect_error("{" BASE ", \"linux\": {\"resources\": {\"cpu\": {\"shares\": 1}}}}",
               "config.json: linux.resources.cpu.shares: 1 is outside 2..262144");
  expect_error("{" BASE ", \"hostname\": \"x\"}",
               "config.json: hostname: setting a hostname needs a new uts namespace in linux.namespaces");
  expect_error("{" BASE ", \"mounts\": [{\"destination\": \"/x\", \"type\": \"bind\"}]}",
               "config.json: mounts[0].source: a bind mount needs a source");

  /* the operation list: mounts, devices, links, hooks, pivot, sysctl, masks, read-only, hostname */
  pr_error err;
  struct pr_config *c = load(
      "{" BASE ", \"hostname\": \"h\", \"root\": {\"path\": \"rootfs\", \"readonly\": true},"
      " \"mounts\": [{\"destination\": \"/proc\", \"type\": \"proc\", \"source\": \"proc\"},"
      "              {\"destination\": \"/d\", \"type\": \"bind\", \"source\": \"data\", \"options\": [\"rbind\", \"ro\", \"rslave\"]}],"
      " \"linux\": {\"namespaces\": [{\"type\": \"uts\"}, {\"type\": \"mount\"}, {\"type\": \"ipc\"}],"
      "   \"sysctl\": {\"kernel.shmmax\": \"1\"}, \"maskedPaths\": [\"/proc/kcore\"], \"readonlyPaths\": [\"/proc/sys\"],"
      "   \"resources\": {\"cpu\": {\"shares\": 1024, \"quota\": 50000}, \"memory\": {\"limit\": 1048576, \"swap\": -1}}}}",
      &err);
  if (!c) {
    fprintf(stderr, "unexpected: %s\n", err.msg);
    return 1;
  }
  enum pr_op_kind want[] = {OP_MOUNT, OP_MOUNT, OP_MKDEV, OP_MKDEV, OP_MKDEV, OP_MKDEV, OP_MKDEV, OP_MKDEV,
                            OP_SYMLINK, OP_SYMLINK, OP_SYMLINK, OP_SYMLINK, OP_HOOKS, OP_PIVOT, OP_SYSCTL,
                            OP_MASK, OP_READONLY, OP_ROOT_RO, OP_HOSTNAME};
  CHECK(c->n_ops == sizeof(want) / sizeof(want[0]));
  for (size_t i = 0; i < c->n_ops && i < sizeof(want) / sizeof(want[0]); i++) CHECK(c->ops[i].kind == want[i]);
  const struct pr_op *bind = &c->ops[1];
  CHECK(bind->c == NULL); /* a bind mount has no fs type */
  cleanup_free char *src = xasprintf("%s/data", dir);
  CHECK(strcmp(bind->a, src) == 0); /* relative sources are relative to the bundle */
  CHECK((bind->flags & (MS_BIND | MS_REC)) == (MS_BIND | MS_REC));
  CHECK(bind->remount_flags == MS_RDONLY);
  CHECK(bind->propagation == (MS_SLAVE | MS_REC));
  CHECK(strcmp(c->ops[14].a, "/proc/sys/kernel/shmmax") == 0);

  /* resources converted for both hierarchies (runc's shares → weight formula) */
  int seen = 0;
  for (size_t i = 0; i < c->resources.n; i++) {
    const struct pr_cg_setting *s = &c->resources.v[i];
    if (s->v2_file && strcmp(s->v2_file, "cpu.weight") == 0) {
      CHECK(strcmp(s->v1_value, "1024") == 0 && strcmp(s->v2_value, "39") == 0);
      seen++;
    }
    if (s->v2_file && strcmp(s->v2_file, "cpu.max") == 0) {
      CHECK(strcmp(s->v2_value, "50000 100000") == 0);
      seen++;
    }
    if (s->v1_file && strcmp(s->v1_file, "memory.memsw.limit_in_bytes") == 0) {
      CHECK(strcmp(s->v2_value, "max") == 0);
      seen++;
    }
  }
  CHECK(seen == 3);

  /* an empty hostname is set in a new UTS namespace, asks for nothing in another one */
  static const struct { const char *ns; bool op; } empty_host[] = {
      {"[{\"type\": \"uts\"}]", true}, {"[{\"type\": \"uts\", \"path\": \"/proc/1/ns/uts\"}]", false}, {"[]", false}};
  for (size_t k = 0; k < sizeof empty_host / sizeof empty_host[0]; k++) {
    cleanup_free char *json = xasprintf("{" BASE ", \"hostname\": \"\", \"linux\": {\"namespaces\": %s}}", empty_host[k].ns);
    struct pr_config *e = load(json, &err);
    CHECK(e != NULL);
    bool has = false;
    for (size_t i = 0; e && i < e->n_ops; i++)
      if (e->ops[i].kind == OP_HOSTNAME) has = strcmp(e->ops[i].a, "") == 0;
    CHECK(has == empty_host[k].op);
  }

  /* path_clean never leaves the root */
  cleanup_free char *p1 = path_clean("/a/../../b/./c//");
  CHECK(strcmp(p1, "/b/c") == 0);
  cleanup_free char *p2 = path_clean("../..");
  CHECK(strcmp(p2, "/") == 0);

  cleanup_free char *cfg = xasprintf("%s/config.json", dir);
  unlink(cfg);
  rmdir(rootfs);
  rmdir(dir);
  if (failures) fprintf(stderr, "%d check(s) failed\n", failures);
  else printf("test_config: all checks passed\n");
  return failures ? 1 : 0;
}
