"""What the proxy writes, read back by h11 (a strict, independent HTTP/1.1 implementation).

The proxy writes its answers and its requests to the engine itself (trust/proxy/writer.py:
h11's per-request connections were half of its CPU per request). These tests keep the writer
honest against h11: every combination of method, client version, keep-alive, status and
framing it can produce is parsed by h11 into the same status, headers, body and keep-alive
decision; and what must never be written (a line break in a value, a second framing header,
a body longer or shorter than its Content-Length) is refused before a byte is written.
"""

from __future__ import annotations

import itertools
import random

import h11
import pytest

from trust.proxy.framing import HeadError, parse_response_head
from trust.proxy.routes import ROUTES, match_route
from trust.proxy.writer import Answer, WriteError, request_head


def _read_back(
    method: str, version: tuple[int, int], keep_alive: bool, wire: bytes
) -> tuple[h11.Response, bytes, bool]:
    """(h11's response event, the body, whether h11 would send another request)."""
    client = h11.Connection(h11.CLIENT)
    headers = [(b"host", b"x")]
    if not keep_alive:
        headers.append((b"connection", b"close"))
    client.send(h11.Request(method=method, target=b"/", headers=headers))
    client.send(h11.EndOfMessage())
    if version == (1, 0):
        client.their_http_version = None  # h11 keys its framing on the answer, not on this
    client.receive_data(wire)
    response = client.next_event()
    assert isinstance(response, h11.Response), response
    body = b""
    while True:
        event = client.next_event()
        if event is h11.NEED_DATA:
            client.receive_data(b"")  # the writer delimited the body by closing
            continue
        if isinstance(event, h11.Data):
            body += event.data
            continue
        assert isinstance(event, h11.EndOfMessage), event
        break
    assert client.trailing_data == (b"", False) or client.trailing_data[1]
    return response, body, client.our_state is h11.DONE and client.their_state is h11.DONE


@pytest.mark.parametrize(
    ("method", "version", "keep_alive", "status", "declared", "body"),
    [
        combo
        for combo in itertools.product(
            ("GET", "HEAD", "POST"),
            ((1, 1), (1, 0)),
            (True, False),
            (200, 204, 304, 404),
            (True, False),
            (b"", b"hello", b"x" * 70000),
        )
        if not (combo[3] in (204, 304) and combo[5])
    ],
)
def test_answers_read_back_by_h11(
    method: str,
    version: tuple[int, int],
    keep_alive: bool,
    status: int,
    declared: bool,
    body: bytes,
) -> None:
    answer = Answer(method, version, keep_alive)
    headers = [(b"Content-Type", b"application/json"), (b"Api-Version", b"1.41")]
    if declared and status not in (204, 304):
        headers.append((b"Content-Length", str(len(body)).encode()))
    pieces = [answer.head(status, headers)]
    half = len(body) // 2
    pieces += answer.body([body[:half], memoryview(body)[half:]])
    pieces.append(answer.end())
    wire = b"".join(bytes(piece) for piece in pieces)
    response, got, h11_keeps = _read_back(method, version, keep_alive, wire)
    assert response.status_code == status
    sent = {bytes(k).lower(): bytes(v) for k, v in response.headers}
    assert sent[b"content-type"] == b"application/json" and sent[b"api-version"] == b"1.41"
    expected = b"" if method == "HEAD" or status in (204, 304) else body
    assert got == expected
    # keep-alive only for an HTTP/1.1 client that did not ask to close, on a framed body
    framed = declared or status in (204, 304) or version == (1, 1) or method == "HEAD"
    assert answer.keep == (keep_alive and version == (1, 1) and framed)
    if answer.keep:
        assert h11_keeps and b"connection" not in sent
    else:
        assert sent.get(b"connection") == b"close"


def test_a_connection_close_given_ends_the_connection() -> None:
    answer = Answer("GET", (1, 1), True)
    head = answer.head(403, [(b"content-length", b"2"), (b"connection", b"close")])
    wire = head + b"".join(answer.body([b"{}"])) + answer.end()
    assert not answer.keep
    assert wire.count(b"Connection: close\r\n") == 1 and b"connection: close" not in wire
    response, body, _ = _read_back("GET", (1, 1), True, wire)
    assert (response.status_code, body) == (403, b"{}")


def test_framing_headers_given_are_the_writers_own() -> None:
    answer = Answer("GET", (1, 1), True)
    head = answer.head(
        200, [(b"Transfer-Encoding", b"gzip"), (b"Keep-Alive", b"timeout=5"), (b"X", b"y")]
    )
    assert b"gzip" not in head and b"timeout" not in head
    assert head.endswith(b"X: y\r\nTransfer-Encoding: chunked\r\n\r\n")


