"""The proxy's ONE call into verification (re-pointed to trust.service at merge time).

Everything else in trust/proxy uses only `verify_reference` and `Verified`; how the trust data
is fetched and checked (Notary or TUF source, policy rules, cache, TOFU) is the CLI's own path:
today `trust.pull.resolve_reference`, which applies the configured policy and trust sources.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from trust.config import Settings
from trust.reference import Reference

__all__ = ["Pin", "Verified", "rule_for", "verify_reference"]


@dataclass(frozen=True)
class Pin:
    tag: str | None
    digest: str
    #: The pinned reference as trustpull prints it (`NAME:TAG@sha256:…`).
    reference: str
    #: Who signed it (role names), for the verified line; may be empty.
    signers: tuple[str, ...] = ()


@dataclass(frozen=True)
class Verified:
    pins: tuple[Pin, ...]
    #: Set only when a policy rule explicitly accepts the repository unsigned (no pins then).
    unsigned: str | None = None
    rule: str = "default"
    notices: tuple[str, ...] = ()


def verify_reference(settings: Settings, ref: Reference, *, all_tags: bool = False) -> Verified:
    """Verify `ref` under `settings` (its policy included); raise a TrustpullError subclass."""
    from trust.policy import UnsignedAccepted
    from trust.pull import resolve_reference

    notices: list[str] = []
    notice: Callable[[str], None] = notices.append
    try:
        resolutions = resolve_reference(ref, settings, all_tags=all_tags, notice=notice)
    except UnsignedAccepted as accepted:
        return Verified((), unsigned=accepted.message, rule=_rule_label(accepted.rule))
    pins = tuple(
        Pin(r.tag, r.digest, r.reference, tuple(r.signers) or (r.role,)) for r in resolutions
    )
    return Verified(pins, rule=rule_for(settings, ref), notices=tuple(notices))


def _rule_label(rule: object) -> str:
    for attr in ("label", "name", "scope", "pattern"):
        value = getattr(rule, attr, None)
        if isinstance(value, str) and value:
            return value
    return str(rule)


def rule_for(settings: Settings, ref: Reference) -> str:
    """The label of the policy rule that applies to `ref` (for log lines only)."""
    policy = settings.policy
    if policy is None:
        return "default"
    match = getattr(policy, "match", None) or getattr(policy, "rule_for", None)
    if match is None:
        return "policy"
    try:
        return _rule_label(match(ref))
    except Exception:  # a label only; the verdict came from resolve_reference
        return "policy"
