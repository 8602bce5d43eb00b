"""`[mirrors]` (issue 15 part 6): strict parsing, the one name mapping in the service, and a
trusted pull that asks the mirror for the origin's verified digest.

The trust data is served by the fixture Notary server for the origin `127.0.0.1:5000/ns/app`;
the mirror `mirror.test:5000` exists only as a name, so any request sent to it would fail.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

import trust.notary.remote
from tests.unit._trust_env import D1, D2, GUN, Env, env_factory
from trust.config import load_config
from trust.credentials import RegistryAuth
from trust.errors import ConfigError, InputError, PolicyError
from trust.policy import Policy, Rule, Scope
from trust.reference import parse
from trust.service import TrustService, mirror_origin
from trust.settings import Settings
from trust.trusted_pull import pull

MakeEnv = Callable[..., Env]
MIRROR = "mirror.test:5000"
MIRRORED = f"{MIRROR}/ns/app"


@pytest.fixture
def make_env(isolated_home: Path) -> Iterator[MakeEnv]:
    yield from env_factory()


def _mirrored_env(make_env: MakeEnv) -> tuple[Env, Settings]:
    """The origin's trust server is configured for the origin only (no override): verifying
    through the mirror works only if the origin's server is the one asked."""
    env = make_env()
    settings = replace(
        env.settings,
        trust_server_override=None,
        trust_servers={"127.0.0.1:5000": env.server.url},
        mirrors={MIRROR: "127.0.0.1:5000", "harbor.corp/dockerhub": "docker.io"},
    )
    return env, settings


# ------------------------------------------------------------------------------ parsing


def _load(tmp_path: Path, text: str) -> Settings:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return load_config({}, config_file=path).settings


def test_mirrors_table_is_read(tmp_path: Path) -> None:
    settings = _load(
        tmp_path,
        '[mirrors]\n"harbor.corp/dockerhub" = "docker.io"\n'
        '"mirror.corp:5000" = "registry.example.com"\n'
        '"localhost:5001/cache" = "registry.example.com/team"\n',
    )
    assert dict(settings.mirrors) == {
        "harbor.corp/dockerhub": "docker.io",
        "mirror.corp:5000": "registry.example.com",
        "localhost:5001/cache": "registry.example.com/team",
    }
    assert _load(tmp_path, "").mirrors == {}


@pytest.mark.parametrize(
    ("body", "line", "problem"),
    [
        ('"mirror.corp" = 5', 3, "must be an origin registry name string"),
        ('"https://mirror.corp" = "docker.io"', 3, "mirror must be a registry host"),
        ('"mirror.corp:5000/x:tag" = "docker.io"', 3, "mirror must be a registry host"),
        ('"mirror" = "docker.io"', 3, "mirror must be a registry host"),
        ('"Mirror.corp" = "docker.io"', 3, "lower case"),
        ('"mirror.corp" = "https://docker.io"', 3, "origin 'https://docker.io' must be"),
        ('"mirror.corp" = "docker.io/library/alpine@sha256:00"', 3, "origin"),
        ('"mirror.corp" = ""', 3, "origin '' must be"),
        ('"mirror.corp" = "mirror.corp"', 3, "cannot map to itself"),
        ('"docker.io/cache" = "docker.io"', 3, "overlaps its own mirror prefix"),
        ('"mirror.corp" = "mirror.corp/inner"', 3, "overlaps its own mirror prefix"),
        ('mirror.corp = "docker.io"', 3, "quote a mirror name"),
    ],
)
def test_bad_mirror_entries_name_file_line_and_key(
    tmp_path: Path, body: str, line: int, problem: str
) -> None:
    path = tmp_path / "config.toml"
    path.write_text(f'[trust_servers]\n[mirrors]\n{body}\n"fine.corp" = "registry.example.com"\n')
    with pytest.raises(ConfigError) as caught:
        load_config({}, config_file=path)
    message = caught.value.message
    assert message.startswith(f"{path}:{line}: mirrors."), message
    assert problem in message, message


def test_chained_mirrors_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[mirrors]\n"a.corp" = "b.corp"\n"b.corp/x" = "docker.io"\n')
    with pytest.raises(ConfigError) as caught:
        load_config({}, config_file=path)
    assert caught.value.message.startswith(f"{path}:2: mirrors.a.corp: origin 'b.corp' overlaps")
    assert "chain" in caught.value.message


