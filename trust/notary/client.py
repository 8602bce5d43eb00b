"""The Notary client: the I/O around the pure `TrustedSet` (fetch, cache, retry, rotate).

One `update()` call runs the whole workflow for one GUN under the cache lock:

1. root: the cached root is the pin; with no cache, trust on first use (or a pin); an expired
   cached root is replaced by a newer one that it signs;
2. timestamp, always fetched (cap `limits.timestamp_max_bytes`); on a network-type failure
   only, an unexpired verified cached timestamp is used with a loud warning (attacks.md B13);
3. snapshot, targets and every delegation the snapshot lists, each reused from the cache when
   its bytes match the parent's hashes, else fetched by consistent name with the parent's length
   as cap (several delegations of `targets` are downloaded concurrently on the one session,
   then verified one by one in the walk's order);
4. root rotation when the snapshot names another root, or once when the timestamp or snapshot
   fails its signature check under the trusted root (attacks.md D03);
5. nothing is written to the cache during the update (a verified rotation of the cached root is
   the one exception, written at once): the verified files it fetched travel on the result
   (`TrustData.pending`) and are written by `NotaryClient.commit` once the caller's verdict
   accepts them, or straight away with `update(ref, commit=True)`, the default.

Longer than 500 lines because Notary's update (timestamp, snapshot, targets, the
delegation walk, root rotation, the cache fallback and the deferred commit) is one ordered
procedure around the verifier; the verifier, the cache and the server API are elsewhere.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import os
import sys
from collections.abc import Callable, Hashable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Protocol

from trust.errors import (
    AuthError,
    DelegationError,
    ExpiredError,
    HashMismatchError,
    LengthError,
    NetworkError,
    NoTrustDataError,
    RootRotationError,
    SignatureError,
    ThresholdError,
    TrustpullError,
)
from trust.notary.cache import FileIdentity, TrustCache, check_gun_for_trust
from trust.notary.cjson import loads_strict
from trust.notary.metadata import FileMeta
from trust.notary.trusted_set import (
    RELEASES_ROLE,
    PendingWrites,
    TrustData,
    TrustedSet,
    check_meta,
)
from trust.reference import Reference
from trust.settings import OFFICIAL_TRUST_SERVER, Limits, Settings, trust_server_for

if TYPE_CHECKING:
    from trust.credentials import CredentialSource
    from trust.notary.pool import Kept, KeptResult

__all__ = [
    "OFFICIAL_TRUST_SERVER",
    "MetadataSource",
    "NotaryClient",
    "UpdateStats",
    "check_gun_for_trust",
    "trust_server_for",
]


class MetadataSource(Protocol):
    """What the client needs from a trust server session (trust.notary.remote implements it)."""

    def get_metadata(self, name: str, max_bytes: int) -> bytes: ...

    @property
    def request_count(self) -> int: ...

    def close(self) -> None: ...


@dataclass
class UpdateStats:
    requests: int = 0
    downloaded: list[str] = field(default_factory=list)


def _is_network_failure(error: TrustpullError) -> bool:
    """Failures after which a verified, unexpired cache may serve (never auth or validation)."""
    return isinstance(error, NetworkError) and not isinstance(error, AuthError)


def _digest(data: bytes | None) -> bytes | None:
    return None if data is None else hashlib.sha256(data).digest()


def _write_order(role: str) -> tuple[int, int]:
    """Children before parents, the root last: a first-use pin appears only once every other
    verified file is in place, and a crash part-way leaves files that are each re-verified
    against their parent before use (dct.md §2.7 "Cache writes")."""
    rank = {"root": 4, "timestamp": 3, "snapshot": 2, "targets": 1}.get(role, 0)
    return rank, -role.count("/")


def _peek_version(data: bytes) -> int:
    try:
        signed = loads_strict(data)["signed"]
        version = signed["version"]
    except (TrustpullError, KeyError, TypeError):
        raise RootRotationError("new root.json does not parse") from None
    if type(version) is not int:
        raise RootRotationError("new root.json has no integer version")
    return version


class NotaryClient:
    """Updates and verifies one repository's trust data; see the module docstring."""

    def __init__(
        self,
        settings: Settings,
        *,
        session_factory: Callable[[str, str], MetadataSource] | None = None,
        now: dt.datetime | None = None,
        warn: Callable[[str], None] | None = None,
        required_roles: frozenset[str] = frozenset(),
        credentials: CredentialSource | None = None,
        kept: Kept | None = None,
    ) -> None:
        self.settings = settings
        #: Where the registry's credentials for the trust server's token flow come from: the
        #: docker configuration by default; the proxy passes the client request's (issue 12 X49).
        self._credentials = credentials
        #: What a long-running process keeps between updates (trust.notary.pool): sessions and
        #: verified results; None (the CLI): one session per update, nothing kept.
        self._kept = kept
        #: Delegation roles a policy rule names as required signers (trust.policy). They are
        #: treated like `targets/releases`: on the lookup path, so any failure of one (expired,
        #: under threshold, not in the snapshot) refuses the update (exit 5) instead of being
        #: skipped with a warning, which would turn an attack into a mere "missing signer".
        self.required_roles = required_roles
        self.limits = settings.limits
        self._session_factory = session_factory
        self.now = now or dt.datetime.now(dt.UTC)
        self._warn_sink = warn or (lambda text: print(f"WARNING: {text}", file=sys.stderr))
        self.stats = UpdateStats()

    # ------------------------------------------------------------------ public

    def update(self, ref: Reference, *, commit: bool = True) -> TrustData:
        """Verify `ref`'s repository and return its trust data, or raise a typed error.

        The contract with the trust cache (attacks.md H08, issue 11 item 6): verification
        writes nothing, with one exception, a verified rotation of the already trusted, cached
        root, which is written at once (the old root is never wanted again, attacks.md B07a).
        Every other verified file the update fetched is on the result as `data.pending`:

        - `commit=True` (the default, for callers that accept whatever verifies) writes them
          before returning, under the same lock as the verification;
        - `commit=False` returns them unwritten; the caller calls `commit(data)` only once its
          own verdict (tag lookup, policy rules) accepts the result. A refused run then leaves
          the cache as it was, first use included: no root becomes the pin that nobody accepted.
        """
        check_gun_for_trust(ref)
        gun = ref.name
        server = trust_server_for(ref.domain, self.settings)
        cache = TrustCache(self.settings.trust_dir, gun)
        with cache.lock() as locked:
            run = _Run(self, ref, gun, server, cache, locked=locked)
            try:
                data = run.execute()
            finally:
                run.close()
                self.stats.requests += run.requests()
            self._keep(run, data)
            if commit:
                self._write(cache, data.pending, locked=locked, recheck=False)
                data = dataclasses.replace(data, pending=PendingWrites())
        return data

    def _kept_result(self, run: _Run) -> KeptResult | None:
        """The result kept from an earlier update of this repository, if its settings match."""
        if self._kept is None:
            return None
        kept = self._kept.verified.get(str(run.cache.repo_dir), run.server)
        if kept is None or (kept.pinning, kept.limits, kept.required_roles) != (
            self.settings.trust_pinning,
            self.limits,
            self.required_roles,
        ):
            return None
        return kept

    def _keep(self, run: _Run, data: TrustData) -> None:
        """Keep a full update's result for the next one (trust.notary.pool), but only one whose
        inputs are all in the cache as it read them: nothing to write (so no first use, no
        rotation, no new file), the timestamp fetched (not the cache's stand-in), the cache
        locked. Anything else forgets what was kept."""
        if self._kept is None or run.reused:
            return
        store = self._kept.verified
        key = (str(run.cache.repo_dir), run.server)
        if (
            data.pending
            or not run.locked
            or run.offline
            or run.network_failed is not None
            or run.timestamp is None
            or run.rotated
        ):
            store.forget(*key)
            return
        from trust.notary.pool import KeptResult
        from trust.notary.trusted_set import stable_until

        files = {role: run.cache.identity(role) for role in run.read}
        if files != run.identities:
            # A file changed (or went) since the update read it: the result rests on bytes the
            # cache no longer holds, so it must not stand for the cache as it is now.
            store.forget(*key)
            return
        pinning = self.settings.trust_pinning
        until = stable_until(data, pinning, self.now)
        kept = KeptResult(
            data, run.timestamp, files, self.now, until, pinning, self.limits, self.required_roles
        )
        store.put(*key, kept)

    def commit(self, data: TrustData) -> None:
        """Write the verified files of an `update(ref, commit=False)` to the trust cache.

        Each file is written atomically (a temporary file and a rename, 0600), children before
        parents and the root last, under the GUN's lock. Nothing is written when the cache
        changed since the update read it (another process verified and wrote it meanwhile):
        this run's files would otherwise replace newer ones. A file that cannot be written is a
        warning, never a failure (attacks.md H03, H05). Committing twice is harmless.
        """
        if not data.pending:
            return
        cache = TrustCache(self.settings.trust_dir, data.gun)
        with cache.lock() as locked:
            self._write(cache, data.pending, locked=locked, recheck=True)

    def _write(
        self, cache: TrustCache, pending: PendingWrites, *, locked: bool, recheck: bool
    ) -> None:
        if not pending:
            return
        if not locked:
            self.warn(
                f"the trust cache {cache.repo_dir} cannot be written (it could not be locked): "
                "trust on first use is not persisted and rollback protection is reduced"
            )
            return
        if recheck:
            for role, expected in pending.read.items():
                current = _digest(cache.read(role, _cache_cap(role, self.limits)))
                if current != expected and current != _digest(pending.files.get(role)):
                    self.warn(
                        f"the trust cache for {cache.gun} changed while this run verified it "
                        f"({role}): left as the other writer made it, nothing written"
                    )
                    return
        for role in sorted(pending.files, key=_write_order):
            _persist(self, cache, role, pending.files[role])

    def make_session(self, server: str, gun: str) -> MetadataSource:
        if self._session_factory is not None:
            return self._session_factory(server, gun)
        from trust.credentials import RegistryAuth, resolve_registry_auth
        from trust.notary.remote import remote_for

        settings = self.settings
        domain = gun.split("/", 1)[0]
        source = self._credentials
        if self._kept is None:
            if source is None:
                return remote_for(server, gun, settings)  # asked only if the server challenges
            return remote_for(server, gun, settings, credentials=lambda: source(domain))
        auth: RegistryAuth | None = (
            source(domain)
            if source is not None
            else resolve_registry_auth(domain, settings.docker_config, os.environ)
        )
        return self._kept.sessions.lease(
            server,
            gun,
            auth,
            lambda: remote_for(server, gun, settings, credentials=lambda: auth),
            _session_fit(server, settings),
        )

    def warn(self, text: str) -> None:
        self._warn_sink(text)


