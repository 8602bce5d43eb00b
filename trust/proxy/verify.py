"""The proxy's one call into verification: the same `TrustService` every front end asks.

Everything else in trust/proxy uses only `verify_reference` and `Verified`; source selection,
policy rules, tag / digest / all-tags handling, the cache and TOFU are the service's. A new
service is made per request so that freshness is exactly the CLI's (every pull fetches the
timestamp); the trust cache and kept tokens carry verified state from one request to the next.
"""

from __future__ import annotations

from dataclasses import dataclass

from trust.policy import Policy
from trust.reference import Reference
from trust.service import TrustService
from trust.settings import Settings

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


def verify_reference(
    settings: Settings, policy: Policy | None, ref: Reference, *, all_tags: bool = False
) -> Verified:
    """Verify `ref` under `settings` and `policy`; raise a TrustpullError subclass."""
    notices: list[str] = []
    verification = TrustService(settings, policy, notice=notices.append).verify(
        ref, all_tags=all_tags
    )
    pins = tuple(
        Pin(r.tag, r.digest, r.reference, tuple(r.signers) or (r.role,))
        for r in verification.resolutions
    )
    label = verification.rule.label if verification.rule is not None else rule_for(policy, ref)
    return Verified(pins, unsigned=verification.unsigned, rule=label, notices=tuple(notices))


def rule_for(policy: Policy | None, ref: Reference) -> str:
    """The label of the rule that applies to `ref` (for log lines and refusals)."""
    return policy.match(ref).label if policy is not None else "builtin-default"
