"""Trust server sessions kept between updates by a long-running process (the engine proxy).

A CLI run opens one session per repository and closes it. The proxy verifies on every pull, so
it keeps each session (its TCP/TLS connection and the bearer token it holds) for the next update
of the same repository: a warm pull then costs one request, the timestamp (issue 12).

A kept session is only ever reused with the same credentials: the key is (trust server, GUN,
an identity of the credentials), the identity a keyed hash with a key of this process (never
stored, never logged), so one client's token never serves another client's request. A session
is used by one update at a time (leased, then returned); the idle ones are bounded
(`Limits.idle_sessions`, least recently used closed first).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import threading
from collections import OrderedDict
from collections.abc import Callable

from trust.credentials import RegistryAuth
from trust.notary.remote import NotaryRemote

__all__ = ["SessionPool"]

_Key = tuple[str, str, str]


class _Lease:
    """A kept session for one update (the client's MetadataSource): `close` gives it back."""

    def __init__(self, pool: SessionPool, key: _Key, remote: NotaryRemote) -> None:
        self._pool = pool
        self._key = key
        self._remote: NotaryRemote | None = remote
        self._base = remote.request_count
        self._final = 0

    def get_metadata(self, name: str, max_bytes: int) -> bytes:
        assert self._remote is not None, "a returned session is not used again"
        return self._remote.get_metadata(name, max_bytes)

    @property
    def request_count(self) -> int:
        """Requests of this update only (the session's own count runs on across updates)."""
        if self._remote is None:
            return self._final
        return self._remote.request_count - self._base

    def close(self) -> None:
        remote, self._remote = self._remote, None
        if remote is not None:
            self._final = remote.request_count - self._base
            self._pool.give_back(self._key, remote)


class SessionPool:
    """Idle trust server sessions by (server, GUN, credential identity); thread-safe."""

    def __init__(self, max_idle: int) -> None:
        self._max_idle = max_idle
        self._lock = threading.Lock()
        self._idle: OrderedDict[_Key, list[NotaryRemote]] = OrderedDict()
        self._count = 0
        self._secret = os.urandom(32)

    def identity(self, auth: RegistryAuth | None) -> str:
        """Which credentials a session was made with, as a keyed hash (anonymous: "")."""
        if auth is None or auth.is_anonymous:
            return ""
        text = "\0".join((auth.username, auth.password, auth.identitytoken))
        data = text.encode("utf-8", "surrogatepass")
        return hmac.new(self._secret, data, hashlib.sha256).hexdigest()

    def lease(
        self,
        server: str,
        gun: str,
        auth: RegistryAuth | None,
        make: Callable[[], NotaryRemote],
    ) -> _Lease:
        """A kept session for these credentials, else a new one from `make`."""
        key = (server, gun, self.identity(auth))
        remote: NotaryRemote | None = None
        with self._lock:
            kept = self._idle.get(key)
            if kept:
                remote = kept.pop()
                self._count -= 1
                if not kept:
                    del self._idle[key]
        if remote is None:
            remote = make()
        else:
            remote.renew()
        return _Lease(self, key, remote)

    def give_back(self, key: _Key, remote: NotaryRemote) -> None:
        closing: list[NotaryRemote] = []
        with self._lock:
            self._idle.setdefault(key, []).append(remote)
            self._idle.move_to_end(key)
            self._count += 1
            while self._count > self._max_idle:
                oldest, sessions = next(iter(self._idle.items()))
                closing.append(sessions.pop(0))
                self._count -= 1
                if not sessions:
                    del self._idle[oldest]
        for session in closing:
            session.close()

    def close(self) -> None:
        with self._lock:
            sessions = [s for kept in self._idle.values() for s in kept]
            self._idle.clear()
            self._count = 0
        for session in sessions:
            session.close()
