"""Docker's privilege function (one interactive retry on an engine auth refusal) and storing the
typed credentials only when asked (`store_registry_auth`: helper `store` protocol or config.json).
"""

from __future__ import annotations

import base64
import json
import os
import stat
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.unit._trust_env import REF, Env, env_factory
from trust.credentials import RegistryAuth, resolve_registry_auth, store_registry_auth
from trust.errors import AuthError, ConfigError
from trust.settings import Settings
from trust.trusted_pull import pull

REGISTRY = "127.0.0.1:5000"
TYPED = RegistryAuth(username="alice", password="s3cret", serveraddress=REGISTRY)


class RefusingEngine:
    """Refuses every pull whose credentials are not `accept` (as the engine does on a 401)."""

    def __init__(self, accept: RegistryAuth | None = TYPED) -> None:
        self.accept = accept
        self.pulls: list[tuple[str, str | None, RegistryAuth | None]] = []
        self.tags: list[tuple[str, str, str]] = []

    def pull(self, name: str, tag_or_digest: str | None, **kwargs: Any) -> None:
        auth = kwargs.get("auth")
        self.pulls.append((name, tag_or_digest, auth))
        if self.accept is None or auth != self.accept:
            raise AuthError("unauthorized: authentication required")

    def tag(self, source: str, repo: str, tag: str) -> None:
        self.tags.append((source, repo, tag))

    def close(self) -> None:
        return None


class Asker:
    """A privilege function that records its calls and answers with `answer`."""

    def __init__(self, answer: RegistryAuth | None) -> None:
        self.answer = answer
        self.calls: list[tuple[str, str]] = []

    def __call__(self, key: str, refusal: AuthError) -> RegistryAuth | None:
        self.calls.append((key, refusal.message))
        return self.answer


def _plain(tmp_path: Path) -> Settings:
    return Settings(content_trust=False, docker_config=tmp_path / "docker")


def test_plain_pull_retries_once_with_typed_credentials(tmp_path: Path) -> None:
    engine, ask = RefusingEngine(), Asker(TYPED)
    result = pull(
        f"{REGISTRY}/ns/app:1.0",
        _plain(tmp_path),
        environ={},
        engine_factory=lambda: engine,
        privilege=ask,
    )
    assert result.error is None and result.pulled
    assert ask.calls == [(REGISTRY, "unauthorized: authentication required")]
    assert [auth for _, _, auth in engine.pulls] == [RegistryAuth(), TYPED]
    assert result.prompted_auth == TYPED


def test_no_privilege_function_means_auth_error_at_once(tmp_path: Path) -> None:
    engine = RefusingEngine()
    result = pull(
        f"{REGISTRY}/ns/app:1.0", _plain(tmp_path), environ={}, engine_factory=lambda: engine
    )
    assert isinstance(result.error, AuthError) and result.exit_code == 7
    assert len(engine.pulls) == 1 and result.prompted_auth is None


@pytest.mark.parametrize("answer", [None, RegistryAuth()])
def test_declined_prompt_keeps_the_refusal(tmp_path: Path, answer: RegistryAuth | None) -> None:
    engine, ask = RefusingEngine(), Asker(answer)
    result = pull(
        f"{REGISTRY}/ns/app:1.0",
        _plain(tmp_path),
        environ={},
        engine_factory=lambda: engine,
        privilege=ask,
    )
    assert result.exit_code == 7 and len(ask.calls) == 1 and len(engine.pulls) == 1


def test_typed_credentials_refused_too_is_exit_7_after_one_retry(tmp_path: Path) -> None:
    engine = RefusingEngine(accept=None)
    ask = Asker(TYPED)
    result = pull(
        f"{REGISTRY}/ns/app:1.0",
        _plain(tmp_path),
        environ={},
        engine_factory=lambda: engine,
        privilege=ask,
    )
    assert result.exit_code == 7 and not result.pulled
    assert len(ask.calls) == 1 and len(engine.pulls) == 2
    assert result.prompted_auth is None


@pytest.fixture
def make_env(isolated_home: Path) -> Iterator[Any]:
    yield from env_factory()


def test_trusted_pull_retries_by_digest_then_tags(make_env: Any) -> None:
    env: Env = make_env()
    engine, ask = RefusingEngine(), Asker(TYPED)
    result = pull(REF, env.settings, environ={}, engine_factory=lambda: engine, privilege=ask)
    assert result.error is None, result.error
    digest = result.resolutions[0].digest
    # Both attempts are by the verified digest; the retry changes only the credentials.
    assert [(tag, auth) for _, tag, auth in engine.pulls] == [
        (digest, RegistryAuth()),
        (digest, TYPED),
    ]
    assert engine.tags == [(f"{REF.rsplit(':', 1)[0]}@{digest}", REF.rsplit(":", 1)[0], "1.0")]


def test_trusted_pull_refused_without_terminal_does_not_tag(make_env: Any) -> None:
    env: Env = make_env()
    engine = RefusingEngine()
    result = pull(REF, env.settings, environ={}, engine_factory=lambda: engine)
    assert result.exit_code == 7 and engine.tags == []
    assert result.error is not None and "verification succeeded" in result.error.diagnostics()


# ------------------------------------------------------------------------ store_registry_auth


