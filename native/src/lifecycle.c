/* start, kill, delete, state, list: the commands that act on an existing
 * container through its state directory. */
#include <dirent.h>
#include <errno.h>
#include <json-c/json.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "container.h"
#include "hooks.h"
#include "state.h"
#include "syscalls.h"
#include "util.h"

int container_start(const char *root, const char *id, pr_error *err) {
  struct pr_state st;
  if (state_load(root, id, &st, err) < 0) return -1;
  const char *status = state_status(root, &st);
  if (strcmp(status, "created") != 0)
    return pr_fail(err, 0, "cannot start container \"%s\": it is %s, not created", id, status);
  cleanup_free char *path = xasprintf("%s/%s/start.sock", root, id);
  struct sockaddr_un addr;
  cleanup_close int dirfd = -1;
  if (unix_addr(path, &addr, &dirfd, err) < 0) return pr_prefix(err, "cannot start container \"%s\"", id);
  cleanup_close int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0)
    return pr_fail(err, errno, "cannot start container \"%s\"", id);
  /* Removing the socket is what turns the status to "running". */
  unlink(path);
  if (container_read_start_result(fd, err) < 0) return -1;
  if (st.hooks[HOOK_POSTSTART].n) {
    pr_error e = {0};
    cleanup_free char *s = state_oci_json(&st, "running");
    if (hooks_run(&st.hooks[HOOK_POSTSTART], HOOK_POSTSTART, s, &e) < 0)
      pr_warn("%s", e.msg);
  }
  return 0;
}

static int signal_pid(pid_t pid, int sig) {
  int pidfd = sys_pidfd_open(pid, 0);
  if (pidfd >= 0) {
    int r = sys_pidfd_send_signal(pidfd, sig);
    int e = errno;
    close(pidfd);
    errno = e;
    if (r == 0 || errno != ENOSYS) return r;
  }
  return kill(pid, sig);
}

/* The init is pid 1 of its innermost pid namespace, i.e. the container has a pid
 * namespace of its own (not the host's, not a pod's it joined). */
static bool init_owns_pid_ns(pid_t pid) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/status", pid);
  cleanup_free char *s = NULL;
  if (read_file(path, &s, NULL, NULL) < 0) return true;
  char *line = strstr(s, "\nNSpid:");
  if (!line) return true;
  char *end = strchr(line + 1, '\n'), *last = NULL;
  if (end) *end = '\0';
  for (char *t = line + 8; (t = strpbrk(t, "0123456789")) != NULL; t += strspn(t, "0123456789")) last = t;
  return last && atoi(last) == 1;
}

/* Every process in the container's cgroup.  None left (or no cgroup any more) is no
 * error: that is what a stopped container looks like. */
static int signal_cgroup(struct pr_state *st, int sig, pr_error *err) {
  cleanup_free pid_t *pids = NULL;
  size_t n;
  pr_error e = {0};
  if (cgroup_pids(&st->cg, &pids, &n, &e) < 0) {
    if (e.errnum == ENOENT) return 0;
    *err = e;
    return -1;
  }
  for (size_t i = 0; i < n; i++) kill(pids[i], sig);
  return 0;
}

/* Mirrors runc (kill.go, libcontainer Container.Signal): without --all the init is
 * signalled, and a stopped container is "container not running" (the words containerd's
 * shim looks for to take it as already gone); a SIGKILL reaches every process of the
 * cgroup when the container shares a pid namespace, where the init's death takes
 * nobody along.  --all signals the whole cgroup and succeeds when nothing is left:
 * containerd's shim sends `kill --all ID KILL` after the init exited, for containers in
 * a pod's pid namespace, and a failure there fails StopContainer and RemovePodSandbox. */
