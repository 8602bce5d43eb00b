"""The `[[rules]]` parser: TOML values in, a validated `trust.policy.Policy` out.

Strict, like the rest of the configuration: an unknown key, a bad tag pattern or a wrong type is
refused with the file, line and field, because a typo in a security rule must never be silently
ignored. The file itself is read by `trust.config`; this module only validates values.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from trust.errors import ConfigError, InputError
from trust.policy import REPOSITORY_SETTINGS_PROBLEM, Policy, Rule, Scope, parse_duration
from trust.reference import (
    DEFAULT_DOMAIN,
    DOMAIN_AND_PORT_RE,
    LEGACY_DEFAULT_DOMAIN,
    OFFICIAL_REPO_PREFIX,
    REMOTE_NAME,
    go_glob_to_regex,
)
from trust.settings import TrustSourceConfig, scope_matches, validate_trust_server_url

__all__ = ["FailFunc", "check_trust_sources", "parse_rules"]

# Compiled on first use (functools.cache): a command without a policy file compiles none.


@functools.cache
def _remote_name_re() -> re.Pattern[str]:
    return re.compile(REMOTE_NAME, re.ASCII)


@functools.cache
def _rule_name_re() -> re.Pattern[str]:
    return re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", re.ASCII)


@functools.cache
def _signer_re() -> re.Pattern[str]:
    return re.compile(r"(?:targets/)?[a-z0-9_-]+(?:/[a-z0-9_-]+)*", re.ASCII)


@functools.cache
def _key_id_re() -> re.Pattern[str]:
    return re.compile(r"[0-9a-f]{64}", re.ASCII)


_RULE_KEYS = {
    "name",
    "registry",
    "namespace",
    "repository",
    "tag",
    "refuse",
    "allow_unsigned",
    "signers",
    "threshold",
    "root_keys",
    "root_ca",
    "tofu",
    "trust_server",
    "trust_source",
    "min_validity",
}
_REQUIREMENT_KEYS = _RULE_KEYS - {"name", "registry", "namespace", "repository", "tag"}

#: (rule index, key or None, problem) → the error to raise, naming file and line.
FailFunc = Callable[[int, str | None, str], ConfigError]


def _string(entry: dict[str, Any], index: int, key: str, fail: FailFunc) -> str | None:
    value = entry.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise fail(index, key, "must be a non-empty string")
    return value


def _bool(entry: dict[str, Any], index: int, key: str, fail: FailFunc) -> bool | None:
    value = entry.get(key)
    if value is not None and not isinstance(value, bool):
        raise fail(index, key, "must be true or false")
    return value


def _strings(entry: dict[str, Any], index: int, key: str, fail: FailFunc) -> tuple[str, ...]:
    value = entry.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise fail(index, key, "must be a list of non-empty strings")
    if len(set(value)) != len(value):
        raise fail(index, key, "lists the same value twice")
    return tuple(value)


def _parse_scope(entry: dict[str, Any], index: int, fail: FailFunc) -> Scope:
    registry = _string(entry, index, "registry", fail)
    namespace = _string(entry, index, "namespace", fail)
    repository = _string(entry, index, "repository", fail)
    tag = _string(entry, index, "tag", fail)
    if registry is not None:
        if not DOMAIN_AND_PORT_RE.fullmatch(registry) or registry != registry.lower():
            raise fail(index, "registry", "must be a lower-case registry host[:port]")
        if registry == LEGACY_DEFAULT_DOMAIN:
            registry = DEFAULT_DOMAIN
    if (namespace is not None or repository is not None) and registry is None:
        key = "namespace" if namespace is not None else "repository"
        raise fail(index, key, 'needs "registry" too (use "docker.io" for Docker Hub)')
    if namespace is not None and repository is not None:
        raise fail(index, "namespace", 'give "namespace" or "repository", not both')
    for key, value in (("namespace", namespace), ("repository", repository)):
        if value is not None and not _remote_name_re().fullmatch(value):
            raise fail(
                index, key, "must be a repository path (lower-case components separated by /)"
            )
    if registry == DEFAULT_DOMAIN and repository is not None and "/" not in repository:
        repository = OFFICIAL_REPO_PREFIX + repository
    if tag is not None:
        try:
            go_glob_to_regex(tag)
        except ValueError:
            raise fail(index, "tag", f"bad pattern {tag!r}: syntax error in pattern") from None
    return Scope(registry=registry, namespace=namespace, repository=repository, tag=tag)


def _parse_rule(
    entry: dict[str, Any], index: int, fail: FailFunc, base_dir: Path, origin: str
) -> Rule:
    for key in entry:
        if key not in _RULE_KEYS:
            raise fail(index, key, "unknown key")
    name = _string(entry, index, "name", fail)
    if name is not None and not _rule_name_re().fullmatch(name):
        raise fail(index, "name", "must be letters, digits, '.', '_' or '-' (at most 64)")
    scope = _parse_scope(entry, index, fail)
    refuse = bool(_bool(entry, index, "refuse", fail))
    if refuse:
        others = sorted(k for k in entry if k in _REQUIREMENT_KEYS and k != "refuse")
        if others:
            raise fail(index, others[0], "a rule with refuse = true takes no other requirement")
    allow_unsigned = bool(_bool(entry, index, "allow_unsigned", fail))
    signers = _strings(entry, index, "signers", fail)
    for signer in signers:
        if not _signer_re().fullmatch(signer) or signer in ("targets", "targets/"):
            raise fail(index, "signers", f"{signer!r} is not a delegation role name")
    threshold = entry.get("threshold")
    if threshold is not None:
        if isinstance(threshold, bool) or not isinstance(threshold, int):
            raise fail(index, "threshold", "must be an integer")
        if not signers:
            raise fail(index, "threshold", 'needs "signers"')
        if not 1 <= threshold <= len(signers):
            raise fail(index, "threshold", f"must be between 1 and {len(signers)}")
    root_keys = _strings(entry, index, "root_keys", fail)
    for key_id in root_keys:
        if not _key_id_re().fullmatch(key_id):
            raise fail(index, "root_keys", f"{key_id!r} is not a 64-hex key ID")
    root_ca = _string(entry, index, "root_ca", fail)
    root_ca_pem = None
    if root_ca is not None:
        resolved = (base_dir / root_ca).resolve()
        if not resolved.is_file():
            raise fail(index, "root_ca", f"CA file {resolved} does not exist")
        try:
            root_ca_pem = resolved.read_bytes()
        except OSError as exc:
            problem = f"cannot read the CA file {resolved}: {exc.strerror}"
            raise fail(index, "root_ca", problem) from None
        root_ca = str(resolved)
    if root_keys and root_ca:
        raise fail(index, "root_ca", 'give "root_keys" or "root_ca", not both')
    tofu = _bool(entry, index, "tofu", fail)
    trust_server = _string(entry, index, "trust_server", fail)
    if trust_server is not None:
        try:
            trust_server = validate_trust_server_url(trust_server)
        except InputError as exc:
            raise fail(index, "trust_server", exc.message) from None
    trust_source = _string(entry, index, "trust_source", fail)
    min_validity = None
    if "min_validity" in entry:
        try:
            min_validity = parse_duration(entry["min_validity"])
        except ValueError as exc:
            raise fail(index, "min_validity", str(exc)) from None
    if scope.tag is not None:
        for key in (
            "allow_unsigned",
            "root_keys",
            "root_ca",
            "tofu",
            "trust_server",
            "trust_source",
        ):
            # `tofu` in either value changes the repository's pinning; the others when set.
            if key in entry and (key == "tofu" or entry[key] not in (False, [], None)):
                raise fail(index, key, REPOSITORY_SETTINGS_PROBLEM)
    return Rule(
        label=name or f"rules[{index}]",
        index=index,
        scope=scope,
        origin=origin,
        refuse=refuse,
        allow_unsigned=allow_unsigned,
        signers=signers,
        threshold=threshold,
        root_keys=root_keys,
        root_ca=root_ca,
        root_ca_pem=root_ca_pem,
        tofu=tofu,
        trust_server=trust_server,
        trust_source=trust_source,
        min_validity=min_validity,
    )


def parse_rules(
    value: object,
    fail: FailFunc,
    *,
    base_dir: Path,
    origin: Callable[[int], str],
    source: str,
) -> Policy:
    """Validate `[[rules]]` strictly; `fail` names file, line and field; `origin(i)` gives
    `file:line` of rule i for messages. Relative paths are taken from `base_dir`."""
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise fail(-1, None, "must be an array of tables ([[rules]])")
    rules: list[Rule] = []
    names: dict[str, int] = {}
    scopes: dict[Scope, int] = {}
    for index, entry in enumerate(value):
        rule = _parse_rule(entry, index, fail, base_dir, origin(index))
        if rule.label in names:
            raise fail(index, "name", f"same name as rules[{names[rule.label]}]")
        names[rule.label] = index
        if rule.scope in scopes:
            scope_keys = ("tag", "repository", "namespace", "registry")
            key = next((k for k in scope_keys if k in entry), None)
            raise fail(index, key, f"same scope as rules[{scopes[rule.scope]}]")
        scopes[rule.scope] = index
        rules.append(rule)
    return Policy(rules=tuple(rules), origin=source)


def check_mirror_scopes(policy: Policy, mirrors: Mapping[str, str], fail: FailFunc) -> None:
    """A rule may not lie wholly under a `[mirrors]` prefix: rules match on the origin's names
    (the service maps a mirrored reference before any rule is chosen), so such a rule would
    match nothing, and a `refuse`, pin or signer requirement written there would silently
    not apply."""
    for rule in policy.rules:
        scope = rule.scope
        if scope.registry is None:
            continue
        path = scope.repository or scope.namespace
        covered = scope.registry + (f"/{path}" if path else "")
        for mirror, origin in mirrors.items():
            if scope_matches(mirror, covered):
                key = "repository" if scope.repository else "namespace" if path else "registry"
                raise fail(
                    rule.index,
                    key,
                    f"{covered} lies under the mirror {mirror}, and rules match the origin's "
                    f"names ({origin}{covered[len(mirror) :]}): this rule would match nothing; "
                    "scope it on the origin",
                )


def check_trust_sources(
    policy: Policy, sources: Sequence[TrustSourceConfig], fail: FailFunc
) -> None:
    """A rule's `trust_source` must be "notary" or the scope of a `[[trust_sources]]` entry."""
    known = {source.scope for source in sources}
    for rule in policy.rules:
        if rule.trust_source is not None and rule.trust_source != "notary":
            if rule.trust_source not in known:
                expected = ", ".join(sorted(known)) or "none configured"
                raise fail(
                    rule.index,
                    "trust_source",
                    f'must be "notary" or the scope of a [[trust_sources]] entry ({expected})',
                )
