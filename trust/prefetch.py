"""The first trust-server request, sent while the verifier is still being imported (issue 13).

A warm `resolve`, `inspect` or trusted pull sends one request to the trust server,
`timestamp.json` (a first use: `root.json`). Over a far link that request (TCP and TLS
handshakes included) takes a few round trips, and the command used to start it only once the
Notary client, the verifier and `cryptography` were imported and the cached roles verified.
`Prefetch.start` sends it from a thread as soon as the command knows its references, settings
and policy, so those imports and checks overlap the network.

Only *when* bytes are fetched moves; what is fetched, from where, and how it is verified do not:

- where: the service's own decisions (trust.route: the `[mirrors]` origin, the TUF source, the
  rule's settings; trust.settings.trust_server_for), asked the way `TrustService.verify` and
  `inspect` ask them. A reference the service would refuse or send elsewhere before any I/O
  (offline, refusing rule, TUF source, a name the cache refuses, a bad `-a` combination) gets
  no early request;
- how: the session is `trust.notary.remote.remote_for`, the Notary client's own construction
  (credentials asked only when a challenge comes, the same helper, realms and token store);
- what: the early answer (bytes, or the error the session raised, raised again as a fresh
  copy) is handed to the client only as the answer to its *first* request on that session, and
  only if that request is exactly the early one (same name and size cap). Any other first
  request, and every later one, goes to the network on the same session as before. The client
  then verifies those bytes exactly as if it had asked at that moment;
- the early answer is used only while the cached copy of the file it answers is as it was when
  the request was planned: a newer one written meanwhile by another process would make the
  older early answer a rollback, so the client asks the network as it would have;
- the session is used only by an update of the same server and GUN with equal settings (the
  whole `Settings`, not a guess at what the session reads); any other update builds its own and
  the early one is dropped (one wasted request, no other effect).

This module imports neither the verifier nor `requests` at import time: the thread does.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from trust.errors import TrustpullError
from trust.reference import parse
from trust.settings import trust_server_for

if TYPE_CHECKING:
    from trust.notary.remote import NotaryRemote
    from trust.policy import Policy
    from trust.settings import Settings

__all__ = ["MAX_PREFETCHES", "Prefetch", "Prefetched", "start_connection"]

#: How long the command waits for the thread's imports before going on with its own work (it
#: goes on anyway after this: the early request is an optimisation, never a dependency).
_HEAD_START_SECONDS = 0.5
#: At most this many early requests per command (each costs one connection).
MAX_PREFETCHES = 16


def start_connection(server: str) -> None:
    """Start the TCP connection to the trust server (trust.preconnect) before `requests` is
    imported; not when any proxy variable is set (the connection would bypass the proxy)."""
    from urllib.parse import urlsplit

    if any(name.lower().endswith("_proxy") and value for name, value in os.environ.items()):
        return
    try:
        parts = urlsplit(server)
        host, port = parts.hostname, parts.port or 443
    except ValueError:
        return
    if parts.scheme == "https" and host:
        from trust import preconnect

        preconnect.start(host, port)


def _fresh(error: BaseException) -> BaseException:
    """The thread's error as the client's own: a new object (errors are never re-raised as
    the same, mutated object: trust.errors)."""
    return error.fresh() if isinstance(error, TrustpullError) else error


class Prefetched:
    """A `MetadataSource` whose first request may be answered by the early one (module doc)."""

    def __init__(
        self,
        server: str,
        gun: str,
        settings: Settings,
        first: tuple[str, int],
        unchanged: Callable[[], bool] | None = None,
    ) -> None:
        self.server, self.gun, self.settings = server, gun, settings
        #: (metadata name, size cap) of the early request.
        self.first = first
        #: False once the cached copy of the early file changed since the request was planned
        #: (another process wrote a newer one meanwhile): the early answer, older than what the
        #: client now reads from the cache, would be refused as a rollback, so the client's
        #: request then goes to the network as it would have without this module.
        self._unchanged = unchanged
        self._ready = threading.Event()  # the thread is past its imports
        self._done = threading.Event()  # the early request has its answer
        self._remote: NotaryRemote | None = None
        self._body: bytes | None = None
        self._error: BaseException | None = None
        self._build_error: BaseException | None = None
        self._asked = False
        self._closed = False
        self._close_lock = threading.Lock()

    # The thread's side.
    def run(self) -> None:
        try:
            start_connection(self.server)
            from trust.notary.remote import remote_for

            # Past the imports: the command goes on with its own while this thread builds the
            # TLS context (OpenSSL loads the system store without holding the GIL).
            self._ready.set()
            self._remote = remote_for(self.server, self.gun, self.settings)
        except BaseException as error:  # raised again where the client asks
            self._build_error = error
            self._ready.set()
            self._done.set()
            return
        try:
            self._body = self._remote.get_metadata(*self.first)
        except BaseException as error:  # raised again where the client asks
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
            raise _fresh(self._build_error)
        assert self._remote is not None
        if not self._asked:
            self._asked = True
            fresh = self._unchanged is None or self._unchanged()
            if (name, max_bytes) == self.first and fresh:
                if self._error is not None:
                    raise _fresh(self._error)
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
    """Early requests for a command's references; `take` hands one to the service's client.

    `settings` and `policy` must be the ones the service is built with.
    """

    def __init__(self, settings: Settings, policy: Policy | None = None) -> None:
        self.settings = settings
        self.policy = policy
        self._lock = threading.Lock()
        self._pending: list[Prefetched] = []
        self._started = 0

    def start(
        self,
        texts: Iterable[str],
        *,
        all_tags: bool = False,
        inspect: bool = False,
        wait: bool = True,
    ) -> int:
        """Send the first request of each distinct (server, GUN, session) of `texts` from a
        thread; returns how many were started. `inspect`: the references are parsed and
        routed as `trustpull inspect` does (`TrustService.inspect`), else as `verify`."""
        if self.settings.offline:
            return 0
        started: list[Prefetched] = []
        for text in texts:
            if self._started >= MAX_PREFETCHES:
                break
            try:
                planned = self._plan(text, all_tags=all_tags, inspect=inspect)
            except TrustpullError:
                continue  # the command reports it as it always did
            if planned is None:
                continue
            server, gun, settings, first, unchanged = planned
            with self._lock:
                if self._find(server, gun, settings) is not None:
                    continue
                early = Prefetched(server, gun, settings, first, unchanged)
                self._pending.append(early)
                self._started += 1
            try:
                threading.Thread(target=early.run, name=f"prefetch {gun}", daemon=True).start()
            except RuntimeError:  # no thread to be had: the client fetches as without
                with self._lock:
                    self._pending.remove(early)
                continue
            started.append(early)
        if wait and started:
            # Let the first thread reach the network before this one competes for the GIL
            # with its own imports: its round trips then overlap them.
            started[0].head_start(_HEAD_START_SECONDS)
        return len(started)

    def _plan(
        self, text: str, *, all_tags: bool, inspect: bool
    ) -> tuple[str, str, Settings, tuple[str, int], Callable[[], bool]] | None:
        """(server, GUN, settings, first request) of the Notary update the service will run
        first for `text`, or None when it runs none before refusing or another source."""
        from trust.notary.cache import TrustCache, check_gun_for_trust
        from trust.route import (
            mirror_origin,
            repository_rule,
            rule_for,
            select_source,
            settings_for,
        )

        ref = parse(text, default_tag=not (all_tags or inspect))
        if inspect and ref.digest is not None:
            return None  # a usage error
        if all_tags and (ref.tag_given or ref.digest is not None):
            return None  # a usage error
        ref = mirror_origin(ref, self.settings) or ref
        if rule_for(self.policy, ref.trimmed() if all_tags else ref).refuse:
            return None
        rule = repository_rule(self.policy, ref)  # how the service verifies it, tag rule or not
        if rule.trust_source not in (None, "notary"):
            return None
        if rule.trust_source is None and select_source(ref, self.settings) is not None:
            return None  # verified by a TUF repository
        check_gun_for_trust(ref)
        settings = settings_for(rule, ref, self.settings)
        limits = settings.limits
        cache = TrustCache(settings.trust_dir, ref.name)
        cached = cache.metadata_dir / "root.json"
        first = (
            ("timestamp", limits.timestamp_max_bytes)
            if cached.is_file()
            else ("root", limits.root_max_bytes)
        )
        planned = cache.identity(first[0])

        def unchanged() -> bool:
            return cache.identity(first[0]) == planned

        return trust_server_for(ref.domain, settings), ref.name, settings, first, unchanged

    def take(self, server: str, gun: str, settings: Settings) -> Prefetched | None:
        """The early session for this update, once; None when there is none that fits."""
        with self._lock:
            early = self._find(server, gun, settings)
            if early is not None:
                self._pending.remove(early)
            return early

    def _find(self, server: str, gun: str, settings: Settings) -> Prefetched | None:
        for early in self._pending:
            if (early.server, early.gun) == (server, gun) and early.settings == settings:
                return early
        return None

    def close(self) -> None:
        """Close the sessions nobody took (their threads are daemons; nothing waits long)."""
        with self._lock:
            left = list(self._pending)
            self._pending.clear()
        for early in left:
            early.close()
