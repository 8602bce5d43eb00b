"""Random small policies over one signed repository: the reference shapes agree.

For each policy (rules drawn from scopes, tag scopes and requirements, with a fixed seed), the
one service must keep these promises, whatever the combination:

- `NAME@D` is accepted exactly when some tag T makes `NAME:T@D` accepted (a digest never
  escapes the rule of the tag it is signed for, and never needs more than one such tag),
  except that a `refuse` rule for the repository itself (without `tag`) refuses the digest and
  `-a` shapes before any I/O even where a tag rule accepts one tag (the safe side);
- `NAME:T@D` is accepted exactly when `NAME:T` is, for D, its verified digest;
- `-a`, when accepted, is exactly the tags each accepted alone, with the same digests; when a
  tag accepted alone, `-a` accepting means it is in the answer;
- a signed repository is never UNSIGNED, whatever `allow_unsigned` says;
- a wrong root pin or `tofu = false` on the repository's rule (without `tag`) refuses every
  shape, whichever rule decides the tag.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.unit._trust_env import (
    D1,
    D2,
    D_ALICE,
    D_CI,
    D_ONLY_TARGETS,
    D_TARGETS,
    GUN,
    Env,
    env_factory,
)
from trust.errors import TrustpullError
from trust.policy import Policy, Rule, Scope
from trust.reference import parse
from trust.service import TrustService

TAGS = ("1.0", "2.0", "only-targets", "alice-only", "ci-only", "nope")
DIGESTS = tuple("sha256:" + d for d in (D1, D2, D_TARGETS, D_ONLY_TARGETS, D_ALICE, D_CI))
SIGNERS = ("releases", "alice", "releases/ci")
#: A root pin the trust server's root never matches.
WRONG_PIN = ("0" * 64,)


def _rule(rng: random.Random, index: int) -> Rule:
    scope_kind = rng.choice(("default", "registry", "namespace", "repository"))
    fields: dict[str, str] = {}
    if scope_kind != "default":
        fields["registry"] = "127.0.0.1:5000"
    if scope_kind == "namespace":
        fields["namespace"] = "ns"
    if scope_kind == "repository":
        fields["repository"] = "ns/app"
    tag = rng.choice((None, None, "1.0", "2.0", "alice-only", "*", "?.0", "*-only"))
    requirement: dict[str, object] = {}
    kind = rng.choice(("none", "signers", "threshold", "refuse", "unsigned", "validity"))
    if kind == "signers":
        requirement["signers"] = tuple(rng.sample(SIGNERS, rng.randint(1, 2)))
    elif kind == "threshold":
        requirement["signers"] = SIGNERS
        requirement["threshold"] = 1
    elif kind == "refuse":
        requirement["refuse"] = True
    elif kind == "unsigned" and tag is None:
        requirement["allow_unsigned"] = True
    elif kind == "validity":
        requirement["min_validity"] = rng.choice((60.0, 400 * 86400.0))
    if tag is None and not requirement.get("refuse") and rng.random() < 0.2:
        requirement[rng.choice(("root_keys", "tofu"))] = WRONG_PIN if rng.random() < 0.5 else False
        if "tofu" in requirement:
            requirement["tofu"] = False
    scope = Scope(tag=tag, **fields)
    return Rule(f"r{index}", index, scope, origin=f"p:{index}", **requirement)  # type: ignore[arg-type]


def _policies(count: int, seed: int = 20261202) -> list[Policy]:
    rng = random.Random(seed)
    policies: list[Policy] = []
    while len(policies) < count:
        rules: list[Rule] = []
        for _ in range(rng.randint(1, 4)):
            rule = _rule(rng, len(rules))
            if all(rule.scope != other.scope for other in rules):
                rules.append(rule)
        policies.append(Policy(tuple(rules), "p"))
    return policies


@pytest.fixture
def env(isolated_home: Path) -> Iterator[Env]:
    factory = env_factory()
    make: Callable[..., Env] = next(factory)
    yield make()
    for _ in factory:  # the servers are stopped when the generator ends
        pass


def _answer(
    service: TrustService, text: str, all_tags: bool = False
) -> tuple[tuple[str | None, str], ...] | int:
    """The verified (tag, digest) pairs, or the exit code of the refusal."""
    try:
        verification = service.verify(text, all_tags=all_tags)
    except TrustpullError as error:
        assert error.exit_code in (4, 5, 9), (text, error)
        return error.exit_code
    assert verification.unsigned is None, (text, verification.unsigned)
    return tuple((r.tag, r.digest) for r in verification.resolutions)


@pytest.mark.parametrize(
    "policy",
    _policies(80),
    ids=lambda p: ";".join(f"{r.scope.describe()}:{','.join(r.describe())}" for r in p.rules)[:120],
)
def test_reference_shapes_agree_under_any_policy(env: Env, policy: Policy) -> None:
    service = TrustService(env.settings, policy)
    repository = policy.match(parse(GUN, default_tag=False))
    repository_refuses = repository.refuse
    alone = {tag: _answer(service, f"{GUN}:{tag}") for tag in TAGS}
    if repository.root_keys == WRONG_PIN or repository.tofu is False:
        # the repository rule's pin (or no TOFU, on a cold cache) holds for every tag, whichever
        # rule decides it: nothing is accepted, by any shape
        shapes = [f"{GUN}:{t}" for t in TAGS] + [f"{GUN}@{d}" for d in DIGESTS]
        shapes += [f"{GUN}:{t}@{d}" for t in TAGS for d in DIGESTS]
        for text in shapes:
            assert isinstance(_answer(service, text), int), text
        assert isinstance(_answer(service, GUN, all_tags=True), int)
        return
    for tag, answer in alone.items():
        for digest in DIGESTS:
            pinned = _answer(service, f"{GUN}:{tag}@{digest}")
            expected_ok = isinstance(answer, tuple) and answer[0][1] == digest
            assert isinstance(pinned, tuple) == expected_ok, (tag, digest, answer, pinned)
    for digest in DIGESTS:
        by_digest = _answer(service, f"{GUN}@{digest}")
        through = [t for t, a in alone.items() if isinstance(a, tuple) and a[0][1] == digest]
        if repository_refuses:
            assert by_digest == 9, (digest, by_digest)
            continue
        assert isinstance(by_digest, tuple) == bool(through), (digest, by_digest, alone)
        if isinstance(by_digest, tuple):
            assert by_digest[0][0] in through
    every = _answer(service, GUN, all_tags=True)
    if repository_refuses:
        assert every == 9
        return
    # -a lists docker's lookup tags, and a signer's tag where the rule deciding it names the
    # signer; it is accepted exactly when each of them is, with the same digests
    listed = ["1.0", "2.0", "only-targets"]
    for tag, role in (("alice-only", "alice"), ("ci-only", "releases/ci")):
        if role in policy.match(parse(f"{GUN}:{tag}")).signers:
            listed.append(tag)
    if all(isinstance(alone[tag], tuple) for tag in listed):
        expected = {tag: alone[tag][0][1] for tag in listed}  # type: ignore[index]
        assert isinstance(every, tuple) and dict(every) == expected, (every, alone)
    else:
        assert every in (4, 5, 9), (every, alone)
