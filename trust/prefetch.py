"""The first trust-server request, sent while the verifier is still being imported (issue 13).

A warm `resolve`, `inspect` or trusted pull sends one request to the trust server:
`timestamp.json`. Over a far link that request (TCP and TLS handshakes included) takes a few round
trips, and the command used to start it only once the Notary client, the verifier and
`cryptography` were imported and the cached roles verified. `Prefetch.start` sends it from a
thread as soon as the command knows the reference, the settings and the policy, so the imports
and the verification of the cached roles overlap the network.

Only fetching moves, nothing is verified here, and the verifier's order and checks are
unchanged: `TrustService` hands the client a session (`Prefetched`) whose *first*
`timestamp` request answers with what the early request got (bytes, or the very error the
session raised); everything else, including a second timestamp request, goes to the network
as before. The client then verifies those bytes exactly as if it had asked at that moment. The
early request is only used by an update of the same trust server and GUN whose session would be
built from the same settings (`trust.notary.remote.session_key`); otherwise it is dropped (one
wasted request, no other effect).

This module imports neither the verifier nor `requests` at import time: the thread does.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING

from trust.errors import TrustpullError
from trust.reference import Reference, parse

if TYPE_CHECKING:
    from trust.notary.remote import NotaryRemote
    from trust.policy import Policy
    from trust.settings import Settings

__all__ = ["Prefetch", "Prefetched", "session_key", "trust_server"]

#: Docker Hub's Notary: trust.notary.client.OFFICIAL_TRUST_SERVER.
_OFFICIAL_TRUST_SERVER = "https://notary.docker.io"
#: How long the command waits for the thread's imports before going on with its own work (it
#: goes on anyway after this: the early request is an optimisation, never a dependency).
_HEAD_START_SECONDS = 0.5
#: At most this many early requests per command (each costs one connection).
MAX_PREFETCHES = 16


def trust_server(domain: str, settings: Settings, rule_server: str | None = None) -> str:
    """trust.notary.client.trust_server_for (dct.md §1.4) after a rule's `trust_server`, as
    trust.service.settings_for applies it; a mismatch only wastes the early request."""
    if rule_server:
        return rule_server
    if settings.trust_server_override:
        return settings.trust_server_override
    configured = settings.trust_servers.get(domain)
    if configured:
        return configured
    if domain == "docker.io":
        return _OFFICIAL_TRUST_SERVER
    return f"https://{domain}"


def session_key(server: str, gun: str, settings: Settings) -> tuple[object, ...]:
    """Everything trust.notary.remote.remote_for reads: equal keys build equal sessions."""
    return (
        server,
        gun,
        settings.limits,
        settings.docker_config,
        settings.auth_realms,
        settings.trust_dir,
        settings.config_file,
    )


_PROXY_VARIABLES = ("https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY")


def _preconnect(server: str) -> None:
    """Start the TCP connection to the trust server (trust.preconnect) before `requests` is
    imported; not when a proxy may be configured (the connection would bypass it)."""
    import os
    from urllib.parse import urlsplit

    if any(os.environ.get(name) for name in _PROXY_VARIABLES):
        return
    try:
        parts = urlsplit(server)
        host, port = parts.hostname, parts.port or 443
    except ValueError:
        return
    if parts.scheme == "https" and host:
        from trust import preconnect

        preconnect.start(host, port)


class Prefetched:
    """A `MetadataSource` whose first `timestamp` answer was fetched early (see module doc)."""

    def __init__(self, key: tuple[object, ...], cap: int) -> None:
        self.key = key
        self._cap = cap
        self._ready = threading.Event()  # the remote exists (or could not be built)
        self._done = threading.Event()  # the early request has its answer
        self._remote: NotaryRemote | None = None
        self._body: bytes | None = None
        self._error: BaseException | None = None
        self._build_error: BaseException | None = None
        self._taken = False
        self._closed = False
        self._close_lock = threading.Lock()

    # The thread's side.
    def run(self, server: str, gun: str, settings: Settings) -> None:
        _preconnect(server)
        try:
            from trust.notary.remote import remote_for

            self._remote = remote_for(server, gun, settings)
        except BaseException as error:  # re-raised where the client asks
            self._build_error = error
            return
        finally:
            self._ready.set()
            if self._remote is None:
                self._done.set()
        try:
            self._body = self._remote.get_metadata("timestamp", self._cap)
        except BaseException as error:  # re-raised where the client asks
            self._error = error
        finally:
            with self._close_lock:
                self._done.set()
                if self._closed:
                    self._remote.close()

    def head_start(self, timeout: float) -> None:
        """Wait until the thread is past its imports (its network wait is then the overlap)."""
        self._ready.wait(timeout)

    # The client's side (trust.notary.client.MetadataSource).
    def get_metadata(self, name: str, max_bytes: int) -> bytes:
        self._done.wait()
        if self._build_error is not None:
            raise self._build_error
        assert self._remote is not None
        if name == "timestamp" and max_bytes == self._cap and not self._taken:
            self._taken = True
            if self._error is not None:
                raise self._error
            assert self._body is not None
            return self._body
        return self._remote.get_metadata(name, max_bytes)

    @property
    def request_count(self) -> int:
        return self._remote.request_count if self._remote is not None else 0

    def close(self) -> None:
        """Close the session; one still waiting for its early answer is left to its thread,
        which closes it when the answer comes (a daemon: it never holds the process up)."""
        with self._close_lock:
            self._closed = True
            if self._done.is_set() and self._remote is not None:
                self._remote.close()


class Prefetch:
    """Early timestamp requests for a command's references; `take` hands one to the service."""

    def __init__(self, settings: Settings, policy: Policy | None = None) -> None:
        self.settings = settings
        self.policy = policy
        self._lock = threading.Lock()
        self._pending: dict[tuple[object, ...], Prefetched] = {}

    def start(
        self,
        texts: Iterable[str],
        *,
        all_tags: bool = False,
        with_policy: bool = True,
        wait: bool = True,
    ) -> int:
        """Send the timestamp request of each distinct (server, GUN) of `texts` from a thread;
        returns how many were started. `with_policy=False`: the command ignores the policy
        (`inspect`). Unparsable references, TUF-verified scopes, refusing rules and offline
        runs start nothing (the command reports them as it always did)."""
        settings = self.settings
        if settings.offline:
            return 0
        started: list[Prefetched] = []
        for text in texts:
            if len(self._pending) >= MAX_PREFETCHES:
                break
            try:
                ref = parse(text, default_tag=not all_tags)
            except TrustpullError:
                continue
            target = self._target(ref, all_tags=all_tags, with_policy=with_policy)
            if target is None:
                continue
            key = session_key(target, ref.name, settings)
            with self._lock:
                if key in self._pending:
                    continue
                early = Prefetched(key, settings.limits.timestamp_max_bytes)
                self._pending[key] = early
            threading.Thread(
                target=early.run,
                args=(target, ref.name, settings),
                name=f"prefetch {ref.name}",
                daemon=True,
            ).start()
            started.append(early)
        if wait and started:
            # Let the first thread reach the network before this one competes for the GIL
            # with its own imports: its round trips then overlap them.
            started[0].head_start(_HEAD_START_SECONDS)
        return len(started)

    def _target(self, ref: Reference, *, all_tags: bool, with_policy: bool) -> str | None:
        """The trust server the service will ask for `ref`, or None for no early request."""
        if ref.tag is None and not all_tags:
            return None  # NAME@digest: each candidate tag has its own rule; not worth guessing
        from trust.settings import scope_matches

        rule = None
        if with_policy and self.policy is not None:
            rule = self.policy.match(ref.trimmed() if all_tags else ref)
            if rule.refuse or rule.trust_source not in (None, "notary"):
                return None
        if rule is None or rule.trust_source is None:
            if any(scope_matches(s.scope, ref.name) for s in self.settings.trust_sources):
                return None  # verified by a TUF repository
        return trust_server(ref.domain, self.settings, rule.trust_server if rule else None)

    def take(self, server: str, gun: str, settings: Settings) -> Prefetched | None:
        """The early session for this update, once; None when there is none that fits."""
        with self._lock:
            return self._pending.pop(session_key(server, gun, settings), None)

    def close(self) -> None:
        """Close the sessions nobody took (their threads are daemons; nothing waits long)."""
        with self._lock:
            left = list(self._pending.values())
            self._pending.clear()
        for early in left:
            early.close()
