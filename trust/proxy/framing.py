"""Strict HTTP/1.x heads (requests from clients, answers from the engine) and bodies (§1.5).

The design card suggested h11 for the proxy's framing; measured with h11 0.16, on its own it
accepts shapes the engine's Go parser reads differently: it decodes a chunked body on HTTP/1.0
(Go ignores Transfer-Encoding there: X24), takes Transfer-Encoding with Content-Length, joins
obsolete line folding, accepts bare LF, merges repeated Content-Length and routes absolute-form
targets and `PRI * HTTP/2.0`. So every head is parsed here, on the raw bytes, and refused when
any two reasonable parsers could disagree. h11 then only re-parsed what this module had
accepted, at half the proxy's CPU per request (trust/proxy/writer.py), so it is no longer on
the request path; the tests use it as an independent reader of what the proxy writes.

Bodies are decoded here too (`BodyReader`), not by h11: h11 turns every chunk into an event and
copies it three times, which cost a quarter of `docker save`/`docker load` throughput through the
proxy (benchmarks/README.md, bench_proxy). The reader is as strict as the head check: exact
Content-Length, chunk sizes of 1–16 hex digits, CRLF only, trailers parsed and dropped; it
hands out slices of one reused buffer, so a body of any size costs one buffer of memory.

Longer than 500 lines because the request heads, the engine's answer heads and the bodies are
read with one set of patterns and limits: split apart, the three readers could drift.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass

__all__ = [
    "BAD_TARGET_RE",
    "BAD_VALUE_RE",
    "HEAD_END",
    "TOKEN_RE",
    "BodyError",
    "BodyReader",
    "HTTPRefusal",
    "HeadError",
    "RequestHead",
    "ResponseHead",
    "check_head",
    "parse_response_head",
]

HEAD_END = b"\r\n\r\n"
#: No real client sends more than a few dozen header lines (X29).
MAX_HEADER_LINES = 1000

TOKEN_RE = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_REQUEST_LINE_RE = re.compile(rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+) (\S+) HTTP/(\d)\.(\d)")
_DIGITS_RE = re.compile(rb"[0-9]{1,18}")
#: A control byte other than HTAB, or DEL: never in a header value.
BAD_VALUE_RE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
#: Anything outside visible ASCII: never in a request target.
BAD_TARGET_RE = re.compile(rb"[^\x21-\x7e]")
#: What a `Connection` header may name: anything else would make a proxy drop end-to-end
#: headers as hop-by-hop (X30).
_CONNECTION_TOKENS = {b"close", b"keep-alive", b"upgrade"}
#: Headers the proxy never forwards (its own framing and hop-by-hop ones).
HOP_BY_HOP = {
    b"connection",
    b"keep-alive",
    b"proxy-connection",
    b"transfer-encoding",
    b"content-length",
    b"te",
    b"trailer",
    b"upgrade",
    b"expect",
    b"http2-settings",
}


class HTTPRefusal(Exception):
    """An answer the proxy gives itself: status, message, and whether to close afterwards."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        close: bool = False,
        kind: str = "Request",
        headers: tuple[tuple[bytes, bytes], ...] = (),
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.close = close
        self.kind = kind
        self.headers = headers


