"""Engine-side faults on the real stack (attacks.md J03–J06): real dockerd, real docker-registry.

The trust data is generated (fixtures/notarygen.py) and served by FixtureServer, signing the
real manifest digest (and size) of an image pushed to the stack's registry; trustpull runs as a
user runs it (`python -m cli.main`, a subprocess). Its engine is reached through `EngineProxy`
(a recording, fault-injecting proxy on a unix socket), so each test can assert what the engine
was asked: every `POST /images/create` carried `tag=sha256:…` ("no fault may end in an
unpinned pull"), and no tag request followed a failed pull. What the engine holds afterwards is
read from dockerd directly with the docker CLI.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from fixtures.notarygen import RepoBuilder
from fixtures.proxies import EngineProxy, RegistryShim
from fixtures.server import FixtureServer
from fixtures.stack import Stack, docker, make_image

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
EXIT_ENGINE = 8
_ACCEPT = ", ".join(
    [
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.index.v1+json",
    ]
)


def manifest(registry_host: str, repo_path: str, digest: str) -> bytes:
    """The manifest bytes the registry serves for `digest` (checked against it)."""
    request = urllib.request.Request(
        f"http://{registry_host}/v2/{repo_path}/manifests/{digest}", headers={"Accept": _ACCEPT}
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        body: bytes = answer.read()
    assert "sha256:" + hashlib.sha256(body).hexdigest() == digest
    return body


@dataclass
class World:
    stack: Stack
    tmp: Path
    proxy: EngineProxy
    trust: FixtureServer
    docker_config: Path

    def sign(self, gun: str, tag: str, digest: str, length: int) -> None:
        """Publish generated trust data for `gun` that signs `tag` → `digest` in releases."""
        builder = RepoBuilder(gun)
        builder.add_delegation("targets/releases")
        builder.add_target(tag, digest.removeprefix("sha256:"), length, role="targets/releases")
        self.trust.publish(gun, builder.publish())

    def env(self, docker_host: str | None = None) -> dict[str, str]:
        return {
            **os.environ,
            "HOME": str(self.tmp),
            "DOCKER_CONFIG": str(self.docker_config),
            "DOCKER_HOST": docker_host or self.proxy.docker_host,
            "DOCKER_CONTENT_TRUST": "1",
            "DOCKER_CONTENT_TRUST_SERVER": self.trust.url,
            "PYTHONPATH": str(ROOT),
        }

    def trustpull(
        self, ref: str, docker_host: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "cli.main", "pull", "--", ref],
            cwd=ROOT,
            env=self.env(docker_host),
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )

    def engine_docker(self, *args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
        """The docker CLI straight at dockerd (not through the proxy), trust off."""
        env = {**self.stack.docker_env(self.tmp / "cli"), "DOCKER_CONTENT_TRUST": "0"}
        return docker(*args, env=env, check=check)

    def image_id(self, ref: str) -> str | None:
        proc = self.engine_docker("image", "inspect", "--format", "{{.Id}}", "--", ref)
        return proc.stdout.strip() if proc.returncode == 0 else None

    def repo_digests(self, ref: str) -> list[str]:
        proc = self.engine_docker(
            "image", "inspect", "--format", "{{json .RepoDigests}}", "--", ref
        )
        return list(json.loads(proc.stdout)) if proc.returncode == 0 else []

    def creates(self) -> list[dict[str, list[str]]]:
        return [r.query for r in self.proxy.requests if r.path == "/images/create"]

    def tags(self) -> list[str]:
        return [r.path for r in self.proxy.requests if r.path.endswith("/tag")]

    def assert_every_pull_pinned(self) -> None:
        """No fault may end in an unpinned pull: each create names a `sha256:` digest."""
        for query in self.creates():
            (tag,) = query["tag"]
            assert tag.startswith("sha256:") and len(tag) == 71, query


@pytest.fixture
def world(stack: Stack, tmp_path: Path) -> Iterator[World]:
    assert stack.dockerd is not None
    short = Path(tempfile.mkdtemp(prefix="tpj-", dir="/tmp"))  # unix socket paths are short
    docker_config = tmp_path / "config"
    docker_config.mkdir()
    proxy = EngineProxy(str(stack.dockerd.socket_path), short / "engine.sock").start()
    try:
        with FixtureServer() as trust:
            tls = docker_config / "tls" / f"127.0.0.1:{trust.port}"
            tls.mkdir(parents=True)
            tls.joinpath("ca.crt").write_bytes(trust.ca_path.read_bytes())
            yield World(stack, tmp_path, proxy, trust, docker_config)
    finally:
        proxy.stop()
        short.rmdir()


def _unique(name: str) -> str:
    return f"{name}-{time.monotonic_ns()}"


def _why(proc: subprocess.CompletedProcess[str]) -> str:
    return f"\n[exit {proc.returncode}]\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"


def test_J03_registry_serving_another_manifest_is_refused_by_the_engine(world: World) -> None:
    stack = world.stack
    assert stack.registry is not None
    path = f"j03/{_unique('app')}"
    digest = make_image(stack, f"{path}:1.0", f"{path} signed".encode())
    body = manifest(stack.registry.host, path, digest)
    with RegistryShim(stack.registry.host) as shim:
        gun = f"{shim.host}/{path}"
        world.sign(gun, "1.0", digest, len(body))
        # Valid JSON, same layers, other bytes: a registry answering with other content.
        shim.rewrite = lambda original: original.rstrip() + b"\n\n"
        proc = world.trustpull(f"{gun}:1.0")
        assert proc.returncode == EXIT_ENGINE, _why(proc)
        assert "manifest verification failed for digest" in proc.stderr, _why(proc)
        assert digest in proc.stderr, _why(proc)  # the verified digest is named
        assert any(p.startswith(f"/v2/{path}/manifests/{digest}") for _, p in shim.requests)
    assert world.creates() == [{"fromImage": [gun], "tag": [digest]}]
    world.assert_every_pull_pinned()
    assert world.tags() == []
    assert world.image_id(f"{gun}:1.0") is None  # no tag created
    assert world.image_id(f"{gun}@{digest}") is None  # nothing unverified stored under it


def test_J04_engine_down_after_verification(world: World, tmp_path: Path) -> None:
    stack = world.stack
    assert stack.registry is not None
    path = f"j04/{_unique('app')}"
    digest = make_image(stack, f"{path}:1.0", f"{path} signed".encode())
    gun = f"{stack.registry.host}/{path}"
    world.sign(gun, "1.0", digest, len(manifest(stack.registry.host, path, digest)))
    dead = f"unix://{tmp_path / 'no-engine.sock'}"
    proc = world.trustpull(f"{gun}:1.0", docker_host=dead)
    assert proc.returncode == EXIT_ENGINE, _why(proc)
    assert "Cannot connect to the Docker daemon" in proc.stderr, _why(proc)
    assert f"{gun}:1.0@{digest}" in proc.stderr, _why(proc)  # so it could be pulled by hand
    assert world.trust.requests_for("*/timestamp.json"), "verification ran before the engine"


def test_J05_pull_by_digest_fails(world: World) -> None:
    stack = world.stack
    assert stack.registry is not None
    path = f"j05/{_unique('app')}"
    make_image(stack, f"{path}:0.9", f"{path} other".encode())  # the repository exists
    gun = f"{stack.registry.host}/{path}"
    missing = "sha256:" + hashlib.sha256(b"never pushed").hexdigest()
    world.sign(gun, "1.0", missing, 528)
    proc = world.trustpull(f"{gun}:1.0")
    assert proc.returncode == EXIT_ENGINE, _why(proc)
    assert "verification succeeded" in proc.stderr, _why(proc)
    assert "could not be pulled" in proc.stderr, _why(proc)
    assert world.creates() == [{"fromImage": [gun], "tag": [missing]}]
    world.assert_every_pull_pinned()
    assert world.tags() == []
    assert world.image_id(f"{gun}:1.0") is None


def test_J06_failing_tag_step_and_a_preexisting_local_tag(world: World) -> None:
    stack = world.stack
    assert stack.registry is not None
    path = f"j06/{_unique('app')}"
    digest = make_image(stack, f"{path}:1.0", f"{path} signed".encode())
    gun = f"{stack.registry.host}/{path}"
    ref = f"{gun}:1.0"
    world.sign(gun, "1.0", digest, len(manifest(stack.registry.host, path, digest)))
    # The engine already has REPO:1.0, pointing at another image (an older or planted one).
    world.engine_docker("rmi", "--", ref)
    tar = world.tmp / "other.tar"
    subprocess.run(["tar", "-cf", str(tar), "-C", str(world.tmp), "config"], check=True)
    world.engine_docker("import", "--", str(tar), ref, check=True)
    planted = world.image_id(ref)
    assert planted is not None

    # 1. The tag call fails: exit 8 "could not tag", and the planted tag is left alone.
    world.proxy.fail("POST", r"/images/.+/tag", 500, "injected tag failure")
    proc = world.trustpull(ref)
    assert proc.returncode == EXIT_ENGINE, _why(proc)
    assert "could not tag" in proc.stderr, _why(proc)
    (tag_call,) = [r for r in world.proxy.requests if r.path.endswith("/tag")]
    assert tag_call.path == f"/images/{gun}@{digest}/tag", tag_call  # source: the digest
    assert tag_call.query == {"repo": [gun], "tag": ["1.0"]}
    assert world.image_id(ref) == planted
    assert "Tagging" in proc.stderr and not proc.stdout.rstrip().endswith(ref), _why(proc)

    # 2. The tag call works: the planted image is replaced by the verified one, and only by it.
    world.proxy.failures.clear()
    proc = world.trustpull(ref)
    assert proc.returncode == 0, _why(proc)
    assert world.image_id(ref) != planted
    assert f"{gun}@{digest}" in world.repo_digests(ref)
    assert world.image_id(ref) == world.image_id(f"{gun}@{digest}")
    world.assert_every_pull_pinned()
    assert len(world.creates()) == 2
