"""Policy parsing and scoping, reference collection, and the --write/--check rewriting."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.unit._trust_env import D_ALICE, GUN, REF, Env, env_factory
from trust.config import Configuration, load_config
from trust.errors import ConfigError, ExpiredError, InputError, PolicyError
from trust.manifests import (
    pinned_text,
    refs_from_dockerfile,
    refs_from_list,
    rewrite,
    yaml_sites,
)
from trust.notary.client import NotaryClient
from trust.policy import (
    BUILTIN_DEFAULT,
    AllOf,
    AtLeast,
    Context,
    Policy,
    Refuse,
    Rule,
    Scope,
    parse_duration,
)
from trust.reference import parse
from trust.service import TrustService, settings_for


def _settings(tmp_path: Path, text: str, name: str = "config.toml") -> Configuration:
    path = tmp_path / name
    path.write_text(text)
    return load_config({}, config_file=path)


def _policy(tmp_path: Path, text: str) -> Policy:
    policy = _settings(tmp_path, text).policy
    assert isinstance(policy, Policy)
    return policy


RULES = """
[[rules]]
name = "default"

[[rules]]
name = "registry"
registry = "registry.example.com"
signers = ["alice"]

[[rules]]
name = "team"
registry = "registry.example.com"
namespace = "team"
signers = ["alice", "bob", "carol"]
threshold = 2

[[rules]]
name = "team-sub"
registry = "registry.example.com"
namespace = "team/sub"
refuse = true

[[rules]]
name = "app"
registry = "registry.example.com"
repository = "team/app"
min_validity = "7d"

[[rules]]
name = "app-v"
registry = "registry.example.com"
repository = "team/app"
tag = "v*"
allow_unsigned = true

[[rules]]
name = "app-v1"
registry = "registry.example.com"
repository = "team/app"
tag = "v1"
tofu = false

