"""Signing policy: rules scoped by image reference, each with small requirement objects.

A policy is a list of rules (`[[rules]]` in the config file, or a rules-only file given with
`--policy`). Each rule has a scope (registry, namespace, repository, tag pattern) and
requirements. For one reference the most specific matching scope wins (repository over
namespace over registry over the default; a deeper namespace over a shallower one; then an exact
tag over a tag pattern over no tag; then file order), as in containers-policy.json. Without a
matching rule the built-in default applies: signed by the repository's own keys, docker's lookup.

Requirements follow sigstore-python's policy shape: tiny objects with one `verify(ctx)` that
returns None or raises `PolicyError` (exit 9), composed with `AllOf`/`AtLeast`. They run over
trust data that `NotaryClient` has already verified; a verification failure never becomes a
policy verdict (it keeps its own exit code, 5 for a possible attack).

Fail-closed rules kept here:
- "unsigned" is accepted only by a rule that says so, only when the trust server answered that
  the repository has no trust data (`NoTrustDataError` from the client's first-use root fetch)
  and nothing is cached for it; every other failure still refuses (`UnsignedAccepted` carries
  the one message that every such pull must print);
- a signer named by a matching rule is on the lookup path: the client fails closed on any error
  of that role (exit 5) instead of skipping it, so "missing signer" (exit 9) only ever means the
  role is not delegated or did not sign.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from trust.errors import (
    ConfigError,
    InputError,
    NoTrustDataError,
    NotSignedError,
    PolicyError,
    TrustPinError,
    TrustpullError,
    combined_exit_code,
)
from trust.reference import (
    _REMOTE_NAME,
    DEFAULT_DOMAIN,
    DOMAIN_AND_PORT_RE,
    LEGACY_DEFAULT_DOMAIN,
    OFFICIAL_REPO_PREFIX,
    Reference,
    _go_glob_to_regex,
)

if TYPE_CHECKING:
    from trust.config import Settings
    from trust.notary.client import NotaryClient
    from trust.notary.trusted_set import TrustData
    from trust.resolve import Resolution, SignedTarget
    from trust.sources import TrustSourceConfig

__all__ = [
    "BUILTIN_DEFAULT",
    "AllOf",
    "AtLeast",
    "Context",
    "Evaluator",
    "MinValidity",
    "NoTrustOnFirstUse",
    "Outcome",
    "PinnedRoot",
    "Policy",
    "Refuse",
    "Requirement",
    "Rule",
    "Scope",
    "SignedBy",
    "SignedByRepository",
    "UnsignedAccepted",
    "parse_duration",
    "parse_rules",
    "resolve_with_policy",
]

_REMOTE_NAME_RE = re.compile(_REMOTE_NAME, re.ASCII)
_RULE_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", re.ASCII)
_SIGNER_RE = re.compile(r"(?:targets/)?[a-z0-9_-]+(?:/[a-z0-9_-]+)*", re.ASCII)
_KEY_ID_RE = re.compile(r"[0-9a-f]{64}", re.ASCII)
_DURATION_RE = re.compile(r"(?:\d+[wdhms])+", re.ASCII)
_UNITS = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}


class UnsignedAccepted(NoTrustDataError):
    """The repository has no trust data and the matching rule accepts that explicitly.

    A `NotSignedError` on purpose: a caller that does not know about it (anything that needs a
    digest) refuses with exit 4; only the pull path and `check` treat it as accepted.
    """

    kind = "UnsignedAccepted"

    def __init__(self, message: str, rule: Rule) -> None:
        super().__init__(message)
        self.rule = rule


def parse_duration(value: object) -> float:
    """`"7d"`, `"12h"`, `"1d12h"`, `"90m"`, `"30s"`, `"2w"` or an integer of seconds."""
    if isinstance(value, bool):
        raise ValueError('must be a duration such as "7d", "12h" or a number of seconds')
    if isinstance(value, int):
        if value < 0:
            raise ValueError("must not be negative")
        return float(value)
    if isinstance(value, str) and _DURATION_RE.fullmatch(value):
        return float(
            sum(int(n) * _UNITS[u] for n, u in re.findall(r"(\d+)([wdhms])", value, re.ASCII))
        )
    raise ValueError('must be a duration such as "7d", "12h", "1d12h" or a number of seconds')


def _format_duration(seconds: float) -> str:
    left = int(seconds)
    parts = []
    for unit, size in _UNITS.items():
        if left >= size:
            parts.append(f"{left // size}{unit}")
            left %= size
    return "".join(parts) or "0s"


# ------------------------------------------------------------------------------ scope


@dataclass(frozen=True)
class Scope:
    """Which references a rule covers; every field left out matches anything."""

    registry: str | None = None
    #: Repository path prefix, by whole segments: `team` covers `team/app`, `team/x/y`.
    namespace: str | None = None
    #: The exact repository path under the registry (`library/alpine` for Docker Hub's).
    repository: str | None = None
    #: Go `path.Match` glob over the tag; a reference without a tag (digest only) never matches.
    tag: str | None = None

    def matches(self, ref: Reference) -> bool:
        if self.registry is not None and ref.domain != self.registry:
            return False
        if self.namespace is not None and not ref.path.startswith(self.namespace + "/"):
            return False
        if self.repository is not None and ref.path != self.repository:
            return False
        if self.tag is not None:
            if ref.tag is None:
                return False
            return re.fullmatch(_go_glob_to_regex(self.tag), ref.tag, re.DOTALL) is not None
        return True

    @property
    def specificity(self) -> tuple[int, int, int, int]:
        """Sort key: repository > namespace (deeper first) > registry > none; then the tag."""
        if self.repository is not None:
            level, depth = 3, 0
        elif self.namespace is not None:
            level, depth = 2, self.namespace.count("/") + 1
        elif self.registry is not None:
            level, depth = 1, 0
        else:
            level, depth = 0, 0
        if self.tag is None:
            tag_rank, literal = 0, 0
        elif re.search(r"[*?\[\\]", self.tag) is None:
            tag_rank, literal = 2, len(self.tag)
        else:
            tag_rank, literal = 1, len(re.sub(r"\[[^\]]*\]|[*?\\]", "", self.tag))
        return level, depth, tag_rank, literal

    @property
    def is_default(self) -> bool:
        return self == Scope()

    def describe(self) -> str:
        if self.is_default:
            return "every image (default rule)"
        where = self.registry or "any registry"
        if self.repository is not None:
            where = f"{where}/{self.repository}"
        elif self.namespace is not None:
            where = f"{where}/{self.namespace}/*"
        return where + (f" tag {self.tag}" if self.tag is not None else "")


# ------------------------------------------------------------------------------ requirements


@dataclass(frozen=True)
class Context:
    """What a requirement looks at: the reference, its rule, verified data and chosen target."""

    ref: Reference
    rule: Rule
    now: dt.datetime
    #: Verified Notary trust data; None for a TUF source (python-tuf keeps its own).
    data: TrustData | None
    #: The signed tag → digest chosen for the reference (None only with `Refuse`).
    target: SignedTarget | None
    source: str = "notary"

    def notary(self, what: str) -> TrustData:
        if self.data is None:
            raise PolicyError(
                f"rule {self.rule.label}: {what} can only be checked on Notary trust data, and "
                f"{self.ref.name} is verified by a {self.source} trust source"
            )
        return self.data

    def chosen(self) -> SignedTarget:
        if self.target is None:  # pragma: no cover - evaluation always sets it
            raise PolicyError("no signed target was chosen")
        return self.target


class Requirement(Protocol):
    """One check; `verify` returns None or raises PolicyError (never a weaker outcome)."""

    def verify(self, ctx: Context) -> None: ...

    def describe(self) -> str: ...


@dataclass(frozen=True)
class AllOf:
    """Every child must hold; the first failure is the verdict."""

    children: tuple[Requirement, ...]

    def verify(self, ctx: Context) -> None:
        for child in self.children:
            child.verify(ctx)

    def describe(self) -> str:
        return "; ".join(child.describe() for child in self.children) or "nothing"


@dataclass(frozen=True)
class AtLeast:
    """At least `count` children must hold (AnyOf is `count=1`); says which ones failed."""

    count: int
    children: tuple[Requirement, ...]

    def verify(self, ctx: Context) -> None:
        failures: list[str] = []
        for child in self.children:
            try:
                child.verify(ctx)
            except PolicyError as error:
                failures.append(error.message)
        passed = len(self.children) - len(failures)
        if passed < self.count:
            raise PolicyError(
                f"only {passed} of the {self.count} required signatures: " + "; ".join(failures)
            )

    def describe(self) -> str:
        return f"at least {self.count} of: " + ", ".join(c.describe() for c in self.children)


@dataclass(frozen=True)
class Refuse:
    """Refuse every image in the scope, before any network I/O."""

    def verify(self, ctx: Context) -> None:
        raise PolicyError(
            f"refused by rule {ctx.rule.label} ({ctx.rule.origin}): no image of "
            f"{ctx.rule.scope.describe()} may be used"
        )

    def describe(self) -> str:
        return "refuse always"


@dataclass(frozen=True)
class SignedByRepository:
    """docker's own lookup: the tag's digest as `targets/releases`, then `targets`, sign it."""

    def verify(self, ctx: Context) -> None:
        if ctx.data is None:
            return  # the TUF source's Updater chose the digest from its trusted targets
        from trust.errors import NotSignedError as _NotSigned
        from trust.resolve import lookup_tag

        target = ctx.chosen()
        try:
            own = lookup_tag(ctx.data, target.tag)
        except _NotSigned as error:
            raise PolicyError(
                f"{target.tag} is not signed by the repository's keys: {error.message}"
            ) from None
        if own.digest != target.digest:
            raise PolicyError(
                f"the repository's keys sign {target.tag} for {own.digest}, not {target.digest}"
            )

    def describe(self) -> str:
        return "signed by the repository's keys (targets/releases, then targets)"


@dataclass(frozen=True)
class SignedBy:
    """The named delegation role signed the chosen tag for the chosen digest."""

    signer: str

    @property
    def role(self) -> str:
        return self.signer if self.signer.startswith("targets/") else f"targets/{self.signer}"

    def verify(self, ctx: Context) -> None:
        data = ctx.notary(f"signer {self.signer}")
        target = ctx.chosen()
        loaded = data.roles.get(self.role)
        if loaded is None:
            raise PolicyError(f"{self.signer} is not a signer of {data.gun}")
        meta = loaded.targets.targets.get(target.tag) if loaded.allows(target.tag) else None
        if meta is None:
            raise PolicyError(f"{self.signer} did not sign {target.tag}")
        digest = "sha256:" + meta.hashes.get("sha256", b"").hex()
        if digest != target.digest:
            raise PolicyError(
                f"{self.signer} signed {target.tag} for {digest}, not {target.digest}"
            )

    def describe(self) -> str:
        return f"signed by {self.signer}"


@dataclass(frozen=True)
class PinnedRoot:
    """The root was checked against a pin (key IDs or a CA), never trusted on first use.

    The pin itself is enforced by the Notary client (a root that does not match is a
    verification failure, exit 5); this says that a pin really applied to the repository.
    """

    what: str

    def verify(self, ctx: Context) -> None:
        data = ctx.notary(f"a pinned root ({self.what})")
        if data.root_check.tofu:
            raise PolicyError(f"the root of {data.gun} was not checked against {self.what}")

    def describe(self) -> str:
        return f"root pinned to {self.what}"


@dataclass(frozen=True)
class NoTrustOnFirstUse:
    """A root trusted on first use (no cache, no pin) is refused."""

    def verify(self, ctx: Context) -> None:
        data = ctx.notary("trust on first use")
        if data.first_use and data.root_check.tofu:
            raise PolicyError(
                f"rule {ctx.rule.label} does not allow trust on first use for {data.gun}"
            )

    def describe(self) -> str:
        return "no trust on first use"


@dataclass(frozen=True)
class MinValidity:
    """Every file the verdict rests on stays valid for at least `seconds` more."""

    seconds: float

    def verify(self, ctx: Context) -> None:
        data = ctx.notary("min_validity")
        target = ctx.chosen()
        expiries: dict[str, dt.datetime] = {
            "root": data.root.expires,
            "timestamp": data.timestamp.expires,
            "snapshot": data.snapshot.expires,
        }
        roles = {"targets", target.role}
        roles.update(s.role for s in _signers_of(ctx.rule))
        for role in sorted(roles):
            loaded = data.roles.get(role)
            if loaded is not None:
                expiries[role] = loaded.targets.expires
        horizon = ctx.now + dt.timedelta(seconds=self.seconds)
        soon = sorted((when, role) for role, when in expiries.items() if when < horizon)
        if soon:
            when, role = soon[0]
            raise PolicyError(
                f"{role} of {data.gun} expires at {when.isoformat()}, within the "
                f"{_format_duration(self.seconds)} that rule {ctx.rule.label} requires"
            )

    def describe(self) -> str:
        return f"trust data valid for at least {_format_duration(self.seconds)}"


def _signers_of(rule: Rule) -> list[SignedBy]:
    return [SignedBy(name) for name in rule.signers]


# ------------------------------------------------------------------------------ rules


@dataclass(frozen=True)
class Rule:
    """One `[[rules]]` entry, validated."""

    label: str
    index: int
    scope: Scope
    origin: str = "built in"
    refuse: bool = False
    allow_unsigned: bool = False
    signers: tuple[str, ...] = ()
    threshold: int | None = None
    root_keys: tuple[str, ...] = ()
    root_ca: str | None = None
    tofu: bool | None = None
    trust_server: str | None = None
    trust_source: str | None = None
    min_validity: float | None = None

    @property
    def required_roles(self) -> frozenset[str]:
        """Delegation roles the client must treat as on the lookup path (fail closed)."""
        return frozenset(s.role for s in _signers_of(self))

    @property
    def requirement(self) -> Requirement:
        """The rule's requirements as one composed object."""
        if self.refuse:
            return Refuse()
        parts: list[Requirement] = []
        signers = _signers_of(self)
        if not signers:
            parts.append(SignedByRepository())
        elif self.threshold is None or self.threshold == len(signers):
            parts.append(AllOf(tuple(signers)))
        else:
            parts.append(AtLeast(self.threshold, tuple(signers)))
        if self.root_keys:
            parts.append(PinnedRoot("the pinned root key IDs"))
        if self.root_ca:
            parts.append(PinnedRoot(f"the CA {self.root_ca}"))
        if self.tofu is False:
            parts.append(NoTrustOnFirstUse())
        if self.min_validity is not None:
            parts.append(MinValidity(self.min_validity))
        return AllOf(tuple(parts))

    def describe(self) -> list[str]:
        """Human lines: the requirement and the settings the rule changes."""
        lines = [self.requirement.describe()]
        if self.allow_unsigned:
            lines.append("a repository without any trust data is accepted UNSIGNED")
        if self.tofu is True:
            lines.append("trust on first use allowed")
        if self.trust_server:
            lines.append(f"trust server {self.trust_server}")
        if self.trust_source:
            lines.append(f"trust source {self.trust_source}")
        return lines

    def settings_for(self, ref: Reference, settings: Settings) -> Settings:
        """The settings to verify `ref` with: the rule's server and pins override the file's."""
        from trust.config import TrustPinning

        changes: dict[str, Any] = {}
        if self.trust_server:
            changes["trust_server_override"] = self.trust_server
        if self.root_keys or self.root_ca or self.tofu is not None:
            pinning = settings.trust_pinning
            certs = dict(pinning.certs)
            ca = dict(pinning.ca)
            if self.root_keys or self.root_ca:
                # The rule's pin replaces whatever the file pins for this GUN (certs, wildcard
                # certs and CA prefixes), so exactly the rule's pin applies.
                certs = {
                    k: v
                    for k, v in certs.items()
                    if not (k == ref.name or (k.endswith("*") and ref.name.startswith(k[:-1])))
                }
                ca = {k: v for k, v in ca.items() if not ref.name.startswith(k)}
            if self.root_keys:
                certs[ref.name] = self.root_keys
            if self.root_ca:
                ca[ref.name] = _read_ca(self.root_ca)
            disable = pinning.disable_tofu if self.tofu is None else not self.tofu
            changes["trust_pinning"] = TrustPinning(certs=certs, ca=ca, disable_tofu=disable)
        return dataclasses.replace(settings, **changes) if changes else settings


