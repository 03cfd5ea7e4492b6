"""Callbacks to https URLs are verified, with the process's one cached TLS context: a real HTTPS server on
loopback with a certificate made here, trusted only when ``SSL_CERT_FILE`` names it."""

from __future__ import annotations

import datetime as dt
import http.server
import ipaddress
import json
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from core.db import session_scope
from core.models import CallbackAttempt
from flows.callbacks import post_with_backoff, tls_context
from tests.conftest import Stack
from tests.flows.test_callback_delivery import _job


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "geoexport test callback receiver")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


class _Receiver(http.server.BaseHTTPRequestHandler):
    received: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server API
        _Receiver.received.append(json.loads(self.rfile.read(int(self.headers["content-length"]))))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def https_receiver(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    cert, key = _self_signed(tmp_path)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    _Receiver.received = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}/cb", cert
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _errors(job_id: object) -> list[str | None]:
    with session_scope() as s:
        return [a.error for a in s.query(CallbackAttempt).filter_by(job_id=job_id).order_by(CallbackAttempt.attempt)]


def test_https_callback_to_an_untrusted_certificate_is_refused(stack: Stack, https_receiver: tuple[str, Path],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    url, _cert = https_receiver
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    job_id = _job([url])
    assert post_with_backoff(job_id, url, {"status": "Completed", "requestId": str(job_id)}) is False
    errors = _errors(job_id)
    assert len(errors) == 5  # every attempt (GEOEXPORT_CALLBACK_RETRIES=4 in the test stack) recorded
    assert all(e and "CERTIFICATE_VERIFY_FAILED" in e for e in errors), errors
    assert _Receiver.received == []


def test_https_callback_trusted_through_ssl_cert_file(stack: Stack, https_receiver: tuple[str, Path],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    url, cert = https_receiver
    untrusted = tls_context()
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    trusted = tls_context()
    assert trusted is not untrusted and tls_context() is trusted  # one context per CA setting, reused
    job_id = _job([url])
    assert post_with_backoff(job_id, url, {"status": "Completed", "requestId": str(job_id)}) is True
    assert _errors(job_id) == [None]
    assert [p["status"] for p in _Receiver.received] == ["Completed"]
