"""Mirrors and pull-through caches (issue 15 part 6) with the real peers.

The session stack's registry is the *origin*; its notary-server holds trust data signed by the
docker CLI 28 (`DOCKER_CONTENT_TRUST=1 docker push`). A second `docker-registry` runs as a
pull-through cache of the origin (`proxy: remoteurl: http://127.0.0.1:<origin>`), and a third,
plain one plays a mirror that serves something else under the same name and tag. trustpull
(a subprocess, like a user runs it) is configured with `[trust_servers]` for the origin only
and `[mirrors]` for the other two, so a reference under a mirror can only verify through the
origin's trust server; the engine pulls from the mirror by the verified digest.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fixtures.stack import Registry, Stack, StackError
from tests.ci import skip_or_fail
from tests.integration._signed import Signed, _why

pytestmark = pytest.mark.integration

EXIT_ENGINE = 8


def origin_host(stack: Stack) -> str:
    """The origin registry: the session stack's."""
    assert stack.registry is not None
    return stack.registry.host


class ProxyRegistry(Registry):
    """docker-registry as a pull-through cache of `remote` (distribution's `proxy` mode)."""

    name = "mirror-registry"

    def __init__(self, directory: Path, remote: str) -> None:
        super().__init__(directory)
        self.remote = remote

    def argv(self) -> list[str]:
        argv = super().argv()
        path = self.dir / "config.yml"
        config = json.loads(path.read_text())  # JSON is YAML
        config["proxy"] = {"remoteurl": self.remote}
        path.write_text(json.dumps(config, indent=2))
        return argv


class ImpostorRegistry(Registry):
    """A plain docker-registry, named apart in the logs."""

    name = "impostor-registry"


def _start(server: Registry) -> Registry:
    try:
        server.start()
    except (StackError, OSError) as exc:
        skip_or_fail(f"{server.name} did not start: {exc}")
    return server


@pytest.fixture
def pull_through(stack: Stack, tmp_path: Path) -> Iterator[Registry]:
    """A pull-through cache of the stack's registry; stopped by the pid it was started with."""
    assert stack.registry is not None
    server = ProxyRegistry(tmp_path / "mirror", f"http://{stack.registry.host}")
    _start(server)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def impostor(tmp_path: Path) -> Iterator[Registry]:
    """A plain registry that will hold another image under the origin's name and tag."""
    server = ImpostorRegistry(tmp_path / "impostor")
    _start(server)
    try:
        yield server
    finally:
        server.stop()


class Mirrored:
    """Signed peers plus a trustpull configuration with `[mirrors]`, run from this checkout."""

    def __init__(self, peers: Signed, tmp_path: Path, mirrors: dict[str, str]) -> None:
        assert peers.stack.registry is not None and peers.stack.notary is not None
        self.peers = peers
        self.origin = peers.stack.registry.host
        self.config_file = tmp_path / "trustpull.toml"
        lines = ["[trust_servers]", f'"{self.origin}" = "{peers.stack.notary.url}"', ""]
        lines += ["[mirrors]"] + [f'"{m}" = "{o}"' for m, o in mirrors.items()]
        self.config_file.write_text("\n".join(lines) + "\n")
        self.consumer = peers.config("consumer")

    def under(self, mirror: str) -> str:
        """The test repository's name under `mirror` (same path as at the origin)."""
        return mirror + self.peers.repo[len(self.origin) :]

    def tp(self, *args: str) -> subprocess.CompletedProcess[str]:
        """This checkout's trustpull with the [mirrors] config and without the trust server
        override: only the [trust_servers] entry may send a reference to the notary-server, so
        verifying as the mirror's name would ask https://<mirror> and fail."""
        extra = {"TRUSTPULL_CONFIG": str(self.config_file), "DOCKER_CONTENT_TRUST_SERVER": None}
        env = self.peers.run_env(self.consumer, {"DOCKER_CONTENT_TRUST": "1", **extra})
        return self.peers._run([sys.executable, "-m", "cli.main", *args], env)

    def images(self) -> list[dict[str, Any]]:
        """The engine's images (`docker image ls -a`): ID, repository and tag of each, sorted
        (the engine lists images created in the same second in no fixed order)."""
        proc = self.peers.ok(
            self.peers.dk(
                "image",
                "ls",
                "-a",
                "--no-trunc",
                "--format",
                '{"id":"{{.ID}}","repository":"{{.Repository}}","tag":"{{.Tag}}"}',
                config=self.consumer,
            )
        )
        found = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
        return sorted(found, key=lambda image: (image["id"], image["repository"], image["tag"]))


