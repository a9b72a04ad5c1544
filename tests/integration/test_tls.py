"""HTTPS: served by both engines, rotated by a reload, refused cleanly when broken.

Certificates come from `trustme` (a throwaway CA); every client trusts only it.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import trustme
from loadcheck import assert_no_failures

from unbroken.loadgen import Load

SCHEME_APP = '''\
def wsgi(environ, start_response):
    body = environ["wsgi.url_scheme"].encode()
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]


async def asgi(scope, receive, send):
    if scope["type"] != "http":
        return
    body = scope["scheme"].encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
'''


class Certificates:
    """A CA and the server's certificate files, rewritten in place to rotate them."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(exist_ok=True)
        self.ca = trustme.CA()
        self.certfile = directory / "server.pem"
        self.keyfile = directory / "server.key"
        self.ca_file = directory / "ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_file))
        self.current = self.issue()

    def issue(self) -> trustme.LeafCert:
        """Write a fresh server certificate and key over the same paths (atomically)."""
        leaf = self.ca.issue_cert("127.0.0.1")
        _replace(self.certfile, leaf.cert_chain_pems[0].bytes())
        _replace(self.keyfile, leaf.private_key_pem.bytes())
        self.current = leaf
        return leaf

    def args(self, *extra: str) -> tuple[str, ...]:
        return ("--certfile", str(self.certfile), "--keyfile", str(self.keyfile), *extra)

    def client_context(self, with_certificate: bool = False) -> ssl.SSLContext:
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        if with_certificate:
            self.ca.issue_cert("client@example.test").configure_cert(context)
        return context


def _replace(path: Path, data: bytes) -> None:
    temporary = path.with_suffix(".tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)


def _der(leaf: trustme.LeafCert) -> bytes:
    return ssl.PEM_cert_to_DER_cert(leaf.cert_chain_pems[0].bytes().decode())


def get(address: tuple[str, int], context: ssl.SSLContext, path: str = "/") -> tuple[int, bytes,
                                                                                     bytes]:
    """One HTTPS GET on a new connection: (status, body, the server certificate's DER)."""
    connection = http.client.HTTPSConnection(*address, timeout=10, context=context)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        body = response.read()
        assert connection.sock is not None
        peer = connection.sock.getpeercert(binary_form=True)
        return response.status, body, peer or b""
    finally:
        connection.close()


@pytest.fixture
def certificates(releases: Path) -> Certificates:
    (releases / "releases" / "v1" / "scheme_app.py").write_text(SCHEME_APP)
    return Certificates(releases / "tls")


@pytest.mark.parametrize("worker_class", ["wsgi", "asgi"])
def test_serves_https_and_survives_bad_handshakes(service_factory: Any,
                                                  certificates: Certificates,
                                                  worker_class: str) -> None:
    service = service_factory(*certificates.args("-k", worker_class),
                              app=f"scheme_app:{worker_class}", workers=1)
    service.wait_serving()
    pids = service.worker_pids()
    with socket.create_connection(service.address, timeout=5) as plain, \
            contextlib.suppress(ConnectionResetError):
        plain.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # HTTP to a TLS port
        assert not plain.recv(100).startswith(b"HTTP")  # an alert or the close, no answer
    untrusting = ssl.create_default_context()  # does not trust the test CA
    with pytest.raises(ssl.SSLCertVerificationError):
        get(service.address, untrusting)
    status, body, _ = get(service.address, certificates.client_context())
    assert (status, body) == (200, b"https")
    context = certificates.client_context()
    context.set_alpn_protocols(["h2", "http/1.1"])
    with socket.create_connection(service.address, timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        assert tls.selected_alpn_protocol() == "http/1.1"
        assert tls.version() in ("TLSv1.2", "TLSv1.3")
    assert service.worker_pids() == pids  # nothing above crashed the worker


def test_reload_rotates_the_certificate_without_a_failed_request(
        service_factory: Any, certificates: Certificates) -> None:
    service = service_factory(*certificates.args())
    service.wait_serving()
    old = certificates.current
    context = certificates.client_context()
    assert get(service.address, context)[2] == _der(old)
    loads = [Load(service.address, clients=3, keep_alive=keep_alive, duration=60,
                  ssl_context=context).start() for keep_alive in (True, False)]
    time.sleep(0.5)
    new = certificates.issue()
    reply = service.reload()
    time.sleep(0.5)
    samples = sorted(loads[0].stop() + loads[1].stop(), key=lambda s: s.start)
    assert reply.ok, reply
    assert_no_failures(samples, service)
    assert _der(new) != _der(old)
    assert get(service.address, context)[2] == _der(new)


def test_reload_with_a_broken_key_is_aborted(service_factory: Any,
                                              certificates: Certificates) -> None:
    service = service_factory(*certificates.args())
    service.wait_serving()
    pids = set(service.worker_pids())
    served = certificates.current
    context = certificates.client_context()
    load = Load(service.address, clients=3, keep_alive=False, duration=60,
                ssl_context=context).start()
    _replace(certificates.keyfile, b"-----BEGIN PRIVATE KEY-----\nbroken\n")
    reply = service.reload()
    time.sleep(0.5)
    assert_no_failures(load.stop(), service)
    assert not reply.ok
    assert f"TLS: --certfile {certificates.certfile}, --keyfile" in reply.message, reply
    state = service.status()
    assert state["generation"] == 1
    assert {w["pid"] for w in state["workers"] if w["generation"] == 1} == pids
    status, _, peer = get(service.address, context)
    assert status == 200 and peer == _der(served)


def test_required_client_certificates(service_factory: Any,
                                      certificates: Certificates) -> None:
    service = service_factory(*certificates.args(
        "--ca-certs", str(certificates.ca_file), "--cert-reqs", "required"), workers=1)
    service.wait_serving()
    pids = service.worker_pids()
    # Under TLS 1.3 the client's handshake ends before the server checks its
    # certificate, so the refusal (an alert, then the close) arrives on first read.
    with pytest.raises((ssl.SSLError, ConnectionResetError, http.client.RemoteDisconnected)):
        get(service.address, certificates.client_context())
    status, _, _ = get(service.address, certificates.client_context(with_certificate=True))
    assert status == 200
    assert service.worker_pids() == pids


def test_first_start_with_a_missing_key_exits_with_one_line(service_factory: Any,
                                                            certificates: Certificates) -> None:
    certificates.keyfile.unlink()
    service = service_factory(*certificates.args(), workers=1)
    assert service.process.wait(timeout=30) == 1
    lines = [line for line in service.output().splitlines() if line.startswith("unbroken:")]
    assert lines == [f"unbroken: startup failed: worker {_worker_pid(lines)}: TLS: cannot read "
                     f"--keyfile {certificates.keyfile}: No such file or directory"], lines


def _worker_pid(lines: list[str]) -> str:
    return lines[0].split("worker ", 1)[1].split(":", 1)[0] if lines else "?"


def test_certfile_without_keyfile_is_a_usage_error(certificates: Certificates) -> None:
    finished = subprocess.run(
        [sys.executable, "-m", "unbroken", "serve", "app:app", "--certfile",
         str(certificates.certfile)], capture_output=True, text=True, timeout=30)
    assert finished.returncode != 0
    assert finished.stderr.strip().splitlines() == [
        "unbroken: TLS needs both --certfile and --keyfile"]
