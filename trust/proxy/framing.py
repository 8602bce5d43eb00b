"""Strict HTTP/1.x request heads (engine-proxy.md §1.5).

h11 does the body framing (Content-Length, chunked) and response serialisation, but on its own
it accepts shapes the engine's Go parser reads differently: measured with h11 0.16, it decodes a
chunked body on HTTP/1.0 (Go ignores Transfer-Encoding there: X24), takes Transfer-Encoding with
Content-Length, joins obsolete line folding, accepts bare LF, merges repeated Content-Length and
routes absolute-form targets and `PRI * HTTP/2.0`. So every head is first checked here, on the raw
bytes, and refused when any two reasonable parsers could disagree; only then is it fed to h11.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["HEAD_END", "HTTPRefusal", "RequestHead", "check_head"]

HEAD_END = b"\r\n\r\n"
#: No real client sends more than a few dozen header lines (X29).
MAX_HEADER_LINES = 1000

_TOKEN_RE = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_REQUEST_LINE_RE = re.compile(rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+) (\S+) HTTP/(\d)\.(\d)")
_DIGITS_RE = re.compile(rb"[0-9]{1,18}")
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
    if any(b < 0x21 or b > 0x7E for b in target):
        raise _bad("control, space or non-ASCII byte in the request target")
    if not target.startswith(b"/"):
        raise _bad("only origin-form request targets are accepted (no absolute or * form)")
    if b"#" in target:
        raise _bad("'#' in the request target")
    if len(lines) > MAX_HEADER_LINES:
        raise HTTPRefusal(431, "trustpull: too many header lines", close=True)
    headers: list[tuple[bytes, bytes]] = []
    for line in lines[1:]:
        if not line:
            raise _bad("empty line inside the header block")
        if line[:1] in (b" ", b"\t"):
            raise _bad("obsolete line folding")
        name, colon, value = line.partition(b":")
        if not colon or _TOKEN_RE.fullmatch(name) is None:
            raise _bad(f"invalid header name {name[:40]!r}")
        value = value.strip(b" \t")
        if any((b < 0x20 and b != 0x09) or b == 0x7F for b in value):
            raise _bad(f"control byte in header {name.decode()}")
        headers.append((name.lower(), value))
    head = RequestHead(method.decode(), target.decode(), version, tuple(headers))
    _check_framing(head)
    return head


def _check_framing(head: RequestHead) -> None:
    te = head.get_all(b"transfer-encoding")
    cl = head.get_all(b"content-length")
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
    if len(head.get_all(b"content-type")) > 1:
        raise _bad("repeated Content-Type")
    if len(head.get_all(b"host")) > 1:
        raise _bad("repeated Host")
    if head.version == (1, 1) and head.get(b"host") is None:
        raise _bad("HTTP/1.1 request without Host")
    for value in head.get_all(b"connection"):
        for token in value.split(b","):
            if token.strip().lower() not in _CONNECTION_TOKENS:
                raise _bad("Connection may name only close, keep-alive or upgrade")
    expect = head.get_all(b"expect")
    if len(expect) > 1 or (expect and expect[0].lower() != b"100-continue"):
        raise HTTPRefusal(417, "trustpull: unsupported Expect", close=True)
    content_type = head.get(b"content-type")
    if content_type is not None:
        lowered = content_type.lower()
        if b"form-urlencoded" in lowered or b"multipart" in lowered:
            raise _bad("form bodies are refused (the engine lets them override the query)")
