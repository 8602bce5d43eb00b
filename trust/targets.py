"""The values every trust source answers with: a signed tag → digest, and a verified answer.

Notary's lookup (`trust.lookup`), the TUF source's verified view (`trust.tufview`), the policy
requirements and the verification service all speak these types, so no room needs another
room's copy of them (imports only `trust.reference`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from trust.reference import Reference

__all__ = ["REPO_ADMIN", "Resolution", "SignedTarget", "natural_key", "pinned_reference"]


@dataclass(frozen=True)
class SignedTarget:
    """One signed tag: the digest comes only from `hashes.sha256` (dct.md §6.18)."""

    tag: str
    #: `sha256:<64 hex>` of the manifest.
    digest: str
    #: The manifest's length in bytes as signed.
    size: int
    #: The role whose signed targets list carried it (`targets`, `targets/releases`, ...).
    role: str


REPO_ADMIN = "Repo Admin"


@dataclass(frozen=True)
class Resolution:
    """A verified tag → digest answer; the JSON keys of `trustpull resolve`."""

    reference: str
    name: str
    tag: str | None
    digest: str
    size: int
    role: str
    signers: tuple[str, ...]
    trust_server: str
    root_key_id: str
    source: str = "notary"
    warnings: tuple[str, ...] = field(default=(), compare=False)
    #: Set when the reference came through a `[mirrors]` entry: the origin repository whose
    #: trust data verified the digest; `reference` and `name` then stay the mirror's.
    origin: str | None = None

    def to_json(self) -> dict[str, object]:
        item: dict[str, object] = {
            "reference": self.reference,
            "name": self.name,
            "tag": self.tag,
            "digest": self.digest,
            "size": self.size,
            "role": self.role,
            "signers": list(self.signers),
            "trust_server": self.trust_server,
            "root_key_id": self.root_key_id,
            "source": self.source,
        }
        if self.origin is not None:
            item["origin"] = self.origin  # only through a mirror: the other keys are unchanged
        return item


def pinned_reference(ref: Reference, tag: str, digest: str) -> Reference:
    """`NAME@sha256:X` stays digest-only; anything else is pinned to `NAME:TAG@sha256:X`."""
    pinned = ref.trimmed()
    if ref.digest is None or ref.tag_given:
        pinned = pinned.with_tag(tag)
    return pinned.with_digest(digest)


def natural_key(text: str) -> list[tuple[int, int | str]]:
    """Natural order (digit runs compare as numbers), as docker sorts signed tags."""
    return [
        (0, int(chunk)) if chunk.isdigit() else (1, chunk) for chunk in re.findall(r"\d+|\D+", text)
    ]
