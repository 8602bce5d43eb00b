"""Podman's Docker-compatible API as trustpull's engine (issue 14), on the session stack.

`podman system service` (Debian's podman 4.3, rootful, vfs storage) is started by the module
fixture on a unix socket in a temporary directory and stopped by its pid. It pulls from the same
docker-registry, and trustpull verifies against the same notary-server, as the docker tests: the
images are signed with the docker CLI through the stack's dockerd. The registry (plain HTTP on
loopback) is marked insecure in the service's own registries.conf (`CONTAINERS_REGISTRIES_CONF`),
so nothing under /etc/containers is written.

Covered: trusted pull by tag (`DOCKER_HOST`) and by digest (`--engine-socket`), `-a` (engine
from the config file's `[engine] socket`), the pull progress, and the engine's in-band errors
(a signed digest the registry does not have, an unknown tag, a registry podman reaches over HTTPS
that speaks HTTP, a tag of an absent image), and podman's API differences that trustpull evens
out or refuses (`NAME@sha256:…` among the image list's RepoTags; no all-tags pull).
Registry credentials through podman: the podman tests at the end of test_auth.py.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from fixtures.stack import (
    PodmanService,
    Stack,
    _tiny_tar,
    _UnixHTTPConnection,
    docker,
    refused_port,
)
from tests.integration._podman import running_podman
from trust.engine import Engine
from trust.errors import AuthError, EngineError

pytestmark = pytest.mark.integration

EXIT_ENGINE = 8
_DIGEST_RE = re.compile(r"digest: (sha256:[0-9a-f]{64})")
#: A per-blob progress line as trustpull prints podman's stream on a pipe.
_PROGRESS_RE = re.compile(r"^[0-9a-f]{12}: (Pulling fs layer|Download complete)$", re.MULTILINE)


@pytest.fixture(scope="module")
def podman(stack: Stack) -> Iterator[PodmanService]:
    assert stack.registry is not None
    yield from running_podman([stack.registry.host])


@pytest.fixture(autouse=True)
def _podman_log_on_failure(request: pytest.FixtureRequest) -> Iterator[None]:
    """Print podman's log when a test that used it failed (shown in the report)."""
    failed_before = request.session.testsfailed
    yield
    if request.session.testsfailed > failed_before and "podman" in request.fixturenames:
        service: PodmanService = request.getfixturevalue("podman")
        print(service.logs(), file=sys.stderr)


@pytest.fixture()
def engine(podman: PodmanService) -> Iterator[Engine]:
    with Engine.connect({"DOCKER_HOST": podman.docker_host}, timeout=30) as engine:
        yield engine


def _repo(stack: Stack, name: str) -> str:
    assert stack.registry is not None
    return f"{stack.registry.host}/podman/{name}-{time.monotonic_ns()}"


def _sign(stack: Stack, tmp_path: Path, ref: str, content: str) -> str:
    """Import a one-file image into the stack's dockerd and push it signed (docker CLI)."""
    env = stack.docker_env(tmp_path / "publisher")
    tar_path = tmp_path / f"img-{time.monotonic_ns()}.tar"
    tar_path.write_bytes(_tiny_tar(f"{ref} {content}".encode()))
    docker("import", "--", str(tar_path), ref, env=env)
    pushed = docker("push", "--", ref, env={**env, "DOCKER_CONTENT_TRUST": "1"})
    assert f"Successfully signed {ref}" in pushed.stdout, pushed.stdout
    match = _DIGEST_RE.search(pushed.stdout)
    assert match, pushed.stdout
    docker("rmi", "-f", "--", ref, env=env, check=False)
    return match.group(1)


def _trustpull(
    stack: Stack, tmp_path: Path, *args: str, engine_host: str | None, trust: bool = True
) -> subprocess.CompletedProcess[str]:
    """trustpull as a user runs it, with a cold trust cache, against podman's socket."""
    env = {**os.environ, **stack.docker_env(tmp_path / "consumer")}
    env["DOCKER_CONTENT_TRUST"] = "1" if trust else "0"
    env.pop("DOCKER_HOST", None)
    if engine_host is not None:
        env["DOCKER_HOST"] = engine_host
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _why(proc: subprocess.CompletedProcess[str]) -> str:
    return f"\n[exit {proc.returncode}]\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"


