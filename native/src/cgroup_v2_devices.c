/* The devices controller of cgroup v2 is an eBPF program of type
 * BPF_PROG_TYPE_CGROUP_DEVICE attached to the cgroup (kernel
 * Documentation/admin-guide/cgroup-v2.rst "Device controller").  The rules
 * keep v1 semantics: start from deny-all, later rules override earlier ones.
 * The program checks them last-to-first and returns at the first match,
 * which is the same thing (runc's devicefilter compiles it the same way). */
#include <errno.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cgroups.h"
#include "syscalls.h"
#include "util.h"

struct rule {
  bool allow;
  char type; /* a, b, c */
  int64_t major, minor;
  unsigned access; /* BPF_DEVCG_ACC_* bits */
};

static unsigned access_bits(const char *s) {
  unsigned a = 0;
  for (; *s; s++)
    a |= *s == 'r' ? BPF_DEVCG_ACC_READ : *s == 'w' ? BPF_DEVCG_ACC_WRITE : *s == 'm' ? BPF_DEVCG_ACC_MKNOD : 0;
  return a;
}

#define INSN(c, d, s, o, i) ((struct bpf_insn){.code = (c), .dst_reg = (d), .src_reg = (s), .off = (o), .imm = (i)})

static size_t emit_rule(struct bpf_insn *p, const struct rule *r) {
  size_t n = 0;
  size_t jumps[4];
  size_t nj = 0;
  const unsigned all = BPF_DEVCG_ACC_READ | BPF_DEVCG_ACC_WRITE | BPF_DEVCG_ACC_MKNOD;
  if (r->type != 'a') {
    jumps[nj++] = n;
    p[n++] = INSN(BPF_JMP | BPF_JNE | BPF_K, BPF_REG_3, 0, 0,
                  r->type == 'b' ? BPF_DEVCG_DEV_BLOCK : BPF_DEVCG_DEV_CHAR);
  }
  if ((r->access & all) != all) {
    /* every requested access bit must be in the rule */
    p[n++] = INSN(BPF_ALU64 | BPF_MOV | BPF_X, BPF_REG_7, BPF_REG_4, 0, 0);
    p[n++] = INSN(BPF_ALU64 | BPF_AND | BPF_K, BPF_REG_7, 0, 0, (int32_t)(~r->access & all));
    jumps[nj++] = n;
    p[n++] = INSN(BPF_JMP | BPF_JNE | BPF_K, BPF_REG_7, 0, 0, 0);
  }
  if (r->type != 'a' && r->major >= 0) {
    jumps[nj++] = n;
    p[n++] = INSN(BPF_JMP | BPF_JNE | BPF_K, BPF_REG_5, 0, 0, (int32_t)r->major);
  }
  if (r->type != 'a' && r->minor >= 0) {
    jumps[nj++] = n;
    p[n++] = INSN(BPF_JMP | BPF_JNE | BPF_K, BPF_REG_6, 0, 0, (int32_t)r->minor);
  }
  p[n++] = INSN(BPF_ALU64 | BPF_MOV | BPF_K, BPF_REG_0, 0, 0, r->allow ? 1 : 0);
  p[n++] = INSN(BPF_JMP | BPF_EXIT, 0, 0, 0, 0);
  for (size_t j = 0; j < nj; j++) p[jumps[j]].off = (int16_t)(n - jumps[j] - 1);
  return n;
}

