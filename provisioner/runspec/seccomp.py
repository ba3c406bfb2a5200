"""Pure: the default seccomp profile for containers, and `--security-opt` parsing.

Design: a *denylist* over a default-allow filter, not Docker's allowlist. Why:
- Our containers run with Docker's default capability set (bundle.DEFAULT_CAPS) and never get
  more (there is no --cap-add/--privileged), so the kernel already refuses most dangerous calls
  (mount, module loading, reboot, clock setting) for lack of a capability; seccomp is the second
  wall in front of the calls whose *capability checks* are the risk or that need no capability
  at all (user namespaces via unshare/clone, keyrings, userfaultfd, io_uring, perf, bpf).
- The list below is short enough to audit in review, and every entry says which capability
  would lift it (Docker's `includes.caps`), so the profile stays right if capabilities are
  ever added. Docker's allowlist is ~370 names that must track every new kernel syscall; a
  missing name breaks programs with EPERM in ways that are hard to trace back.
- The price: a syscall added to the kernel later is allowed until it is listed here. We accept
  that for now and list the newer risky families explicitly (the new mount API, io_uring,
  clone3, quotactl_fd, mount_setattr).

Refused calls return EPERM, as in Docker's profile; `clone3` returns ENOSYS instead (its flags
are in memory, out of seccomp's reach), so glibc falls back to `clone`, whose namespace flags
are filtered by argument. clock_adjtime stays allowed, as in Docker's current profile: the
kernel checks CAP_SYS_TIME before it changes anything, and glibc's adjtimex reads through it.
`personality` is allowed only for Docker's values (0, PER_LINUX32, UNAME26, both, and the
0xffffffff query); libseccomp cannot AND two comparisons of one argument
in one rule, so that set is expressed as single-bit MASKED_EQ rules (see _personality_rules).

A user profile (`--security-opt seccomp=PATH`) may be in OCI form (`linux.seccomp`) or Docker's
(`archMap`, `includes`/`excludes`, `name`); it is checked and converted here to the OCI form
our runtime takes, so a bad file is one ConfigError naming the file and line before anything
is created.
"""
from __future__ import annotations

import errno as _errno
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

from .. import yamlutil
from ..errors import ConfigError

EPERM = _errno.EPERM
ENOSYS = _errno.ENOSYS

# linux/sched.h: the namespace flags clone(2) can take (CLONE_NEWTIME only exists for unshare and
# clone3: in clone's flags its bit is part of the exit signal)
CLONE_NS_FLAGS = {
    "CLONE_NEWNS": 0x00020000, "CLONE_NEWCGROUP": 0x02000000, "CLONE_NEWUTS": 0x04000000,
    "CLONE_NEWIPC": 0x08000000, "CLONE_NEWUSER": 0x10000000, "CLONE_NEWPID": 0x20000000,
    "CLONE_NEWNET": 0x40000000,
}
AF_VSOCK = 40  # socket(AF_VSOCK, ...) is refused, as in Docker's profile: it reaches the hypervisor

# (syscalls, the capability that would make Docker allow them, or None: always refused). Checked
# against moby's profiles/seccomp/default.json: what it does not allow for Docker's default
# capabilities is here. Deliberate differences: io_uring_* are refused (Docker 25 dropped them
# from its allowlist too; the kernel's io_uring has had a long run of escapes).
DENY: list[tuple[tuple[str, ...], str | None]] = [
    (("kexec_load", "kexec_file_load", "reboot"), "CAP_SYS_BOOT"),
    (("init_module", "finit_module", "delete_module"), "CAP_SYS_MODULE"),
    (("mount", "umount", "umount2", "pivot_root", "fsopen", "fsconfig", "fsmount", "fspick", "move_mount",
      "open_tree", "mount_setattr", "unshare", "setns", "quotactl", "quotactl_fd", "lookup_dcookie",
      "sethostname", "setdomainname", "fanotify_init"), "CAP_SYS_ADMIN"),
    (("bpf",), "CAP_SYS_ADMIN"),
    (("perf_event_open",), "CAP_SYS_ADMIN"),
    (("open_by_handle_at",), "CAP_DAC_READ_SEARCH"),
    (("acct",), "CAP_SYS_PACCT"),
    (("clock_settime", "clock_settime64", "settimeofday", "stime"), "CAP_SYS_TIME"),
    (("iopl", "ioperm"), "CAP_SYS_RAWIO"),
    (("syslog",), "CAP_SYSLOG"),
    (("get_mempolicy", "set_mempolicy", "set_mempolicy_home_node", "mbind"), "CAP_SYS_NICE"),
    (("vhangup",), "CAP_SYS_TTY_CONFIG"),
    (("kcmp", "pidfd_getfd", "process_madvise"), "CAP_SYS_PTRACE"),
    # keyrings are not namespaced; swap and page migration act on the whole machine; the rest are
    # obsolete or architecture relics
    (("add_key", "request_key", "keyctl", "swapon", "swapoff", "userfaultfd", "move_pages", "migrate_pages",
      "create_module", "query_module", "get_kernel_syms", "nfsservctl", "uselib", "ustat", "sysfs", "_sysctl",
      "vm86", "vm86old", "io_uring_setup", "io_uring_enter", "io_uring_register"), None),
]