@dataclass(frozen=True)
class RequestHead:
    method: str
    target: str
    version: tuple[int, int]
    #: (lower-case name, value) in order, names and values as sent.
    headers: tuple[tuple[bytes, bytes], ...]

    def get(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None

    def get_all(self, name: bytes) -> list[bytes]:
        return [value for key, value in self.headers if key == name]

    @property
    def chunked(self) -> bool:
        return self.get(b"transfer-encoding") is not None

    @property
    def content_length(self) -> int | None:
        value = self.get(b"content-length")
        return None if value is None else int(value)

    @property
    def has_body(self) -> bool:
        return self.chunked or (self.content_length or 0) > 0

    def wants_upgrade(self) -> bytes | None:
        value = self.get(b"upgrade")
        return value.strip().lower() if value is not None else None


def _bad(message: str) -> HTTPRefusal:
    return HTTPRefusal(400, f"trustpull: malformed request refused: {message}", close=True)


def check_head(raw: bytes) -> RequestHead:
    """Validate one request head (without the final CRLFCRLF) strictly; raise HTTPRefusal."""
    if raw.startswith(b"PRI * HTTP/2.0"):
        raise HTTPRefusal(
            400, "trustpull: HTTP/2 is refused (it would expose the whole API)", close=True
        )
    lines = raw.split(b"\r\n")
    for line in lines:
        if b"\n" in line or b"\r" in line:
            raise _bad("bare CR or LF line ending")
    match = _REQUEST_LINE_RE.fullmatch(lines[0])
    if match is None:
        raise _bad("invalid request line")
    method, target, major, minor = match.groups()
    version = (int(major), int(minor))
    if version not in ((1, 0), (1, 1)):
        raise HTTPRefusal(
            505 if version[0] != 2 else 400,
            "trustpull: only HTTP/1.0 and HTTP/1.1 are spoken",
            close=True,
        )
    if BAD_TARGET_RE.search(target) is not None:
        raise _bad("control, space or non-ASCII byte in the request target")
    if not target.startswith(b"/"):
        raise _bad("only origin-form request targets are accepted (no absolute or * form)")
    if b"#" in target:
        raise _bad("'#' in the request target")
    if len(lines) > MAX_HEADER_LINES:
        raise HTTPRefusal(431, "trustpull: too many header lines", close=True)
    block = raw[len(lines[0]) :]
    if _HEADER_BLOCK_RE.fullmatch(block) is not None:  # every line well-formed: one C pass
        head = RequestHead(
            method.decode(),
            target.decode(),
            version,
            tuple((name.lower(), value.strip(b" \t")) for name, value in _HEADER_RE.findall(block)),
        )
        _check_framing(head)
        return head
    headers: list[tuple[bytes, bytes]] = []  # which line is wrong, for the message
    for line in lines[1:]:
        if not line:
            raise _bad("empty line inside the header block")
        if line[:1] in (b" ", b"\t"):
            raise _bad("obsolete line folding")
        name, colon, value = line.partition(b":")
        if not colon or TOKEN_RE.fullmatch(name) is None:
            raise _bad(f"invalid header name {name[:40]!r}")
        value = value.strip(b" \t")
        if BAD_VALUE_RE.search(value) is not None:
            raise _bad(f"control byte in header {name.decode()}")
        headers.append((name.lower(), value))
    head = RequestHead(method.decode(), target.decode(), version, tuple(headers))
    _check_framing(head)
    return head  # the block pattern accepts what this loop accepts: reached only on a mismatch


def _check_framing(head: RequestHead) -> None:
    seen: dict[bytes, list[bytes]] = {}
    for name, value in head.headers:
        if name in _FRAMING_NAMES:
            seen.setdefault(name, []).append(value)
    te = seen.get(b"transfer-encoding", [])
    cl = seen.get(b"content-length", [])
    if len(te) > 1 or len(cl) > 1:
        raise _bad("repeated Transfer-Encoding or Content-Length")
    if te:
        if head.version == (1, 0):
            raise _bad("Transfer-Encoding on HTTP/1.0 (the engine would ignore it)")
        if te[0].lower() != b"chunked":
            raise HTTPRefusal(501, "trustpull: only Transfer-Encoding: chunked", close=True)
        if cl:
            raise _bad("Transfer-Encoding together with Content-Length")
    if cl and _DIGITS_RE.fullmatch(cl[0]) is None:
        raise _bad("Content-Length is not plain digits")
    if len(seen.get(b"content-type", ())) > 1:
        raise _bad("repeated Content-Type")
    if len(seen.get(b"host", ())) > 1:
        raise _bad("repeated Host")
    if head.version == (1, 1) and b"host" not in seen:
        raise _bad("HTTP/1.1 request without Host")
    for value in seen.get(b"connection", ()):
        for token in value.split(b","):
            if token.strip().lower() not in _CONNECTION_TOKENS:
                raise _bad("Connection may name only close, keep-alive or upgrade")
    expect = seen.get(b"expect", [])
    if len(expect) > 1 or (expect and expect[0].lower() != b"100-continue"):
        raise HTTPRefusal(417, "trustpull: unsupported Expect", close=True)
    for content_type in seen.get(b"content-type", ()):
        # Go's mime.ParseMediaType lowers with Unicode rules: `multİpart` (U+0130 lowers to
        # `i`) or a Kelvin sign is multipart to the engine's FormValue but not to an ASCII
        # `bytes.lower()`, so a Content-Type that is not ASCII is refused whole (X13b).
        if not content_type.isascii():
            raise _bad("a Content-Type that is not ASCII")
        lowered = content_type.lower()
        if b"form-urlencoded" in lowered or b"multipart" in lowered:
            raise _bad("form bodies are refused (the engine lets them override the query)")


# --------------------------------------------------------------------------- engine answers

#: A whole header block (each line after its CRLF): a token name, a colon, a value free of
#: control bytes (HTAB aside). Exactly the lines the line-by-line checks accept: no bare CR or
#: LF, no empty line, no folding (a line starting with a space is not a token).
_HEADER_BLOCK_RE = re.compile(rb"(?:\r\n[!#$%&'*+\-.^_`|~0-9A-Za-z]+:[^\x00-\x08\x0a-\x1f\x7f]*)*")
_HEADER_RE = re.compile(rb"\r\n([^:]+):([^\r]*)")
#: The request headers whose framing or meaning the proxy checks.
_FRAMING_NAMES = frozenset(
    (b"transfer-encoding", b"content-length", b"content-type", b"host", b"connection", b"expect")
)
#: Lengths of the answer headers that frame a body: only those names are lowered and compared.
_FRAMING_LENGTHS = frozenset(
    (len(b"content-length"), len(b"transfer-encoding"), len(b"connection"))
)

#: A status from 100 and a reason free of control bytes (HTAB aside), as the writer relays it.
_STATUS_RE = re.compile(rb"HTTP/1\.([01]) ([1-9][0-9]{2})(?: ([^\x00-\x08\x0a-\x1f\x7f]*))?")


class HeadError(Exception):
    """An answer head from the engine that is not plainly well-formed."""


@dataclass(frozen=True)
class ResponseHead:
    """An engine answer's status line and headers, as strictly parsed as a request head."""

    status: int
    reason: bytes
    #: (name as sent, value) in order.
    headers: tuple[tuple[bytes, bytes], ...]
    #: Content-Length, or None.
    length: int | None
    chunked: bool
    #: HTTP/1.0 or `Connection: close`: the engine ends the connection after this answer.
    close: bool
    #: The header block as received (each line after its CRLF), every line checked above.
    block: bytes = b""
    #: A `Connection`, `Keep-Alive` or `Transfer-Encoding` header is present (the writer
    #: replaces those; without them the block may be relayed as it came).
    hop: bool = False

    def get(self, name: bytes) -> bytes | None:
        """The first value of header `name` (lower case)."""
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None

    def body_framing(self, method: str) -> tuple[int | None, bool]:
        """(length, chunked) of the body that follows (RFC 9112 §6.3); (None, False): to EOF."""
        if method == "HEAD" or self.status in (204, 304) or 100 <= self.status < 200:
            return 0, False
        if self.chunked:
            return None, True
        return self.length, False


def parse_response_head(raw: bytes) -> ResponseHead:
    """One answer head (without the final CRLFCRLF), strictly; raise HeadError.

    The engine is a local, trusted peer, but its answers are framed by what is read here:
    a head two parsers could read differently is not passed on (no bare LF, no folding, one
    Content-Length of plain digits, only `chunked`, never both).
    """
    lines = raw.split(b"\r\n")
    match = _STATUS_RE.fullmatch(lines[0])
    if match is None:
        raise HeadError(f"status line {lines[0][:80]!r}")
    minor, status = match.group(1), int(match.group(2))
    headers: list[tuple[bytes, bytes]] = []
    length: int | None = None
    chunked = False
    close = minor == b"0"
    hop = False
    block = raw[len(lines[0]) :]
    if _HEADER_BLOCK_RE.fullmatch(block) is not None:  # every line well-formed: one C pass
        headers = [(name, value.strip(b" \t")) for name, value in _HEADER_RE.findall(block)]
    else:
        for line in lines[1:]:  # which line is wrong, for the message
            name, colon, raw_value = line.partition(b":")
            value = raw_value.strip(b" \t")
            if not colon or TOKEN_RE.fullmatch(name) is None or b"\n" in line or b"\r" in line:
                raise HeadError(f"header line {line[:80]!r}")
            if BAD_VALUE_RE.search(value) is not None:
                raise HeadError("control byte in a header")
            headers.append((name, value))
    for name, value in headers:
        if len(name) in _FRAMING_LENGTHS:
            key = name.lower()
            if key == b"content-length":
                if length is not None or _DIGITS_RE.fullmatch(value) is None:
                    raise HeadError("Content-Length")
                length = int(value)
            elif key == b"transfer-encoding":
                if value.lower() != b"chunked" or chunked:
                    raise HeadError("Transfer-Encoding")
                chunked = hop = True
            elif key == b"connection":
                hop = True
                if b"close" in value.lower():
                    close = True
            elif key == b"keep-alive":
                hop = True
    if chunked and length is not None:
        raise HeadError("both Content-Length and chunked")
    return ResponseHead(
        status, match.group(3) or b"", tuple(headers), length, chunked, close, block, hop
    )


# ------------------------------------------------------------------------------------ bodies

#: Go's chunked reader: at most 16 hex digits (transfer.go `parseHexUint`), lines under 4 KiB
#: (internal/chunked.go `maxLineLength`). Extensions are ignored, as h11 and Go do (X26).
_CHUNK_LINE_RE = re.compile(rb"([0-9A-Fa-f]{1,16})(?:;[\t\x20-\x7e]*)?")
MAX_CHUNK_LINE = 4096
#: The first buffer; it grows to BODY_BUFFER while the stream keeps filling it.
_FIRST_BUFFER = 64 * 1024
BODY_BUFFER = 1024 * 1024
#: Slices per batch, so that a body of tiny chunks still goes out in bounded `sendmsg` calls.
_MAX_SEGMENTS = 256
#: The rest of a chunk up to this size is awaited whole before its batch goes out (see
#: `_chunked`): Go's writers send a 32 KiB chunk as two writes, 4 KiB and the rest.
_WAIT_FOR_CHUNK = 64 * 1024
_WAITALL = socket.MSG_WAITALL


class BodyError(Exception):
    """The body broke its own framing, or its sender went away before its end."""


class BodyReader:
    """One message body read from a socket: exactly Content-Length bytes, chunked, or to EOF.

    `batches()` yields lists of memoryviews into one reused buffer: the decoded body bytes, in
    order, each list valid only until the next is asked for. Chunk sizes, chunk ends and
    trailers are parsed strictly before any byte after them is handed out; trailers are
    dropped. Bytes received after the body's end (a pipelined next request) are `rest()`.
    """

    def __init__(
        self,
        sock: socket.socket,
        initial: bytes | bytearray,
        *,
        length: int | None,
        chunked: bool = False,
        max_trailer: int = 64 * 1024,
        idle: Callable[[], None] | None = None,
    ) -> None:
        """`idle` is called each time a receive times out (the socket's own timeout), to let
        the caller give up (raise) while the peer is silent; without it a timeout fails."""
        self.sock = sock
        self._idle = idle
        self.length = length
        self.chunked = chunked
        self.max_trailer = max_trailer
        self.done = False
        self._filled_last = False
        self._buf = bytearray(initial)
        self._view = memoryview(self._buf)
        self._start = 0
        self._end = len(self._buf)

    def rest(self) -> bytes:
        """What was received beyond the body (only meaningful once `done`)."""
        return bytes(self._view[self._start : self._end])

    # -- the buffer

    def _fill(self, limit: int | None = None) -> bool:
        """Receive more bytes after the unread ones; False at EOF.

        Callers hand out their slices before calling this: the buffer is reused or replaced.
        """
        unread = self._end - self._start
        if unread == 0:
            self._start = self._end = 0
        size = want = len(self._buf)
        if want < _FIRST_BUFFER:
            want = _FIRST_BUFFER
        elif self._filled_last and want < BODY_BUFFER:
            want = min(BODY_BUFFER, 2 * want)  # the stream keeps up: bigger receives
        want = max(want, 2 * unread)  # a long line (bounded by `_line`'s limit)
        if want != size or self._end == size:
            fresh = bytearray(want)
            fresh[:unread] = self._view[self._start : self._end]
            self._buf = fresh
            self._view = memoryview(fresh)
            self._start, self._end = 0, unread
        space = len(self._buf) - self._end
        if limit is not None:
            space = min(space, limit)
        while True:
            try:
                got = self.sock.recv_into(self._view[self._end :], space)
                break
            except TimeoutError:
                self._silent()
            except OSError as exc:
                raise BodyError(f"connection failed: {exc}") from None
        self._filled_last = got == space
        self._end += got
        return got > 0

    def _silent(self) -> None:
        if self._idle is None:
            raise BodyError("connection failed: timed out")
        self._idle()

    def _fill_after_end(self, count: int) -> bool:
        """Receive exactly `count` bytes after the unread ones, never moving the buffer (the
        slices handed out stay valid); False when the stream ended first."""
        while count:
            try:
                room = self._view[self._end : self._end + count]
                got = self.sock.recv_into(room, count, _WAITALL)
            except TimeoutError:
                self._silent()
                continue
            except OSError as exc:
                raise BodyError(f"connection failed: {exc}") from None
            if not got:
                return False
            self._end += got
            count -= got
        return True

    def _line(self, limit: int) -> bytes:
        while True:
            at = self._buf.find(b"\n", self._start, self._end)
            if at >= 0:
                break
            if self._end - self._start > limit:
                raise BodyError("chunk or trailer line too long")
            if not self._fill():
                raise BodyError("the body ended early")
        if at - self._start > limit:
            raise BodyError("chunk or trailer line too long")
        if at == self._start or self._buf[at - 1] != 0x0D:
            raise BodyError("bare LF in a chunked body")
        line = bytes(self._view[self._start : at - 1])
        self._start = at + 1
        if b"\r" in line:
            raise BodyError("bare CR in a chunked body")
        return line

    # -- decoding

    def batches(self) -> Iterator[list[memoryview]]:
        if self.done:
            return
        if self.chunked:
            yield from self._chunked()
        else:
            yield from self._counted()
        self.done = True

    def _counted(self) -> Iterator[list[memoryview]]:
        left = self.length  # None: to EOF
        while left is None or left > 0:
            if self._start == self._end and not self._fill(left):
                if left is None:
                    return
                raise BodyError(f"the body ended {left} bytes before its Content-Length")
            n = self._end - self._start
            if left is not None:
                n = min(n, left)
                left -= n
            piece = self._view[self._start : self._start + n]
            self._start += n
            yield [piece]

    def _chunked(self) -> Iterator[list[memoryview]]:
        batch: list[memoryview] = []
        while True:
            if batch and (
                len(batch) >= _MAX_SEGMENTS or self._buf.find(b"\n", self._start, self._end) < 0
            ):
                yield batch  # out before the buffer is refilled
                batch = []
            match = _CHUNK_LINE_RE.fullmatch(self._line(MAX_CHUNK_LINE))
            if match is None:
                raise BodyError("invalid chunk size line")
            size = int(match.group(1), 16)
            if size == 0:
                break
            while size:
                if self._start == self._end:
                    room = len(self._buf) - self._end
                    if batch and size + 2 <= min(room, _WAIT_FOR_CHUNK):
                        # The sender has begun this chunk: its rest (and CRLF) is received
                        # after the batch's bytes, so the batch goes out once, not in halves
                        # (one `sendmsg` and one pass of this loop fewer per chunk).
                        if not self._fill_after_end(size + 2):
                            raise BodyError("the body ended inside a chunk")
                        continue
                    if batch:
                        yield batch
                        batch = []
                    if not self._fill():
                        raise BodyError("the body ended inside a chunk")
                n = min(size, self._end - self._start)
                batch.append(self._view[self._start : self._start + n])
                self._start += n
                size -= n
            while self._end - self._start < 2:
                if batch:
                    yield batch
                    batch = []
                if not self._fill():
                    raise BodyError("the body ended after a chunk")
            if self._buf[self._start : self._start + 2] != b"\r\n":
                raise BodyError("chunk data not followed by CRLF")
            self._start += 2
        if batch:
            yield batch
        seen = 0
        while True:  # trailers: parsed, never passed on
            line = self._line(self.max_trailer)
            if not line:
                return
            seen += len(line) + 2
            if seen > self.max_trailer:
                raise BodyError("trailers too large")
            name, colon, value = line.partition(b":")
            if not colon or TOKEN_RE.fullmatch(name) is None:
                raise BodyError("invalid trailer line")
            if BAD_VALUE_RE.search(value) is not None:
                raise BodyError("control byte in a trailer")