def _session_fit(server: str, settings: Settings) -> Hashable:
    """What a kept session was made from, beyond server, GUN and credentials: the TLS context
    `trust.http.tls` builds for the server's CA files as they are now (another object once a
    file changed), and the settings `remote_for` reads. A session made otherwise is not used."""
    from urllib.parse import urlsplit

    from trust.http.tls import tls_context

    try:
        context: object = tls_context(settings.docker_config, urlsplit(server).netloc)
    except (TrustpullError, ValueError):
        context = None  # the new session's construction raises it, as without a kept one
    return (
        context,
        settings.limits,
        settings.docker_config,
        settings.auth_realms,
        settings.config_file,
    )


def _cache_cap(role: str, limits: Limits) -> int:
    """How far a cached file is read (larger counts as absent, dct.md §5 "Size caps")."""
    if role == "root":
        return limits.root_max_bytes
    if role == "timestamp":
        return limits.timestamp_max_bytes
    return limits.metadata_max_bytes


def _persist(client: NotaryClient, cache: TrustCache, role: str, data: bytes) -> bool:
    """Write verified bytes; a failure is a warning, never a failed pull (H03, H05)."""
    try:
        cache.write(role, data)
    except (OSError, TrustpullError) as exc:
        detail = exc.strerror if isinstance(exc, OSError) else exc.message
        client.warn(
            f"could not write {role} to the trust cache ({detail}): the verified pull goes "
            "on, but trust on first use is not persisted and rollback protection is reduced"
        )
        return False
    return True


