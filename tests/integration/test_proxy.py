"""`trustpull proxy` with real clients: the docker CLI 28, docker-py, docker-compose 1.29.

Each client talks only to the proxy's socket (DOCKER_HOST=unix://…/tp.sock); the engine's state
is then asked of the engine directly. Signed images work as against the engine; unsigned,
tampered-by-tag and refused ones leave nothing new in the engine.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from fixtures.stack import Stack
from tests.integration.proxy_world import World

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def world(stack: Stack) -> Iterator[World]:
    w = World(stack)
    try:
        yield w
    finally:
        w.close()


def _why(proc: object, world: World) -> str:
    return f"\n{proc}\n--- proxy log ---\n{world.proxy.logs()[-3000:]}"


def test_docker_pull_signed_X33(world: World) -> None:
    world.rmi(f"{world.repo}:1.0")
    proc = world.client("pull", f"{world.repo}:1.0")
    assert proc.returncode == 0, _why(proc, world)
    assert f"Pull (1 of 1): {world.repo}:1.0@{world.signed_digest}" in proc.stdout
    assert f"trustpull: verified {world.repo}:1.0 -> {world.signed_digest}" in proc.stdout
    assert f"Tagging {world.repo}@{world.signed_digest} as {world.repo}:1.0" in proc.stdout
    image = world.image(f"{world.repo}:1.0")
    assert image is not None
    assert f"{world.repo}@{world.signed_digest}" in image["RepoDigests"]


def test_docker_pull_unsigned_tag_refused(world: World) -> None:
    before = world.snapshot()
    proc = world.client("pull", f"{world.repo}:evil")
    assert proc.returncode == 1, _why(proc, world)
    assert "Error response from daemon: trustpull: pull of" in proc.stderr
    assert "[NoSuchTag]" in proc.stderr or "NotSigned" in proc.stderr, proc.stderr
    assert world.snapshot() == before
    assert world.image(f"{world.repo}:evil") is None


def test_docker_pull_unsigned_repository_refused(world: World) -> None:
    before = world.snapshot()
    proc = world.client("pull", f"{world.unsigned_repo}:1.0")
    assert proc.returncode == 1, _why(proc, world)
    assert "[NoTrustData]" in proc.stderr, proc.stderr
    assert world.snapshot() == before
    decisions = [d for d in world.proxy.decisions() if d.get("verdict") == "refused"]
    assert any(world.unsigned_repo in str(d.get("reference")) for d in decisions)
    last = decisions[-1]
    for key in ("time", "uid", "pid", "method", "path", "reference", "verdict"):
        assert key in last, last


def test_docker_run_signed_X33(world: World) -> None:
    world.rmi(f"{world.repo}:1.0")
    proc = world.client("run", "--rm", "--network", "none", f"{world.repo}:1.0", "cat", "/marker")
    assert proc.returncode == 0, _why(proc, world)
    assert "signed-1.0" in proc.stdout
    assert "Unable to find image" in proc.stderr  # create 404 -> pull through the proxy -> create


def test_docker_run_unsigned_refused(world: World) -> None:
    before = world.snapshot()
    proc = world.client("run", "--rm", "--network", "none", f"{world.unsigned_repo}:1.0", "true")
    assert proc.returncode == 125, _why(proc, world)
    assert "trustpull" in proc.stderr
    assert world.snapshot() == before


def test_docker_ps_and_version_pass_through(world: World) -> None:
    assert world.client("ps").returncode == 0
    proc = world.client("version", "--format", "{{json .Server.APIVersion}}")
    assert proc.returncode == 0 and json.loads(proc.stdout), proc