@pytest.mark.parametrize(
    "headers",
    [
        [(b"X", b"a\r\nX-Evil: 1")],
        [(b"X", b"a\nb")],
        [(b"X", b"a\x00")],
        [(b"Bad Name", b"v")],
        [(b"", b"v")],
        [(b"content-length", b"1"), (b"Content-Length", b"1")],
        [(b"content-length", b"-1")],
    ],
)
def test_malformed_answer_heads_are_never_written(headers: list[tuple[bytes, bytes]]) -> None:
    with pytest.raises(WriteError):
        Answer("GET", (1, 1), True).head(200, headers)


def test_a_body_must_match_its_content_length() -> None:
    answer = Answer("GET", (1, 1), True)
    answer.head(200, [(b"content-length", b"3")])
    with pytest.raises(WriteError):
        answer.body([b"four"])
    answer.body([b"ab"])
    with pytest.raises(WriteError):
        answer.end()  # one byte short: never a truncated answer that looks whole
    with pytest.raises(WriteError):
        answer.head(200, [])  # and never a second head
    assert not answer.done


def test_informational_then_answer() -> None:
    answer = Answer("POST", (1, 1), True)
    wire = answer.informational(100) + answer.head(200, [(b"content-length", b"0")])
    wire += answer.end()
    client = h11.Connection(h11.CLIENT)
    client.send(h11.Request(method="POST", target=b"/", headers=[(b"host", b"x")]))
    client.send(h11.EndOfMessage())
    client.receive_data(wire)
    first, second = client.next_event(), client.next_event()
    assert isinstance(first, h11.InformationalResponse) and first.status_code == 100
    assert isinstance(second, h11.Response) and second.status_code == 200
    with pytest.raises(WriteError):
        answer.informational(100)


@pytest.mark.parametrize(
    ("framing", "body"),
    [(b"", b""), (b"Content-Length: 5\r\n", b"hello"), (b"Transfer-Encoding: chunked\r\n", None)],
)
def test_requests_read_back_by_h11(framing: bytes, body: bytes | None) -> None:
    headers = [(b"host", b"localhost"), (b"X-Registry-Auth", b"e30="), (b"user-agent", b"ua")]
    wire = request_head("POST", b"/v1.41/images/create?fromImage=a%2Fb", headers, framing)
    wire += body if body is not None else b"5\r\nhello\r\n0\r\n\r\n"
    server = h11.Connection(h11.SERVER)
    server.receive_data(wire)
    request = server.next_event()
    assert isinstance(request, h11.Request)
    assert request.method == b"POST" and request.target == b"/v1.41/images/create?fromImage=a%2Fb"
    assert [(k, v) for k, v in request.headers][:3] == [
        (b"host", b"localhost"),
        (b"x-registry-auth", b"e30="),
        (b"user-agent", b"ua"),
    ]
    got = b""
    while True:
        event = server.next_event()
        if isinstance(event, h11.Data):
            got += event.data
            continue
        assert isinstance(event, h11.EndOfMessage)
        break
    assert got == (body if body is not None else b"hello")


@pytest.mark.parametrize(
    ("method", "target", "headers"),
    [
        ("GET", b"/a b", []),
        ("GET", b"/a\r\nX: y", []),
        ("GET", b"http://x/", []),
        ("GE T", b"/", []),
        ("GET", b"/", [(b"X", b"1\r\nTransfer-Encoding: chunked")]),
        ("GET", b"/", [(b"Content-Length", b"0")]),
        ("GET", b"/", [(b"transfer-encoding", b"chunked")]),
        ("GET", b"/", [(b"Connection", b"close")]),
    ],
)
def test_malformed_requests_are_never_written(
    method: str, target: bytes, headers: list[tuple[bytes, bytes]]
) -> None:
    with pytest.raises(WriteError):
        request_head(method, target, headers, b"")


@pytest.mark.parametrize(
    "raw",
    [
        b"HTTP/1.1 200 OK\r\nX: a\nY: b",
        b"HTTP/1.1 200 OK\r\nX: a\r\n folded",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1",
        b"HTTP/1.1 200 OK\r\nContent-Length: +1",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 1",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip",
        b"HTTP/1.1 200 OK\r\nX: \x01",
        b"HTTP/1.1 200 OK\r\nX : y",
        b"HTTP/2 200",
        b"HTTP/1.1 20 OK",
        b"HTTP/1.1 200 OK\rX: y",
    ],
)
def test_engine_heads_two_parsers_could_read_differently_are_refused(raw: bytes) -> None:
    with pytest.raises(HeadError):
        parse_response_head(raw)