[[rules]]
name = "hub"
registry = "docker.io"
repository = "alpine"
root_keys = ["{key}"]
""".replace("{key}", "a" * 64)


@pytest.mark.parametrize(
    ("reference", "rule"),
    [
        ("registry.example.com/team/app:v1", "app-v1"),
        ("registry.example.com/team/app:v2", "app-v"),
        ("registry.example.com/team/app:1.0", "app"),
        ("registry.example.com/team/app@sha256:" + "b" * 64, "app"),
        ("registry.example.com/team/sub/x:1", "team-sub"),
        ("registry.example.com/team/other:1", "team"),
        ("registry.example.com/team:1", "registry"),  # the namespace covers what is under it
        ("registry.example.com/solo:1", "registry"),
        ("other.example.com/team/app:1", "default"),
        ("alpine:3.19", "hub"),
        ("docker.io/library/alpine", "hub"),
        ("busybox", "default"),
    ],
)
def test_most_specific_scope_wins(tmp_path: Path, reference: str, rule: str) -> None:
    policy = _policy(tmp_path, RULES)
    assert policy.match(parse(reference)).label == rule


def test_builtin_default_and_ties(tmp_path: Path) -> None:
    policy = _policy(
        tmp_path,
        '[[rules]]\nname = "a"\nregistry = "r.io"\ntag = "v*"\n\n'
        '[[rules]]\nname = "b"\nregistry = "r.io"\ntag = "*1"\n',
    )
    assert policy.match(parse("other.io/x:1")) is BUILTIN_DEFAULT
    # equal specificity (one literal character each): the earlier rule wins, and says so
    explained = policy.explain(parse("r.io/x:v1"))
    assert explained["rule"] == "a"
    assert "earlier rule" in str(explained["why"])
    assert [m["rule"] for m in explained["also_matching"]] == ["b", "builtin-default"]  # type: ignore[index, union-attr]


def test_requirements_composed(tmp_path: Path) -> None:
    policy = _policy(tmp_path, RULES)
    team = policy.match(parse("registry.example.com/team/x:1"))
    requirement = team.requirement
    assert isinstance(requirement, AllOf)
    assert isinstance(requirement.children[0], AtLeast)
    assert team.required_roles == {"targets/alice", "targets/bob", "targets/carol"}
    refuse = policy.match(parse("registry.example.com/team/sub/x:1"))
    assert isinstance(refuse.requirement, Refuse)
    with pytest.raises(PolicyError, match="refused by rule team-sub"):
        refuse.requirement.verify(
            Context(parse("registry.example.com/team/sub/x:1"), refuse, None, None, None)  # type: ignore[arg-type]
        )


def test_rule_settings_override(tmp_path: Path) -> None:
    settings = _settings(
        tmp_path,
        '[trust_pinning]\ncerts = { "docker.io/library/alpine" = ["'
        + "c" * 64
        + '"] }\n'
        + RULES
        + '\n[[rules]]\nname = "srv"\nregistry = "r.io"\ntrust_server = "https://notary.r.io/"\n',
    )
    policy, base = settings.policy, settings.settings
    assert policy is not None
    alpine = parse("alpine:3.19")
    derived = settings_for(policy.match(alpine), alpine, base)
    assert derived.trust_pinning.certs["docker.io/library/alpine"] == ("a" * 64,)
    ref = parse("registry.example.com/team/app:v1")
    assert settings_for(policy.match(ref), ref, base).trust_pinning.disable_tofu is True
    srv = parse("r.io/x:1")
    assert settings_for(policy.match(srv), srv, base).trust_server_override == (
        "https://notary.r.io"
    )


def test_policy_turns_trust_on_and_policy_file_replaces_rules(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(RULES)
    loaded = load_config({"DOCKER_CONTENT_TRUST": "0"}, config_file=config)
    assert loaded.settings.content_trust is True
    off = load_config({}, config_file=config, content_trust=False)
    assert off.settings.content_trust is False and off.policy is not None
    rules_only = tmp_path / "policy.toml"
    rules_only.write_text('[[rules]]\nname = "only"\nrefuse = true\n')
    replaced = load_config({}, config_file=config, policy_file=rules_only)
    assert replaced.policy is not None
    assert [r.label for r in replaced.policy.rules] == ["only"]
    assert load_config({"DOCKER_CONTENT_TRUST": "0"}).settings.content_trust is False


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('[[rules]]\nregistry = "r.io"\nsignerz = ["a"]\n', ":3: rules[0].signerz: unknown key"),
        ('[[rules]]\nregistry = "r.io"\ntag = "[v"\n', ":3: rules[0].tag: bad pattern"),
        ('[[rules]]\nregistry = "R.io"\n', ":2: rules[0].registry: must be a lower-case"),
        ('[[rules]]\nnamespace = "team"\n', ':2: rules[0].namespace: needs "registry"'),
        ('[[rules]]\nregistry = "r.io"\nsigners = "alice"\n', ":3: rules[0].signers: must be"),
        ('[[rules]]\nregistry = "r.io"\nsigners = ["Alice"]\n', "is not a delegation role"),
        ('[[rules]]\nregistry = "r.io"\nthreshold = 1\n', ':3: rules[0].threshold: needs "sig'),
        (
            '[[rules]]\nregistry = "r.io"\nsigners = ["a"]\nthreshold = 2\n',
            "threshold: must be between 1 and 1",
        ),
        ('[[rules]]\nregistry = "r.io"\nrefuse = true\nsigners = ["a"]\n', "takes no other"),
        ('[[rules]]\nregistry = "r.io"\nrefuse = "yes"\n', "refuse: must be true or false"),
        ('[[rules]]\nregistry = "r.io"\nroot_keys = ["abc"]\n', "is not a 64-hex key ID"),
        ('[[rules]]\nregistry = "r.io"\nroot_ca = "missing.pem"\n', "does not exist"),
        ('[[rules]]\nregistry = "r.io"\nmin_validity = "7 days"\n', "min_validity: must be"),
        ('[[rules]]\nregistry = "r.io"\ntrust_server = "http://x"\n', "trust_server: valid"),
        ('[[rules]]\nregistry = "r.io"\ntrust_source = "tuf.io"\n', "trust_source: must be"),
        (
            '[[rules]]\nregistry = "r.io"\n\n[[rules]]\nregistry = "r.io"\n',
            ":5: rules[1].registry: same scope",
        ),
        ('[[rules]]\nname = "a"\n\n[[rules]]\nname = "a"\nregistry = "r.io"\n', "same name"),
        ("[rules]\nname = 1\n", "rules: must be an array of tables"),
    ],
)
def test_strict_parsing(tmp_path: Path, body: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _settings(tmp_path, body)
    assert str(tmp_path / "config.toml") in caught.value.message
    assert message in caught.value.message


def test_policy_file_holds_rules_only(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text("[limits]\nretries = 1\n")
    with pytest.raises(ConfigError, match="a policy file holds"):
        load_config({}, policy_file=path)


def test_duration() -> None:
    assert parse_duration("1d12h") == 129600
    assert parse_duration(60) == 60
    for bad in ("", "7", "-1d", True, 1.5, "1y"):
        with pytest.raises(ValueError):
            parse_duration(bad)


def test_scope_digest_only_reference_skips_tag_rules() -> None:
    scope = Scope(registry="r.io", tag="*")
    assert not scope.matches(parse("r.io/x@sha256:" + "a" * 64))
    assert scope.matches(parse("r.io/x"))
    assert Rule("x", 0, Scope()).requirement.describe().startswith("signed by the repository")


# ------------------------------------------------------------------------------ collection


def test_dockerfile_references() -> None:
    text = (
        "# syntax=docker/dockerfile:1\n"
        "ARG REGISTRY=registry.example.com\n"
        "ARG TAG=1.0\n"
        "ARG UNUSED\n"
        "FROM --platform=$BUILDPLATFORM ${REGISTRY}/team/build:${TAG} AS build\n"
        "RUN make \\\n"
        "  && true\n"
        "FROM build AS test\n"
        "from scratch\n"
        "FROM ${REGISTRY}/team/run:${RUN_TAG:-2.0} \\\n"
        "    AS final\n"
        "FROM Build\n"
        "FROM alpine\n"
    )
    sites = refs_from_dockerfile(text, "Dockerfile", {"TAG": "1.1"})
    assert [(s.text, s.line) for s in sites] == [
        ("docker/dockerfile:1", 1),  # the BuildKit frontend: pulled and run, so verified
        ("registry.example.com/team/build:1.1", 5),
        ("registry.example.com/team/run:2.0", 10),
        ("alpine", 13),
    ]
    with pytest.raises(InputError, match="Dockerfile:1: FROM without an image"):
        refs_from_dockerfile("FROM --platform=x\n", "Dockerfile")


def test_list_references() -> None:
    sites = refs_from_list("# images\nalpine:3.19\n\n  busybox  # shell\n", "list")
    assert [(s.text, s.line) for s in sites] == [("alpine:3.19", 2), ("busybox", 4)]


def test_compose_references(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APP_TAG", "2.1")
    text = (
        "services:\n"
        "  web:\n"
        "    image: registry.example.com/team/web:1.0\n"
        "  app:\n"
        "    image: 'registry.example.com/team/app:${APP_TAG}'\n"
        "  built:\n"
        "    build: .\n"
        "  db:\n"
        "    image: postgres:${PG:-16}\n"
    )
    kind, sites = yaml_sites(text, "compose.yaml")
    assert kind == "compose"
    assert [s.text for s in sites] == [
        "registry.example.com/team/web:1.0",
        "registry.example.com/team/app:2.1",
        "postgres:16",
    ]
    assert sites[1].fixed is not None  # interpolated: never rewritten in place


K8S = """\
# namespace-wide manifests
apiVersion: v1
kind: List
items:
  - apiVersion: apps/v1
    kind: Deployment
    spec:
      template:
        spec:
          initContainers:
          - name: migrate
            image: registry.example.com/team/migrate:1.0   # runs first
          containers:
          - name: app
            image: "registry.example.com/team/app:1.0"