def _read_ca(path: str) -> bytes:
    """A rule's `root_ca` file as PEM bytes (the verifier takes bytes and does no I/O)."""
    from trust.errors import TrustPinError

    try:
        return Path(path).read_bytes()
    except OSError:
        raise TrustPinError("could not load root cert from CA path", hint=path) from None


#: Applies when no configured rule matches: what trustpull does without a policy.
BUILTIN_DEFAULT = Rule(label="builtin-default", index=-1, scope=Scope())


@dataclass(frozen=True)
class Policy:
    """The configured rules; `match` picks the most specific one for a reference."""

    rules: tuple[Rule, ...] = ()
    #: Where the rules came from (a path), for messages.
    origin: str = ""

    def candidates(self, ref: Reference) -> list[Rule]:
        """Matching rules, best first (specificity, then file order); the default last."""
        found = [rule for rule in self.rules if rule.scope.matches(ref)]
        found.sort(key=lambda r: (tuple(-n for n in r.scope.specificity), r.index))
        if not any(rule.scope.is_default for rule in found):
            found.append(BUILTIN_DEFAULT)
        return found

    def match(self, ref: Reference) -> Rule:
        return self.candidates(ref)[0]

    def explain(self, ref: Reference) -> dict[str, object]:
        """Which rule applies to `ref` and why: the JSON of `trustpull policy show`."""
        ranked = self.candidates(ref)
        chosen = ranked[0]
        if chosen is BUILTIN_DEFAULT:
            why = "no configured rule matches: the built-in default applies"
        elif chosen.scope.is_default:
            why = "no narrower rule matches: the default rule applies"
        else:
            why = "the most specific matching scope"
        if len(ranked) > 1 and ranked[1].scope.specificity == chosen.scope.specificity:
            why += f" (ties with {ranked[1].label}: the earlier rule in the file wins)"
        return {
            "reference": str(ref),
            "rule": chosen.label,
            "origin": chosen.origin,
            "scope": chosen.scope.describe(),
            "why": why,
            "requires": chosen.describe(),
            "also_matching": [
                {"rule": r.label, "origin": r.origin, "scope": r.scope.describe()}
                for r in ranked[1:]
            ],
            "not_matching": [
                {"rule": r.label, "origin": r.origin, "scope": r.scope.describe()}
                for r in self.rules
                if r not in ranked
            ],
        }


