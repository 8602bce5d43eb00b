"""TUF trust source without the docker stack: selection, config, error mapping, and the TUF
client workflow against a real python-tuf repository served over HTTPS on loopback."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from tuf.api import exceptions as tuf_errors
from tuf.api.serialization import DeserializationError

from tests.tuf_repo import StaticHttps, TufRepo
from tests.unit._trust_env import resolve_reference
from trust.config import load_config
from trust.errors import (
    AuthError,
    ConfigError,
    ExpiredError,
    HashMismatchError,
    LengthError,
    MalformedError,
    NetworkError,
    NoSuchTagError,
    NoTrustDataError,
    RollbackError,
    SignatureError,
    ThresholdError,
    TrustpullError,
    VerificationError,
)
from trust.lookup import Resolution
from trust.reference import parse
from trust.service import select_source
from trust.settings import Settings, TrustSourceConfig
from trust.targets import SignedTarget
from trust.tufsource import TrustpullFetcher, TufSource, map_tuf_error

GUN = "127.0.0.1:5999/it/app"
D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64
D3 = "sha256:" + "3" * 64


# ----------------------------------------------------------------------- selection


def _src(scope: str) -> TrustSourceConfig:
    return TrustSourceConfig(scope=scope, metadata_url="https://tuf.test", root=Path("/r.json"))


def _settings(*scopes: str) -> Settings:
    return Settings(trust_sources=tuple(_src(s) for s in scopes))


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("registry.example.com/team/app:1.4", "registry.example.com/team/app"),
        ("registry.example.com/team/other:1", "registry.example.com/team"),
        ("registry.example.com/teamx/app:1", "registry.example.com"),
        ("registry.example.com/app", "registry.example.com"),
        ("registry.example.com:5000/team/app", None),
        ("other.example.com/team/app", None),
        ("alpine:3.19", None),
    ],
)
def test_longest_scope_wins_and_no_match_is_notary(name: str, expected: str | None) -> None:
    settings = _settings(
        "registry.example.com", "registry.example.com/team", "registry.example.com/team/app"
    )
    chosen = select_source(parse(name), settings)
    assert (chosen.scope if chosen else None) == expected


def test_no_sources_means_notary() -> None:
    assert select_source(parse("registry.example.com/team/app"), Settings()) is None


# -------------------------------------------------------------------------- config


def _write_config(tmp_path: Path, text: str) -> Path:
    (tmp_path / "root.json").write_text("{}")
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


GOOD = """\
[limits]
retries = 1

[[trust_sources]]
scope = "registry.example.com"
type = "tuf"
metadata_url = "https://tuf.example.com/metadata/"
root = "root.json"

