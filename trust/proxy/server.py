"""The listener, the per-connection loop, forwarding and byte tunnels.

One thread per client connection (bounded by `max_connections` and per peer uid), one upstream
connection per client connection, one request at a time on it. Request heads are checked by
`framing.check_head` before h11 sees them (without their framing headers: h11 parses heads and
frames what the proxy sends); bodies both ways are decoded by `framing.BodyReader` and sent on
in large slices under the proxy's own framing (a fresh Content-Length, or chunks written
here), so the engine only ever receives bytes the proxy produced itself, until the engine
switched a connection to a raw stream (attach, exec start, an allowed upgrade): from then on
both sockets are joined by a tunnel that never parses again.

Longer than 500 lines because one connection's life (strict head, body framing,
forwarding, the engine's answer, upgrades and byte tunnels, keep-alive) is one loop whose
states must stay in step; the head checks, routes and handlers are elsewhere.
"""

from __future__ import annotations

import contextlib
import grp
import json
import os
import socket
import stat
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol, TextIO, cast

import h11

from trust.errors import ConfigError
from trust.policy import Policy
from trust.proxy.framing import (
    HEAD_END,
    HOP_BY_HOP,
    BodyError,
    BodyReader,
    HTTPRefusal,
    RequestHead,
    check_head,
)
from trust.proxy.routes import Match, Target, match_route, parse_target
from trust.proxy.upstream import EngineDown, Upstream
from trust.settings import ProxyConfig, Settings

__all__ = ["Peer", "Proxy", "bind_listener"]

_RECV = 1024 * 1024
#: Reads while a head is awaited: a head is small, the body after it has its own reader.
_HEAD_RECV = 64 * 1024
#: Headers h11 is not shown: the strict head check decided the framing and `BodyReader` reads
#: the body, so h11 sees a request without a body and keeps its own state in step with ours.
_FRAMING = (b"content-length", b"transfer-encoding")
#: Threads kept waiting in accept(), and at most this many idle after a burst.
_SPARE = 4
_MAX_IDLE = 32
_HIJACK_ROUTES = {"containers.attach", "exec.start"}
_RAW_STREAM_TYPES = (
    b"application/vnd.docker.raw-stream",
    b"application/vnd.docker.multiplexed-stream",
)


@dataclass(frozen=True)
class Peer:
    pid: int
    uid: int
    gid: int


def peer_of(sock: socket.socket) -> Peer:
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        pid, uid, gid = struct.unpack("3i", raw)
        return Peer(pid, uid, gid)
    except OSError:
        return Peer(-1, -1, -1)


# --------------------------------------------------------------------------------- listener


def bind_listener(path: str, engine_path: str, config: ProxyConfig) -> socket.socket:
    """The listening socket, never more open than the engine's (X50); ConfigError otherwise."""
    if path.startswith("@") or not path:
        raise ConfigError("an abstract socket address has no file permissions: refused")
    try:
        engine = os.stat(engine_path)
        engine_mode = stat.S_IMODE(engine.st_mode)
        engine_uid, engine_gid = engine.st_uid, engine.st_gid
    except OSError as exc:
        if config.socket_mode is None:
            raise ConfigError(
                f"engine socket {engine_path} not found ({exc.strerror}): cannot copy its "
                "permissions; set proxy.socket_mode"
            ) from None
        engine_mode, engine_uid, engine_gid = 0o600, os.geteuid(), os.getegid()
    mode = engine_mode if config.socket_mode is None else config.socket_mode
    if mode & ~engine_mode:
        raise ConfigError(
            f"socket_mode {mode:04o} is wider than the engine socket's {engine_mode:04o}: refused"
        )
    gid = engine_gid
    if config.socket_group is not None:
        try:
            gid = grp.getgrnam(config.socket_group).gr_gid
        except KeyError:
            raise ConfigError(f"socket_group {config.socket_group!r} does not exist") from None
        if gid != engine_gid and mode & 0o070:
            raise ConfigError(
                f"socket_group {config.socket_group} is not the engine socket's group: a "
                "group-accessible socket would reach other users: refused"
            )
    parent = os.path.dirname(os.path.abspath(path))
    try:
        pst = os.stat(parent)
    except OSError as exc:
        raise ConfigError(f"{parent}: {exc.strerror}") from None
    if pst.st_uid not in (0, os.geteuid()):
        raise ConfigError(f"{parent} is owned by uid {pst.st_uid}: refused (root or us only)")
    if pst.st_mode & 0o022 and not pst.st_mode & stat.S_ISVTX:
        raise ConfigError(f"{parent} is writable by group or others without the sticky bit")
    try:
        existing = os.lstat(path)
    except FileNotFoundError:
        existing = None
    if existing is not None:
        if stat.S_ISLNK(existing.st_mode):
            raise ConfigError(f"{path} is a symbolic link: refused")
        if not stat.S_ISSOCK(existing.st_mode):
            raise ConfigError(f"{path} exists and is not a socket: refused")
        if existing.st_uid != os.geteuid():
            raise ConfigError(f"{path} belongs to uid {existing.st_uid}: refused")
        if os.path.samefile(path, engine_path):
            raise ConfigError(f"{path} is the engine socket itself")
        os.unlink(path)  # our own stale socket
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o777)  # created with no permissions, then opened up to `mode`
    try:
        sock.bind(path)
    finally:
        os.umask(old)
    if os.geteuid() == 0:
        os.chown(path, engine_uid, gid)
    elif gid != os.getegid():
        with contextlib.suppress(OSError):
            os.chown(path, -1, gid)
    os.chmod(path, mode)
    sock.listen(512)
    return sock


