"""The debian-zookeeper recipe's parts: Apache ZooKeeper from Debian's libzookeeper-java on a
Java runtime cut down with jlink from Debian's OpenJDK 17, started with `java` directly in the
foreground (no init script, no `zookeeper` package: that one depends on the full default-jre and
its X11 stack).

The rootfs is slimmed while it is bootstrapped:
- jlink (from openjdk-17-jdk-headless, installed for the build only) writes a runtime of just the
  modules ZooKeeper, its jars and log4j use (`jdeps --print-module-deps`, plus jdk.management and
  jdk.crypto.ec, which ZooKeeper reaches by reflection) with a CDS archive; it is installed as a
  local package `zookeeper-jre` that provides java*-runtime-headless (junit4, a dependency of
  libzookeeper-java, wants one), so apt can then purge the JDK, the JRE and what only they needed
  (fonts, cups, X libraries) and the dpkg database stays consistent;
- dpkg path filters drop docs (not the copyright files), man pages, locales, info, maven poms
  and the CDS archive for heaps over 32 GB;
- perl goes: apt satisfies init-system-helpers' "usrmerge | usr-is-merged" with usrmerge, which
  needs perl, so usr-is-merged is installed too and the usrmerge chain purged.
"""
from __future__ import annotations

from . import slim
from .slim import SLIM_PATHS  # noqa: F401 (the recipe's slimming is every Debian recipe's)
from .tarbuild import D, F

ZK_UID = ZK_GID = 999   # fixed, so a data volume keeps its owner across image rebuilds
ZK_DATA = "/var/lib/zookeeper"
ZK_CONF = "/etc/zookeeper"
CLIENT_PORT = 2181

INCLUDE = ["openjdk-17-jdk-headless", "libzookeeper-java", "usr-is-merged"]

JDK = "/usr/lib/jvm/java-17-openjdk-amd64"
JRE = "/usr/lib/jvm/zookeeper-jre"
# `jdeps --print-module-deps` over zookeeper.jar, its Class-Path jars, slf4j-log4j12 and log4j 1.2
# (java.desktop is log4j's and jackson's java.beans), plus what ZooKeeper loads by reflection:
# jdk.management (open file descriptor counts in srvr/mntr) and jdk.crypto.ec (TLS)
JRE_MODULES = ("java.base", "java.desktop", "java.management", "java.naming", "java.security.jgss",
               "java.security.sasl", "java.sql", "jdk.unsupported", "jdk.management", "jdk.crypto.ec")
JRE_PROVIDES = "java5-runtime-headless, java8-runtime-headless, java11-runtime-headless, java17-runtime-headless"
# run by mmdebstrap as `sh -c HOOK exec ROOT`
JLINK_HOOK = f"""set -e
pkg="$1/tmp/zookeeper-jre"
mkdir -p "$pkg/DEBIAN" "$pkg/usr/lib/jvm"
chroot "$1" {JDK}/bin/jlink --module-path {JDK}/jmods --add-modules {",".join(JRE_MODULES)} \\
    --strip-java-debug-attributes --no-man-pages --no-header-files --compress=2 --generate-cds-archive \\
    --output /tmp/zookeeper-jre{JRE}
version=$(chroot "$1" dpkg-query -W -f '${{Version}}' openjdk-17-jdk-headless)
printf '%s\\n' "Package: zookeeper-jre" "Version: $version" "Architecture: amd64" \\
    "Maintainer: provisioner test images <root@localhost>" "Provides: {JRE_PROVIDES}" \\
    "Description: OpenJDK 17 runtime cut down with jlink for ZooKeeper" > "$pkg/DEBIAN/control"
chroot "$1" dpkg-deb --root-owner-group -b /tmp/zookeeper-jre /tmp/zookeeper-jre.deb >/dev/null
chroot "$1" dpkg -i /tmp/zookeeper-jre.deb
rm -rf "$pkg" "$1/tmp/zookeeper-jre.deb"
chroot "$1" apt-get purge -y --auto-remove -o Dpkg::Use-Pty=0 openjdk-17-jdk-headless openjdk-17-jre-headless \\
    ca-certificates-java java-common >/dev/null
ln -sf {JRE}/bin/java "$1/usr/bin/java"
"""
# nothing else in the rootfs depends on these once usr-is-merged is there (~48 MB)
PERL_CHAIN = ("usrmerge", "libfile-find-rule-perl", "libnumber-compare-perl", "libtext-glob-perl", "perl",
              "libperl5.36", "perl-modules-5.36", "libgdbm-compat4", "libgdbm6")


