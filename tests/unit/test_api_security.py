"""Who may reach the Engine API (it is root-equivalent): the unix socket is 0660, root's group
unless told, never readable by others; TCP only with TLS and a client certificate the given CA
signed — a client without one, or with a certificate of another CA, gets no answer."""
from __future__ import annotations

import os
import socket
import ssl
import stat
import subprocess

import pytest
from click.testing import CliRunner

from provisioner.api.app import make_server
from provisioner.cli.main import cli
from provisioner.runner import Runner

pytestmark = pytest.mark.skipif(not os.path.exists("/usr/bin/openssl"), reason="openssl makes the certificates")


def _ca(d, name):
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", str(d / f"{name}.key"), "-out", str(d / f"{name}.pem"), "-days", "2",
                    "-subj", f"/CN={name}"], check=True, capture_output=True)


def _cert(d, ca, name, san=""):
    subprocess.run(["openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", str(d / f"{name}.key"), "-out", str(d / f"{name}.csr"), "-subj", f"/CN={name}"],
                   check=True, capture_output=True)
    ext = d / f"{name}.ext"
    ext.write_text(f"subjectAltName={san}\n" if san else "extendedKeyUsage=clientAuth\n")
    subprocess.run(["openssl", "x509", "-req", "-in", str(d / f"{name}.csr"), "-CA", str(d / f"{ca}.pem"),
                    "-CAkey", str(d / f"{ca}.key"), "-CAcreateserial", "-out", str(d / f"{name}.pem"), "-days", "2",
                    "-extfile", str(ext)], check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    _ca(d, "ca")
    _ca(d, "other")
    _cert(d, "ca", "server", san="IP:127.0.0.1")
    _cert(d, "ca", "client")
    _cert(d, "other", "stranger")
    return d


def _ping(port, pki, cert=None) -> bytes:
    ctx = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    if cert:
        ctx.load_cert_chain(str(pki / f"{cert}.pem"), str(pki / f"{cert}.key"))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
            s.sendall(b"GET /_ping HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
            return data


def test_the_socket_is_0660_and_tcp_needs_a_client_certificate_of_the_ca(tmp_path, pki):
    path = tmp_path / "docker.sock"
    srv = make_server(tmp_path / "root", Runner(), socket_path=str(path), tls_listen="127.0.0.1:0",
                      tlscacert=str(pki / "ca.pem"), tlscert=str(pki / "server.pem"), tlskey=str(pki / "server.key"))
    port = next(s.getsockname()[1] for s in srv.listeners if s.family == socket.AF_INET)
    srv.start()
    try:
        st = path.stat()
        assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o660
        if os.geteuid() == 0:
            assert (st.st_uid, st.st_gid) == (0, 0)
        assert _ping(port, pki, "client").startswith(b"HTTP/1.1 200") and _ping(port, pki, "client").endswith(b"OK")
        for cert in (None, "stranger"):
            with pytest.raises((ssl.SSLError, ConnectionError)):
                if not _ping(port, pki, cert):     # TLS 1.3: the refusal may come as the connection's end
                    raise ConnectionError("no answer")
    finally:
        srv.close()
    assert not path.exists()


@pytest.mark.parametrize("args,why", [
    (["--tls-listen", "0.0.0.0:2376"], "--tls-listen needs --tlscacert, --tlscert and --tlskey"),
    (["--tlscert", "/x.pem"], "without --tls-listen"),
    (["--daemon"], "--daemon needs --pid-file"),
])
def test_tcp_without_tls_is_refused_before_anything_listens(tmp_path, args, why):
    res = CliRunner().invoke(cli, ["--root", str(tmp_path), "host", "api", "--socket", str(tmp_path / "s.sock"), *args])
    assert res.exit_code != 0 and why in (res.output + str(res.exception))
    assert not (tmp_path / "s.sock").exists()
