"""Signing policy: rules scoped by image reference, each with small requirement objects.

A policy is a list of rules (`[[rules]]` in the config file, or a rules-only file given with
`--policy`). Each rule has a scope (registry, namespace, repository, tag pattern) and
requirements. For one reference the most specific matching scope wins (repository over
namespace over registry over the default; a deeper namespace over a shallower one; then an exact
tag over a tag pattern over no tag; then file order), as in containers-policy.json. Without a
matching rule the built-in default applies: signed by the repository's own keys, docker's lookup.

Requirements follow sigstore-python's policy shape: tiny objects with one `verify(ctx)` that
returns None or raises `PolicyError` (exit 9), composed with `AllOf`/`AtLeast`. They run over
`Evidence`: the verified facts the verification service (`trust.service`) extracts from a trust
source's verified data. This module is pure (it imports only `errors`, `reference` and
`targets`): no I/O, no trust source, no settings. A verification failure never becomes a policy
verdict (it keeps its own exit code, 5 for a possible attack).

Fail-closed rules kept here:
- "unsigned" is accepted only by a rule that says so, only when the trust server answered that
  the repository has no trust data (`NoTrustDataError` from the client's first-use root fetch)
  and nothing is cached for it; every other failure still refuses (`UnsignedAccepted` carries
  the one message that every such pull must print);
- a signer named by a matching rule is on the lookup path: the client fails closed on any error
  of that role (exit 5) instead of skipping it, so "missing signer" (exit 9) only ever means the
  role is not delegated or did not sign.

Longer than 500 lines because the scope, the requirement objects and the rule that composes
them are one model; the parser (`trust.policy_file`) and the evaluation (`trust.service`) are
already elsewhere.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from trust.errors import ConfigError, NoTrustDataError, NotSignedError, PolicyError
from trust.reference import Reference, go_glob_to_regex
from trust.targets import SignedTarget

__all__ = [
    "BUILTIN_DEFAULT",
    "REPOSITORY_SETTINGS_PROBLEM",
    "AllOf",
    "AtLeast",
    "Context",
    "Evidence",
    "MinValidity",
    "NoTrustOnFirstUse",
    "PinnedRoot",
    "Policy",
    "Refuse",
    "Requirement",
    "Rule",
    "Scope",
    "SignedBy",
    "SignedByRepository",
    "UnsignedAccepted",
    "format_duration",
    "parse_duration",
    "precedence",
]

#: Why a tag-scoped rule cannot set where and how the repository's trust data is verified: one
#: repository has one trust cache, one root and one trust server answer, shared by all its tags
#: (a tag rule with its own server or pins would verify some tags against another rule's data).
REPOSITORY_SETTINGS_PROBLEM = (
    "apply to the repository's trust data as a whole (one root, one trust server, one cache "
    "for all its tags): set them on a rule without `tag`"
)


@functools.cache
def _duration_re() -> re.Pattern[str]:
    """Compiled on first use: only a policy with a duration needs it."""
    return re.compile(r"(?:\d+[wdhms])+", re.ASCII)


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
    if isinstance(value, str) and _duration_re().fullmatch(value):
        return float(
            sum(int(n) * _UNITS[u] for n, u in re.findall(r"(\d+)([wdhms])", value, re.ASCII))
        )
    raise ValueError('must be a duration such as "7d", "12h", "1d12h" or a number of seconds')


def format_duration(seconds: float) -> str:
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
            return re.fullmatch(go_glob_to_regex(self.tag), ref.tag, re.DOTALL) is not None
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


class Evidence(Protocol):
    """The verified facts a requirement may look at, whatever the trust source.

    Built by the verification service from data that has already passed every signature,
    threshold, expiry and rollback check; a requirement only decides whether those facts are
    enough for its rule.
    """

    @property
    def gun(self) -> str: ...

    #: "notary" or "tuf".
    @property
    def source(self) -> str: ...

    #: True when this run trusted the root for the first time (nothing was cached).
    @property
    def first_use(self) -> bool: ...

    #: True when the root was checked against a pin (key IDs or a CA), not trusted on first use.
    @property
    def root_pinned(self) -> bool: ...

    def repository_target(self, tag: str) -> SignedTarget:
        """docker's lookup (`targets/releases`, then `targets`); raises NotSignedError."""
        ...

    def has_role(self, role: str) -> bool:
        """Whether the delegation role exists in the verified data."""
        ...

    def signed_by(self, role: str, tag: str) -> SignedTarget | None:
        """What `role` itself signed `tag` for, or None when it did not sign it."""
        ...

    def expiries(self, roles: Iterable[str]) -> Mapping[str, dt.datetime]:
        """Expiry of root, timestamp, snapshot and each of `roles` that exists."""
        ...


