"""The proxy's own engine calls (trust.proxy.upstream): kept connections and strict answers.

A fake engine on a unix socket answers with scripted bytes per request and counts the
connections it accepted, so each test asserts which connection carried which answer.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.unit._engines import Parts, start_proxy
from tests.unit._engines import ScriptedEngine as FakeEngine
from trust.proxy.upstream import EngineDown, Upstream

#: (connection number, request head) -> (answer bytes, close after).
Script = Callable[[int, bytes], tuple[bytes, bool]]


@pytest.fixture
def engine_at(tmp_path: Path) -> Iterator[Callable[[Script], FakeEngine]]:
    made: list[FakeEngine] = []

    def make(script: Script) -> FakeEngine:
        engine = FakeEngine(tmp_path / "engine.sock", lambda n, head: _parts(*script(n, head)))
        made.append(engine)
        return engine

    yield make
    for engine in made:
        engine.close()


def _parts(answer: bytes, close: bool) -> tuple[Parts, bool]:
    return [answer], close


def _ok(body: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


def test_calls_share_one_kept_connection(engine_at: Callable[[Script], FakeEngine]) -> None:
    engine = engine_at(lambda n, head: (_ok(b'{"n": %d}' % n), False))
    upstream = Upstream(engine.path, timeout=5)
    try:
        answers = [upstream.call("GET", "/_ping").json() for _ in range(3)]
    finally:
        upstream.close()
    assert answers == [{"n": 1}] * 3
    assert engine.connections == 1
    first = engine.requests[0][1].split(b"\r\n")
    assert first[0] == b"GET /_ping HTTP/1.1" and b"Host: localhost" in first


def test_a_connection_the_engine_closed_is_replaced(
    engine_at: Callable[[Script], FakeEngine],
) -> None:
    engine = engine_at(lambda n, head: (_ok(b'{"n": %d}' % n), True))  # closes after each
    upstream = Upstream(engine.path, timeout=5)
    try:
        answers = [upstream.call("GET", "/images/x/json").json() for _ in range(3)]
    finally:
        upstream.close()
    assert answers == [{"n": 1}, {"n": 2}, {"n": 3}]
    assert engine.connections == 3


def test_a_kept_connection_closed_unanswered_resends_a_get_never_a_post(
    engine_at: Callable[[Script], FakeEngine],
) -> None:
    """The engine may act on a request and close before answering: a tag sent again could
    land after a newer verification's tag (X38), so only GET/HEAD are sent once more."""
    seen: dict[int, int] = {}

    def script(number: int, head: bytes) -> tuple[bytes, bool]:
        seen[number] = seen.get(number, 0) + 1
        if seen[number] == 2:
            return b"", True  # the second request on each connection: closed unanswered
        return _ok(b"{}"), False

    engine = engine_at(script)
    upstream = Upstream(engine.path, timeout=5)
    try:
        upstream.call("GET", "/_ping")  # connection 1, kept
        with pytest.raises(EngineDown):
            upstream.call("POST", "/images/x/tag?repo=r&tag=t")
        posts = [(n, head) for n, head in engine.requests if head.startswith(b"POST")]
        assert [n for n, _ in posts] == [1]  # once, never again on a new connection
        assert b"Content-Length: 0" in posts[0][1]
        upstream.call("GET", "/_ping")  # connection 2, kept
        assert upstream.call("GET", "/version").status == 200  # on 2: closed; sent again on 3
    finally:
        upstream.close()
    assert [n for n, head in engine.requests if b"/version" in head] == [2, 3]


def test_bytes_beyond_the_framing_are_never_the_next_answer(
    engine_at: Callable[[Script], FakeEngine],
) -> None:
    stray = _ok(b'{"forged": true}')
    engine = engine_at(lambda n, head: (_ok(b'{"n": %d}' % n) + stray, False))
    upstream = Upstream(engine.path, timeout=5)
    try:
        answers = [upstream.call("GET", "/version").json() for _ in range(2)]
    finally:
        upstream.close()
    assert answers == [{"n": 1}, {"n": 2}]
    assert engine.connections == 2


