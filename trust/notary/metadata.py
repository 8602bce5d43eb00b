"""Strict, typed parsing of Notary v1 metadata (dct.md §2.1, attacks.md A13, A14, B11, B12, E07).

Parsing is pure and never trusts a value before its type is checked: every field has an exact
type, integers are not booleans, versions are 1..2**53, `expires` must be strict RFC 3339, hashes
must have their algorithm's length, and a key that differs from a known field only by case is
refused (Go's decoder matches struct fields case-insensitively, so `Version` beside `version`
would let Go and Python read different values).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import functools
import posixpath
import re
from collections.abc import ItemsView, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from trust.errors import MalformedError
from trust.notary.cjson import MAX_SAFE_INTEGER, collection_paused, decode_envelope
from trust.notary.keys import PublicKey
from trust.notary.signatures import Signature, parse_signatures

__all__ = [
    "BASE_ROLES",
    "Delegation",
    "Envelope",
    "FileMeta",
    "RoleKeys",
    "Root",
    "Snapshot",
    "TargetFiles",
    "Targets",
    "Timestamp",
    "is_valid_delegation_name",
    "parse_envelope",
    "parse_expires",
    "parse_root",
    "parse_snapshot",
    "parse_targets",
    "parse_timestamp",
]

BASE_ROLES = ("root", "targets", "snapshot", "timestamp")
_TYPE_NAMES = {
    "root": "Root",
    "targets": "Targets",
    "snapshot": "Snapshot",
    "timestamp": "Timestamp",
}
_HASH_SIZES = {"sha256": 32, "sha512": 64}

#: notary's delegation name alphabet, `^[-a-z0-9_/]+$` (a set test: no regex to compile).
_DELEGATION_CHARS = frozenset("-abcdefghijklmnopqrstuvwxyz0123456789_/")


@functools.cache
def _rfc3339() -> re.Pattern[str]:
    """Compiled on first use, so that importing this module compiles no regular expression."""
    return re.compile(
        r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(Z|[+-]\d{2}:\d{2})",
        re.ASCII,
    )


@dataclass(frozen=True)
class Envelope:
    """A signed document: the raw bytes (what hashes cover) and the decoded parts."""

    raw: bytes
    signed: Any
    signatures: tuple[Signature, ...]
    #: The canonical JSON of `signed`: the exact bytes the signatures cover (dct.md §3.2).
    message: bytes = b""


@dataclass(frozen=True, slots=True)
class FileMeta:
    """A parent's binding of a file: its length cap and hashes (std base64 in the JSON)."""

    length: int
    hashes: Mapping[str, bytes]
    custom: Any = None

    def hex(self, algorithm: str = "sha256") -> str:
        return self.hashes[algorithm].hex()


@dataclass(frozen=True)
class RoleKeys:
    keyids: tuple[str, ...]
    threshold: int


@dataclass(frozen=True)
class Root:
    version: int
    expires: dt.datetime
    keys: Mapping[str, PublicKey]
    roles: Mapping[str, RoleKeys]
    consistent_snapshot: bool


@dataclass(frozen=True)
class Timestamp:
    version: int
    expires: dt.datetime
    snapshot: FileMeta


@dataclass(frozen=True)
class Snapshot:
    version: int
    expires: dt.datetime
    meta: Mapping[str, FileMeta]


@dataclass(frozen=True)
class Delegation:
    """One entry of a targets file's `delegations.roles`."""

    name: str
    keyids: tuple[str, ...]
    threshold: int
    paths: tuple[str, ...]


class TargetFiles(Mapping[str, FileMeta]):
    """A targets role's `targets`: every entry was checked when the file was parsed, and the
    common one (a length and a sha256, nothing else) is kept as a plain pair; its `FileMeta` is
    built when it is read. 100,000 tags then cost two small objects each, not six."""

    __slots__ = ("_entries",)

    def __init__(self, entries: Mapping[str, tuple[int, bytes] | FileMeta]) -> None:
        self._entries = entries

    def __getitem__(self, name: str) -> FileMeta:
        entry = self._entries[name]
        if isinstance(entry, FileMeta):
            return entry
        return FileMeta(entry[0], {"sha256": entry[1]})

    def get(self, name: str, default: Any = None) -> Any:
        if name in self._entries:
            return self[name]
        return default

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"TargetFiles({len(self._entries)} entries)"

    def items(self) -> ItemsView[str, FileMeta]:
        return _TargetItems(self)

    def _pairs(self) -> Iterator[tuple[str, FileMeta]]:
        for name, entry in self._entries.items():
            if isinstance(entry, FileMeta):
                yield name, entry
            else:
                yield name, FileMeta(entry[0], {"sha256": entry[1]})