# ------------------------------------------------------------------------------ parsing

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
        if value is not None and not _REMOTE_NAME_RE.fullmatch(value):
            raise fail(
                index, key, "must be a repository path (lower-case components separated by /)"
            )
    if registry == DEFAULT_DOMAIN and repository is not None and "/" not in repository:
        repository = OFFICIAL_REPO_PREFIX + repository
    if tag is not None:
        try:
            _go_glob_to_regex(tag)
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
    if name is not None and not _RULE_NAME_RE.fullmatch(name):
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
        if not _SIGNER_RE.fullmatch(signer) or signer in ("targets", "targets/"):
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
        if not _KEY_ID_RE.fullmatch(key_id):
            raise fail(index, "root_keys", f"{key_id!r} is not a 64-hex key ID")
    root_ca = _string(entry, index, "root_ca", fail)
    if root_ca is not None:
        resolved = (base_dir / root_ca).resolve()
        if not resolved.is_file():
            raise fail(index, "root_ca", f"CA file {resolved} does not exist")
        root_ca = str(resolved)
    if root_keys and root_ca:
        raise fail(index, "root_ca", 'give "root_keys" or "root_ca", not both')
    tofu = _bool(entry, index, "tofu", fail)
    trust_server = _string(entry, index, "trust_server", fail)
    if trust_server is not None:
        from trust.config import validate_trust_server_url

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


