"""Findings of the security review of the verification path (round 2): each test is named after
its finding and fails while the finding stands."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.unit._trust_env import D1, D2, GUN, Env, env_factory
from trust.errors import NoTrustDataError, PolicyError, TrustpullError
from trust.policy import Policy, Rule, Scope
from trust.reference import parse
from trust.service import TrustService

MakeEnv = Callable[..., Env]
REF = f"{GUN}:1.0"


@pytest.fixture
def make_env(isolated_home: Path) -> Iterator[MakeEnv]:
    yield from env_factory()


def _policy(*rules: Rule) -> Policy:
    return Policy(rules, "test.toml")


def _cached_files(env: Env) -> list[str]:
    trust_dir = env.docker_config / "trust"
    if not trust_dir.exists():
        return []
    return sorted(str(p.relative_to(trust_dir)) for p in trust_dir.rglob("*.json"))


def test_inspect_does_not_bypass_a_rule_that_forbids_trust_on_first_use(
    make_env: MakeEnv,
) -> None:
    """A rule with `tofu = false` refuses a first contact (exit 9, nothing written). `inspect`
    must not trust the root on first use and commit it to the cache on the rule's behalf:
    otherwise `trustpull inspect X` followed by `trustpull pull X` accepts a root that was
    never pinned."""
    env = make_env()
    strict = _policy(Rule("strict", 0, Scope(), tofu=False, origin="p:1"))
    with pytest.raises(PolicyError):
        TrustService(env.settings, strict).verify(REF)
    assert _cached_files(env) == []
    ref = parse(GUN, default_tag=False)
    try:
        TrustService(env.settings, strict).inspect(ref, GUN, None)
    except TrustpullError:
        pass  # refusing the inspect is fine too
    with pytest.raises(PolicyError):
        TrustService(env.settings, strict).verify(REF)


def test_inspect_uses_the_rules_trust_server(make_env: MakeEnv) -> None:
    """A rule's `trust_server` decides where the repository's trust data comes from; `inspect`
    (CLI and API) must ask the same server `verify` asks, not the file's default one."""
    env = make_env()
    other = make_env(publish=False)  # a trust server with nothing for GUN
    rule = Rule("elsewhere", 0, Scope(), trust_server=other.server.url, origin="p:1")
    policy = _policy(rule)
    with pytest.raises(PolicyError):  # not signed as required (9): the rule's server has none
        TrustService(env.settings, policy).verify(REF)
    with pytest.raises(NoTrustDataError):
        TrustService(env.settings, policy).inspect(parse(GUN, default_tag=False), GUN, None)
    assert _cached_files(env) == []


def _dev_unsigned_policy(other: Env) -> Policy:
    """Tag 2.0 is verified by another trust server (which has nothing) and may be unsigned
    there; every other tag is verified by the file's trust server."""
    scope = Scope(registry="127.0.0.1:5000", repository="ns/app", tag="2.0")
    dev = Rule("dev", 0, scope, allow_unsigned=True, trust_server=other.server.url, origin="p:1")
    return _policy(dev, Rule("default", 1, Scope(), origin="p:2"))


def test_digest_reference_is_not_accepted_unsigned_through_a_tag_rule(make_env: MakeEnv) -> None:
    """`NAME@sha256:X` where X is signed for no tag at all must be refused (4/9). A tag-scoped
    `allow_unsigned` rule (whose own trust server has no data) must not turn the digest
    reference into an UNSIGNED acceptance: the digest is then pulled unverified."""
    env = make_env()
    other = make_env(publish=False)
    service = TrustService(env.settings, _dev_unsigned_policy(other))
    verification = service.check(f"{GUN}@sha256:{'ee' * 32}")
    assert verification.unsigned is None
    assert verification.error is not None


def test_all_tags_is_not_accepted_unsigned_by_one_tag_rule(make_env: MakeEnv) -> None:
    """`-a` under a repository rule that finds trust data must pin every tag it pulls. One
    tag's `allow_unsigned` rule must not make the whole `-a` run UNSIGNED (the engine then
    pulls every tag, 1.0 included, by tag and unverified)."""
    env = make_env()
    other = make_env(publish=False)
    service = TrustService(env.settings, _dev_unsigned_policy(other))
    try:
        verification = service.verify(GUN, all_tags=True)
    except TrustpullError as error:
        assert error.exit_code == 9  # refusing the whole -a run is fail-closed
        return
    assert verification.unsigned is None
    assert "sha256:" + D1 in {r.digest for r in verification.resolutions}


def test_rules_with_different_trust_servers_do_not_share_one_cache(make_env: MakeEnv) -> None:
    """Tag 2.0 is verified by a second trust server (its own keys), every other tag by the
    file's. The trust cache is keyed by GUN only, so once 1.0 was accepted, 2.0 is checked
    against the other server's cached root and timestamp key and refused as a possible attack
    (exit 5), although each server's data verifies under its own rule."""
    env = make_env()
    other = make_env()  # the same GUN, published with different keys
    scope = Scope(registry="127.0.0.1:5000", repository="ns/app", tag="2.0")
    policy = _policy(
        Rule("dev", 0, scope, trust_server=other.server.url, origin="p:1"),
        Rule("default", 1, Scope(), origin="p:2"),
    )
    assert TrustService(env.settings, policy).check(f"{GUN}:1.0").verdict == "pass"
    second = TrustService(env.settings, policy).check(f"{GUN}:2.0")
    assert second.verdict == "pass", second.error


