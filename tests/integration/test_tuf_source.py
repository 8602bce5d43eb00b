"""Trusted pulls from a standard TUF repository: real registry and dockerd (the `stack`), a TUF
repository built with python-tuf's Metadata API served over HTTPS, and the trustpull CLI.

Every refusal is checked on the engine too: the tag must not exist there afterwards.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from fixtures.stack import Stack, docker, make_image
from tests.tuf_repo import StaticHttps, TufRepo

pytestmark = pytest.mark.integration


@dataclass
class World:
    stack: Stack
    repo: TufRepo
    server: StaticHttps
    config: Path
    docker_config: Path
    name: str  # repository, unique per test
    signed: str  # digest of the image signed as :1.0
    other: str  # digest of another image in the same repository

    def trustpull(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {
            **os.environ,
            "DOCKER_HOST": self.stack.docker_host,
            "DOCKER_CONFIG": str(self.docker_config),
        }
        return subprocess.run(
            [sys.executable, "-m", "cli.main", *args, "--config", str(self.config)],
            capture_output=True,
            text=True,
            env=env,
            check=False,
            timeout=300,
        )

    def pull_json(self, ref: str) -> tuple[int, list[dict[str, object]], str]:
        out = self.trustpull("pull", "-o", "json", ref)
        return out.returncode, json.loads(out.stdout or "[]"), out.stderr

    def engine_has(self, ref: str) -> bool:
        probe = docker("image", "inspect", "--", ref, env=self.stack.docker_env(), check=False)
        return probe.returncode == 0

    def assert_refused(self, tag: str, code: int) -> None:
        rc, items, stderr = self.pull_json(f"{self.name}:{tag}")
        assert rc == code, stderr
        assert items[0]["pulled"] is False
        assert not self.engine_has(f"{self.name}:{tag}")
        assert not self.engine_has(f"{self.name}@{self.other}")


@pytest.fixture()
def world(stack: Stack, tmp_path: Path) -> Iterator[World]:
    assert stack.registry is not None
    name = f"{stack.registry.host}/tuf/app-{time.monotonic_ns()}"
    signed = make_image(stack, f"{name}:1.0", b"signed through TUF\n")
    other = make_image(stack, f"{name}:other", b"never signed\n")
    docker("rmi", "-f", "--", f"{name}:1.0", f"{name}:other", env=stack.docker_env(), check=False)
    repo = TufRepo(tmp_path / "repo")
    repo.add_tag(name, "1.0", signed, custom={"signers": ["ci"]})
    repo.publish()
    root = tmp_path / "root.json"
    root.write_bytes(repo.initial_root)
    with StaticHttps(tmp_path / "repo", tmp_path / "tls") as server:
        docker_config = tmp_path / "docker-config"
        server.install_ca(docker_config)
        config = tmp_path / "config.toml"
        config.write_text(
            "[[trust_sources]]\n"
            f'scope = "{stack.registry.host}/tuf"\n'
            'type = "tuf"\n'
            f'metadata_url = "{server.url}/"\n'
            'root = "root.json"\n'
            'cache_dir = "tuf-cache"\n'
        )
        try:
            yield World(stack, repo, server, config, docker_config, name, signed, other)
        finally:
            docker(
                "rmi", "-f", "--", f"{name}:1.0", f"{name}@{signed}", f"{name}@{other}",
                env=stack.docker_env(), check=False,
            )  # fmt: skip


def test_signed_tag_pulled_by_digest(world: World) -> None:
    rc, items, stderr = world.pull_json(f"{world.name}:1.0")
    assert rc == 0, stderr
    (item,) = items
    assert item["source"] == "tuf" and item["role"] == "targets" and item["pulled"] is True
    assert item["reference"] == f"{world.name}:1.0@{world.signed}"
    inspected = docker(
        "image", "inspect", "--format", "{{json .RepoDigests}}", "--", f"{world.name}:1.0",
        env=world.stack.docker_env(),
    )  # fmt: skip
    assert f"{world.name}@{world.signed}" in json.loads(inspected.stdout)


def test_unknown_tag_refused_exit_4(world: World) -> None:
    world.assert_refused("other", 4)  # in the registry, not signed


def test_tampered_targets_refused(world: World) -> None:
    path = world.repo.dir / "1.targets.json"
    doc = json.loads(path.read_bytes())
    doc["signed"]["targets"][f"{world.name}:1.0"]["hashes"]["sha256"] = world.other[7:]
    path.write_text(json.dumps(doc))
    world.assert_refused("1.0", 5)


def test_rollback_refused(world: World) -> None:
    old = world.repo.files()
    world.repo.add_tag(world.name, "1.0", world.signed, custom={"signers": ["ci", "qa"]})
    world.repo.publish()
    out = world.trustpull("resolve", f"{world.name}:1.0")
    assert out.returncode == 0, out.stderr  # the client now knows timestamp v2
    # The attacker replays the older, still validly signed timestamp (that moved 1.0 elsewhere).
    world.repo.restore({"timestamp.json": old["timestamp.json"]})
    world.assert_refused("1.0", 5)


def test_freeze_refused(world: World) -> None:
    world.repo.add_tag(world.name, "1.0", world.other)
    world.repo.publish(timestamp_expires=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1))
    world.assert_refused("1.0", 5)


def test_root_and_targets_key_rotation(world: World) -> None:
    world.repo.rotate("root", "targets")
    world.repo.publish()
    rc, items, stderr = world.pull_json(f"{world.name}:1.0")
    assert rc == 0, stderr
    assert items[0]["root_key_id"] == sorted(world.repo.root.signed.roles["root"].keyids)[0]
    docker("rmi", "-f", "--", f"{world.name}:1.0", env=world.stack.docker_env(), check=False)
    # A root signed only by new keys does not chain to the trusted one.
    world.repo.rotate("root", signed_by_old_root=False)
    world.repo.publish()
    world.assert_refused("1.0", 5)


def test_targets_signed_with_revoked_key_refused(world: World) -> None:
    old = list(world.repo.signers["targets"])
    world.repo.rotate("targets")
    world.repo.add_tag(world.name, "1.0", world.other)
    world.repo.publish(sign_targets_with={"targets": old})
    world.assert_refused("1.0", 5)


def test_delegation_not_allowed_to_sign_the_tag(world: World) -> None:
    host = world.name.split("/", 1)[0]
    world.repo.delegate("targets", "elsewhere", paths=[f"{host}/other/*"])
    world.repo.add_tag(world.name, "3.0", world.other, role="elsewhere")
    world.repo.delegate("targets", "team", paths=[f"{host}/tuf/*"])
    world.repo.add_tag(world.name, "4.0", world.signed, role="team")
    world.repo.publish()
    world.assert_refused("3.0", 4)
    rc, items, stderr = world.pull_json(f"{world.name}:4.0")
    assert rc == 0, stderr
    assert items[0]["role"] == "team" and items[0]["signers"] == ["team"]
    assert world.engine_has(f"{world.name}:4.0")
