"""Files the Debian recipes add on top of the mmdebstrap rootfs (one small extra layer): entrypoints
and a tiny stdlib-only python status app."""
from __future__ import annotations

from .tarbuild import D, F

# MariaDB: initialise the datadir on first start (an empty volume), then run mariadbd in the
# foreground.  MYSQL_DATABASE / MYSQL_USER / MYSQL_PASSWORD (docker-library names) become an
# --init-file of idempotent statements, run at every start; values are quoted for SQL strings.
MARIADB_ENTRYPOINT = r"""#!/bin/sh
set -e
datadir=/var/lib/mysql
mkdir -p "$datadir" /run/mysqld
chown mysql:mysql "$datadir" /run/mysqld
if [ ! -d "$datadir/mysql" ]; then
    mariadb-install-db --user=mysql --datadir="$datadir" --skip-test-db --skip-auth-anonymous-user >/dev/null
fi
q() { printf "%s" "$1" | sed "s/\\\\/\\\\\\\\/g; s/'/''/g"; }
init=/run/mysqld/init.sql
: > "$init"
if [ -n "$MYSQL_DATABASE" ]; then
    printf "%s\n" "CREATE DATABASE IF NOT EXISTS \`$(printf "%s" "$MYSQL_DATABASE" | sed 's/`/``/g')\`;" >> "$init"
fi
if [ -n "$MYSQL_USER" ]; then
    printf "%s\n" "CREATE USER IF NOT EXISTS '$(q "$MYSQL_USER")'@'%' IDENTIFIED BY '$(q "$MYSQL_PASSWORD")';" >> "$init"
    if [ -n "$MYSQL_DATABASE" ]; then
        printf "%s\n" "GRANT ALL ON \`$(printf "%s" "$MYSQL_DATABASE" | sed 's/`/``/g')\`.* TO '$(q "$MYSQL_USER")'@'%';" >> "$init"
    fi
fi
chown mysql:mysql "$init"
exec mariadbd --user=mysql --datadir="$datadir" --bind-address=0.0.0.0 --init-file="$init" "$@"
"""

# The python app: GET any path -> JSON status; it PINGs redis (REDIS_HOST and a numeric REDIS_PORT,
# else the host and port of REDIS_URL) with a raw socket and reports the answer.
STATUS_APP = r'''"""Tiny status API (stdlib only): GET / -> JSON with this app's settings and a redis PING."""
import json
import os
import socket
import socketserver
from http.server import BaseHTTPRequestHandler
from urllib.parse import urlsplit

SHOWN = ("REDIS_URL", "KAFKA_BROKERS", "DB_HOST", "STATSD_HOST", "STATSD_PORT")


def redis_target():
    url = urlsplit(os.environ.get("REDIS_URL", "redis://redis:6379/0"))
    port = os.environ.get("REDIS_PORT", "")  # a link named redis sets REDIS_PORT=tcp://ADDR:6379
    return os.environ.get("REDIS_HOST", url.hostname or "redis"), int(port) if port.isdigit() else url.port or 6379


def redis_ping():
    host, port = redis_target()
    try:
        with socket.create_connection((host, port), timeout=2) as s:
            s.sendall(b"PING\r\n")
            return {"host": host, "port": port, "reply": s.recv(64).decode(errors="replace").strip()}
    except OSError as e:
        return {"host": host, "port": port, "error": str(e)}


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"app": os.environ.get("APP_NAME", "status-app"), "hostname": socket.gethostname(),
                           "path": self.path, "redis": redis_ping(),
                           "env": {k: os.environ[k] for k in SHOWN if k in os.environ}}).encode() + b"\n"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt, *args):
        pass


class Server(socketserver.ThreadingTCPServer):
    # not http.server's HTTPServer: its bind looks up the FQDN of 0.0.0.0, a DNS timeout in a
    # container without a resolver
    allow_reuse_address = True
    daemon_threads = True


if __name__ == "__main__":
    Server(("0.0.0.0", int(os.environ.get("PORT", "5000"))), Handler).serve_forever()
'''

# parents (usr/local/bin, srv) are in every Debian rootfs: only new directories are listed
MARIADB_FILES = (F("usr/local/bin/mariadb-entrypoint", MARIADB_ENTRYPOINT, mode=0o755),)
PYTHON_APP_FILES = (D("srv/app"), F("srv/app/status_app.py", STATUS_APP))
