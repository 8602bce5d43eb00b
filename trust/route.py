"""Where a reference is verified: its origin under `[mirrors]`, its TUF source, its settings.

Pure functions of the reference, the settings and the rule, with no I/O and nothing of the
verifier imported, so that trust.prefetch asks exactly what trust.service asks (the service
imports them from here) before the verifier is loaded. Which trust server serves a registry is
trust.settings.trust_server_for, applied to the settings `settings_for` returns.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from trust.errors import InputError, PolicyError
from trust.policy import BUILTIN_DEFAULT, Policy, Rule
from trust.reference import Reference, parse_normalized_named
from trust.settings import Settings, TrustPinning, TrustSourceConfig, scope_matches

__all__ = ["mirror_origin", "repository_rule", "rule_for", "select_source", "settings_for"]


def rule_for(policy: Policy | None, ref: Reference) -> Rule:
    """The rule for `ref`: the policy's match, or without a configured policy the built-in
    default (an ordinary rule)."""
    return policy.match(ref) if policy is not None else BUILTIN_DEFAULT


def repository_rule(policy: Policy | None, ref: Reference) -> Rule:
    """The rule that says how `ref`'s repository is verified: its trust source, trust server,
    root pins and TOFU (`settings_for`, the service's source). That is the best rule without a
    `tag`, whichever rule decides the tag: a tag rule may not set them (one root, one server and
    one cache per repository), and its tags must not escape the repository rule's pins."""
    return rule_for(policy, ref.trimmed())


def select_source(ref: Reference, settings: Settings) -> TrustSourceConfig | None:
    """The configured source with the longest scope containing `ref`, or None for Notary."""
    best: TrustSourceConfig | None = None
    for source in settings.trust_sources:
        if scope_matches(source.scope, ref.name) and (
            best is None or len(source.scope) > len(best.scope)
        ):
            best = source
    return best


def mirror_origin(ref: Reference, settings: Settings) -> Reference | None:
    """`ref` mapped to its origin when it lies under a `[mirrors]` prefix, else None.

    Prefixes match by whole path segments and the longest wins; the rest of the path, the tag
    and the digest are kept, and the origin name is normalised as docker does
    (`harbor.corp/dockerhub/alpine` → `docker.io/library/alpine`). The loader refuses origins
    that overlap a mirror prefix, so an origin is never mapped again.
    """
    best: str | None = None
    for mirror in settings.mirrors:
        if scope_matches(mirror, ref.name) and (best is None or len(mirror) > len(best)):
            best = mirror
    if best is None:
        return None
    name = settings.mirrors[best] + ref.name[len(best) :]
    if "/" not in name:
        raise InputError(
            f"{ref.name} is the mirror prefix {best} itself, not a repository under it "
            f"(its origin {name} names no repository)"
        )
    try:
        origin = parse_normalized_named(name)
    except InputError as error:
        raise InputError(
            f"{ref.name} maps through the mirror {best} to {name}, which is not a valid "
            f"repository name: {error.message}"
        ) from error
    return dataclasses.replace(origin, tag=ref.tag, digest=ref.digest, tag_given=ref.tag_given)


def settings_for(rule: Rule, ref: Reference, settings: Settings) -> Settings:
    """The settings to verify `ref` with: the rule's trust server and pins override the file's."""
    changes: dict[str, Any] = {}
    if rule.trust_server:
        changes["trust_server_override"] = rule.trust_server
    if rule.root_keys or rule.root_ca or rule.tofu is not None:
        pinning = settings.trust_pinning
        certs = dict(pinning.certs)
        ca = dict(pinning.ca)
        if rule.root_keys or rule.root_ca:
            # The rule's pin replaces whatever the file pins for this GUN (certs, wildcard
            # certs and CA prefixes), so exactly the rule's pin applies.
            certs = {
                k: v
                for k, v in certs.items()
                if not (k == ref.name or (k.endswith("*") and ref.name.startswith(k[:-1])))
            }
            ca = {k: v for k, v in ca.items() if not ref.name.startswith(k)}
        if rule.root_keys:
            certs[ref.name] = rule.root_keys
        if rule.root_ca:
            if rule.root_ca_pem is None:  # a rule built in code, not parsed from a file
                raise PolicyError(f"rule {rule.label}: root_ca {rule.root_ca} was not read")
            ca[ref.name] = rule.root_ca_pem
        disable = pinning.disable_tofu if rule.tofu is None else not rule.tofu
        changes["trust_pinning"] = TrustPinning(certs=certs, ca=ca, disable_tofu=disable)
    return dataclasses.replace(settings, **changes) if changes else settings