def mmdebstrap_options() -> list[str]:
    """mmdebstrap arguments (besides variant, include and suite) that slim the rootfs and add the
    zookeeper user."""
    opts = slim.options()
    opts.append(f'--customize-hook=chroot "$1" dpkg --purge {" ".join(PERL_CHAIN)}')
    opts.append(f"--customize-hook={JLINK_HOOK}")
    opts.append(f'--customize-hook=chroot "$1" groupadd --system --gid {ZK_GID} zookeeper')
    opts.append(f'--customize-hook=chroot "$1" useradd --system --uid {ZK_UID} --gid zookeeper '
                f'--home-dir {ZK_DATA} --no-create-home --shell /usr/sbin/nologin zookeeper')
    return opts


# Debian's zookeeper.jar names its dependencies in its manifest's Class-Path; slf4j's log4j binding
# and log4j itself are not among them (without them ZooKeeper logs nothing).
CLASSPATH = ":".join(f"/usr/share/java/{j}" for j in ("zookeeper.jar", "slf4j-log4j12.jar", "log4j-1.2.jar"))
MAIN_CLASS = "org.apache.zookeeper.server.quorum.QuorumPeerMain"

# Config from the environment, with the docker-library image's variable names.  `--print-config`
# writes zoo.cfg to stdout and stops (the unit tests use it).
ENTRYPOINT = r"""#!/bin/sh
set -e
: "${ZOO_DATA_DIR:=__DATA__}"
: "${ZOO_MY_ID:=1}"
: "${ZOO_CLIENT_PORT:=__PORT__}"
case "$ZOO_MY_ID" in
    [1-9]|[1-9][0-9]|1[0-9][0-9]|2[0-4][0-9]|25[0-5]) ;;
    *) echo "zookeeper-entrypoint: ZOO_MY_ID must be a number from 1 to 255, not '$ZOO_MY_ID'" >&2
       exit 2 ;;
esac
config() {
    echo "dataDir=$ZOO_DATA_DIR"
    echo "clientPort=$ZOO_CLIENT_PORT"
    echo "tickTime=${ZOO_TICK_TIME:-2000}"
    echo "initLimit=${ZOO_INIT_LIMIT:-5}"
    echo "syncLimit=${ZOO_SYNC_LIMIT:-2}"
    echo "maxClientCnxns=${ZOO_MAX_CLIENT_CNXNS:-60}"
    echo "autopurge.snapRetainCount=${ZOO_AUTOPURGE_SNAPRETAINCOUNT:-3}"
    echo "autopurge.purgeInterval=${ZOO_AUTOPURGE_PURGEINTERVAL:-0}"
    echo "4lw.commands.whitelist=${ZOO_4LW_COMMANDS_WHITELIST:-ruok,srvr}"
    echo "admin.enableServer=${ZOO_ADMINSERVER_ENABLED:-false}"
    echo "standaloneEnabled=${ZOO_STANDALONE_ENABLED:-true}"
    # an ensemble: ZOO_SERVERS="server.1=zk1:2888:3888;2181 server.2=..."
    for server in $ZOO_SERVERS; do
        echo "$server"
    done
}
if [ "$1" = "--print-config" ]; then
    config
    exit 0
fi
mkdir -p "$ZOO_DATA_DIR"
config > __CONF__/zoo.cfg
[ -f "$ZOO_DATA_DIR/myid" ] || echo "$ZOO_MY_ID" > "$ZOO_DATA_DIR/myid"
drop=""
if [ "$(id -u)" = 0 ]; then
    # a fresh volume is root's: hand it to zookeeper, then run java as zookeeper with no capabilities
    chown zookeeper:zookeeper "$ZOO_DATA_DIR" "$ZOO_DATA_DIR/myid"
    drop="setpriv --reuid=zookeeper --regid=zookeeper --init-groups --inh-caps=-all --bounding-set=-all"
fi
# JVMFLAGS is split into words on purpose
exec $drop java $JVMFLAGS -Dzookeeper.root.logger="${ZOO_LOG_LEVEL:-INFO},CONSOLE" \
    -Dlog4j.configuration=file:__CONF__/log4j.properties -cp __CLASSPATH__ __MAIN__ __CONF__/zoo.cfg
""".replace("__DATA__", ZK_DATA).replace("__PORT__", str(CLIENT_PORT)).replace("__CONF__", ZK_CONF) \
   .replace("__CLASSPATH__", CLASSPATH).replace("__MAIN__", MAIN_CLASS)

