"""Requests the proxy itself sends to the engine (inspects, pulls by digest, tags).

The client's API version goes in the path so the engine applies the same version gates (§1.1).
Client bytes never go here. The engine is a local, trusted peer, but its answers are still read
strictly: the status line and headers by `_read_head` (anything unusual is `EngineDown`), the
body by the proxy's own `BodyReader` (exact Content-Length or strict chunks).

Connections are kept alive between calls (issue 12, "a warm pull ≤ 5 ms of proxy CPU": a new
http.client connection per call, with its email-parser headers, was a fifth of a warm pull).
A connection goes back to the idle list only when its answer was read to its framed end with
no byte beyond it, and is checked for a close or stray bytes before it is used again, so one
call's answer can never be read as another's.
"""

from __future__ import annotations

import json
import re
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from trust.proxy.framing import (
    HEAD_END,
    BodyError,
    BodyReader,
    HeadError,
    HTTPRefusal,
    parse_response_head,
)
from trust.proxy.writer import WriteError, request_head

#: A container's or plugin's ID as the engine names it.
_ENGINE_ID = re.compile(r"[0-9a-f]{64}")

__all__ = ["EngineDown", "Upstream", "quiet"]

#: An answer's head larger than this is not the engine's.
_MAX_HEAD = 64 * 1024
_MAX_IDLE = 8


class EngineDown(Exception):
    """The engine's socket did not answer."""


@dataclass
class Answer:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            return None

    @property
    def message(self) -> str:
        value = self.json()
        if isinstance(value, dict) and isinstance(value.get("message"), str):
            return str(value["message"])
        return self.body.decode("utf-8", "replace").strip() or f"HTTP {self.status}"


@dataclass
class _Head:
    status: int
    headers: list[tuple[str, str]]
    reader: BodyReader
    #: The connection may carry another request once the body is read to its end.
    keep: bool


class Upstream:
    """The engine at a unix socket path."""

    def __init__(self, path: str, timeout: float = 60.0) -> None:
        self.path = path
        self.timeout = timeout
        self._idle: list[socket.socket] = []
        self._lock = threading.Lock()
        self._closed = False

    def connect_raw(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(self.path)
        except OSError as exc:
            sock.close()
            raise EngineDown(str(exc.strerror or exc)) from None
        return sock

    def close(self) -> None:
        """Close the kept connections; one given back from now on is closed instead."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for sock in idle:
            sock.close()

    # -- kept connections

    def take_idle(self) -> socket.socket | None:
        """A kept connection for a client connection's relay (see `_take`), or None; blocking,
        as a new one is (the relay's reads wait as long as the engine's answer takes)."""
        return self._take()

    def give_back(self, sock: socket.socket) -> None:
        """A relay's connection whose last answer was read to its framed end."""
        self._give_back(sock)

    def _take(self) -> socket.socket | None:
        """An idle connection the engine has not closed and sent nothing on, or None."""
        while True:
            with self._lock:
                if not self._idle:
                    return None
                sock = self._idle.pop()
            if quiet(sock):
                return sock
            sock.close()  # closed by the engine, or bytes no request asked for

    def _give_back(self, sock: socket.socket) -> None:
        with self._lock:
            if len(self._idle) < _MAX_IDLE and not self._closed:
                self._idle.append(sock)
                return
        sock.close()

    def _finish(self, sock: socket.socket, head: _Head) -> None:
        """After the body: keep the connection only when its answer ended cleanly there."""
        reader = head.reader
        if (
            head.keep
            and reader.done
            and (reader.length is not None or reader.chunked)
            and not reader.rest()
        ):
            self._give_back(sock)
        else:
            sock.close()

    # -- one exchange

    def _open(
        self,
        method: str,
        target: str,
        headers: dict[str, str] | None,
        body: bytes | None,
        timeout: float | None,
    ) -> tuple[socket.socket, _Head]:
        request = _request_bytes(method, target, headers or {}, body)
        sock = self._take()
        if sock is not None:
            try:
                return sock, self._exchange(sock, method, request, timeout)
            except _Stale:
                sock.close()
                if method not in ("GET", "HEAD"):
                    # The engine may have acted on it before closing (a tag, a pull): never
                    # sent twice, or a tag could land after a newer verification's (X38).
                    raise EngineDown("the engine closed the connection unanswered") from None
                # an inspect or a version: once more, on a new connection
        sock = self.connect_raw()
        try:
            return sock, self._exchange(sock, method, request, timeout)
        except _Stale:
            sock.close()
            raise EngineDown("the engine closed the connection") from None

    def _exchange(
        self, sock: socket.socket, method: str, request: bytes, timeout: float | None
    ) -> _Head:
        try:
            sock.settimeout(timeout)
            try:
                sock.sendall(request)
            except OSError:
                raise _Stale from None
            return _read_head(sock, method)
        except _Stale:
            raise
        except EngineDown:
            sock.close()
            raise
        except OSError as exc:
            sock.close()
            raise EngineDown(str(getattr(exc, "strerror", None) or exc)) from None

    def call(
        self,
        method: str,
        target: str,
        headers: dict[str, str] | None = None,
        body: bytes | None = None,
        limit: int = 16 * 1024 * 1024,
    ) -> Answer:
        sock, head = self._open(method, target, headers, body, self.timeout)
        data = bytearray()
        try:
            for batch in head.reader.batches():
                for piece in batch:
                    data += piece
                if len(data) >= limit:
                    del data[limit:]
                    sock.close()
                    return Answer(head.status, head.headers, bytes(data))
        except BodyError as exc:
            sock.close()
            raise EngineDown(str(exc)) from None
        except BaseException:
            sock.close()
            raise
        self._finish(sock, head)
        return Answer(head.status, head.headers, bytes(data))

    def inspect_by_id(
        self, version: str | None, kind: str, name: str
    ) -> tuple[str, dict[str, Any]]:
        """(ID, inspect answer) of container or plugin `name` (`kind`: "containers" or
        "plugins"), for a request the proxy then forwards by that ID: by name, a rename or
        re-create in between would act on another object. Anything but 200 is answered as
        the engine's own error (never forwarded: by then the name may be another's)."""
        answer = self.call("GET", vpath(version, f"/{kind}/{name}/json"))
        if answer.status != 200:
            raise HTTPRefusal(answer.status if answer.status >= 400 else 502, answer.message)
        info = answer.json()
        info = info if isinstance(info, dict) else {}
        object_id = str(info.get("Id") or "")
        if _ENGINE_ID.fullmatch(object_id) is None:
            raise HTTPRefusal(502, f"trustpull: the engine named {kind[:-1]} {name} oddly")
        return object_id, info

    def stream(
        self,
        method: str,
        target: str,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, list[tuple[str, str]], Iterator[bytes], Any]:
        """A streaming call: status, headers, an iterator over body pieces, a closer."""
        sock, head = self._open(method, target, headers, None, None)
        state = {"open": True}

        def pieces() -> Iterator[bytes]:
            try:
                for batch in head.reader.batches():
                    yield b"".join(batch)
            except BodyError as exc:
                raise EngineDown(str(exc)) from None

        def close() -> None:
            if state["open"]:
                state["open"] = False
                self._finish(sock, head)

        return head.status, head.headers, pieces(), close


def quiet(sock: socket.socket) -> bool:
    """Whether a kept connection is open with nothing unread on it; then left blocking.

    Anything unread is bytes no request asked for (never to be read as the next answer); an
    empty read is the engine's close.
    """
    try:
        if sock.gettimeout() is not None:
            sock.settimeout(None)  # a timeout would make recv wait for readability first
        sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)  # no mode switch: one system call
    except BlockingIOError:
        return True
    except OSError:
        pass
    return False