def test_pull_check_resolve_through_a_pull_through_cache(
    stack: Stack, tmp_path: Path, pull_through: Registry
) -> None:
    peers = Signed(stack, tmp_path, "mirrored")
    digest = peers.push_signed("1.0", "origin content")
    peers.untag(f"{peers.repo}:1.0")
    mirror = pull_through.host
    m = Mirrored(peers, tmp_path, {mirror: origin_host(stack)})
    ref = f"{m.under(mirror)}:1.0"
    origin_name = peers.repo

    resolved = m.tp("resolve", "-o", "json", ref)
    assert resolved.returncode == 0, _why(resolved)
    (item,) = json.loads(resolved.stdout)
    assert item["reference"] == f"{ref}@{digest}", _why(resolved)
    assert item["name"] == m.under(mirror) and item["origin"] == origin_name, _why(resolved)
    assert stack.notary is not None and item["trust_server"] == stack.notary.url, _why(resolved)

    text = m.tp("resolve", ref)
    assert text.returncode == 0 and text.stdout.strip() == f"{ref}@{digest}", _why(text)

    checked = m.tp("check", "-o", "json", ref)
    assert checked.returncode == 0, _why(checked)
    report = json.loads(checked.stdout)
    results = report["results"] if isinstance(report, dict) else report
    (result,) = results
    assert (result["verdict"], result["digest"], result["origin"]) == (
        "pass",
        digest,
        origin_name,
    ), _why(checked)

    # inspect reads the origin's trust data; only the name shown is the one given.
    through, direct = m.tp("inspect", m.under(mirror)), m.tp("inspect", origin_name)
    assert through.returncode == 0 and direct.returncode == 0, _why(through, direct)
    (seen,), (expected,) = json.loads(through.stdout), json.loads(direct.stdout)
    assert seen.pop("Name") == m.under(mirror) and expected.pop("Name") == origin_name
    assert seen == expected and seen["SignedTags"], _why(through, direct)

    pulled = m.tp(ref)
    why = _why(pulled)
    assert pulled.returncode == 0, why
    assert f"Pull (1 of 1): {ref}@{digest}" in pulled.stdout.splitlines(), why
    assert f"Tagging {m.under(mirror)}@{digest} as {ref}" in pulled.stderr.splitlines(), why
    assert f"mirror: {ref.split(':1.0')[0]} is verified as {origin_name} " in pulled.stderr, why
    digests = peers.repo_digests(ref)
    assert digests is not None and f"{m.under(mirror)}@{digest}" in digests, why
    # The origin's name was not pulled or tagged: the content came from the cache...
    assert peers.repo_digests(f"{peers.repo}:1.0") is None, why
    # ...which now holds the manifest it fetched from the origin for that digest.
    manifest = (
        pull_through.dir
        / "data/docker/registry/v2/repositories"
        / m.under(mirror).split("/", 1)[1]
        / "_manifests/revisions/sha256"
        / digest.split(":", 1)[1]
    )
    assert manifest.is_dir(), why
    print(f"\n--- mirrored resolve, check, pull ---\n{_why(resolved, text, checked, pulled)}")


