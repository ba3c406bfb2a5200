"""containers/seccomp.py: the default profile in config.json, `--security-opt` parsing, user profiles
(OCI and Docker forms) checked and converted, and what the filter decides for given calls (a
small evaluator of the rules, with seccomp's semantics: rules of one syscall are ORed, the
comparisons inside one rule are ANDed)."""
from __future__ import annotations

import errno
import json

import pytest

from provisioner.cli.main import main
from provisioner.containers import bundle
from provisioner.runspec import seccomp
from provisioner.containers.bundle import BundleInputs, RunOptions, build_config
from provisioner.containers.lifecycle import Manager
from provisioner.runspec.request import RunRequest, from_flags
from provisioner.network import NetworkConfig
from provisioner.errors import ConfigError
from provisioner.testing import FakeRunner

CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
# glibc's pthread_create flags, and fork()'s
PTHREAD_FLAGS = 0x3D0F00
FORK_FLAGS = 0x01200011


def _cmp(op: str, arg: int, value: int, two: int) -> bool:
    return {"SCMP_CMP_EQ": arg == value, "SCMP_CMP_NE": arg != value, "SCMP_CMP_LT": arg < value,
            "SCMP_CMP_LE": arg <= value, "SCMP_CMP_GT": arg > value, "SCMP_CMP_GE": arg >= value,
            "SCMP_CMP_MASKED_EQ": (arg & value) == two}[op]


def decide(profile: dict, name: str, *args: int) -> int | None:
    """None: allowed; else the errno the filter returns."""
    for rule in profile["syscalls"]:
        if name not in rule["names"]:
            continue
        if all(_cmp(a["op"], args[a["index"]] if a["index"] < len(args) else 0, a["value"], a.get("valueTwo", 0))
               for a in rule.get("args", [])):
            assert rule["action"] == "SCMP_ACT_ERRNO"
            return rule.get("errnoRet", errno.EPERM)
    assert profile["defaultAction"] == "SCMP_ACT_ALLOW"
    return None


@pytest.fixture(scope="module")
def profile():
    return seccomp.default_profile(bundle.DEFAULT_CAPS, machine="x86_64")


def config(opts: RunOptions = RunOptions(command=("sh",))) -> dict:
    return build_config({"Cmd": ["sh"]}, opts, BundleInputs(rootfs="/r", cgroups_path="/p/x"))


def test_config_json_gets_the_default_profile_and_unconfined_drops_it():
    cfg = config()
    sc = cfg["linux"]["seccomp"]
    assert sc["defaultAction"] == "SCMP_ACT_ALLOW" and "SCMP_ACT_ERRNO" in {r["action"] for r in sc["syscalls"]}
    assert cfg["process"]["noNewPrivileges"] is False
    json.dumps(cfg)  # it is what goes to config.json
    assert "seccomp" not in config(RunOptions(command=("sh",), seccomp="unconfined"))["linux"]
    custom = {"defaultAction": "SCMP_ACT_ERRNO", "syscalls": []}
    assert config(RunOptions(command=("sh",), seccomp=custom))["linux"]["seccomp"] == custom
    assert config(RunOptions(command=("sh",), no_new_privileges=True))["process"]["noNewPrivileges"] is True


def test_options_round_trip_through_the_record():
    opts = RunOptions(command=("sh",), seccomp={"defaultAction": "SCMP_ACT_ALLOW"}, no_new_privileges=True)
    assert RunOptions.from_json(json.loads(json.dumps(opts.to_json()))) == opts
    old = RunOptions(command=("sh",)).to_json()
    del old["seccomp"], old["no_new_privileges"]  # a record written before these options existed
    assert RunOptions.from_json(old).seccomp is None


@pytest.mark.parametrize("name", [
    "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module", "create_module", "reboot",
    "swapon", "swapoff", "mount", "umount2", "pivot_root", "open_by_handle_at", "bpf", "perf_event_open",
    "userfaultfd", "add_key", "request_key", "keyctl", "lookup_dcookie", "acct", "quotactl", "clock_settime",
    "settimeofday", "unshare", "setns", "vm86", "iopl", "ioperm", "syslog", "fsopen", "move_mount", "open_tree",
    "io_uring_setup", "kcmp", "pidfd_getfd", "process_madvise", "migrate_pages", "move_pages"])
