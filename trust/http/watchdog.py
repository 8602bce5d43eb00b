"""The wall-clock deadline of one HTTP attempt, enforced by a timer that cuts its sockets.

Socket timeouts bound each single read, not a server that trickles a byte just often enough
(attacks.md G04); shutting the socket down from a timer bounds the headers phase too. The
connections a request uses register themselves with the watch of the calling thread, and the
requests adapter below makes every pool (direct and proxied) use such connections and one
`SSLContext`.
"""

from __future__ import annotations

import contextlib
import heapq
import socket
import ssl
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from trust import preconnect

__all__ = ["BoundedAdapter", "Watch", "shared_adapter", "watch"]


class Watch:
    """The connections used by the request in flight, so a timer can cut them at the deadline."""

    def __init__(self) -> None:
        self._connections: list[HTTPConnection] = []
        self._fired = False
        self._ended = False
        self._lock = threading.Lock()

    @property
    def fired(self) -> bool:
        """True once the deadline passed and the sockets were shut down."""
        return self._fired

    def add(self, conn: HTTPConnection) -> None:
        with self._lock:
            self._connections.append(conn)
            # The latest user owns it: a pooled connection another thread took since is not cut.
            conn.__dict__[_OWNER] = self

    def end(self) -> None:
        """The block ended: a deadline reached from now on cuts nothing."""
        with self._lock:
            self._ended = True
            self._connections.clear()

    def cut(self) -> None:
        with self._lock:
            if self._ended:
                return
            self._fired = True
            for conn in self._connections:
                sock = conn.sock
                if sock is not None and conn.__dict__.get(_OWNER) is self:
                    try:
                        # The plain socket method: never touch the SSL object another thread uses.
                        socket.socket.shutdown(sock, socket.SHUT_RDWR)
                    except OSError:
                        pass


_local = threading.local()
_OWNER = "_trustpull_watch"


class _Deadlines:
    """One daemon thread cuts every watch whose deadline passed (a `threading.Timer` per
    request was a thread started and joined per HTTP attempt: issue 12's warm pull)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Watch]] = []
        self._seq = 0
        self._thread: threading.Thread | None = None

    def add(self, seconds: float, current: Watch) -> None:
        at = time.monotonic() + seconds
        with self._cond:
            self._seq += 1
            earliest = self._heap[0][0] if self._heap else None
            heapq.heappush(self._heap, (at, self._seq, current))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="trustpull-watchdog", daemon=True
                )
                self._thread.start()
            elif earliest is None or at < earliest:
                self._cond.notify()

    def _run(self) -> None:
        while True:
            due: list[Watch] = []
            with self._cond:
                while not self._heap:
                    self._cond.wait()
                now = time.monotonic()
                while self._heap and self._heap[0][0] <= now:
                    due.append(heapq.heappop(self._heap)[2])
                if not due and self._heap:
                    self._cond.wait(self._heap[0][0] - now)
            for current in due:
                current.cut()  # nothing when its block ended already


_deadlines = _Deadlines()


@contextlib.contextmanager
def watch(seconds: float) -> Iterator[Watch]:
    """Cut every connection this thread opens or uses inside the block after `seconds`."""
    current = Watch()
    _local.watch = current
    _deadlines.add(seconds, current)
    try:
        yield current
    finally:
        current.end()
        _local.watch = None


def _register(conn: HTTPConnection) -> None:
    current: Watch | None = getattr(_local, "watch", None)
    if current is not None:
        current.add(conn)


class _WatchedHTTPConnection(HTTPConnection):
    def connect(self) -> None:
        _register(self)
        super().connect()

    def request(self, *args: Any, **kwargs: Any) -> None:
        _register(self)
        super().request(*args, **kwargs)


class _WatchedHTTPSConnection(HTTPSConnection):
    def connect(self) -> None:
        _register(self)
        super().connect()

    def _new_conn(self) -> socket.socket:
        """A TCP connection trust.prefetch started to exactly this address, if any (TLS and
        everything above it happen on it as on a socket made here), else a new one."""
        if self.source_address is None:
            timeout = self.timeout if isinstance(self.timeout, (int, float)) else None
            if timeout is None:
                timeout = preconnect.MAX_AGE_SECONDS  # never an unbounded wait for the kernel
            sock = preconnect.adopt(self._dns_host, self.port, timeout)
            if sock is not None:
                for option in self.socket_options or ():
                    sock.setsockopt(*option)
                sys.audit("http.client.connect", self, self.host, self.port)
                return sock
        return super()._new_conn()

    def request(self, *args: Any, **kwargs: Any) -> None:
        _register(self)
        super().request(*args, **kwargs)


class _WatchedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


_POOLS = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}


class BoundedAdapter(HTTPAdapter):
    """Uses one SSLContext for every pool (direct and proxied), watched connections, no retries."""

    def __init__(self, context: ssl.SSLContext, *, pool_maxsize: int = 10) -> None:
        self._context = context
        super().__init__(max_retries=0, pool_maxsize=pool_maxsize)

    def init_poolmanager(
        self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any
    ) -> None:
        pool_kwargs["ssl_context"] = self._context
        super().init_poolmanager(connections, maxsize, block, **pool_kwargs)
        self.poolmanager.pool_classes_by_scheme = dict(_POOLS)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        proxy_kwargs["ssl_context"] = self._context
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        manager.pool_classes_by_scheme = dict(_POOLS)
        return manager

    def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
        conn.cert_reqs = "CERT_REQUIRED"  # the CAs are in our context, nothing to add per pool


#: Idle connections kept per host by a shared adapter: one per request in flight at once
#: (`trustpull check` runs at most 64 workers), so none is discarded with a logged warning.
SHARED_POOL_SIZE = 64

#: TLS contexts with a shared adapter, at most as many as `trust.http.tls` keeps (the oldest is
#: dropped: a long-running proxy whose CA files change does not keep old pools forever).
SHARED_ADAPTERS = 64

_shared: dict[ssl.SSLContext, BoundedAdapter] = {}
_shared_lock = threading.Lock()


def shared_adapter(context: ssl.SSLContext) -> BoundedAdapter:
    """The one adapter of this process for `context`: sessions to the same server under the same
    TLS configuration (`trust.http.tls` builds one context per certificate files) reuse each
    other's kept-alive connections, so `trustpull check` does one TCP and TLS handshake per
    concurrent request, not one per repository. A connection is only ever reused under the
    context that verified it; urllib3's pools are thread-safe and drop dead connections."""
    with _shared_lock:
        adapter = _shared.get(context)
        if adapter is None:
            if len(_shared) >= SHARED_ADAPTERS:
                del _shared[next(iter(_shared))]
            adapter = _shared[context] = BoundedAdapter(context, pool_maxsize=SHARED_POOL_SIZE)
        return adapter