def _impostor_image(peers: Signed, impostor: Registry, tag: str) -> tuple[str, str]:
    """Push another image as `<impostor>/<repo path>:tag` (trust off), drop it locally;
    returns (its name, its manifest digest)."""
    name = impostor.host + peers.repo[len(origin_host(peers.stack)) :]
    tar = peers.tmp / "impostor.tar"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as archive:
        data = b"not what was signed"
        info = tarfile.TarInfo("content.txt")
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    tar.write_bytes(buf.getvalue())
    peers.ok(peers.dk("import", "--", str(tar), f"{name}:{tag}", config=peers.publisher))
    pushed = peers.ok(peers.dk("push", "--", f"{name}:{tag}", config=peers.publisher, trust=False))
    (line,) = [x for x in pushed.stdout.splitlines() if "digest: sha256:" in x]
    other = line.split("digest: ", 1)[1].split()[0]
    peers.untag(f"{name}:{tag}")
    return name, other


def test_a_mirror_serving_another_digest_is_refused_by_the_engine(
    stack: Stack, tmp_path: Path, impostor: Registry
) -> None:
    peers = Signed(stack, tmp_path, "impostor")
    digest = peers.push_signed("1.0", "origin content")
    peers.untag(f"{peers.repo}:1.0")
    name, other = _impostor_image(peers, impostor, "1.0")
    assert other != digest
    m = Mirrored(peers, tmp_path, {impostor.host: origin_host(stack)})
    ref = f"{name}:1.0"
    before = m.images()

    # 1. The mirror has another image under the tag and nothing under the signed digest.
    refused = m.tp(ref)
    why = _why(refused)
    assert refused.returncode == EXIT_ENGINE, why
    assert f"Pull (1 of 1): {ref}@{digest}" in refused.stdout, why
    assert "Tagging" not in refused.stderr, why
    assert m.images() == before, why
    assert peers.repo_digests(ref) is None, why

    # 2. The mirror answers the signed digest with the other image's manifest (its storage
    # links the verified digest to the other manifest): the engine's digest check refuses it.
    revisions = (
        impostor.dir
        / "data/docker/registry/v2/repositories"
        / name.split("/", 1)[1]
        / "_manifests/revisions/sha256"
    )
    forged = revisions / digest.split(":", 1)[1]
    forged.mkdir(parents=True)
    (forged / "link").write_text(other)
    served = subprocess.run(
        ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "-H",
         "Accept: application/vnd.docker.distribution.manifest.v2+json",
         f"http://{impostor.host}/v2/{name.split('/', 1)[1]}/manifests/{digest}"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert served.stdout == "200", served
    refused = m.tp(ref)
    why = _why(refused)
    assert refused.returncode == EXIT_ENGINE, why
    assert f"manifest verification failed for digest {digest}" in refused.stderr, why
    assert "Tagging" not in refused.stderr, why
    assert m.images() == before, why
    assert peers.repo_digests(ref) is None, why
    assert peers.repo_digests(f"{name}@{other}") is None, why
    print(f"\n--- impostor mirror ---\n{why}")

    # resolve still says what the origin signed (it never reads the mirror).
    resolved = m.tp("resolve", ref)
    assert resolved.stdout.strip() == f"{ref}@{digest}", _why(resolved)


def test_without_the_mapping_the_mirror_name_is_verified_at_the_mirror(
    stack: Stack, tmp_path: Path, pull_through: Registry
) -> None:
    """Without the [mirrors] entry the same reference asks https://<mirror> for trust data
    (and fails): the mapping, not a fallback, is what made the mirrored pull verify."""
    peers = Signed(stack, tmp_path, "unmapped")
    peers.push_signed("1.0", "origin content")
    m = Mirrored(peers, tmp_path, {})
    ref = f"{m.under(pull_through.host)}:1.0"
    refused = m.tp("resolve", ref)
    assert refused.returncode != 0, _why(refused)
    assert f"notary server: TLS handshake with {pull_through.host}" in refused.stderr, _why(refused)
