"""The pure Notary trusted set: bytes and a clock in, verified metadata or a typed error out.

This is the verification half of the update workflow, after python-tuf's `TrustedMetadataSet`:
it does no I/O, and its verified state is private, behind read-only properties. It is made from
root bytes (the cached pin, or a first use) and then fed, in the order notary's builder requires
(dct.md §2.7 "Prerequisites"):

    root → timestamp → snapshot → targets → delegations (each parent before its children)

Anything out of order, or a role loaded twice, is refused with `LoadOrderError` (a client bug,
as python-tuf's "Cannot update timestamp after snapshot"). Notary notices a new root only from a
timestamp or snapshot it cannot verify, or from the snapshot's `meta.root`: so `update_root` is
allowed until targets are loaded, and it drops the timestamp and snapshot, which must then be
loaded again under the new root.

Each `update_*` call checks, in this order: length and hashes against the parent's meta (over
the raw bytes, before anything is parsed), signatures against the keys and threshold the trusted
parent gives that role, the typed schema, the version against the rollback floor, then expiry
against the one reference time fixed when the set was made (attacks.md B11).

Rollback floors come from `previous`, the cached copy of each role that the caller hands in with
the new one: if it still verifies under the *current* keys (expiry allowed), its version is the
floor. So the last trusted version stays the floor after its file expired (stricter than notary,
dct.md §6.12), and a key rotation of a role drops its floor, which is the TUF spec's
fast-forward recovery (attacks.md B10, D11).

Warnings are collected here and returned on the result (`TrustData.warnings`); nothing outside
writes to this object.

Longer than 500 lines because each load step keeps its checks beside it (root, timestamp,
snapshot, targets, delegations, in TUF order), as python-tuf's TrustedMetadataSet does.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from trust.errors import (
    CertificateError,
    DelegationError,
    ExpiredError,
    HashMismatchError,
    InternalError,
    LengthError,
    MalformedError,
    RollbackError,
    RootRotationError,
    ThresholdError,
    TrustpullError,
    VerificationError,
)
from trust.notary.keys import PublicKey, parse_pem_certificates
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
from trust.notary.signatures import verify_message
from trust.notary.x509root import NEAR_EXPIRY, NOT_BEFORE_LEEWAY, RootCheck, validate_root
from trust.settings import Limits, TrustPinning

__all__ = [
    "LOOKUP_ROLES",
    "LoadOrderError",
    "LoadedRole",
    "PendingWrites",
    "TrustData",
    "TrustedSet",
    "check_meta",
    "stable_until",
]

#: docker's tag lookup reads exactly these roles, in this order (dct.md §1.6).
RELEASES_ROLE = "targets/releases"
LOOKUP_ROLES = (RELEASES_ROLE, "targets")


class LoadOrderError(InternalError):
    """Metadata handed to the trusted set out of order, or twice: a bug in the caller."""

    kind = "LoadOrder"


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
class PendingWrites:
    """What a client update would persist, carried on its result until the caller commits.

    Only data: the verifier never writes. `files` maps each role to the exact verified bytes the
    update fetched; `read` maps each role whose cached copy the update read to that copy's
    SHA-256 (None when there was none), so that a later commit can refuse to overwrite a cache
    that another process changed in between (trust.notary.client.NotaryClient.commit).
    """

    files: Mapping[str, bytes] = field(default_factory=lambda: MappingProxyType({}))
    read: Mapping[str, bytes | None] = field(default_factory=lambda: MappingProxyType({}))

    def __bool__(self) -> bool:
        return bool(self.files)


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
    #: Verified files not yet in the cache: see `NotaryClient.update(ref, commit=False)`.
    pending: PendingWrites = field(default_factory=PendingWrites)

    def children(self, role: str) -> list[str]:
        """Loaded direct delegations of `role`, in file order."""
        loaded = self.roles.get(role)
        if loaded is None:
            return []
        return [d.name for d in loaded.targets.delegations if d.name in self.roles]


@dataclass(frozen=True)
class _Floor:
    version: int
    envelope: Envelope


class TrustedSet:
    """Verified metadata for one GUN, built up one role at a time. Never does I/O.

    `root` is the cached root (the pin: it must verify by itself and satisfy any configured
    pin, attacks.md D09a, but its metadata may have expired; the caller then rotates to a newer
    one it signs) or, with `first_use`, the root of a first contact (trust on first use or a
    pinned first use, dct.md §2.9 step 5; expiry enforced). A failure is final: a cached root is
    never silently re-trusted.
    """

    def __init__(
        self,
        gun: str,
        root: bytes,
        *,
        now: dt.datetime,
        first_use: bool = False,
        pinning: TrustPinning | None = None,
        limits: Limits | None = None,
    ) -> None:
        self._gun = gun
        self._now = now
        self._pinning = pinning if pinning is not None else TrustPinning()
        self._limits = limits if limits is not None else Limits()
        self._first_use = first_use
        self._warnings: list[str] = []
        self._rotated: list[bytes] = []
        self._timestamp: Timestamp | None = None
        self._timestamp_bytes = b""
        self._snapshot: Snapshot | None = None
        self._snapshot_bytes = b""
        self._previous_roles: frozenset[str] = frozenset()
        self._roles: dict[str, LoadedRole] = {}
        tofu_allowed = not self._pinning.disable_tofu if first_use else True
        self._root, self._root_check = self._validate_root(root, None, tofu_allowed=tofu_allowed)
        self._root_bytes = root
        if first_use:
            self._check_expiry("root", self._root.expires)
        self._warnings.extend(self._root_check.warnings)

    # ------------------------------------------------------------------ read-only views

    @property
    def gun(self) -> str:
        return self._gun

    @property
    def now(self) -> dt.datetime:
        return self._now

    @property
    def first_use(self) -> bool:
        return self._first_use

    @property
    def root(self) -> Root:
        return self._root

    @property
    def root_bytes(self) -> bytes:
        return self._root_bytes

    @property
    def root_check(self) -> RootCheck:
        return self._root_check

    @property
    def rotated_roots(self) -> tuple[bytes, ...]:
        """Every root this set rotated to, in order (the last one is `root_bytes`)."""
        return tuple(self._rotated)

    @property
    def timestamp(self) -> Timestamp | None:
        return self._timestamp

    @property
    def timestamp_bytes(self) -> bytes:
        return self._timestamp_bytes

    @property
    def snapshot(self) -> Snapshot | None:
        return self._snapshot

    @property
    def snapshot_bytes(self) -> bytes:
        return self._snapshot_bytes

    @property
    def roles(self) -> Mapping[str, LoadedRole]:
        return MappingProxyType(self._roles)

    @property
    def warnings(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(self._warnings))

    @property
    def previous_snapshot_roles(self) -> frozenset[str]:
        """Roles the previous trusted snapshot listed (if it verifies under today's keys)."""
        return self._previous_roles

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
        verify_message(
            role, envelope.message, envelope.signatures, keys, role_keys.keyids, role_keys.threshold
        )
        return envelope

    def _check_expiry(self, role: str, expires: dt.datetime) -> None:
        if expires <= self._now:
            raise ExpiredError(
                f"remote repository {self._gun} out-of-date: {role} expired at "
                f"{_format_time(expires)}"
            )

    def _floor(
        self,
        role: str,
        keys: Mapping[str, PublicKey],
        role_keys: RoleKeys,
        previous: bytes | None,
        candidate: bytes,
    ) -> _Floor | None:
        """The previous copy's version, if it verifies under the current keys (expiry allowed).

        When the previous bytes are the `candidate` being verified they cannot be a rollback
        of themselves, so the second verification is skipped (it doubled a warm run's work)."""
        if previous is None or previous == candidate:
            return None
        try:
            envelope = self._verified_envelope(role, previous, keys, role_keys, None)
            signed = envelope.signed
            version = signed.get("version") if isinstance(signed, dict) else None
        except TrustpullError:
            return None
        if type(version) is not int or version < 1:
            return None
        return _Floor(version, envelope)

    def _check_version(self, role: str, version: int, floor: _Floor | None) -> None:
        if floor is not None and version < floor.version:
            raise RollbackError(
                "potential malicious behavior - trust data version is lower than expected for "
                f"remote repository {self._gun}: {role} version {version} is lower than current "
                f"version {floor.version}"
            )

    def _refuse_out_of_order(self, role: str, *, needs: str | None, before: str | None) -> None:
        loaded = {
            "timestamp": self._timestamp is not None,
            "snapshot": self._snapshot is not None,
            "targets": "targets" in self._roles,
        }
        if needs is not None and not loaded[needs]:
            raise LoadOrderError(f"cannot update {role} before {needs}")
        if before is not None and loaded[before]:
            raise LoadOrderError(f"cannot update {role} after {before}")
        if loaded.get(role):
            raise LoadOrderError(f"cannot update {role} twice (it is loaded already)")

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
            gun=self._gun,
            keys=root.keys,
            root_keyids=role.keyids,
            threshold=role.threshold,
            message=envelope.message,
            signatures=envelope.signatures,
            now=self._now,
            previous=prev,
            pinning=self._pinning,
            tofu_allowed=tofu_allowed,
        )
        return root, check

    def update_root(self, data: bytes, *, exact_version: int | None = None) -> None:
        """Rotate to root N+k if signed by a threshold of the trusted root's keys and of its own.

        Expiry of the new root's *metadata* is not checked here: intermediate roots may be
        expired; the client checks the final one with `check_root_expiry` (attacks.md B07).
        Allowed until targets are loaded; the timestamp and snapshot must then be loaded again.
        """
        if "targets" in self._roles:
            raise LoadOrderError("cannot update root after targets")
        current = self._root
        root, check = self._validate_root(data, current, tofu_allowed=True)
        if exact_version is not None and root.version != exact_version:
            raise RootRotationError(
                f"root at version URL {exact_version} holds version {root.version} (attacks.md D03)"
            )
        if root.version <= current.version:
            raise RollbackError(
                f"new root version {root.version} is not higher than the trusted {current.version}"
            )
        self._root, self._root_bytes, self._root_check = root, data, check
        self._rotated.append(data)
        self._warnings.extend(check.warnings)
        # Verified under the old root: they count for nothing now (notary's builder is reset).
        self._timestamp, self._timestamp_bytes = None, b""
        self._snapshot, self._snapshot_bytes = None, b""
        self._previous_roles = frozenset()

    def root_expired(self) -> bool:
        return self._root.expires <= self._now

    def check_root_expiry(self) -> None:
        self._check_expiry("root", self._root.expires)

    def root_matches(self, meta: FileMeta) -> bool:
        """Whether the trusted root's bytes are the ones the snapshot names."""
        try:
            check_meta("root", self._root_bytes, meta)
        except VerificationError:
            return False
        return True

    # ------------------------------------------------------------------ timestamp, snapshot

    def update_timestamp(self, data: bytes, *, previous: bytes | None = None) -> bool:
        """Verify a timestamp; returns False when the previous copy was kept instead (B02)."""
        self._refuse_out_of_order("timestamp", needs=None, before="snapshot")
        root = self._root
        keys = root.roles["timestamp"]
        envelope = self._verified_envelope("timestamp", data, root.keys, keys, None)
        timestamp = parse_timestamp(envelope)
        floor = self._floor("timestamp", root.keys, keys, previous, data)
        self._check_version("timestamp", timestamp.version, floor)
        kept = False
        if floor is not None and timestamp.version == floor.version:
            # attacks.md B02: the same version with other content. Notary would take it (>=);
            # the TUF rule is to keep the trusted copy and never follow the new pointer.
            self._warnings.append(
                f"the trust server sent timestamp version {timestamp.version} with content other "
                "than the cached copy of that version: keeping the cached copy"
            )
            assert previous is not None  # a floor comes from the previous copy
            data = previous
            timestamp = parse_timestamp(floor.envelope)
            kept = True
        self._check_expiry("timestamp", timestamp.expires)
        self._timestamp, self._timestamp_bytes = timestamp, data
        return not kept

    def snapshot_meta(self) -> FileMeta:
        if self._timestamp is None:
            raise LoadOrderError("snapshot requested before the timestamp")
        return self._timestamp.snapshot

    def update_snapshot(self, data: bytes, *, previous: bytes | None = None) -> None:
        self._refuse_out_of_order("snapshot", needs="timestamp", before="targets")
        root = self._root
        keys = root.roles["snapshot"]
        envelope = self._verified_envelope("snapshot", data, root.keys, keys, self.snapshot_meta())
        snapshot = parse_snapshot(envelope)
        floor = self._floor("snapshot", root.keys, keys, previous, data)
        self._check_version("snapshot", snapshot.version, floor)
        self._check_expiry("snapshot", snapshot.expires)
        self._snapshot, self._snapshot_bytes = snapshot, data
        if previous == data:
            self._previous_roles = frozenset(snapshot.meta)
        elif floor is not None:
            try:
                self._previous_roles = frozenset(parse_snapshot(floor.envelope).meta)
            except TrustpullError:
                self._previous_roles = frozenset()

    # ------------------------------------------------------------------ targets, delegations

    def meta_for(self, role: str) -> FileMeta | None:
        if self._snapshot is None:
            raise LoadOrderError("targets requested before the snapshot")
        return self._snapshot.meta.get(role)

    def _ignored(self, targets: Targets) -> None:
        # attacks.md H07 promises a warning for every ignored `metadata` delegation; the
        # top-level targets file lists most delegations, so it warns too.
        for ignored in targets.ignored_delegations:
            self._warnings.append(f"ignoring delegation {ignored}: a 'metadata' path component")

    def update_targets(self, data: bytes, *, previous: bytes | None = None) -> Targets:
        self._refuse_out_of_order("targets", needs="snapshot", before=None)
        root = self._root
        meta = self.meta_for("targets")
        if meta is None:  # parse_snapshot guarantees it; kept as a belt-and-braces check
            raise MalformedError("snapshot has no targets entry")
        keys = root.roles["targets"]
        envelope = self._verified_envelope("targets", data, root.keys, keys, meta)
        targets = parse_targets(envelope, "targets")
        floor = self._floor("targets", root.keys, keys, previous, data)
        self._check_version("targets", targets.version, floor)
        self._check_expiry("targets", targets.expires)
        self._roles["targets"] = LoadedRole(targets, ("",), None, 0)
        self._ignored(targets)
        return targets

    def delegation_of(self, name: str) -> tuple[LoadedRole, Delegation]:
        parent_name = name.rsplit("/", 1)[0]
        parent = self._roles.get(parent_name)
        if parent is None:
            raise DelegationError(f"{name}: its parent {parent_name} is not trusted")
        for delegation in parent.targets.delegations:
            if delegation.name == name:
                return parent, delegation
        raise DelegationError(f"{name} is not delegated by {parent_name}")

    def delegation_meta(self, name: str, *, required: bool = False) -> FileMeta | None:
        """The snapshot's meta for delegation `name`, or None when the role is skipped.

        A role missing from the snapshot is skipped with a warning (notary skips it quietly),
        unless the previous snapshot listed it (attacks.md C08: a rollback) or it is
        `required`, i.e. on the lookup path (`targets/releases`, or a signer a policy names:
        attacks.md C07, fail closed instead of falling back).
        """
        if "targets" not in self._roles:
            raise LoadOrderError(f"cannot update {name} before targets")
        meta = self.meta_for(name)
        if meta is not None:
            return meta
        if name in self._previous_roles:
            raise RollbackError(f"{name} was removed from the snapshot but is still delegated")
        if required:
            raise DelegationError(f"{name} is delegated but not listed in the snapshot")
        self._warnings.append(f"{name} is delegated but not in the snapshot: skipped")
        return None

    def update_delegation(
        self,
        name: str,
        data: bytes,
        *,
        previous: bytes | None = None,
        required: bool = False,
    ) -> Targets | None:
        """Verify a delegated targets role against its (already trusted) parent's keys.

        An expired role or one under its threshold is skipped with a warning, its subtree with
        it, as notary does (dct.md §2.7 3.5), and None is returned; a `required` role (see
        `delegation_meta`) refuses the update instead (attacks.md E06, stricter than notary).
        Every other failure is fatal.
        """
        if "targets" not in self._roles:
            raise LoadOrderError(f"cannot update {name} before targets")
        if name in self._roles:
            raise LoadOrderError(f"cannot update {name} twice (it is loaded already)")
        try:
            return self._load_delegation(name, data, previous)
        except (ExpiredError, ThresholdError) as error:
            if required:
                raise
            self._warnings.append(f"Error getting {name}: {error.message} (role skipped)")
            return None

    def _load_delegation(self, name: str, data: bytes, previous: bytes | None) -> Targets:
        parent, delegation = self.delegation_of(name)
        if parent.depth + 1 > self._limits.max_delegation_depth:
            raise DelegationError(
                f"{name}: delegation deeper than {self._limits.max_delegation_depth}"
            )
        if len(self._roles) > self._limits.max_delegations:
            raise DelegationError(f"more than {self._limits.max_delegations} delegated roles")
        meta = self.meta_for(name)
        if meta is None:
            raise DelegationError(f"{name} is not listed in the snapshot")
        keys = parent.targets.delegation_keys
        role_keys = RoleKeys(delegation.keyids, delegation.threshold)
        envelope = self._verified_envelope(name, data, keys, role_keys, meta)
        targets = parse_targets(envelope, name)
        floor = self._floor(name, keys, role_keys, previous, data)
        self._check_version(name, targets.version, floor)
        self._check_expiry(name, targets.expires)
        paths = tuple(
            path for path in delegation.paths if any(path.startswith(p) for p in parent.paths)
        )
        self._roles[name] = LoadedRole(targets, paths, parent.targets.role, parent.depth + 1)
        self._ignored(targets)
        return targets

    # ------------------------------------------------------------------ result

    def result(self, *, from_cache_only: bool = False) -> TrustData:
        if self._timestamp is None or self._snapshot is None or "targets" not in self._roles:
            raise LoadOrderError("trust data incomplete: targets are not loaded")
        return TrustData(
            gun=self._gun,
            root=self._root,
            root_bytes=self._root_bytes,
            root_check=self._root_check,
            timestamp=self._timestamp,
            snapshot=self._snapshot,
            roles=MappingProxyType(dict(self._roles)),
            warnings=self.warnings,
            first_use=self._first_use,
            from_cache_only=from_cache_only,
        )