@pytest.mark.parametrize(
    "scope",
    [
        'registry = "harbor.corp", namespace = "dockerhub"',
        'registry = "harbor.corp", namespace = "dockerhub/library"',
        'registry = "harbor.corp", repository = "dockerhub/library/alpine"',
        'registry = "mirror.corp:5000"',
        'registry = "mirror.corp:5000", repository = "team/app", tag = "1.*"',
    ],
)
@pytest.mark.parametrize("where", ["config", "policy"])
def test_a_rule_scoped_under_a_mirror_is_refused(tmp_path: Path, scope: str, where: str) -> None:
    """Rules match on the origin's names, so a rule whose every name lies under a mirror
    prefix would match nothing: a `refuse` or a pin written there would silently not apply.
    The loader refuses it, naming the origin to scope it on."""
    mirrors = '[mirrors]\n"harbor.corp/dockerhub" = "docker.io"\n"mirror.corp:5000" = "r.example"\n'
    fields = scope.replace(", ", "\n")
    rule = (
        '[[rules]]\nname = "ok"\nregistry = "r.example"\n\n'
        f'[[rules]]\nname = "dead"\n{fields}\nrefuse = true\n'
    )
    path = tmp_path / "config.toml"
    policy_file: Path | None = None
    if where == "config":
        path.write_text(mirrors + rule)
    else:
        path.write_text(mirrors)
        policy_file = tmp_path / "policy.toml"
        policy_file.write_text(rule)
    with pytest.raises(ConfigError) as caught:
        load_config({}, config_file=path, policy_file=policy_file)
    message = caught.value.message
    assert "rules[1]" in message and "mirror" in message and "origin" in message, message


def test_a_rule_beside_a_mirror_prefix_is_kept(tmp_path: Path) -> None:
    """`harbor.corp` alone also covers names outside the mirror prefix `harbor.corp/dockerhub`."""
    path = tmp_path / "config.toml"
    path.write_text(
        '[mirrors]\n"harbor.corp/dockerhub" = "docker.io"\n'
        '[[rules]]\nname = "harbor"\nregistry = "harbor.corp"\nrefuse = true\n'
        '[[rules]]\nname = "hubby"\nregistry = "harbor.corp"\nnamespace = "dockerhubby"\n'
    )
    policy = load_config({}, config_file=path).policy
    assert policy is not None and [r.label for r in policy.rules][:2] == ["harbor", "hubby"]