[[trust_sources]]
scope = "registry.example.com/team"
type = "tuf"
metadata_url = "https://tuf2.example.com"
root = "./root.json"
cache_dir = "cache"
"""


def test_config_parses_sources_relative_to_file(tmp_path: Path) -> None:
    settings = load_config({}, config_file=_write_config(tmp_path, GOOD)).settings
    first, second = settings.trust_sources
    assert first.scope == "registry.example.com"
    assert first.metadata_url == "https://tuf.example.com/metadata"
    assert first.root == (tmp_path / "root.json").resolve()
    assert first.cache_dir is None
    assert second.cache_dir == (tmp_path / "cache").resolve()
    assert settings.limits.retries == 1


@pytest.mark.parametrize(
    ("replace", "by", "line", "key", "problem"),
    [
        ('cache_dir = "cache"', 'cachedir = "cache"', 15, "trust_sources[1].cachedir", "unknown"),
        (
            'type = "tuf"\nmetadata_url = "https://tuf2',
            'type = "notary"\nmetadata_url = "https://tuf2',
            12,
            "trust_sources[1].type",
            "unknown source type",
        ),
        (
            '"https://tuf2.example.com"',
            '"http://tuf2.example.com"',
            13,
            "trust_sources[1].metadata_url",
            "https URL",
        ),
        (
            '"https://tuf2.example.com"',
            '"https://u:p@tuf2.example.com"',
            13,
            "trust_sources[1].metadata_url",
            "credentials",
        ),
        (
            'root = "./root.json"',
            'root = "missing.json"',
            14,
            "trust_sources[1].root",
            "does not exist",
        ),
        (
            'scope = "registry.example.com/team"',
            'scope = "team/app"',
            11,
            "trust_sources[1].scope",
            "registry host",
        ),
        (
            'scope = "registry.example.com/team"',
            'scope = "registry.example.com/team:1"',
            11,
            "trust_sources[1].scope",
            "registry host",
        ),
        (
            'scope = "registry.example.com/team"',
            'scope = "registry.example.com"',
            11,
            "trust_sources[1].scope",
            "same scope",
        ),
        ('root = "./root.json"', "root = 3", 14, "trust_sources[1].root", "string"),
        ('root = "./root.json"\n', "", 10, "trust_sources[1]", "missing key 'root'"),
    ],
)
def test_config_errors_name_file_line_and_key(
    tmp_path: Path, replace: str, by: str, line: int, key: str, problem: str
) -> None:
    assert replace in GOOD
    path = _write_config(tmp_path, GOOD.replace(replace, by))
    with pytest.raises(ConfigError) as info:
        load_config({}, config_file=path)
    assert info.value.exit_code == 3
    assert f"{path}:{line}: {key}: " in info.value.message
    assert problem in info.value.message


def test_config_sources_must_be_an_array_of_tables(tmp_path: Path) -> None:
    path = _write_config(tmp_path, '[trust_sources]\nscope = "a.example"\n')
    with pytest.raises(ConfigError, match=r"config.toml:1: trust_sources: must be an array"):
        load_config({}, config_file=path)


# -------------------------------------------------------------------- error mapping


@pytest.mark.parametrize(
    ("error", "expected", "code"),
    [
        (tuf_errors.BadVersionNumberError("v"), RollbackError, 5),
        (tuf_errors.EqualVersionNumberError("v"), RollbackError, 5),
        (tuf_errors.ExpiredMetadataError("timestamp.json is expired"), ExpiredError, 5),
        (tuf_errors.UnsignedMetadataError("root was signed by 1/2 keys"), ThresholdError, 5),
        (tuf_errors.UnsignedMetadataError("bad signature"), SignatureError, 5),
        (tuf_errors.LengthOrHashMismatchError("hash"), HashMismatchError, 5),
        (DeserializationError("bad json"), MalformedError, 5),
        (tuf_errors.RepositoryError("other"), VerificationError, 5),
        (tuf_errors.DownloadHTTPError("no", 401), AuthError, 7),
        (tuf_errors.DownloadHTTPError("no", 403), AuthError, 7),
        (tuf_errors.DownloadHTTPError("gone", 404), NetworkError, 6),
        (tuf_errors.DownloadHTTPError("busy", 503), NetworkError, 6),
        (tuf_errors.SlowRetrievalError("slow"), NetworkError, 6),
        (tuf_errors.DownloadError("reset"), NetworkError, 6),
        (tuf_errors.DownloadLengthMismatchError("long"), LengthError, 5),
    ],
)
def test_error_mapping(error: Exception, expected: type[TrustpullError], code: int) -> None:
    mapped = map_tuf_error(error, "TUF repository https://tuf.test")
    assert type(mapped) is expected
    assert mapped.exit_code == code
    assert "https://tuf.test" in mapped.message


def test_error_mapping_unwraps_our_errors_and_leaves_bugs_alone() -> None:
    ours = NetworkError("TLS error")
    wrapped = tuf_errors.DownloadError("failed")
    wrapped.__cause__ = ours
    assert map_tuf_error(wrapped, "x") is ours
    assert map_tuf_error(ours, "x") is ours
    assert map_tuf_error(KeyError("bug"), "x") is None


def test_fetcher_status_and_offline() -> None:
    fetcher = TrustpullFetcher(lambda url, cap: (404, b""), ceiling=10)
    with pytest.raises(tuf_errors.DownloadHTTPError) as info:
        fetcher.download_bytes("https://tuf.test/2.root.json", 5)
    assert info.value.status_code == 404
    caps: list[int] = []
    fetcher = TrustpullFetcher(lambda url, cap: (caps.append(cap), (200, b"ok"))[1], ceiling=10)
    assert fetcher.download_bytes("https://tuf.test/x", 50) == b"ok"
    with fetcher.download_file("https://tuf.test/x", 3) as handle:
        assert handle.read() == b"ok"
    assert caps == [10, 3]  # python-tuf's bound becomes the transport's cap
    offline = TrustpullFetcher(None, ceiling=10, offline_reason="offline")
    with pytest.raises(NetworkError, match="offline"):
        offline.download_bytes("https://tuf.test/timestamp.json", 5)


# ------------------------------------------------- a real TUF repository over HTTPS


@dataclass
class Env:
    repo: TufRepo
    server: StaticHttps
    source: TrustSourceConfig
    settings: Settings

    def resolve(self, text: str, *, all_tags: bool = False) -> list[str]:
        ref = parse(text, default_tag=not all_tags)
        return [r.digest for r in resolve_reference(ref, self.settings, all_tags=all_tags)]

    def refused(self, text: str) -> TrustpullError:
        with pytest.raises(TrustpullError) as info:
            resolve_reference(parse(text), self.settings)
        return info.value


@pytest.fixture()
def env(tmp_path: Path, isolated_home: Path) -> Iterator[Env]:
    repo = TufRepo(tmp_path / "repo")
    repo.add_tag(GUN, "1.0", D1, custom={"mediaType": "application/vnd.oci.image.manifest.v1+json"})
    repo.publish()
    root = tmp_path / "trusted-root.json"
    root.write_bytes(repo.initial_root)
    with StaticHttps(tmp_path / "repo", tmp_path / "tls") as server:
        docker_config = isolated_home / ".docker"
        server.install_ca(docker_config)
        source = TrustSourceConfig(scope="127.0.0.1:5999/it", metadata_url=server.url, root=root)
        settings = Settings(
            docker_config=docker_config,
            trust_sources=(source,),
            # Notary for this registry would be unreachable: any fallback would show.
            trust_servers={"127.0.0.1:5999": "https://127.0.0.1:1"},
        )
        yield Env(repo, server, source, settings)


def test_signed_tag_resolves_with_tuf_keys(env: Env) -> None:
    (res,) = resolve_reference(parse(f"{GUN}:1.0"), env.settings)
    assert res.to_json() == {
        "reference": f"{GUN}:1.0@{D1}",
        "name": GUN,
        "tag": "1.0",
        "digest": D1,
        "size": 525,
        "role": "targets",
        "signers": ["Repo Admin"],
        "trust_server": env.server.url,
        "root_key_id": sorted(env.repo.root.signed.roles["root"].keyids)[0],
        "source": "tuf",
    }
    assert env.resolve(f"{GUN}@{D1}") == [D1]
    assert env.resolve(f"{GUN}:1.0@{D1}") == [D1]


def test_default_cache_is_under_xdg_cache(env: Env, isolated_home: Path) -> None:
    env.resolve(f"{GUN}:1.0")
    cached = list(
        (isolated_home / ".cache" / "trustpull" / "tuf").glob("*/metadata/timestamp.json")
    )
    assert len(cached) == 1


def test_unknown_tag_and_unsigned_digest_are_not_signed(env: Env) -> None:
    error = env.refused(f"{GUN}:2.0")
    assert isinstance(error, NoSuchTagError) and error.exit_code == 4
    assert isinstance(env.refused(f"{GUN}@{D2}"), NoSuchTagError)
    assert isinstance(env.refused(f"{GUN}:1.0@{D2}"), NoSuchTagError)
    assert isinstance(env.refused("127.0.0.1:5999/it/other:1.0"), NoSuchTagError)
    with pytest.raises(NoTrustDataError):
        env.resolve("127.0.0.1:5999/it/other", all_tags=True)


def test_tampered_targets_refused(env: Env) -> None:
    path = env.repo.dir / "1.targets.json"
    doc = json.loads(path.read_bytes())
    doc["signed"]["targets"][f"{GUN}:1.0"]["hashes"]["sha256"] = D2.removeprefix("sha256:")
    path.write_text(json.dumps(doc))
    error = env.refused(f"{GUN}:1.0")
    assert isinstance(error, SignatureError | ThresholdError) and error.exit_code == 5


def test_rollback_refused(env: Env) -> None:
    old = env.repo.files()
    env.repo.add_tag(GUN, "1.0", D2)
    env.repo.publish()
    assert env.resolve(f"{GUN}:1.0") == [D2]
    env.repo.restore({"timestamp.json": old["timestamp.json"]})
    error = env.refused(f"{GUN}:1.0")
    assert isinstance(error, RollbackError) and error.exit_code == 5


def test_freeze_expired_timestamp_refused(env: Env) -> None:
    env.repo.publish(timestamp_expires=dt.datetime.now(dt.UTC) - dt.timedelta(hours=1))
    error = env.refused(f"{GUN}:1.0")
    assert isinstance(error, ExpiredError) and error.exit_code == 5


def test_root_rotation_accepted_when_signed_by_old_and_new_root(env: Env) -> None:
    env.resolve(f"{GUN}:1.0")
    env.repo.rotate("root", "targets")
    env.repo.add_tag(GUN, "1.0", D3)
    env.repo.publish()
    (res,) = resolve_reference(parse(f"{GUN}:1.0"), env.settings)
    assert res.digest == D3
    assert res.root_key_id == sorted(env.repo.root.signed.roles["root"].keyids)[0]


def test_root_rotation_without_old_root_signature_refused(env: Env) -> None:
    env.repo.rotate("root", signed_by_old_root=False)
    env.repo.publish()
    error = env.refused(f"{GUN}:1.0")
    assert isinstance(error, ThresholdError) and error.exit_code == 5


def test_targets_key_rotation(env: Env) -> None:
    old_targets = list(env.repo.signers["targets"])
    env.repo.rotate("targets")
    env.repo.add_tag(GUN, "1.0", D2)
    env.repo.publish(sign_targets_with={"targets": old_targets})  # the revoked key
    assert isinstance(env.refused(f"{GUN}:1.0"), ThresholdError)
    env.repo.add_tag(GUN, "1.0", D3)
    env.repo.publish()  # the new key
    assert env.resolve(f"{GUN}:1.0") == [D3]


def test_delegations_glob_terminating_and_not_allowed(env: Env) -> None:
    repo = env.repo
    repo.delegate("targets", "team", paths=["127.0.0.1:5999/it/*"], terminating=True)
    repo.delegate("targets", "later", paths=["127.0.0.1:5999/*/*"])
    repo.delegate("targets", "other", paths=["127.0.0.1:5999/elsewhere/*"])
    repo.add_tag(GUN, "2.0", D2, role="team")
    repo.add_tag(GUN, "3.0", D3, role="later")  # after a terminating match: never reached
    repo.add_tag(GUN, "4.0", D3, role="other")  # not allowed to sign this GUN
    repo.add_tag("127.0.0.1:5999/x/app", "1.0", D3, role="later")
    repo.publish()
    (res,) = resolve_reference(parse(f"{GUN}:2.0"), env.settings)
    assert (res.role, res.signers) == ("team", ("team",))
    assert isinstance(env.refused(f"{GUN}:3.0"), NoSuchTagError)
    assert isinstance(env.refused(f"{GUN}:4.0"), NoSuchTagError)
    assert env.resolve(f"{GUN}", all_tags=True) == [D1, D2]
    source = TufSource(env.source, env.settings)
    doc = source.inspect(parse(GUN, default_tag=False), "it/app", None)
    assert [(t["SignedTag"], t["Signers"]) for t in doc["SignedTags"]] == [  # type: ignore[union-attr]
        ("1.0", ["Repo Admin"]),
        ("2.0", ["team"]),
    ]
    assert [s["Name"] for s in doc["Signers"]] == ["team", "other", "later"]  # type: ignore[union-attr]
    admin = doc["AdministrativeKeys"]
    assert admin[0]["Keys"] == [{"ID": k} for k in repo.root.signed.roles["root"].keyids]  # type: ignore[index]


def test_hash_bin_delegations(env: Env) -> None:
    repo = env.repo
    hexdigits = "0123456789abcdef"
    for prefix in hexdigits:
        repo.delegate("targets", f"bin-{prefix}", hash_prefixes=[prefix])

    def bin_of(tag: str) -> str:
        return hashlib.sha256(f"{GUN}:{tag}".encode()).hexdigest()[0]

    for tag in ("5.0", "6.0", "7.0"):
        repo.add_tag(GUN, tag, D2, role=f"bin-{bin_of(tag)}")
    wrong = hexdigits[(hexdigits.index(bin_of("8.0")) + 1) % 16]
    repo.add_tag(GUN, "8.0", D3, role=f"bin-{wrong}")  # listed by a bin it does not belong to
    repo.publish()
    (res,) = resolve_reference(parse(f"{GUN}:7.0"), env.settings)
    assert res.digest == D2 and res.role == f"bin-{bin_of('7.0')}"
    assert isinstance(env.refused(f"{GUN}:8.0"), NoSuchTagError)
    assert env.resolve(GUN, all_tags=True) == [D1, D2, D2, D2]


def test_auth_refusal_is_exit_7_not_unsigned(env: Env) -> None:
    env.server.force("/timestamp.json", 403)
    error = env.refused(f"{GUN}:1.0")
    assert isinstance(error, AuthError) and error.exit_code == 7
    env.server.force("/timestamp.json", 401)
    assert isinstance(env.refused(f"{GUN}:1.0"), AuthError)


def test_unknown_ca_is_a_network_error_and_no_fallback(env: Env, tmp_path: Path) -> None:
    for crt in (env.settings.docker_config / "tls").rglob("*.crt"):
        crt.unlink()
    error = env.refused(f"{GUN}:1.0")
    assert type(error) is NetworkError and "TLS" in error.message
    assert "127.0.0.1:1" not in error.message  # Notary was never asked


def test_bad_trusted_root_file_is_a_config_error(env: Env) -> None:
    env.source.root.write_text("{}")
    error = env.refused(f"{GUN}:1.0")
    assert isinstance(error, ConfigError) and str(env.source.root) in error.message


def test_offline_refuses_without_network(env: Env) -> None:
    settings = dataclasses.replace(env.settings, offline=True)
    with pytest.raises(NetworkError, match="offline"):
        resolve_reference(parse(f"{GUN}:1.0"), settings)
    assert env.server.paths == []


def test_cli_resolve_and_inspect(env: Env, tmp_path: Path, isolated_home: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        f'[[trust_sources]]\nscope = "127.0.0.1:5999/it"\ntype = "tuf"\n'
        f'metadata_url = "{env.server.url}"\nroot = "{env.source.root}"\n'
    )
    run_env = {**os.environ, "DOCKER_CONFIG": str(env.settings.docker_config)}
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "cli.main",
            "resolve",
            "-o",
            "json",
            "--config",
            str(config),
            f"{GUN}:1.0",
            f"{GUN}:9.9",
        ],
        capture_output=True,
        text=True,
        env=run_env,
        check=False,
    )
    assert out.returncode == 4, out.stderr
    items = json.loads(out.stdout)
    assert items[0]["source"] == "tuf" and items[0]["digest"] == D1
    assert items[1]["error"]["kind"] == "NoSuchTag"
    out = subprocess.run(
        [sys.executable, "-m", "cli.main", "inspect", "--config", str(config), GUN],
        capture_output=True,
        text=True,
        env=run_env,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)[0]["SignedTags"][0]["Digest"] == D1.removeprefix("sha256:")


def test_all_tags_under_a_policy_go_through_the_tuf_source(env: Env) -> None:
    """Issue 11 #1: `-a` with a policy asked Notary, and with `allow_unsigned` covering the
    registry pulled every tag UNVERIFIED although the repository is TUF-signed. Here Notary
    for the registry is a real server that answers "no trust data" (404): any fallback to it
    would come back as unsigned."""
    from dataclasses import replace

    from fixtures.server import FixtureServer
    from tests.unit._trust_env import install_ca
    from trust.policy import Policy, Rule, Scope
    from trust.service import TrustService

    env.repo.add_tag(GUN, "2.0", D2)
    env.repo.publish()
    lenient = Policy((Rule("legacy", 0, Scope(), allow_unsigned=True, origin="p:1"),), "p")
    with FixtureServer() as notary:
        install_ca(notary, env.settings.docker_config)
        settings = replace(env.settings, trust_servers={"127.0.0.1:5999": notary.url})
        service = TrustService(settings, lenient)
        every = service.verify(GUN, all_tags=True)
        assert every.unsigned is None
        assert [(r.tag, r.digest, r.source) for r in every.resolutions] == [
            ("1.0", D1, "tuf"),
            ("2.0", D2, "tuf"),
        ]
        (by_digest,) = service.verify(f"{GUN}@{D2}").resolutions
        assert (by_digest.tag, by_digest.source) == ("2.0", "tuf")
        # a tag-scoped rule binds the TUF source's digest reference too (#2 with TUF)
        refuse = Rule("no-2.0", 1, Scope(registry="127.0.0.1:5999", tag="2.0"), refuse=True)
        strict = TrustService(settings, Policy((*lenient.rules, refuse), "p"))
        outcome = strict.check(f"{GUN}@{D2}")
        assert outcome.exit_code == 9 and "no-2.0" in outcome.reason
        assert notary.requests == []  # Notary was never asked


# ------------------------------------------------------- the verified view (trust.tufview)


def test_view_lookup_signed_tags_resolution_and_expiries(env: Env) -> None:
    repo = env.repo
    repo.delegate("targets", "team", paths=["127.0.0.1:5999/it/*"])
    repo.add_tag(GUN, "10.0", D3, role="team")
    repo.add_tag(GUN, "2.0", D2)
    repo.publish()
    source = TufSource(env.source, env.settings)
    with source.view(GUN) as view:
        assert view.lookup("2.0") == SignedTarget("2.0", D2, view.lookup("2.0").size, "targets")
        with pytest.raises(NoSuchTagError, match=r"No valid trust data for 9\.9"):
            view.lookup("9.9")
        tags = view.signed_tags()
        assert [(t.tag, t.digest, t.role) for t in tags] == [
            ("1.0", D1, "targets"),
            ("2.0", D2, "targets"),
            ("10.0", D3, "team"),  # natural order, and a delegated role's tag
        ]
        assert all(isinstance(t, SignedTarget) for t in tags)
        res = view.resolution(parse(f"{GUN}@{D3}", default_tag=False), tags[2])
        assert isinstance(res, Resolution)
        assert (res.reference, res.tag, res.signers, res.source) == (
            f"{GUN}@{D3}",
            "10.0",
            ("team",),
            "tuf",
        )
        expiries = view.expiries(("team",))
        assert set(expiries) == {"root", "timestamp", "snapshot", "targets", "team"}
        assert all(e.tzinfo is not None for e in expiries.values())


def test_view_lists_a_delegated_role_no_lookup_has_loaded_yet(env: Env) -> None:
    """The first listing of a fresh cache: `team.json` is not on disk until the view makes
    python-tuf load it (a target search routed to it), and its tag is listed."""
    env.repo.delegate("targets", "team", paths=["127.0.0.1:5999/it/app:7*"])
    env.repo.add_tag(GUN, "7.1", D2, role="team")
    env.repo.publish()
    with TufSource(env.source, env.settings).view(GUN) as view:
        assert [t.tag for t in view.signed_tags()] == ["1.0", "7.1"]


def test_python_tuf_is_used_through_its_public_api_only() -> None:
    """No subclass of python-tuf classes, no private attribute of anything from tuf."""
    import ast

    for name in ("tufsource.py", "tufview.py"):
        tree = ast.parse((Path(__file__).parents[2] / "trust" / name).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                bases = {ast.unparse(b) for b in node.bases}
                assert not bases & {"Updater", "Metadata", "Targets", "TrustedMetadataSet"}, name
            if (
                isinstance(node, ast.Attribute)
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
            ):
                owner = ast.unparse(node.value)
                assert owner == "self" or owner.startswith("self."), (name, ast.unparse(node))
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("tuf"):
                assert "_internal" not in node.module, name
                assert all(not alias.name.startswith("_") for alias in node.names), name


def test_a_planted_tuf_cache_lock_is_refused(env: Env, tmp_path: Path) -> None:
    """Issue 11 #7 for the TUF cache too: a link at the lock path is Cache 5 naming the path,
    never an unlocked run; the link's target is left untouched."""
    cache_dir = TufSource(env.source, env.settings).cache_dir()
    (cache_dir / "metadata").mkdir(parents=True, exist_ok=True)
    target = tmp_path / "victim"
    target.write_text("untouched")
    (cache_dir / ".trustpull.lock").symlink_to(target)
    error = env.refused(f"{GUN}:1.0")
    assert error.kind == "Cache" and error.exit_code == 5
    assert str(cache_dir / ".trustpull.lock") in error.message
    assert target.read_text() == "untouched"