@dataclass(frozen=True)
class Context:
    """What a requirement looks at: the reference, its rule, the evidence and chosen target."""

    ref: Reference
    rule: Rule
    now: dt.datetime
    #: The verified facts; None only for `Refuse`, which decides before any I/O.
    evidence: Evidence | None
    #: The signed tag → digest chosen for the reference (None only with `Refuse`).
    target: SignedTarget | None

    def notary(self, what: str) -> Evidence:
        """The evidence, when it comes from Notary: signer roles, root pins and TOFU are
        Notary's notions; on a TUF source a rule asking for them is refused, not ignored."""
        evidence = self.facts()
        if evidence.source != "notary":
            raise PolicyError(
                f"rule {self.rule.label}: {what} can only be checked on Notary trust data, and "
                f"{self.ref.name} is verified by a {evidence.source} trust source"
            )
        return evidence

    def facts(self) -> Evidence:
        if self.evidence is None:  # pragma: no cover - evaluation always sets it
            raise PolicyError("no verified trust data to check")
        return self.evidence

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
        if not self.children:  # as sigstore-python's AllOf: nothing to check accepts nothing
            raise PolicyError(f"rule {ctx.rule.label}: a requirement with nothing to check")
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
        evidence = ctx.facts()
        if evidence.source != "notary":
            return  # the TUF source's Updater chose the digest from its trusted targets
        target = ctx.chosen()
        try:
            own = evidence.repository_target(target.tag)
        except NotSignedError as error:
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
        evidence = ctx.notary(f"signer {self.signer}")
        target = ctx.chosen()
        if not evidence.has_role(self.role):
            raise PolicyError(f"{self.signer} is not a signer of {evidence.gun}")
        signed = evidence.signed_by(self.role, target.tag)
        if signed is None:
            raise PolicyError(f"{self.signer} did not sign {target.tag}")
        if signed.digest != target.digest:
            raise PolicyError(
                f"{self.signer} signed {target.tag} for {signed.digest}, not {target.digest}"
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
        evidence = ctx.notary(f"a pinned root ({self.what})")
        if not evidence.root_pinned:
            raise PolicyError(f"the root of {evidence.gun} was not checked against {self.what}")

    def describe(self) -> str:
        return f"root pinned to {self.what}"


@dataclass(frozen=True)
class NoTrustOnFirstUse:
    """A root trusted on first use (no cache, no pin) is refused."""

    def verify(self, ctx: Context) -> None:
        evidence = ctx.notary("trust on first use")
        if evidence.first_use and not evidence.root_pinned:
            raise PolicyError(
                f"rule {ctx.rule.label} does not allow trust on first use for {evidence.gun}"
            )

    def describe(self) -> str:
        return "no trust on first use"


@dataclass(frozen=True)
class MinValidity:
    """Every file the verdict rests on stays valid for at least `seconds` more."""

    seconds: float

    def verify(self, ctx: Context) -> None:
        evidence = ctx.notary("min_validity")
        target = ctx.chosen()
        roles = {"targets", target.role}
        roles.update(s.role for s in _signers_of(ctx.rule))
        expiries = evidence.expiries(sorted(roles))
        horizon = ctx.now + dt.timedelta(seconds=self.seconds)
        soon = sorted((when, role) for role, when in expiries.items() if when < horizon)
        if soon:
            when, role = soon[0]
            raise PolicyError(
                f"{role} of {evidence.gun} expires at {when.isoformat()}, within the "
                f"{format_duration(self.seconds)} that rule {ctx.rule.label} requires"
            )

    def describe(self) -> str:
        return f"trust data valid for at least {format_duration(self.seconds)}"


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
    #: The CA file's PEM bytes, read by the parser (the verifier does no I/O).
    root_ca_pem: bytes | None = field(default=None, repr=False, compare=False)
    tofu: bool | None = None
    trust_server: str | None = None
    trust_source: str | None = None
    min_validity: float | None = None

    def __post_init__(self) -> None:
        if self.scope.tag is not None:
            settings = self.repository_settings()
            if settings:
                raise ConfigError(
                    f"rule {self.label}: {', '.join(settings)} {REPOSITORY_SETTINGS_PROBLEM}"
                )

    def repository_settings(self) -> list[str]:
        """The keys this rule sets that belong to the repository's trust data as a whole."""
        values = {
            "allow_unsigned": self.allow_unsigned,
            "root_keys": self.root_keys,
            "root_ca": self.root_ca,
            "tofu": self.tofu is not None,
            "trust_server": self.trust_server,
            "trust_source": self.trust_source,
        }
        return [key for key, value in values.items() if value]

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


#: Applies when no configured rule matches: what trustpull does without a policy.
BUILTIN_DEFAULT = Rule(label="builtin-default", index=-1, scope=Scope())


def precedence(rule: Rule) -> tuple[tuple[int, ...], int]:
    """Sort key of rules, best first: the more specific scope, then the earlier in the file.

    The one ordering: `Policy.candidates` and the service's all-tags check both use it."""
    return tuple(-n for n in rule.scope.specificity), rule.index


@dataclass(frozen=True)
class Policy:
    """The configured rules; `match` picks the most specific one for a reference."""

    rules: tuple[Rule, ...] = ()
    #: Where the rules came from (a path), for messages.
    origin: str = ""

    def candidates(self, ref: Reference) -> list[Rule]:
        """Matching rules, best first (specificity, then file order); the default last."""
        found = [rule for rule in self.rules if rule.scope.matches(ref)]
        found.sort(key=precedence)
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