# Docker's allowed personality(2) values
PERSONALITY_ALLOWED = (0x0, 0x8, 0x20000, 0x20008, 0xFFFFFFFF)

ACTIONS = {"SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD", "SCMP_ACT_TRAP", "SCMP_ACT_ERRNO",
           "SCMP_ACT_TRACE", "SCMP_ACT_ALLOW", "SCMP_ACT_LOG"}
OPERATORS = {"SCMP_CMP_NE", "SCMP_CMP_LT", "SCMP_CMP_LE", "SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT",
             "SCMP_CMP_MASKED_EQ"}
FLAGS = {"SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW", "SECCOMP_FILTER_FLAG_TSYNC"}

# machine → (OCI architectures for a filter on it, its Go name for Docker's includes.arches)
ARCHES = {
    "x86_64": (("SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"), ("amd64",)),
    "aarch64": (("SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"), ("arm64",)),
}


def _arch(machine: str | None) -> tuple[tuple[str, ...], tuple[str, ...]]:
    machine = machine or os.uname().machine
    if machine not in ARCHES:
        raise ConfigError(f"seccomp profiles are not supported on {machine} (known: {', '.join(ARCHES)})")
    return ARCHES[machine]


def _deny(names: Iterable[str], err: int = EPERM, args: list | None = None) -> dict:
    rule: dict[str, Any] = {"names": list(names), "action": "SCMP_ACT_ERRNO", "errnoRet": err}
    if args:
        rule["args"] = args
    return rule


def _masked(index: int, mask: int, value: int) -> dict:
    return {"index": index, "value": mask, "valueTwo": value, "op": "SCMP_CMP_MASKED_EQ"}


def _personality_rules() -> list[dict]:
    """personality(p) refused unless p is one of PERSONALITY_ALLOWED, with one comparison per rule
    (rules are ORed). Allowed: bit 31 clear and no bit but 3 (PER_LINUX32) and 17 (UNAME26) set; or
    p == 0xffffffff (the query). So refuse: bit 31 clear with another bit set; bit 31 set with any
    of bits 0-30 clear; anything above 32 bits."""
    top = 1 << 31
    ok_bits = {3, 17}
    rules = [_deny(["personality"], args=[_masked(0, top | (1 << b), 1 << b)])
             for b in range(31) if b not in ok_bits]
    rules += [_deny(["personality"], args=[_masked(0, top | (1 << b), top)]) for b in range(31)]
    rules.append(_deny(["personality"], args=[{"index": 0, "value": 0xFFFFFFFF, "op": "SCMP_CMP_GT"}]))
    return rules


def default_profile(caps: Iterable[str], machine: str | None = None) -> dict:
    """The OCI linux.seccomp object every container gets unless told otherwise."""
    caps = set(caps)
    syscalls: list[dict] = []
    for names, cap in DENY:
        if cap is None or cap not in caps:
            syscalls.append(_deny(names))
    if "CAP_SYS_ADMIN" not in caps:
        # clone(flags, ...): refused with any namespace flag (one MASKED_EQ rule per flag)
        for flag in CLONE_NS_FLAGS.values():
            syscalls.append(_deny(["clone"], args=[_masked(0, flag, flag)]))
        syscalls.append(_deny(["clone3"], ENOSYS))
    syscalls.append(_deny(["socket"], args=[{"index": 0, "value": AF_VSOCK, "op": "SCMP_CMP_EQ"}]))
    syscalls += _personality_rules()
    return {"defaultAction": "SCMP_ACT_ALLOW", "architectures": list(_arch(machine)[0]), "syscalls": syscalls}


# ---- --security-opt ----------------------------------------------------------------------------

UNCONFINED = "unconfined"


@dataclass(frozen=True)
class SecurityOpts:
    """Docker's `--security-opt` values, parsed."""

    seccomp: str | None = None       # None: the default profile; "unconfined"; or a profile file (absolute)
    no_new_privileges: bool = False

    def values(self) -> tuple[str, ...]:
        """Back to `--security-opt` texts."""
        out = () if self.seccomp is None else (f"seccomp={self.seccomp}",)
        return out + (("no-new-privileges",) if self.no_new_privileges else ())