#: Delegations downloaded at the same time by one update (`_Run._fetch_ahead`).
FETCH_AHEAD_WORKERS = 4


class _Run:
    """One update of one GUN: the state of a single `NotaryClient.update` call."""

    def __init__(
        self,
        client: NotaryClient,
        ref: Reference,
        gun: str,
        server: str,
        cache: TrustCache,
        *,
        locked: bool,
    ) -> None:
        self.client = client
        self.limits = client.limits
        self.gun = gun
        self.server = server
        self.cache = cache
        self.locked = locked
        self.offline = client.settings.offline
        self.session: MetadataSource | None = None
        #: Verified files fetched by this run, written only on commit.
        self.pending: dict[str, bytes] = {}
        self.network_failed: TrustpullError | None = None
        #: The timestamp.json bytes fetched by this run, if any.
        self.timestamp: bytes | None = None
        #: Fetched ahead by the reuse check (`_reuse`): the workflow's own fetch takes it.
        self.prefetched: dict[str, bytes | TrustpullError] = {}
        #: True when this run returned a result kept from an earlier update.
        self.reused = False
        #: The cache's bytes per role as this run read them, and their digests (None: absent).
        self.cached: dict[str, bytes] = {}
        self.read: dict[str, bytes | None] = {}
        #: `TrustCache.identity` of each role's file as this run read it (taken before reading).
        self.identities: dict[str, FileIdentity | None] = {}
        self._trusted: TrustedSet | None = None
        #: Delegations being downloaded ahead of the walk: the meta they were asked for and
        #: the download (`_fetch_ahead`); each is taken, or dropped, by the walk.
        self._ahead: dict[str, tuple[FileMeta, Future[bytes]]] = {}

    @property
    def trusted(self) -> TrustedSet:
        assert self._trusted is not None, "the root is loaded first"
        return self._trusted

    @property
    def rotated(self) -> bool:
        """True when this run moved the trusted root (its inputs were not the cache alone)."""
        return self._trusted is not None and bool(self._trusted.rotated_roots)

    # ------------------------------------------------------------------ I/O helpers

    def requests(self) -> int:
        return self.session.request_count if self.session is not None else 0

    def close(self) -> None:
        if self.session is not None:
            self.session.close()

    def _session(self) -> MetadataSource:
        if self.offline:
            raise NetworkError(
                f"offline: the trust data for {self.gun} needed from the server is not in the cache"
            )
        if self.network_failed is not None:
            raise self.network_failed
        if self.session is None:
            self.session = self.client.make_session(self.server, self.gun)
        return self.session

    def fetch(self, name: str, max_bytes: int) -> bytes:
        early = self.prefetched.pop(name, None)
        if isinstance(early, TrustpullError):
            raise early.fresh()
        if early is not None:
            return early
        data = self._session().get_metadata(name, max_bytes)
        self.client.stats.downloaded.append(name)
        return data

    def read_cache(self, role: str) -> bytes | None:
        self.identities[role] = self.cache.identity(role)
        data = self.cache.read(role, _cache_cap(role, self.limits))
        self.read[role] = _digest(data)
        if data is not None:
            self.cached[role] = data
        return data

    # ------------------------------------------------------------------ workflow

    def execute(self) -> TrustData:
        reused = self._reuse()
        if reused is not None:
            return reused
        self._load_root()
        for role in ("timestamp", "snapshot", "targets"):
            self.read_cache(role)
        rotated_for_signature = False
        for _attempt in range(2 + self.limits.max_root_rotations):
            try:
                self._update_timestamp()
                self._update_snapshot()
            except (SignatureError, ThresholdError) as error:
                # Keys rotated: fetch root.json once and retry under the new root (D03, D11).
                if rotated_for_signature or self.offline or self.network_failed is not None:
                    raise
                rotated_for_signature = True
                if not self._rotate_from_plain_root(error):
                    raise
                continue
            snapshot = self.trusted.snapshot
            assert snapshot is not None
            root_meta = snapshot.meta["root"]
            if self.trusted.root_matches(root_meta):
                break
            self._rotate_to_snapshot_root(root_meta)
        else:
            raise RootRotationError("root keeps changing during the update")
        self._update_targets_tree()
        self.trusted.check_root_expiry()
        data = self.trusted.result(from_cache_only=not self.pending and self.session is None)
        for warning in data.warnings:
            self.client.warn(warning)
        pending = PendingWrites(
            files=MappingProxyType(dict(self.pending)), read=MappingProxyType(dict(self.read))
        )
        return dataclasses.replace(data, pending=pending)

    def _reuse(self) -> TrustData | None:
        """The kept result of an earlier update, when this update would verify exactly the
        same inputs at a moment with the same outcome (trust.notary.pool): the timestamp is
        fetched as always and must be byte-for-byte the kept one. Otherwise None, and the full
        workflow runs (with the timestamp, or the failure to fetch it, already in hand)."""
        kept = self.client._kept_result(self)
        if kept is None or self.offline or not self.locked:
            return None
        now = self.client.now
        if not kept.since <= now < kept.until:
            return None
        if any(self.cache.identity(role) != ident for role, ident in kept.files.items()):
            return None
        try:
            data = self._session().get_metadata("timestamp", self.limits.timestamp_max_bytes)
        except TrustpullError as error:
            self.prefetched["timestamp"] = error
            return None
        self.client.stats.downloaded.append("timestamp")
        if data != kept.timestamp:
            self.prefetched["timestamp"] = data
            return None
        self.reused = True
        for warning in kept.data.warnings:
            self.client.warn(warning)
        return kept.data

    # ------------------------------------------------------------------ root

    def _load_root(self) -> None:
        cached = self.read_cache("root")
        settings = self.client.settings
        if cached is not None:
            try:
                self._trusted = TrustedSet(
                    self.gun,
                    cached,
                    now=self.client.now,
                    pinning=settings.trust_pinning,
                    limits=self.limits,
                )
            except TrustpullError as error:
                # A new error of the same kind (the caught one stays as raised, issue 10).
                raise error.derive(
                    hint=f"the cached root for {self.gun} is the trust anchor and cannot be "
                    f"used; to forget it, delete {self.cache.metadata_dir}"
                ) from error
            if self.trusted.root_expired():
                data = self._fetch_root_plain()
                self._rotate(data)
            return
        if self.offline:
            raise NetworkError(f"offline: no cached trust data for {self.gun}")
        data = self._fetch_root_plain(first_use=True)
        self._trusted = TrustedSet(
            self.gun,
            data,
            now=self.client.now,
            first_use=True,
            pinning=settings.trust_pinning,
            limits=self.limits,
        )
        self.pending["root"] = data

    def _fetch_root_plain(self, *, first_use: bool = False) -> bytes:
        from trust.notary.remote import NotFoundError

        try:
            return self.fetch("root", self.limits.root_max_bytes)
        except NotFoundError as error:
            if first_use:
                host = self.server.split("://", 1)[-1].split("/", 1)[0]
                raise NoTrustDataError(
                    f"remote trust data does not exist for {self.gun}: {host} does not have "
                    f"trust data for {self.gun}",
                    hint=error.hint,
                ) from None
            raise

    def _rotate(self, data: bytes) -> None:
        """Move the trusted root to `data`: directly if cross-signed, else walk `<v>.root`."""
        trusted = self.trusted
        current = trusted.root
        if data == trusted.root_bytes:
            return
        try:
            trusted.update_root(data)
        except RootRotationError:
            newest = _peek_version(data)
            steps = newest - current.version
            if steps < 1 or steps > self.limits.max_root_rotations:
                raise RootRotationError(
                    f"cannot walk from root version {current.version} to {newest} "
                    f"(at most {self.limits.max_root_rotations} steps)"
                ) from None
            for version in range(current.version + 1, newest):
                step = self.fetch(f"{version}.root", self.limits.root_max_bytes)
                trusted.update_root(step, exact_version=version)
            trusted.update_root(data, exact_version=newest)
        # A verified rotation of the cached root is written at once, even if the final root
        # then turns out expired (attacks.md B07a): the old root will never be wanted again.
        # (The first-use root is not: it rotated before anything trusted it, so it stays
        # pending with the rest, as the newest root.)
        if "root" in self.pending:
            self.pending["root"] = data
            return
        if not self.locked:
            self.client.warn(
                f"could not write the rotated root to the trust cache {self.cache.repo_dir} "
                "(it could not be locked): rollback protection is reduced"
            )
        elif _persist(self.client, self.cache, "root", data):
            self.read["root"] = _digest(data)
        # Roles whose keys changed no longer verify under the new root: their floors go, as
        # the spec's fast-forward recovery wants (B10); nothing else needs deleting.

    def _rotate_from_plain_root(self, error: TrustpullError) -> bool:
        current = self.trusted.root
        data = self._fetch_root_plain()
        if data == self.trusted.root_bytes or _peek_version(data) <= current.version:
            return False
        self._rotate(data)
        return True

    def _rotate_to_snapshot_root(self, meta: FileMeta) -> None:
        current = self.trusted.root
        data = self.fetch(f"root.{meta.hex()}", min(meta.length, self.limits.root_max_bytes))
        check_meta("root", data, meta)
        if _peek_version(data) <= current.version:
            # attacks.md C05: the snapshot binds a root that is not newer than ours.
            raise HashMismatchError(
                "sha256 checksum for root did not match: the snapshot names a root that is "
                "not newer than the trusted one"
            )
        self._rotate(data)

    # ------------------------------------------------------------------ timestamp, snapshot

    def _update_timestamp(self) -> None:
        try:
            data = self.fetch("timestamp", self.limits.timestamp_max_bytes)
        except TrustpullError as error:
            if not _is_network_failure(error):
                raise
            self._use_cached_timestamp(error)
            return
        self.timestamp = data
        previous = self.cached.get("timestamp")
        if self.trusted.update_timestamp(data, previous=previous) and data != previous:
            self.pending["timestamp"] = data
        else:
            self.pending.pop("timestamp", None)

    def _use_cached_timestamp(self, error: TrustpullError) -> None:
        cached = self.cached.get("timestamp")
        if cached is None:
            raise error
        try:
            self.trusted.update_timestamp(cached, previous=cached)
        except ExpiredError:
            raise NetworkError(
                f"{error.message}; the cached trust data for {self.gun} has expired, so it "
                "cannot stand in for the server"
            ) from None
        self.pending.pop("timestamp", None)
        if not self.offline:
            self.network_failed = error
            self.client.warn(
                f"trust server unreachable ({error.message}): using cached trust data that may "
                "not be the latest"
            )

    def _cached_or_remote(self, role: str, meta: FileMeta) -> tuple[bytes, bool]:
        """Cached bytes if they match the parent's hashes, else a download by checksum name."""
        if role not in self.read:
            # Delegations are read when reached, up to the absolute ceiling rather than the new
            # meta's length: the cached copy is also the rollback floor, and a newer (longer)
            # cached delegation must not be treated as absent when the snapshot points at an
            # older, shorter one (attacks.md B04; notary loses the floor this way, dct.md
            # §6.12). Reuse still needs a match.
            self.read_cache(role)
        if self._matches_cache(role, meta):
            return self.cached[role], False
        if meta.length > self.limits.metadata_max_bytes:
            raise LengthError(
                f"{role}: the parent allows {meta.length} bytes, more than the configured "
                f"limit {self.limits.metadata_max_bytes}"
            )
        ahead = self._ahead.pop(role, None)
        if ahead is not None and ahead[0] == meta:
            return self._take(f"{role}.{meta.hex()}", ahead[1]), True
        return self.fetch(f"{role}.{meta.hex()}", meta.length), True

    def _matches_cache(self, role: str, meta: FileMeta) -> bool:
        cached = self.cached.get(role)
        if cached is None or len(cached) > meta.length:
            return False
        try:
            check_meta(role, cached, meta)
        except (HashMismatchError, LengthError):
            return False
        return True

    def _fetch_ahead(self, names: list[str]) -> ThreadPoolExecutor | None:
        """Start downloading, concurrently on this run's one session (one connection pool),
        the delegations of the verified `targets` that the walk will have to fetch: listed in
        the verified snapshot, within the size limit, and not in the cache as the snapshot pins
        them. Only when there are several: then they cost one round trip, not one each.

        Only the fetching moves. Each role is still verified when the walk reaches it, in the
        walk's order, under the same rules (`_load_delegation`); a download the walk does not
        take (a skipped subtree, a failure before it) is dropped unread. At most
        `max_delegations` roles, so a snapshot listing more makes no more requests than the
        walk would before it refuses."""
        if self.offline or self.network_failed is not None:
            return None
        wanted: list[tuple[str, FileMeta]] = []
        for name in dict.fromkeys(names):
            if len(wanted) >= self.limits.max_delegations:
                break
            meta = self.trusted.meta_for(name)
            if meta is None or meta.length > self.limits.metadata_max_bytes:
                continue  # the walk skips it or refuses it, as it would without this
            if name not in self.read:
                self.read_cache(name)
            if not self._matches_cache(name, meta):
                wanted.append((name, meta))
        if len(wanted) < 2:
            return None
        session = self._session()
        pool = ThreadPoolExecutor(
            max_workers=min(len(wanted), FETCH_AHEAD_WORKERS),
            thread_name_prefix="trustpull-delegation",
        )
        for name, meta in wanted:
            download = pool.submit(session.get_metadata, f"{name}.{meta.hex()}", meta.length)
            self._ahead[name] = (meta, download)
        return pool

    def _take(self, name: str, download: Future[bytes]) -> bytes:
        """The bytes of a download started by `_fetch_ahead`, or its failure as a new error
        (the one raised in the downloading thread is never raised again)."""
        try:
            data = download.result()
        except TrustpullError as error:
            raise error.fresh() from error.__cause__
        self.client.stats.downloaded.append(name)
        return data

    def _update_snapshot(self) -> None:
        meta = self.trusted.snapshot_meta()
        data, downloaded = self._cached_or_remote("snapshot", meta)
        self.trusted.update_snapshot(data, previous=self.cached.get("snapshot"))
        if downloaded:
            self.pending["snapshot"] = data

    # ------------------------------------------------------------------ targets tree

    def _update_targets_tree(self) -> None:
        trusted = self.trusted
        meta = trusted.meta_for("targets")
        assert meta is not None  # parse_snapshot requires it
        data, downloaded = self._cached_or_remote("targets", meta)
        targets = trusted.update_targets(data, previous=self.cached.get("targets"))
        if downloaded:
            self.pending["targets"] = data
        # Depth-first pre-order over every delegation, as notary downloads them (dct.md §2.7).
        work = [d.name for d in targets.delegations]
        visited: set[str] = {"targets"}
        ahead = self._fetch_ahead(work)
        try:
            while work:
                name = work.pop(0)
                if name in visited:
                    continue
                visited.add(name)
                if len(visited) > self.limits.max_delegations + 1:
                    raise DelegationError(
                        f"more than {self.limits.max_delegations} delegated roles in {self.gun}"
                    )
                work[0:0] = self._load_delegation(name)
        finally:
            if ahead is not None:
                # Every download has ended before the session is closed (bounded by its
                # deadlines); what the walk did not take is dropped.
                ahead.shutdown(wait=True, cancel_futures=True)
                self._ahead.clear()

    def _load_delegation(self, name: str) -> list[str]:
        # On the lookup path any failure refuses the update (attacks.md C07, E06); elsewhere an
        # expired or under-threshold role is skipped, as notary does (the trusted set decides).
        required = name == RELEASES_ROLE or name in self.client.required_roles
        meta = self.trusted.delegation_meta(name, required=required)
        if meta is None:
            return []
        data, downloaded = self._cached_or_remote(name, meta)
        targets = self.trusted.update_delegation(
            name, data, previous=self.cached.get(name), required=required
        )
        if targets is None:
            return []
        if downloaded:
            self.pending[name] = data
        return [d.name for d in targets.delegations]
