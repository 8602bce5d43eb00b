"""What a long-running process (the engine proxy) keeps between updates: `Kept`.

A CLI run opens one session per repository, verifies and exits. The proxy verifies on every
pull, exactly as the CLI does (every update fetches timestamp.json), and keeps two things for
the next update of the same repository (issue 12, "a warm pull: 1 request, ≤ 5 ms"):

* `SessionPool`: the trust server session (its TCP/TLS connection and the bearer token it
  holds), so the timestamp is one request;
* `VerifiedStore`: the last verified result, with what it was verified from: the fetched
  timestamp's bytes and the identity of every trust cache file the update read. The client
  (trust.notary.client) reuses it only when the new timestamp is byte-for-byte the same, no
  cache file changed, the settings are the same and the clock lies between the verification
  and `trusted_set.stable_until` (the first instant at which any expiry or certificate check
  over the same bytes could turn out otherwise). The CLI's procedure over those same inputs
  would return the same result, warnings included; anything else runs it in full.

A kept session is only ever reused with the same credentials: the key is (trust server, GUN,
an identity of the credentials), the identity a keyed hash with a key of this process (never
stored, never logged), so one client's token never serves another client's request. The key
also holds what the session was made with (`fit`: the TLS context of the trust server's CA
files as they are now, the limits, the docker configuration, the realms), so a session is
never used under TLS settings the update's own would not accept (a CA removed since, another
configuration). A session is used by one update at a time (leased, then returned); the idle
ones are bounded (`Limits.idle_sessions`, least recently used closed first).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from trust.credentials import RegistryAuth
from trust.notary.remote import NotaryRemote
from trust.notary.trusted_set import TrustData
from trust.settings import Limits, TrustPinning

if TYPE_CHECKING:
    from trust.notary.cache import FileIdentity

__all__ = ["Kept", "KeptResult", "SessionPool", "VerifiedStore"]

_Key = tuple[str, str, str, Hashable]


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
    """Idle trust server sessions by (server, GUN, credential identity, fit); thread-safe."""

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
        # Each field length-prefixed: a field may hold any character (NUL included, from a
        # client's JSON header), so a plain separator would let two credentials share a key.
        data = b"".join(
            len(part).to_bytes(8, "big") + part
            for part in (
                field.encode("utf-8", "surrogatepass")
                for field in (auth.username, auth.password, auth.identitytoken)
            )
        )
        return hmac.new(self._secret, data, hashlib.sha256).hexdigest()

    def lease(
        self,
        server: str,
        gun: str,
        auth: RegistryAuth | None,
        make: Callable[[], NotaryRemote],
        fit: Hashable = (),
    ) -> _Lease:
        """A kept session for these credentials and this `fit` (what `make` builds the session
        from, see the module docstring), else a new one from `make`."""
        key = (server, gun, self.identity(auth), fit)
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


@dataclass(frozen=True)
class KeptResult:
    """One verified update and the inputs it was verified from (see the module docstring)."""

    data: TrustData
    #: The timestamp.json bytes the update fetched (equal to the cached ones).
    timestamp: bytes
    #: `TrustCache.identity` of every role file the update read (None: absent).
    files: Mapping[str, FileIdentity | None]
    #: The update's clock, and `stable_until` of its result.
    since: dt.datetime
    until: dt.datetime
    #: What else decided the result: pins, limits, required roles.
    pinning: TrustPinning
    limits: Limits
    required_roles: frozenset[str]


class VerifiedStore:
    """The last verified result per (trust cache directory, trust server); thread-safe and
    bounded (`Limits.kept_results`, least recently stored dropped first)."""

    def __init__(self, max_results: int) -> None:
        self._max = max_results
        self._lock = threading.Lock()
        self._results: OrderedDict[tuple[str, str], KeptResult] = OrderedDict()

    def get(self, repo_dir: str, server: str) -> KeptResult | None:
        with self._lock:
            return self._results.get((repo_dir, server))

    def put(self, repo_dir: str, server: str, result: KeptResult) -> None:
        with self._lock:
            self._results[(repo_dir, server)] = result
            self._results.move_to_end((repo_dir, server))
            while len(self._results) > self._max:
                self._results.popitem(last=False)

    def forget(self, repo_dir: str, server: str) -> None:
        with self._lock:
            self._results.pop((repo_dir, server), None)


class Kept:
    """Everything a long-running process keeps between updates, made once per process."""

    def __init__(self, limits: Limits) -> None:
        self.sessions = SessionPool(limits.idle_sessions)
        self.verified = VerifiedStore(limits.kept_results)

    def close(self) -> None:
        self.sessions.close()
