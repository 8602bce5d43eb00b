"""Tag to digest, over verified trust data, the way docker reads it (dct.md §1.6, §1.11, §2.12).

Everything here works on a `TrustData` that has already been verified: this module decides only
*which* signed entry counts. docker's rule is kept exactly: a tag counts only if it is first
found in `targets/releases` or in `targets` (pass 1 walks the `targets/releases` subtree, pass 2
`targets` and the other delegations); a first hit anywhere else means "not signed".

Two deliberate differences from docker, both stricter: a digest in the reference never turns
trust off (`NAME@sha256:X` must be signed for some tag, `NAME:TAG@sha256:X` must be the tag's
signed digest; attacks.md I04, I05), and a target's sha256 must be exactly 32 bytes.
"""

from __future__ import annotations

from collections.abc import Iterator

from trust.errors import MalformedError, NoSuchTagError, NoTrustDataError
from trust.notary.metadata import FileMeta
from trust.notary.trusted_set import LOOKUP_ROLES, RELEASES_ROLE, TrustData
from trust.reference import Reference
from trust.targets import (
    REPO_ADMIN,
    Resolution,
    SignedTarget,
    natural_key,
    pinned_reference,
)

__all__ = [
    "REPO_ADMIN",
    "Resolution",
    "SignedTarget",
    "find_by_digest",
    "inspect_repository",
    "list_signed_tags",
    "lookup_tag",
    "natural_key",
    "pinned_reference",
    "resolution_for",
]


def _convert(tag: str, meta: FileMeta, role: str) -> SignedTarget:
    digest = meta.hashes.get("sha256")
    if digest is None or len(digest) != 32:
        # docker's convertTarget message; attacks.md C09.
        raise MalformedError(f"no valid hash, expecting sha256 (tag {tag!r} in {role})")
    if meta.length < 1:
        raise MalformedError(f"tag {tag!r} in {role} has an invalid length {meta.length}")
    return SignedTarget(tag=tag, digest="sha256:" + digest.hex(), size=meta.length, role=role)


def _walk(data: TrustData, target: str, role_path: str, skip: tuple[str, ...]) -> Iterator[str]:
    """notary's WalkTargets: breadth-first, yielding the roles that would be visited."""
    queue = ["targets"]
    while queue:
        role = queue.pop(0)
        loaded = data.roles.get(role)
        if loaded is None:
            continue  # not loaded (skipped or not listed): its subtree is passed over too
        if role_path.startswith(role + "/"):
            queue.extend(data.children(role))
            continue
        in_scope = role_path in ("", role) or role.startswith(role_path + "/")
        if (not target or loaded.allows(target)) and in_scope and role not in skip:
            yield role
            queue.extend(data.children(role))


def _first_hit(data: TrustData, tag: str) -> tuple[str, FileMeta] | None:
    """GetTargetByName(tag, "targets/releases", "targets")."""
    for index, role_path in enumerate(LOOKUP_ROLES):
        skip = LOOKUP_ROLES[:index] + LOOKUP_ROLES[index + 1 :]
        for role in _walk(data, tag, role_path, skip):
            meta = data.roles[role].targets.targets.get(tag)
            if meta is not None:
                return role, meta
    return None


def lookup_tag(data: TrustData, tag: str) -> SignedTarget:
    """The signed digest of `tag`, or NoSuchTagError exactly where docker refuses."""
    hit = _first_hit(data, tag)
    if hit is None:
        raise NoSuchTagError(f"No valid trust data for {tag}")
    role, meta = hit
    if role not in LOOKUP_ROLES:
        raise NoSuchTagError(
            f"No trust data for {tag}",
            hint=f"the tag is signed only in {role}, which docker does not accept for a pull",
        )
    return _convert(tag, meta, role)


def list_signed_tags(data: TrustData) -> list[SignedTarget]:
    """ListTargets("targets/releases", "targets") restricted to those two roles (`-a`)."""
    seen: dict[str, SignedTarget] = {}
    for index, role_path in enumerate(LOOKUP_ROLES):
        skip = LOOKUP_ROLES[:index] + LOOKUP_ROLES[index + 1 :]
        for role in _walk(data, "", role_path, skip):
            loaded = data.roles[role]
            for tag, meta in loaded.targets.targets.items():
                if tag in seen or not loaded.allows(tag) or role not in LOOKUP_ROLES:
                    continue
                seen[tag] = _convert(tag, meta, role)
    if not seen:
        raise NoTrustDataError(f"No trusted tags for {data.gun}")
    return sorted(seen.values(), key=lambda t: natural_key(t.tag))


