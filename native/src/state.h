/* The state directory <root>/<id>: state.json plus start.sock while the
 * container is "created".  Status is derived, never stored: a dead (or
 * recycled) pid means stopped, the socket's presence means created. */
#ifndef PR_STATE_H
#define PR_STATE_H
#include <stdbool.h>
#include <sys/types.h>

#include "cgroups.h"
#include "config.h"
#include "error.h"

struct pr_state {
  char *id, *bundle, *rootfs, *created, *oci_version;
  char *annotations_json, *hooks_json;
  pid_t pid;
  unsigned long long start_time;
  struct pr_cgroup cg;
  struct pr_hooks_list hooks[HOOK__COUNT];
  /* namespaces the container owns (for exec); paths joined are recorded too */
  char *config_process_json; /* the config's process object, for exec defaults */
  char *seccomp_json;        /* linux.seccomp, for exec */
  bool userns;               /* the container has its own user namespace */
};

int state_check_id(const char *id, pr_error *err);
int state_dir_create(const char *root, const char *id, char **dir, pr_error *err);
char *state_dir_path(const char *root, const char *id);
int state_write(const char *dir, const struct pr_state *st, pr_error *err);
int state_load(const char *root, const char *id, struct pr_state *st, pr_error *err);
const char *state_status(const char *root, const struct pr_state *st);
/* The OCI state object; status may be overridden (hooks use "creating"). */
char *state_oci_json(const struct pr_state *st, const char *status);
/* pretty: indented, for `state` output (runc prints it indented too). */
char *state_oci_json_ext(const struct pr_state *st, const char *status, bool pretty);
void state_dir_remove(const char *dir);
/* starttime (field 22 of /proc/pid/stat) and the state letter. */
int proc_stat(pid_t pid, unsigned long long *start, char *state);
#endif
