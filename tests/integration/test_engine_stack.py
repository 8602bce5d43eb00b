"""Engine against a real dockerd and registry; notary-server and docker CLI signing on the stack."""

from __future__ import annotations

import json
import ssl
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from fixtures.stack import Stack, docker, make_image, refused_port
from trust.engine import Engine
from trust.errors import AuthError, EngineError

pytestmark = pytest.mark.integration


@pytest.fixture()
def engine(stack: Stack) -> Engine:
    return Engine.connect({"DOCKER_HOST": stack.docker_host})


def _repo(stack: Stack, name: str) -> str:
    assert stack.registry is not None
    # Unique per call so tests never see each other's images.
    return f"{stack.registry.host}/it/{name}-{time.monotonic_ns()}"


def test_pull_by_tag_streams_events(stack: Stack, engine: Engine) -> None:
    repo = _repo(stack, "bytag")
    digest = make_image(stack, f"{repo}:1.0", b"pull by tag")
    docker("rmi", "--", f"{repo}:1.0", env=stack.docker_env())
    events: list[dict[str, Any]] = []
    engine.pull(repo, "1.0", auth=None, on_event=events.append)
    statuses = [str(e.get("status", "")) for e in events]
    assert any(s.startswith("Pulling from") for s in statuses)
    assert f"Digest: {digest}" in statuses
    assert f"{repo}@{digest}" in engine.image_repo_digests(f"{repo}:1.0")


def test_pull_by_digest_then_tag(stack: Stack, engine: Engine) -> None:
    repo = _repo(stack, "bydigest")
    digest = make_image(stack, f"{repo}:1.0", b"pull by digest")
    docker("rmi", "--", f"{repo}:1.0", env=stack.docker_env())
    engine.pull(repo, digest, auth=None)
    assert f"{repo}@{digest}" in engine.image_repo_digests(f"{repo}@{digest}")
    engine.tag(f"{repo}@{digest}", repo, "verified")
    assert f"{repo}@{digest}" in engine.image_repo_digests(f"{repo}:verified")


def test_tag_of_missing_image_fails(engine: Engine) -> None:
    missing = "127.0.0.1:1/none/none@sha256:" + "0" * 64
    with pytest.raises(EngineError, match="could not tag"):
        engine.tag(missing, "127.0.0.1:1/none/none", "x")


def test_unknown_tag(stack: Stack, engine: Engine) -> None:
    repo = _repo(stack, "unknowntag")
    make_image(stack, f"{repo}:1.0", b"unknown tag")
    with pytest.raises(EngineError, match="not found") as info:
        engine.pull(repo, "2.0", auth=None)
    assert not isinstance(info.value, AuthError)


def test_unknown_repository(stack: Stack, engine: Engine) -> None:
    with pytest.raises(EngineError) as info:
        engine.pull(_repo(stack, "never-pushed"), "1.0", auth=None)
    assert not isinstance(info.value, AuthError)


def test_registry_down(engine: Engine) -> None:
    with refused_port() as port, pytest.raises(EngineError, match="connection refused"):
        engine.pull(f"127.0.0.1:{port}/ns/app", "1.0", auth=None)


def test_engine_down(tmp_path: Path) -> None:
    host = f"unix://{tmp_path}/no-such.sock"
    with pytest.raises(EngineError, match=r"Cannot connect to the Docker daemon at unix://"):
        Engine.connect({"DOCKER_HOST": host}, timeout=5)


def test_notary_server_health(stack: Stack) -> None:
    assert stack.notary is not None
    context = ssl.create_default_context(cafile=str(stack.notary.ca_path))
    url = f"{stack.notary.url}/_notary_server/health"
    with urllib.request.urlopen(url, context=context, timeout=5) as response:
        assert response.status == 200


def test_docker_cli_trusted_push_creates_trust_data(stack: Stack, tmp_path: Path) -> None:
    """The docker CLI signs through the stack's notary-server: the stack can serve DCT work."""
    assert stack.notary is not None
    repo = _repo(stack, "signed")
    config = tmp_path / "docker-config"
    env = stack.docker_env(config)
    make_image(stack, f"{repo}:1.0", b"signed image", env=env)
    before = len(stack.notary.request_log())
    pushed = docker("push", "--", f"{repo}:1.0", env={**env, "DOCKER_CONTENT_TRUST": "1"})
    assert f"Successfully signed {repo}:1.0" in pushed.stdout
    assert (config / "trust" / "tuf" / repo / "metadata" / "root.json").is_file()
    new = stack.notary.request_log()[before:]
    assert any(e.method == "POST" and e.status == 200 for e in new)
    inspected = docker("trust", "inspect", "--", repo, env={**env, "DOCKER_CONTENT_TRUST": "1"})
    signed = json.loads(inspected.stdout)[0]["SignedTags"]
    assert [tag["SignedTag"] for tag in signed] == ["1.0"]
