"""The relay against an engine that answers with crafted bytes, through the proxy's socket.

The engine is trusted, but what it answers frames what the proxy does next with the client's
connection: an answer the proxy cannot relay faithfully must end in a 503, never in a tunnel
the proxy did not ask for nor in a silently dropped connection.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.unit._engines import (
    Parts,
    Script,
    ScriptedEngine,
    answer_then_next,
    exchange,
    start_proxy,
)

#: (request head) -> the engine's answer bytes, or a list of parts sent 0.3 s apart.
RawScript = Callable[[bytes], bytes | list[bytes]]


def _raw(script: RawScript, close_after: bool) -> Script:
    """`script` as a ScriptedEngine's; `close_after`: the answer is delimited by the end of
    the stream."""

    def answer(number: int, head: bytes) -> tuple[Parts, bool]:
        given = script(head)
        parts: Parts = []
        for index, part in enumerate(given if isinstance(given, list) else [given]):
            if index:
                parts.append(0.3)
            parts.append(part)
        return parts, close_after

    return answer


@pytest.fixture
def proxy_to(tmp_path: Path) -> Iterator[Callable[..., tuple[str, ScriptedEngine]]]:
    stops: list[Callable[[], None]] = []

    def make(script: RawScript, close_after: bool = False) -> tuple[str, ScriptedEngine]:
        engine = ScriptedEngine(tmp_path / "engine.sock", _raw(script, close_after))
        listen = str(tmp_path / "p.sock")
        handle = open(tmp_path / "log", "w")
        proxy = start_proxy(engine.path, listen, log=handle)
        stops.extend([proxy.stop, handle.close, engine.close])
        return listen, engine

    yield make
    for stop in stops:
        stop()


def _exchange(path: str, data: bytes, wait: float = 1.5) -> bytes:
    return exchange(path, data, wait)


_GET = b"GET /info HTTP/1.1\r\nHost: x\r\n\r\n"
_HIDDEN = b"POST /v1.41/images/create?fromImage=evil HTTP/1.1\r\nHost: x\r\n\r\n"


def test_a_101_the_proxy_did_not_ask_for_is_no_tunnel(
    proxy_to: Callable[..., tuple[str, ScriptedEngine]],
) -> None:
    """A 101 switches protocols only when the proxy sent the Upgrade (§1.6: hijacks decided
    by the route and the answer, never by the engine alone). Tunnelling an unasked 101 would
    pass every later byte from the client to the engine's parser unread: here a pull."""
    switch = b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n"
    path, engine = proxy_to(lambda head: switch)
    out = _exchange(path, _GET + _HIDDEN)
    assert out.startswith(b"HTTP/1.1 503 "), out
    assert b"101" not in out.split(b"\r\n", 1)[0]
    assert not any(b"fromImage=evil" in head for head in engine.heads), engine.heads


@pytest.mark.parametrize(
    "status_line",
    [
        b"HTTP/1.1 099 Early",
        b"HTTP/1.1 000 Zero",
        b"HTTP/1.1 200 O\x00K",
        b"HTTP/1.1 200 O\x1b[2JK",
        b"HTTP/1.1 200 O\x7fK",
    ],
)
def test_an_answer_the_writer_cannot_relay_is_a_503_not_a_dropped_connection(
    proxy_to: Callable[..., tuple[str, ScriptedEngine]], status_line: bytes
) -> None:
    """The status line is checked where the head is parsed, like every header line: a status
    under 100 or a control byte in the reason once reached the writer, which refused it with
    the client left without any answer (h11 answered 503 for these)."""
    path, _ = proxy_to(lambda head: status_line + b"\r\nContent-Length: 2\r\n\r\n{}")
    out = _exchange(path, _GET)
    assert out.startswith(b"HTTP/1.1 503 ") and b"invalid answer" in out, out


_HEAD = b"HEAD /_ping HTTP/1.1\r\nHost: x\r\n\r\n"
_NEXT = b"GET /containers/json HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