class _TargetItems(ItemsView[str, FileMeta]):
    """`TargetFiles.items()` without a second lookup per entry (`-a` lists them all)."""

    _mapping: TargetFiles

    def __iter__(self) -> Iterator[tuple[str, FileMeta]]:
        return self._mapping._pairs()


@dataclass(frozen=True)
class Targets:
    role: str
    version: int
    expires: dt.datetime
    targets: TargetFiles
    delegation_keys: Mapping[str, PublicKey]
    delegations: tuple[Delegation, ...]
    #: Delegations that are valid for notary but that trustpull ignores (attacks.md H07).
    ignored_delegations: tuple[str, ...] = field(default=())


# --------------------------------------------------------------------------- primitives


def _object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise MalformedError(f"{what} must be a JSON object")
    return value


def _fields(
    value: Any, what: str, required: set[str], optional: frozenset[str] | set[str] = frozenset()
) -> dict[str, Any]:
    obj = _object(value, what)
    known = required | optional
    lowered: dict[str, str] = {}
    for key in obj:
        low = key.lower()
        if low in lowered or (key not in known and low in {k.lower() for k in known}):
            raise MalformedError(f"{what}: field {key!r} duplicates a known field by case")
        lowered[low] = key
    missing = [name for name in sorted(required) if name not in obj]
    if missing:
        raise MalformedError(f"{what}: missing field {missing[0]!r}")
    return obj


def _int(value: Any, what: str, *, minimum: int) -> int:
    if type(value) is not int:  # bool and floats (JSONFloat) are refused on purpose (B12)
        raise MalformedError(f"{what} must be an integer")
    if value < minimum or value > MAX_SAFE_INTEGER:
        raise MalformedError(f"{what} out of range: {value}")
    return value