def test_a_tag_rule_is_verified_by_its_repository_rules_trust_source(env: Env) -> None:
    """A tag rule cannot name a trust source, so its tags use the repository rule's: with
    `trust_source = "notary"` over this TUF scope, `2.0` under its tag rule went to the TUF
    repository anyway (accepted); with the TUF scope named by a rule while `[[trust_sources]]`
    covers only another scope, it went to Notary."""
    from trust.policy import Policy, Rule, Scope
    from trust.service import TrustService

    env.repo.add_tag(GUN, "2.0", D2)
    env.repo.publish()
    scope = Scope(registry="127.0.0.1:5999", repository="it/app")
    tag = Rule("two", 1, dataclasses.replace(scope, tag="2.0"))
    notary = Rule("notary", 0, scope, trust_source="notary")
    service = TrustService(env.settings, Policy((notary, tag), "p"))
    for text in (f"{GUN}:2.0", f"{GUN}:2.0@{D2}", f"{GUN}@{D2}", f"{GUN}:1.0"):
        outcome = service.check(text)
        assert isinstance(outcome.error, NetworkError), text  # Notary: 127.0.0.1:1
    elsewhere = dataclasses.replace(env.source, scope="127.0.0.1:5999/other")
    settings = dataclasses.replace(env.settings, trust_sources=(elsewhere,))
    named = Rule("tuf", 0, scope, trust_source="127.0.0.1:5999/other")
    service = TrustService(settings, Policy((named, tag), "p"))
    for text in (f"{GUN}:2.0", f"{GUN}:2.0@{D2}", f"{GUN}@{D2}"):
        (found,) = service.verify(text).resolutions
        assert (found.digest, found.source) == (D2, "tuf"), text


