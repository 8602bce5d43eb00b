"""The Notary client: the I/O around the pure `TrustedSet` (fetch, cache, retry, rotate).

One `update()` call runs the whole workflow for one GUN under the cache lock:

1. root: the cached root is the pin; with no cache, trust on first use (or a pin); an expired
   cached root is replaced by a newer one that it signs;
2. timestamp, always fetched (cap `limits.timestamp_max_bytes`); on a network-type failure
   only, an unexpired verified cached timestamp is used with a loud warning (attacks.md B13);
3. snapshot, targets and every delegation the snapshot lists, each reused from the cache when
   its bytes match the parent's hashes, else fetched by consistent name with the parent's length
   as cap;
4. root rotation when the snapshot names another root, or once when the timestamp or snapshot
   fails its signature check under the trusted root (attacks.md D03);
5. only once everything verified, the downloaded files are written to the cache (a refused run
   writes nothing; a verified root rotation is the one exception, written at once).
"""

from __future__ import annotations

import datetime as dt
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from trust.errors import (
    AuthError,
    DelegationError,
    ExpiredError,
    HashMismatchError,
    InputError,
    LengthError,
    NetworkError,
    NoTrustDataError,
    RollbackError,
    RootRotationError,
    SignatureError,
    ThresholdError,
    TrustpullError,
)
from trust.notary.cache import TrustCache
from trust.notary.cjson import loads_strict
from trust.notary.metadata import FileMeta
from trust.notary.trusted_set import RELEASES_ROLE, TrustData, TrustedSet, check_meta
from trust.reference import Reference
from trust.settings import Settings

__all__ = ["MetadataSource", "NotaryClient", "UpdateStats", "trust_server_for"]

OFFICIAL_TRUST_SERVER = "https://notary.docker.io"


def trust_server_for(domain: str, settings: Settings) -> str:
    """dct.md §1.4: the env override, else the configured map, else docker's default."""
    if settings.trust_server_override:
        return settings.trust_server_override
    configured = settings.trust_servers.get(domain)
    if configured:
        return configured
    if domain == "docker.io":
        return OFFICIAL_TRUST_SERVER
    return f"https://{domain}"


def check_gun_for_trust(ref: Reference) -> None:
    """Refuse names whose cache path could collide with another repository's (attacks.md H07)."""
    if ref.domain != ref.domain.lower():
        raise InputError(
            f"registry host {ref.domain!r} has upper-case letters: with content trust on, the "
            "trust cache path would depend on the file system's case rules; write it in lower case"
        )
    if "metadata" in ref.path.split("/"):
        raise InputError(
            f"repository {ref.name!r} has a path component 'metadata', which collides with the "
            "trust cache layout: refused with content trust on"
        )


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
    ) -> None:
        self.settings = settings
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

    def update(self, ref: Reference) -> TrustData:
        """Verify `ref`'s repository and return its trust data, or raise a typed error."""
        check_gun_for_trust(ref)
        gun = ref.name
        server = trust_server_for(ref.domain, self.settings)
        cache = TrustCache(self.settings.trust_dir, gun)
        with cache.lock():
            run = _Run(self, ref, gun, server, cache)
            try:
                return run.execute()
            finally:
                run.close()
                self.stats.requests += run.requests()

    def make_session(self, server: str, gun: str) -> MetadataSource:
        if self._session_factory is not None:
            return self._session_factory(server, gun)
        from trust.credentials import resolve_registry_auth
        from trust.http import TokenStore
        from trust.notary.remote import NotaryRemote

        settings = self.settings
        domain = gun.split("/", 1)[0]

        def credentials() -> object:
            return resolve_registry_auth(domain, settings.docker_config, os.environ)

        return NotaryRemote(
            server,
            gun,
            limits=settings.limits,
            docker_config=settings.docker_config,
            credentials=credentials,  # type: ignore[arg-type]
            realms=settings.auth_realms,
            token_store=TokenStore(settings.trust_dir / "tokens"),
            config_hint=f"[auth] realms in {settings.config_file or 'the config file'}",
        )

    def warn(self, text: str) -> None:
        self._warn_sink(text)