def test_denied_with_eperm(profile, name):
    assert decide(profile, name, 0) == errno.EPERM


@pytest.mark.parametrize("name", ["read", "write", "openat", "execve", "fork", "wait4", "ptrace", "socket",
                                  "setuid", "chown", "kill", "adjtimex", "clock_adjtime", "clock_gettime",
                                  "name_to_handle_at", "chroot", "process_vm_readv"])
def test_ordinary_calls_allowed(profile, name):
    assert decide(profile, name, 0, 0) is None


@pytest.mark.parametrize("flags, refused", [
    (PTHREAD_FLAGS, False), (FORK_FLAGS, False), (0x11, False),
    (CLONE_NEWUSER, True), (FORK_FLAGS | CLONE_NEWNET, True), (0x00020000, True), (0x20000000, True),
    (0x08000000, True), (0x04000000, True), (0x02000000, True)])
def test_clone_refused_with_namespace_flags_only(profile, flags, refused):
    assert decide(profile, "clone", flags) == (errno.EPERM if refused else None)


def test_socket_refuses_only_vsock(profile):
    assert decide(profile, "socket", 40, 1, 0) == errno.EPERM
    assert [decide(profile, "socket", family, 1, 0) for family in (1, 2, 10, 16, 17)] == [None] * 5


def test_clone3_gets_enosys_so_glibc_falls_back_to_clone(profile):
    assert decide(profile, "clone3", 0) == errno.ENOSYS


@pytest.mark.parametrize("value", list(seccomp.PERSONALITY_ALLOWED))
def test_personality_allowed_values(profile, value):
    assert decide(profile, "personality", value) is None


@pytest.mark.parametrize("value", [0x0040000, 0x1, 0x10, 0x20009, 0x0400000, 0x80000000, 0xFFFFFFFE,
                                   0x7FFFFFFF, 0x100000000, 0xFFFFFFFF_FFFFFFFF, 0x80000008])
def test_personality_other_values_refused(profile, value):
    assert decide(profile, "personality", value) == errno.EPERM


def test_no_rule_compares_one_argument_twice(profile):
    """libseccomp refuses a rule with two comparisons of the same argument (EINVAL)."""
    for rule in profile["syscalls"]:
        idx = [a["index"] for a in rule.get("args", [])]
        assert len(idx) == len(set(idx)), rule


def test_a_capability_lifts_its_rules_as_dockers_includes_caps():
    p = seccomp.default_profile(bundle.DEFAULT_CAPS + ["CAP_SYS_ADMIN", "CAP_SYS_TIME"], machine="x86_64")
    assert decide(p, "mount") is None and decide(p, "clone", CLONE_NEWUSER) is None
    assert decide(p, "clock_settime") is None
    assert decide(p, "keyctl") == errno.EPERM and decide(p, "reboot") == errno.EPERM


# ---- --security-opt ---------------------------------------------------------------------------

def test_parse_security_opts():
    assert seccomp.parse_security_opts([]) == seccomp.SecurityOpts(None, False)
    assert seccomp.parse_security_opts(["seccomp=unconfined"]).seccomp == "unconfined"
    assert seccomp.parse_security_opts(["seccomp:unconfined"]).seccomp == "unconfined"
    assert seccomp.parse_security_opts(["no-new-privileges"]).no_new_privileges is True
    assert seccomp.parse_security_opts(["no-new-privileges=false"]).no_new_privileges is False
    with pytest.raises(ConfigError, match="unsupported security option 'apparmor=x'"):
        seccomp.parse_security_opts(["apparmor=x"])
    with pytest.raises(ConfigError, match="stack.yml:7: services.web.security_opt: unsupported"):
        seccomp.parse_security_opts(["label=x"], where="services.web.security_opt", path="stack.yml", line=7)


def test_profile_file_oci_form(tmp_path):
    f = tmp_path / "p.json"
    f.write_text(json.dumps({"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"],
                             "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO",
                                           "errnoRet": 13}]}))
    opts = seccomp.parse_security_opts([f"seccomp={f}"])
    assert opts.seccomp == str(f)   # checked now, converted when the container is made
    got = seccomp.profile_for(opts, (), machine="x86_64")
    assert got == {"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"],
                   "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}]}
    # relative to the base directory (a stack file's)
    assert seccomp.parse_security_opts(["seccomp=p.json"], base=str(tmp_path)) == opts


