"""TCP connections started before the HTTPS stack is imported (issue 13: a far trust server).

`start(host, port)` begins a non-blocking TCP connect and returns at once, so the kernel does the
handshake's round trip while the process imports `requests` and builds its TLS context.
`adopt(host, port, timeout)` is called by trust.http.watchdog's HTTPS connection in place of its
own `connect()`: it hands over that socket once connected (waiting at most `timeout`), or None,
and the connection then connects as it always did. Only the TCP connect moves: TLS (the context,
the certificate and host name checks) and everything above it are the connection's own, on this
socket exactly as on one it made itself. A socket is used at most once, only for exactly the
address it was started for, and only within `MAX_AGE_SECONDS`.

Standard library only, and no import of trust.http: this runs before either is loaded.
"""

from __future__ import annotations

import contextlib
import errno
import select
import socket
import threading
import time

__all__ = ["MAX_AGE_SECONDS", "adopt", "discard", "start"]

#: A connection not adopted within this many seconds is closed instead (the server may have
#: dropped an idle connection by then).
MAX_AGE_SECONDS = 10.0

_lock = threading.Lock()
_pending: dict[tuple[str, int], tuple[socket.socket, float]] = {}


def start(host: str, port: int) -> bool:
    """Begin connecting to (host, port); False when it could not even start (no matter: the
    HTTPS connection then connects itself)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
    except OSError:
        return False
    try:
        sock.setblocking(False)
        code = sock.connect_ex(address)
    except OSError:
        sock.close()
        return False
    if code not in (0, errno.EINPROGRESS):
        sock.close()
        return False
    with _lock:
        old = _pending.pop((host, port), None)
        _pending[(host, port)] = (sock, time.monotonic())
    if old is not None:
        old[0].close()
    return True


def adopt(host: str, port: int, timeout: float | None) -> socket.socket | None:
    """The connected socket started for exactly (host, port), in blocking mode with `timeout`;
    None when there is none, it is too old, or it did not connect within `timeout`."""
    with _lock:
        entry = _pending.pop((host, port), None)
    if entry is None:
        return None
    sock, began = entry
    if time.monotonic() - began > MAX_AGE_SECONDS:
        sock.close()
        return None
    try:
        _, writable, _ = select.select([], [sock], [], timeout)
        if not writable or sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) != 0:
            sock.close()
            return None
        sock.setblocking(True)
        sock.settimeout(timeout)
    except (OSError, ValueError):
        sock.close()
        return None
    return sock


def discard() -> None:
    """Close every connection nobody adopted."""
    with _lock:
        left = [sock for sock, _ in _pending.values()]
        _pending.clear()
    for sock in left:
        with contextlib.suppress(OSError):
            sock.close()
