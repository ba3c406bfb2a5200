/* The parsed bundle: config.json is read completely into these structures and
 * an ordered list of setup operations before anything touches the system (the
 * bubblewrap SetupOp idea).  A bad field is reported with its JSON path. */
#ifndef PR_CONFIG_H
#define PR_CONFIG_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "error.h"

enum pr_ns { NS_MOUNT, NS_PID, NS_UTS, NS_IPC, NS_NET, NS_USER, NS_CGROUP, NS_TIME, NS__COUNT };

struct pr_ns_spec {
  bool present;   /* listed in linux.namespaces */
  char *path;     /* join this one instead of creating */
};

struct pr_idmap {
  uint32_t container_id, host_id, size;
};

struct pr_hook {
  char *path;
  char **args;  /* NULL-terminated; args[0] defaults to path */
  char **env;   /* NULL-terminated */
  int timeout;  /* seconds, 0 = none */
};

struct pr_hooks_list {
  struct pr_hook *v;
  size_t n;
};

enum pr_hook_kind { HOOK_CREATE_RUNTIME, HOOK_CREATE_CONTAINER, HOOK_START_CONTAINER,
                    HOOK_POSTSTART, HOOK_POSTSTOP, HOOK__COUNT };

struct pr_rlimit {
  int resource;
  const char *name;
  uint64_t soft, hard;
};

/* Capability sets as 64-bit masks. */
struct pr_caps {
  bool given;
  uint64_t bounding, effective, inheritable, permitted, ambient;
};

struct pr_process {
  bool terminal;
  unsigned console_height, console_width;
  uint32_t uid, gid;
  uint32_t *additional_gids;
  size_t n_additional_gids;
  bool has_umask;
  mode_t umask;
  char **args;
  char **env;
  char *cwd;
  struct pr_caps caps;
  struct pr_rlimit *rlimits;
  size_t n_rlimits;
  bool no_new_privileges;
  bool has_oom_score_adj;
  int oom_score_adj;
  int preserve_fds; /* from the command line, not config.json */
  long personality; /* linux.personality, -1 = leave as is */
};

struct pr_seccomp_arg {
  unsigned index;
  uint64_t value, value_two;
  int op;  /* enum scmp_compare */
};
struct pr_seccomp_rule {
  int *syscalls;  /* resolved numbers; unknown names dropped like runc does */
  size_t n_syscalls;
  uint32_t action;
  struct pr_seccomp_arg *args;
  size_t n_args;
};
struct pr_seccomp {
  uint32_t default_action;
  uint32_t *arches;
  size_t n_arches;
  struct pr_seccomp_rule *rules;
  size_t n_rules;
  unsigned flags; /* SECCOMP_FILTER_FLAG_* bits we honour */
};

/* One cgroup resource setting, already converted to (file, value) for the
 * v1 and v2 hierarchies so the drivers stay dumb. */
struct pr_cg_setting {
  const char *field;        /* JSON path for error messages */
  const char *v1_ctrl;      /* e.g. "memory"; NULL if no v1 equivalent */
  const char *v1_file;
  char *v1_value;
  const char *v2_ctrl;      /* controller that must be enabled, NULL if none */
  const char *v2_file;      /* NULL if no v2 equivalent */
  char *v2_value;
};

struct pr_dev_rule {  /* linux.resources.devices, v1 devices cgroup */
  bool allow;
  char type;          /* a, c, b */
  int64_t major, minor; /* -1 = wildcard */
  char access[4];
};

struct pr_resources {
  struct pr_cg_setting *v;
  size_t n;
  struct pr_dev_rule *dev_rules;
  size_t n_dev_rules;
  bool has_devices;
};

/* Setup operations executed by the container's init, in order. */
enum pr_op_kind {
  OP_MOUNT,       /* mounts[] entry (before pivot_root, target relative to rootfs) */
  OP_CGROUP_MOUNT,/* mount of type "cgroup" */
  OP_MKDEV,       /* device node */
  OP_SYMLINK,     /* /dev/fd etc. */
  OP_HOOKS,       /* createRuntime (parent) + createContainer hooks */
  OP_PIVOT,
  OP_PROPAGATION, /* linux.rootfsPropagation */
  OP_MASK,
  OP_READONLY,
  OP_ROOT_RO,
  OP_SYSCTL,
  OP_HOSTNAME,
  OP_DOMAINNAME,
};

struct pr_op {
  enum pr_op_kind kind;
  const char *field;   /* owned copy of JSON path, for errors */
  char *a, *b, *c;     /* meaning depends on kind (source/dest/type, key/value...) */
  unsigned long flags; /* mount flags */
  unsigned long propagation;
  unsigned long remount_flags; /* flags needing MS_REMOUNT after a bind */
  char *data;
  /* device */
  char dev_type;
  uint64_t major, minor;
  mode_t mode;
  uint32_t uid, gid;
  bool optional;      /* default device: silently skipped if it cannot be made */
};

struct pr_config {
  char *oci_version;
  char *bundle;      /* absolute */
  char *rootfs;      /* absolute */
  bool root_readonly;
  char *hostname;
  char *domainname;
  struct pr_process process;
  struct pr_ns_spec ns[NS__COUNT];
  struct pr_idmap *uid_map, *gid_map;
  size_t n_uid_map, n_gid_map;
  char *cgroups_path;
  struct pr_resources resources;
  struct pr_seccomp *seccomp;
  unsigned long rootfs_propagation;
  struct pr_hooks_list hooks[HOOK__COUNT];
  char *annotations_json; /* serialised object, "{}" when absent */
  char *hooks_json;       /* kept in the state for start/delete */
  char *process_json;     /* kept in the state: exec's defaults */
  char *seccomp_json;     /* kept in the state: exec applies it too */
  struct pr_op *ops;
  size_t n_ops;
  bool has_dev_pts;       /* a devpts mount at /dev/pts exists: /dev/ptmx -> pts/ptmx */
  char time_offsets[128]; /* linux.timeOffsets as /proc/PID/timens_offsets lines */
};

/* Reads <bundle>/config.json.  Errors look like
 * `config.json: linux.namespaces[2].type: unknown namespace type "foo"`. */
int config_load(const char *bundle, struct pr_config **out, pr_error *err);
/* Parses a process object (for `exec --process`). */
int config_parse_process_file(const char *path, struct pr_process *p, pr_error *err);
void config_free(struct pr_config *c);

const char *ns_name(enum pr_ns ns);
int ns_clone_flag(enum pr_ns ns);
const char *hook_kind_name(enum pr_hook_kind k);

/* internal, shared between config*.c */
struct json_object;
struct pr_op *config_add_op(struct pr_config *c, enum pr_op_kind kind, const char *field);
int config_parse_mounts(struct pr_config *c, struct json_object *mounts, pr_error *err);
int config_parse_linux(struct pr_config *c, struct json_object *linux_, pr_error *err);
int config_parse_resources(struct pr_config *c, struct json_object *res, pr_error *err);
int config_parse_seccomp(struct pr_config *c, struct json_object *sc, pr_error *err);
int config_parse_process(struct pr_process *p, struct json_object *proc, const char *field, pr_error *err);
int config_parse_hooks(struct pr_hooks_list *hl, struct json_object *hooks, pr_error *err);
int config_add_devices(struct pr_config *c, struct json_object *devs, pr_error *err);
int config_add_final_ops(struct pr_config *c, struct json_object *linux_, pr_error *err);
int parse_mount_options(struct json_object *opts, const char *field, unsigned long *flags,
                        unsigned long *clear, unsigned long *prop, char **data, bool *bind, bool *rec,
                        pr_error *err);
#endif