class _Stale(Exception):
    """A kept connection ended before any byte of the answer (the engine closed it idle)."""


def _request_bytes(method: str, target: str, headers: dict[str, str], body: bytes | None) -> bytes:
    """The request as http.client framed it (Host, identity encoding, Content-Length on
    methods that take a body), written by the one request writer, which checks the method,
    the target (no space or control byte) and every header name and value."""
    lines = [(b"Host", b"localhost"), (b"Accept-Encoding", b"identity")]
    lines += [(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()]
    framing = b""
    if body is not None or method in ("POST", "PUT", "PATCH"):
        framing = b"Content-Length: %d\r\n" % len(body or b"")
    try:
        data = request_head(method, target.encode("latin-1"), lines, framing)
    except WriteError as exc:
        raise ValueError(f"cannot send to the engine: {exc}") from None
    return data + body if body else data


def _read_head(sock: socket.socket, method: str) -> _Head:
    """The answer's status line and headers, strictly; the body left to a `BodyReader`."""
    buffer = b""
    while True:
        end = buffer.find(HEAD_END)
        if end >= 0:
            break
        if len(buffer) > _MAX_HEAD:
            raise EngineDown("invalid answer: head too large")
        try:
            data = sock.recv(_MAX_HEAD)
        except TimeoutError:
            raise EngineDown("no answer in time") from None
        except OSError:
            if buffer:
                raise
            data = b""
        if not data:
            if not buffer:
                raise _Stale
            raise EngineDown("invalid answer: the engine closed the connection mid-head")
        buffer += data
    try:
        answer = parse_response_head(buffer[:end])
    except HeadError as exc:
        raise EngineDown(f"invalid answer: {exc}") from None
    if 100 <= answer.status < 200:
        raise EngineDown(f"invalid answer: unexpected {answer.status}")
    length, chunked = answer.body_framing(method)
    reader = BodyReader(sock, buffer[end + len(HEAD_END) :], length=length, chunked=chunked)
    headers = [(name.decode("latin-1"), value.decode("latin-1")) for name, value in answer.headers]
    close = answer.close or (length is None and not chunked)
    return _Head(answer.status, headers, reader, keep=not close)


def vpath(version: str | None, path: str) -> str:
    prefix = f"/v{version}" if version is not None else ""
    return quote(prefix + path, safe="/:@-._~!$&'()*+,=")


def image_path(version: str | None, name: str, suffix: str) -> str:
    return vpath(version, f"/images/{name}{suffix}")
