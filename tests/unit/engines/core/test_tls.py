"""The TLS context builder, and the connection core serving through it (asyncio's loop;
UNBROKEN_TEST_LOOP=uvloop for uvloop)."""

from __future__ import annotations

import contextlib
import ssl
from pathlib import Path
from typing import Any

import pytest
import trustme
from cryptography.hazmat.primitives import serialization
from wsgi_harness import serve

from unbroken.engines import EngineSettings
from unbroken.engines.core.tls import TLSError, server_context


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def files(tmp_path: Path, ca: trustme.CA) -> dict[str, str]:
    leaf = ca.issue_cert("127.0.0.1")
    paths = {name: str(tmp_path / name) for name in ("cert.pem", "key.pem", "ca.pem")}
    leaf.cert_chain_pems[0].write_to_path(paths["cert.pem"])
    leaf.private_key_pem.write_to_path(paths["key.pem"])
    ca.cert_pem.write_to_path(paths["ca.pem"])
    return paths


def settings(files: dict[str, str], **overrides: Any) -> EngineSettings:
    values: dict[str, Any] = {"certfile": files["cert.pem"], "keyfile": files["key.pem"]}
    return EngineSettings(**(values | overrides))


def handshake(server: ssl.SSLContext, client: ssl.SSLContext) -> ssl.SSLObject:
    """Run a TLS handshake in memory; return the client's end."""
    buffers = [ssl.MemoryBIO() for _ in range(4)]
    client_end = client.wrap_bio(buffers[0], buffers[1], server_hostname="127.0.0.1")
    server_end = server.wrap_bio(buffers[2], buffers[3], server_side=True)
    for _ in range(10):
        for end, outgoing, incoming in ((client_end, buffers[1], buffers[2]),
                                        (server_end, buffers[3], buffers[0])):
            with contextlib.suppress(ssl.SSLWantReadError):
                end.do_handshake()
            incoming.write(outgoing.read())
    return client_end


def test_no_certfile_means_no_tls() -> None:
    assert server_context(EngineSettings()) is None


def test_modern_defaults(files: dict[str, str], ca: trustme.CA) -> None:
    context = server_context(settings(files))
    assert context is not None
    assert context.minimum_version is ssl.TLSVersion.TLSv1_2
    assert context.verify_mode is ssl.CERT_NONE
    client = ssl.create_default_context()
    ca.configure_trust(client)
    client.set_alpn_protocols(["h2", "http/1.1"])
    end = handshake(context, client)
    assert end.selected_alpn_protocol() == "http/1.1"
    assert end.version() in ("TLSv1.2", "TLSv1.3")


@pytest.mark.parametrize(("cert_reqs", "mode"), [("none", ssl.CERT_NONE),
                                                 ("optional", ssl.CERT_OPTIONAL),
                                                 ("required", ssl.CERT_REQUIRED)])
def test_client_certificates(files: dict[str, str], cert_reqs: str, mode: ssl.VerifyMode) -> None:
    context = server_context(settings(files, ca_certs=files["ca.pem"], cert_reqs=cert_reqs))
    assert context is not None and context.verify_mode is mode


def test_missing_key_names_the_file(files: dict[str, str]) -> None:
    with pytest.raises(TLSError, match=r"^cannot read --keyfile /\S+/nope: No such file"):
        server_context(settings(files, keyfile=files["cert.pem"][:-8] + "nope"))


def test_key_of_another_certificate(files: dict[str, str], ca: trustme.CA,
                                    tmp_path: Path) -> None:
    other = tmp_path / "other.pem"
    ca.issue_cert("other.test").private_key_pem.write_to_path(str(other))
    with pytest.raises(TLSError, match=r"the key does not belong to the certificate$"):
        server_context(settings(files, keyfile=str(other)))


def test_garbage_is_not_pem(files: dict[str, str], tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    with pytest.raises(TLSError, match=r"not a PEM certificate and key$"):
        server_context(settings(files, certfile=str(garbage)))
    with pytest.raises(TLSError, match=r"^--ca-certs \S+garbage.pem: "):
        server_context(settings(files, ca_certs=str(garbage)))


def test_encrypted_key_fails_instead_of_prompting(files: dict[str, str],
                                                   tmp_path: Path) -> None:
    key = serialization.load_pem_private_key(Path(files["key.pem"]).read_bytes(), None)
    encrypted = tmp_path / "encrypted.pem"
    encrypted.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret")))
    with pytest.raises(TLSError, match="the key is encrypted"):
        server_context(settings(files, keyfile=str(encrypted)))


def _app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    body = environ["wsgi.url_scheme"].encode()
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]


def test_core_survives_failed_and_stalled_handshakes(files: dict[str, str],
                                                      ca: trustme.CA) -> None:
    client = ssl.create_default_context()
    ca.configure_trust(client)
    with serve(_app, certfile=files["cert.pem"], keyfile=files["key.pem"],
               url_scheme="https") as server:
        with server.connect() as plain, contextlib.suppress(ConnectionResetError):
            plain.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert not plain.recv(100).startswith(b"HTTP")
        with server.connect() as stalled:  # says nothing: header_timeout ends the handshake
            stalled.settimeout(3)
            assert stalled.recv(100) == b""
        with server.connect() as raw, client.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            tls.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            response = b""
            while chunk := tls.recv(4096):
                response += chunk
        assert response.startswith(b"HTTP/1.1 200") and response.endswith(b"https")