def test_a_tofu_false_tag_rule_is_not_satisfied_by_another_rules_first_use(
    make_env: MakeEnv,
) -> None:
    """`tofu = false` on tag 2.0: a first contact is refused (9). A looser rule for tag 1.0 of
    the same repository trusts the root on first use and commits it; afterwards the strict
    rule accepts that never-pinned root, because the cache (per GUN) no longer says first use."""
    env = make_env()
    scope = Scope(registry="127.0.0.1:5000", repository="ns/app", tag="2.0")
    policy = _policy(
        Rule("strict", 0, scope, tofu=False, origin="p:1"),
        Rule("default", 1, Scope(), origin="p:2"),
    )
    assert TrustService(env.settings, policy).check(f"{GUN}:2.0").exit_code == 9
    assert TrustService(env.settings, policy).check(f"{GUN}:1.0").verdict == "pass"
    assert TrustService(env.settings, policy).check(f"{GUN}:2.0").exit_code == 9


def test_proxy_refusal_names_the_origins_rule_for_a_mirrored_reference() -> None:
    """Under `[mirrors]` the service applies the origin's rule; the proxy's refusal (its
    decision-log `rule` field) named the rule matching the mirror's name instead
    (trust/proxy/verify.py `rule_for`), so the log disagrees with the decision."""
    from trust.proxy.verify import rule_for
    from trust.settings import Settings

    settings = Settings(mirrors={"mirror.corp:5000/app": "registry.example.com"})
    scope = Scope(registry="registry.example.com", repository="team/app")
    policy = _policy(Rule("origin-rule", 0, scope, refuse=True, origin="p:1"))
    ref = parse("mirror.corp:5000/app/team/app:1.0")
    service = TrustService(settings, policy)
    outcome = service.check(str(ref))
    assert outcome.rule is not None and outcome.rule.label == "origin-rule"
    assert outcome.exit_code == 9
    assert rule_for(policy, ref, settings) == outcome.rule.label


def test_memo_is_not_shared_by_two_rules_with_one_index(make_env: MakeEnv) -> None:
    """The memo is keyed by (GUN, rule.index). `Policy` (public in the Python API) does not
    require distinct indexes, so two rules built in code with one index share a verification:
    in one `-a` run, tag 2.0's rule names a trust server that has nothing for the repository,
    yet 2.0 is accepted with the data the default rule fetched from the file's server. (A root
    pin on the second rule is still caught, by its PinnedRoot requirement: exit 9.)"""
    env = make_env()
    other = make_env(publish=False)
    scope = Scope(registry="127.0.0.1:5000", repository="ns/app", tag="2.0")
    elsewhere = Rule("elsewhere", 0, scope, trust_server=other.server.url, origin="code")
    policy = _policy(elsewhere, Rule("default", 0, Scope(), origin="code"))
    with pytest.raises(PolicyError):  # 2.0 is not signed as required, on its own server
        TrustService(env.settings, policy).verify(GUN, all_tags=True)


def test_a_rules_empty_trust_server_does_not_fall_back_to_another_servers_cache(
    make_env: MakeEnv,
) -> None:
    """Same root cause as the shared cache above, fail-open side: tag 2.0's rule names a trust
    server that has no data for the repository (a 404 on the timestamp). Once 1.0 was accepted
    from the file's server, 2.0 is accepted from that server's cached data ("trust server
    unreachable ... using cached trust data"), and its resolution names the rule's server."""
    env = make_env()
    other = make_env(publish=False)
    scope = Scope(registry="127.0.0.1:5000", repository="ns/app", tag="2.0")
    policy = _policy(
        Rule("elsewhere", 0, scope, trust_server=other.server.url, origin="p:1"),
        Rule("default", 1, Scope(), origin="p:2"),
    )
    assert TrustService(env.settings, policy).check(f"{GUN}:2.0").exit_code == 9
    assert TrustService(env.settings, policy).check(f"{GUN}:1.0").verdict == "pass"
    assert TrustService(env.settings, policy).check(f"{GUN}:2.0").exit_code == 9


def test_digest_reference_reports_the_rule_of_the_tag_that_accepted_it(make_env: MakeEnv) -> None:
    """`NAME@sha256:<digest of 2.0>` is accepted through tag 2.0, under tag 2.0's rule; the
    result (check's JSON `rule`/`reason`, the proxy's decision log) names the repository's
    rule instead, which did not decide."""
    env = make_env()
    scope = Scope(registry="127.0.0.1:5000", repository="ns/app", tag="2.0")
    policy = _policy(
        Rule("two", 0, scope, min_validity=60.0, origin="p:1"),
        Rule("default", 1, Scope(), origin="p:2"),
    )
    outcome = TrustService(env.settings, policy).check(f"{GUN}@sha256:{D2}")
    assert outcome.verdict == "pass"
    assert outcome.rule is not None and outcome.rule.label == "two"
