"""Registry credentials: docker's lookup order, helper protocol, and no cross-registry leaks."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import pytest

from trust.credentials import (
    DOCKER_HUB_KEY,
    RegistryAuth,
    credential_key,
    resolve_registry_auth,
)
from trust.errors import AuthError, ConfigError

#: A credential helper speaking the real protocol: `get`, server URL on stdin, JSON on stdout.
HELPER = """#!/usr/bin/env python3
import json, os, sys
store = json.loads(os.environ["FAKE_HELPER_STORE"])
server = sys.stdin.read().strip()
with open(os.environ["FAKE_HELPER_LOG"], "a") as log:
    log.write(json.dumps([sys.argv[1:], server]) + "\\n")
if sys.argv[1:] != ["get"]:
    sys.exit(2)
if server == "broken.example":
    print("keychain is locked", file=sys.stderr)
    sys.exit(1)
if server not in store:
    print("credentials not found in native keychain")
    sys.exit(1)
user, secret = store[server]
print(json.dumps({"ServerURL": server, "Username": user, "Secret": secret}))
"""


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _write_config(directory: Path, doc: object) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(doc))
    return directory


@pytest.fixture()
def helper_env(tmp_path: Path) -> dict[str, str]:
    """PATH with a fake `docker-credential-fake` holding creds for two registries."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "docker-credential-fake"
    script.write_text(HELPER)
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    store = {
        "a.example:5000": ["alice", "a-secret"],
        "tok.example": ["<token>", "identity-token-value"],
        DOCKER_HUB_KEY: ["hubuser", "hubpass"],
    }
    return {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "FAKE_HELPER_STORE": json.dumps(store),
        "FAKE_HELPER_LOG": str(tmp_path / "helper.log"),
    }


def _helper_calls(env: dict[str, str]) -> list[list[object]]:
    log = Path(env["FAKE_HELPER_LOG"])
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines()]


# ----------------------------------------------------------------------- header encoding


def test_anonymous_header_is_empty_object() -> None:
    assert RegistryAuth().to_engine_header() == "e30="


def test_header_is_urlsafe_base64_with_padding_and_omitempty() -> None:
    auth = RegistryAuth(username="u", password="p?>>", serveraddress="r.example")
    header = auth.to_engine_header()
    assert "+" not in header and "/" not in header and len(header) % 4 == 0
    decoded = json.loads(base64.urlsafe_b64decode(header))
    assert decoded == {"username": "u", "password": "p?>>", "serveraddress": "r.example"}
    token = json.loads(base64.urlsafe_b64decode(RegistryAuth(identitytoken="t").to_engine_header()))
    assert token == {"identitytoken": "t"}


def test_repr_hides_secrets() -> None:
    text = repr(RegistryAuth(username="u", password="hunter2", identitytoken="tok"))
    assert "hunter2" not in text and "tok" not in text


def test_credential_key() -> None:
    assert credential_key("docker.io") == "https://index.docker.io/v1/"
    assert credential_key("127.0.0.1:5000") == "127.0.0.1:5000"
    assert credential_key("registry.example.com") == "registry.example.com"


# ------------------------------------------------------------------------------- auths


def test_no_config_is_anonymous(tmp_path: Path) -> None:
    assert resolve_registry_auth("r.example", tmp_path / "absent", {}) is None


def test_auths_exact_key(tmp_path: Path) -> None:
    config = _write_config(tmp_path, {"auths": {"r.example:5000": {"auth": _b64("bob:pw:x\0\0")}}})
    auth = resolve_registry_auth("r.example:5000", config, {})
    assert auth == RegistryAuth(username="bob", password="pw:x", serveraddress="r.example:5000")


def test_auths_hostname_normalised_match(tmp_path: Path) -> None:
    key = "https://r.example:5000/v2/"
    config = _write_config(tmp_path, {"auths": {key: {"auth": _b64("bob:pw")}}})
    auth = resolve_registry_auth("r.example:5000", config, {})
    assert auth is not None and auth.username == "bob" and auth.serveraddress == key


def test_auths_identity_token(tmp_path: Path) -> None:
    config = _write_config(tmp_path, {"auths": {"r.example": {"identitytoken": "idt"}}})
    auth = resolve_registry_auth("r.example", config, {})
    assert auth == RegistryAuth(identitytoken="idt", serveraddress="r.example")


def test_docker_hub_uses_legacy_key(tmp_path: Path) -> None:
    config = _write_config(tmp_path, {"auths": {DOCKER_HUB_KEY: {"auth": _b64("hub:pw")}}})
    auth = resolve_registry_auth("docker.io", config, {})
    assert auth is not None and auth.username == "hub"


def test_empty_entry_is_anonymous(tmp_path: Path) -> None:
    config = _write_config(tmp_path, {"auths": {"r.example": {}}})
    assert resolve_registry_auth("r.example", config, {}) is None