def find_by_digest(data: TrustData, digest: str) -> SignedTarget:
    """A tag signed (in the roles docker reads) for exactly `digest` (attacks.md I04)."""
    matches = [t for t in list_signed_tags(data) if t.digest == digest]
    if not matches:
        raise NoSuchTagError(
            f"digest {digest} is not signed for any tag of {data.gun}",
            hint="trustpull pulls a digest only when it is a signed tag's digest",
        )
    return matches[0]


def _signers_of(data: TrustData, tag: str, digest: str) -> tuple[str, ...]:
    names = []
    for role in _walk(data, tag, "", ()):
        if role in LOOKUP_ROLES:
            continue
        meta = data.roles[role].targets.targets.get(tag)
        if meta is not None and "sha256:" + meta.hashes.get("sha256", b"").hex() == digest:
            names.append(role.removeprefix("targets/"))
    return tuple(sorted(set(names))) or (REPO_ADMIN,)


def root_key_id(data: TrustData) -> str:
    """The canonical ID of the root key (the name of its private key file), as users pin it."""
    ids = sorted(key.canonical_id for key in data.root_check.leaf_keys.values())
    return ids[0] if ids else ""


def resolution_for(
    data: TrustData, ref: Reference, target: SignedTarget, trust_server: str
) -> Resolution:
    """The answer for `ref`: `NAME@sha256:X` stays digest-only, anything else is pinned
    to `NAME:TAG@sha256:X`; `tag` is always the signed tag that vouches for the digest."""
    return Resolution(
        reference=str(pinned_reference(ref, target.tag, target.digest)),
        name=ref.name,
        tag=target.tag,
        digest=target.digest,
        size=target.size,
        role=target.role,
        signers=_signers_of(data, target.tag, target.digest),
        trust_server=trust_server,
        root_key_id=root_key_id(data),
        warnings=data.warnings,
    )


# --------------------------------------------------------------------------- inspect


def inspect_repository(data: TrustData, name_as_typed: str, tag: str | None) -> dict[str, object]:
    """`docker trust inspect`'s JSON object for one repository (dct.md §1.11)."""
    hits: list[tuple[str, str, str]] = []  # (role, tag, digest hex)
    for role in _walk(data, tag or "", "", ()):
        loaded = data.roles[role]
        for target_name, meta in loaded.targets.targets.items():
            if tag and target_name != tag:
                continue
            if not loaded.allows(target_name):
                continue
            hits.append((role, target_name, meta.hashes.get("sha256", b"").hex()))
    released: dict[tuple[str, str], list[str]] = {}
    for role, target_name, digest in hits:
        if role in LOOKUP_ROLES:
            released.setdefault((target_name, digest), [])
    for role, target_name, digest in hits:
        key = (target_name, digest)
        if key in released and role not in LOOKUP_ROLES:
            released[key].append(role.removeprefix("targets/"))
    signed_tags = [
        {"SignedTag": t, "Digest": d, "Signers": sorted(signers) or [REPO_ADMIN]}
        for (t, d), signers in sorted(released.items(), key=lambda item: natural_key(item[0][0]))
    ]
    signer_keys: dict[str, list[str]] = {}
    for loaded in data.roles.values():
        for delegation in loaded.targets.delegations:
            if delegation.name == RELEASES_ROLE:
                continue
            keys = loaded.targets.delegation_keys
            signer_keys[delegation.name.removeprefix("targets/")] = [
                keys[keyid].canonical_id for keyid in delegation.keyids if keyid in keys
            ]
    signers = [
        {"Name": signer, "Keys": [{"ID": key} for key in keys]}
        for signer, keys in sorted(signer_keys.items(), reverse=True)
    ]
    admin = [
        {"Name": "Root", "Keys": [{"ID": k} for k in data.root.roles["root"].keyids]},
        {"Name": "Repository", "Keys": [{"ID": k} for k in data.root.roles["targets"].keyids]},
    ]
    return {
        "Name": name_as_typed,
        "SignedTags": signed_tags,
        "Signers": signers,
        "AdministrativeKeys": admin,
    }