def test_profile_file_docker_form(tmp_path):
    f = tmp_path / "docker.json"
    f.write_text(json.dumps({
        "defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 1,
        "archMap": [{"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"]},
                    {"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": ["SCMP_ARCH_ARM"]}],
        "syscalls": [
            {"names": ["read", "write"], "action": "SCMP_ACT_ALLOW", "comment": "basics"},
            {"name": "mount", "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_ADMIN"]}},
            {"names": ["arch_prctl"], "action": "SCMP_ACT_ALLOW", "includes": {"arches": ["amd64", "x32"]}},
            {"names": ["s390_pci_mmio_read"], "action": "SCMP_ACT_ALLOW", "includes": {"arches": ["s390x"]}},
            {"names": ["ptrace"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "4.8"}},
            {"names": ["chown"], "action": "SCMP_ACT_ALLOW", "excludes": {"caps": ["CAP_CHOWN"]}},
            {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 0, "value": 8, "valueTwo": 0, "op": "SCMP_CMP_EQ"}]},
        ]}))
    got = seccomp.load_profile(f, bundle.DEFAULT_CAPS, machine="x86_64", kernel="6.1.0-18-amd64")
    assert got["architectures"] == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
    assert got["defaultErrnoRet"] == 1
    assert [r["names"] for r in got["syscalls"]] == [["read", "write"], ["arch_prctl"], ["ptrace"], ["personality"]]
    assert got["syscalls"][3]["args"] == [{"index": 0, "value": 8, "valueTwo": 0, "op": "SCMP_CMP_EQ"}]
    old = seccomp.load_profile(f, bundle.DEFAULT_CAPS, machine="x86_64", kernel="4.4.0")
    assert ["ptrace"] not in [r["names"] for r in old["syscalls"]]


@pytest.mark.parametrize("text, where", [
    ('{"defaultAction": "SCMP_ACT_ALLOW",\n "syscalls": [\n  {"names": ["x"], "action": "SCMP_ACT_NOPE"}]}',
     ":3: seccomp profile: syscalls[0].action: unknown or missing action 'SCMP_ACT_NOPE'"),
    ('{"defaultAction": "SCMP_ACT_ALLOW",\n "syscals": []}', ":2: seccomp profile: the profile: unknown key 'syscals'"),
    ('{"defaultAction": "SCMP_ACT_ALLOW",\n "syscalls": [{"names": ["x"], "action": "SCMP_ACT_ERRNO",\n'
     ' "args": [{"index": 7, "value": 1, "op": "SCMP_CMP_EQ"}]}]}',
     ":3: seccomp profile: syscalls[0].args[0].index must be an integer from 0 to 5"),
    ('{"defaultAction": "SCMP_ACT_ALLOW",\n "syscalls": [{"names": ["x"], "action": "SCMP_ACT_ERRNO", "args": [\n'
     '  {"index": 0, "value": 1, "op": "SCMP_CMP_NE"},\n  {"index": 0, "value": 2, "op": "SCMP_CMP_NE"}]}]}',
     ":4: seccomp profile: syscalls[0].args[1]: a second comparison of argument 0"),
    ('{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [}', ":1: not a valid JSON profile"),
    ('["SCMP_ACT_ALLOW"]', ":1: seccomp profile: the profile must be an object"),
])
def test_bad_profile_is_one_error_with_file_and_line(tmp_path, text, where):
    f = tmp_path / "bad.json"
    f.write_text(text)
    with pytest.raises(ConfigError) as exc:
        seccomp.load_profile(f, machine="x86_64")
    assert str(exc.value).startswith(f"{f}{where}"), str(exc.value)
    assert "\n" not in str(exc.value)


def test_missing_profile_names_the_file(tmp_path):
    with pytest.raises(ConfigError, match=r"nope\.json: cannot read seccomp profile \(No such file"):
        seccomp.parse_security_opts([f"seccomp={tmp_path}/nope.json"])


