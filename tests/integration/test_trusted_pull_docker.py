"""trustpull against the reference client: the docker CLI 28 on trust data made by the real tools.

Every state is built with the real publishers (`docker push` / `docker trust …` with
DOCKER_CONTENT_TRUST=1, and the `notary` client for key rotations) against the session stack's
notary-server and registry. For each state, trustpull (run as a subprocess, like a user would)
and the docker CLI must agree: same digests, same signed tags and signers, same success or
refusal, same `Pull (1 of 1): …` and `Tagging … as …` lines; and both must keep working on one
shared `$DOCKER_CONFIG/trust` directory, in either order.

Layout per test: a *publisher* DOCKER_CONFIG holds the signing keys (the docker CLI and notary
write there) and separate *consumer* DOCKER_CONFIGs hold only the trust cache, so that a change
by the publisher reaches consumers through a real update of a warm cache. A failed assertion
prints the command lines and both outputs of every process involved.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pytest

from fixtures.stack import (
    DOCKER_CLI,
    REPOSITORY_PASSPHRASE,
    ROOT_PASSPHRASE,
    Stack,
    make_image,
)

pytestmark = pytest.mark.integration

#: Exit code for "not signed" (no trust data, tag not signed), from `trustpull --help`.
EXIT_NOT_SIGNED = 4

_DIGEST_RE = re.compile(r"digest: (sha256:[0-9a-f]{64})")


# ------------------------------------------------------------------------------ helpers


def _show(proc: subprocess.CompletedProcess[str]) -> str:
    """One process, printable: command, exit code, both streams."""
    argv = " ".join(str(a) for a in proc.args)
    return (
        f"$ {argv}\n[exit {proc.returncode}]\n"
        f"--- stdout ---\n{proc.stdout.rstrip()}\n--- stderr ---\n{proc.stderr.rstrip()}\n"
    )


def _why(*procs: subprocess.CompletedProcess[str]) -> str:
    """The assertion message: every process that the assertion is about."""
    return "\n" + "\n".join(_show(p) for p in procs)


def _tiny_tar(content: bytes) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("content.txt")
        info.size = len(content)
        info.mode = 0o644
        tar.addfile(info, io.BytesIO(content))
    return buf.getvalue()


class Peers:
    """Both clients against one stack, each command in a chosen DOCKER_CONFIG."""

    def __init__(self, stack: Stack, tmp_path: Path, name: str) -> None:
        assert stack.registry is not None and stack.notary is not None
        self.stack = stack
        self.tmp = tmp_path
        # Unique per test (and per session), so tests never see each other's trust data.
        self.repo = f"{stack.registry.host}/dct/{name}-{time.monotonic_ns()}"
        self.publisher = self.config("publisher")
        self.keys_dir = tmp_path / "keys"
        self.keys_dir.mkdir()

    # -- configuration directories

    def config(self, name: str) -> Path:
        """A fresh DOCKER_CONFIG (cold trust cache) with the notary CA installed."""
        path = self.tmp / f"config-{name}"
        self.stack.docker_env(path)
        return path

    def env(self, config: Path, trust: bool = True) -> dict[str, str]:
        return {
            **os.environ,
            **self.stack.docker_env(config),
            "DOCKER_CONTENT_TRUST": "1" if trust else "0",
            # `python -m cli.main` runs in the test's directory: without this it imported the
            # installed trustpull (another checkout's, e.g. the main one from a worktree).
            "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
        }

    def metadata_dir(self, config: Path) -> Path:
        return config / "trust" / "tuf" / self.repo / "metadata"

    # -- the two clients

    def _run(
        self, argv: Sequence[str], env: dict[str, str], stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            list(argv),
            env=env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            cwd=self.tmp,
        )

    def tp(self, *args: str, config: Path, trust: bool = True) -> subprocess.CompletedProcess[str]:
        """trustpull as a user runs it: a separate process, configured by the environment."""
        return self._run([sys.executable, "-m", "cli.main", *args], self.env(config, trust))

    def dk(
        self, *args: str, config: Path, trust: bool = True, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """The docker CLI 28 (the reference client) against the stack's engine."""
        return self._run([DOCKER_CLI, *args], self.env(config, trust), stdin)

    def ok(self, proc: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
        assert proc.returncode == 0, _why(proc)
        return proc

    # -- publishing (the docker CLI and notary, in the publisher's config)

    def import_image(self, tag: str, content: str) -> str:
        ref = f"{self.repo}:{tag}"
        tar_path = self.tmp / f"img-{time.monotonic_ns()}.tar"
        # The repository name makes the content (so the digest) unique to this test.
        tar_path.write_bytes(_tiny_tar(f"{self.repo} {content}".encode()))
        try:
            self.ok(self.dk("import", "--", str(tar_path), ref, config=self.publisher))
        finally:
            tar_path.unlink(missing_ok=True)
        return ref

    def push_signed(self, tag: str, content: str) -> str:
        """`DOCKER_CONTENT_TRUST=1 docker push`: returns the signed manifest digest."""
        ref = self.import_image(tag, content)
        pushed = self.ok(self.dk("push", "--", ref, config=self.publisher))
        assert f"Successfully signed {ref}" in pushed.stdout, _why(pushed)
        match = _DIGEST_RE.search(pushed.stdout)
        assert match, _why(pushed)
        return match.group(1)

    def add_signer_alice(self) -> None:
        self.ok(
            self.dk(
                "trust",
                "key",
                "generate",
                "alice",
                "--dir",
                str(self.keys_dir),
                config=self.publisher,
            )
        )
        self.ok(
            self.dk(
                "trust",
                "signer",
                "add",
                "--key",
                str(self.keys_dir / "alice.pub"),
                "alice",
                self.repo,
                config=self.publisher,
            )
        )

    def sign(self, tag: str, content: str) -> str:
        """`docker trust sign REPO:TAG` of a fresh local image: returns its digest."""
        ref = self.import_image(tag, content)
        signed = self.ok(self.dk("trust", "sign", ref, config=self.publisher))
        assert f"Successfully signed {ref}" in signed.stdout, _why(signed)
        match = _DIGEST_RE.search(signed.stdout)
        assert match, _why(signed)
        return match.group(1)

    def notary(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        """The notary client on the publisher's trust directory (with docker's passphrases)."""
        assert self.stack.notary is not None
        env = {
            **os.environ,
            "NOTARY_ROOT_PASSPHRASE": ROOT_PASSPHRASE,
            "NOTARY_TARGETS_PASSPHRASE": REPOSITORY_PASSPHRASE,
            "NOTARY_SNAPSHOT_PASSPHRASE": REPOSITORY_PASSPHRASE,
        }
        argv = [
            "notary",
            "-s",
            self.stack.notary.url,
            "-d",
            str(self.publisher / "trust"),
            "--tlscacert",
            str(self.stack.notary.ca_path),
            *args,
        ]
        return self._run(argv, env, stdin)

    # -- the engine

    def repo_digests(self, ref: str) -> list[str] | None:
        """RepoDigests of the engine's image `ref`, or None when the engine has no such image."""
        proc = self.dk(
            "image",
            "inspect",
            "--format",
            "{{json .RepoDigests}}",
            "--",
            ref,
            config=self.publisher,
            trust=False,
        )
        if proc.returncode != 0:
            assert "No such image" in proc.stderr, _why(proc)
            return None
        digests: list[str] = json.loads(proc.stdout)
        return digests

    def untag(self, ref: str) -> None:
        """Remove a local tag (and the image with it, if that was its last tag)."""
        proc = self.dk("rmi", "--", ref, config=self.publisher, trust=False)
        assert proc.returncode == 0 or "No such image" in proc.stderr, _why(proc)
        assert self.repo_digests(ref) is None

    # -- comparisons

    def resolve(self, config: Path, *tags: str) -> dict[str, str]:
        """trustpull resolve -o json of several tags: tag -> digest (all must succeed)."""
        refs = [f"{self.repo}:{tag}" for tag in tags]
        proc = self.ok(self.tp("resolve", "-o", "json", *refs, config=config))
        results: list[dict[str, Any]] = json.loads(proc.stdout)
        assert [r["name"] for r in results] == [self.repo] * len(tags), _why(proc)
        by_tag = {r["tag"]: r["digest"] for r in results}
        for tag, digest in by_tag.items():
            reference = f"{self.repo}:{tag}@{digest}"
            assert reference in {r["reference"] for r in results}, _why(proc)
        return by_tag

    def docker_pull(self, config: Path, tag: str, digest: str) -> subprocess.CompletedProcess[str]:
        """A trusted `docker pull` that must pull `digest` and tag it."""
        proc = self.ok(self.dk("pull", "--", f"{self.repo}:{tag}", config=config))
        assert f"Pull (1 of 1): {self.repo}:{tag}@{digest}" in proc.stdout, _why(proc)
        assert f"Tagging {self.repo}@{digest} as {self.repo}:{tag}" in proc.stderr, _why(proc)
        return proc

    def trustpull_pull(
        self, config: Path, tag: str, digest: str, docker_proc: subprocess.CompletedProcess[str]
    ) -> subprocess.CompletedProcess[str]:
        """A trusted `trustpull REF` that must do what docker did: same lines, same image."""
        ref = f"{self.repo}:{tag}"
        proc = self.tp(ref, config=config)
        why = _why(proc, docker_proc)
        assert proc.returncode == 0, why
        pull_line = f"Pull (1 of 1): {ref}@{digest}"
        tag_line = f"Tagging {self.repo}@{digest} as {ref}"
        assert pull_line in proc.stdout.splitlines(), why
        assert tag_line in proc.stderr.splitlines(), why
        assert pull_line in docker_proc.stdout.splitlines(), why
        assert tag_line in docker_proc.stderr.splitlines(), why
        # docker ends with the full reference on its own line; so should trustpull.
        assert proc.stdout.splitlines()[-1] == docker_proc.stdout.splitlines()[-1] == ref, why
        digests = self.repo_digests(ref)
        assert digests is not None and f"{self.repo}@{digest}" in digests, why
        return proc

    def inspect_agree(self, tp_config: Path, dk_config: Path, *refs: str) -> list[Any]:
        """`inspect` JSON (parsed) and `--pretty` text of both tools are equal; returns the JSON."""
        refs = refs or (self.repo,)
        tp_json = self.tp("inspect", *refs, config=tp_config)
        dk_json = self.dk("trust", "inspect", "--", *refs, config=dk_config)
        why = _why(tp_json, dk_json)
        assert tp_json.returncode == 0 and dk_json.returncode == 0, why
        parsed = json.loads(dk_json.stdout)
        assert json.loads(tp_json.stdout) == parsed, why
        tp_pretty = self.tp("inspect", "--pretty", *refs, config=tp_config)
        dk_pretty = self.dk("trust", "inspect", "--pretty", "--", *refs, config=dk_config)
        why = _why(tp_pretty, dk_pretty)
        assert tp_pretty.returncode == 0 and dk_pretty.returncode == 0, why
        assert tp_pretty.stdout == dk_pretty.stdout, why
        return list(parsed)

    def refused_by_both(
        self, config: Path, tag: str, message: str
    ) -> tuple[subprocess.CompletedProcess[str], ...]:
        """resolve and pull by trustpull exit 4, docker pull fails; all say `message`."""
        ref = f"{self.repo}:{tag}"
        self.untag(ref)
        tp_resolve = self.tp("resolve", ref, config=config)
        tp_pull = self.tp(ref, config=config)
        dk_pull = self.dk("pull", "--", ref, config=config)
        procs = (tp_resolve, tp_pull, dk_pull)
        why = _why(*procs)
        assert tp_resolve.returncode == EXIT_NOT_SIGNED, why
        assert tp_pull.returncode == EXIT_NOT_SIGNED, why
        assert dk_pull.returncode != 0, why
        assert message in dk_pull.stderr, why
        assert message in tp_resolve.stderr and message in tp_pull.stderr, why
        assert "Pull (1 of 1)" not in tp_pull.stdout + dk_pull.stdout, why
        assert "Tagging" not in tp_pull.stderr + dk_pull.stderr, why
        # Nothing was tagged by either client.
        assert self.repo_digests(ref) is None, why
        return procs

    def check_cache(self, config: Path, expect: Iterable[str] = ("root", "targets")) -> None:
        """Cached metadata: valid JSON, mode 0600, no temporary files left behind."""
        meta = self.metadata_dir(config)
        files = sorted(p for p in meta.rglob("*") if p.is_file())
        listing = "\n".join(f"{oct(p.stat().st_mode & 0o777)} {p}" for p in files)
        names = {p.relative_to(meta).as_posix() for p in files}
        for role in expect:
            assert f"{role}.json" in names, listing
        for path in files:
            assert path.suffix == ".json" and not path.name.startswith("."), listing
            assert path.stat().st_mode & 0o777 == 0o600, listing
            document = json.loads(path.read_bytes())
            assert set(document) == {"signed", "signatures"}, f"{path}\n{listing}"


@pytest.fixture()
def peers(stack: Stack, tmp_path: Path, request: pytest.FixtureRequest) -> Peers:
    name = request.node.name.removeprefix("test_").replace("_", "-")[:24]
    return Peers(stack, tmp_path, name)


# -------------------------------------------------------------------------------- states


def test_admin_signed_push(peers: Peers) -> None:
    """State 1: `DOCKER_CONTENT_TRUST=1 docker push`, the tag signed by the repository key."""
    digest = peers.push_signed("1.0", "one")
    consumer = peers.config("consumer")

    assert peers.resolve(consumer, "1.0") == {"1.0": digest}
    peers.check_cache(consumer, ("root", "timestamp", "snapshot", "targets"))

    inspected = peers.inspect_agree(consumer, consumer, peers.repo, f"{peers.repo}:1.0")
    signed = [(t["SignedTag"], t["Digest"], t["Signers"]) for t in inspected[0]["SignedTags"]]
    assert signed == [("1.0", digest.removeprefix("sha256:"), ["Repo Admin"])]

    ref = f"{peers.repo}:1.0"
    peers.untag(ref)
    dk_proc = peers.docker_pull(consumer, "1.0", digest)
    peers.untag(ref)
    peers.trustpull_pull(consumer, "1.0", digest, dk_proc)
    # docker again on the cache trustpull just used.
    peers.docker_pull(consumer, "1.0", digest)

    # The publisher's own directory (private keys, changelists): trustpull reads it, and docker
    # can still sign into it afterwards.
    assert peers.resolve(peers.publisher, "1.0") == {"1.0": digest}
    digest_11 = peers.push_signed("1.1", "one-one")
    assert peers.resolve(peers.publisher, "1.0", "1.1") == {"1.0": digest, "1.1": digest_11}
    peers.check_cache(peers.publisher, ("root", "timestamp", "snapshot", "targets"))


def test_delegated_signer(peers: Peers) -> None:
    """State 2: `docker trust signer add` + `docker trust sign` into targets/releases and alice."""
    digest_1 = peers.push_signed("1.0", "one")
    peers.add_signer_alice()
    digest_2 = peers.sign("2.0", "two")
    consumer = peers.config("consumer")

    assert peers.resolve(consumer, "1.0", "2.0") == {"1.0": digest_1, "2.0": digest_2}
    inspected = peers.inspect_agree(consumer, consumer)
    assert [s["Name"] for s in inspected[0]["Signers"]] == ["alice"]
    signed = {t["SignedTag"]: (t["Digest"], t["Signers"]) for t in inspected[0]["SignedTags"]}
    assert signed == {
        "1.0": (digest_1.removeprefix("sha256:"), ["Repo Admin"]),
        "2.0": (digest_2.removeprefix("sha256:"), ["alice"]),
    }

    peers.untag(f"{peers.repo}:2.0")
    dk_proc = peers.docker_pull(consumer, "2.0", digest_2)
    peers.untag(f"{peers.repo}:2.0")
    peers.trustpull_pull(consumer, "2.0", digest_2, dk_proc)
    peers.check_cache(consumer, ("root", "timestamp", "snapshot", "targets", "targets/releases"))


def test_revoked_tag(peers: Peers) -> None:
    """State 3: `docker trust revoke REPO:2.0` after a delegated signature; caches are warm."""
    digest_1 = peers.push_signed("1.0", "one")
    peers.add_signer_alice()
    digest_2 = peers.sign("2.0", "two")
    tp_cache, dk_cache = peers.config("trustpull"), peers.config("docker")
    assert peers.resolve(tp_cache, "1.0", "2.0") == {"1.0": digest_1, "2.0": digest_2}
    peers.docker_pull(dk_cache, "2.0", digest_2)

    revoked = peers.ok(
        peers.dk("trust", "revoke", "-y", f"{peers.repo}:2.0", config=peers.publisher)
    )
    assert "Successfully deleted signature" in revoked.stdout, _why(revoked)

    peers.refused_by_both(tp_cache, "2.0", "No valid trust data for 2.0")
    peers.refused_by_both(dk_cache, "2.0", "No valid trust data for 2.0")
    assert peers.resolve(tp_cache, "1.0") == {"1.0": digest_1}
    inspected = peers.inspect_agree(tp_cache, dk_cache)
    assert [t["SignedTag"] for t in inspected[0]["SignedTags"]] == ["1.0"]


def test_resigned_tag_moves(peers: Peers) -> None:
    """State 4: the same tag pushed again with trust on, to a new digest, on a shared cache."""
    first = peers.push_signed("1.0", "first")
    shared = peers.config("shared")
    ref = f"{peers.repo}:1.0"

    peers.untag(ref)
    dk_proc = peers.docker_pull(shared, "1.0", first)
    assert peers.resolve(shared, "1.0") == {"1.0": first}

    # Docker updates the shared cache first, then trustpull reads what docker left.
    second = peers.push_signed("1.0", "second")
    assert second != first
    peers.untag(ref)
    dk_proc = peers.docker_pull(shared, "1.0", second)
    assert peers.resolve(shared, "1.0") == {"1.0": second}
    peers.untag(ref)
    peers.trustpull_pull(shared, "1.0", second, dk_proc)

    # trustpull updates the shared cache first, then docker reads what trustpull left.
    third = peers.push_signed("1.0", "third")
    assert third not in (first, second)
    peers.untag(ref)
    tp_proc = peers.tp(ref, config=shared)
    assert tp_proc.returncode == 0, _why(tp_proc)
    assert f"Pull (1 of 1): {ref}@{third}" in tp_proc.stdout.splitlines(), _why(tp_proc)
    digests = peers.repo_digests(ref)
    assert digests is not None and f"{peers.repo}@{third}" in digests, _why(tp_proc)
    peers.untag(ref)
    peers.docker_pull(shared, "1.0", third)
    inspected = peers.inspect_agree(shared, shared)
    assert inspected[0]["SignedTags"][0]["Digest"] == third.removeprefix("sha256:")
    peers.check_cache(shared, ("root", "timestamp", "snapshot", "targets"))


def _root_key_ids(path: Path) -> list[str]:
    root = json.loads((path / "root.json").read_bytes())
    ids: list[str] = root["signed"]["roles"]["root"]["keyids"]
    return ids


def test_key_rotations(peers: Peers) -> None:
    """State 5: `notary key rotate` of targets, snapshot (-r) and root; warm and cold caches."""
    digest = peers.push_signed("1.0", "rotate")
    tp_warm, dk_warm = peers.config("tp-warm"), peers.config("dk-warm")
    assert peers.resolve(tp_warm, "1.0") == {"1.0": digest}
    peers.docker_pull(dk_warm, "1.0", digest)
    before = json.loads(
        peers.ok(peers.dk("trust", "inspect", "--", peers.repo, config=dk_warm)).stdout
    )
    root_before = _root_key_ids(peers.metadata_dir(tp_warm))

    rotations = (("targets",), ("snapshot", "-r"), ("root",))
    for rotation in rotations:
        rotated = peers.notary("key", "rotate", peers.repo, *rotation, stdin="yes\n")
        assert rotated.returncode == 0, _why(rotated)
        assert f"Successfully rotated {rotation[0]} key" in rotated.stdout, _why(rotated)
        label = "-".join(rotation)
        # A warm cache from before the rotation, for each tool.
        assert peers.resolve(tp_warm, "1.0") == {"1.0": digest}, label
        peers.docker_pull(dk_warm, "1.0", digest)
        # And a cold cache, for each tool.
        assert peers.resolve(peers.config(f"tp-cold-{label}"), "1.0") == {"1.0": digest}, label
        peers.docker_pull(peers.config(f"dk-cold-{label}"), "1.0", digest)

    # The root rotation reached trustpull's warm cache for real: it now trusts the new root,
    # the very bytes docker's warm cache holds (the notary client's own cache is not updated
    # by `key rotate`, so it is no reference here).
    root_after = _root_key_ids(peers.metadata_dir(tp_warm))
    assert root_after != root_before
    tp_root = (peers.metadata_dir(tp_warm) / "root.json").read_bytes()
    dk_root = (peers.metadata_dir(dk_warm) / "root.json").read_bytes()
    assert tp_root == dk_root

    # Docker signs with the rotated targets key; both clients follow, from their warm caches.
    digest_2 = peers.push_signed("2.0", "after-rotation")
    assert peers.resolve(tp_warm, "1.0", "2.0") == {"1.0": digest, "2.0": digest_2}
    peers.untag(f"{peers.repo}:2.0")
    dk_proc = peers.docker_pull(dk_warm, "2.0", digest_2)
    peers.untag(f"{peers.repo}:2.0")
    peers.trustpull_pull(tp_warm, "2.0", digest_2, dk_proc)
    # trustpull on the directory the notary client rotated in.
    assert peers.resolve(peers.publisher, "2.0") == {"2.0": digest_2}

    after = peers.inspect_agree(tp_warm, dk_warm)
    admin_before = {k["Name"]: k["Keys"] for k in before[0]["AdministrativeKeys"]}
    admin_after = {k["Name"]: k["Keys"] for k in after[0]["AdministrativeKeys"]}
    assert admin_after["Root"] != admin_before["Root"]
    assert admin_after["Repository"] != admin_before["Repository"]
    peers.check_cache(tp_warm, ("root", "timestamp", "snapshot", "targets"))


def test_unknown_tag(peers: Peers) -> None:
    """State 6a: a tag that was never signed in a signed repository."""
    peers.push_signed("1.0", "known")
    consumer = peers.config("consumer")
    peers.refused_by_both(consumer, "9.9", "No valid trust data for 9.9")


def test_unsigned_repository_and_trust_off(peers: Peers) -> None:
    """State 6b: a plain push (no trust data): refused with trust on, pulled with trust off."""
    ref = f"{peers.repo}:1.0"
    digest = make_image(peers.stack, ref, f"{peers.repo} unsigned".encode())
    consumer = peers.config("consumer")
    assert peers.stack.notary is not None
    message = (
        f"remote trust data does not exist for {peers.repo}: "
        f"127.0.0.1:{peers.stack.notary.port} does not have trust data for {peers.repo}"
    )
    peers.refused_by_both(consumer, "1.0", message)

    tp_inspect = peers.tp("inspect", peers.repo, config=consumer)
    dk_inspect = peers.dk("trust", "inspect", "--", peers.repo, config=consumer)
    why = _why(tp_inspect, dk_inspect)
    assert tp_inspect.returncode == EXIT_NOT_SIGNED and dk_inspect.returncode != 0, why
    assert json.loads(tp_inspect.stdout) == json.loads(dk_inspect.stdout) == [], why

    # Trust off: both do a plain pull by tag.
    dk_pull = peers.dk("pull", "--", ref, config=consumer, trust=False)
    peers.untag(ref)
    tp_pull = peers.tp(ref, config=consumer, trust=False)
    why = _why(tp_pull, dk_pull)
    assert dk_pull.returncode == 0 and tp_pull.returncode == 0, why
    assert "Pull (1 of 1)" not in tp_pull.stdout + dk_pull.stdout, why
    assert tp_pull.stdout.splitlines()[-1] == dk_pull.stdout.splitlines()[-1] == ref, why
    digests = peers.repo_digests(ref)
    assert digests is not None and f"{peers.repo}@{digest}" in digests, why


def test_shared_cache_both_orders(peers: Peers) -> None:
    """State 7: one DOCKER_CONFIG used by both tools, docker first and trustpull first."""
    digest_1 = peers.push_signed("1.0", "one")
    peers.add_signer_alice()
    digest_2 = peers.sign("2.0", "two")
    expected = {"1.0": digest_1, "2.0": digest_2}
    roles = ("root", "timestamp", "snapshot", "targets", "targets/releases")

    # docker first (cold), then trustpull, then docker again.
    docker_first = peers.config("docker-first")
    peers.untag(f"{peers.repo}:2.0")
    dk_proc = peers.docker_pull(docker_first, "2.0", digest_2)
    peers.check_cache(docker_first, roles)
    peers.untag(f"{peers.repo}:2.0")
    peers.trustpull_pull(docker_first, "2.0", digest_2, dk_proc)
    assert peers.resolve(docker_first, "1.0", "2.0") == expected
    peers.check_cache(docker_first, roles)
    peers.docker_pull(docker_first, "1.0", digest_1)
    peers.check_cache(docker_first, roles)

    # trustpull first (cold), then docker, then trustpull again.
    trustpull_first = peers.config("trustpull-first")
    assert peers.resolve(trustpull_first, "1.0", "2.0") == expected
    peers.check_cache(trustpull_first, ("root", "timestamp", "snapshot", "targets"))
    peers.untag(f"{peers.repo}:1.0")
    dk_proc = peers.docker_pull(trustpull_first, "1.0", digest_1)
    peers.docker_pull(trustpull_first, "2.0", digest_2)
    peers.check_cache(trustpull_first, roles)
    peers.untag(f"{peers.repo}:1.0")
    peers.trustpull_pull(trustpull_first, "1.0", digest_1, dk_proc)
    peers.inspect_agree(trustpull_first, trustpull_first)
    peers.check_cache(trustpull_first, roles)