def _podman_get(podman: PodmanService, path: str) -> object:
    conn = _UnixHTTPConnection(str(podman.socket_path), timeout=10)
    try:
        conn.request("GET", f"/v1.41{path}")
        response = conn.getresponse()
        body = response.read()
        assert response.status == 200, body
        return json.loads(body)
    finally:
        conn.close()


def _listed_repo_tags(podman: PodmanService, ref: str) -> tuple[list[str], list[str]]:
    """RepoTags of `ref` as podman's image list (`docker images`) and its inspect answer them."""
    inspected = _podman_get(podman, f"/images/{ref}/json")
    assert isinstance(inspected, dict)
    listed = _podman_get(podman, "/images/json")
    assert isinstance(listed, list)
    (summary,) = [image for image in listed if image["Id"] == inspected["Id"]]
    return sorted(summary["RepoTags"] or []), sorted(inspected["RepoTags"] or [])


def _absent(engine: Engine, ref: str) -> bool:
    try:
        engine.image_repo_digests(ref)
    except EngineError:
        return True
    return False


def test_service_is_podman(engine: Engine) -> None:
    assert engine.is_podman is True
    assert engine.api_version == "1.41"


def test_trusted_pull_by_tag(
    stack: Stack, podman: PodmanService, engine: Engine, tmp_path: Path
) -> None:
    repo = _repo(stack, "bytag")
    digest = _sign(stack, tmp_path, f"{repo}:1.0", "one")
    proc = _trustpull(stack, tmp_path, f"{repo}:1.0", engine_host=podman.docker_host)
    assert proc.returncode == 0, _why(proc)
    assert f"Pull (1 of 1): {repo}:1.0@{digest}\n" in proc.stdout, _why(proc)
    assert _PROGRESS_RE.search(proc.stdout), _why(proc)  # podman's per-blob progress
    assert proc.stdout.splitlines()[-1] == f"{repo}:1.0", _why(proc)
    assert f"Tagging {repo}@{digest} as {repo}:1.0" in proc.stderr, _why(proc)
    assert f"{repo}@{digest}" in engine.image_repo_digests(f"{repo}:1.0")
    assert engine.image_tags(f"{repo}:1.0") == [f"{repo}:1.0"]
    # podman's image list (`docker images`) also names the image by the digest it was pulled
    # by; its inspect answer, which trustpull reads, does not (as docker).
    assert _listed_repo_tags(podman, f"{repo}:1.0") == (
        [f"{repo}:1.0", f"{repo}@{digest}"],
        [f"{repo}:1.0"],
    )


def test_trusted_pull_by_digest_through_engine_socket_option(
    stack: Stack, podman: PodmanService, engine: Engine, tmp_path: Path
) -> None:
    """`--engine-socket` beats DOCKER_HOST (here a socket nothing listens on)."""
    repo = _repo(stack, "bydigest")
    digest = _sign(stack, tmp_path, f"{repo}:1.0", "digest")
    proc = _trustpull(
        stack,
        tmp_path,
        "pull",
        "--engine-socket",
        str(podman.socket_path),
        f"{repo}@{digest}",
        engine_host=f"unix://{tmp_path}/nothing.sock",
    )
    assert proc.returncode == 0, _why(proc)
    assert f"Pull (1 of 1): {repo}:1.0@{digest}\n" in proc.stdout, _why(proc)
    assert "Tagging" not in proc.stderr, _why(proc)  # a digest reference is not tagged
    assert f"{repo}@{digest}" in engine.image_repo_digests(f"{repo}@{digest}")
    assert engine.image_tags(f"{repo}@{digest}") == []
    assert _listed_repo_tags(podman, f"{repo}@{digest}") == ([f"{repo}@{digest}"], [])