int container_kill(const char *root, const char *id, int sig, bool all, pr_error *err) {
  struct pr_state st;
  if (state_load(root, id, &st, err) < 0) return -1;
  const char *status = state_status(root, &st);
  bool stopped = strcmp(status, "stopped") == 0;
  if (all || (sig == SIGKILL && !stopped && !init_owns_pid_ns(st.pid))) {
    if (!stopped) signal_pid(st.pid, sig);
    if (signal_cgroup(&st, sig, err) < 0) return pr_prefix(err, "signalling the processes of container \"%s\"", id);
  } else {
    if (stopped) return pr_fail(err, 0, "cannot signal container \"%s\": container not running", id);
    if (signal_pid(st.pid, sig) < 0) return pr_fail(err, errno, "sending signal %d to container \"%s\"", sig, id);
  }
  /* v1 frozen tasks act on a SIGKILL only once thawed (runc thaws too) */
  if (sig == SIGKILL && strcmp(status, "paused") == 0) cgroup_freeze(&st.cg, false, NULL);
  return 0;
}

static void wait_gone(pid_t pid, unsigned long long start) {
  int pidfd = sys_pidfd_open(pid, 0);
  for (int i = 0; i < 2000; i++) {
    unsigned long long s;
    char state;
    if (proc_stat(pid, &s, &state) < 0 || s != start || state == 'Z' || state == 'X') break;
    struct timespec ts = {0, 2 * 1000 * 1000};
    nanosleep(&ts, NULL);
  }
  if (pidfd >= 0) close(pidfd);
}

int container_delete(const char *root, const char *id, bool force, pr_error *err) {
  struct pr_state st;
  cleanup_free char *dir = state_dir_path(root, id);
  if (state_load(root, id, &st, err) < 0) {
    /* As runc (delete.go): with --force, a container that does not exist is deleted
     * already (containerd's shim follows a delete with delete --force), and a state
     * dir without a readable state.json, debris of a crash, goes too. */
    if (!force || state_check_id(id, NULL) < 0) return -1;
    if (access(dir, F_OK) == 0) state_dir_remove(dir);
    return 0;
  }
  const char *status = state_status(root, &st);
  bool paused = strcmp(status, "paused") == 0;
  if ((strcmp(status, "running") == 0 || paused) && !force)
    return pr_fail(err, 0, "cannot delete container \"%s\" that is %s: stop it first or use --force", id, status);
  if (strcmp(status, "stopped") != 0) {
    signal_pid(st.pid, SIGKILL);
    /* v1 frozen tasks cannot act on the SIGKILL until thawed. */
    if (paused) cgroup_freeze(&st.cg, false, NULL);
  }
  /* Processes that left the pid namespace, or outlived an init that shared one, are
   * still in the cgroup: --force kills them even once the init is gone (runc too). */
  if (st.cg.n_leaves && (force || strcmp(status, "stopped") != 0)) {
    cleanup_free pid_t *pids = NULL;
    size_t n;
    if (cgroup_pids(&st.cg, &pids, &n, NULL) == 0)
      for (size_t i = 0; i < n; i++) kill(pids[i], SIGKILL);
  }
  if (strcmp(status, "stopped") != 0) wait_gone(st.pid, st.start_time);
  container_release(&st, dir);
  return 0;
}

int container_state(const char *root, const char *id, char **json, pr_error *err) {
  struct pr_state st;
  if (state_load(root, id, &st, err) < 0) return -1;
  *json = state_oci_json_ext(&st, state_status(root, &st), true);
  return 0;
}

