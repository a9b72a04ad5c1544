"""The server's TLS context, built from the settings by every new worker at boot.

Rules:
1. The certificate and key are read here, in the worker, never in the master. A
   reload boots new workers, so writing new files over the old paths and reloading
   rotates the certificate with the old generation serving until the new one is
   ready; a file that cannot be used fails the boot (`TLSError`), which aborts
   the reload and leaves the old generation serving.
2. Modern defaults and nothing to tune: `ssl.create_default_context` for client
   authentication (no SSLv3, no compression, the OpenSSL default cipher list),
   TLS 1.2 as the floor, and ALPN offering only `http/1.1`, the one protocol the
   connection core speaks.
"""

from __future__ import annotations

import ssl

from unbroken.engines import EngineSettings
from unbroken.errors import UsageError

ALPN_PROTOCOLS = ["http/1.1"]
CERT_REQS = {
    "none": ssl.CERT_NONE,
    "optional": ssl.CERT_OPTIONAL,
    "required": ssl.CERT_REQUIRED,
}


class TLSError(UsageError):
    """The TLS settings cannot be used; the message is one line naming the file."""


def server_context(settings: EngineSettings) -> ssl.SSLContext | None:
    """The context to wrap accepted connections in, or None when TLS is off."""
    if not settings.certfile:
        return None
    if not settings.keyfile:
        raise TLSError("--certfile needs --keyfile")
    if settings.cert_reqs not in CERT_REQS:
        raise TLSError(f"--cert-reqs {settings.cert_reqs!r}: expected none, optional or required")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(ALPN_PROTOCOLS)
    _load_chain(context, settings.certfile, settings.keyfile)
    if settings.ca_certs:
        _load_ca_certs(context, settings.ca_certs)
    context.verify_mode = CERT_REQS[settings.cert_reqs]
    return context


def _load_chain(context: ssl.SSLContext, certfile: str, keyfile: str) -> None:
    def refuse_password() -> str:
        # An encrypted key would otherwise make OpenSSL prompt on the worker's
        # terminal and hang the boot until --boot-timeout.
        raise TLSError(f"--keyfile {keyfile}: the key is encrypted; give an unencrypted key")

    _check_readable("--certfile", certfile)
    _check_readable("--keyfile", keyfile)
    try:
        context.load_cert_chain(certfile, keyfile, password=refuse_password)
    except ssl.SSLError as error:
        raise TLSError(f"--certfile {certfile}, --keyfile {keyfile}: {_reason(error)}") from None


def _check_readable(flag: str, path: str) -> None:
    """Name the file at fault: OpenSSL's own error does not say which one it was."""
    try:
        with open(path, "rb"):
            pass
    except OSError as error:
        raise TLSError(f"cannot read {flag} {path}: {error.strerror or error}") from None


def _load_ca_certs(context: ssl.SSLContext, ca_certs: str) -> None:
    _check_readable("--ca-certs", ca_certs)
    try:
        context.load_verify_locations(cafile=ca_certs)
    except ssl.SSLError as error:
        raise TLSError(f"--ca-certs {ca_certs}: {_reason(error)}") from None


# OpenSSL's reason codes, said as what to fix.
REASONS = {
    "PEM_LIB": "not a PEM certificate and key",
    "KEY_VALUES_MISMATCH": "the key does not belong to the certificate",
    "NO_START_LINE": "no PEM data found",
    "NO_CERTIFICATE_OR_CRL_FOUND": "no PEM certificate found",
    "EE_KEY_TOO_SMALL": "the key is too small for OpenSSL's security level",
    "CA_MD_TOO_WEAK": "the certificate's signature algorithm is too weak",
}


def _reason(error: ssl.SSLError) -> str:
    # A file that holds no PEM block comes back with no reason, only "[SSL] PEM lib".
    reason = error.reason or ("PEM_LIB" if "PEM lib" in str(error) else "")
    return REASONS.get(reason, reason.lower().replace("_", " ") or str(error))