@pytest.mark.parametrize(
    ("first", "answer"),
    [
        (_GET, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"),
        (_HEAD, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n"),
        (_GET, b"HTTP/1.1 204 No Content\r\n\r\n"),
        (_GET, b"HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n"),
        (_GET, b"HTTP/1.1 102 Processing\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"),
    ],
)
def test_bytes_past_an_answers_framed_end_never_answer_the_next_request(
    proxy_to: Callable[..., tuple[str, ScriptedEngine]], first: bytes, answer: bytes
) -> None:
    """An engine answer followed by bytes its framing does not cover (a body on HEAD, 204 or
    304, one answer too many): the upstream connection is not reused, so those bytes never
    become the answer to the client's next request."""
    # larger than one read: a reused connection would still hold the rest of it
    smuggled = b"HTTP/1.1 200 OK\r\nContent-Length: 200005\r\n\r\nEVIL!" + b"E" * 200000

    def script(head: bytes) -> bytes:
        if head.startswith(b"GET /containers/json"):
            return b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nGOOD"
        return answer + smuggled

    path, _ = proxy_to(script)
    out = _exchange(path, first + _NEXT)
    assert b"EVIL!" not in out and out.endswith(b"GOOD"), out
    assert out.count(b"HTTP/1.1 ") == 2, out  # the 102 is not relayed either


def test_a_raw_stream_answer_off_the_hijack_routes_stays_framed(
    proxy_to: Callable[..., tuple[str, ScriptedEngine]],
) -> None:
    """Only attach and exec start become tunnels on a 200 raw-stream answer (§1.6); elsewhere
    the answer is relayed framed and the next request is still read and decided by the proxy."""
    raw = b"HTTP/1.1 200 OK\r\nContent-Type: application/vnd.docker.raw-stream\r\n\r\nOUT"
    path, engine = proxy_to(lambda head: raw, close_after=True)
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(path)
        sock.sendall(_GET)
        sock.settimeout(5)
        out = b""
        while not out.endswith(b"3\r\nOUT\r\n0\r\n\r\n"):
            got = sock.recv(65536)
            assert got, out
            out += got
        assert b"Transfer-Encoding: chunked\r\n" in out, out
        sock.sendall(b"POST /images/load HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        out = b""
        while b"\r\n\r\n" not in out:
            got = sock.recv(65536)
            assert got, out
            out += got
    assert out.startswith(b"HTTP/1.1 403 "), out  # the proxy refused the load itself
    assert not any(b"/images/load" in head for head in engine.heads), engine.heads


def test_an_answer_the_engine_sent_unasked_never_answers_the_next_request(
    proxy_to: Callable[..., tuple[str, ScriptedEngine]],
) -> None:
    """Bytes that arrive on the kept upstream connection after an answer ended, before the
    client's next request, answer no request: the connection is not reused for the next one
    (as `Upstream._take` does for the proxy's own calls), or they would be its answer."""

    def script(head: bytes) -> bytes | list[bytes]:
        if head.startswith(b"GET /containers/json"):
            return b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nGOOD"
        late = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nEVIL!"
        return [b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}", late]

    path, _ = proxy_to(script)
    # by the end of the pause the engine's unasked answer has arrived at the proxy
    out = answer_then_next(path, _GET, b"{}", 0.6, _NEXT)
    assert out.endswith(b"GOOD") and b"EVIL!" not in out, out


def test_a_kept_upstream_connection_the_engine_closed_is_replaced(
    proxy_to: Callable[..., tuple[str, ScriptedEngine]],
) -> None:
    """The same check finds a kept connection the engine closed while the client was idle:
    the next request goes on a fresh one instead of failing with a 503."""
    path, _ = proxy_to(
        lambda head: b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nGOOD", close_after=True
    )
    out = answer_then_next(path, _GET, b"GOOD", 0.3, _NEXT)
    assert out.startswith(b"HTTP/1.1 200 ") and out.endswith(b"GOOD"), out


@pytest.mark.parametrize(("count", "relayed"), [(3, True), (17, False), (2000, False)])
def test_informational_answers_are_bounded(
    proxy_to: Callable[..., tuple[str, ScriptedEngine]], count: int, relayed: bool
) -> None:
    """1xx answers before the final one are skipped, but not without end: an engine that only
    ever sends them would hold the client's request forever (16 allowed; Go's client, 5)."""
    final = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"
    path, _ = proxy_to(lambda head: b"HTTP/1.1 100 Continue\r\n\r\n" * count + final)
    out = _exchange(path, _GET)
    if relayed:
        assert out.startswith(b"HTTP/1.1 200 ") and out.endswith(b"{}"), out
    else:
        assert out.startswith(b"HTTP/1.1 503 ") and b"1xx" in out, out


@pytest.mark.parametrize("half_close", [False, True])
def test_a_client_gone_from_a_silent_stream_frees_its_engine_connection(
    tmp_path: Path, half_close: bool
) -> None:
    """`events` or `logs -f` can stay silent for hours: a client that closed its connection
    is noticed within seconds and the engine connection closed, not held until the engine
    next writes; a client that only shut its sending side still gets the stream."""
    import threading
    import time

    engine_path = str(tmp_path / "engine.sock")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(engine_path)
    listener.listen(4)
    closed_at: list[float] = []

    def engine() -> None:
        conn, _ = listener.accept()
        with conn:
            while b"\r\n\r\n" not in conn.recv(65536):
                pass
            conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n")
            conn.settimeout(7 if half_close else 12)  # longer than the proxy's 5 s check
            try:
                data = conn.recv(1)  # silent; returns b"" when the proxy closes its side
            except TimeoutError:
                if half_close:
                    conn.sendall(b"4\r\nlate\r\n0\r\n\r\n")
                return
            if not data:
                closed_at.append(time.monotonic())

    thread = threading.Thread(target=engine, daemon=True)
    thread.start()
    listen = str(tmp_path / "p.sock")
    proxy = start_proxy(engine_path, listen)
    try:
        with socket.socket(socket.AF_UNIX) as client:
            client.connect(listen)
            client.sendall(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
            got = b""
            while b"{}" not in got:
                got += client.recv(65536)
            if half_close:
                client.shutdown(socket.SHUT_WR)
                client.settimeout(15)
                while b"late" not in got:
                    data = client.recv(65536)
                    assert data, got
                    got += data
            else:
                began = time.monotonic()
                client.close()
                thread.join(15)
                assert closed_at and closed_at[0] - began < 8, closed_at
    finally:
        proxy.stop()
        listener.close()


@pytest.mark.parametrize("framed", [True, False])
def test_the_ping_says_builder_1_whatever_the_engine_says(
    proxy_to: Callable[..., tuple[str, ScriptedEngine]], framed: bool
) -> None:
    """Relayed as received (one Content-Length) or re-written (chunked), the ping's answer
    carries exactly one `Builder-Version: 1`: every line of the engine's own is dropped, in
    any case, and headers whose names merely contain it stay."""
    framing = (
        b"Content-Length: 2\r\n\r\nOK"
        if framed
        else b"Transfer-Encoding: chunked\r\n\r\n2\r\nOK\r\n0\r\n\r\n"
    )
    ping = (
        b"HTTP/1.1 200 OK\r\nApi-Version: 1.41\r\nBuilder-Version: 2\r\nbuilder-VERSION: 2\r\n"
        b"Builder-Version-X: kept\r\nX-Builder-Version: kept\r\n" + framing
    )
    path, _ = proxy_to(lambda head: ping)
    out = _exchange(path, b"GET /_ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    head, _, body = out.partition(b"\r\n\r\n")
    lines = [line.lower() for line in head.split(b"\r\n")[1:]]
    assert [line for line in lines if line.startswith(b"builder-version:")] == [
        b"builder-version: 1"
    ], out
    assert b"builder-version-x: kept" in lines and b"x-builder-version: kept" in lines
    assert b"OK" in body


def _put_big_body(path: str) -> bytes:
    """A passed-through request body (forwarded as the client streams it) larger than the
    socket buffers; what the proxy answered, up to its close."""
    import threading

    body = b"x" * (8 * 1024 * 1024)
    head = (
        b"POST /containers/c/update HTTP/1.1\r\nHost: x\r\n"
        b"Content-Type: application/x-tar\r\nContent-Length: %d\r\n\r\n" % len(body)
    )
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(path)
        sock.settimeout(15)

        def send() -> None:
            with contextlib.suppress(OSError):
                sock.sendall(head + body)

        threading.Thread(target=send, daemon=True).start()
        out = b""
        with contextlib.suppress(OSError):
            while more := sock.recv(65536):
                out += more
        return out


def _framed(status_line: bytes, body: bytes) -> bytes:
    return status_line + b"\r\nContent-Length: %d\r\n\r\n" % len(body) + body


@pytest.mark.parametrize(
    ("answer", "relayed"),
    [
        (_framed(b"HTTP/1.1 400 Bad Request", b'{"message":"Unsupported isolation"}'), True),
        (_framed(b"HTTP/1.1 200 OK", b'{"message":"Unsupported isolation"}'), False),
        (_framed(b"HTTP/1.1 400 Bad Request", b"[" * 60000), False),
        (_framed(b"HTTP/1.1 400 Bad Request", b'{"message": 5}'), False),
        (_framed(b"HTTP/1.1 400 Bad", b'{"message":"Unsupported' + b"a" * 70000 + b'"}'), False),
        (
            b"HTTP/1.1 400 Bad\r\nTransfer-Encoding: chunked\r\n\r\n"
            b'23\r\n{"message":"Unsupported isolation"}\r\n0\r\n\r\n',
            False,
        ),
    ],
)
def test_an_early_engine_error_is_relayed_only_when_small_framed_and_an_error(
    proxy_to: Callable[..., tuple[str, ScriptedEngine]], answer: bytes, relayed: bool
) -> None:
    """The engine answered before the request's body was all sent, and closed: its message
    is the client's answer only for a small error framed by its Content-Length whose body is
    an Engine API error; anything else (a success, a body too deep for the JSON parser, too
    large, chunked) is the proxy's own 503, never a connection dropped unanswered."""
    path, _ = proxy_to(lambda head: answer, close_after=True)
    out = _put_big_body(path)
    if relayed:
        assert out.startswith(b"HTTP/1.1 400 ") and b"Unsupported isolation" in out, out
    else:
        assert out.startswith(b"HTTP/1.1 503 ") and b"Unsupported" not in out, out
    assert out.endswith(b"}\n") and b"Connection: close\r\n" in out, out


def test_a_head_finished_near_its_deadline_does_not_shorten_the_answers_send_timeout(
    proxy_to: Callable[..., tuple[str, ScriptedEngine]],
) -> None:
    """The client socket's timeout while the answer is written is the idle timeout, not what
    was left of the header deadline when the head's last piece was awaited (a tenth of a
    second here): a client that pauses reading `docker save` for half a second still gets
    all of it."""
    import time

    size = 16 * 1024 * 1024
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size + b"x" * size
    path, _ = proxy_to(lambda head: answer)
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(path)
        sock.sendall(b"GET /images/x/get HTTP/1.1\r\n")
        time.sleep(1.85)  # header_timeout is 2 s
        sock.sendall(b"Host: x\r\n")
        time.sleep(0.05)
        sock.sendall(b"\r\n")
        time.sleep(0.5)
        sock.settimeout(5)
        got = 0
        with contextlib.suppress(TimeoutError):
            while more := sock.recv(1 << 20):
                got += len(more)
                if got >= len(answer):
                    break
    assert got == len(answer), got
