"""Stand-in engines on unix sockets and a proxy in front of one, for the proxy's unit tests.

`ScriptedEngine` reads request heads (the tests that use it send no bodies) and answers each
with what its script says: parts sent in order (a float between them is a pause), then
whether to end the connection. It counts the connections it accepted, records which one
carried each request and which ones the proxy closed, so a test can assert which connection
carried which answer.
"""

from __future__ import annotations

import io
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

from trust.proxy.handlers import build_proxy
from trust.proxy.server import DecisionLog, Proxy, bind_listener
from trust.settings import ProxyConfig, Settings

Parts = list[bytes | float]
#: (connection number, request head) -> (parts, end the connection after them).
Script = Callable[[int, bytes], tuple[Parts, bool]]


class ScriptedEngine:
    def __init__(
        self, path: Path, script: Script, record: Callable[[bytes], bytes] = lambda head: head
    ) -> None:
        self.path = str(path)
        self.script = script
        self.record = record
        self.connections = 0
        self.requests: list[tuple[int, bytes]] = []
        #: Connection numbers the proxy closed.
        self.ended: set[int] = set()
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(self.path)
        self.listener.listen(16)
        threading.Thread(target=self._serve, daemon=True).start()

    @property
    def heads(self) -> list[bytes]:
        return [head for _, head in self.requests]

    def close(self) -> None:
        self.listener.close()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._one, args=(conn, self.connections), daemon=True).start()

    def _one(self, conn: socket.socket, number: int) -> None:
        buffer = b""
        with conn:
            while True:
                while b"\r\n\r\n" not in buffer:
                    try:
                        data = conn.recv(65536)
                    except OSError:
                        data = b""
                    if not data:
                        self.ended.add(number)
                        return
                    buffer += data
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                self.requests.append((number, self.record(head)))
                parts, close = self.script(number, head)
                try:
                    for part in parts:
                        if isinstance(part, float):
                            time.sleep(part)
                        else:
                            conn.sendall(part)
                except OSError:
                    self.ended.add(number)  # the proxy closed it first
                    return
                if close:
                    return


def start_proxy(
    engine_path: str, listen: str, *, mode: str = "enforce", log: io.TextIOBase | None = None
) -> Proxy:
    """A proxy serving `listen` in front of the engine at `engine_path` (stop it after)."""
    config = ProxyConfig(header_timeout=2.0, idle_timeout=5.0, mode=mode)
    listener = bind_listener(listen, engine_path, config)
    proxy = build_proxy(Settings(), engine_path, config, DecisionLog(log or io.StringIO()))
    threading.Thread(target=proxy.serve, args=(listener,), daemon=True).start()
    return proxy


def exchange(path: str, data: bytes, wait: float = 1.0) -> bytes:
    """Send `data` to the proxy; what it sent back, up to its close or `wait` s of silence."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(path)
        sock.sendall(data)
        sock.settimeout(wait)
        out = b""
        try:
            while chunk := sock.recv(65536):
                out += chunk
        except TimeoutError:
            pass
        return out


def answer_then_next(
    path: str, first: bytes, first_ends: bytes, pause: float, then: bytes
) -> bytes:
    """On one connection: `first`, its answer read up to `first_ends`, a pause, then `then`;
    what the proxy sent back after `then`, up to its close."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(path)
        sock.settimeout(5)
        sock.sendall(first)
        got = b""
        while not got.endswith(first_ends):
            more = sock.recv(65536)
            assert more, got
            got += more
        time.sleep(pause)
        sock.sendall(then)
        out = b""
        while more := sock.recv(65536):
            out += more
        return out
