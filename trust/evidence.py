"""The verified facts a policy rule looks at (`trust.policy.Evidence`), one class per source.

They only read data that has already passed every check of its trust source; nothing here
decides anything (the requirements do) or fetches anything (the sources do).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping

from trust.errors import NoSuchTagError
from trust.lookup import lookup_tag
from trust.notary.trusted_set import TrustData
from trust.targets import SignedTarget

__all__ = ["NotaryEvidence", "TufEvidence"]


class NotaryEvidence:
    """`trust.policy.Evidence` over verified Notary trust data."""

    source = "notary"

    def __init__(self, data: TrustData) -> None:
        self._data = data

    @property
    def gun(self) -> str:
        return self._data.gun

    @property
    def first_use(self) -> bool:
        return self._data.first_use

    @property
    def root_pinned(self) -> bool:
        return not self._data.root_check.tofu

    def repository_target(self, tag: str) -> SignedTarget:
        return lookup_tag(self._data, tag)

    def has_role(self, role: str) -> bool:
        return role in self._data.roles

    def signed_by(self, role: str, tag: str) -> SignedTarget | None:
        loaded = self._data.roles.get(role)
        meta = loaded.targets.targets.get(tag) if loaded and loaded.allows(tag) else None
        if meta is None:
            return None
        raw = meta.hashes.get("sha256", b"")
        if len(raw) != 32 or meta.length < 1:
            return None  # not a usable signature: the signer did not sign it
        return SignedTarget(tag, "sha256:" + raw.hex(), meta.length, role)

    def expiries(self, roles: Iterable[str]) -> Mapping[str, dt.datetime]:
        data = self._data
        found = {
            "root": data.root.expires,
            "timestamp": data.timestamp.expires,
            "snapshot": data.snapshot.expires,
        }
        for role in roles:
            loaded = data.roles.get(role)
            if loaded is not None:
                found[role] = loaded.targets.expires
        return found


class TufEvidence:
    """`trust.policy.Evidence` for a TUF source: the Updater chose the digest; signer roles,
    root pins and TOFU are Notary notions that `Context.notary` refuses for it."""

    source = "tuf"
    first_use = False
    root_pinned = True

    def __init__(self, gun: str, targets: Mapping[str, SignedTarget]) -> None:
        self.gun = gun
        self._targets = targets

    def repository_target(self, tag: str) -> SignedTarget:
        found = self._targets.get(tag)
        if found is None:
            raise NoSuchTagError(f"No valid trust data for {tag}")
        return found

    def has_role(self, role: str) -> bool:
        return False

    def signed_by(self, role: str, tag: str) -> SignedTarget | None:
        return None

    def expiries(self, roles: Iterable[str]) -> Mapping[str, dt.datetime]:
        return {}