def parse_security_opts(values: Iterable[str], *, base: str | None = None, where: str = "--security-opt",
                        path: str | None = None, line: int | None = None) -> SecurityOpts:
    """Docker's `--security-opt` values. A profile (`seccomp=PATH`, relative to `base`) is read and
    checked now, so a bad one is an error before anything is created; `profile_for` converts it
    when the container is made."""
    seccomp_opt: str | None = None
    nnp = False
    for raw in values:
        text = str(raw).strip()
        key, sep, value = text.partition("=")
        if not sep:
            key, sep, value = text.partition(":")  # Docker's older KEY:VALUE spelling
        if key == "seccomp" and value:
            if value == UNCONFINED:
                seccomp_opt = UNCONFINED
            else:
                p = Path(value).expanduser()
                if base and not p.is_absolute():
                    p = Path(base) / p
                p = Path(os.path.normpath(p.absolute()))
                load_profile(p)
                seccomp_opt = str(p)
        elif key in ("apparmor", "label") and value in ("unconfined", "disable"):
            # no AppArmor profile or SELinux label is applied here: unconfined is what runs anyway
            continue
        elif key == "no-new-privileges":
            if value not in ("", "true", "false"):
                raise ConfigError(f"{where}: bad no-new-privileges value {value!r} (want true or false)", path,
                                  line)
            nnp = value != "false"
        else:
            raise ConfigError(f"{where}: unsupported security option {text!r} (supported: seccomp=unconfined, "
                              "seccomp=PROFILE.json, no-new-privileges[=true|false], apparmor=unconfined, "
                              "label=disable: provisioner applies no AppArmor profiles or SELinux labels)", path, line)
    return SecurityOpts(seccomp_opt, nnp)


def profile_for(opts: SecurityOpts, caps: Iterable[str], *, machine: str | None = None,
                kernel: str | None = None) -> Any:
    """What the OCI config gets: None (the default profile), "unconfined", or the user's profile
    converted for these capabilities and this machine."""
    if opts.seccomp is None or opts.seccomp == UNCONFINED:
        return opts.seccomp
    return load_profile(opts.seccomp, caps, machine=machine, kernel=kernel)


def load_profile(path: str | os.PathLike, caps: Iterable[str] = (), *, machine: str | None = None,
                 kernel: str | None = None) -> dict:
    """A profile file (JSON, OCI or Docker form) → the OCI linux.seccomp object; ConfigError with
    file:line on anything wrong."""
    path = str(path)
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read seccomp profile ({exc.strerror or exc})", path) from exc
    try:
        data = yamlutil.loads(text, path)  # JSON is YAML, and this keeps line numbers
    except ConfigError as exc:
        raise ConfigError(f"not a valid JSON profile ({exc.message.split(': ', 1)[-1]})", path, exc.line) from None
    return convert(data, path, caps, machine=machine, kernel=kernel)


