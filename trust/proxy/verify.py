"""The proxy's one call into verification: the same `TrustService` every front end asks.

Everything else in trust/proxy uses only `verify_reference`, `request_credentials` and
`Verified`; source selection, policy rules, tag / digest / all-tags handling, the cache and TOFU
are the service's. A new service is made per request so that freshness is exactly the CLI's
(every pull fetches the timestamp); what outlives a request is the trust cache and the
`Kept` state (connections and tokens per credentials, verified results reused only when the
new timestamp and the cache are unchanged), so a warm pull is one request.

Credentials for the trust server's token flow are the client's, from the request being decided
(issue 12 X49, attacks.md J07), never the proxy user's docker configuration.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from trust.credentials import (
    CredentialSource,
    RegistryAuth,
    from_engine_header,
    from_registry_config,
)
from trust.errors import TrustpullError
from trust.notary.pool import Kept
from trust.policy import Policy
from trust.reference import Reference
from trust.service import TrustService, mirror_origin
from trust.settings import Settings

__all__ = [
    "Kept",
    "Pin",
    "Verified",
    "request_credentials",
    "rule_for",
    "verify_reference",
]


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

    def fixes_content(self, ref: Reference) -> bool:
        """Whether `ref`, as it verified, names fixed content the engine may act on later by
        itself (a swarm worker, a plugin enable): a digest reference (verified as signed), or a
        name a rule accepts unsigned. A tag alone says nothing of what the engine will find."""
        return self.unsigned is not None or ref.digest is not None


def request_credentials(ref: Reference, header: Callable[[str], str | None]) -> CredentialSource:
    """The credentials a client's request carries, per registry, for verifying `ref`.

    A build's `X-Registry-Config` gives each registry its own entry; otherwise the request's
    `X-Registry-Auth` is the credentials of the registry of the image it names (`ref`), and of
    no other. Without either header a request is anonymous: the proxy's own docker
    configuration is never consulted for a client's request.
    """
    registry_config = header("X-Registry-Config")
    registry_auth = header("X-Registry-Auth")

    def source(domain: str) -> RegistryAuth | None:
        if registry_config is not None:
            return from_registry_config(registry_config, domain)
        if domain != ref.domain:
            return None
        return from_engine_header(registry_auth, domain)

    return source


def _anonymous(_domain: str) -> RegistryAuth | None:
    return None


def verify_reference(
    settings: Settings,
    policy: Policy | None,
    ref: Reference,
    *,
    all_tags: bool = False,
    credentials: CredentialSource = _anonymous,
    kept: Kept | None = None,
) -> Verified:
    """Verify `ref` under `settings` and `policy` with the request's `credentials`; raise a
    TrustpullError subclass."""
    notices: list[str] = []
    verification = TrustService(
        settings, policy, notice=notices.append, credentials=credentials, kept=kept
    ).verify(ref, all_tags=all_tags)
    pins = tuple(
        Pin(r.tag, r.digest, r.reference, tuple(r.signers) or (r.role,))
        for r in verification.resolutions
    )
    label = (
        verification.rule.label
        if verification.rule is not None
        else rule_for(policy, ref, settings)
    )
    return Verified(pins, unsigned=verification.unsigned, rule=label, notices=tuple(notices))


def rule_for(policy: Policy | None, ref: Reference, settings: Settings | None = None) -> str:
    """The label of the rule that applies to `ref` (for log lines and refusals): under a
    `[mirrors]` prefix the origin's, as the service applies it."""
    if policy is None:
        return "builtin-default"
    if settings is not None:
        try:
            ref = mirror_origin(ref, settings) or ref
        except TrustpullError:
            pass  # the service refused the name itself; the mirror name's rule is logged
    return policy.match(ref).label