def test_all_tags_with_the_engine_from_the_config_file(
    stack: Stack, podman: PodmanService, engine: Engine, tmp_path: Path
) -> None:
    repo = _repo(stack, "alltags")
    digests = {tag: _sign(stack, tmp_path, f"{repo}:{tag}", tag) for tag in ("1.0", "2.0")}
    config = tmp_path / "trustpull.toml"
    config.write_text(f'[engine]\nsocket = "{podman.socket_path}"\n')
    proc = _trustpull(stack, tmp_path, "-a", "--config", str(config), repo, engine_host=None)
    assert proc.returncode == 0, _why(proc)
    for index, tag in enumerate(sorted(digests), start=1):
        assert f"Pull ({index} of 2): {repo}:{tag}@{digests[tag]}\n" in proc.stdout, _why(proc)
        assert f"Tagging {repo}@{digests[tag]} as {repo}:{tag}" in proc.stderr, _why(proc)
        assert engine.image_repo_digests(f"{repo}:{tag}") == [f"{repo}@{digests[tag]}"]
        assert engine.image_tags(f"{repo}:{tag}") == [f"{repo}:{tag}"]


def test_plain_pull_of_every_tag_is_refused_not_cut_to_latest(
    stack: Stack, podman: PodmanService, engine: Engine, tmp_path: Path
) -> None:
    """Podman's API pulls only :latest without a tag: refused, exit 8, nothing pulled."""
    repo = _repo(stack, "plainall")
    _sign(stack, tmp_path, f"{repo}:latest", "latest")
    proc = _trustpull(stack, tmp_path, "-a", repo, engine_host=podman.docker_host, trust=False)
    assert proc.returncode == EXIT_ENGINE, _why(proc)
    assert "podman" in proc.stderr and "cannot pull every tag" in proc.stderr, _why(proc)
    assert _absent(engine, f"{repo}:latest")


def test_signed_digest_missing_from_the_registry(
    stack: Stack, podman: PodmanService, engine: Engine, tmp_path: Path
) -> None:
    """Verified, then podman's in-band error (200 stream with `error`): exit 8, no tag made."""
    assert stack.registry is not None
    repo = _repo(stack, "deleted")
    digest = _sign(stack, tmp_path, f"{repo}:1.0", "deleted")
    path = repo.split("/", 1)[1]
    request = urllib.request.Request(
        f"http://{stack.registry.host}/v2/{path}/manifests/{digest}", method="DELETE"
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        assert answer.status == 202
    proc = _trustpull(stack, tmp_path, f"{repo}:1.0", engine_host=podman.docker_host)
    assert proc.returncode == EXIT_ENGINE, _why(proc)
    assert "manifest unknown" in proc.stderr, _why(proc)
    assert f"Pull (1 of 1): {repo}:1.0@{digest}" in proc.stdout, _why(proc)
    assert "Tagging" not in proc.stderr, _why(proc)
    assert _absent(engine, f"{repo}:1.0")


def test_in_band_errors(stack: Stack, podman: PodmanService, engine: Engine) -> None:
    assert stack.registry is not None
    repo = _repo(stack, "errors")
    missing = "sha256:" + "0" * 64
    for tag_or_digest in (missing, "9.9"):
        with pytest.raises(EngineError, match="manifest unknown") as info:
            engine.pull(repo, tag_or_digest, auth=None)
        assert not isinstance(info.value, AuthError)
    # The same registry by another name: not marked insecure, so podman speaks HTTPS to it.
    port = stack.registry.port
    with pytest.raises(EngineError, match="server gave HTTP response to HTTPS client") as info:
        engine.pull(f"localhost:{port}/podman/app", "1.0", auth=None)
    assert f'location = "localhost:{port}", insecure = true' in info.value.message
    with refused_port() as port, pytest.raises(EngineError, match="connection refused"):
        engine.pull(f"127.0.0.1:{port}/podman/app", "1.0", auth=None)
    with pytest.raises(EngineError, match="could not tag"):
        engine.tag(f"{repo}@{missing}", repo, "x")
