"""The listener, the per-connection loop, forwarding and byte tunnels.

One thread per client connection (bounded by `max_connections` and per peer uid), one upstream
connection per client connection, one request at a time on it. Request heads are parsed strictly by
`framing.check_head`, the engine's answer heads by `framing.parse_response_head`; bodies both
ways are decoded by `framing.BodyReader` and sent on in large slices under the proxy's own
framing (`trust.proxy.writer`: a fresh Content-Length, or chunks written here), so the engine
only ever receives bytes the proxy produced itself, until the engine
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
import re
import select
import socket
import stat
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol, TextIO

from trust.errors import ConfigError
from trust.policy import Policy
from trust.proxy.framing import (
    BAD_VALUE_RE,
    HEAD_END,
    HOP_BY_HOP,
    TOKEN_RE,
    BodyError,
    BodyReader,
    HeadError,
    HTTPRefusal,
    RequestHead,
    ResponseHead,
    check_head,
    parse_response_head,
)
from trust.proxy.routes import Match, Target, match_route, parse_target
from trust.proxy.upstream import EngineDown, Upstream, quiet
from trust.proxy.writer import REASONS, Answer, WriteError, chunk, request_head
from trust.settings import ProxyConfig, Settings

__all__ = ["Peer", "Proxy", "bind_listener"]

_RECV = 1024 * 1024
#: Reads while a head is awaited: a head is small, the body after it has its own reader.
_HEAD_RECV = 64 * 1024
#: An engine answer's head larger than this is not the engine's.
_MAX_ANSWER_HEAD = 64 * 1024
#: 1xx answers skipped before a final one (Go's client allows 5; the engine sends at most 1).
_MAX_INFORMATIONAL = 16
#: Seconds of silence on an answer's body after which the proxy checks the client is there.
_SILENT_CHECK = 5.0
#: Threads kept waiting in accept(), and at most this many idle after a burst.
_SPARE = 4
#: Threads are added only when fewer than this wait: one docker command after another finds
#: the thread that served the last back in accept() (a thread started beside each new
#: connection competed with it for the interpreter lock).
_LOW_WATER = 2
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
        off its path, once fewer than `_LOW_WATER` wait, and a thread that served goes back to
        accepting while fewer than `_MAX_IDLE` wait.
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
                if self._idle < _LOW_WATER:
                    self._pool.notify()  # top up; else no thread need wake for this one
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
        f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    with contextlib.suppress(OSError):
        sock.sendall(head + body)
        sock.shutdown(socket.SHUT_WR)
    _linger(sock, 2.0, 1024 * 1024)
    with contextlib.suppress(OSError):
        sock.close()


class _Closed(Exception):
    """The client went away."""


class _Stale(Exception):
    """A kept engine connection closed before any byte of an answer to this request."""


@dataclass
class Exchange:
    """One client request being handled."""

    conn: ClientConnection
    head: RequestHead
    target: Target
    match: Match | None
    #: The answer being written to the client (framing and keep-alive).
    answer: Answer
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
        #: The upstream connection came from the kept ones and has not answered yet here.
        self._upstream_kept = False
        #: Its last answer was read to its framed end, nothing sent since.
        self._upstream_clean = False
        self.tunnelled = False
        #: The client socket's kernel receive and send timeout (`_kernel_timeout`).
        self._timeout: float | None = None

    # -- reading the head

    def _kernel_timeout(self, seconds: float | None) -> None:
        """Receive and send timeouts on the client socket set in the kernel (SO_RCVTIMEO,
        SO_SNDTIMEO), the socket left blocking: a Python-level timeout switches it to
        non-blocking and polls before every receive and send, three more system calls per
        request on a kept connection. None: no timeout (bodies and tunnels, as before)."""
        if seconds == self._timeout:
            return
        # A zero timeval: no timeout. Rounded as a whole count of microseconds, so that a
        # fraction just under a second (2.9999998) is not a tv_usec of 1000000 (EDOM).
        micros = 0 if seconds is None else max(1, round(seconds * 1e6))
        value = struct.pack("@ll", *divmod(micros, 1_000_000))
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, value)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, value)
        self._timeout = seconds

    def _recv(self, timeout: float) -> bool:
        self._kernel_timeout(timeout)
        try:
            data = self.sock.recv(_HEAD_RECV)
        except BlockingIOError:  # the kernel timeout on a blocking socket
            raise TimeoutError from None
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
                # The answer is written under the idle timeout (a client that does not read
                # it for that long is gone), never under what was left of the head's deadline
                # when its last piece was awaited; set already when the head came in one read.
                self._kernel_timeout(config.idle_timeout)
                return bytes(self.buffer[:end])
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
                timeout = deadline - time.monotonic()
            try:
                if timeout <= 0:
                    raise TimeoutError  # never a wait without end at the deadline itself
                if not self._recv(timeout):
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
                if self.upstream is not None and self._upstream_clean:
                    self.proxy.upstream.give_back(self.upstream)  # for the next client
                    self.upstream = None
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
        del self.buffer[: len(raw) + len(HEAD_END)]  # the body and what follows it stay here
        answer = Answer(head.method, head.version, keep_alive=not _wants_close(head))
        exchange: Exchange | None = None
        try:
            target = parse_target(head.target)
            match = match_route(head.method, target.path)
            exchange = Exchange(self, head, target, match, answer)
            if not head.has_body:
                exchange.body_read = True
            assert self.proxy.decider is not None, "build the proxy with build_proxy()"
            self.proxy.decider.handle(exchange)
        except HTTPRefusal as refusal:
            if exchange is None:
                exchange = Exchange(
                    self, head, Target(None, head.target, _EMPTY_QUERY, ""), None, answer
                )
            self.refuse(exchange, refusal)
            if refusal.close or not exchange.body_done:
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
        return answer.done and answer.keep and exchange.body_done

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
            self._send(ex.answer.informational(100))
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
        self._kernel_timeout(None)
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

    def _send(self, data: bytes) -> None:
        if data:
            try:
                self.sock.sendall(data)
            except OSError:
                raise _Closed from None

    def _send_pieces(self, pieces: list[Any]) -> None:
        try:
            send_all(self.sock, pieces)
        except OSError:
            raise _Closed from None

    def _send_simple(self, refusal: HTTPRefusal) -> None:
        body = b""
        headers = list(refusal.headers)
        if refusal.status != 301:
            body = json.dumps({"message": refusal.message}).encode() + b"\n"
            headers.append((b"content-type", b"application/json"))
            headers.append((b"x-trustpull-refusal", refusal.kind.encode()))
        head = f"HTTP/1.1 {refusal.status} {REASONS.get(refusal.status, 'Error')}\r\n".encode()
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
        answer = ex.answer
        if answer.started:
            raise _Closed
        body = b""
        headers: list[tuple[bytes, bytes]] = list(refusal.headers)
        if refusal.status != 301:
            body = json.dumps({"message": refusal.message}).encode() + b"\n"
            headers.append((b"content-type", b"application/json"))
            headers.append((b"x-trustpull-refusal", refusal.kind.encode()))
        headers.append((b"content-length", str(len(body)).encode()))
        if refusal.close or not ex.body_done:
            headers.append((b"connection", b"close"))
        head = answer.head(refusal.status, headers, REASONS.get(refusal.status, "Error").encode())
        self._send_pieces([head, *answer.body([body]), answer.end()])
        if refusal.close or not ex.body_done:
            # The body (or its rest) is never parsed nor forwarded (X28). Close our side, then
            # discard what the client is still sending for a moment (bounded), so that it reads
            # the answer instead of failing on a reset; one waiting for 100 Continue sends none.
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_WR)
            if not ex.waiting_for_continue:
                _linger(self.sock)

    def respond_head(self, ex: Exchange, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        self._send(ex.answer.head(status, headers))

    def respond_data(self, ex: Exchange, data: bytes) -> None:
        if data:
            self._send_pieces(ex.answer.body([data]))

    def respond_end(self, ex: Exchange) -> None:
        self._send(ex.answer.end())

    def respond_json(self, ex: Exchange, status: int, value: Any) -> None:
        body = json.dumps(value).encode() + b"\n"
        answer = ex.answer
        head = answer.head(
            status,
            [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        )
        self._send_pieces([head, *answer.body([body]), answer.end()])

    # -- forwarding

    def _upstream_socket(self, replayable: bool) -> socket.socket:
        """The engine connection for the next request: this client's, else (for a request
        that may be sent again: bodiless GET or HEAD) a kept one, else a new one.

        A new client connection so does not wait for the engine to accept a connection (most
        of what a `docker` command's first request cost through the proxy). A kept connection
        the engine closed before any byte of an answer is `_Stale`: `forward` sends the same
        request once more on a new connection, as Go's own client does for idempotent requests.
        """
        self._upstream_clean = False
        if self.upstream is not None and not quiet(self.upstream):
            self._drop_upstream()  # closed, or bytes no request asked for: never an answer
        if self.upstream is None:
            kept = self.proxy.upstream.take_idle() if replayable else None
            self._upstream_kept = kept is not None
            self.upstream = kept or self.proxy.upstream.connect_raw()
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
        answer_headers: tuple[tuple[bytes, bytes], ...] = (),
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
        chunked = False
        framing = b""
        if body is None:
            if head.chunked:
                chunked = True
            elif (head.content_length or 0) > 0:
                framing = b"Content-Length: %d\r\n" % (head.content_length or 0)
            else:
                ex.body_read = True
                if head.method in ("POST", "PUT", "PATCH") or head.content_length == 0:
                    framing = b"Content-Length: 0\r\n"
        elif isinstance(body, bytes):
            source = body
            framing = b"Content-Length: %d\r\n" % len(body)
        else:
            source = body
            chunked = True
        if chunked:
            framing = b"Transfer-Encoding: chunked\r\n"
        if upgrade is not None:
            framing += b"Connection: Upgrade\r\nUpgrade: " + upgrade + b"\r\n"
        # An HTTP/1.0 or `Connection: close` client: the upstream connection stays reusable,
        # the client side closes (`Answer.keep`).
        try:
            request = request_head(
                head.method,
                (target if target is not None else ex.target.encode()).encode(),
                headers,
                framing,
            )
        except WriteError as exc:
            raise HTTPRefusal(400, f"trustpull: cannot forward this request: {exc}") from None
        replayable = head.method in ("GET", "HEAD") and source is None and not own_body
        up = self._upstream_socket(replayable)
        if replayable and self._upstream_kept:
            try:
                send_all(up, [request])
            except OSError:
                pass
            else:
                with contextlib.suppress(_Stale):
                    return self._relay(
                        ex,
                        up,
                        answer_headers,
                        buffer_response,
                        tee,
                        status_from_body,
                        upgrade is not None,
                    )
            self._drop_upstream()  # closed while kept: once more, on a new connection
            up = self._upstream_socket(False)
        try:
            out: list[Any] = [request]
            if own_body:
                for batch in self.body_batches(ex):
                    out += chunk(batch) if chunked else batch
                    send_all(up, out)
                    out = []
            elif isinstance(source, bytes):
                out.append(source)
            elif source is not None:
                for data in source:
                    if data:
                        out += chunk([data])
                        send_all(up, out)
                        out = []
            if chunked:
                out.append(b"0\r\n\r\n")
            send_all(up, out)
        except OSError as exc:
            early = self._early_refusal(up)
            self._drop_upstream()
            if early is not None:
                raise early from None
            raise EngineDown(str(exc)) from None
        except BaseException:
            # A malformed client body, a refusal or a failure while a handler produced the body
            # (a build's context): the engine keeps a truncated request, never a whole one.
            self._drop_upstream()
            raise
        return self._relay(
            ex, up, answer_headers, buffer_response, tee, status_from_body, upgrade is not None
        )

    def _early_refusal(self, up: socket.socket) -> HTTPRefusal | None:
        """The engine's error when it answered before the body's end and closed (Go's server
        does that for a request it refuses before reading its body: `docker build
        --isolation=hyperv`), so that the client reads the engine's message, not a broken
        pipe. Only an error is believed of a request half sent, and only a small one framed
        by its Content-Length; the client connection closes after it."""
        try:
            up.settimeout(1.0)
            answer, _, rest = self._answer_head(up)
        except (EngineDown, _Stale, OSError):
            return None
        if answer.status < 400 or answer.length is None or answer.length > 64 * 1024:
            return None
        body = bytearray(rest)
        with contextlib.suppress(OSError):
            while len(body) < answer.length:
                more = up.recv(answer.length - len(body))
                if not more:
                    break
                body += more
        try:
            message = json.loads(bytes(body[: answer.length]))["message"]
        except (ValueError, KeyError, TypeError, RecursionError):  # too deep: not an API error
            return None
        if not isinstance(message, str):
            return None
        return HTTPRefusal(answer.status, message, close=True, kind="Engine")

    def _answer_head(self, up: socket.socket) -> tuple[ResponseHead, bytes, bytes]:
        """The engine's next final answer head (1xx other than 101 skipped), its raw bytes
        and what was received after it; EngineDown for anything not plainly well-formed."""
        buffer = b""
        informational = 0
        while True:
            end = buffer.find(HEAD_END)
            if end < 0:
                if len(buffer) > _MAX_ANSWER_HEAD:
                    self._drop_upstream()
                    raise EngineDown("invalid answer from the engine: head too large")
                try:
                    data = up.recv(_HEAD_RECV)
                except OSError:
                    data = b""
                if not data:
                    stale = not buffer and self._upstream_kept
                    self._drop_upstream()
                    if stale:
                        raise _Stale
                    raise EngineDown("the engine closed the connection")
                self._upstream_kept = False  # it answered: never sent again from here on
                buffer += data
                continue
            raw, buffer = buffer[:end], buffer[end + len(HEAD_END) :]
            try:
                answer = parse_response_head(raw)
            except HeadError as exc:
                self._drop_upstream()
                raise EngineDown(f"invalid answer from the engine: {exc}") from None
            if 100 <= answer.status < 200 and answer.status != 101:
                informational += 1
                if informational > _MAX_INFORMATIONAL:  # an engine that never answers
                    self._drop_upstream()
                    raise EngineDown("invalid answer from the engine: endless 1xx answers")
                continue  # 100 Continue and the like: the client sent no Expect to us
            return answer, raw, buffer

    def _relay(
        self,
        ex: Exchange,
        up: socket.socket,
        answer_headers: tuple[tuple[bytes, bytes], ...],
        buffer_response: Any,
        tee: Any,
        status_from_body: bytes | None = None,
        upgrading: bool = False,
    ) -> int:
        answer, raw, rest = self._answer_head(up)
        status = answer.status
        if status == 101 and not upgrading:
            # h11 refused it too: a tunnel the proxy did not ask for would hand every later
            # byte from the client to the engine unparsed (§1.6).
            self._drop_upstream()
            raise EngineDown("invalid answer from the engine: 101 without an Upgrade asked")
        is_raw = (
            ex.route in _HIJACK_ROUTES
            and status == 200
            and answer.length is None
            and not answer.chunked
            and (answer.get(b"content-type") or b"").split(b";")[0].strip() in _RAW_STREAM_TYPES
        )
        if status == 101 or is_raw:
            self._tunnel(raw, rest, up)
            return status
        length, chunked = answer.body_framing(ex.head.method)
        # The common answer, framed by one Content-Length and free of the headers the writer
        # owns, keeps its own header block; the others are re-serialised from their headers.
        as_received = (
            buffer_response is None
            and not answer.hop
            and answer.length is not None
            and status not in (204, 304)
            and status >= 200
        )
        out_headers: list[tuple[bytes, bytes]] = []
        block = answer.block
        if as_received:
            for name, value in answer_headers:
                block = _replace_header(block, name, value)
        else:
            dropped = {b"connection", b"keep-alive", b"transfer-encoding"}
            dropped.update(name for name, _ in answer_headers)
            out_headers = [(k, v) for k, v in answer.headers if k.lower() not in dropped]
            out_headers += answer_headers
        # A stream may stay silent for hours (`logs -f`, `events`, `wait`): every few seconds
        # of silence the client is looked at, so that one gone frees its engine connection.
        if length is None or len(rest) < length:  # else the answer is whole: nothing to wait for
            up.settimeout(_SILENT_CHECK)
        reader = BodyReader(up, rest, length=length, chunked=chunked, idle=self._client_gone)
        try:
            if buffer_response is not None:
                self._relay_buffered(
                    ex, answer, reader, out_headers, buffer_response, status_from_body
                )
            else:
                to_client = ex.answer
                if as_received:
                    assert answer.length is not None
                    first = to_client.head_as_received(status, answer.reason, block, answer.length)
                else:
                    first = to_client.head(status, out_headers, answer.reason)
                out: list[Any] = [first]
                if length is None or len(rest) < length:
                    # The rest may come late (`wait`, `events`, a pull's progress): the head
                    # goes out now, as the engine sent it; a whole small answer goes at once.
                    self._send_pieces(out)
                    out = []
                for batch in reader.batches():
                    if tee is not None:
                        tee(b"".join(batch))
                    out += to_client.body(batch)
                    self._send_pieces(out)
                    out = []
                out.append(to_client.end())
                self._send_pieces(out)
        except BodyError as exc:
            self._drop_upstream()
            raise EngineDown(f"invalid answer from the engine: {exc}") from None
        except _Closed:
            self._drop_upstream()
            raise
        reusable = (
            not answer.close
            and reader.done
            and (reader.length is not None or reader.chunked)
            and not reader.rest()
        )
        if reusable:
            if up.gettimeout() is not None:
                up.settimeout(None)  # the next request's answer head may be long in coming
            self._upstream_clean = True
        else:
            self._drop_upstream()
        return status

    def _client_gone(self) -> None:
        """Raise _Closed when the client closed its connection (POLLHUP: both directions; a
        client that only shut its sending side still reads the answer)."""
        poller = select.poll()
        poller.register(self.sock, select.POLLIN)
        for _, events in poller.poll(0):
            if events & (select.POLLHUP | select.POLLERR | select.POLLNVAL):
                raise _Closed

    def _relay_buffered(
        self,
        ex: Exchange,
        answer: ResponseHead,
        reader: BodyReader,
        out_headers: list[tuple[bytes, bytes]],
        buffer_response: Callable[[int, bytes], bytes],
        status_from_body: bytes | None,
    ) -> None:
        data = bytearray()
        for batch in reader.batches():
            for piece in batch:
                data += piece
        status = answer.status
        new = buffer_response(status, bytes(data))
        if status_from_body is not None and status_from_body in new and new != data:
            status = 403  # the filter turned the answer into a refusal
            out_headers = [(k, v) for k, v in out_headers if k.lower() != b"content-type"]
            out_headers.append((b"content-type", b"application/json"))
        out_headers = [(k, v) for k, v in out_headers if k.lower() != b"content-length"]
        out_headers.append((b"content-length", str(len(new)).encode()))
        reason = answer.reason if status == answer.status else b"Forbidden"
        to_client = ex.answer
        head = to_client.head(status, out_headers, reason)
        self._send_pieces([head, *to_client.body([new]), to_client.end()])

    # -- tunnels (§1.6)

    def _tunnel(self, raw: bytes, up_rest: bytes, up: socket.socket) -> None:
        """The engine's 101 or raw-stream head as it sent it (parsed strictly first), then
        bytes both ways, never parsed again."""
        self.tunnelled = True
        self.upstream = None  # never pooled again
        client_rest = bytes(self.buffer)  # after an attach without Upgrade: the stdin (X32)
        self.buffer.clear()
        try:
            self._kernel_timeout(None)
            self.sock.sendall(raw + HEAD_END + up_rest)
            if client_rest:
                up.sendall(client_rest)
        except OSError:
            up.close()
            return
        tunnel(self.sock, up)


def tunnel(a: socket.socket, b: socket.socket) -> None:
    """Copy bytes both ways; half-close each direction separately; close when both ended."""
    for sock in (a, b):
        if sock.gettimeout() is not None:
            sock.settimeout(None)

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


def _replace_header(block: bytes, name: bytes, value: bytes) -> bytes:
    """`block` (checked lines, each after its CRLF) with every line of header `name` (lower
    case) replaced by one `name: value` at its end, checked as the writer checks a header."""
    if TOKEN_RE.fullmatch(name) is None or name != name.lower():
        raise WriteError(f"invalid header name {name[:40]!r}")
    if BAD_VALUE_RE.search(value) is not None:
        raise WriteError(f"invalid header {name.decode()}")
    kept = re.sub(rb"\r\n" + re.escape(name) + rb":[^\r]*", b"", block, flags=re.IGNORECASE)
    return kept + b"\r\n" + name + b": " + value


def _wants_close(head: RequestHead) -> bool:
    return any(b"close" in v.lower() for v in head.get_all(b"connection"))


from trust.proxy.routes import Query as _Query  # noqa: E402

_EMPTY_QUERY = _Query(())