def _str(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise MalformedError(f"{what} must be a string")
    return value


def _b64(value: Any, what: str) -> bytes:
    text = _str(value, what).replace("\r", "").replace("\n", "")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise MalformedError(f"{what} is not valid base64") from None


def parse_expires(value: Any) -> dt.datetime:
    """Strict RFC 3339 (B11): `YYYY-MM-DDTHH:MM:SS[.f{1,9}](Z|±HH:MM)`, returned in UTC."""
    text = _str(value, "expires")
    match = _rfc3339().fullmatch(text)
    if not match:
        raise MalformedError(f"expires is not an RFC 3339 time: {text[:40]!r}")
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    micro = int((fraction or "0").ljust(6, "0")[:6])
    if zone == "Z":
        tz = dt.UTC
    else:
        sign = 1 if zone[0] == "+" else -1
        hours, minutes = int(zone[1:3]), int(zone[4:6])
        if hours > 23 or minutes > 59:
            raise MalformedError(f"expires has an invalid offset: {text[:40]!r}")
        tz = dt.timezone(sign * dt.timedelta(hours=hours, minutes=minutes))
    try:
        moment = dt.datetime(
            int(year), int(month), int(day), int(hour), int(minute), int(second), micro, tz
        )
        return moment.astimezone(dt.UTC)
    except (ValueError, OverflowError):
        # Covers 2030-02-30, 23:59:60 (Python has no leap seconds: refuse), and out-of-range
        # years once converted to UTC.
        if text.startswith("0001-01-01T00:00:00"):
            return dt.datetime(1, 1, 1, tzinfo=dt.UTC)
        raise MalformedError(f"expires is not a valid time: {text[:40]!r}") from None


def _file_meta(value: Any, what: str) -> FileMeta:
    obj = _fields(value, what, {"length", "hashes"}, {"custom"})
    length = _int(obj["length"], f"{what}.length", minimum=0)
    hashes_obj = _object(obj["hashes"], f"{what}.hashes")
    hashes: dict[str, bytes] = {}
    for algorithm, encoded in hashes_obj.items():
        digest = _b64(encoded, f"{what}.hashes.{algorithm}")
        size = _HASH_SIZES.get(algorithm)
        if size is not None:
            if len(digest) != size:
                raise MalformedError(f"{what}: {algorithm} hash has {len(digest)} bytes")
            hashes[algorithm] = digest
        # Unknown algorithms are ignored, as notary does; they can never satisfy a check.
    return FileMeta(length=length, hashes=MappingProxyType(hashes), custom=obj.get("custom"))


def _target_files(targets_obj: Mapping[str, Any], role: str) -> TargetFiles:
    """Every entry checked as `_file_meta` checks it; the common shape on a short path.

    The short path accepts exactly `{"length": int, "hashes": {"sha256": str}}`, for which
    `_file_meta` could not decide otherwise: two keys that are the known names (so no case
    alias), an integer length in range, and a base64 digest that strict decoding takes (it
    refuses everything `_b64` refuses, and then decodes to the same bytes) of the right size.
    Anything else goes through `_file_meta`, which refuses it or returns its `FileMeta`.
    """
    a2b = binascii.a2b_base64
    entries: dict[str, tuple[int, bytes] | FileMeta] = {}
    with collection_paused():
        for name, value in targets_obj.items():
            if type(value) is dict and len(value) == 2 and "length" in value and "hashes" in value:
                length = value["length"]
                hashes = value["hashes"]
                if (
                    type(length) is int
                    and 0 <= length <= MAX_SAFE_INTEGER
                    and type(hashes) is dict
                    and len(hashes) == 1
                    and "sha256" in hashes
                ):
                    encoded = hashes["sha256"]
                    if type(encoded) is str and len(encoded) == 44:
                        try:
                            digest = a2b(encoded, strict_mode=True)
                        except (binascii.Error, ValueError):
                            digest = b""
                        if len(digest) == 32:
                            entries[name] = (length, digest)
                            continue
            entries[name] = _file_meta(value, f"{role}.targets[{name[:40]!r}]")
    return TargetFiles(entries)


def _common(signed: Any, role: str) -> tuple[dict[str, Any], int, dt.datetime]:
    expected_type = _TYPE_NAMES["targets" if role.startswith("targets") else role]
    extra = {
        "root": {"keys", "roles", "consistent_snapshot"},
        "timestamp": {"meta"},
        "snapshot": {"meta"},
    }.get(role, {"targets"})
    optional = {"delegations"} if role.startswith("targets") else set()
    obj = _fields(signed, f"{role}.signed", {"_type", "version", "expires"} | extra, optional)
    kind = obj["_type"]
    if kind != expected_type:
        # A correctly signed file served at another role's URL (attacks.md A13).
        raise MalformedError(
            f"{role}: metadata has type {str(kind)[:20]!r}, expected {expected_type!r}"
        )
    version = _int(obj["version"], f"{role}.version", minimum=1)
    return obj, version, parse_expires(obj["expires"])


# --------------------------------------------------------------------------- public parsers


def parse_envelope(data: bytes, role: str) -> Envelope:
    """Split a metadata file into raw bytes, the `signed` value, its signatures and the
    canonical message they sign (decoded strictly: `trust.notary.cjson.decode_envelope`)."""
    decoded, message = decode_envelope(data)
    document = _fields(decoded, f"{role} metadata", {"signed", "signatures"})
    signed = _object(document["signed"], f"{role}.signed")
    assert message is not None  # `signed` exists, so decode_envelope encoded it
    return Envelope(
        raw=bytes(data),
        signed=signed,
        signatures=tuple(parse_signatures(document["signatures"])),
        message=message,
    )


def _role_keys(value: Any, what: str, keys: Mapping[str, Any]) -> RoleKeys:
    obj = _fields(value, what, {"keyids", "threshold"})
    keyids_raw = obj["keyids"]
    if not isinstance(keyids_raw, list) or not all(isinstance(k, str) for k in keyids_raw):
        raise MalformedError(f"{what}.keyids must be a list of strings")
    if len(set(keyids_raw)) != len(keyids_raw):
        raise MalformedError(f"{what}: non-unique keyids")  # attacks.md A06
    threshold = _int(obj["threshold"], f"{what}.threshold", minimum=1)  # A09: never 0
    for keyid in keyids_raw:
        if keyid not in keys:
            raise MalformedError(f"{what}: key ID {keyid} specified without corresponding key")
    return RoleKeys(keyids=tuple(keyids_raw), threshold=threshold)


def _keys(value: Any, what: str) -> dict[str, PublicKey]:
    obj = _object(value, what)
    return {keyid: PublicKey.from_json(key) for keyid, key in obj.items()}


def parse_root(envelope: Envelope) -> Root:
    obj, version, expires = _common(envelope.signed, "root")
    keys = _keys(obj["keys"], "root.keys")
    roles_obj = _object(obj["roles"], "root.roles")
    roles: dict[str, RoleKeys] = {}
    for name in BASE_ROLES:
        if name not in roles_obj:
            raise MalformedError(f"root type metadata invalid: missing {name} role specification")
        roles[name] = _role_keys(roles_obj[name], f"root.roles.{name}", keys)
        if not roles[name].keyids:
            raise MalformedError(f"root: role {name} has no keys")  # attacks.md D05
    consistent = obj["consistent_snapshot"]
    if not isinstance(consistent, bool):
        raise MalformedError("root.consistent_snapshot must be a boolean")
    return Root(version, expires, MappingProxyType(keys), MappingProxyType(roles), consistent)


def parse_timestamp(envelope: Envelope) -> Timestamp:
    obj, version, expires = _common(envelope.signed, "timestamp")
    meta = _object(obj["meta"], "timestamp.meta")
    if "snapshot" not in meta:
        raise MalformedError(
            "timestamp type metadata invalid: missing snapshot sha256 checksum information"
        )
    snapshot = _file_meta(meta["snapshot"], "timestamp.meta.snapshot")
    if "sha256" not in snapshot.hashes:
        raise MalformedError(
            "timestamp type metadata invalid: missing snapshot sha256 checksum information"
        )
    return Timestamp(version, expires, snapshot)


def parse_snapshot(envelope: Envelope) -> Snapshot:
    obj, version, expires = _common(envelope.signed, "snapshot")
    meta_obj = _object(obj["meta"], "snapshot.meta")
    meta = {name: _file_meta(value, f"snapshot.meta.{name}") for name, value in meta_obj.items()}
    for required in ("root", "targets"):
        if required not in meta or "sha256" not in meta[required].hashes:
            raise MalformedError(
                f"snapshot type metadata invalid: missing {required} sha256 checksum"
            )
    return Snapshot(version, expires, MappingProxyType(meta))


def is_valid_delegation_name(name: str) -> bool:
    """notary's IsDelegation: `targets/` prefix, `[-a-z0-9_/]+`, < 256 bytes, already clean."""
    return (
        name.startswith("targets/")
        and len(name.encode("utf-8")) < 256
        and _DELEGATION_CHARS.issuperset(name)
        and posixpath.normpath(name) == name
    )


def has_metadata_component(name: str) -> bool:
    """A role name whose path (after `targets/`) has a `metadata` component (attacks.md H07)."""
    return "metadata" in name.split("/")[1:]


def parse_targets(envelope: Envelope, role: str) -> Targets:
    obj, version, expires = _common(envelope.signed, role)
    targets = _target_files(_object(obj["targets"], f"{role}.targets"), role)
    delegation_keys: dict[str, PublicKey] = {}
    delegations: list[Delegation] = []
    ignored: list[str] = []
    if "delegations" in obj:
        dobj = _fields(obj["delegations"], f"{role}.delegations", {"keys", "roles"})
        delegation_keys = _keys(dobj["keys"], f"{role}.delegations.keys")
        roles_list = dobj["roles"]
        if not isinstance(roles_list, list):
            raise MalformedError(f"{role}.delegations.roles must be a list")
        seen: set[str] = set()
        for entry in roles_list:
            entry_obj = _fields(
                entry,
                f"{role}.delegations.roles[]",
                {"name", "keyids", "threshold"},
                {"paths", "path_hash_prefixes", "terminating"},
            )
            name = _str(entry_obj["name"], "delegation name")
            # E07: an invalid or non-child delegation name makes the whole file invalid, as in
            # notary; a name listed twice is refused too (TUF spec §4: role names are unique).
            if not is_valid_delegation_name(name) or posixpath.dirname(name) != role:
                raise MalformedError(
                    f"{role} type metadata invalid: delegation role {name[:80]!r} invalid"
                )
            if name in seen:
                raise MalformedError(f"{role}: delegation role {name!r} listed twice")
            seen.add(name)
            keys = _role_keys(entry_obj, f"delegation {name}", delegation_keys)
            paths_raw = entry_obj.get("paths", [])
            if paths_raw is None:
                paths_raw = []
            if not isinstance(paths_raw, list) or not all(isinstance(p, str) for p in paths_raw):
                raise MalformedError(f"delegation {name}: paths must be a list of strings")
            # `path_hash_prefixes` and `terminating` do not exist in notary's model: they are
            # ignored, and an absent `paths` matches nothing (attacks.md E05).
            if has_metadata_component(name):
                ignored.append(name)
                continue
            delegations.append(Delegation(name, keys.keyids, keys.threshold, tuple(paths_raw)))
    return Targets(
        role,
        version,
        expires,
        targets,
        MappingProxyType(delegation_keys),
        tuple(delegations),
        tuple(ignored),
    )
