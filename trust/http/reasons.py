"""Connection failures in words a user can act on (issue 14): what failed, where, what to do.

requests and urllib3 describe a failure by their own classes (`_WatchedHTTPSConnection(host=…):
Failed to resolve …`); those names mean nothing to a user. `describe` walks the exception chain
and names the failure; the raw text stays available as the error's `detail` (shown with -v).
"""

from __future__ import annotations

import errno
import socket
import ssl
from pathlib import Path
from urllib.parse import urlsplit

import requests
import urllib3.exceptions

from trust.http.tls import ca_directory

__all__ = ["describe", "raw_reason"]

#: OpenSSL verify codes (X509_V_ERR_*) that mean "no trusted CA vouches for this certificate".
_UNTRUSTED = {2, 18, 19, 20, 21, 27}
_EXPIRED = 10
_NOT_YET_VALID = 9
_HOSTNAME_MISMATCH = 62


def _chain(exc: BaseException) -> list[BaseException]:
    """`exc` and everything it wraps (args, reason, __cause__, __context__), outermost first."""
    seen: list[BaseException] = []
    todo: list[BaseException] = [exc]
    while todo and len(seen) < 20:
        current = todo.pop(0)
        if any(current is known for known in seen):
            continue
        seen.append(current)
        for inner in (
            *(arg for arg in current.args if isinstance(arg, BaseException)),
            getattr(current, "reason", None),
            current.__cause__,
            current.__context__,
        ):
            if isinstance(inner, BaseException):
                todo.append(inner)
    return seen


def raw_reason(exc: BaseException) -> str:
    """The innermost useful message of a requests/urllib3 exception chain (for -v)."""
    text = str(exc)
    inner: BaseException | None = exc
    while inner is not None and inner.args and isinstance(inner.args[0], BaseException):
        inner = inner.args[0]
        text = str(inner)
    reason = getattr(inner, "reason", None)
    if reason is not None:
        text = str(reason)
    return text[:300]


def describe(exc: BaseException, url: str, docker_config: Path) -> str:
    """What went wrong connecting to `url`, in words; never an internal class name."""
    parts = urlsplit(url)
    host = parts.hostname or parts.netloc
    netloc = parts.netloc
    chain = _chain(exc)
    for inner in chain:
        if isinstance(inner, ssl.SSLCertVerificationError):
            code = inner.verify_code
            if code == _HOSTNAME_MISMATCH:
                return f"TLS: the certificate of {netloc} is not valid for the name {host}"
            if code == _EXPIRED:
                return f"TLS: the certificate of {netloc} has expired"
            if code == _NOT_YET_VALID:
                return f"TLS: the certificate of {netloc} is not valid yet"
            if code in _UNTRUSTED:
                directory = ca_directory(docker_config, netloc)
                return (
                    f"TLS: certificate not trusted for {netloc} "
                    f"(put its CA in {directory}/, named *.crt)"
                )
            return f"TLS: the certificate of {netloc} was refused ({inner.verify_message})"
    words = (
        ((urllib3.exceptions.NameResolutionError, socket.gaierror), f"cannot resolve {host}"),
        ((ConnectionRefusedError,), f"connection refused by {netloc}"),
        ((ConnectionResetError,), f"connection reset by {netloc}"),
        ((urllib3.exceptions.ProxyError,), f"the HTTPS proxy for {netloc} failed"),
        ((urllib3.exceptions.ReadTimeoutError,), f"{netloc} stopped answering (read timed out)"),
    )
    for kinds, text in words:  # most specific first, anywhere in the chain
        if any(isinstance(inner, kinds) for inner in chain):
            return text
    for inner in chain:
        if isinstance(inner, OSError) and inner.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH):
            return f"no route to {netloc} (network unreachable)"
    for inner in chain:
        # NewConnectionError is a ConnectTimeoutError subclass in urllib3: only a real timeout.
        if isinstance(inner, urllib3.exceptions.ConnectTimeoutError) and not isinstance(
            inner, urllib3.exceptions.NewConnectionError
        ):
            return f"no answer from {netloc} (timed out connecting)"
        if isinstance(inner, ssl.SSLError | urllib3.exceptions.SSLError):
            return f"TLS handshake with {netloc} failed"
    if isinstance(exc, requests.exceptions.Timeout):
        return f"no answer from {netloc} (timed out)"
    return f"cannot connect to {netloc}"