@pytest.mark.parametrize(
    "requirement",
    [
        {"signers": ("team",)},
        {"tofu": False},
        {"min_validity": 60.0},
        {"root_keys": ("a" * 64,)},
    ],
    ids=["signers", "tofu", "min_validity", "root_keys"],
)
def test_a_notary_requirement_on_a_tuf_source_is_refused_not_ignored(
    env: Env, requirement: dict[str, object]
) -> None:
    """Signers, TOFU, validity and root pins are Notary's notions: a rule asking for them on a
    repository that a TUF source verifies refuses every shape (tag, tag@digest, digest, -a)
    with exit 9; skipped, the rule would pass on the Updater's answer alone."""
    from trust.policy import Policy, Rule, Scope
    from trust.service import TrustService

    env.repo.delegate("targets", "team", paths=["127.0.0.1:5999/it/*"])
    env.repo.add_tag(GUN, "2.0", D2, role="team")
    env.repo.publish()
    scope = Scope(registry="127.0.0.1:5999", repository="it/app")
    rule = Rule("strict", 0, scope, origin="p:1", **requirement)  # type: ignore[arg-type]
    service = TrustService(env.settings, Policy((rule,), "p"))
    for text, all_tags in (
        (f"{GUN}:2.0", False),
        (f"{GUN}:2.0@{D2}", False),
        (f"{GUN}@{D2}", False),
        (GUN, True),
    ):
        with pytest.raises(TrustpullError) as caught:
            service.verify(text, all_tags=all_tags)
        assert caught.value.exit_code == 9, (text, caught.value)
    # the same repository without the requirement passes
    (ok,) = (
        TrustService(env.settings, Policy((Rule("plain", 0, scope),), "p"))
        .verify(f"{GUN}:2.0")
        .resolutions
    )
    assert (ok.digest, ok.source) == (D2, "tuf")