# ------------------------------------------------------------------------------ evaluation


@dataclass
class Outcome:
    """The verdict for one reference: what `check` reports, as text or JSON."""

    input: str
    reference: Reference | None = None
    rule: Rule | None = None
    resolutions: list[Resolution] = field(default_factory=list)
    unsigned: UnsignedAccepted | None = None
    error: TrustpullError | None = None

    @property
    def verdict(self) -> str:
        if self.error is not None:
            return "fail"
        return "unsigned" if self.unsigned is not None else "pass"

    @property
    def exit_code(self) -> int:
        return 0 if self.error is None else self.error.exit_code

    @property
    def reason(self) -> str:
        if self.error is not None:
            return self.error.message
        if self.unsigned is not None:
            return self.unsigned.message
        assert self.rule is not None
        return self.rule.requirement.describe()

    def to_json(self) -> dict[str, object]:
        item: dict[str, object] = {}
        if self.resolutions:
            item.update(self.resolutions[0].to_json())
        elif self.reference is not None:
            item.update({"reference": str(self.reference), "name": self.reference.name})
        item["input"] = self.input
        item["verdict"] = self.verdict
        item["rule"] = self.rule.label if self.rule is not None else None
        item["reason"] = self.reason
        if self.error is not None:
            item["error"] = self.error.to_json()
        return item