def stable_until(data: TrustData, pinning: TrustPinning, now: dt.datetime) -> dt.datetime:
    """The first instant after `now` at which verifying the same bytes could come out otherwise.

    Every time-dependent decision of this verifier compares a fixed instant with the clock:
    role expiry (every loaded role; a role skipped as expired stays expired), and certificate
    validity, the near-expiry warning and CA chain building (every certificate of every root
    key, and of each CA bundle pinned for a prefix of the GUN). For any later `now` before the
    returned instant each comparison, hence the whole result and its warnings, is the same.
    A long-running caller (trust.notary.pool) uses it to keep a verified result across
    requests; nothing here is I/O.
    """
    instants = [data.root.expires, data.timestamp.expires, data.snapshot.expires]
    instants += [loaded.targets.expires for loaded in data.roles.values()]
    certs = []
    for key in data.root.keys.values():
        try:
            certs += key.certificates()
        except CertificateError:
            continue  # not an x509 key: nothing in it depends on the time
    for prefix, bundle in pinning.ca.items():
        if data.gun.startswith(prefix):
            try:
                certs += parse_pem_certificates(bundle)
            except CertificateError:
                continue
    for cert in certs:
        not_before = cert.not_valid_before_utc
        not_after = cert.not_valid_after_utc
        instants += [not_before - NOT_BEFORE_LEEWAY, not_before, not_after]
        instants.append(not_after - NEAR_EXPIRY)
    later = [moment for moment in instants if moment > now]
    return min(later) if later else dt.datetime.max.replace(tzinfo=dt.UTC)
