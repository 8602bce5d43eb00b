"""Engine connections shared between client connections and the proxy's own calls.

A client connection's first GET/HEAD may go on a kept engine connection, and its clean one
goes back for the next user, which may be the proxy's own inspect (whose answer decides
whether an image is verified). An engine on a unix socket names in every answer the request
it answers and records which connection carried it, so each test asserts that every answer
went to its own request and that a connection with anything in flight was never kept.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.unit._engines import Script, start_proxy
from tests.unit._engines import ScriptedEngine as Engine
from trust.proxy.server import Proxy


def _named(head: bytes) -> bytes:
    """The answer body: the request line it answers."""
    return head.split(b"\r\n", 1)[0]


def echo(number: int, head: bytes) -> tuple[list[bytes | float], bool]:
    body = _named(head)
    if head.startswith(b"HEAD "):
        return [b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body)], False
    return [b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)], False


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Callable[..., tuple[Proxy, str, Engine]]]:
    made: list[tuple[Proxy, Engine]] = []

    def make(script: Script = echo, mode: str = "enforce") -> tuple[Proxy, str, Engine]:
        engine = Engine(tmp_path / "engine.sock", script, record=_named)
        listen = str(tmp_path / "p.sock")
        proxy = start_proxy(engine.path, listen, mode=mode)
        made.append((proxy, engine))
        return proxy, listen, engine

    yield make
    for proxy, engine in made:
        proxy.stop()
        engine.close()


def _client(path: str, request: bytes, read_all: bool = True) -> bytes:
    """Send `request`, half-close, read until the proxy closes (it then gave the engine
    connection back or closed it)."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(path)
        sock.sendall(request)
        sock.shutdown(socket.SHUT_WR)
        sock.settimeout(5)
        out = b""
        while data := sock.recv(65536):
            out += data
            if not read_all:
                break
        return out


