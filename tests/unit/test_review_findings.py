"""Findings of the security review of the verification path (round 2): each test is named after
its finding and fails while the finding stands."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.unit._trust_env import D2, GUN, Env, env_factory
from trust.errors import (
    NoTrustDataError,
    NotSignedAsRequiredError,
    PolicyError,
    TrustpullError,
)
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
    with pytest.raises(PolicyError) as refused:
        TrustService(env.settings, strict).verify(REF)
    assert not isinstance(refused.value, NotSignedAsRequiredError)  # signed, root not pinned
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
    with pytest.raises(PolicyError) as caught:  # not signed as required (9): none there
        TrustService(env.settings, policy).verify(REF)
    # its own type: the proxy's ledger tells "no signature" from a failed requirement by it
    assert type(caught.value) is NotSignedAsRequiredError
    with pytest.raises(NoTrustDataError):
        TrustService(env.settings, policy).inspect(parse(GUN, default_tag=False), GUN, None)
    assert _cached_files(env) == []


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


@pytest.mark.parametrize(
    "setting",
    [
        {"allow_unsigned": True},
        {"trust_server": "https://127.0.0.1:1"},
        {"tofu": False},
        {"tofu": True},
        {"root_keys": ("a" * 64,)},
        {"trust_source": "notary"},
    ],
)
def test_a_tag_rule_cannot_set_how_the_repository_is_verified(setting: dict[str, object]) -> None:
    """Findings 2, 3, 6, 7 and 8 of the review had one root: a tag-scoped rule with its own
    trust server, pins, TOFU, source or unsigned acceptance verified some tags of a repository
    against another rule's data (one root, one server answer and one cache per repository):
    a digest or `-a` reference accepted UNSIGNED through one tag's rule, another server's cache
    used for a rule whose server had nothing, `tofu = false` satisfied by another rule's first
    use, two servers' keys in one cache (exit 5). Such a rule is refused where it is made (the
    parser names file, line and key: tests/unit/test_policy.py::test_strict_parsing)."""
    from trust.errors import ConfigError

    scope = Scope(registry="127.0.0.1:5000", repository="ns/app", tag="2.0")
    with pytest.raises(ConfigError, match="apply to the repository's trust data as a whole"):
        Rule("dev", 0, scope, origin="p:1", **setting)  # type: ignore[arg-type]
    Rule("dev", 0, Scope(registry="127.0.0.1:5000", repository="ns/app"), **setting)  # type: ignore[arg-type]
