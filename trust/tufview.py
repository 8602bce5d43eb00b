"""A verified, read-only view of one repository (GUN) in a refreshed TUF repository.

The contract (what `trust.service` relies on, the same as for Notary's `trust.lookup`):

* every digest comes from python-tuf: `lookup(tag)` is `Updater.get_targetinfo("<GUN>:<tag>")`,
  the full TUF client workflow (delegation search, terminating roles, hash bins, signature,
  version and expiry checks), and `signed_tags()` answers each tag it lists the same way;
* the view makes no choice between tag, tag@digest, digest-only and all tags: its caller does;
* listings (which tags exist, the signer roles of a tag, delegated keys, expiries) read the
  metadata files the Updater persisted, through python-tuf's public Metadata API, and use a
  delegated role's file only when it is the version the verified snapshot names, signed by its
  delegator's keys and unexpired (checked here, with the same public API). A listing can
  therefore leave out a tag a role that cannot be loaded would add, never invent a digest.

Only public python-tuf names are used: `Updater.get_targetinfo`, `tuf.api.metadata`
(`Metadata`, `Root`, `Snapshot`, `Targets`, `TargetFile`, `verify_delegate`,
`verify_length_and_hashes`, `get_roles_for_target`, `is_delegated_path`, `SuccinctRoles`),
`tuf.api.exceptions`. The file layout read is the Updater's documented cache: `root.json`,
`snapshot.json` and `<url-quoted role>.json` in the metadata directory.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

from tuf.api import exceptions as tuf_errors
from tuf.api.metadata import (
    DelegatedRole,
    Metadata,
    Root,
    Snapshot,
    SuccinctRoles,
    TargetFile,
    Targets,
)
from tuf.api.serialization import DeserializationError
from tuf.ngclient.updater import Updater

from trust.errors import DelegationError, MalformedError, NoSuchTagError
from trust.reference import Reference
from trust.settings import Limits
from trust.targets import REPO_ADMIN, Resolution, SignedTarget, natural_key, pinned_reference

__all__ = ["SOURCE_NAME", "TufView", "target_path"]

SOURCE_NAME = "tuf"
TAG_RE = re.compile(r"[\w][\w.-]{0,127}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_PROBE_TRIES = 64


def target_path(gun: str, tag: str) -> str:
    """The TUF target path that signs `tag` of repository `gun`."""
    return f"{gun}:{tag}"


def _probe_from_pattern(pattern: str) -> str:
    """A path that an fnmatch `pattern` matches: wildcards and classes by a plain character."""
    out: list[str] = []
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char in "*?":
            out.append("x")
        elif char == "[" and "]" in pattern[i + 2 :]:
            end = pattern.index("]", i + 2)
            inner = pattern[i + 1 : end]
            out.append("x" if inner[:1] in ("!", "^") else inner[0])
            i = end
        else:
            out.append(char)
        i += 1
    return "".join(out)


class TufView:
    """Signed tags of `gun` as python-tuf's refreshed `updater` verifies them (see above)."""

    def __init__(
        self,
        updater: Updater,
        metadata_dir: Path,
        gun: str,
        *,
        limits: Limits,
        where: str,
        metadata_url: str,
        now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self._updater = updater
        self._dir = metadata_dir
        self.gun = gun
        self._limits = limits
        self.where = where
        self._metadata_url = metadata_url
        self._now = now()
        self._root: Metadata[Root] = self._read_top("root", Root)
        self._snapshot: Metadata[Snapshot] = self._read_top("snapshot", Snapshot)
        self._roles: dict[str, Metadata[Targets] | None] = {}

    # ----------------------------------------------------------------- the view

    def lookup(self, tag: str) -> SignedTarget:
        """The signed digest of `tag`, or NoSuchTagError (`trust.lookup.lookup_tag`'s contract)."""
        found = self._lookup(tag)
        if found is None:
            raise NoSuchTagError(
                f"No valid trust data for {tag}",
                hint=f"{target_path(self.gun, tag)} is not a target of {self.where}",
            )
        return found

    def signed_tags(self) -> list[SignedTarget]:
        """Every tag of the GUN that python-tuf's target search accepts, in natural order.

        Empty when there is none (the caller says "no trusted tags"). Candidates come from every
        role reachable for this GUN; each is then looked up the TUF way, so a tag listed only by
        a role not allowed to sign it is left out (or answered by the role that is).
        """
        prefix = self.gun + ":"
        candidates: set[str] = set()
        for _role, targets in self._reachable():
            for path in targets.signed.targets:
                if path.startswith(prefix) and TAG_RE.fullmatch(path[len(prefix) :]):
                    candidates.add(path[len(prefix) :])
        found = []
        for tag in sorted(candidates, key=natural_key):
            signed = self._lookup(tag)
            if signed is not None:
                found.append(signed)
        return found

    def signers(self, target: SignedTarget) -> tuple[str, ...]:
        """Delegated roles on the TUF search path of the tag that list its signed digest.

        Informational (the digest never depends on it): roles after the answer are named only
        when their verified file is at hand.
        """
        path = target_path(self.gun, target.tag)
        names = []
        for role, targets in self._search_path(path, stop_at_hit=False):
            info = targets.signed.targets.get(path)
            if (
                info is not None
                and role != Targets.type
                and "sha256:" + str(info.hashes.get("sha256")) == target.digest
            ):
                names.append(role)
        return tuple(sorted(set(names))) or (REPO_ADMIN,)

    def resolution(self, ref: Reference, target: SignedTarget) -> Resolution:
        """The answer for `ref` (pinned as `trust.lookup.resolution_for` pins it)."""
        root_ids = sorted(self._root.signed.roles[Root.type].keyids)
        return Resolution(
            reference=str(pinned_reference(ref, target.tag, target.digest)),
            name=ref.name,
            tag=target.tag,
            digest=target.digest,
            size=target.size,
            role=target.role,
            signers=self.signers(target),
            trust_server=self._metadata_url,
            root_key_id=root_ids[0] if root_ids else "",
            source=SOURCE_NAME,
        )

    def expiries(self, roles: tuple[str, ...] = ()) -> dict[str, dt.datetime]:
        """Expiry of root, timestamp, snapshot, targets and of the named delegated `roles`."""
        result: dict[str, dt.datetime] = {
            Root.type: self._root.signed.expires,
            Snapshot.type: self._snapshot.signed.expires,
        }
        timestamp = self._read_file("timestamp")
        if timestamp is not None:
            result["timestamp"] = Metadata.from_bytes(timestamp).signed.expires
        for role in (Targets.type, *roles):
            md = self._role(role)
            if md is not None:
                result[role] = md.signed.expires
        return result

    def inspect(self, name_as_typed: str, tag: str | None) -> dict[str, object]:
        """`docker trust inspect`'s object: signed tags with the delegated roles that list them,
        every delegated role with its keys, and the root and targets keys."""
        if tag is not None:
            found = self._lookup(tag)
            signed = [found] if found is not None else []
        else:
            signed = self.signed_tags()
        role_keys: dict[str, list[str]] = {}
        for _name, targets in self._reachable():
            delegations = targets.signed.delegations
            if delegations is None:
                continue
            if delegations.roles is not None:
                for role in delegations.roles.values():
                    role_keys[role.name] = sorted(role.keyids)
            elif delegations.succinct_roles is not None:
                ids = sorted(delegations.succinct_roles.keyids)
                for bin_name in delegations.succinct_roles.get_roles():
                    role_keys[bin_name] = ids
        root = self._root.signed
        return {
            "Name": name_as_typed,
            "SignedTags": [
                {
                    "SignedTag": s.tag,
                    "Digest": s.digest.removeprefix("sha256:"),
                    "Signers": list(self.signers(s)),
                }
                for s in signed
            ],
            "Signers": [
                {"Name": name, "Keys": [{"ID": key} for key in keys]}
                for name, keys in sorted(role_keys.items(), reverse=True)
            ],
            "AdministrativeKeys": [
                {"Name": "Root", "Keys": [{"ID": k} for k in sorted(root.roles["root"].keyids)]},
                {
                    "Name": "Repository",
                    "Keys": [{"ID": k} for k in sorted(root.roles["targets"].keyids)],
                },
            ],
        }

    # ------------------------------------------------------------------ lookups

    def _lookup(self, tag: str) -> SignedTarget | None:
        if not TAG_RE.fullmatch(tag):
            return None
        path = target_path(self.gun, tag)
        info = self._search(path)
        if info is None:
            return None
        # get_targetinfo just loaded every role of this walk: their files are what it verified.
        role = next(
            (r for r, t in self._search_path(path, stop_at_hit=True) if path in t.signed.targets),
            None,
        )
        if role is None or self._role(role) is None:
            raise MalformedError(f"{self.where}: the role that signs {path!r} cannot be read back")
        return self._convert(tag, info, role)

    def _convert(self, tag: str, info: TargetFile, role: str) -> SignedTarget:
        digest = info.hashes.get("sha256")
        if not isinstance(digest, str) or not _HEX64.fullmatch(digest):
            raise MalformedError(
                f"{self.where}: no valid hash, expecting sha256 (target {info.path!r} in {role})"
            )
        if info.length < 1:
            raise MalformedError(
                f"{self.where}: target {info.path!r} in {role} has an invalid length"
            )
        return SignedTarget(tag=tag, digest="sha256:" + digest, size=info.length, role=role)

    # ------------------------------------------------------------------ walks

    def _search_path(
        self, path: str, *, stop_at_hit: bool
    ) -> Iterator[tuple[str, Metadata[Targets]]]:
        """python-tuf's pre-order depth-first target search, over the verified files."""
        stack: list[str] = [Targets.type]
        visited: set[str] = set()
        while stack and len(visited) <= self._limits.max_delegations:
            role = stack.pop()
            if role in visited:
                continue
            targets = self._role(role)
            if targets is None:
                continue
            visited.add(role)
            yield role, targets
            if stop_at_hit and path in targets.signed.targets:
                return
            delegations = targets.signed.delegations
            if delegations is None:
                continue
            children: list[str] = []
            for child, terminating in delegations.get_roles_for_target(path):
                children.append(child)
                if terminating:
                    stack = []
                    break
            stack.extend(reversed(children))

    def _reachable(self) -> Iterator[tuple[str, Metadata[Targets]]]:
        """Every targets role reachable from `targets` (pre-order), loading each through the
        Updater first when its verified file is not at hand."""
        stack: list[str] = [Targets.type]
        visited: set[str] = set()
        while stack:
            role = stack.pop()
            if role in visited:
                continue
            if len(visited) > self._limits.max_delegations:
                raise DelegationError(
                    f"{self.where}: more than {self._limits.max_delegations} delegated roles"
                )
            visited.add(role)
            targets = self._role(role)
            if targets is None:
                continue
            yield role, targets
            delegations = targets.signed.delegations
            if delegations is None:
                continue
            if delegations.roles is not None:
                children = list(delegations.roles.values())
                for child in children:
                    self._ensure_loaded(child.name, child)
                names = [child.name for child in children]
            elif delegations.succinct_roles is not None:
                succinct = delegations.succinct_roles
                names = list(succinct.get_roles())
                for name in names:
                    self._ensure_loaded(name, succinct)
            else:
                names = []
            stack.extend(reversed(names))

    def _ensure_loaded(self, role: str, delegation: DelegatedRole | SuccinctRoles) -> None:
        """Let the Updater load `role` (a target search that its delegation routes to it).

        A role no probe reaches (another role answers first, a terminating sibling) stays
        unread: tags only it lists are not offered as candidates."""
        if self._role(role) is not None:
            return
        for probe in self._probes(role, delegation):
            self._search(probe)
            if self._role(role) is not None:
                return

    def _search(self, path: str) -> TargetFile | None:
        """python-tuf's target search; roles it loads may replace files read before."""
        info = self._updater.get_targetinfo(path)
        self._roles = {name: md for name, md in self._roles.items() if md is not None}
        return info

    def _probes(self, role: str, delegation: DelegatedRole | SuccinctRoles) -> Iterator[str]:
        prefix = self.gun + ":"
        if isinstance(delegation, SuccinctRoles):
            for n in range(_PROBE_TRIES * max(1, delegation.number_of_bins)):
                probe = f"{prefix}trustpull-probe-{n}"
                if delegation.get_role_for_target(probe) == role:
                    yield probe
                    return
            return
        patterns = delegation.paths or []
        tried = [f"{prefix}trustpull-probe"] + [_probe_from_pattern(p) for p in patterns]
        for probe in tried:
            if delegation.is_delegated_path(probe):
                yield probe
        if delegation.path_hash_prefixes:
            for n in range(_PROBE_TRIES * 4096):
                probe = f"{prefix}trustpull-probe-{n}"
                if delegation.is_delegated_path(probe):
                    yield probe
                    return

    # ------------------------------------------------------------------ files

    def _read_file(self, role: str) -> bytes | None:
        path = self._dir / f"{quote(role, '')}.json"
        try:
            with path.open("rb") as handle:
                data = handle.read(self._limits.metadata_max_bytes + 1)
        except OSError:
            return None
        return data if len(data) <= self._limits.metadata_max_bytes else None

    def _read_top(self, role: str, kind: type[Root] | type[Snapshot]) -> Metadata[Any]:
        data = self._read_file(role)
        try:
            md = Metadata.from_bytes(data or b"")
        except DeserializationError as exc:
            raise MalformedError(f"{self.where}: cannot read back the verified {role}") from exc
        if not isinstance(md.signed, kind):
            raise MalformedError(f"{self.where}: {role}.json is not {role} metadata")
        return md

    def _role(self, role: str) -> Metadata[Targets] | None:
        """`role`'s persisted file if the snapshot names it and its delegator signs it."""
        if role in self._roles:
            return self._roles[role]
        self._roles[role] = None  # also stops a delegation cycle
        result = self._verified(role)
        self._roles[role] = result
        return result

    def _verified(self, role: str) -> Metadata[Targets] | None:
        meta = self._snapshot.signed.meta.get(f"{role}.json")
        data = self._read_file(role)
        if meta is None or data is None:
            return None
        try:
            meta.verify_length_and_hashes(data)
            md = Metadata.from_bytes(data)
            if not isinstance(md.signed, Targets) or md.signed.version != meta.version:
                return None
            if md.signed.is_expired(self._now):
                return None
            if role == Targets.type:
                self._root.verify_delegate(role, md)
                return md
            for parent in self._delegators(role):
                try:
                    parent.verify_delegate(role, md)
                    return md
                except tuf_errors.UnsignedMetadataError:
                    continue
        except (tuf_errors.RepositoryError, DeserializationError, ValueError):
            return None
        return None

    def _delegators(self, role: str) -> Iterator[Metadata[Targets]]:
        """Verified roles whose delegations name `role`."""
        for name, md in list(self._roles.items()):
            if md is None or name == role:
                continue
            delegations = md.signed.delegations
            if delegations is None:
                continue
            if delegations.roles is not None and role in delegations.roles:
                yield md
            elif delegations.succinct_roles is not None and (
                delegations.succinct_roles.is_delegated_role(role)
            ):
                yield md