int cg2_devices_attach(const char *leaf, const struct pr_resources *res, pr_error *err) {
  /* keep in step with default_device_rules (devices.c) */
  static const struct { char type; int64_t maj, min; const char *acc; } defaults[] = {
      {'c', -1, -1, "m"},   {'b', -1, -1, "m"},   {'c', 1, 3, "rwm"}, {'c', 1, 5, "rwm"},
      {'c', 1, 7, "rwm"},   {'c', 1, 8, "rwm"},   {'c', 1, 9, "rwm"}, {'c', 5, 0, "rwm"},
      {'c', 5, 1, "rwm"},   {'c', 5, 2, "rwm"},   {'c', 136, -1, "rwm"}};
  size_t nd = sizeof(defaults) / sizeof(defaults[0]);
  size_t nr = res->n_dev_rules + nd;
  cleanup_free struct rule *rules = xcalloc(nr, sizeof(*rules));
  for (size_t i = 0; i < res->n_dev_rules; i++) {
    const struct pr_dev_rule *d = &res->dev_rules[i];
    rules[i] = (struct rule){d->allow, d->type, d->major, d->minor, access_bits(d->access)};
  }
  for (size_t i = 0; i < nd; i++)
    rules[res->n_dev_rules + i] = (struct rule){true, defaults[i].type, defaults[i].maj, defaults[i].min,
                                                access_bits(defaults[i].acc)};
  cleanup_free struct bpf_insn *prog = xcalloc(8 + nr * 10, sizeof(*prog));
  size_t n = 0;
  /* r2 = access_type (access << 16 | type), r3 = type, r4 = access, r5 = major, r6 = minor */
  prog[n++] = INSN(BPF_LDX | BPF_MEM | BPF_W, BPF_REG_2, BPF_REG_1, offsetof(struct bpf_cgroup_dev_ctx, access_type), 0);
  prog[n++] = INSN(BPF_ALU64 | BPF_MOV | BPF_X, BPF_REG_3, BPF_REG_2, 0, 0);
  prog[n++] = INSN(BPF_ALU64 | BPF_AND | BPF_K, BPF_REG_3, 0, 0, 0xffff);
  prog[n++] = INSN(BPF_ALU64 | BPF_MOV | BPF_X, BPF_REG_4, BPF_REG_2, 0, 0);
  prog[n++] = INSN(BPF_ALU64 | BPF_RSH | BPF_K, BPF_REG_4, 0, 0, 16);
  prog[n++] = INSN(BPF_LDX | BPF_MEM | BPF_W, BPF_REG_5, BPF_REG_1, offsetof(struct bpf_cgroup_dev_ctx, major), 0);
  prog[n++] = INSN(BPF_LDX | BPF_MEM | BPF_W, BPF_REG_6, BPF_REG_1, offsetof(struct bpf_cgroup_dev_ctx, minor), 0);
  const unsigned all = BPF_DEVCG_ACC_READ | BPF_DEVCG_ACC_WRITE | BPF_DEVCG_ACC_MKNOD;
  bool final = false;
  for (size_t i = nr; i-- > 0 && !final;) {
    n += emit_rule(prog + n, &rules[i]);
    /* A rule matching everything ends the program: the verifier rejects
     * unreachable instructions after it. */
    final = rules[i].type == 'a' && (rules[i].access & all) == all;
  }
  if (!final) {
    prog[n++] = INSN(BPF_ALU64 | BPF_MOV | BPF_K, BPF_REG_0, 0, 0, 0); /* default: deny */
    prog[n++] = INSN(BPF_JMP | BPF_EXIT, 0, 0, 0, 0);
  }

  union bpf_attr attr;
  memset(&attr, 0, sizeof attr);
  attr.prog_type = BPF_PROG_TYPE_CGROUP_DEVICE;
  attr.insns = (uint64_t)(uintptr_t)prog;
  attr.insn_cnt = (uint32_t)n;
  attr.license = (uint64_t)(uintptr_t) "GPL";
  char log[16384] = "";
  cleanup_close int pfd = sys_bpf(BPF_PROG_LOAD, &attr, sizeof attr);
  if (pfd < 0) {
    int e = errno;
    /* Again with the verifier log, only to explain the refusal. */
    attr.log_buf = (uint64_t)(uintptr_t)log;
    attr.log_size = sizeof log;
    attr.log_level = 1;
    (void)sys_bpf(BPF_PROG_LOAD, &attr, sizeof attr);
    /* Keep the verifier's last line: it says what it refused. */
    size_t l = strlen(log);
    while (l && log[l - 1] == '\n') log[--l] = '\0';
    char *last = strrchr(log, '\n');
    return pr_fail(err, e, "linux.resources.devices: loading the cgroup v2 device filter (%s)", last ? last + 1 : log);
  }
  cleanup_close int cgfd = open(leaf, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (cgfd < 0) return pr_fail(err, errno, "linux.resources.devices: open %s", leaf);
  memset(&attr, 0, sizeof attr);
  attr.target_fd = (uint32_t)cgfd;
  attr.attach_bpf_fd = (uint32_t)pfd;
  attr.attach_type = BPF_CGROUP_DEVICE;
  attr.attach_flags = BPF_F_ALLOW_MULTI;
  if (sys_bpf(BPF_PROG_ATTACH, &attr, sizeof attr) < 0)
    return pr_fail(err, errno, "linux.resources.devices: attaching the device filter to %s", leaf);
  return 0;
}