---
apiVersion: batch/v1
kind: CronJob
spec:
  jobTemplate:
    spec:
      template:
        spec:
          containers:
            - {name: job, image: 'registry.example.com/team/job:1.0'}
---
apiVersion: v1
kind: Pod
spec:
  ephemeralContainers:
    - name: debug
      image: busybox
  containers:
    - name: x
      image: alpine@sha256:%s
---
kind: ConfigMap
data:
  image: not-a-container
""" % ("a" * 64)


def test_k8s_references_every_kind() -> None:
    kind, sites = yaml_sites(K8S, "deploy.yaml")
    assert kind == "k8s"
    assert [s.text for s in sites] == [
        "registry.example.com/team/migrate:1.0",
        "registry.example.com/team/app:1.0",
        "registry.example.com/team/job:1.0",
        "busybox",
        "alpine@sha256:" + "a" * 64,
    ]
    for kind_name in ("StatefulSet", "DaemonSet", "Job", "ReplicaSet"):
        doc = (
            f"kind: {kind_name}\nspec:\n  template:\n    spec:\n"
            "      containers:\n      - image: x:1\n"
        )
        assert [s.text for s in yaml_sites(doc, "f.yaml")[1]] == ["x:1"]


def test_rewrite_keeps_comments_and_layout() -> None:
    _kind, sites = yaml_sites(K8S, "deploy.yaml")
    digest = "sha256:" + "f" * 64
    changes = {site: pinned_text(site.text, "1.0", digest) for site in sites}
    out = rewrite(K8S, "deploy.yaml", changes)
    expected = (
        K8S.replace("team/migrate:1.0   #", f"team/migrate:1.0@{digest}   #")
        .replace('team/app:1.0"', f'team/app:1.0@{digest}"')
        .replace("team/job:1.0'", f"team/job:1.0@{digest}'")
        .replace("image: busybox", f"image: busybox:1.0@{digest}")
        .replace("alpine@sha256:" + "a" * 64, f"alpine@{digest}")
    )
    assert out == expected
    # re-reading finds the same sites, now pinned
    assert [s.text for s in yaml_sites(out, "deploy.yaml")[1]] == [changes[s] for s in sites]


def test_rewrite_refuses_what_it_cannot_place(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APP_TAG", "2.1")
    text = "services:\n  app:\n    image: 'r.io/app:${APP_TAG}'\n"
    _kind, sites = yaml_sites(text, "compose.yaml")
    with pytest.raises(InputError, match=r"compose\.yaml:3: cannot rewrite"):
        rewrite(text, "compose.yaml", {sites[0]: "r.io/app:2.1@sha256:" + "a" * 64})


def test_pinned_text_keeps_spelling() -> None:
    digest = "sha256:" + "e" * 64
    assert pinned_text("alpine", "latest", digest) == f"alpine:latest@{digest}"
    assert pinned_text("localhost:5000/app:1", "1", digest) == f"localhost:5000/app:1@{digest}"
    assert pinned_text("app:1@sha256:" + "0" * 64, "1", digest) == f"app:1@{digest}"
    assert pinned_text("app@sha256:" + "0" * 64, "1", digest) == f"app@{digest}"


# ------------------------------------------------------------------------------ evaluation


@pytest.fixture
def make_env(isolated_home: Path) -> Iterator[Callable[..., Env]]:
    yield from env_factory()


def test_named_signer_failure_is_a_verification_failure(make_env: Callable[..., Env]) -> None:
    """E06 for policy signers: an expired targets/alice named by a rule refuses (exit 5);
    unnamed, it is skipped with a warning as before."""
    env = make_env(publish=False)
    repo = env.builder.publish()
    env.serve(env.sw.rechain(env.sw.expire(repo, "targets/alice"), ["targets/alice"]))
    data = env.update()
    assert "targets/alice" not in data.roles
    assert any("targets/alice" in w for w in env.warnings)
    with pytest.raises(ExpiredError):
        NotaryClient(env.settings, required_roles=frozenset({"targets/alice"})).update(parse(REF))
    policy = Policy((Rule("need-alice", 0, Scope(), signers=("alice",)),), "test")
    outcome = TrustService(env.settings, policy, notice=env.warnings.append).check(
        f"{GUN}:alice-only"
    )
    assert isinstance(outcome.error, ExpiredError) and outcome.exit_code == 5


def test_signers_and_unsigned_verdicts(make_env: Callable[..., Env]) -> None:
    env = make_env()
    policy = Policy((Rule("need-alice", 0, Scope(), signers=("alice",)),), "test")
    service = TrustService(env.settings, policy, notice=env.warnings.append)
    ok = service.check(f"{GUN}:alice-only")
    assert ok.verdict == "pass" and ok.resolutions[0].digest == "sha256:" + D_ALICE
    missing = service.check(f"{GUN}:1.0")
    assert missing.exit_code == 9 and "alice" in missing.reason
    default = TrustService(env.settings, Policy((), "test")).check(f"{GUN}:alice-only")
    assert default.exit_code == 9  # not signed in releases/targets: a rule not met
    assert TrustService(env.settings).check(f"{GUN}:alice-only").exit_code == 4  # no policy

    other = f"{GUN}-unsigned:1.0"  # the trust server has nothing for this repository
    lenient = Policy((Rule("legacy", 0, Scope(), allow_unsigned=True, origin="p:1"),), "p")
    outcome = TrustService(env.settings, lenient).check(other)
    assert outcome.verdict == "unsigned", outcome.reason
    assert outcome.reason.startswith("UNSIGNED, accepted by rule legacy (p:1)")
    assert TrustService(env.settings, Policy((), "p")).check(other).exit_code == 9
    # the rule accepts no trust data at all, not an unsigned tag of a signed repository
    assert TrustService(env.settings, lenient).check(f"{GUN}:never-signed").exit_code == 9