def test_a_stream_read_to_its_end_keeps_the_connection(
    engine_at: Callable[[Script], FakeEngine],
) -> None:
    def script(n: int, head: bytes) -> tuple[bytes, bool]:
        if head.startswith(b"POST /images/create"):
            body = b'{"status":"a"}\r\n'
            return (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                + b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body),
                False,
            )
        return _ok(b'{"n": %d}' % n), False

    engine = engine_at(script)
    upstream = Upstream(engine.path, timeout=5)
    try:
        status, _, pieces, close = upstream.stream("POST", "/images/create?fromImage=x")
        try:
            body = b"".join(pieces)
        finally:
            close()
        after = upstream.call("GET", "/_ping").json()
        # A stream abandoned before its end is closed, never kept for the next call.
        status2, _, _unread, close2 = upstream.stream("POST", "/images/create?fromImage=x")
        close2()
        last = upstream.call("GET", "/_ping").json()
    finally:
        upstream.close()
    assert (status, body, after, status2) == (200, b'{"status":"a"}\r\n', {"n": 1}, 200)
    assert last == {"n": 2} and engine.connections == 2


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\nOK",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nOK",
        b"HTTP/1.1 200 OK\r\nX: a\r\n folded\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX: a\nY: b\r\n\r\n",
        b"HTTP/2 200\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        b"HTTP/1.1 100 Continue\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ],
)
def test_malformed_answers_are_engine_down(
    engine_at: Callable[[Script], FakeEngine], answer: bytes
) -> None:
    engine = engine_at(lambda n, head: (answer, True))
    upstream = Upstream(engine.path, timeout=5)
    try:
        with pytest.raises(EngineDown):
            upstream.call("GET", "/version")
    finally:
        upstream.close()


def test_header_values_with_line_breaks_are_never_sent(tmp_path: Path) -> None:
    upstream = Upstream(str(tmp_path / "none.sock"))
    with pytest.raises(ValueError):
        upstream.call("GET", "/_ping", {"X-Registry-Auth": "a\r\nX-Evil: 1"})
    for target in ("/images/a\r\nX-Evil: 1/json", "/images/a b/json", "/x\x00", "/\u0100", "x"):
        with pytest.raises(ValueError):
            upstream.call("GET", target)
    for method in ("GET /x HTTP/1.1\r\n", "", "G T"):
        with pytest.raises(ValueError):
            upstream.call(method, "/_ping")


# ----------------------------------------------- client connections on kept engine connections


@pytest.fixture
def proxy_to(tmp_path: Path) -> Iterator[Callable[[FakeEngine], str]]:
    """A proxy in front of a FakeEngine; returns its socket path."""
    started = []

    def start(engine: FakeEngine) -> str:
        listen = str(tmp_path / "p.sock")
        started.append(start_proxy(engine.path, listen))
        return listen

    yield start
    for server in started:
        server.stop()


def _client(path: str, request: bytes) -> bytes:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(path)
        sock.sendall(request)
        sock.settimeout(5)
        out = b""
        while not out.endswith(b"OK") and b" 503 " not in out:
            data = sock.recv(65536)
            if not data:
                break
            out += data
        sock.shutdown(socket.SHUT_WR)
        while sock.recv(65536):  # until the proxy closed: it gave the engine connection back
            pass
        return out


_GET = b"GET /containers/json HTTP/1.1\r\nHost: x\r\n\r\n"
_POST = b"POST /containers/abc/stop HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"


def test_client_connections_reuse_kept_engine_connections(
    engine_at: Callable[[Script], FakeEngine], proxy_to: Callable[[FakeEngine], str]
) -> None:
    engine = engine_at(lambda n, head: (_ok(b"OK"), False))
    proxy = proxy_to(engine)
    answers = [_client(proxy, _GET) for _ in range(3)]
    assert all(a.startswith(b"HTTP/1.1 200") and a.endswith(b"OK") for a in answers), answers
    assert engine.connections == 1, engine.requests


def test_a_kept_connection_closed_unanswered_is_retried_for_a_get_only(
    engine_at: Callable[[Script], FakeEngine], proxy_to: Callable[[FakeEngine], str]
) -> None:
    """The engine closes a kept connection as the next request arrives: a GET is sent once
    more on a new connection; a POST never goes on a kept connection (it may not be sent
    twice), so it never meets that close."""
    seen: dict[int, int] = {}

    def script(number: int, head: bytes) -> tuple[bytes, bool]:
        seen[number] = seen.get(number, 0) + 1
        if number == 1 and seen[number] == 2:
            return b"", True  # closed without a byte of an answer
        return _ok(b"OK"), False

    engine = engine_at(script)
    proxy = proxy_to(engine)
    assert _client(proxy, _GET).endswith(b"OK")  # connection 1, kept
    second = _client(proxy, _GET)  # on 1: closed unanswered; sent again on 2
    assert second.startswith(b"HTTP/1.1 200") and second.endswith(b"OK"), second
    assert [n for n, _ in engine.requests] == [1, 1, 2]
    third = _client(proxy, _POST)  # 2 is kept, but a POST takes a new connection
    assert third.startswith(b"HTTP/1.1 200"), third
    assert [n for n, _ in engine.requests] == [1, 1, 2, 3]