def test_allow_unsigned_never_accepts_a_tuf_verified_repository_unsigned(env: Env) -> None:
    """A TUF source has no "no trust data" answer to accept: an unknown tag, a digest no tag
    is signed for, and a repository of the scope without any target are refused (exit 9)
    under `allow_unsigned`, never pulled unverified."""
    from trust.policy import Policy, Rule, Scope
    from trust.service import TrustService

    lenient = Policy((Rule("legacy", 0, Scope(), allow_unsigned=True, origin="p:1"),), "p")
    service = TrustService(env.settings, lenient)
    other = "127.0.0.1:5999/it/other"  # in the TUF scope, no target at all
    for text, all_tags in (
        (f"{GUN}:9.9", False),
        (f"{GUN}@{D3}", False),
        (f"{other}:1.0", False),
        (f"{other}@{D1}", False),
        (other, True),
    ):
        with pytest.raises(TrustpullError) as caught:
            service.verify(text, all_tags=all_tags)
        assert caught.value.exit_code == 9, (text, caught.value)


_KEY = "a" * 64


@pytest.mark.parametrize(
    "pinning",
    [
        f'[trust_pinning.certs]\n"tuf.example.com/team/app" = ["{_KEY}"]\n',
        f'[trust_pinning.certs]\n"tuf.example.com/team/*" = ["{_KEY}"]\n',
        f'[trust_pinning.certs]\n"tuf.example.com" = ["{_KEY}"]\n',
        '[trust_pinning.ca]\n"tuf.example.com/team/" = "root.json"\n',
    ],
)
def test_a_notary_pin_where_a_tuf_source_verifies_is_refused(tmp_path: Path, pinning: str) -> None:
    """A `[trust_pinning]` entry whose every name lies in a `[[trust_sources]]` scope would
    never apply (those names are verified by the TUF root alone; a rule's `root_keys` there is
    already refused): the loader refuses it instead of ignoring the pin the user wrote."""
    text = (
        '[[trust_sources]]\nscope = "tuf.example.com"\ntype = "tuf"\n'
        'metadata_url = "https://tuf.example.com/m"\nroot = "root.json"\n\n' + pinning
    )
    with pytest.raises(ConfigError) as caught:
        load_config({}, config_file=_write_config(tmp_path, text))
    message = caught.value.message
    assert "trust_pinning" in message and "trust_sources" in message, message


def test_a_notary_pin_beside_a_tuf_source_is_kept(tmp_path: Path) -> None:
    """`tuf.example.com/team*` also covers `tuf.example.com/teamx/...`, outside the scope."""
    text = (
        '[[trust_sources]]\nscope = "tuf.example.com/team"\ntype = "tuf"\n'
        'metadata_url = "https://tuf.example.com/m"\nroot = "root.json"\n\n'
        f'[trust_pinning.certs]\n"tuf.example.com/team*" = ["{_KEY}"]\n'
        f'"tuf.example.com/other" = ["{_KEY}"]\n'
    )
    settings = load_config({}, config_file=_write_config(tmp_path, text)).settings
    assert set(settings.trust_pinning.certs) == {"tuf.example.com/team*", "tuf.example.com/other"}