class _Run:
    """One update of one GUN: the state of a single `NotaryClient.update` call."""

    def __init__(
        self, client: NotaryClient, ref: Reference, gun: str, server: str, cache: TrustCache
    ) -> None:
        self.client = client
        self.limits = client.limits
        self.gun = gun
        self.server = server
        self.cache = cache
        self.offline = client.settings.offline
        self.session: MetadataSource | None = None
        self.pending: dict[str, bytes] = {}
        self.network_failed: TrustpullError | None = None
        self.cached: dict[str, bytes] = {}
        self.trusted = TrustedSet(
            gun,
            now=client.now,
            pinning=client.settings.trust_pinning,
            limits=client.limits,
            cached=self.cached,
        )

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
        data = self._session().get_metadata(name, max_bytes)
        self.client.stats.downloaded.append(name)
        return data

    def read_cache(self, role: str, max_bytes: int) -> bytes | None:
        data = self.cache.read(role, max_bytes)
        if data is not None:
            self.cached[role] = data
        return data

    def persist(self, role: str, data: bytes) -> None:
        """Write verified bytes; a failure is a warning, never a failed pull (H03, H05)."""
        try:
            self.cache.write(role, data)
        except (OSError, TrustpullError) as exc:
            detail = exc.strerror if isinstance(exc, OSError) else exc.message
            self.client.warn(
                f"could not write {role} to the trust cache ({detail}): the verified pull goes "
                "on, but trust on first use is not persisted and rollback protection is reduced"
            )

    # ------------------------------------------------------------------ workflow

    def execute(self) -> TrustData:
        self._load_root()
        for role in ("timestamp", "snapshot", "targets"):
            cap = (
                self.limits.timestamp_max_bytes
                if role == "timestamp"
                else self.limits.metadata_max_bytes
            )
            self.read_cache(role, cap)
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
        for role, data in self.pending.items():
            self.persist(role, data)
        for warning in self.trusted.warnings:
            self.client.warn(warning)
        return self.trusted.result(from_cache_only=not self.pending and self.session is None)

    # ------------------------------------------------------------------ root

    def _load_root(self) -> None:
        cached = self.read_cache("root", self.limits.root_max_bytes)
        if cached is not None:
            try:
                self.trusted.load_cached_root(cached)
            except TrustpullError as error:
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
        self.trusted.trust_first_root(data)
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
        current = self.trusted.root
        assert current is not None
        if data == self.trusted.root_bytes:
            return
        try:
            self.trusted.rotate_root(data)
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
                self.trusted.rotate_root(step, exact_version=version)
            self.trusted.rotate_root(data, exact_version=newest)
        # A verified rotation is written at once, even if the final root then turns out
        # expired (attacks.md B07a): the old root will never be wanted again.
        self.pending.pop("root", None)
        self.persist("root", data)
        # Roles whose keys changed no longer verify under the new root: their floors go, as
        # the spec's fast-forward recovery wants (B10); nothing else needs deleting.

    def _rotate_from_plain_root(self, error: TrustpullError) -> bool:
        current = self.trusted.root
        assert current is not None
        data = self._fetch_root_plain()
        if data == self.trusted.root_bytes or _peek_version(data) <= current.version:
            return False
        self._rotate(data)
        return True

    def _rotate_to_snapshot_root(self, meta: FileMeta) -> None:
        current = self.trusted.root
        assert current is not None
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
        if self.trusted.update_timestamp(data):
            self.pending["timestamp"] = data
        else:
            self.pending.pop("timestamp", None)

    def _use_cached_timestamp(self, error: TrustpullError) -> None:
        cached = self.cached.get("timestamp")
        if cached is None:
            raise error
        try:
            self.trusted.update_timestamp(cached)
        except ExpiredError:
            raise NetworkError(
                f"{error.message}; the cached trust data for {self.gun} has expired, so it "
                "cannot stand in for the server"
            ) from None
        if not self.offline:
            self.network_failed = error
            self.client.warn(
                f"trust server unreachable ({error.message}): using cached trust data that may "
                "not be the latest"
            )

    def _cached_or_remote(self, role: str, meta: FileMeta) -> tuple[bytes, bool]:
        """Cached bytes if they match the parent's hashes, else a download by checksum name."""
        cached = self.cached.get(role)
        if cached is None and role not in ("timestamp", "snapshot", "targets", "root"):
            # Read up to the absolute ceiling, not the new meta's length: the cached copy is
            # also the rollback floor, and a newer (longer) cached delegation must not be
            # treated as absent when the snapshot points at an older, shorter one (attacks.md
            # B04; notary loses the floor this way, dct.md §6.12). Reuse still needs a match.
            cached = self.read_cache(role, self.limits.metadata_max_bytes)
        if cached is not None and len(cached) <= meta.length:
            try:
                check_meta(role, cached, meta)
                return cached, False
            except (HashMismatchError, LengthError):
                pass
        if meta.length > self.limits.metadata_max_bytes:
            raise LengthError(
                f"{role}: the parent allows {meta.length} bytes, more than the configured "
                f"limit {self.limits.metadata_max_bytes}"
            )
        return self.fetch(f"{role}.{meta.hex()}", meta.length), True

    def _update_snapshot(self) -> None:
        meta = self.trusted.snapshot_meta()
        data, downloaded = self._cached_or_remote("snapshot", meta)
        self.trusted.update_snapshot(data)
        if downloaded:
            self.pending["snapshot"] = data

    # ------------------------------------------------------------------ targets tree

    def _update_targets_tree(self) -> None:
        snapshot = self.trusted.snapshot
        assert snapshot is not None
        meta = snapshot.meta["targets"]
        data, downloaded = self._cached_or_remote("targets", meta)
        targets = self.trusted.update_targets(data)
        if downloaded:
            self.pending["targets"] = data
        previous_roles = self.trusted.previous_snapshot_roles()
        # Depth-first pre-order over every delegation, as notary downloads them (dct.md §2.7).
        work = [d.name for d in targets.delegations]
        visited: set[str] = {"targets"}
        while work:
            name = work.pop(0)
            if name in visited:
                continue
            visited.add(name)
            if len(visited) > self.limits.max_delegations + 1:
                raise DelegationError(
                    f"more than {self.limits.max_delegations} delegated roles in {self.gun}"
                )
            children = self._load_delegation(name, snapshot.meta.get(name), previous_roles)
            work[0:0] = children

    def _load_delegation(
        self, name: str, meta: FileMeta | None, previous_roles: set[str]
    ) -> list[str]:
        on_lookup_path = name == RELEASES_ROLE or name in self.client.required_roles
        if meta is None:
            if name in previous_roles:
                # attacks.md C08: the snapshot dropped a role that is still delegated.
                raise RollbackError(f"{name} was removed from the snapshot but is still delegated")
            if on_lookup_path:
                # attacks.md C07: fail closed (notary skips it quietly and falls back).
                raise DelegationError(f"{name} is delegated but not listed in the snapshot")
            self.trusted.warnings.append(f"{name} is delegated but not in the snapshot: skipped")
            return []
        try:
            data, downloaded = self._cached_or_remote(name, meta)
            targets = self.trusted.update_delegation(name, data)
        except (ExpiredError, ThresholdError) as error:
            if on_lookup_path:
                # Fail closed on the lookup path (attacks.md E06), stricter than notary.
                raise
            self.trusted.warnings.append(f"Error getting {name}: {error.message} (role skipped)")
            return []
        if downloaded:
            self.pending[name] = data
        return [d.name for d in targets.delegations]
