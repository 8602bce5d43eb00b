"""The signed tag → digest value every trust source answers with (a leaf: imports nothing).

Notary's lookup (`trust.lookup`), the TUF source's verified view, the policy requirements and
the verification service all speak this one type, so no room needs another room's copy of it.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SignedTarget"]


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