def _kernel_tuple(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split("-", 1)[0].split(".")[:3]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


class _Checker:
    def __init__(self, path: str):
        self.path = path

    def fail(self, msg: str, container: Any = None, key: Any = None):
        line = yamlutil.line_of(container, key) if container is not None else None
        return ConfigError(f"seccomp profile: {msg}", self.path, line)

    def keys(self, d: Any, allowed: set[str], where: str) -> None:
        if not isinstance(d, dict):
            raise self.fail(f"{where} must be an object", d)
        for k in d:
            if k not in allowed:
                raise self.fail(f"{where}: unknown key {k!r} (known: {', '.join(sorted(allowed))})", d, k)

    def string_list(self, d: dict, key: str, where: str) -> list[str]:
        v = d.get(key)
        if v is None:
            return []
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            raise self.fail(f"{where}.{key} must be a list of strings", d, key)
        return list(v)

    def uint(self, d: dict, key: str, where: str, *, maximum: int = (1 << 64) - 1) -> int | None:
        v = d.get(key)
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= maximum:
            raise self.fail(f"{where}.{key} must be an integer from 0 to {maximum}", d, key)
        return v

    def action(self, d: dict, key: str, where: str) -> str:
        v = d.get(key)
        if not isinstance(v, str) or v not in ACTIONS:
            raise self.fail(f"{where}.{key}: unknown or missing action {v!r} (known: {', '.join(sorted(ACTIONS))})",
                            d, key)
        return v


TOP_KEYS = {"defaultAction", "defaultErrnoRet", "architectures", "archMap", "flags", "syscalls", "comment"}
RULE_KEYS = {"names", "name", "action", "errnoRet", "args", "includes", "excludes", "comment"}
ARG_KEYS = {"index", "value", "valueTwo", "op"}
FILTER_KEYS = {"caps", "arches", "minKernel"}


def convert(data: Any, path: str, caps: Iterable[str] = (), *, machine: str | None = None,
            kernel: str | None = None) -> dict:
    """A parsed profile (OCI or Docker form) → checked OCI linux.seccomp for this machine."""
    c = _Checker(path)
    caps = set(caps)
    oci_arches, go_arches = _arch(machine)
    kernel_v = _kernel_tuple(kernel or os.uname().release)
    c.keys(data, TOP_KEYS, "the profile")
    out: dict[str, Any] = {"defaultAction": c.action(data, "defaultAction", "the profile")}
    eret = c.uint(data, "defaultErrnoRet", "the profile", maximum=4095)
    if eret is not None:
        out["defaultErrnoRet"] = eret
    arches: list[str] = []
    if "archMap" in data:  # Docker's: keep the entry for this machine's architecture
        amap = data["archMap"]
        if not isinstance(amap, list):
            raise c.fail("archMap must be a list", data, "archMap")
        for i, entry in enumerate(amap):
            c.keys(entry, {"architecture", "subArchitectures"}, f"archMap[{i}]")
            if entry.get("architecture") == oci_arches[0]:
                arches = [entry["architecture"]] + c.string_list(entry, "subArchitectures", f"archMap[{i}]")
    for a in c.string_list(data, "architectures", "the profile"):
        if not a.startswith("SCMP_ARCH_"):
            raise c.fail(f"architectures: unknown architecture {a!r}", data, "architectures")
        if a in oci_arches and a not in arches:  # a filter can only hold this machine's family
            arches.append(a)
    if arches:
        out["architectures"] = arches
    flags = c.string_list(data, "flags", "the profile")
    for f in flags:
        if f not in FLAGS:
            raise c.fail(f"flags: unsupported flag {f!r} (supported: {', '.join(sorted(FLAGS))})", data, "flags")
    if flags:
        out["flags"] = flags
    rules = data.get("syscalls") or []
    if not isinstance(rules, list):
        raise c.fail("syscalls must be a list", data, "syscalls")
    out["syscalls"] = []
    for i, rule in enumerate(rules):
        where = f"syscalls[{i}]"
        c.keys(rule, RULE_KEYS, where)
        names = c.string_list(rule, "names", where)
        if "name" in rule:
            if not isinstance(rule["name"], str):
                raise c.fail(f"{where}.name must be a string", rule, "name")
            names.append(rule["name"])
        if not names:
            raise c.fail(f"{where} names no syscall", rules, i)
        r: dict[str, Any] = {"names": names, "action": c.action(rule, "action", where)}
        e = c.uint(rule, "errnoRet", where, maximum=4095)
        if e is not None:
            r["errnoRet"] = e
        args = rule.get("args") or []
        if not isinstance(args, list):
            raise c.fail(f"{where}.args must be a list", rule, "args")
        seen: set[int] = set()
        r_args = []
        for k, a in enumerate(args):
            aw = f"{where}.args[{k}]"
            c.keys(a, ARG_KEYS, aw)
            index = c.uint(a, "index", aw, maximum=5)
            if index is None:
                raise c.fail(f"{aw}.index is required (0-5)", a)
            if index in seen:
                raise c.fail(f"{aw}: a second comparison of argument {index} in one rule (libseccomp refuses "
                             "that; write two rules)", args, k)
            seen.add(index)
            op = a.get("op")
            if op not in OPERATORS:
                raise c.fail(f"{aw}.op: unknown operator {op!r} (known: {', '.join(sorted(OPERATORS))})", a, "op")
            arg = {"index": index, "value": c.uint(a, "value", aw) or 0, "op": op}
            v2 = c.uint(a, "valueTwo", aw)
            if v2 is not None:
                arg["valueTwo"] = v2
            r_args.append(arg)
        if r_args:
            r["args"] = r_args
        if _applies(c, rule, where, caps, go_arches, kernel_v):
            out["syscalls"].append(r)
    return out


def _applies(c: _Checker, rule: Mapping, where: str, caps: set[str], go_arches: tuple[str, ...],
             kernel: tuple[int, ...]) -> bool:
    """Docker's includes/excludes: a rule counts only for these capabilities, arches, kernels."""
    for key in ("includes", "excludes"):
        f = rule.get(key)
        if f is None:
            continue
        w = f"{where}.{key}"
        c.keys(f, FILTER_KEYS, w)
        want_caps = set(c.string_list(f, "caps", w))
        arches = set(c.string_list(f, "arches", w))
        min_kernel = f.get("minKernel")
        if min_kernel is not None and not isinstance(min_kernel, str):
            raise c.fail(f"{w}.minKernel must be a string such as \"4.8\"", f, "minKernel")
        if key == "includes":
            if want_caps and not want_caps <= caps:
                return False
            if arches and not arches & set(go_arches):
                return False
            if min_kernel and kernel < _kernel_tuple(min_kernel):
                return False
        else:
            if want_caps & caps or arches & set(go_arches):
                return False
            if min_kernel and kernel >= _kernel_tuple(min_kernel):
                return False
    return True