def test_never_another_registrys_credentials(tmp_path: Path) -> None:
    """attacks.md J07: a different port, a suffix or a prefix of the host is another registry."""
    config = _write_config(
        tmp_path,
        {
            "auths": {
                "r.example:5000": {"auth": _b64("five:pw")},
                "https://evil.r.example/v2/": {"auth": _b64("evil:pw")},
                "r.example.evil": {"auth": _b64("suffix:pw")},
                DOCKER_HUB_KEY: {"auth": _b64("hub:pw")},
            }
        },
    )
    assert resolve_registry_auth("r.example", config, {}) is None
    assert resolve_registry_auth("r.example:5001", config, {}) is None
    assert resolve_registry_auth("index.docker.io.evil", config, {}) is None
    assert resolve_registry_auth("evil.r.example", config, {}).username == "evil"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "doc",
    [
        "not json",
        "[]",
        json.dumps({"auths": []}),
        json.dumps({"auths": {"r.example": {"auth": "%%%"}}}),
        json.dumps({"auths": {"r.example": {"auth": _b64("nocolon")}}}),
        json.dumps({"auths": {"r.example": {"username": 3}}}),
        json.dumps({"credsStore": 5}),
        json.dumps({"credHelpers": {"r.example": "../../bin/sh"}}),
    ],
)
def test_malformed_config_is_config_error(tmp_path: Path, doc: str) -> None:
    (tmp_path / "config.json").write_text(doc)
    with pytest.raises(ConfigError):
        resolve_registry_auth("r.example", tmp_path, {})


# ------------------------------------------------------------------------ DOCKER_AUTH_CONFIG


def test_docker_auth_config_first(tmp_path: Path) -> None:
    config = _write_config(tmp_path, {"auths": {"r.example": {"auth": _b64("file:pw")}}})
    env = {"DOCKER_AUTH_CONFIG": json.dumps({"auths": {"r.example": {"auth": _b64("env:pw")}}})}
    auth = resolve_registry_auth("r.example", config, env)
    assert auth is not None and auth.username == "env"


def test_docker_auth_config_falls_back_to_file(tmp_path: Path) -> None:
    config = _write_config(tmp_path, {"auths": {"r.example": {"auth": _b64("file:pw")}}})
    env = {"DOCKER_AUTH_CONFIG": json.dumps({"auths": {"other.example": {"auth": _b64("o:p")}}})}
    auth = resolve_registry_auth("r.example", config, env)
    assert auth is not None and auth.username == "file"


def test_docker_auth_config_malformed(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="DOCKER_AUTH_CONFIG"):
        resolve_registry_auth("r.example", tmp_path, {"DOCKER_AUTH_CONFIG": "{nope"})


# ------------------------------------------------------------------------ credential helpers


def test_creds_store_helper(tmp_path: Path, helper_env: dict[str, str]) -> None:
    config = _write_config(tmp_path / "cfg", {"credsStore": "fake"})
    auth = resolve_registry_auth("a.example:5000", config, helper_env)
    assert auth == RegistryAuth(
        username="alice", password="a-secret", serveraddress="a.example:5000"
    )
    assert _helper_calls(helper_env) == [[["get"], "a.example:5000"]]


def test_helper_token_username_means_identity_token(
    tmp_path: Path, helper_env: dict[str, str]
) -> None:
    config = _write_config(tmp_path / "cfg", {"credsStore": "fake"})
    auth = resolve_registry_auth("tok.example", config, helper_env)
    assert auth == RegistryAuth(identitytoken="identity-token-value", serveraddress="tok.example")


def test_helper_asked_with_hub_key(tmp_path: Path, helper_env: dict[str, str]) -> None:
    config = _write_config(tmp_path / "cfg", {"credHelpers": {DOCKER_HUB_KEY: "fake"}})
    auth = resolve_registry_auth("docker.io", config, helper_env)
    assert auth is not None and auth.username == "hubuser"
    assert _helper_calls(helper_env) == [[["get"], DOCKER_HUB_KEY]]


def test_cred_helpers_only_for_their_registry(tmp_path: Path, helper_env: dict[str, str]) -> None:
    """credHelpers for one host is not consulted for another; that one uses auths."""
    config = _write_config(
        tmp_path / "cfg",
        {
            "credHelpers": {"a.example:5000": "fake"},
            "auths": {"b.example": {"auth": _b64("bob:pw")}},
        },
    )
    auth = resolve_registry_auth("b.example", config, helper_env)
    assert auth is not None and auth.username == "bob"
    assert _helper_calls(helper_env) == []


def test_helper_not_found_is_anonymous_without_auths_fallback(
    tmp_path: Path, helper_env: dict[str, str]
) -> None:
    """As in docker, a configured helper is authoritative for its registry."""
    config = _write_config(
        tmp_path / "cfg",
        {"credsStore": "fake", "auths": {"c.example": {"auth": _b64("stale:pw")}}},
    )
    assert resolve_registry_auth("c.example", config, helper_env) is None
    assert _helper_calls(helper_env) == [[["get"], "c.example"]]


def test_helper_failure_is_auth_error(tmp_path: Path, helper_env: dict[str, str]) -> None:
    config = _write_config(tmp_path / "cfg", {"credsStore": "fake"})
    with pytest.raises(AuthError, match="keychain is locked"):
        resolve_registry_auth("broken.example", config, helper_env)


def test_missing_helper_is_anonymous(tmp_path: Path, helper_env: dict[str, str]) -> None:
    config = _write_config(tmp_path / "cfg", {"credsStore": "absent-helper"})
    assert resolve_registry_auth("a.example:5000", config, helper_env) is None
