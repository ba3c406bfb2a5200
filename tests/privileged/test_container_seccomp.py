"""The default seccomp profile on real containers (busybox from the shared registry fixture):
calls Docker's profile refuses fail with EPERM while ordinary ones work, in the container's
process and in `exec`; `--security-opt seccomp=unconfined` lifts it; a profile file of the
user's applies; a bad profile path is one error line and creates nothing. Peer check: the
same config.json under runc refuses the same call."""
from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from tests.privileged.test_container import NOTHING, Env, env, images, wait_for  # noqa: F401 (fixtures)

pytestmark = [
    pytest.mark.privileged,
    pytest.mark.skipif(not all(shutil.which(t) for t in ("skopeo", "docker-registry", "nft", "mkfs.btrfs")),
                       reason="skopeo, docker-registry, nft and btrfs-progs are needed (scripts/install.sh)"),
]

USERNS = ["sh", "-c", "unshare -U true && echo unshared; echo ok"]


def run_attached(env: Env, *args: str):
    return env.provision("container", "run", "--rm", *args, check=False)


def test_default_profile_refuses_namespaces_and_keeps_ordinary_calls(env):
    out = run_attached(env, env.refs["busybox"], *USERNS)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "ok\n" and "Operation not permitted" in out.stderr
    # fork/exec, pipes, files and the allowed personality (PER_LINUX32) all work
    out = run_attached(env, env.refs["busybox"], "sh", "-c",
                       "echo a | tr a b > /tmp/f && cat /tmp/f && linux32 true && echo personality-ok")
    assert (out.returncode, out.stdout) == (0, "b\npersonality-ok\n"), out.stderr


def test_unconfined_lifts_it(env):
    out = run_attached(env, "--security-opt", "seccomp=unconfined", env.refs["busybox"], *USERNS)
    assert (out.returncode, out.stdout) == (0, "unshared\nok\n"), out.stderr


def test_exec_gets_the_containers_profile(env):
    env.run("--name", "confined", env.refs["busybox"], "sleep", "1000")
    out = env.provision("container", "exec", "confined", *USERNS, check=False)
    assert out.stdout == "ok\n" and "Operation not permitted" in out.stderr
    env.run("--name", "free", "--security-opt", "seccomp=unconfined", env.refs["busybox"], "sleep", "1000")
    assert env.provision("container", "exec", "free", *USERNS).stdout == "unshared\nok\n"
    spec = json.loads((env.root / "containers" / env.inspect("confined")["id"] / "bundle" / "config.json").read_text())
    assert spec["linux"]["seccomp"]["defaultAction"] == "SCMP_ACT_ALLOW"
    if shutil.which("runc"):
        peer_check_runc(env, spec)


def peer_check_runc(env: Env, spec: dict) -> None:
    """runc, given our config.json (with its own fresh namespaces), refuses the same call."""
    bundle = env.work / f"runc-{env.sfx}"
    bundle.mkdir()
    spec = json.loads(json.dumps(spec))
    spec["process"]["args"] = USERNS
    spec["linux"]["namespaces"] = [{"type": t} for t in ("pid", "ipc", "uts", "mount", "network")]
    spec["linux"]["cgroupsPath"] = f"/provisioner-peer/{env.sfx}"
    spec["mounts"] = [m for m in spec["mounts"] if m["type"] != "bind"]  # no resolv.conf/hosts of ours
    (bundle / "config.json").write_text(json.dumps(spec))
    state = env.work / f"runc-state-{env.sfx}"
    try:
        out = subprocess.run(["runc", "--root", str(state), "run", "--bundle", str(bundle), f"peer-{env.sfx}"],
                             capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        assert out.stdout == "ok\n" and "Operation not permitted" in out.stderr, (out.stdout, out.stderr)
    finally:
        subprocess.run(["runc", "--root", str(state), "delete", "--force", f"peer-{env.sfx}"], capture_output=True)
        shutil.rmtree(bundle, ignore_errors=True)


def test_a_profile_file_applies(env, tmp_path):
    prof = tmp_path / "no-mkdir.json"
    prof.write_text(json.dumps({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}]}))
    out = run_attached(env, "--security-opt", f"seccomp={prof}", env.refs["busybox"], "sh", "-c",
                       "mkdir /tmp/d; echo rc=$?; unshare -U true && echo unshared")
    assert "Permission denied" in out.stderr and out.stdout == "rc=1\nunshared\n", (out.stdout, out.stderr)


