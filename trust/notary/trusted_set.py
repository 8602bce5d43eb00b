"""The pure Notary trusted set: bytes and a clock in, verified metadata or a typed error out.

This is the verification half of the update workflow, after python-tuf's `TrustedMetadataSet`:
it does no I/O. `trust.notary.client` fetches files and feeds them in, in order:

    root (cached pin, first use, or rotation) → timestamp → snapshot → targets → delegations

Each `update_*` call checks, in this order: length and hashes against the parent's meta (over
the raw bytes, before anything is parsed), signatures against the keys and threshold the trusted
parent gives that role, the typed schema, the version against the rollback floor, then expiry
against the one reference time fixed when the set was made (attacks.md B11).

Rollback floors come from the cached copy of each role: if it still verifies under the *current*
keys (expiry allowed), its version is the floor. So the last trusted version stays the floor
after its file expired (stricter than notary, dct.md §6.12), and a key rotation of a role drops
its floor, which is the TUF spec's fast-forward recovery (attacks.md B10, D11).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field

from trust.errors import (
    DelegationError,
    ExpiredError,
    HashMismatchError,
    LengthError,
    MalformedError,
    RollbackError,
    RootRotationError,
    ThresholdError,
    TrustpullError,
    VerificationError,
)
from trust.notary.keys import PublicKey
from trust.notary.metadata import (
    Delegation,
    Envelope,
    FileMeta,
    RoleKeys,
    Root,
    Snapshot,
    Targets,
    Timestamp,
    parse_envelope,
    parse_root,
    parse_snapshot,
    parse_targets,
    parse_timestamp,
)
from trust.notary.signatures import verify_threshold
from trust.notary.x509root import RootCheck, validate_root
from trust.settings import Limits, TrustPinning

__all__ = ["LOOKUP_ROLES", "LoadedRole", "TrustData", "TrustedSet", "check_meta"]

#: docker's tag lookup reads exactly these roles, in this order (dct.md §1.6).
RELEASES_ROLE = "targets/releases"
LOOKUP_ROLES = (RELEASES_ROLE, "targets")


def check_meta(role: str, data: bytes, meta: FileMeta) -> None:
    """Length cap and every present hash over the raw bytes (dct.md §2.7 CheckHashes)."""
    if len(data) > meta.length:
        raise LengthError(
            f"{role}: {len(data)} bytes is longer than the {meta.length} its parent allows"
        )
    if not meta.hashes:
        raise HashMismatchError(f"no checksums for supported algorithms were provided for {role}")
    for algorithm, expected in meta.hashes.items():
        actual = hashlib.new(algorithm, data).digest()
        if not hmac.compare_digest(actual, expected):
            raise HashMismatchError(
                f"{algorithm} checksum for {role} did not match: expected {expected.hex()}"
            )


def _format_time(moment: dt.datetime) -> str:
    return moment.strftime("%a %b %d %H:%M:%S UTC %Y")


@dataclass(frozen=True)
class LoadedRole:
    """A verified targets role and where it sits in the delegation tree."""

    targets: Targets
    #: The role's effective paths: its own, restricted to its parent's (attacks.md E04).
    paths: tuple[str, ...]
    parent: str | None
    depth: int

    def allows(self, target_name: str) -> bool:
        return any(target_name.startswith(prefix) for prefix in self.paths)


@dataclass(frozen=True)
class TrustData:
    """The verified state of one repository: what resolution and inspection read."""

    gun: str
    root: Root
    root_bytes: bytes
    root_check: RootCheck
    timestamp: Timestamp
    snapshot: Snapshot
    roles: Mapping[str, LoadedRole]
    warnings: tuple[str, ...] = ()
    first_use: bool = False
    from_cache_only: bool = False

    def children(self, role: str) -> list[str]:
        """Loaded direct delegations of `role`, in file order."""
        loaded = self.roles.get(role)
        if loaded is None:
            return []
        return [d.name for d in loaded.targets.delegations if d.name in self.roles]


@dataclass
class _Floor:
    version: int
    raw: bytes


@dataclass
class TrustedSet:
    """Verified metadata for one GUN, built up one role at a time. Never does I/O."""

    gun: str
    now: dt.datetime
    pinning: TrustPinning = field(default_factory=TrustPinning)
    limits: Limits = field(default_factory=Limits)
    #: The cache's bytes per role (`root`, `timestamp`, `snapshot`, `targets`, `targets/x`).
    cached: Mapping[str, bytes] = field(default_factory=dict)

    root: Root | None = None
    root_bytes: bytes = b""
    root_check: RootCheck | None = None
    timestamp: Timestamp | None = None
    timestamp_bytes: bytes = b""
    snapshot: Snapshot | None = None
    snapshot_bytes: bytes = b""
    roles: dict[str, LoadedRole] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    first_use: bool = False
    rotated_roots: list[bytes] = field(default_factory=list)

    # ------------------------------------------------------------------ helpers

    def _verified_envelope(
        self,
        role: str,
        data: bytes,
        keys: Mapping[str, PublicKey],
        role_keys: RoleKeys,
        meta: FileMeta | None,
    ) -> Envelope:
        if meta is not None:
            check_meta(role, data, meta)
        envelope = parse_envelope(data, role)
        verify_threshold(
            role, envelope.signed, envelope.signatures, keys, role_keys.keyids, role_keys.threshold
        )
        return envelope

    def _check_expiry(self, role: str, expires: dt.datetime) -> None:
        if expires <= self.now:
            raise ExpiredError(
                f"remote repository {self.gun} out-of-date: {role} expired at "
                f"{_format_time(expires)}"
            )

    def _require_root(self) -> Root:
        if self.root is None:
            raise VerificationError("no trusted root loaded")  # a client bug, not an attack
        return self.root

    def _floor(
        self,
        role: str,
        keys: Mapping[str, PublicKey],
        role_keys: RoleKeys,
        candidate: bytes | None = None,
    ) -> _Floor | None:
        """The cached copy's version, if it verifies under the current keys (expiry allowed).

        When the cached bytes are the `candidate` being verified they cannot be a rollback of
        themselves, so the second verification is skipped (it doubled a warm run's work)."""
        data = self.cached.get(role)
        if data is None or data == candidate:
            return None
        try:
            envelope = self._verified_envelope(role, data, keys, role_keys, None)
            signed = envelope.signed
            version = signed.get("version") if isinstance(signed, dict) else None
        except TrustpullError:
            return None
        if type(version) is not int or version < 1:
            return None
        return _Floor(version, data)

    def _check_version(self, role: str, version: int, floor: _Floor | None) -> None:
        if floor is not None and version < floor.version:
            raise RollbackError(
                "potential malicious behavior - trust data version is lower than expected for "
                f"remote repository {self.gun}: {role} version {version} is lower than current "
                f"version {floor.version}"
            )

    # ------------------------------------------------------------------ root

    def _validate_root(
        self, data: bytes, previous: Root | None, *, tofu_allowed: bool
    ) -> tuple[Root, RootCheck]:
        envelope = parse_envelope(data, "root")
        root = parse_root(envelope)
        prev = None
        if previous is not None:
            prev_role = previous.roles["root"]
            prev = (previous.keys, prev_role.keyids, prev_role.threshold)
        role = root.roles["root"]
        check = validate_root(
            gun=self.gun,
            keys=root.keys,
            root_keyids=role.keyids,
            threshold=role.threshold,
            signed=envelope.signed,
            signatures=envelope.signatures,
            now=self.now,
            previous=prev,
            pinning=self.pinning,
            tofu_allowed=tofu_allowed,
        )
        return root, check

    def load_cached_root(self, data: bytes) -> None:
        """The cached root is the pin: it must verify by itself (and satisfy any configured pin,
        attacks.md D09a) but its metadata may have expired (then the client fetches a newer one
        that it must sign). A failure here is final: the cache is never silently re-trusted."""
        root, check = self._validate_root(data, None, tofu_allowed=True)
        self.root, self.root_bytes, self.root_check = root, data, check
        self.warnings.extend(check.warnings)

    def trust_first_root(self, data: bytes) -> None:
        """Trust on first use, or a pinned first use (dct.md §2.9 step 5)."""
        root, check = self._validate_root(data, None, tofu_allowed=not self.pinning.disable_tofu)
        self._check_expiry("root", root.expires)
        self.root, self.root_bytes, self.root_check = root, data, check
        self.first_use = True
        self.warnings.extend(check.warnings)

    def rotate_root(self, data: bytes, *, exact_version: int | None = None) -> None:
        """Accept root N+k if signed by a threshold of the trusted root's keys and of its own.

        Expiry of the new root's *metadata* is not checked here: intermediate roots may be
        expired; the client checks the final one with `check_root_expiry` (attacks.md B07).
        """
        current = self._require_root()
        root, check = self._validate_root(data, current, tofu_allowed=True)
        if exact_version is not None and root.version != exact_version:
            raise RootRotationError(
                f"root at version URL {exact_version} holds version {root.version} (attacks.md D03)"
            )
        if root.version <= current.version:
            raise RollbackError(
                f"new root version {root.version} is not higher than the trusted {current.version}"
            )
        self.root, self.root_bytes, self.root_check = root, data, check
        self.rotated_roots.append(data)
        self.warnings.extend(check.warnings)

    def root_expired(self) -> bool:
        return self._require_root().expires <= self.now

    def check_root_expiry(self) -> None:
        self._check_expiry("root", self._require_root().expires)

    def root_matches(self, meta: FileMeta) -> bool:
        """Whether the trusted root's bytes are the ones the snapshot names."""
        try:
            check_meta("root", self.root_bytes, meta)
        except VerificationError:
            return False
        return True

    # ------------------------------------------------------------------ timestamp, snapshot

    def cached_timestamp_floor(self) -> int | None:
        root = self._require_root()
        floor = self._floor("timestamp", root.keys, root.roles["timestamp"])
        return None if floor is None else floor.version

    def update_timestamp(self, data: bytes) -> bool:
        """Verify a timestamp; returns False when the cached copy was kept instead (B02)."""
        root = self._require_root()
        envelope = self._verified_envelope(
            "timestamp", data, root.keys, root.roles["timestamp"], None
        )
        timestamp = parse_timestamp(envelope)
        floor = self._floor("timestamp", root.keys, root.roles["timestamp"], data)
        self._check_version("timestamp", timestamp.version, floor)
        kept = False
        if floor is not None and timestamp.version == floor.version and data != floor.raw:
            # attacks.md B02: the same version with other content. Notary would take it (>=);
            # the TUF rule is to keep the trusted copy and never follow the new pointer.
            self.warnings.append(
                f"the trust server sent timestamp version {timestamp.version} with content other "
                "than the cached copy of that version: keeping the cached copy"
            )
            data = floor.raw
            timestamp = parse_timestamp(parse_envelope(data, "timestamp"))
            kept = True
        self._check_expiry("timestamp", timestamp.expires)
        self.timestamp, self.timestamp_bytes = timestamp, data
        return not kept

    def snapshot_meta(self) -> FileMeta:
        if self.timestamp is None:
            raise VerificationError("snapshot requested before the timestamp")
        return self.timestamp.snapshot

    def update_snapshot(self, data: bytes) -> None:
        root = self._require_root()
        keys = root.roles["snapshot"]
        envelope = self._verified_envelope("snapshot", data, root.keys, keys, self.snapshot_meta())
        snapshot = parse_snapshot(envelope)
        self._check_version(
            "snapshot", snapshot.version, self._floor("snapshot", root.keys, keys, data)
        )
        self._check_expiry("snapshot", snapshot.expires)
        self.snapshot, self.snapshot_bytes = snapshot, data

    def previous_snapshot_roles(self) -> set[str]:
        """Roles the last trusted snapshot listed (only if it verifies under today's keys)."""
        root = self._require_root()
        if self.snapshot is not None and self.cached.get("snapshot") == self.snapshot_bytes:
            return set(self.snapshot.meta)
        floor = self._floor("snapshot", root.keys, root.roles["snapshot"])
        if floor is None:
            return set()
        try:
            return set(parse_snapshot(parse_envelope(floor.raw, "snapshot")).meta)
        except TrustpullError:
            return set()

    # ------------------------------------------------------------------ targets, delegations

    def meta_for(self, role: str) -> FileMeta | None:
        if self.snapshot is None:
            raise VerificationError("targets requested before the snapshot")
        return self.snapshot.meta.get(role)

    def update_targets(self, data: bytes) -> Targets:
        root = self._require_root()
        meta = self.meta_for("targets")
        if meta is None:  # parse_snapshot guarantees it; kept as a belt-and-braces check
            raise MalformedError("snapshot has no targets entry")
        keys = root.roles["targets"]
        envelope = self._verified_envelope("targets", data, root.keys, keys, meta)
        targets = parse_targets(envelope, "targets")
        self._check_version(
            "targets", targets.version, self._floor("targets", root.keys, keys, data)
        )
        self._check_expiry("targets", targets.expires)
        self.roles["targets"] = LoadedRole(targets, ("",), None, 0)
        # attacks.md H07 promises a warning for every ignored `metadata` delegation; the
        # top-level targets file lists most delegations, so it must warn too, not only
        # `update_delegation`.
        for ignored in targets.ignored_delegations:
            self.warnings.append(f"ignoring delegation {ignored}: a 'metadata' path component")
        return targets

    def delegation_of(self, name: str) -> tuple[LoadedRole, Delegation]:
        parent_name = name.rsplit("/", 1)[0]
        parent = self.roles.get(parent_name)
        if parent is None:
            raise DelegationError(f"{name}: its parent {parent_name} is not trusted")
        for delegation in parent.targets.delegations:
            if delegation.name == name:
                return parent, delegation
        raise DelegationError(f"{name} is not delegated by {parent_name}")

    def update_delegation(self, name: str, data: bytes) -> Targets:
        """Verify a delegated targets role against its (already trusted) parent's keys."""
        parent, delegation = self.delegation_of(name)
        if parent.depth + 1 > self.limits.max_delegation_depth:
            raise DelegationError(
                f"{name}: delegation deeper than {self.limits.max_delegation_depth}"
            )
        if len(self.roles) > self.limits.max_delegations:
            raise DelegationError(f"more than {self.limits.max_delegations} delegated roles")
        meta = self.meta_for(name)
        if meta is None:
            raise DelegationError(f"{name} is not listed in the snapshot")
        keys = parent.targets.delegation_keys
        role_keys = RoleKeys(delegation.keyids, delegation.threshold)
        envelope = self._verified_envelope(name, data, keys, role_keys, meta)
        targets = parse_targets(envelope, name)
        self._check_version(name, targets.version, self._floor(name, keys, role_keys, data))
        self._check_expiry(name, targets.expires)
        paths = tuple(
            path for path in delegation.paths if any(path.startswith(p) for p in parent.paths)
        )
        self.roles[name] = LoadedRole(targets, paths, parent.targets.role, parent.depth + 1)
        for ignored in targets.ignored_delegations:
            self.warnings.append(f"ignoring delegation {ignored}: a 'metadata' path component")
        return targets

    # ------------------------------------------------------------------ result

    def result(self, *, from_cache_only: bool = False) -> TrustData:
        root = self._require_root()
        if self.timestamp is None or self.snapshot is None or "targets" not in self.roles:
            raise VerificationError("trust data incomplete")
        if self.root_check is None:  # pragma: no cover - set together with root
            raise ThresholdError("root not validated")
        return TrustData(
            gun=self.gun,
            root=root,
            root_bytes=self.root_bytes,
            root_check=self.root_check,
            timestamp=self.timestamp,
            snapshot=self.snapshot,
            roles=dict(self.roles),
            warnings=tuple(dict.fromkeys(self.warnings)),
            first_use=self.first_use,
            from_cache_only=from_cache_only,
        )