def test_mirrors_must_be_a_table(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('mirrors = "docker.io"\n')
    with pytest.raises(ConfigError) as caught:
        load_config({}, config_file=path)
    assert f"{path}:1: mirrors: must be a table" == caught.value.message


# ------------------------------------------------------------------------------ mapping


MIRRORS = Settings(
    mirrors={
        "harbor.corp/dockerhub": "docker.io",
        "harbor.corp/dockerhub/team": "registry.example.com/team",
        "mirror.corp:5000": "registry.example.com",
    }
)


@pytest.mark.parametrize(
    ("given", "origin"),
    [
        ("harbor.corp/dockerhub/library/alpine:3.20", "docker.io/library/alpine:3.20"),
        ("harbor.corp/dockerhub/alpine", "docker.io/library/alpine:latest"),
        ("harbor.corp/dockerhub/user/app@sha256:" + D1, "docker.io/user/app@sha256:" + D1),
        ("harbor.corp/dockerhub/team/app:1", "registry.example.com/team/app:1"),  # longest
        ("mirror.corp:5000/ns/app:1.0", "registry.example.com/ns/app:1.0"),
        (
            f"mirror.corp:5000/ns/app:1.0@sha256:{D2}",
            f"registry.example.com/ns/app:1.0@sha256:{D2}",
        ),
    ],
)
def test_mapping_longest_prefix_by_segment(given: str, origin: str) -> None:
    mapped = mirror_origin(parse(given), MIRRORS)
    assert mapped is not None and str(mapped) == origin
    assert mirror_origin(mapped, MIRRORS) is None  # an origin is never mapped again


@pytest.mark.parametrize(
    "given",
    ["harbor.corp/dockerhubx/app", "harbor.corp/app", "mirror.corp:5001/app", "docker.io/app"],
)
def test_names_outside_every_prefix_are_not_mapped(given: str) -> None:
    assert mirror_origin(parse(given), MIRRORS) is None


def test_the_mirror_prefix_itself_is_no_repository() -> None:
    settings = Settings(mirrors={"mirror.corp:5000/app": "registry.example.com"})
    with pytest.raises(InputError, match="not a repository under it"):
        mirror_origin(parse("mirror.corp:5000/app:1"), settings)


# ------------------------------------------------------------------------------ service


def test_verified_against_the_origin_named_as_the_mirror(make_env: MakeEnv) -> None:
    env, settings = _mirrored_env(make_env)
    verification = TrustService(settings).verify(f"{MIRRORED}:1.0")
    (found,) = verification.resolutions
    assert found.reference == f"{MIRRORED}:1.0@sha256:{D1}"
    assert (found.name, found.origin, found.digest) == (MIRRORED, GUN, "sha256:" + D1)
    assert found.trust_server == env.server.url
    assert verification.reference is not None and verification.reference.name == MIRRORED
    assert verification.origin is not None and verification.origin.name == GUN
    item = found.to_json()
    assert item["origin"] == GUN and item["name"] == MIRRORED
    assert verification.to_json()["origin"] == GUN
    # the trust cache is the origin's (shared with direct pulls of the origin)
    assert (env.trust_dir / "tuf" / GUN / "metadata" / "root.json").is_file()
    assert not (env.trust_dir / "tuf" / MIRROR).exists()
    # no mirror, no key: the resolve JSON of other references is unchanged
    (direct,) = TrustService(settings).verify(f"{GUN}:1.0").resolutions
    assert "origin" not in direct.to_json() and direct.reference == f"{GUN}:1.0@sha256:{D1}"


def test_digest_and_all_tags_through_the_mirror(make_env: MakeEnv) -> None:
    _env, settings = _mirrored_env(make_env)
    service = TrustService(settings)
    (by_digest,) = service.verify(f"{MIRRORED}@sha256:{D2}").resolutions
    assert (by_digest.reference, by_digest.tag) == (f"{MIRRORED}@sha256:{D2}", "2.0")
    pinned = service.verify(f"{MIRRORED}:2.0@sha256:{D2}").resolutions
    assert [r.reference for r in pinned] == [f"{MIRRORED}:2.0@sha256:{D2}"]
    every = service.verify(MIRRORED, all_tags=True).resolutions
    assert [r.reference for r in every] == [
        f"{MIRRORED}:1.0@sha256:{D1}",
        f"{MIRRORED}:2.0@sha256:{D2}",
        f"{MIRRORED}:only-targets@sha256:{'bb' * 32}",
    ]
    assert {r.origin for r in every} == {GUN}


def test_the_origins_rules_apply(make_env: MakeEnv) -> None:
    """A rule written for the origin governs the mirror's name; one written for the mirror's
    name matches nothing (rules match on the origin name)."""
    _env, settings = _mirrored_env(make_env)
    origin_rule = Rule(
        "no-2.0",
        0,
        Scope(registry="127.0.0.1:5000", repository="ns/app", tag="2.0"),
        origin="t:1",
        refuse=True,
    )
    mirror_rule = Rule(
        "mirror", 1, Scope(registry=MIRROR, repository="ns/app"), origin="t:2", refuse=True
    )
    service = TrustService(settings, Policy((origin_rule, mirror_rule), "t"))
    with pytest.raises(PolicyError, match=r"no-2\.0"):
        service.verify(f"{MIRRORED}:2.0")
    outcome = service.check(f"{MIRRORED}:2.0")
    assert outcome.exit_code == 9 and outcome.rule is origin_rule
    assert outcome.to_json()["origin"] == GUN
    accepted = service.verify(f"{MIRRORED}:1.0")
    assert accepted.rule is not None and accepted.rule.label != "mirror"


def test_inspect_reads_the_origin(make_env: MakeEnv) -> None:
    _env, settings = _mirrored_env(make_env)
    document = TrustService(settings).inspect(parse(MIRRORED, default_tag=False), MIRRORED, None)
    assert document["Name"] == MIRRORED
    signed = document["SignedTags"]
    assert isinstance(signed, list) and {t["SignedTag"] for t in signed} >= {"1.0", "2.0"}


# ------------------------------------------------------------------------------ pull


class _Engine:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def pull(self, name: str, tag_or_digest: str | None, **kwargs: Any) -> None:
        self.calls.append(("pull", name, tag_or_digest, kwargs["auth"].username))

    def tag(self, source: str, repo: str, tag: str) -> None:
        self.calls.append(("tag", source, repo, tag))

    def close(self) -> None:
        return None


def _auth(user: str) -> dict[str, str]:
    return {"auth": base64.b64encode(f"{user}:{user}-secret".encode()).decode()}


def test_pull_asks_the_mirror_for_the_verified_digest_with_each_sides_credentials(
    make_env: MakeEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    env, settings = _mirrored_env(make_env)
    (env.docker_config / "config.json").write_text(
        json.dumps({"auths": {MIRROR: _auth("mirror-user"), "127.0.0.1:5000": _auth("origin")}})
    )
    handshake: list[str] = []

    class Recording(trust.notary.remote.NotaryRemote):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            offered = kwargs["credentials"]()
            handshake.append(offered.username if isinstance(offered, RegistryAuth) else "")

    monkeypatch.setattr(trust.notary.remote, "NotaryRemote", Recording)
    engine = _Engine()
    notices: list[str] = []

    class Reporter:
        def default_tag(self) -> None: ...
        def pulling(self, index: int, total: int, pinned_familiar: str) -> None: ...
        def event(self, message: dict[str, Any]) -> None: ...
        def tagging(self, source_familiar: str, target_familiar: str) -> None: ...
        def notice(self, text: str) -> None:
            notices.append(text)

    result = pull(
        f"{MIRRORED}:1.0",
        settings,
        environ={},
        engine_factory=lambda: engine,
        reporter=Reporter(),
    )
    assert result.error is None, result.error
    assert engine.calls == [
        ("pull", MIRRORED, f"sha256:{D1}", "mirror-user"),
        ("tag", f"{MIRRORED}@sha256:{D1}", MIRRORED, "1.0"),
    ]
    assert handshake and set(handshake) == {"origin"}
    assert any(
        n == f"mirror: {MIRRORED} is verified as {GUN} (the origin's trust data) and "
        "pulled from the mirror by that digest"
        for n in notices
    ), notices
    (item,) = result.to_json()
    assert item["origin"] == GUN and item["reference"] == f"{MIRRORED}:1.0@sha256:{D1}"


# ------------------------------------------------------------------------------ front ends


def test_resolve_write_pins_the_mirror_name_to_the_origins_digest(
    make_env: MakeEnv, tmp_path: Path
) -> None:
    """`resolve --write` (the manifest pinner) goes through the same mapping: the file keeps
    the mirror's name, pinned to the digest the origin's trust data signs."""
    from click.testing import CliRunner

    from cli.main import main

    env = make_env()
    config = tmp_path / "trustpull.toml"
    config.write_text(
        f'[trust_servers]\n"127.0.0.1:5000" = "{env.server.url}"\n'
        f'[mirrors]\n"{MIRROR}" = "127.0.0.1:5000"\n'
    )
    compose = tmp_path / "compose.yaml"
    compose.write_text(f"services:\n  app:\n    image: {MIRRORED}:1.0  # via the mirror\n")
    result = CliRunner().invoke(main, ["resolve", "--config", str(config), "--write", str(compose)])
    assert result.exit_code == 0, result.output
    assert compose.read_text() == (
        f"services:\n  app:\n    image: {MIRRORED}:1.0@sha256:{D1}  # via the mirror\n"
    )
    resolved = CliRunner().invoke(
        main, ["resolve", "--config", str(config), "-o", "json", f"{MIRRORED}:2.0"]
    )
    assert resolved.exit_code == 0, resolved.output
    (item,) = json.loads(resolved.stdout)
    assert (item["reference"], item["origin"]) == (f"{MIRRORED}:2.0@sha256:{D2}", GUN)


def test_pin_through_a_mirror_pins_the_origin(make_env: MakeEnv, tmp_path: Path) -> None:
    """`trustpull pin MIRROR/…` writes the pin for the origin's GUN (the one whose root is
    verified); a pin under the mirror's name would never be consulted."""
    from trust.pin import pin_repository

    env = make_env()
    config = tmp_path / "config.toml"
    config.write_text(f'[mirrors]\n"{MIRROR}" = "127.0.0.1:5000"\n')
    notices: list[str] = []
    result = pin_repository(
        parse(f"{MIRRORED}:1.0"),
        config=config,
        write=True,
        environ={**os.environ, "DOCKER_CONTENT_TRUST_SERVER": env.server.url},
        notice=notices.append,
    )
    assert result.written and result.reference.name == GUN
    assert f"mirror: {MIRRORED} is verified as {GUN}: pinning {GUN}" in notices
    (key_id,) = result.pin.key_ids
    assert load_config({}, config_file=config).settings.trust_pinning.certs == {GUN: (key_id,)}


def test_a_pin_written_for_a_mirror_name_is_refused(tmp_path: Path) -> None:
    """Pins are looked up by the origin's GUN: one for a name under a mirror prefix would never
    apply, so the loader refuses it (file, line, the origin)."""
    path = tmp_path / "config.toml"
    path.write_text(
        '[mirrors]\n"harbor.corp/dockerhub" = "docker.io"\n'
        f'[trust_pinning.certs]\n"harbor.corp/dockerhub/library/alpine" = ["{"b" * 64}"]\n'
    )
    with pytest.raises(ConfigError) as caught:
        load_config({}, config_file=path)
    message = caught.value.message
    assert message.startswith(f"{path}:4: trust_pinning.certs."), message
    assert "[mirrors] prefix harbor.corp/dockerhub" in message and "docker.io" in message
