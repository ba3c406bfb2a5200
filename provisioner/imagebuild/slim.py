"""What every Debian test image leaves out (dpkg path filters given to mmdebstrap): docs but their
copyright files, man pages, locales, info, lintian overrides, maven poms, one unused JVM archive."""
from __future__ import annotations

SLIM_PATHS = ("/usr/share/doc/*", "/usr/share/man/*", "/usr/share/locale/*", "/usr/share/info/*",
              "/usr/share/lintian/*", "/usr/share/maven-repo/*",
              # only used with compressed oops off (heaps over 32 GB); without it the JVM just starts unshared
              "/usr/lib/jvm/*/lib/server/classes_nocoops.jsa")


def options() -> list[str]:
    opts = [f"--dpkgopt=path-exclude={p}" for p in SLIM_PATHS]
    opts.append("--dpkgopt=path-include=/usr/share/doc/*/copyright")
    # openjdk's postinst registers man pages as update-alternatives slaves: their directory must exist
    opts.append('--essential-hook=mkdir -p "$1/usr/share/man/man1"')
    return opts
