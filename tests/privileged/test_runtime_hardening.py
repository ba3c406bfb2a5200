"""Attacks on the runtime itself, each performed for real against provision-runtime (and the
same bundle under runc where runc has the defence too): a setuid binary against
noNewPrivileges, a container overwriting the runtime binary through /proc/<pid>/exe
(CVE-2019-5736), and a symlink swapped into a volume while its mount is being made
(CVE-2021-30465).
"""
from __future__ import annotations

import os

import pytest

import runtime_helpers as h
from runtime_helpers import RT, RUNTIMES, bundle, runtime_bin  # noqa: F401  (fixtures are used by name)

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