def check_private_files(settings: Settings, extra: list[str]) -> None:
    """Configuration, policy and trust cache must not be writable by group or others (§0.3)."""
    paths = [str(settings.config_file)] if settings.config_file else []
    paths += extra
    trust = settings.trust_dir
    if trust.exists():
        paths.append(str(trust))
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            continue
        if st.st_mode & 0o022:
            raise ConfigError(f"{path} is writable by group or others: refused (§0.3)")
        if st.st_uid not in (0, os.geteuid()):
            raise ConfigError(f"{path} belongs to uid {st.st_uid}: refused")


# ------------------------------------------------------------------------------------ logging


class DecisionLog:
    """One JSON line per decision (stderr by default); credentials are never passed here."""

    def __init__(self, stream: TextIO | None = None, mode: str = "enforce") -> None:
        self.stream = stream or sys.stderr
        self.mode = mode
        self.lock = threading.Lock()

    def write(self, **fields: Any) -> None:
        record = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "mode": self.mode}
        record.update({k: v for k, v in fields.items() if v is not None})
        line = json.dumps(record, sort_keys=False)
        with self.lock:
            self.stream.write(line + "\n")
            self.stream.flush()


# ---------------------------------------------------------------------------------- the proxy


class Decides(Protocol):
    """What the connection loop asks for each parsed request."""

    def handle(self, exchange: Exchange) -> None: ...