def _settle(check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 3
    while not check() and time.monotonic() < deadline:
        time.sleep(0.01)


def _get(path: str) -> bytes:
    return b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path.encode()


def test_a_clients_kept_connection_carries_the_proxys_own_inspect_to_its_own_answer(
    setup: Callable[..., tuple[Proxy, str, Engine]],
) -> None:
    proxy, path, engine = setup()
    assert _client(path, _get("/containers/json")).endswith(b"GET /containers/json HTTP/1.1")
    answer = proxy.upstream.call("GET", "/images/x/json")
    assert answer.body == b"GET /images/x/json HTTP/1.1"
    assert engine.connections == 1, engine.requests  # the client's connection, kept


def test_answers_on_shared_connections_go_to_their_own_requests_under_load(
    setup: Callable[..., tuple[Proxy, str, Engine]],
) -> None:
    """Client connections (GET, HEAD, chunked and slow answers) and the proxy's own calls
    and streams, from several threads at once, over the same kept connections."""

    def script(number: int, head: bytes) -> tuple[list[bytes | float], bool]:
        body = _named(head)
        if b"chunk" in head.split(b"\r\n", 1)[0] and not head.startswith(b"HEAD "):
            start = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            return [start, 0.002, b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)], False
        return echo(number, head)

    proxy, path, engine = setup(script)
    wrong: list[tuple[str, bytes]] = []

    def clients(n: int) -> None:
        for i in range(40):
            target = f"/c/{'chunk' if i % 3 == 0 else 'plain'}/{n}/{i}"
            method = "HEAD" if i % 4 == 1 else "GET"
            out = _client(path, f"{method} {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            line = f"{method} {target} HTTP/1.1".encode()
            if method == "HEAD":
                ok = out.startswith(b"HTTP/1.1 200") and b"\r\n\r\n" in out
                ok = ok and out.endswith(b"\r\n\r\n") and str(len(line)).encode() in out
            else:
                ok = line in out and out.startswith(b"HTTP/1.1 200")
            if not ok:
                wrong.append((target, out))

    def own_calls(n: int) -> None:
        for i in range(40):
            target = f"/own/{'chunk' if i % 2 else 'plain'}/{n}/{i}"
            if i % 5 == 0:
                _, _, pieces, close = proxy.upstream.stream("GET", target)
                body = b"".join(pieces)
                close()
            else:
                body = proxy.upstream.call("GET", target).body
            if body != f"GET {target} HTTP/1.1".encode():
                wrong.append((target, body))

    threads = [threading.Thread(target=clients, args=(n,)) for n in range(4)]
    threads += [threading.Thread(target=own_calls, args=(n,)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not wrong, wrong[:3]
    assert engine.connections < len(engine.requests) / 4  # the connections were shared


_EMPTY = b"Content-Length: 0\r\n\r\n"


@pytest.mark.parametrize(
    ("target", "parts", "close"),
    [
        ("/stream-to-eof", [b"HTTP/1.1 200 OK\r\n\r\nall of it"], True),
        ("/engine-says-close", [b"HTTP/1.1 200 OK\r\nConnection: close\r\n", _EMPTY], False),
    ],
)
def test_a_connection_the_answer_ends_is_never_kept(
    setup: Callable[..., tuple[Proxy, str, Engine]],
    target: str,
    parts: list[bytes | float],
    close: bool,
) -> None:
    def script(number: int, head: bytes) -> tuple[list[bytes | float], bool]:
        if target.encode() in head.split(b"\r\n", 1)[0]:
            return parts, close
        return echo(number, head)

    proxy, path, engine = setup(script)
    assert _client(path, _get(target)).startswith(b"HTTP/1.1 200")
    assert proxy.upstream.call("GET", "/next").body == b"GET /next HTTP/1.1"
    assert engine.connections == 2, engine.requests


def test_a_client_gone_mid_answer_never_gives_its_connection_back(
    setup: Callable[..., tuple[Proxy, str, Engine]],
) -> None:
    """The rest of the answer arrives after the client left: the connection is closed, so
    the proxy's next call never reads that rest as its answer."""

    def script(number: int, head: bytes) -> tuple[list[bytes | float], bool]:
        if b"/slow" in head.split(b"\r\n", 1)[0]:
            start = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n"
            forged = b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nforged"
            return [start, 0.5, b"%x\r\n%s\r\n0\r\n\r\n" % (len(forged), forged)], False
        return echo(number, head)

    proxy, path, engine = setup(script)
    assert _client(path, _get("/slow"), read_all=False).startswith(b"HTTP/1.1 200")
    time.sleep(1.0)  # the proxy relays the rest to a closed client
    assert proxy.upstream.call("GET", "/inspect").body == b"GET /inspect HTTP/1.1"
    assert engine.connections == 2, engine.requests
    _settle(lambda: 1 in engine.ended)
    assert 1 in engine.ended


def test_an_http10_client_and_a_head_leave_a_clean_connection_for_the_next_call(
    setup: Callable[..., tuple[Proxy, str, Engine]],
) -> None:
    proxy, path, engine = setup()
    out = _client(path, b"GET /a HTTP/1.0\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200") and out.endswith(b"GET /a HTTP/1.1"), out
    out = _client(path, b"HEAD /b HTTP/1.1\r\nHost: x\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200") and out.endswith(b"\r\n\r\n"), out
    assert proxy.upstream.call("GET", "/c").body == b"GET /c HTTP/1.1"
    assert engine.connections == 1, engine.requests


def test_a_get_is_sent_at_most_twice_and_one_with_a_body_never_on_a_kept_connection(
    setup: Callable[..., tuple[Proxy, str, Engine]],
) -> None:
    """A kept connection closed unanswered, then the new one closed unanswered too: a 503,
    never a third send. A GET with a body takes a new connection (it is not sent again)."""
    state = {"close": False}

    def script(number: int, head: bytes) -> tuple[list[bytes | float], bool]:
        if state["close"]:
            return [], True
        return echo(number, head)

    _, path, engine = setup(script)
    assert _client(path, _get("/one")).endswith(b"GET /one HTTP/1.1")
    state["close"] = True
    out = _client(path, _get("/two"))
    assert b" 503 " in out.split(b"\r\n", 1)[0], out
    assert [line for _, line in engine.requests].count(b"GET /two HTTP/1.1") == 2
    state["close"] = False
    assert _client(path, _get("/three")).endswith(b"GET /three HTTP/1.1")
    before = engine.connections
    with_body = b"GET /four HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"
    assert _client(path, with_body).endswith(b"GET /four HTTP/1.1")
    assert engine.requests[-1] == (before + 1, b"GET /four HTTP/1.1")


def test_a_tunnel_never_returns_its_connection(
    setup: Callable[..., tuple[Proxy, str, Engine]],
) -> None:
    def script(number: int, head: bytes) -> tuple[list[bytes | float], bool]:
        if b"/attach" in head.split(b"\r\n", 1)[0]:
            upgraded = b"HTTP/1.1 101 UPGRADED\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n"
            return [upgraded, b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nforged"], False
        return echo(number, head)

    proxy, path, engine = setup(script)
    attach = (
        b"POST /containers/abc/attach?stream=1 HTTP/1.1\r\nHost: x\r\n"
        b"Connection: Upgrade\r\nUpgrade: tcp\r\nContent-Length: 0\r\n\r\n"
    )
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(path)
        sock.sendall(attach)
        sock.settimeout(5)
        out = b""
        while b"forged" not in out:
            data = sock.recv(65536)
            assert data, out
            out += data
        assert out.startswith(b"HTTP/1.1 101")
        assert proxy.upstream.call("GET", "/inspect").body == b"GET /inspect HTTP/1.1"
    assert engine.connections == 2, engine.requests


def test_after_stop_a_clients_clean_connection_is_closed_not_kept(
    setup: Callable[..., tuple[Proxy, str, Engine]],
) -> None:
    proxy, path, engine = setup()
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(path)
        sock.sendall(_get("/a"))
        sock.settimeout(5)
        out = b""
        while not out.endswith(b"GET /a HTTP/1.1"):
            out += sock.recv(65536)
        proxy.stop()
        sock.shutdown(socket.SHUT_WR)
        while sock.recv(65536):
            pass
    _settle(lambda: 1 in engine.ended)
    assert 1 in engine.ended
    assert proxy.upstream._idle == []