def test_engine_head_framing() -> None:
    head = parse_response_head(b"HTTP/1.0 200 OK\r\nContent-Length: 7\r\nAPI-Version: 1.41")
    assert (head.status, head.reason, head.length, head.chunked, head.close) == (
        200,
        b"OK",
        7,
        False,
        True,
    )
    assert head.get(b"api-version") == b"1.41"
    assert head.body_framing("HEAD") == (0, False) and head.body_framing("GET") == (7, False)
    chunked = parse_response_head(b"HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked")
    assert chunked.body_framing("GET") == (0, False)
    assert parse_response_head(b"HTTP/1.1 200 OK").body_framing("GET") == (None, False)


def test_route_buckets_answer_as_the_whole_table() -> None:
    """`match_route` tries only the routes a path's first segment can reach: same answers."""

    def whole_table(method: str, path: str) -> list[tuple[str, dict[str, str]]]:
        found = []
        for route in ROUTES:
            if route.method == method and (m := route.pattern.fullmatch(path)) is not None:
                found.append((route.name, m.groupdict()))
        return found

    segments = sorted({r.first for r in ROUTES if r.first} | {"x", "json", "a/b", "", "%2F"})
    segments += ["json", "create", "start", "archive", "attach", "tag", "push", "update"]
    methods = [*sorted({r.method for r in ROUTES}), "PATCH"]
    rng = random.Random(12)
    checked = 0
    for _ in range(4000):
        path = "/" + "/".join(rng.choice(segments) for _ in range(rng.randint(0, 4)))
        for method in methods:
            expected = whole_table(method, path)
            try:
                got = match_route(method, path)
            except Exception:
                assert method not in ("GET", "HEAD", "OPTIONS")
                assert len({name for name, _ in expected}) > 1
                continue
            if expected:
                assert got is not None and (got.route.name, got.params) == expected[0]
            else:
                assert got is None
            checked += 1
    assert checked > 20000


@pytest.mark.parametrize(
    ("method", "version", "keep_alive", "status"),
    list(itertools.product(("GET", "HEAD"), ((1, 1), (1, 0)), (True, False), (200, 404, 500))),
)
def test_an_engine_block_relayed_as_received_reads_back_as_rewritten(
    method: str, version: tuple[int, int], keep_alive: bool, status: int
) -> None:
    """The engine's checked header block relayed unchanged says what the writer would have
    written from its headers: same status, headers, body and keep-alive, read by h11."""
    body = b'{"message":"x"}'
    raw = (
        b"HTTP/1.1 %d Status\r\nApi-Version: 1.41\r\nContent-Type: application/json\r\n"
        b"Server: Docker/20.10.24+dfsg1 (linux)\r\nContent-Length: %d" % (status, len(body))
    )
    engine = parse_response_head(raw)
    assert not engine.hop and engine.length == len(body)
    wires = []
    answers = []
    for as_received in (True, False):
        answer = Answer(method, version, keep_alive)
        head = (
            answer.head_as_received(status, engine.reason, engine.block, len(body))
            if as_received
            else answer.head(status, list(engine.headers), engine.reason)
        )
        wire = head + b"".join(bytes(p) for p in answer.body([body])) + answer.end()
        wires.append(wire)
        answers.append(answer)
    assert wires[0] == wires[1]  # the engine's spacing is the writer's: byte for byte here
    response, got, h11_keeps = _read_back(method, version, keep_alive, wires[0])
    assert response.status_code == status
    assert got == (b"" if method == "HEAD" else body)
    assert answers[0].keep == answers[1].keep == (keep_alive and version == (1, 1))
    assert h11_keeps == answers[0].keep


@pytest.mark.parametrize(
    "raw",
    [
        b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0",
        b"HTTP/1.1 200 OK\r\nKeep-Alive: timeout=5\r\nContent-Length: 0",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked",
        b"HTTP/1.1 200 OK\r\nconnection: close\r\nContent-Length: 0",
    ],
)
def test_an_engine_block_with_the_writers_own_headers_is_never_relayed_as_is(raw: bytes) -> None:
    assert parse_response_head(raw).hop


def test_an_as_received_head_is_written_once_and_only_for_an_answer_with_a_body() -> None:
    answer = Answer("GET", (1, 1), True)
    with pytest.raises(WriteError):
        answer.head_as_received(204, b"No Content", b"\r\nContent-Length: 0", 0)
    with pytest.raises(WriteError):
        answer.head_as_received(200, b"OK\r\nX: y", b"\r\nContent-Length: 0", 0)
    with pytest.raises(WriteError):
        answer.head_as_received(200, b"OK", b"Content-Length: 0", 0)
    answer.head_as_received(200, b"OK", b"\r\nContent-Length: 2", 2)
    with pytest.raises(WriteError):
        answer.head_as_received(200, b"OK", b"\r\nContent-Length: 2", 2)
    with pytest.raises(WriteError):
        answer.body([b"abc"])  # its Content-Length is enforced as the writer's own