@dataclass
class Proxy:
    settings: Settings
    engine_path: str
    config: ProxyConfig
    log: DecisionLog
    policy_files: list[str] = field(default_factory=list)
    #: The configured policy (`[[rules]]` or `--policy`); None: the built-in default rule.
    policy: Policy | None = None

    #: The per-endpoint decisions (`trust.proxy.handlers.Decider`), set by `build_proxy`:
    #: the handlers use this module, so this module does not import them.
    decider: Decides | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.upstream = Upstream(self.engine_path, timeout=self.settings.limits.engine_timeout)
        self._slots = threading.BoundedSemaphore(self.config.max_connections)
        self._per_uid: dict[int, int] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self.listener: socket.socket | None = None
        self._pool = threading.Condition()
        self._idle = 0  # threads waiting in accept()

    @property
    def enforcing(self) -> bool:
        return self.config.mode == "enforce"

    def serve(self, listener: socket.socket) -> None:
        """Keep `_SPARE` threads waiting in `accept`; the one that accepts serves.

        A new connection so never waits for a thread to be created or woken for it (that was
        half of what a new connection cost through the proxy); the threads are topped up here,
        off its path, and a thread that served goes back to accepting while fewer than
        `_MAX_IDLE` wait.
        """
        self.listener = listener
        while True:
            with self._pool:
                while self._idle >= _SPARE and not self._stopping.is_set():
                    self._pool.wait()
                if self._stopping.is_set():
                    return
                self._idle += 1
            threading.Thread(target=self._accept_loop, args=(listener,), daemon=True).start()

    def _accept_loop(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                if self._stopping.is_set():
                    with self._pool:
                        self._idle -= 1
                    return
                time.sleep(0.01)  # e.g. out of file descriptors: no busy loop
                continue
            with self._pool:
                self._idle -= 1
                self._pool.notify()
            peer = peer_of(client)
            if self._admit(peer):
                self._run(client, peer)
            else:
                threading.Thread(
                    target=_refuse_raw,
                    args=(client, 503, "trustpull: the proxy is at its connection limit"),
                    daemon=True,
                ).start()
            with self._pool:
                if self._idle >= _MAX_IDLE or self._stopping.is_set():
                    return
                self._idle += 1

    def stop(self) -> None:
        self._stopping.set()
        with self._pool:
            self._pool.notify_all()
        if self.listener is not None:
            with contextlib.suppress(OSError):
                self.listener.shutdown(socket.SHUT_RDWR)  # wakes the threads in accept()
            with contextlib.suppress(OSError):
                self.listener.close()
        self.upstream.close()

    def _admit(self, peer: Peer) -> bool:
        if not self._slots.acquire(blocking=False):
            return False
        with self._lock:
            count = self._per_uid.get(peer.uid, 0)
            if count >= self.config.max_connections_per_uid:
                self._slots.release()
                return False
            self._per_uid[peer.uid] = count + 1
        return True

    def _run(self, client: socket.socket, peer: Peer) -> None:
        try:
            ClientConnection(self, client, peer).run()
        except Exception as exc:  # one broken connection never stops the proxy
            self.log.write(event="connection-error", error=f"{type(exc).__name__}: {exc}")
        finally:
            with contextlib.suppress(OSError):
                client.close()
            with self._lock:
                self._per_uid[peer.uid] -= 1
            self._slots.release()


def _refuse_raw(sock: socket.socket, status: int, message: str) -> None:
    body = json.dumps({"message": message}).encode() + b"\n"
    head = (
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    with contextlib.suppress(OSError):
        sock.sendall(head + body)
        sock.shutdown(socket.SHUT_WR)
    _linger(sock, 2.0, 1024 * 1024)
    with contextlib.suppress(OSError):
        sock.close()


_REASONS = {
    200: "OK",
    301: "Moved Permanently",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    408: "Request Timeout",
    413: "Payload Too Large",
    417: "Expectation Failed",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    505: "HTTP Version Not Supported",
}


class _Closed(Exception):
    """The client went away."""


@dataclass
class Exchange:
    """One client request being handled."""

    conn: ClientConnection
    head: RequestHead
    target: Target
    match: Match | None
    h11c: h11.Connection
    body_read: bool = False
    body: bytes | None = None
    #: The request body's reader, once reading began; `done` when all of it was read.
    reader: BodyReader | None = None
    continue_sent: bool = False

    @property
    def body_done(self) -> bool:
        return not self.head.has_body or (self.reader is not None and self.reader.done)

    @property
    def waiting_for_continue(self) -> bool:
        """The client sent `Expect: 100-continue` and waits for it before sending its body."""
        head = self.head
        return (
            head.version == (1, 1)
            and head.has_body
            and head.get(b"expect") is not None
            and not self.continue_sent
        )

    @property
    def route(self) -> str | None:
        return self.match.route.name if self.match is not None else None

    def header(self, name: str) -> str | None:
        value = self.head.get(name.lower().encode())
        return value.decode("latin-1") if value is not None else None


class ClientConnection:
    def __init__(self, proxy: Proxy, sock: socket.socket, peer: Peer) -> None:
        self.proxy = proxy
        self.sock = sock
        self.peer = peer
        self.buffer = bytearray()
        self.eof = False
        self.upstream: socket.socket | None = None
        self.tunnelled = False

    # -- reading the head

    def _recv(self, timeout: float | None) -> bool:
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(_HEAD_RECV)
        except TimeoutError:
            raise
        except OSError:
            data = b""
        if not data:
            self.eof = True
            return False
        self.buffer += data
        return True

    def read_head(self) -> bytes | None:
        config = self.proxy.config
        # Up to four CR/LF bytes between requests are skipped, as Go does.
        deadline: float | None = None
        while True:
            stripped = 0
            while bytes(self.buffer[:1]) in (b"\r", b"\n") and stripped < 4:
                del self.buffer[:1]
                stripped += 1
            end = self.buffer.find(HEAD_END)
            if end >= 0:
                if end > config.max_header_bytes:
                    raise HTTPRefusal(431, "trustpull: request header block too large", close=True)
                raw = bytes(self.buffer[:end])
                return raw
            if len(self.buffer) > config.max_header_bytes:
                raise HTTPRefusal(431, "trustpull: request header block too large", close=True)
            if self.eof:
                if self.buffer:
                    raise HTTPRefusal(400, "trustpull: incomplete request", close=True)
                return None
            if not self.buffer:
                timeout = config.idle_timeout
            else:
                if deadline is None:
                    deadline = time.monotonic() + config.header_timeout
                timeout = max(0.0, deadline - time.monotonic())
            try:
                if not self._recv(timeout or None):
                    continue
            except TimeoutError:
                if not self.buffer:
                    return None  # idle keep-alive connection: close quietly
                raise HTTPRefusal(
                    408, "trustpull: request head not complete in time", close=True
                ) from None
            if deadline is None and self.buffer:
                deadline = time.monotonic() + config.header_timeout

    # -- the loop

    def run(self) -> None:
        try:
            self._loop()
        finally:
            if not self.tunnelled:
                self._drop_upstream()

    def _loop(self) -> None:
        while not self.tunnelled:
            try:
                raw = self.read_head()
            except HTTPRefusal as refusal:
                self._send_simple(refusal)
                return
            if raw is None:
                return
            try:
                keep = self._one(raw)
            except _Closed:
                return
            if not keep:
                return
        # tunnelled: the tunnel owns both sockets until it ends

    def _one(self, raw: bytes) -> bool:
        """Handle one request; return whether the connection may carry another."""
        try:
            head = check_head(raw)
        except HTTPRefusal as refusal:
            self.proxy.log.write(
                event="refused",
                verdict="refused",
                status=refusal.status,
                reason=refusal.message,
                uid=self.peer.uid,
                pid=self.peer.pid,
            )
            self._send_simple(refusal)
            return False
        h11c = h11.Connection(
            h11.SERVER, max_incomplete_event_size=self.proxy.config.max_header_bytes + 64
        )
        h11c.receive_data(_without_framing(raw))
        del self.buffer[: len(raw) + len(HEAD_END)]  # the body and what follows it stay here
        try:
            event = h11c.next_event()
            end = h11c.next_event()
        except h11.RemoteProtocolError as exc:
            self._send_simple(HTTPRefusal(400, f"trustpull: malformed request: {exc}", close=True))
            return False
        if not isinstance(event, h11.Request) or not isinstance(end, h11.EndOfMessage):
            self._send_simple(HTTPRefusal(400, "trustpull: malformed request", close=True))
            return False
        exchange: Exchange | None = None
        try:
            target = parse_target(head.target)
            match = match_route(head.method, target.path)
            exchange = Exchange(self, head, target, match, h11c)
            if not head.has_body:
                exchange.body_read = True
            assert self.proxy.decider is not None, "build the proxy with build_proxy()"
            self.proxy.decider.handle(exchange)
        except HTTPRefusal as refusal:
            if exchange is None:
                exchange = Exchange(
                    self, head, Target(None, head.target, _EMPTY_QUERY, ""), None, h11c
                )
            self.refuse(exchange, refusal)
            if refusal.close or (head.has_body and not exchange.body_read):
                return False
        except EngineDown as down:
            assert exchange is not None
            self.refuse(
                exchange,
                HTTPRefusal(
                    503,
                    "trustpull: cannot reach the Docker engine at "
                    f"unix://{self.proxy.engine_path}: {down}",
                    kind="Engine",
                    close=True,
                ),
            )
            return False
        if self.tunnelled:
            return False
        return h11c.our_state is h11.DONE and h11c.their_state is h11.DONE and exchange.body_done

    # -- reading the request body

    def body_batches(self, ex: Exchange) -> Iterator[list[memoryview]]:
        """The request body, decoded strictly (`BodyReader`: extensions and trailers dropped).

        Each batch is valid until the next is asked for; bytes after the body stay buffered
        for the next request (X27).
        """
        if not ex.head.has_body or ex.body_done:
            ex.body_read = True
            return
        if ex.waiting_for_continue:
            self._send_events(ex.h11c, h11.InformationalResponse(status_code=100, headers=[]))
            ex.continue_sent = True
        ex.body_read = True
        if ex.reader is None:
            ex.reader = BodyReader(
                self.sock,
                self.buffer,
                length=ex.head.content_length,
                chunked=ex.head.chunked,
                max_trailer=self.proxy.config.max_header_bytes,
            )
            self.buffer = bytearray()
        self.sock.settimeout(None)
        try:
            yield from ex.reader.batches()
        except BodyError as exc:
            raise HTTPRefusal(400, f"trustpull: malformed body: {exc}", close=True) from None
        self.buffer = bytearray(ex.reader.rest())

    def body_pieces(self, ex: Exchange) -> Iterator[bytes]:
        """The request body as bytes (for the handlers that keep or inspect it)."""
        for batch in self.body_batches(ex):
            yield b"".join(batch)

    def read_body(self, ex: Exchange, limit: int) -> bytes:
        if ex.body is not None:
            return ex.body
        declared = ex.head.content_length
        if declared is not None and declared > limit:
            raise HTTPRefusal(413, f"trustpull: request body over {limit} bytes", close=True)
        out = bytearray()
        for piece in self.body_pieces(ex):
            out += piece
            if len(out) > limit:
                raise HTTPRefusal(413, f"trustpull: request body over {limit} bytes", close=True)
        ex.body = bytes(out)
        return ex.body

    # -- answering

    def _send_events(self, h11c: h11.Connection, *events: Any) -> None:
        for event in events:
            data = h11c.send(event)
            if data:
                try:
                    self.sock.sendall(data)
                except OSError:
                    raise _Closed from None

    def _send_simple(self, refusal: HTTPRefusal) -> None:
        body = b""
        headers = list(refusal.headers)
        if refusal.status != 301:
            body = json.dumps({"message": refusal.message}).encode() + b"\n"
            headers.append((b"content-type", b"application/json"))
            headers.append((b"x-trustpull-refusal", refusal.kind.encode()))
        head = f"HTTP/1.1 {refusal.status} {_REASONS.get(refusal.status, 'Error')}\r\n".encode()
        for k, v in headers:
            head += k + b": " + v + b"\r\n"
        head += f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        with contextlib.suppress(OSError):
            self.sock.sendall(head + body)
            self.sock.shutdown(socket.SHUT_WR)
        if refusal.status != 301:
            _linger(self.sock, 2.0, 4 * 1024 * 1024)

    def refuse(self, ex: Exchange, refusal: HTTPRefusal) -> None:
        """An Engine API error (§3.1); closes when the body was not read."""
        h11c = ex.h11c
        if h11c.our_state is not h11.SEND_RESPONSE:
            raise _Closed
        body = b""
        headers: list[tuple[bytes, bytes]] = list(refusal.headers)
        if refusal.status != 301:
            body = json.dumps({"message": refusal.message}).encode() + b"\n"
            headers.append((b"content-type", b"application/json"))
            headers.append((b"x-trustpull-refusal", refusal.kind.encode()))
        headers.append((b"content-length", str(len(body)).encode()))
        if refusal.close or (ex.head.has_body and not ex.body_read):
            headers.append((b"connection", b"close"))
        self._send_events(
            h11c,
            h11.Response(
                status_code=refusal.status,
                headers=headers,
                reason=_REASONS.get(refusal.status, "Error").encode(),
            ),
        )
        if body and ex.head.method != "HEAD":
            self._send_events(h11c, h11.Data(data=body))
        self._send_events(h11c, h11.EndOfMessage())
        if refusal.close or (ex.head.has_body and not ex.body_read):
            # The body is never parsed nor forwarded (X28). Close our side, then discard what
            # the client is still sending for a moment (bounded), so that it reads the answer
            # instead of failing on a reset; a client waiting for 100 Continue sends nothing.
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_WR)
            if not ex.waiting_for_continue:
                _linger(self.sock)

    def respond_head(self, ex: Exchange, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        self._send_events(
            ex.h11c,
            h11.Response(
                status_code=status, headers=headers, reason=_REASONS.get(status, "OK").encode()
            ),
        )

    def respond_data(self, ex: Exchange, data: bytes) -> None:
        if data:
            self._send_events(ex.h11c, h11.Data(data=data))

    def respond_end(self, ex: Exchange) -> None:
        self._send_events(ex.h11c, h11.EndOfMessage())

    def respond_json(self, ex: Exchange, status: int, value: Any) -> None:
        body = json.dumps(value).encode() + b"\n"
        self.respond_head(
            ex,
            status,
            [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        )
        if ex.head.method != "HEAD":
            self.respond_data(ex, body)
        self.respond_end(ex)

    # -- forwarding

    def _upstream_socket(self) -> socket.socket:
        if self.upstream is None:
            self.upstream = self.proxy.upstream.connect_raw()
        return self.upstream

    def _drop_upstream(self) -> None:
        if self.upstream is not None:
            with contextlib.suppress(OSError):
                self.upstream.close()
            self.upstream = None

    def forward(
        self,
        ex: Exchange,
        *,
        target: str | None = None,
        body: bytes | Iterator[bytes] | None = None,
        extra_headers: list[tuple[bytes, bytes]] | None = None,
        drop_headers: set[bytes] | None = None,
        upgrade: bytes | None = None,
        response_filter: Callable[[int, list[tuple[bytes, bytes]]], list[tuple[bytes, bytes]]]
        | None = None,
        buffer_response: Callable[[int, bytes], bytes] | None = None,
        tee: Callable[[bytes], None] | None = None,
        status_from_body: bytes | None = None,
    ) -> int:
        """Send the request (as the proxy re-framed it) and relay the answer; returns its status.

        `body`: None forwards the client's own body (streamed); bytes or an iterator replace it.
        """
        head = ex.head
        hop = HOP_BY_HOP | (drop_headers or set())
        headers = [(k, v) for k, v in head.headers if k not in hop]
        if head.get(b"host") is None:  # HTTP/1.0 without Host: the upstream side is 1.1
            headers.insert(0, (b"host", b"localhost"))
        headers += extra_headers or []
        source: bytes | Iterator[bytes] | None = None
        own_body = body is None and head.has_body  # the client's, relayed batch by batch
        if body is None:
            if head.chunked:
                headers.append((b"transfer-encoding", b"chunked"))
            elif (head.content_length or 0) > 0:
                headers.append((b"content-length", str(head.content_length).encode()))
            else:
                ex.body_read = True
                if head.method in ("POST", "PUT", "PATCH") or head.content_length == 0:
                    headers.append((b"content-length", b"0"))
        elif isinstance(body, bytes):
            source = body
            headers.append((b"content-length", str(len(body)).encode()))
        else:
            source = body
            headers.append((b"transfer-encoding", b"chunked"))
        if upgrade is not None:
            headers += [(b"connection", b"Upgrade"), (b"upgrade", upgrade)]
        elif head.version == (1, 0) or _wants_close(head):
            pass  # the upstream connection stays reusable; the client side closes
        up = self._upstream_socket()
        uc = h11.Connection(h11.CLIENT)
        request = h11.Request(
            method=head.method, target=target or ex.target.encode(), headers=headers
        )
        try:
            out: list[Any] = _framed(uc, request)
            if own_body:
                for batch in self.body_batches(ex):
                    out += _body_out(uc, batch, head.chunked)
                    send_all(up, out)
                    out = []
            elif isinstance(source, bytes):
                if source:
                    out += _framed(uc, h11.Data(data=source))
            elif source is not None:
                for data in source:
                    if data:
                        out += _framed(uc, h11.Data(data=data))
                        send_all(up, out)
                        out = []
            out += _framed(uc, h11.EndOfMessage())
            send_all(up, out)
        except OSError as exc:
            self._drop_upstream()
            raise EngineDown(str(exc)) from None
        except HTTPRefusal:
            # a malformed client body: the engine keeps a truncated request, never a whole one
            self._drop_upstream()
            raise
        return self._relay(ex, uc, up, response_filter, buffer_response, tee, status_from_body)

    def _up_event(
        self,
        uc: h11.Connection,
        up: socket.socket,
        before_recv: Callable[[], None] | None = None,
    ) -> Any:
        while True:
            try:
                event = uc.next_event()
            except h11.RemoteProtocolError as exc:
                self._drop_upstream()
                raise EngineDown(f"invalid answer from the engine: {exc}") from None
            if event is h11.NEED_DATA:
                if before_recv is not None:
                    before_recv()  # whatever was decoded goes out before we block
                try:
                    data = up.recv(_HEAD_RECV)
                except OSError:
                    data = b""
                uc.receive_data(data)
                continue
            return event

    def _relay(
        self,
        ex: Exchange,
        uc: h11.Connection,
        up: socket.socket,
        response_filter: Any,
        buffer_response: Any,
        tee: Any,
        status_from_body: bytes | None = None,
    ) -> int:
        while True:
            event = self._up_event(uc, up)
            if isinstance(event, h11.InformationalResponse) and event.status_code != 101:
                continue
            break
        if isinstance(event, h11.ConnectionClosed):
            self._drop_upstream()
            raise EngineDown("the engine closed the connection")
        status: int = event.status_code
        resp_headers = list(event.headers)
        ctype = _header(resp_headers, b"content-type") or b""
        is_raw = (
            ex.route in _HIJACK_ROUTES
            and status == 200
            and ctype.split(b";")[0].strip() in _RAW_STREAM_TYPES
            and _header(resp_headers, b"content-length") is None
            and _header(resp_headers, b"transfer-encoding") is None
        )
        if status == 101 or is_raw:
            self._tunnel(ex, event, uc, up)
            return status
        if response_filter is not None:
            resp_headers = response_filter(status, resp_headers)
        out_headers = [
            (k, v)
            for k, v in resp_headers
            if k not in (b"connection", b"keep-alive", b"transfer-encoding")
        ]
        reader = _response_reader(ex, uc, up, status, list(event.headers))
        try:
            if buffer_response is not None:
                self._relay_buffered(
                    ex, event, reader, status, out_headers, buffer_response, status_from_body
                )
            else:
                response = h11.Response(
                    status_code=status, headers=out_headers, reason=event.reason
                )
                framed = ex.h11c.send(response) or b""
                chunked = _is_chunked(framed)
                try:
                    self.sock.sendall(framed)
                except OSError:
                    raise _Closed from None
                head_only = ex.head.method == "HEAD"
                for batch in reader.batches():
                    if tee is not None:
                        tee(b"".join(batch))
                    if not head_only:
                        try:
                            send_all(self.sock, _body_out(ex.h11c, batch, chunked))
                        except OSError:
                            raise _Closed from None
                self._send_events(ex.h11c, h11.EndOfMessage())
        except BodyError as exc:
            self._drop_upstream()
            raise EngineDown(f"invalid answer from the engine: {exc}") from None
        except _Closed:
            self._drop_upstream()
            raise
        reusable = (
            uc.our_state is h11.DONE
            and reader.done
            and (reader.length is not None or reader.chunked)
            and not reader.rest()
        )
        if not reusable:
            self._drop_upstream()
        return status

    def _relay_buffered(
        self,
        ex: Exchange,
        event: Any,
        reader: BodyReader,
        status: int,
        out_headers: list[tuple[bytes, bytes]],
        buffer_response: Callable[[int, bytes], bytes],
        status_from_body: bytes | None,
    ) -> None:
        data = bytearray()
        for batch in reader.batches():
            for piece in batch:
                data += piece
        new = buffer_response(status, bytes(data))
        if status_from_body is not None and status_from_body in new and new != data:
            status = 403  # the filter turned the answer into a refusal
            out_headers = [(k, v) for k, v in out_headers if k != b"content-type"]
            out_headers.append((b"content-type", b"application/json"))
        out_headers = [(k, v) for k, v in out_headers if k != b"content-length"]
        out_headers.append((b"content-length", str(len(new)).encode()))
        reason = event.reason if status == event.status_code else b"Forbidden"
        self._send_events(
            ex.h11c, h11.Response(status_code=status, headers=out_headers, reason=reason)
        )
        if new and ex.head.method != "HEAD":
            self._send_events(ex.h11c, h11.Data(data=new))
        self._send_events(ex.h11c, h11.EndOfMessage())

    # -- tunnels (§1.6)

    def _tunnel(self, ex: Exchange, event: Any, uc: h11.Connection, up: socket.socket) -> None:
        self.tunnelled = True
        self.upstream = None  # never pooled again
        reason = event.reason or b""
        head = b"HTTP/1.1 " + str(event.status_code).encode() + b" " + bytes(reason) + b"\r\n"
        for k, v in event.headers:
            head += bytes(k) + b": " + bytes(v) + b"\r\n"
        head += b"\r\n"
        up_rest, _ = uc.trailing_data
        client_rest = bytes(self.buffer)  # after an attach without Upgrade: the stdin (X32)
        self.buffer.clear()
        try:
            self.sock.sendall(head + bytes(up_rest))
            if client_rest:
                up.sendall(bytes(client_rest))
        except OSError:
            up.close()
            return
        tunnel(self.sock, up)


def tunnel(a: socket.socket, b: socket.socket) -> None:
    """Copy bytes both ways; half-close each direction separately; close when both ended."""
    a.settimeout(None)
    b.settimeout(None)

    def pump(src: socket.socket, dst: socket.socket) -> None:
        buffer = memoryview(bytearray(_RECV))
        try:
            while True:
                got = src.recv_into(buffer)
                if not got:
                    break
                dst.sendall(buffer[:got])
        except OSError:
            with contextlib.suppress(OSError):
                src.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_RDWR)
            return
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    other = threading.Thread(target=pump, args=(b, a), daemon=True)
    other.start()
    pump(a, b)
    other.join()
    with contextlib.suppress(OSError):
        b.close()


def _framed(h: h11.Connection, event: Any) -> list[Any]:
    """The bytes h11 frames `event` with, the data itself passed through uncopied."""
    return h.send_with_data_passthrough(event) or []


def _data(piece: memoryview) -> h11.Data:
    """A Data event over a slice of a body buffer: h11 passes it through (`_framed`) unread."""
    return h11.Data(data=cast(bytes, piece))


def _body_out(h: h11.Connection, batch: list[memoryview], chunked: bool) -> list[Any]:
    """The bytes that send one batch of body: one chunk of all of it on a chunked message
    (h11's chunked writer keeps no count, so writing the chunk here leaves its state as
    h11 would; its EndOfMessage writes the last chunk), else h11's own framing (it counts
    Content-Length and refuses a byte too many)."""
    if chunked:
        total = sum(piece.nbytes for piece in batch)
        return [b"%x\r\n" % total, *batch, b"\r\n"] if total else []
    out: list[Any] = []
    for piece in batch:
        out += _framed(h, _data(piece))
    return out


def _is_chunked(head: bytes) -> bool:
    """Whether h11 framed the head it produced as chunked (it chooses for HTTP/1.0 peers)."""
    return any(line.lower() == b"transfer-encoding: chunked" for line in head.split(b"\r\n")[1:])


#: At most this many buffers per `sendmsg` (Linux's IOV_MAX is 1024).
_IOV = 512


def send_all(sock: socket.socket, pieces: list[Any]) -> None:
    """`sendall` of several buffers with `sendmsg`, copying none of them."""
    views = [memoryview(piece) for piece in pieces if len(piece)]
    at = 0
    while at < len(views):
        sent = sock.sendmsg(views[at : at + _IOV])
        while sent:
            size = views[at].nbytes
            if sent >= size:
                sent -= size
                at += 1
            else:
                views[at] = views[at][sent:]
                sent = 0


def _response_reader(
    ex: Exchange, uc: h11.Connection, up: socket.socket, status: int, headers: list[Any]
) -> BodyReader:
    """The engine's response body as h11 framed it (RFC 9112 §6.3; h11 checked the head)."""
    rest, _ = uc.trailing_data
    up.settimeout(None)
    if ex.head.method == "HEAD" or status in (204, 304) or 100 <= status < 200:
        return BodyReader(up, rest, length=0)
    if _header(headers, b"transfer-encoding") is not None:
        return BodyReader(up, rest, length=None, chunked=True)
    length = _header(headers, b"content-length")
    return BodyReader(up, rest, length=int(length) if length is not None else None)


def _without_framing(raw: bytes) -> bytes:
    """The head as h11 is shown it: no Content-Length, no Transfer-Encoding (see `_FRAMING`)."""
    lines = raw.split(b"\r\n")
    kept = [lines[0]]
    kept += [line for line in lines[1:] if line.partition(b":")[0].lower() not in _FRAMING]
    return b"\r\n".join(kept) + HEAD_END


def _linger(sock: socket.socket, seconds: float = 5.0, limit: int = 256 * 1024 * 1024) -> None:
    deadline = time.monotonic() + seconds
    seen = 0
    with contextlib.suppress(OSError):
        while seen < limit:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            sock.settimeout(left)
            data = sock.recv(_RECV)
            if not data:
                return
            seen += len(data)


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    for k, v in headers:
        if bytes(k).lower() == name:
            return bytes(v)
    return None


def _wants_close(head: RequestHead) -> bool:
    return any(b"close" in v.lower() for v in head.get_all(b"connection"))


from trust.proxy.routes import Query as _Query  # noqa: E402

_EMPTY_QUERY = _Query(())
