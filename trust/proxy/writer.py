"""What the proxy writes on the wire: answers to its clients and requests to the engine.

Both used to be serialised by h11 connection objects made per request on each side. Measured
(benchmarks/README.md, "Pass-through per request"): of the proxy's ~350 µs of CPU per kept-alive
`GET /version`, h11's per-request connections, events and header re-validation were about half,
and a `docker version` through the proxy cost 1 ms of proxy CPU. The heads were already parsed
here strictly (`framing.check_head`, `framing.parse_response_head`: h11 alone was too lax for
the engine's Go parser), so h11 only re-checked bytes the proxy had checked. The writers below
keep what h11 guaranteed on output: every header name is a token and every value free of
control bytes (checked again here, whatever produced them), the proxy alone chooses the framing
(one Content-Length that is counted and enforced, or chunks it writes itself, or end-of-stream
for HTTP/1.0 clients), and keep-alive only when both sides allow it. The test suite checks what
they write against h11 (tests/unit/test_proxy_writer.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from trust.proxy.framing import BAD_TARGET_RE, BAD_VALUE_RE, TOKEN_RE

__all__ = ["Answer", "WriteError", "chunk", "request_head"]

#: The framing headers: only the writers set them.
_FRAMING = (b"content-length", b"transfer-encoding", b"connection", b"keep-alive")

REASONS = {
    100: "Continue",
    101: "Switching Protocols",
    200: "OK",
    201: "Created",
    204: "No Content",
    301: "Moved Permanently",
    304: "Not Modified",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    408: "Request Timeout",
    409: "Conflict",
    413: "Payload Too Large",
    417: "Expectation Failed",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    505: "HTTP Version Not Supported",
}


class WriteError(Exception):
    """The proxy was about to write something malformed (a bug, never client input)."""


#: Header names already seen to be tokens (a few dozen in practice; bounded).
_TOKENS: set[bytes] = set()


def _header_lines(headers: Iterable[tuple[bytes, bytes]]) -> list[bytes]:
    lines = []
    names, values = [], []
    for name, value in headers:
        if name not in _TOKENS:
            if TOKEN_RE.fullmatch(name) is None:
                raise WriteError(f"invalid header {bytes(name)[:40]!r}")
            if len(_TOKENS) < 1024:
                _TOKENS.add(bytes(name))
        names.append(name)
        values.append(value)
        lines.append(bytes(name) + b": " + bytes(value) + b"\r\n")
    # one search for all values (HTAB, the separator, is allowed in every value)
    if BAD_VALUE_RE.search(b"\t".join(values)) is not None:
        bad = next(n for n, v in zip(names, values, strict=True) if BAD_VALUE_RE.search(v))
        raise WriteError(f"invalid header {bytes(bad)[:40]!r}")
    return lines


def chunk(pieces: Sequence[Any]) -> list[Any]:
    """One chunk carrying all of `pieces` (none copied); nothing for no bytes (a zero-size
    chunk would end the body)."""
    total = sum(len(memoryview(piece)) for piece in pieces)
    return [b"%x\r\n" % total, *pieces, b"\r\n"] if total else []


def request_head(
    method: str, target: bytes, headers: Sequence[tuple[bytes, bytes]], framing: bytes
) -> bytes:
    """An HTTP/1.1 request head; `framing` is the one framing header line (or b"")."""
    if TOKEN_RE.fullmatch(method.encode()) is None:
        raise WriteError(f"invalid method {method[:20]!r}")
    if not target.startswith(b"/") or BAD_TARGET_RE.search(target) is not None:
        raise WriteError(f"invalid request target {target[:80]!r}")
    for name, _ in headers:
        if name.lower() in _FRAMING:
            raise WriteError(f"framing header {name!r} given to the request writer")
    return b"".join(
        [method.encode(), b" ", target, b" HTTP/1.1\r\n", *_header_lines(headers), framing, b"\r\n"]
    )


class Answer:
    """One answer to one client request: its head, its body's framing, its end.

    `keep` says whether the connection may carry another request once `done`: never for an
    HTTP/1.0 client (h11 did not keep those alive either), a client that sent `Connection:
    close`, an answer that carries `Connection: close`, or a body delimited by the end of
    the stream.
    """

    def __init__(self, method: str, version: tuple[int, int], keep_alive: bool) -> None:
        self.method = method
        self.version = version
        self.keep = keep_alive and version >= (1, 1)
        self.started = False
        self.done = False
        self._left: int | None = None  # Content-Length still to write
        self._chunked = False

    def informational(self, status: int = 100) -> bytes:
        if self.started:
            raise WriteError("an informational answer after the head")
        return b"HTTP/1.1 %d %s\r\n\r\n" % (status, REASONS.get(status, "").encode())

    def head(
        self, status: int, headers: Sequence[tuple[bytes, bytes]], reason: bytes | None = None
    ) -> bytes:
        """The status line and headers; a Content-Length in `headers` fixes the body's size.

        `Transfer-Encoding`, `Connection` and `Keep-Alive` are the writer's own: a `Connection:
        close` given ends the connection after this answer, the others are dropped.
        """
        if self.started:
            raise WriteError("a second answer head")
        if not 200 <= status <= 999:
            raise WriteError(f"status {status} is not a final answer")
        self.started = True
        kept: list[tuple[bytes, bytes]] = []
        length: int | None = None
        for name, value in headers:
            key = name.lower()
            if key == b"content-length":
                if length is not None or not value.isdigit():
                    raise WriteError("Content-Length given twice or not digits")
                length = int(value)
                kept.append((name, value))
            elif key == b"connection":
                if b"close" in value.lower():
                    self.keep = False
            elif key not in (b"transfer-encoding", b"keep-alive"):
                kept.append((name, value))
        no_body = status in (204, 304)
        framing = b""
        if no_body:
            self._left = 0
        elif length is not None:
            self._left = length
        elif self.version >= (1, 1):
            self._chunked = True
            framing = b"Transfer-Encoding: chunked\r\n"
        else:
            self._left = None  # to the end of the stream, as HTTP/1.0 knows it
            if self.method != "HEAD":
                self.keep = False
        if self.method == "HEAD":
            self._left, self._chunked = 0, False  # the head says what a GET would have had
        if not self.keep:
            framing += b"Connection: close\r\n"
        if reason is None:
            reason = REASONS.get(status, "Unknown").encode()
        if BAD_VALUE_RE.search(reason) is not None:
            raise WriteError("control byte in the reason phrase")
        return b"".join(
            [b"HTTP/1.1 %d " % status, reason, b"\r\n", *_header_lines(kept), framing, b"\r\n"]
        )

    def head_as_received(self, status: int, reason: bytes, block: bytes, length: int) -> bytes:
        """The engine's own header block relayed unchanged, for an answer of `length` bytes.

        Only for a block `framing.parse_response_head` checked line by line (token names,
        values free of control bytes: what `_header_lines` checks) that carries exactly one
        Content-Length (`length`) and none of the headers this writer owns (`ResponseHead.hop`
        False); re-serialising such a block wrote the same bytes, at a third of the proxy's
        CPU for a small answer. `block` starts with the CRLF that ends the status line.
        """
        if self.started:
            raise WriteError("a second answer head")
        if not 200 <= status <= 999 or status in (204, 304):
            raise WriteError(f"status {status} is not a final answer with a body")
        if BAD_VALUE_RE.search(reason) is not None:
            raise WriteError("control byte in the reason phrase")
        if block and not block.startswith(b"\r\n"):
            raise WriteError("a header block must start with the status line's CRLF")
        self.started = True
        self._left = 0 if self.method == "HEAD" else length
        close = b"" if self.keep else b"\r\nConnection: close"
        return b"".join([b"HTTP/1.1 %d " % status, reason, block, close, b"\r\n\r\n"])

    def body(self, pieces: Sequence[Any]) -> list[Any]:
        """The framed pieces that send `pieces` (bytes or memoryviews, none copied).

        An answer to HEAD sends none: its head is the one a GET would have had.
        """
        if not self.started or self.done:
            raise WriteError("body outside an answer")
        if self.method == "HEAD":
            return []
        if self._chunked:
            return chunk(pieces)
        total = sum(len(memoryview(piece)) for piece in pieces)
        if not total:
            return []
        if self._left is not None:
            if total > self._left:
                raise WriteError("more body than its Content-Length")
            self._left -= total
        return list(pieces)

    def end(self) -> bytes:
        """What ends the answer; afterwards `done`."""
        if not self.started or self.done:
            raise WriteError("end outside an answer")
        if self._left:
            raise WriteError(f"the body ended {self._left} bytes before its Content-Length")
        self.done = True
        if self._chunked:
            return b"0\r\n\r\n"
        if self._left is None:
            self.keep = False
        return b""