def test_bad_profile_is_one_line_and_creates_nothing(env, tmp_path):
    for arg, needle in ((f"seccomp={tmp_path}/missing.json", "missing.json: cannot read seccomp profile"),
                        (f"seccomp={tmp_path}/bad.json", "bad.json:2: seccomp profile: syscalls[0].action")):
        (tmp_path / "bad.json").write_text('{"defaultAction": "SCMP_ACT_ALLOW",\n "syscalls": [{"names": ["x"]}]}')
        out = env.provision("container", "run", "-d", "--name", "never", "--security-opt", arg,
                            env.refs["busybox"], "true", check=False)
        assert out.returncode == 2 and out.stdout == ""
        assert len(out.stderr.strip().splitlines()) == 1 and needle in out.stderr, out.stderr
        assert env.provision("container", "ps", "-a", "--json").stdout.strip() == "[]"
        assert env.leftovers() == NOTHING


def test_stack_security_opt(env, tmp_path):
    """`security_opt:` in a stack file: the default profile for one service, unconfined for the other."""
    stack = tmp_path / "stack.yml"
    script = "unshare -U true && echo unshared || echo refused; sleep 1000"
    stack.write_text(f"""\
name: sc{env.sfx}
services:
  confined:
    image: {env.refs['busybox']}
    command: ["sh", "-c", "{script}"]
  free:
    image: {env.refs['busybox']}
    command: ["sh", "-c", "{script}"]
    security_opt: [seccomp=unconfined]
""")
    try:
        env.provision("up", "-f", str(stack))
        logs = {s: lambda s=s: env.provision("container", "logs", f"sc{env.sfx}-{s}").stdout
                for s in ("confined", "free")}
        assert wait_for(lambda: "refused" in logs["confined"](), what="confined output")
        assert wait_for(lambda: "unshared" in logs["free"](), what="unconfined output")
    finally:
        env.provision("down", "-f", str(stack), check=False)
    assert env.leftovers() == NOTHING


PROBE_C = r"""#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/personality.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include <linux/sched.h>
static void report(const char *what, long r) { printf("%s=%s\n", what, r < 0 ? strerrorname_np(errno) : "ok"); }
static long do_clone(unsigned long flags) {
  long pid = syscall(SYS_clone, flags | SIGCHLD, 0, 0, 0, 0);
  if (pid == 0) _exit(0);
  if (pid > 0) waitpid((pid_t)pid, NULL, 0);
  return pid;
}
int main(void) {
  report("personality_query", syscall(SYS_personality, 0xffffffffUL));
  report("personality_linux32", syscall(SYS_personality, 0x8UL));
  syscall(SYS_personality, 0UL);
  report("personality_addr_no_randomize", syscall(SYS_personality, 0x0040000UL));
  syscall(SYS_personality, 0UL);
  report("clone_plain", do_clone(0));
  report("clone_newuser", do_clone(CLONE_NEWUSER));
  struct clone_args a; memset(&a, 0, sizeof a); a.exit_signal = SIGCHLD;
  long p = syscall(435, &a, sizeof a);
  if (p == 0) _exit(0);
  if (p > 0) waitpid((pid_t)p, NULL, 0);
  report("clone3", p);
  report("keyctl", syscall(SYS_keyctl, 0, -3, 0));
  return 0;
}
"""


@pytest.fixture(scope="module")
def probe(tmp_path_factory):
    """A static program making the raw calls busybox cannot (personality values, clone flags,
    clone3, keyctl), bind-mounted into the container."""
    if not shutil.which("gcc"):
        pytest.skip("gcc is needed to build the syscall probe")
    d = tmp_path_factory.mktemp("probe")
    (d / "probe.c").write_text(PROBE_C)
    out = subprocess.run(["gcc", "-static", "-O1", "-o", str(d / "probe"), str(d / "probe.c")], capture_output=True,
                         text=True)
    if out.returncode != 0:
        pytest.skip(f"cannot build a static probe here: {out.stderr.strip()[-200:]}")
    return d


def _probe(env: Env, probe, *opts: str) -> dict[str, str]:
    out = run_attached(env, *opts, "-v", f"{probe}:/probe:ro", env.refs["busybox"], "/probe/probe")
    assert out.returncode == 0, out.stderr
    return dict(line.split("=", 1) for line in out.stdout.split())


def test_argument_rules_in_the_kernel(env, probe):
    """The filter's argument comparisons as the kernel applies them (the unit tests emulate them)."""
    assert _probe(env, probe) == {
        "personality_query": "ok", "personality_linux32": "ok", "personality_addr_no_randomize": "EPERM",
        "clone_plain": "ok", "clone_newuser": "EPERM", "clone3": "ENOSYS", "keyctl": "EPERM"}
    free = _probe(env, probe, "--security-opt", "seccomp=unconfined")
    assert free["personality_addr_no_randomize"] == "ok" and free["clone_newuser"] == "ok" and free["clone3"] == "ok"