def test_manager_check_keeps_the_profile_in_the_options(tmp_path):
    f = tmp_path / "p.json"
    f.write_text('{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"}]}')
    m = Manager(tmp_path, FakeRunner(), net=NetworkConfig(), runtime_path="/bin/false")
    opts = m.check(from_flags("busybox", security_opt=(f"seccomp={f}", "no-new-privileges")))["options"]
    assert opts["seccomp"]["syscalls"] == [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"}]
    assert opts["no_new_privileges"] is True
    assert m.check(RunRequest("busybox"))["options"]["seccomp"] is None


def test_cli_bad_profile_path_is_one_line_and_creates_nothing(tmp_path, capsys):
    root = tmp_path / "root"
    with pytest.raises(SystemExit) as exc:
        main(["--root", str(root), "container", "run", "--security-opt", f"seccomp={tmp_path}/nope.json",
              "busybox", "true"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "nope.json: cannot read seccomp profile" in err
    assert not root.exists() or not any(p for p in root.rglob("*") if p.is_file() and p.name != ".lock")


# ---- stack files: security_opt ------------------------------------------------------------------

STACK = "name: s\nservices:\n  web:\n    image: busybox\n    security_opt:\n{items}"


def _stack(tmp_path, *items: str) -> str:
    p = tmp_path / "stack.yml"
    p.write_text(STACK.format(items="".join(f"      - {i}\n" for i in items)))
    return str(p)


def test_stack_security_opt_reaches_the_run_request(tmp_path):
    from provisioner.compose.engine import Stacks
    from provisioner.compose.plan import config_hash
    from provisioner.stack import load_stack

    (tmp_path / "prof").mkdir()
    (tmp_path / "prof" / "p.json").write_text('{"defaultAction": "SCMP_ACT_ALLOW"}')
    stack = load_stack(_stack(tmp_path, "seccomp=prof/p.json", "no-new-privileges"), hosts_required=False)
    web = stack.services["web"]
    assert web.security == seccomp.SecurityOpts(f"{tmp_path}/prof/p.json", True)
    assert web.security.values() == (f"seccomp={tmp_path}/prof/p.json", "no-new-privileges")
    req = Stacks(Manager(tmp_path, FakeRunner(), net=NetworkConfig(), runtime_path="/bin/false")).request(stack, web)
    assert req.security == web.security
    plain = type(web)(name="web", image="busybox")
    assert config_hash(web, {}) != config_hash(plain, {})


@pytest.mark.parametrize("item, message", [
    ("apparmor=x", "services.web.security_opt[0]: unsupported security option 'apparmor=x'"),
    ("seccomp=missing.json", "services.web.security_opt[0]: "),
])
def test_stack_security_opt_errors_name_the_stack_file_and_line(tmp_path, item, message):
    from provisioner.errors import StackError
    from provisioner.stack import load_stack

    path = _stack(tmp_path, item)
    with pytest.raises(StackError) as exc:
        load_stack(path, hosts_required=False)
    assert str(exc.value).startswith(f"{path}:6: {message}"), str(exc.value)
    if "missing" in item:
        assert "cannot read seccomp profile" in str(exc.value)


def test_stack_unknown_security_key_is_still_a_file_line_error(tmp_path):
    from provisioner.errors import StackError
    from provisioner.stack import load_stack

    p = tmp_path / "stack.yml"
    p.write_text("name: s\nservices:\n  web:\n    image: busybox\n    devices: [/dev/fuse]\n")
    with pytest.raises(StackError, match=f"{p}:5: services.web: unsupported compose key 'devices'"):
        load_stack(p, hosts_required=False)


def test_a_changed_profile_file_changes_the_service_hash(tmp_path):
    from provisioner.compose.engine import Stacks
    from provisioner.stack import load_stack

    prof = tmp_path / "p.json"
    prof.write_text('{"defaultAction": "SCMP_ACT_ALLOW"}')
    s = load_stack(_stack(tmp_path, "seccomp=p.json"), hosts_required=False)
    stacks = Stacks(Manager(tmp_path, FakeRunner(), net=NetworkConfig(), runtime_path="/bin/false"))
    before = stacks.hashes(s)["web"]
    assert stacks.hashes(s)["web"] == before
    prof.write_text('{"defaultAction": "SCMP_ACT_ALLOW",\n'
                    ' "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"}]}')
    assert stacks.hashes(s)["web"] != before
