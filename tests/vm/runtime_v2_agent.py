#!/usr/bin/env python3
"""Copied into the VM by test_runtime_v2.py and run there as root (python3 only: no pytest, no
provisioner package). It makes bundles and observes; the test on the host side decides.

  rootfs DIR BUSYBOX        a busybox-static rootfs (one symlink per applet)
  bundle DIR ROOTFS         config.json (JSON on stdin) written to DIR, its root.path set to ROOTFS
  cg PATH                   {"exists", "files": {name: content}} of /sys/fs/cgroup/PATH
"""
import json
import os
import subprocess
import sys

CG = "/sys/fs/cgroup"


def rootfs(dest, busybox):
    os.makedirs(dest + "/bin")
    with open(busybox, "rb") as src, open(dest + "/bin/busybox", "wb") as dst:
        dst.write(src.read())
    os.chmod(dest + "/bin/busybox", 0o755)
    applets = subprocess.run([busybox, "--list"], check=True, capture_output=True, text=True).stdout.split()
    for a in applets:
        if a != "busybox":
            os.symlink("busybox", dest + "/bin/" + a)
    for d in ("proc", "sys", "dev", "tmp", "etc"):
        os.mkdir(dest + "/" + d)
    with open(dest + "/etc/passwd", "w") as f:
        f.write("root:x:0:0:root:/:/bin/sh\n")
    return {"applets": len(applets)}


def bundle(dest, root):
    cfg = json.load(sys.stdin)
    if "root" in cfg:  # a config without root is a case the tests want to see refused
        cfg["root"]["path"] = root
    os.makedirs(dest, exist_ok=True)
    with open(dest + "/config.json", "w") as f:
        json.dump(cfg, f, indent=2)
    return {"bundle": dest}


def cg(path):
    d = os.path.join(CG, path.lstrip("/"))
    files = {}
    if os.path.isdir(d):
        for name in sorted(os.listdir(d)):
            p = os.path.join(d, name)
            if not os.path.isfile(p):
                continue
            try:
                with open(p) as f:
                    files[name] = f.read().strip()
            except OSError:  # write-only or not readable here (cgroup.kill, memory.reclaim, ...)
                pass
    return {"exists": os.path.isdir(d), "files": files}


def main(argv):
    cmd, args = argv[0], argv[1:]
    if cmd == "rootfs":
        result = rootfs(*args)
    elif cmd == "bundle":
        result = bundle(*args)
    elif cmd == "cg":
        result = cg(*args)
    else:
        sys.exit(f"runtime_v2_agent: unknown command {cmd!r}")
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1:])