LOG4J = """log4j.rootLogger=${zookeeper.root.logger}
log4j.appender.CONSOLE=org.apache.log4j.ConsoleAppender
log4j.appender.CONSOLE.layout=org.apache.log4j.PatternLayout
log4j.appender.CONSOLE.layout.ConversionPattern=%d{ISO8601} %-5p [%t] %c{1} - %m%n
log4j.appender.STDERR=org.apache.log4j.ConsoleAppender
log4j.appender.STDERR.Target=System.err
log4j.appender.STDERR.layout=org.apache.log4j.PatternLayout
log4j.appender.STDERR.layout.ConversionPattern=%d{ISO8601} %-5p [%t] %c{1} - %m%n
"""

# A four-letter-word client for health checks: bash's /dev/tcp (a JVM per check would cost seconds
# and the image has no nc).  ZooKeeper answers and closes the connection.
FOUR_LW = r"""#!/bin/bash
# zk-4lw WORD [HOST [PORT]]: print ZooKeeper's answer to a four-letter word (ruok, srvr, ...)
word=${1:?usage: zk-4lw WORD [HOST [PORT]]} host=${2:-127.0.0.1} port=${3:-${ZOO_CLIENT_PORT:-__PORT__}}
exec 3<>"/dev/tcp/$host/$port" || exit 1
printf %s "$word" >&3
answer=$(timeout 5 cat <&3) || true
[ -n "$answer" ] || { echo "zk-4lw: no answer to $word from $host:$port" >&2; exit 1; }
printf '%s\n' "$answer"
""".replace("__PORT__", str(CLIENT_PORT))

RUOK = r"""#!/bin/bash
# zk-ruok [HOST [PORT]]: exit 0 when ZooKeeper answers "ruok" with "imok" (the image's health check)
answer=$(zk-4lw ruok "$@") || exit 1
[ "$answer" = imok ] && echo imok
"""

# ZooKeeper's own command-line client (one JVM per call: for people and tests, not health checks)
CLI = r"""#!/bin/sh
# zk-cli [-server HOST:PORT] CMD ARGS...   e.g. zk-cli create /app data; zk-cli get /app
exec java -Xmx64m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Dzookeeper.root.logger=WARN,STDERR \
    -Dlog4j.configuration=file:__CONF__/log4j.properties -cp __CLASSPATH__ org.apache.zookeeper.ZooKeeperMain "$@"
""".replace("__CONF__", ZK_CONF).replace("__CLASSPATH__", CLASSPATH)

FILES = (
    D(ZK_CONF.lstrip("/"), uid=ZK_UID, gid=ZK_GID),
    D(ZK_DATA.lstrip("/"), mode=0o750, uid=ZK_UID, gid=ZK_GID),
    F(f"{ZK_CONF.lstrip('/')}/log4j.properties", LOG4J),
    F("usr/local/bin/zookeeper-entrypoint", ENTRYPOINT, mode=0o755),
    F("usr/local/bin/zk-4lw", FOUR_LW, mode=0o755),
    F("usr/local/bin/zk-ruok", RUOK, mode=0o755),
    F("usr/local/bin/zk-cli", CLI, mode=0o755),
)

JVMFLAGS = "-Xmx256m -XX:+UseSerialGC -XX:-UsePerfData"

CONFIG = {
    "Entrypoint": ["/usr/local/bin/zookeeper-entrypoint"],
    "Env": [f"JVMFLAGS={JVMFLAGS}"],
    "ExposedPorts": {f"{CLIENT_PORT}/tcp": {}, "2888/tcp": {}, "3888/tcp": {}},
    "Volumes": {ZK_DATA: {}},
    "WorkingDir": ZK_DATA,
}