def _has_cached_trust(ref: Reference, settings: Settings) -> bool:
    """Whether anything is cached for the GUN: then "no trust data" is never "unsigned"."""
    from trust.notary.cache import TrustCache

    directory = TrustCache(settings.trust_dir, ref.name).metadata_dir
    try:
        return directory.exists() and any(directory.rglob("*.json"))
    except OSError:
        return True  # cannot tell: assume something is there, so nothing is accepted unsigned


class Evaluator:
    """Checks references against a policy, sharing verified trust data per repository.

    Thread-safe: trust data is memoised per (GUN, rule), each key updated once under its own
    lock (the cache lock makes concurrent updates of one GUN safe anyway). `policy=None` is the
    built-in default alone, with trustpull's usual exit codes.
    """

    def __init__(
        self,
        settings: Settings,
        policy: Policy | None = None,
        *,
        notice: Callable[[str], None] | None = None,
        now: dt.datetime | None = None,
        client_factory: Callable[[Settings, frozenset[str]], NotaryClient] | None = None,
    ) -> None:
        self.settings = settings
        self.policy = policy if policy is not None else settings.policy
        self.notice = notice
        self.now = now or dt.datetime.now(dt.UTC)
        self._client_factory = client_factory
        self._lock = threading.Lock()
        self._key_locks: dict[tuple[str, int], threading.Lock] = {}
        self._memo: dict[tuple[str, int], TrustData | TrustpullError] = {}
        self.requests = 0

    def rule_for(self, ref: Reference) -> Rule:
        return self.policy.match(ref) if self.policy is not None else BUILTIN_DEFAULT

    def check(self, text: str, ref: Reference | None = None) -> Outcome:
        """One reference → an Outcome; never raises a TrustpullError."""
        from trust.reference import parse

        outcome = Outcome(input=text)
        try:
            ref = ref or parse(text)
            outcome.reference = ref
            outcome.rule = self.rule_for(ref)
            outcome.resolutions = self.resolve(ref, outcome.rule)
        except UnsignedAccepted as accepted:
            outcome.unsigned = accepted
        except TrustpullError as error:
            outcome.error = error
        return outcome

    # -------------------------------------------------------------- one reference

    def resolve(self, ref: Reference, rule: Rule | None = None) -> list[Resolution]:
        """The verified resolution of `ref` under its rule, or a typed error.

        With a configured policy a "not signed" answer is a requirement not met (exit 9).
        """
        rule = rule or self.rule_for(ref)
        try:
            return self._resolve(ref, rule)
        except UnsignedAccepted:
            raise
        except NotSignedError as error:
            if self.policy is None:
                raise
            raise PolicyError(
                f"rule {rule.label}: {ref.familiar()} is not signed as required: {error.message}",
                hint=error.hint,
            ) from error

    def _resolve(self, ref: Reference, rule: Rule) -> list[Resolution]:
        from trust.notary.client import trust_server_for
        from trust.resolve import resolution_for

        if rule.refuse:
            Refuse().verify(Context(ref, rule, self.now, None, None))
        settings = rule.settings_for(ref, self.settings)
        source = self._source(ref, rule)
        if source is not None:
            return self._resolve_tuf(ref, rule, settings, source)
        data = self._trust_data(ref, rule, settings)
        target = self._choose(data, ref, rule)
        rule.requirement.verify(Context(ref, rule, self.now, data, target))
        server = trust_server_for(ref.domain, settings)
        return [resolution_for(data, ref, target, server)]

    def _source(self, ref: Reference, rule: Rule) -> TrustSourceConfig | None:
        from trust.sources import select_source

        if rule.trust_source == "notary":
            return None
        if rule.trust_source is not None:
            for source in self.settings.trust_sources:
                if source.scope == rule.trust_source:
                    return source
            raise PolicyError(f"rule {rule.label}: trust source {rule.trust_source} is unknown")
        return select_source(ref, self.settings)

    def _resolve_tuf(
        self, ref: Reference, rule: Rule, settings: Settings, source: TrustSourceConfig
    ) -> list[Resolution]:
        from trust.resolve import SignedTarget
        from trust.sources import resolve_with_source

        if rule.root_keys or rule.root_ca:
            raise PolicyError(
                f"rule {rule.label}: root pins apply to Notary; {ref.name} is verified by the "
                f"TUF repository {source.metadata_url}, whose trusted root is {source.root}"
            )
        resolutions = resolve_with_source(source, ref, settings, notice=self.notice)
        for resolution in resolutions:
            target = SignedTarget(
                resolution.tag or "", resolution.digest, resolution.size, resolution.role
            )
            ctx = Context(ref, rule, self.now, None, target, source="tuf")
            rule.requirement.verify(ctx)
        return resolutions

    def _trust_data(self, ref: Reference, rule: Rule, settings: Settings) -> TrustData:
        key = (ref.name, rule.index)
        with self._lock:
            lock = self._key_locks.setdefault(key, threading.Lock())
        with lock:
            cached = self._memo.get(key)
            if cached is None:
                try:
                    cached = self._update(ref, rule, settings)
                except TrustpullError as error:
                    cached = error
                self._memo[key] = cached
        if isinstance(cached, TrustpullError):
            raise cached
        return cached

    def _update(self, ref: Reference, rule: Rule, settings: Settings) -> TrustData:
        from trust.notary.client import NotaryClient
        from trust.notary.x509root import PIN_NO_TOFU

        if self._client_factory is not None:
            client = self._client_factory(settings, rule.required_roles)
        else:
            client = NotaryClient(settings, warn=self.notice, required_roles=rule.required_roles)
        try:
            data = client.update(ref)
        except NoTrustDataError as error:
            if rule.allow_unsigned and not _has_cached_trust(ref, settings):
                raise UnsignedAccepted(
                    f"UNSIGNED, accepted by rule {rule.label} ({rule.origin}): {ref.name} has no "
                    "trust data on its trust server; the image is NOT verified",
                    rule,
                ) from error
            raise
        except TrustPinError as error:
            if rule.tofu is False and error.message == PIN_NO_TOFU:
                raise PolicyError(
                    f"rule {rule.label} ({rule.origin}) does not allow trust on first use and "
                    f"nothing is cached or pinned for {ref.name}",
                    hint="pin its root key with root_keys (or [trust_pinning]) to trust it",
                ) from error
            raise
        finally:
            with self._lock:
                self.requests += client.stats.requests
        if data.first_use and self.notice is not None:
            from trust.pull import tofu_notice

            self.notice(tofu_notice(data, ref.name))
        return data

    def _choose(self, data: TrustData, ref: Reference, rule: Rule) -> SignedTarget:
        """The tag → digest the rule vouches for: the named signers' common digest when the
        rule names signers, else docker's lookup. A digest in the reference must match it."""
        from trust.errors import NoSuchTagError
        from trust.resolve import SignedTarget, list_signed_tags, lookup_tag

        if ref.tag is None:  # NAME@sha256:X: some tag the rule accepts must be signed for X
            assert ref.digest is not None
            tags = sorted(_all_tags(data, rule))
            for tag in tags:
                try:
                    target = self._choose(data, ref.with_tag(tag).with_digest(ref.digest), rule)
                except (PolicyError, NotSignedError):
                    continue
                return target
            if not rule.signers:
                list_signed_tags(data)  # "no trusted tags" when the repository has none
            raise NoSuchTagError(
                f"digest {ref.digest} is not signed for any tag of {data.gun} as rule "
                f"{rule.label} requires"
            )
        if rule.signers:
            target = _signers_target(data, ref.tag, rule)
        else:
            target = lookup_tag(data, ref.tag)
        if ref.digest is not None and target.digest != ref.digest:
            raise NoSuchTagError(
                f"tag {ref.tag} of {ref.name} is signed for {target.digest}, not {ref.digest}"
            )
        return SignedTarget(target.tag, target.digest, target.size, target.role)