def test_store_in_config_json_keeps_other_keys(tmp_path: Path) -> None:
    config = tmp_path / "docker"
    config.mkdir()
    (config / "config.json").write_text(
        json.dumps({"auths": {"other:1": {"auth": "eDp5"}}, "psFormat": "table"})
    )
    where = store_registry_auth(REGISTRY, TYPED, config, {})
    assert where == str(config / "config.json")
    doc = json.loads((config / "config.json").read_text())
    assert doc["psFormat"] == "table" and doc["auths"]["other:1"] == {"auth": "eDp5"}
    assert doc["auths"][REGISTRY] == {"auth": base64.b64encode(b"alice:s3cret").decode()}
    assert stat.S_IMODE((config / "config.json").stat().st_mode) == 0o600
    found = resolve_registry_auth(REGISTRY, config, {})
    assert found is not None and (found.username, found.password) == ("alice", "s3cret")


def test_store_creates_config_when_missing(tmp_path: Path) -> None:
    config = tmp_path / "new"
    store_registry_auth("docker.io", TYPED, config, {})
    doc = json.loads((config / "config.json").read_text())
    assert list(doc["auths"]) == ["https://index.docker.io/v1/"]


def _helper(bin_dir: Path, name: str, body: str) -> Path:
    bin_dir.mkdir(parents=True, exist_ok=True)
    path = bin_dir / f"docker-credential-{name}"
    path.write_text(f"#!{sys.executable}\nimport json, os, sys\n{body}")
    path.chmod(0o755)
    return path


_RECORDING = """
record = os.environ["HELPER_RECORD"]
data = sys.stdin.read()
with open(record, "a") as out:
    out.write(json.dumps({"argv": sys.argv[1:], "stdin": data}) + "\\n")
"""


def test_store_through_configured_helper(tmp_path: Path) -> None:
    config = tmp_path / "docker"
    config.mkdir()
    (config / "config.json").write_text(json.dumps({"credHelpers": {REGISTRY: "rec"}}))
    record = tmp_path / "record.jsonl"
    _helper(tmp_path / "bin", "rec", _RECORDING)
    environ = {"PATH": f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    environ["HELPER_RECORD"] = str(record)
    where = store_registry_auth(REGISTRY, TYPED, config, environ)
    assert where == "docker-credential-rec"
    calls = [json.loads(line) for line in record.read_text().splitlines()]
    assert calls == [
        {
            "argv": ["store"],
            "stdin": json.dumps({"ServerURL": REGISTRY, "Username": "alice", "Secret": "s3cret"}),
        }
    ]
    # config.json is left alone: the helper is where the secret lives.
    assert json.loads((config / "config.json").read_text()) == {"credHelpers": {REGISTRY: "rec"}}


def test_store_with_missing_helper_is_auth_error(tmp_path: Path) -> None:
    config = tmp_path / "docker"
    config.mkdir()
    (config / "config.json").write_text(json.dumps({"credsStore": "absent-xyz"}))
    with pytest.raises(AuthError, match="docker-credential-absent-xyz not found"):
        store_registry_auth(REGISTRY, TYPED, config, {"PATH": str(tmp_path)})


def test_store_with_failing_helper_is_auth_error(tmp_path: Path) -> None:
    config = tmp_path / "docker"
    config.mkdir()
    (config / "config.json").write_text(json.dumps({"credsStore": "broken"}))
    _helper(tmp_path / "bin", "broken", "print('keychain locked'); sys.exit(1)\n")
    with pytest.raises(AuthError, match="keychain locked"):
        store_registry_auth(REGISTRY, TYPED, config, {"PATH": str(tmp_path / "bin")})


def test_store_refuses_incomplete_credentials_and_bad_config(tmp_path: Path) -> None:
    config = tmp_path / "docker"
    config.mkdir()
    with pytest.raises(AuthError):
        store_registry_auth(REGISTRY, RegistryAuth(username="alice"), config, {})
    (config / "config.json").write_text("{not json")
    with pytest.raises(ConfigError):
        store_registry_auth(REGISTRY, TYPED, config, {})


# ------------------------------------------------------- which credentials the trust server gets


def _auths(**hosts: tuple[str, str]) -> str:
    return json.dumps(
        {
            "auths": {
                host.replace("_", ":"): {"auth": base64.b64encode(f"{u}:{p}".encode()).decode()}
                for host, (u, p) in hosts.items()
            }
        }
    )


@pytest.mark.parametrize(
    ("gun", "expected"),
    [
        ("127.0.0.1:5000/ns/app", ("alice", "a-pw")),
        ("127.0.0.1:6000/ns/app", ("erin", "e-pw")),
        ("127.0.0.1:7000/ns/app", None),  # no entry for this registry: anonymous, never borrowed
    ],
)
def test_trust_session_gets_the_guns_registry_credentials(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    gun: str,
    expected: tuple[str, str] | None,
) -> None:
    """make_session resolves the credentials of the GUN's own registry (J07), whatever trust
    server is used, DOCKER_AUTH_CONFIG first."""
    from trust.notary.client import NotaryClient

    config = tmp_path / "docker"
    config.mkdir()
    (config / "config.json").write_text(_auths(**{"127.0.0.1_6000": ("erin", "e-pw")}))
    monkeypatch.setenv("DOCKER_AUTH_CONFIG", _auths(**{"127.0.0.1_5000": ("alice", "a-pw")}))
    settings = Settings(docker_config=config, trust_server_override="https://127.0.0.1:4443")
    session = NotaryClient(settings).make_session("https://127.0.0.1:4443", gun)
    try:
        provider = session.auth.credentials  # type: ignore[attr-defined]
        assert provider is not None
        found = provider()
        got = None if found is None else (found.username, found.password)
        assert got == expected
    finally:
        session.close()