int container_list(const char *root, bool json_format, char **out, pr_error *err) {
  json_object *arr = json_object_new_array();
  DIR *d = opendir(root);
  if (!d && errno != ENOENT) {
    json_object_put(arr);
    return pr_fail(err, errno, "--root %s", root);
  }
  size_t cap = 256, len = 0;
  char *text = xmalloc(cap);
  len = (size_t)snprintf(text, cap, "%-20s %-8s %-10s %-40s %s\n", "ID", "PID", "STATUS", "BUNDLE", "CREATED");
  for (struct dirent *e; d && (e = readdir(d)) != NULL;) {
    struct pr_state st;
    if (e->d_name[0] == '.' || state_load(root, e->d_name, &st, NULL) < 0) continue;
    const char *status = state_status(root, &st);
    cleanup_free char *one = state_oci_json(&st, status);
    json_object_array_add(arr, json_tokener_parse(one));
    char line[4096];
    int n = snprintf(line, sizeof line, "%-20s %-8d %-10s %-40s %s\n", st.id, strcmp(status, "stopped") ? st.pid : 0,
                     status, st.bundle, st.created);
    while (len + (size_t)n + 1 > cap) text = xrealloc(text, cap *= 2);
    memcpy(text + len, line, (size_t)n + 1);
    len += (size_t)n;
  }
  if (d) closedir(d);
  if (json_format) {
    free(text);
    text = xstrdup(json_object_to_json_string_ext(arr, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
    text = xrealloc(text, strlen(text) + 2);
    strcat(text, "\n");
  }
  json_object_put(arr);
  *out = text;
  return 0;
}

int container_pause(const char *root, const char *id, bool pause, pr_error *err) {
  struct pr_state st;
  if (state_load(root, id, &st, err) < 0) return -1;
  const char *status = state_status(root, &st);
  const char *need = pause ? "running" : "paused";
  if (strcmp(status, need) != 0)
    return pr_fail(err, 0, "cannot %s container \"%s\": it is %s, not %s", pause ? "pause" : "resume", id, status, need);
  return cgroup_freeze(&st.cg, pause, err);
}

int container_ps(const char *root, const char *id, char **out, pr_error *err) {
  struct pr_state st;
  if (state_load(root, id, &st, err) < 0) return -1;
  cleanup_free pid_t *pids = NULL;
  size_t n;
  if (cgroup_pids(&st.cg, &pids, &n, err) < 0) return -1;
  json_object *a = json_object_new_array();
  for (size_t i = 0; i < n; i++) json_object_array_add(a, json_object_new_int(pids[i]));
  *out = xasprintf("%s\n", json_object_to_json_string_ext(a, JSON_C_TO_STRING_PLAIN));
  json_object_put(a);
  return 0;
}

int container_update(const char *root, const char *id, const char *resources_json, pr_error *err) {
  struct pr_state st;
  if (state_load(root, id, &st, err) < 0) return -1;
  const char *status = state_status(root, &st);
  if (strcmp(status, "stopped") == 0) return pr_fail(err, 0, "cannot update container \"%s\": it is stopped", id);
  if (!st.cg.drv) return pr_fail(err, 0, "container \"%s\" has no cgroup to update", id);
  json_tokener *tok = json_tokener_new();
  json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
  json_object *o = json_tokener_parse_ex(tok, resources_json, (int)strlen(resources_json));
  bool ok = o && json_tokener_get_error(tok) == json_tokener_success && json_object_is_type(o, json_type_object);
  json_tokener_free(tok);
  if (!ok) {
    if (o) json_object_put(o);
    return pr_fail(err, 0, "update: the resources must be a JSON object (linux.resources of the spec)");
  }
  /* Same parser and driver as create; devices are only set at create, like
   * runc, so the rule list is dropped here. */
  struct pr_config tmp = {0};
  int r = config_parse_resources(&tmp, o, err);
  json_object_put(o);
  if (r < 0) return pr_prefix(err, "update");
  tmp.resources.n_dev_rules = 0;
  tmp.resources.has_devices = false;
  struct pr_resources res = tmp.resources;
  for (size_t i = 0; i < res.n; i++)
    if (strstr(res.v[i].field, ".devices")) res.v[i].v1_file = res.v[i].v2_file = NULL;
  return st.cg.drv->update ? st.cg.drv->update(&st.cg, &res, err) : st.cg.drv->apply(&st.cg, &res, err);
}