def _all_tags(data: TrustData, rule: Rule) -> set[str]:
    """Tags signed in docker's lookup roles or by the rule's named signers."""
    from trust.notary.trusted_set import LOOKUP_ROLES

    roles = set(LOOKUP_ROLES) | set(rule.required_roles)
    tags: set[str] = set()
    for role in roles:
        loaded = data.roles.get(role)
        if loaded is not None:
            tags.update(t for t in loaded.targets.targets if loaded.allows(t))
    return tags


def _signers_target(data: TrustData, tag: str, rule: Rule) -> SignedTarget:
    """The digest most of the named signers signed `tag` for; refuses a tie (they disagree)."""
    from trust.resolve import SignedTarget

    votes: dict[str, list[str]] = {}
    sizes: dict[str, int] = {}
    for signer in _signers_of(rule):
        loaded = data.roles.get(signer.role)
        meta = loaded.targets.targets.get(tag) if loaded and loaded.allows(tag) else None
        if meta is None:
            continue
        raw = meta.hashes.get("sha256", b"")
        if len(raw) != 32 or meta.length < 1:
            continue  # not a usable signature; the requirement then reports the signer
        digest = "sha256:" + raw.hex()
        votes.setdefault(digest, []).append(signer.signer)
        sizes[digest] = meta.length
    if not votes:
        names = ", ".join(rule.signers)
        raise PolicyError(f"rule {rule.label}: {tag} is not signed by any of {names}")
    ranked = sorted(votes.items(), key=lambda item: -len(item[1]))
    if len(ranked) > 1 and len(ranked[0][1]) == len(ranked[1][1]):
        detail = "; ".join(f"{', '.join(who)} signed {d}" for d, who in ranked)
        raise PolicyError(f"rule {rule.label}: the signers disagree on {tag}: {detail}")
    digest, who = ranked[0]
    return SignedTarget(tag, digest, sizes[digest], SignedBy(who[0]).role)


