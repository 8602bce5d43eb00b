"""The one verification service: reference shapes under a policy, each combination that used
to fall between two copies of the decision (issue 11: #2 digest vs tag rules, #9 dissent,
#10 pinned first use), and errors that stay as raised."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.unit._trust_env import D1, D2, GUN, NOW, Env, baseline_builder, env_factory
from trust.errors import (
    ExpiredError,
    NetworkError,
    NoSuchTagError,
    PolicyError,
    TrustpullError,
    UsageError,
)
from trust.notary.client import NotaryClient
from trust.policy import Policy, Rule, Scope, UnsignedAccepted
from trust.service import TrustService
from trust.settings import Settings

MakeEnv = Callable[..., Env]


@pytest.fixture
def make_env(isolated_home: Path) -> Iterator[MakeEnv]:
    yield from env_factory()


def _policy(*rules: Rule) -> Policy:
    return Policy(rules, "test.toml")


def _tag_rule(label: str, tag: str, **requirements: object) -> Rule:
    scope = Scope(registry="127.0.0.1:5000", repository="ns/app", tag=tag)
    return Rule(label, 0, scope, origin=f"test.toml:{label}", **requirements)  # type: ignore[arg-type]


# ------------------------------------------------------------ #2 digest-only vs tag rules


def test_digest_reference_obeys_the_rule_of_its_tag(make_env: MakeEnv) -> None:
    """`NAME@sha256:<digest of 2.0>` is refused by a rule that refuses tag 2.0 (was accepted
    under the default rule: the digest never matched a tag-scoped rule)."""
    env = make_env()
    service = TrustService(env.settings, _policy(_tag_rule("no-2.0", "2.0", refuse=True)))
    with pytest.raises(PolicyError) as caught:
        service.verify(f"{GUN}@sha256:{D2}")
    assert caught.value.exit_code == 9
    assert "tag 2.0" in caught.value.message and "no-2.0" in caught.value.message
    outcome = service.check(f"{GUN}@sha256:{D2}")
    assert outcome.verdict == "fail" and outcome.exit_code == 9
    # the tag itself and the other tags are untouched by the rule
    assert service.check(f"{GUN}:2.0").exit_code == 9
    (ok,) = service.verify(f"{GUN}@sha256:{D1}").resolutions
    assert (ok.tag, ok.digest, ok.reference) == ("1.0", "sha256:" + D1, f"{GUN}@sha256:{D1}")


def test_digest_reference_is_accepted_through_another_tag_whose_rule_accepts_it(
    make_env: MakeEnv,
) -> None:
    builder = baseline_builder()
    builder.add_target("stable", D2, 531, role="targets/releases")
    env = make_env(builder)
    service = TrustService(env.settings, _policy(_tag_rule("no-2.0", "2.0", refuse=True)))
    (resolution,) = service.verify(f"{GUN}@sha256:{D2}").resolutions
    assert (resolution.tag, resolution.digest) == ("stable", "sha256:" + D2)
    assert resolution.reference == f"{GUN}@sha256:{D2}"


def test_digest_reference_needs_the_signers_its_tag_rule_names(make_env: MakeEnv) -> None:
    env = make_env()
    service = TrustService(env.settings, _policy(_tag_rule("alice-2.0", "2.0", signers=("alice",))))
    with pytest.raises(PolicyError) as caught:
        service.verify(f"{GUN}@sha256:{D2}")
    assert "alice" in caught.value.message and caught.value.exit_code == 9


def test_unsigned_digest_is_not_signed_with_and_without_policy(make_env: MakeEnv) -> None:
    env = make_env()
    digest = "sha256:" + "99" * 32
    with pytest.raises(NoSuchTagError) as plain:
        TrustService(env.settings).verify(f"{GUN}@{digest}")
    assert plain.value.exit_code == 4 and digest in plain.value.message
    with pytest.raises(PolicyError) as ruled:
        TrustService(env.settings, _policy()).verify(f"{GUN}@{digest}")
    assert ruled.value.exit_code == 9 and digest in ruled.value.message


# ------------------------------------------------------------ #9 a named signer's dissent


def test_a_named_signer_who_signed_another_digest_is_not_outvoted(make_env: MakeEnv) -> None:
    builder = baseline_builder()
    for name, digest in (("bob", D1), ("dave", D2)):
        builder.add_delegation(f"targets/{name}")
        builder.add_target("x", digest, 530 if digest == D1 else 531, role=f"targets/{name}")
    builder.add_target("x", D1, 530, role="targets/alice")
    env = make_env(builder)
    rule = Rule("two-of-three", 0, Scope(), signers=("alice", "bob", "dave"), threshold=2)
    outcome = TrustService(env.settings, _policy(rule)).check(f"{GUN}:x")
    assert outcome.exit_code == 9 and outcome.verdict == "fail"
    assert "disagree" in outcome.reason
    assert f"alice, bob signed sha256:{D1}" in outcome.reason
    assert f"dave signed sha256:{D2}" in outcome.reason
    # without dave in the rule, alice and bob's digest is accepted
    agree = Rule("two", 0, Scope(), signers=("alice", "bob"))
    (ok,) = TrustService(env.settings, _policy(agree)).verify(f"{GUN}:x").resolutions
    assert ok.digest == "sha256:" + D1


# ------------------------------------------------------------ #10 pinned first use


def test_pinned_first_use_says_the_pin_matched_not_tofu(make_env: MakeEnv) -> None:
    env = make_env()
    canonical = env.builder.keys("root")[0].canonical_id
    scope = Scope(registry="127.0.0.1:5000", repository="ns/app")
    rule = Rule("pinned", 0, scope, root_keys=(canonical,), tofu=False)
    notices: list[str] = []
    service = TrustService(env.settings, _policy(rule), notice=notices.append)
    (resolution,) = service.verify(f"{GUN}:1.0").resolutions
    assert resolution.digest == "sha256:" + D1
    assert not any("trust on first use" in n for n in notices), notices
    assert any("matched the configured pin" in n and canonical in n for n in notices), notices
    # unpinned, the first use is announced as trust on first use
    (env.docker_config / "trust").rename(env.docker_config / "trust-before")
    tofu: list[str] = []
    TrustService(env.settings, notice=tofu.append).verify(f"{GUN}:1.0")
    assert any(n.startswith("trust on first use") and canonical in n for n in tofu), tofu


# ------------------------------------------------------------ shapes and errors


def test_all_tags_refuses_a_tag_or_digest_as_usage() -> None:
    """Refused before any I/O (the trust server here does not exist)."""
    service = TrustService(Settings(trust_server_override="https://127.0.0.1:1"))
    for text in (f"{GUN}:1.0", f"{GUN}@sha256:{D1}"):
        with pytest.raises(UsageError) as caught:
            service.verify(text, all_tags=True)
        assert caught.value.exit_code == 2


def test_memoised_failure_is_raised_again_as_a_fresh_error(make_env: MakeEnv) -> None:
    """Two references of one unreachable repository: two error objects, one message each
    (a shared, mutated error once printed `compose.yml:5: compose.yml:3: ...`)."""
    env = make_env()
    env.server.stop()
    service = TrustService(env.settings)
    first = service.check(f"{GUN}:1.0")
    second = service.check(f"{GUN}:2.0")
    assert isinstance(first.error, NetworkError) and isinstance(second.error, NetworkError)
    assert first.error is not second.error
    assert first.error.message == second.error.message
    located = second.error.derive(prefix="compose.yml:5: ")
    assert located.message.count("compose.yml") == 1
    assert second.error.message == first.error.message  # the original did not change
    with pytest.raises(AttributeError):
        first.error.message = "changed"  # type: ignore[misc]
    assert isinstance(located, TrustpullError) and located.__cause__ is second.error


def test_now_is_the_services_clock(make_env: MakeEnv) -> None:
    env = make_env()
    service = TrustService(env.settings, now=NOW)
    assert service.now() == NOW


def test_unsigned_acceptance_covers_every_reference_shape(make_env: MakeEnv) -> None:
    """A rule that accepts a repository without trust data accepts its tags, its digests
    (`docker run` of such an image is checked by its RepoDigest) and `-a` alike; a signed
    repository under the same rule is still verified."""
    env = make_env()
    other = f"{GUN}-unsigned"  # the trust server has nothing for this repository
    lenient = _policy(Rule("legacy", 0, Scope(), allow_unsigned=True, origin="p:1"))
    service = TrustService(env.settings, lenient)
    for text, all_tags in ((f"{other}:1.0", False), (f"{other}@sha256:{D1}", False), (other, True)):
        verification = service.verify(text, all_tags=all_tags)
        assert verification.resolutions == ()
        assert verification.unsigned is not None and "legacy" in verification.unsigned
    (signed,) = service.verify(f"{GUN}@sha256:{D2}").resolutions
    assert signed.digest == "sha256:" + D2


def test_all_tags_of_an_unsigned_accepted_repository_obeys_its_tag_rules(
    make_env: MakeEnv,
) -> None:
    """`-a` of a repository a rule accepts unsigned is an unverified pull of EVERY tag: when a
    tag-scoped rule (which can never accept unsigned) outranks that rule for some tag, that
    tag would be refused alone, so the all-tags pull is refused (it pulled `prod` unverified)."""
    env = make_env()
    other = f"{GUN}-unsigned"  # the trust server has nothing for this repository
    scope = Scope(registry="127.0.0.1:5000", repository="ns/app-unsigned")
    lenient = Rule("legacy", 1, scope, allow_unsigned=True, origin="p:1")
    prod = Rule("prod", 0, dataclasses.replace(scope, tag="prod*"), refuse=True, origin="p:2")
    service = TrustService(env.settings, _policy(prod, lenient))
    assert service.check(f"{other}:prod").exit_code == 9
    assert service.verify(f"{other}:dev").unsigned is not None
    with pytest.raises(PolicyError) as caught:
        service.verify(other, all_tags=True)
    assert caught.value.exit_code == 9 and "prod" in caught.value.message
    # a tag rule for another repository, or a lenient rule that outranks it, changes nothing
    elsewhere = Rule("x", 0, Scope(registry="127.0.0.1:5000", repository="ns/x", tag="p"))
    assert (
        TrustService(env.settings, _policy(elsewhere, lenient))
        .verify(other, all_tags=True)
        .unsigned
    )
    narrow = Rule("narrow", 1, scope, allow_unsigned=True, origin="p:1")
    wide = Rule("wide", 0, Scope(registry="127.0.0.1:5000", tag="prod*"), refuse=True)
    assert TrustService(env.settings, _policy(wide, narrow)).verify(other, all_tags=True).unsigned


def _cached_files(env: Env) -> list[str]:
    trust_dir = env.docker_config / "trust"
    return sorted(str(p.relative_to(trust_dir)) for p in trust_dir.rglob("*.json"))


def test_a_refused_first_contact_writes_nothing_and_an_accepted_one_persists(
    make_env: MakeEnv,
) -> None:
    """Issue 11 #6: exit 4 (unknown tag) and exit 9 (policy) on a first contact leave the trust
    cache as it was, in `verify` and in `check`; the first accepted verdict persists it."""
    env = make_env()
    with pytest.raises(NoSuchTagError):
        TrustService(env.settings).verify(f"{GUN}:no-such-tag")
    assert _cached_files(env) == []
    refuse_2 = _policy(_tag_rule("no-2.0", "2.0", refuse=True), Rule("default", 1, Scope()))
    needs_bob = _policy(Rule("bob", 0, Scope(), signers=("bob",)))
    assert TrustService(env.settings, needs_bob).check(f"{GUN}:1.0").exit_code == 9
    assert _cached_files(env) == []
    batch = TrustService(env.settings, refuse_2)
    assert batch.check(f"{GUN}:2.0").exit_code == 9
    assert _cached_files(env) == []
    notices: list[str] = []
    accepted = TrustService(env.settings, refuse_2, notice=notices.append)
    assert accepted.check(f"{GUN}:1.0").verdict == "pass"
    assert "tuf/127.0.0.1:5000/ns/app/metadata/root.json" in _cached_files(env)
    assert sum("trust on first use" in n for n in notices) == 1


# ------------------------------------------------------------ a tag rule under a repository rule


@pytest.mark.parametrize(
    ("setting", "kind", "code"),
    [
        ({"root_keys": ("a" * 64,)}, "TrustPinError", 5),
        ({"tofu": False}, "PolicyError", 9),
        ({"trust_server": "https://127.0.0.1:1"}, "NetworkError", 6),
    ],
)
def test_D07_a_tag_rule_is_verified_with_its_repository_rules_pins_and_server(
    make_env: MakeEnv, setting: dict[str, object], kind: str, code: int
) -> None:
    """A tag rule cannot set how the repository is verified, so its tags are verified as the
    repository's rule says: its root pin, `tofu = false` and trust server. They were dropped for
    every tag a tag-scoped rule decides (`ns/app:2.0` was accepted, trusted on first use from
    the file's server, while the repository rule pinned another root)."""
    env = make_env()
    scope = Scope(registry="127.0.0.1:5000", repository="ns/app")
    repo = Rule("repo", 0, scope, origin="p:1", **setting)  # type: ignore[arg-type]
    release = Rule("rel", 1, dataclasses.replace(scope, tag="2.0"), signers=("releases",))
    service = TrustService(env.settings, _policy(repo, release))
    for text in (f"{GUN}:2.0", f"{GUN}:2.0@sha256:{D2}", f"{GUN}@sha256:{D2}", f"{GUN}:1.0"):
        outcome = service.check(text)
        assert outcome.error is not None, f"{text} accepted under {setting}"
        assert (type(outcome.error).__name__, outcome.exit_code) == (kind, code), text
    with pytest.raises(TrustpullError) as caught:
        service.verify(GUN, all_tags=True)
    assert (type(caught.value).__name__, caught.value.exit_code) == (kind, code)
    assert _cached_files(env) == []


def test_a_tag_rule_under_a_matching_root_pin_keeps_its_own_requirements(
    make_env: MakeEnv,
) -> None:
    """The repository rule's pin applies to the tag rule's tags and the tag rule still decides
    what they need (the pin matches here: `2.0` passes, signed by releases; alice refuses)."""
    env = make_env()
    canonical = env.builder.keys("root")[0].canonical_id
    scope = Scope(registry="127.0.0.1:5000", repository="ns/app")
    repo = Rule("repo", 0, scope, root_keys=(canonical,), tofu=False)
    release = Rule("rel", 1, dataclasses.replace(scope, tag="2.0"), signers=("releases",))
    alice = Rule("alice", 2, dataclasses.replace(scope, tag="1.0"), signers=("alice",))
    service = TrustService(env.settings, _policy(repo, release, alice))
    (ok,) = service.verify(f"{GUN}:2.0").resolutions
    assert ok.digest == "sha256:" + D2
    refused = service.check(f"{GUN}:1.0")
    assert refused.exit_code == 9 and "alice" in refused.reason


def test_I04_an_unknown_digest_under_a_policy_is_not_signed_for_any_tag(
    make_env: MakeEnv,
) -> None:
    """Under a policy, a digest that no tag is signed for was refused as "refused by the rules
    of the tags it is signed for", listing every tag of the repository with "not signed as
    required": each tag's digest mismatch became a policy refusal instead of "another digest".
    A tag signed for it whose rule refuses is still named."""
    env = make_env()
    digest = "sha256:" + "99" * 32
    service = TrustService(env.settings, _policy(Rule("default", 0, Scope())))
    with pytest.raises(PolicyError) as caught:
        service.verify(f"{GUN}@{digest}")
    assert caught.value.exit_code == 9
    assert f"digest {digest} is not signed for any tag" in caught.value.message
    assert "tag 1.0" not in caught.value.message
    refusing = _policy(_tag_rule("no-2.0", "2.0", refuse=True), Rule("default", 1, Scope()))
    with pytest.raises(PolicyError) as named:
        TrustService(env.settings, refusing).verify(f"{GUN}@sha256:{D2}")
    assert "tag 2.0" in named.value.message and "tag 1.0" not in named.value.message


@pytest.mark.parametrize(
    "pin",
    [
        {"rule": {"root_keys": ("a" * 64,)}},
        {"certs": {f"{GUN}-unsigned": ("a" * 64,)}},
        {"certs": {"127.0.0.1:5000/ns/*": ("a" * 64,)}},
        {"ca": {"127.0.0.1:5000/ns/": b"-----BEGIN CERTIFICATE-----"}},
    ],
    ids=["rule-root_keys", "certs", "certs-wildcard", "ca"],
)
def test_G02_a_pinned_repository_is_never_accepted_unsigned(
    make_env: MakeEnv, pin: dict[str, dict[str, object]]
) -> None:
    """A root pin says the repository is signed, by that root: its trust server answering "no
    trust data" is a refusal even under `allow_unsigned`, as a cached root already makes it (an
    attacker who controls the trust server deleted the data, and a fresh CI runner, which
    caches nothing, pulled UNSIGNED what its configuration pins)."""
    from trust.settings import TrustPinning

    env = make_env()
    other = f"{GUN}-unsigned"  # the trust server has nothing for this repository
    scope = Scope(registry="127.0.0.1:5000", repository="ns/app-unsigned")
    rule = Rule("legacy", 0, scope, allow_unsigned=True, origin="p:1", **pin.get("rule", {}))  # type: ignore[arg-type]
    pinning = TrustPinning(certs=pin.get("certs", {}), ca=pin.get("ca", {}))  # type: ignore[arg-type]
    settings = dataclasses.replace(env.settings, trust_pinning=pinning)
    service = TrustService(settings, _policy(rule))
    for text, all_tags in ((f"{other}:1.0", False), (f"{other}@sha256:{D1}", False), (other, True)):
        with pytest.raises(PolicyError) as caught:
            service.verify(text, all_tags=all_tags)
        assert caught.value.exit_code == 9, text
        assert "pinned" in caught.value.message and "UNSIGNED" not in caught.value.message
    # the same rule without a pin accepts it unsigned
    assert (
        TrustService(env.settings, _policy(dataclasses.replace(rule, root_keys=())))
        .verify(f"{other}:1.0")
        .unsigned
    )


def test_all_tags_lists_a_signers_tags_only_for_the_rules_that_name_it(make_env: MakeEnv) -> None:
    """A tag rule naming signer alice for tag `x` put every tag alice signed into `-a`, and
    `alice-only` (whose rule is docker's lookup, which never reads alice) refused the whole run
    (exit 9). A signer's tag is listed when the rule deciding that tag names the signer: `x` is
    pulled as alice signed it, and alice's other tags are left out as docker's `-a` leaves them."""
    builder = baseline_builder()
    builder.add_target("x", D2, 531, role="targets/alice")
    env = make_env(builder)
    scope = Scope(registry="127.0.0.1:5000", repository="ns/app", tag="x")
    service = TrustService(env.settings, _policy(Rule("x", 0, scope, signers=("alice",))))
    every = service.verify(GUN, all_tags=True).resolutions
    assert [(r.tag, r.digest) for r in every] == [
        ("1.0", "sha256:" + D1),
        ("2.0", "sha256:" + D2),
        ("only-targets", "sha256:" + "bb" * 32),
        ("x", "sha256:" + D2),
    ]
    # a digest only alice signed, for a tag whose rule does not name her: signed for no tag
    with pytest.raises(PolicyError, match="is not signed for any tag"):
        service.verify(f"{GUN}@sha256:{'a1' * 32}")


def test_I04_a_digest_is_judged_only_by_the_tags_signed_for_it(make_env: MakeEnv) -> None:
    """Under a signer rule, `NAME@<digest of ci-only>` (signed only by releases/ci) was refused
    "by the rules of the tags it is signed for", naming `only-targets`, which releases never
    signed for anything: every tag whose rule refused it for any reason was listed. Only tags
    some role signs for the digest judge it."""
    env = make_env()
    scope = Scope(registry="127.0.0.1:5000", repository="ns/app")
    service = TrustService(env.settings, _policy(Rule("rel", 0, scope, signers=("releases",))))
    with pytest.raises(PolicyError) as caught:
        service.verify(f"{GUN}@sha256:{'c1' * 32}")
    assert caught.value.exit_code == 9
    assert "only-targets" not in caught.value.message, caught.value.message
    # releases/ci signs it, but no rule reads releases/ci: signed for no tag the policy reads
    assert "is not signed for any tag" in caught.value.message
    # a tag that is signed for the digest still names its rule's reason
    two = _policy(_tag_rule("alice-2.0", "2.0", signers=("alice",)), Rule("d", 1, Scope()))
    with pytest.raises(PolicyError) as named:
        TrustService(env.settings, two).verify(f"{GUN}@sha256:{D2}")
    assert "tag 2.0" in named.value.message and "alice" in named.value.message
    assert "tag 1.0" not in named.value.message and "only-targets" not in named.value.message


def test_G02_a_repository_seen_signed_is_not_accepted_unsigned_when_its_data_goes(
    make_env: MakeEnv,
) -> None:
    """`allow_unsigned` covers the repository, it was verified (and cached) once, then its
    trust server answers 404 for everything (an attacker deleted the trust data): never
    UNSIGNED, by tag, digest or -a; the cached data still answers, with a warning, while it is
    valid, and once it has expired the pull is refused."""
    env = make_env()
    lenient = _policy(Rule("legacy", 0, Scope(), allow_unsigned=True, origin="p:1"))
    (first,) = TrustService(env.settings, lenient).verify(f"{GUN}:1.0").resolutions
    assert first.digest == "sha256:" + D1 and _cached_files(env)
    env.server.unpublish(GUN)
    for text, all_tags in ((f"{GUN}:1.0", False), (f"{GUN}@sha256:{D1}", False), (GUN, True)):
        try:
            outcome = TrustService(env.settings, lenient).verify(text, all_tags=all_tags)
        except TrustpullError as error:
            assert error.exit_code in (5, 6, 9), (text, error)
            continue
        assert outcome.unsigned is None and outcome.resolutions, text
        assert all(r.digest.startswith("sha256:") for r in outcome.resolutions)
    later = NOW + dt.timedelta(days=3650)

    def expired(settings: Settings, roles: frozenset[str]) -> NotaryClient:
        return NotaryClient(settings, now=later, required_roles=roles, warn=env.warnings.append)

    for text, all_tags in ((f"{GUN}:1.0", False), (f"{GUN}@sha256:{D1}", False), (GUN, True)):
        service = TrustService(env.settings, lenient, now=later, client_factory=expired)
        with pytest.raises(TrustpullError) as caught:
            service.verify(text, all_tags=all_tags)
        assert not isinstance(caught.value, UnsignedAccepted), text
        assert caught.value.exit_code in (5, 6, 9), (text, caught.value)
    # only the root gone from the cache: the client asks for a first root again and the server
    # says "no trust data"; what is left of the cache still says the repository was signed
    (env.metadata_dir / "root.json").unlink()
    for text, all_tags in ((f"{GUN}:1.0", False), (f"{GUN}@sha256:{D1}", False), (GUN, True)):
        with pytest.raises(TrustpullError) as caught:
            TrustService(env.settings, lenient).verify(text, all_tags=all_tags)
        assert caught.value.exit_code == 9 and "UNSIGNED" not in caught.value.message, text


def test_E04_a_nested_signer_signs_only_within_the_paths_its_parents_allow(
    make_env: MakeEnv,
) -> None:
    """A rule naming `releases/ci` accepts what that role signs inside the paths `releases`
    gave it (tag, digest, -a under the rule), never a tag outside them; a rule naming
    `releases` is not met by its child's signature."""
    builder = baseline_builder(others=False)
    builder.add_delegation("targets/releases/ci", paths=["ci-"])
    ci, outside = "c1" * 32, "c2" * 32
    builder.add_target("ci-1", ci, 540, role="targets/releases/ci")
    builder.add_target("nightly", outside, 541, role="targets/releases/ci")
    env = make_env(builder)
    scope = Scope(registry="127.0.0.1:5000", repository="ns/app")
    service = TrustService(env.settings, _policy(Rule("ci", 0, scope, signers=("releases/ci",))))
    (tagged,) = service.verify(f"{GUN}:ci-1").resolutions
    assert (tagged.digest, tagged.role) == ("sha256:" + ci, "targets/releases/ci")
    (by_digest,) = service.verify(f"{GUN}@sha256:{ci}").resolutions
    assert by_digest.tag == "ci-1"
    for text in (f"{GUN}:nightly", f"{GUN}@sha256:{outside}", f"{GUN}:nightly@sha256:{outside}"):
        outcome = service.check(text)
        assert outcome.exit_code == 9 and outcome.verdict == "fail", (text, outcome.reason)
    parent = TrustService(env.settings, _policy(Rule("rel", 0, scope, signers=("releases",))))
    assert parent.check(f"{GUN}:ci-1").exit_code == 9


# ------------------------------------------------------------ a service kept for many references


def test_a_memoised_verification_is_not_used_past_its_expiry(make_env: MakeEnv) -> None:
    """README: one `TrustService` for a long-running process. Its memo must not outlive the
    data it holds: once the (frozen) timestamp has expired, the same service refuses the
    reference as a new one does, instead of answering from what it verified before."""
    builder = baseline_builder()
    builder.set_expiry("timestamp", NOW + dt.timedelta(hours=1))
    env = make_env(builder)
    clock = [NOW]

    class Clocked(TrustService):
        def now(self) -> dt.datetime:
            return clock[0]

    def client(settings: Settings, roles: frozenset[str]) -> NotaryClient:
        return NotaryClient(settings, now=clock[0], required_roles=roles, warn=env.warnings.append)

    service = Clocked(env.settings, client_factory=client)
    (first,) = service.verify(f"{GUN}:1.0").resolutions
    assert first.digest == "sha256:" + D1
    clock[0] = NOW + dt.timedelta(hours=2)  # the server still answers the same timestamp
    with pytest.raises(ExpiredError):
        Clocked(env.settings, client_factory=client).verify(f"{GUN}:1.0")
    with pytest.raises(ExpiredError):
        service.verify(f"{GUN}:1.0")


def test_a_memoised_unsigned_acceptance_is_not_used_once_the_repository_is_signed(
    make_env: MakeEnv,
) -> None:
    """G02 for a service kept for many references: a repository accepted unsigned (no trust
    data) that is signed later is verified, by the same service as by a new one, and once its
    trust data is cached, a trust server that says "no trust data" again is not believed."""
    env = make_env()
    other = f"{GUN}-unsigned"
    lenient = _policy(Rule("legacy", 0, Scope(), allow_unsigned=True, origin="p:1"))
    service = TrustService(env.settings, lenient)
    assert service.verify(f"{other}:1.0").unsigned is not None
    env.server.publish(other, baseline_builder(other).publish())
    (fresh,) = TrustService(env.settings, lenient).verify(f"{other}:1.0").resolutions
    assert fresh.digest == "sha256:" + D1  # verified, and its trust data now cached
    (again,) = service.verify(f"{other}:1.0").resolutions
    assert again.digest == "sha256:" + D1
    env.server.unpublish(other)  # the trust data goes (G02)
    for verifier in (TrustService(env.settings, lenient), service):
        try:
            outcome = verifier.verify(f"{other}:1.0")
        except TrustpullError as error:
            assert not isinstance(error, UnsignedAccepted)
            continue
        assert outcome.unsigned is None and outcome.resolutions


def test_a_memoised_verification_serves_at_most_one_runs_length(make_env: MakeEnv) -> None:
    """A service kept for many references sees a tag re-signed (or revoked) once a run's
    length (`limits.total_timeout`) has passed, as a new service sees it at once; before, it
    answered the old digest until the timestamp expired (notary's default: two weeks)."""
    import time

    env = make_env()
    settings = dataclasses.replace(
        env.settings, limits=dataclasses.replace(env.settings.limits, total_timeout=0.5)
    )
    service = TrustService(settings)
    (first,) = service.verify(f"{GUN}:1.0").resolutions
    assert first.digest == "sha256:" + D1
    env.builder.add_target("1.0", D2, 530, role="targets/releases")  # re-signed
    env.serve()
    (fresh,) = TrustService(settings).verify(f"{GUN}:1.0").resolutions
    assert fresh.digest == "sha256:" + D2
    (within,) = service.verify(f"{GUN}:1.0").resolutions  # the same run: its memo
    assert within.digest == "sha256:" + D1
    time.sleep(0.6)
    (later,) = service.verify(f"{GUN}:1.0").resolutions
    assert later.digest == "sha256:" + D2
