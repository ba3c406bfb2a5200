/* Capabilities without libcap: the five sets are plain bitmasks applied with
 * prctl(2) and capset(2), in the order capabilities(7) requires: bounding
 * first (needs CAP_SETPCAP), then capset, then ambient (needs the cap in both
 * permitted and inheritable). */
#include "caps.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>

#include "syscalls.h"
#include "util.h"

static const char *names[] = {
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER",
    "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE", "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE", "CAP_SYS_RESOURCE", "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE", "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
};
#define N_NAMES ((int)(sizeof(names) / sizeof(names[0])))

int cap_from_name(const char *name) {
  for (int i = 0; i < N_NAMES; i++)
    if (strcasecmp(names[i], name) == 0) return i;
  return -1;
}

const char *cap_name(int cap) { return cap >= 0 && cap < N_NAMES ? names[cap] : "?"; }

int cap_last_cap(void) {
  static int last = -1;
  if (last < 0) {
    cleanup_free char *s = NULL;
    if (read_file("/proc/sys/kernel/cap_last_cap", &s, NULL, NULL) == 0) last = atoi(s);
    if (last <= 0 || last >= 64) last = N_NAMES - 1;
  }
  return last;
}

int caps_drop_bounding(const struct pr_caps *caps, pr_error *err) {
  for (int c = 0; c <= cap_last_cap(); c++) {
    if (caps->bounding & (1ULL << c)) continue;
    if (prctl(PR_CAPBSET_DROP, c, 0, 0, 0) < 0 && errno != EINVAL)
      return pr_fail(err, errno, "process.capabilities.bounding: dropping %s", cap_name(c));
  }
  return 0;
}

int caps_apply(const struct pr_caps *caps, pr_error *err) {
  struct __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
  struct __user_cap_data_struct d[2];
  memset(d, 0, sizeof(d));
  for (int i = 0; i < 2; i++) {
    d[i].effective = (uint32_t)(caps->effective >> (32 * i));
    d[i].permitted = (uint32_t)(caps->permitted >> (32 * i));
    d[i].inheritable = (uint32_t)(caps->inheritable >> (32 * i));
  }
  if (sys_capset(&h, d) < 0) return pr_fail(err, errno, "process.capabilities: capset");
  if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 && errno != EINVAL)
    return pr_fail(err, errno, "process.capabilities.ambient: clear");
  for (int c = 0; c <= cap_last_cap(); c++) {
    if (!(caps->ambient & (1ULL << c))) continue;
    /* The kernel refuses an ambient cap outside permitted∩inheritable; runc
     * only logs a warning for it (runc's default spec lists ambient caps
     * without inheritable ones), so skip it the same way. */
    if (!(caps->permitted & caps->inheritable & (1ULL << c))) continue;
    if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, c, 0, 0) < 0)
      return pr_fail(err, errno, "process.capabilities.ambient: raising %s (it must also be permitted and inheritable)",
                     cap_name(c));
  }
  return 0;
}