def resolve_with_policy(
    ref: Reference,
    settings: Settings,
    *,
    all_tags: bool = False,
    notice: Callable[[str], None] | None = None,
) -> list[Resolution]:
    """`resolve_reference` under the configured policy (the pull path's entry point).

    With `all_tags`, every tag signed in docker's lookup roles or by a signer a matching rule
    names must satisfy its own rule; one failure refuses the whole reference.
    """
    evaluator = Evaluator(settings, notice=notice)
    if not all_tags:
        return evaluator.resolve(ref)
    repo = ref.trimmed()
    rule = evaluator.rule_for(repo)
    if rule.refuse:
        Refuse().verify(Context(repo, rule, evaluator.now, None, None))
    data = evaluator._trust_data(repo, rule, rule.settings_for(repo, settings))
    policy = evaluator.policy
    roles: set[str] = set()
    if policy is not None:
        for candidate in policy.rules:
            probe = dataclasses.replace(candidate.scope, tag=None)
            if probe.matches(repo):
                roles |= candidate.required_roles
    tags = _all_tags(data, dataclasses.replace(rule, signers=tuple(sorted(roles))))
    if not tags:
        from trust.resolve import list_signed_tags

        list_signed_tags(data)
    from trust.resolve import natural_key

    results: list[Resolution] = []
    errors: list[TrustpullError] = []
    for tag in sorted(tags, key=natural_key):
        try:
            results.extend(evaluator.resolve(repo.with_tag(tag)))
        except TrustpullError as error:
            errors.append(error)
    if errors:
        worst = combined_exit_code(e.exit_code for e in errors)
        raise next(e for e in errors if e.exit_code == worst)
    return results
