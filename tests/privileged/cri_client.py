"""A few calls of the Kubernetes CRI (runtime.v1) over gRPC, for driving containerd in tests.

There is no crictl in Debian bookworm, and generated protobuf code would drag in the whole
api.proto: this encodes the handful of messages the tests need by hand.  Message and field
numbers are those of k8s.io/cri-api pkg/apis/runtime/v1/api.proto (e.g. RunPodSandboxRequest
{config = 1}, PodSandboxConfig {metadata = 1, log_directory = 3, linux = 8}); proto3 rules:
fields at their default value are left out, maps are repeated {key = 1, value = 2} entries.
"""
from __future__ import annotations

import grpc

# NamespaceMode, PodSandboxState and ContainerState enums
POD, CONTAINER, NODE = 0, 1, 2
SANDBOX_READY, SANDBOX_NOTREADY = 0, 1
CONTAINER_CREATED, CONTAINER_RUNNING, CONTAINER_EXITED = 0, 1, 2


# -- wire format ----------------------------------------------------------------------
def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1  # negative int64 values take ten bytes, as in protobuf
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _key(num: int, wire: int) -> bytes:
    return _varint(num << 3 | wire)


def field(num: int, value) -> bytes:
    """One field: int/bool/enum as a varint, str/bytes (an encoded message too) length-delimited,
    a list as repeated fields, a dict as a map<string, string>.  Defaults are omitted."""
    if value is None or value == 0 or value == "" or value == b"" or value is False:
        return b""
    if isinstance(value, bool) or isinstance(value, int):
        return _key(num, 0) + _varint(int(value))
    if isinstance(value, str):
        value = value.encode()
    if isinstance(value, bytes):
        return _key(num, 2) + _varint(len(value)) + value
    if isinstance(value, list):
        return b"".join(field(num, v) if v != "" else _key(num, 2) + b"\0" for v in value)
    if isinstance(value, dict):
        return b"".join(field(num, message({1: k, 2: v})) for k, v in value.items())
    raise TypeError(f"cannot encode {value!r}")


def message(fields: dict) -> bytes:
    return b"".join(field(n, v) for n, v in sorted(fields.items()))


def parse(buf: bytes) -> dict[int, list]:
    """field number -> values: ints for varints, bytes for length-delimited (strings and
    nested messages alike: parse() them again)."""
    out: dict[int, list] = {}
    i = 0

    def varint():
        nonlocal i
        shift = n = 0
        while True:
            b = buf[i]
            i += 1
            n |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                return n
    while i < len(buf):
        key = varint()
        num, wire = key >> 3, key & 7
        if wire == 0:
            v = varint()
        elif wire == 2:
            n = varint()
            v, i = buf[i:i + n], i + n
        elif wire == 1:
            v, i = buf[i:i + 8], i + 8
        elif wire == 5:
            v, i = buf[i:i + 4], i + 4
        else:
            raise ValueError(f"wire type {wire} in field {num}")
        out.setdefault(num, []).append(v)
    return out


def get(msg: dict, num: int, default=None):
    return msg.get(num, [default])[0]


def get_str(msg: dict, num: int) -> str:
    return get(msg, num, b"").decode()


# -- the calls --------------------------------------------------------------------------
class CRI:
    """runtime.v1.RuntimeService on a containerd socket."""

    def __init__(self, socket_path: str, timeout: float = 60):
        self.channel = grpc.insecure_channel(f"unix://{socket_path}")
        self.timeout = timeout

    def close(self):
        self.channel.close()

    def call(self, method: str, request: bytes, service: str = "RuntimeService") -> dict:
        rpc = self.channel.unary_unary(f"/runtime.v1.{service}/{method}")
        return parse(rpc(request, timeout=self.timeout))

    def version(self) -> dict:
        r = self.call("Version", message({1: "v1"}))
        return {"runtime_name": get_str(r, 2), "runtime_version": get_str(r, 3), "api": get_str(r, 4)}

    def run_pod_sandbox(self, sandbox_config: bytes) -> str:
        return get_str(self.call("RunPodSandbox", message({1: sandbox_config})), 1)

    def create_container(self, pod_id: str, config: bytes, sandbox_config: bytes) -> str:
        return get_str(self.call("CreateContainer", message({1: pod_id, 2: config, 3: sandbox_config})), 1)

    def start_container(self, cid: str):
        self.call("StartContainer", message({1: cid}))

    def stop_container(self, cid: str, timeout: int):
        self.call("StopContainer", message({1: cid, 2: timeout}))

    def remove_container(self, cid: str):
        self.call("RemoveContainer", message({1: cid}))

    def exec_sync(self, cid: str, cmd: list[str], timeout: int = 10) -> tuple[int, bytes, bytes]:
        r = self.call("ExecSync", message({1: cid, 2: cmd, 3: timeout}))
        return get(r, 3, 0), get(r, 1, b""), get(r, 2, b"")

    def update_container_resources(self, cid: str, cpu_shares: int = 0, memory_limit: int = 0):
        linux = message({3: cpu_shares, 4: memory_limit})                # LinuxContainerResources
        self.call("UpdateContainerResources", message({1: cid, 2: linux}))

    def container_state(self, cid: str) -> int:
        status = parse(get(self.call("ContainerStatus", message({1: cid})), 1, b""))
        return get(status, 3, CONTAINER_CREATED)

    def stop_pod_sandbox(self, pod_id: str):
        self.call("StopPodSandbox", message({1: pod_id}))

    def remove_pod_sandbox(self, pod_id: str):
        self.call("RemovePodSandbox", message({1: pod_id}))

    def list_pod_sandboxes(self) -> list[str]:
        return [get_str(parse(item), 1) for item in self.call("ListPodSandbox", b"").get(1, [])]

    def list_containers(self) -> list[str]:
        return [get_str(parse(item), 1) for item in self.call("ListContainers", b"").get(1, [])]


def pod_sandbox_config(name: str, uid: str, log_directory: str, cgroup_parent: str) -> bytes:
    """A pod on the node's network (NamespaceMode NODE: no CNI needed), its containers in
    the pod's pid namespace (POD, the default)."""
    namespaces = message({1: NODE})                                     # NamespaceOption.network
    security = message({1: namespaces})                                 # LinuxSandboxSecurityContext
    linux = message({1: cgroup_parent, 2: security})                    # LinuxPodSandboxConfig
    metadata = message({1: name, 2: uid, 3: "default"})                 # PodSandboxMetadata
    return message({1: metadata, 3: log_directory, 8: linux})          # PodSandboxConfig


def container_config(name: str, image: str, command: list[str], log_path: str, tty: bool = False) -> bytes:
    namespaces = message({1: NODE})                                     # NamespaceOption
    security = message({3: namespaces})                                 # LinuxContainerSecurityContext
    linux = message({2: security})                                      # LinuxContainerConfig
    return message({1: message({1: name}),                              # ContainerMetadata
                    2: message({1: image}),                             # ImageSpec
                    3: command, 11: log_path, 14: tty, 15: linux})     # ContainerConfig
