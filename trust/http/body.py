"""Reading an HTTP body within a byte cap and a wall-clock deadline (attacks.md G04, G06, G07).

Content-Length is only used to refuse early and to detect a short body; it is never trusted as
the cap. Compression the server used anyway is decoded here, bounded, so a gzip bomb cannot
expand beyond the cap. Each read is at most one socket read, its timeout shrunk to what is left.
"""

from __future__ import annotations

import ssl
import zlib
from collections.abc import Callable
from typing import Any

import requests
import urllib3.exceptions

from trust.errors import LengthError, NetworkError
from trust.http.reasons import raw_reason
from trust.http.watchdog import Watch
from trust.settings import Limits

__all__ = ["BodyReader", "RetryableError"]

#: Bodies are read this much at a time (at most one socket read each).
_CHUNK = 64 * 1024


class RetryableError(Exception):
    """A connection failure or timeout that a GET may try again (never leaves trust.http)."""

    def __init__(self, words: str, detail: str) -> None:
        super().__init__(words)
        self.words = words
        self.detail = detail


class BodyReader:
    """Bounded body reads for one session: its limits, clock and "slow retrieval" wording."""

    def __init__(
        self, limits: Limits, clock: Callable[[], float], slow_message: Callable[[str], str]
    ) -> None:
        self._limits = limits
        self._clock = clock
        self._slow_message = slow_message

    def read(
        self, response: requests.Response, max_bytes: int, deadline: float, what: str, w: Watch
    ) -> bytes:
        """Read the whole body, capped at `max_bytes` decoded bytes, within the deadline.

        Content-Length is only used to refuse early and to detect a short body; it is never
        trusted as the cap. Compression is decoded here, bounded, so a gzip bomb cannot expand
        beyond the cap (G07).
        """
        declared = _content_length(response)
        if declared is not None and declared > max_bytes:
            raise LengthError(
                f"{what} is {declared} bytes according to the server, more than the "
                f"{max_bytes}-byte limit"
            )
        decoder = _decoder(response.headers.get("Content-Encoding", ""), what)
        parts: list[bytes] = []
        total = 0
        received = 0
        while True:
            chunk = self._chunk(response.raw, deadline, what, w)
            if not chunk:
                break
            received += len(chunk)
            if decoder is not None:
                # max_length stops a bomb inside zlib: at most one byte past the cap is made.
                chunk = decoder.decompress(chunk, max_bytes + 1 - total)
            total += len(chunk)
            if total > max_bytes:
                raise LengthError(f"{what} is longer than the {max_bytes}-byte limit")
            parts.append(chunk)
        if declared is not None and received != declared:
            raise NetworkError(
                f"{what}: incomplete answer ({received} of {declared} bytes received)"
            )
        if decoder is not None:
            if not decoder.eof:
                raise NetworkError(f"{what}: compressed body is truncated")
            tail = decoder.flush()
            total += len(tail)
            if total > max_bytes:
                raise LengthError(f"{what} is longer than the {max_bytes}-byte limit")
            parts.append(tail)
        return b"".join(parts)

    def _chunk(self, raw: Any, deadline: float, what: str, w: Watch) -> bytes:
        """At most one socket read, with its timeout shrunk to what is left of the deadline."""
        remaining = deadline - self._clock()
        if remaining <= 0 or w.fired:
            raise NetworkError(self._slow_message(what))
        sock = getattr(getattr(raw, "connection", None), "sock", None)
        if sock is not None:
            try:
                sock.settimeout(min(self._limits.read_timeout, remaining))
            except OSError:
                pass
        try:
            data = raw.read1(_CHUNK, decode_content=False)
        except (urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
            if w.fired or self._clock() >= deadline:
                raise NetworkError(self._slow_message(what)) from None
            if isinstance(exc, urllib3.exceptions.SSLError | ssl.SSLError):
                raise NetworkError(
                    f"TLS error while reading {what}", detail=raw_reason(exc)
                ) from None
            raise RetryableError(
                f"connection broken while reading {what}", raw_reason(exc)
            ) from None
        if w.fired:
            raise NetworkError(self._slow_message(what))
        return bytes(data) if data else b""

    def read_error(self, response: requests.Response, deadline: float, w: Watch) -> bytes:
        """At most `error_body_max_bytes` of an error answer; failures here are not interesting."""
        cap = self._limits.error_body_max_bytes
        parts: list[bytes] = []
        total = 0
        try:
            while total < cap:
                chunk = self._chunk(response.raw, deadline, "error answer", w)
                if not chunk:
                    break
                parts.append(chunk[: cap - total])
                total += len(chunk)
        except (NetworkError, RetryableError):
            pass
        return b"".join(parts)


def _content_length(response: requests.Response) -> int | None:
    value = response.headers.get("Content-Length")
    if value is None:
        return None
    value = value.strip()
    if not value.isdigit():
        raise NetworkError(f"trust server sent an invalid Content-Length {value[:40]!r}")
    return int(value)


def _decoder(encoding: str, what: str) -> Any:
    """A bounded decompressor for the Content-Encoding the server used anyway, or None."""
    name = encoding.strip().lower()
    if name in ("", "identity"):
        return None
    if name in ("gzip", "x-gzip"):
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if name == "deflate":
        return zlib.decompressobj()
    raise NetworkError(f"{what}: unsupported Content-Encoding {name[:40]!r}")
