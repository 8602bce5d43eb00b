"""`trustpull proxy` with real clients: the docker CLI 28, docker-py, docker-compose 1.29.

Each client talks only to the proxy's socket (DOCKER_HOST=unix://…/tp.sock); the engine's state
is then asked of the engine directly. Signed images work as against the engine; unsigned,
tampered-by-tag and refused ones leave nothing new in the engine.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fixtures.stack import DOCKER_CLI, Stack
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


# ----------------------------------------------------------------- the rest of the docker CLI


def _direct_classic_build(world: World, *args: str) -> subprocess.CompletedProcess[str]:
    """`docker build ARGS` with the classic builder on the engine's own socket (no proxy)."""
    return subprocess.run(
        [DOCKER_CLI, "build", *args],
        env=world.env(
            world.client_config, DOCKER_BUILDKIT="0", DOCKER_HOST=f"unix://{world.engine_socket}"
        ),
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def _signed_present(world: World) -> str:
    """Pull the signed 1.0 through the proxy (idempotent); returns NAME:1.0."""
    ref = f"{world.repo}:1.0"
    if world.image(ref) is None:
        proc = world.client("pull", ref)
        assert proc.returncode == 0, _why(proc, world)
    return ref


def test_docker_create_pins_the_signed_digest(world: World) -> None:
    ref = _signed_present(world)
    proc = world.client("create", "--network", "none", ref, "true")
    assert proc.returncode == 0, _why(proc, world)
    cid = proc.stdout.strip()
    inspect = json.loads(world.engine("inspect", cid).stdout)[0]
    assert inspect["Config"]["Image"] == f"{world.repo}@{world.signed_digest}"
    world.engine("rm", "-f", cid)


def test_docker_exec_attach_logs_follow_and_cp(world: World, tmp_path: Path) -> None:
    ref = _signed_present(world)
    proc = world.client("run", "-d", "--network", "none", ref, "sh", "-c", "echo started; sleep 30")
    assert proc.returncode == 0, _why(proc, world)
    cid = proc.stdout.strip()
    try:
        # exec -i: stdin through the hijacked exec start, output back
        proc = world.client("exec", "-i", cid, "cat", input="through the tunnel\n")
        assert proc.returncode == 0, _why(proc, world)
        assert proc.stdout == "through the tunnel\n"
        # logs -f: a long stream, ended by the container's exit
        follow = subprocess.Popen(
            [DOCKER_CLI, "logs", "-f", cid],
            env=world.env(world.client_config, DOCKER_HOST=world.proxy.docker_host),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(1.0)
        world.engine("exec", cid, "sh", "-c", "echo more > /proc/1/fd/1")
        time.sleep(0.5)
        world.engine("kill", cid)
        out, _ = follow.communicate(timeout=30)
        assert "started" in out and "more" in out, out
        # cp both ways
        (tmp_path / "in.txt").write_text("copied in\n")
        proc = world.client("cp", str(tmp_path / "in.txt"), f"{cid}:/in.txt")
        assert proc.returncode == 0, _why(proc, world)
        proc = world.client("cp", f"{cid}:/in.txt", str(tmp_path / "out.txt"))
        assert proc.returncode == 0, _why(proc, world)
        assert (tmp_path / "out.txt").read_text() == "copied in\n"
    finally:
        world.engine("rm", "-f", cid, check=False)


def test_docker_attach(world: World) -> None:
    ref = _signed_present(world)
    proc = world.client("create", "-i", "--network", "none", ref, "cat")
    assert proc.returncode == 0, _why(proc, world)
    cid = proc.stdout.strip()
    try:
        proc = world.client("start", "-a", "-i", cid, input="attached stdin\n")
        assert proc.returncode == 0, _why(proc, world)
        assert proc.stdout == "attached stdin\n"
        # docker attach to a running container
        world.engine("rm", "-f", cid)
        proc = world.client(
            "run", "-d", "--network", "none", ref, "sh", "-c", "sleep 1; echo late; sleep 1"
        )
        cid = proc.stdout.strip()
        proc = world.client("attach", cid, timeout=30)
        assert "late" in proc.stdout, _why(proc, world)
    finally:
        world.engine("rm", "-f", cid, check=False)


def test_docker_tag_verified_image_to_private_name(world: World) -> None:
    ref = _signed_present(world)
    proc = world.client("tag", ref, "myalias:latest")
    assert proc.returncode == 0, _why(proc, world)
    assert world.image("myalias:latest") is not None
    world.rmi("myalias:latest")


def test_docker_save_passes_and_load_is_refused_X36(world: World, tmp_path: Path) -> None:
    ref = _signed_present(world)
    archive = tmp_path / "img.tar"
    proc = world.client("save", "-o", str(archive), ref)
    assert proc.returncode == 0, _why(proc, world)
    assert archive.stat().st_size > 100_000
    before = world.snapshot()
    proc = world.client("load", "-i", str(archive))
    assert proc.returncode == 1, _why(proc, world)
    assert "allow_load" in proc.stderr
    assert world.snapshot() == before


def test_docker_save_pipe_load_with_allow_load_X36(world: World, tmp_path: Path) -> None:
    ref = _signed_present(world)
    loading = world.start_proxy("[proxy]\nallow_load = true\n")
    env = world.env(world.client_config, DOCKER_HOST=loading.docker_host)
    pipeline = subprocess.run(  # noqa: S602 (the pipe is what the case is about)
        f"{DOCKER_CLI} save {ref} | {DOCKER_CLI} load",
        shell=True,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert pipeline.returncode == 0, pipeline
    assert f"Loaded image: {ref}" in pipeline.stdout
    loading.stop()


def test_docker_build_classic_pins_from(world: World, tmp_path: Path) -> None:
    ref = _signed_present(world)
    world.rmi(ref)
    (tmp_path / "Dockerfile").write_text(f"FROM {ref}\nRUN echo built > /built\n")
    name = f"localbuild{time.monotonic_ns()}:1"
    proc = world.client("build", "-t", name, str(tmp_path), DOCKER_BUILDKIT="0")
    assert proc.returncode == 0, _why(proc, world)
    # the base was pulled by digest and tagged first; the build's FROM was the digest
    base = world.image(ref)
    assert base is not None and f"{world.repo}@{world.signed_digest}" in base["RepoDigests"]
    assert f"{world.repo}@{world.signed_digest}" in proc.stdout
    # the built image is in the ledger: it runs by its name
    proc = world.client("run", "--rm", "--network", "none", name, "cat", "/built")
    assert proc.returncode == 0, _why(proc, world)
    assert proc.stdout == "built\n"
    world.rmi(name)


def test_docker_build_the_engine_refuses_early_says_the_engines_error(
    world: World, tmp_path: Path
) -> None:
    """dockerd refuses `--isolation=hyperv` before it reads the context and closes: the
    client reads the engine's own message through the proxy (not a broken pipe), and exits as
    it does against the engine."""
    ref = _signed_present(world)
    (tmp_path / "Dockerfile").write_text(f"FROM {ref}\n")
    (tmp_path / "big.bin").write_bytes(os.urandom(8 * 1024 * 1024))  # more than the buffers
    direct = _direct_classic_build(world, "--isolation", "hyperv", str(tmp_path))
    before = world.snapshot()
    proc = world.client("build", "--isolation", "hyperv", str(tmp_path), DOCKER_BUILDKIT="0")
    assert "Unsupported isolation" in direct.stderr, _why(direct, world)
    assert proc.returncode == direct.returncode, _why(proc, world)
    assert "Unsupported isolation" in proc.stderr and "Broken pipe" not in proc.stderr
    assert world.snapshot() == before


def test_docker_build_unsigned_base_refused_X40(world: World, tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text(f"FROM {world.unsigned_repo}:1.0\nRUN true\n")
    before = world.snapshot()
    proc = world.client("build", "-t", "shouldnot:1", str(tmp_path), DOCKER_BUILDKIT="0")
    assert proc.returncode != 0, _why(proc, world)
    assert "trustpull: build base" in proc.stderr
    assert world.snapshot() == before


def test_docker_py_images_pull_and_containers_run(world: World) -> None:
    import docker

    world.rmi(f"{world.repo}:1.0")
    client = docker.DockerClient(base_url=world.proxy.docker_host, version="auto")
    try:
        image = client.images.pull(world.repo, tag="1.0")
        assert f"{world.repo}@{world.signed_digest}" in image.attrs["RepoDigests"]
        world.rmi(f"{world.repo}:1.0")
        out = client.containers.run(
            f"{world.repo}:1.0", ["cat", "/marker"], remove=True, network_mode="none"
        )
        assert b"signed-1.0" in out
        before = world.snapshot()
        with pytest.raises(docker.errors.APIError) as refused:
            client.containers.run(f"{world.unsigned_repo}:1.0", ["true"], network_mode="none")
        assert "trustpull" in str(refused.value)
        with pytest.raises(docker.errors.APIError):
            client.api.pull(world.unsigned_repo, tag="1.0")
        assert world.snapshot() == before
    finally:
        client.close()


def test_docker_compose_pull_and_up(world: World, tmp_path: Path) -> None:
    world.rmi(f"{world.repo}:1.0")
    compose = tmp_path / "docker-compose.yml"
    compose.write_text(
        "version: '2.4'\n"
        "services:\n"
        "  app:\n"
        f"    image: {world.repo}:1.0\n"
        "    network_mode: none\n"
        "    command: ['cat', '/marker']\n"
    )
    env = world.env(world.client_config, DOCKER_HOST=world.proxy.docker_host)
    argv = ["docker-compose", "-p", f"tp{time.monotonic_ns()}", "-f", str(compose)]
    pull = subprocess.run([*argv, "pull"], env=env, capture_output=True, text=True, timeout=120)
    assert pull.returncode == 0, _why(pull, world)
    assert world.image(f"{world.repo}:1.0") is not None
    world.rmi(f"{world.repo}:1.0")
    up = subprocess.run(
        [*argv, "up", "--abort-on-container-exit"],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert up.returncode == 0, _why(up, world)
    assert "signed-1.0" in up.stdout
    subprocess.run([*argv, "down"], env=env, capture_output=True, timeout=120)
    # an unsigned image is refused by compose too, nothing new in the engine
    compose.write_text(
        compose.read_text().replace(f"{world.repo}:1.0", f"{world.unsigned_repo}:1.0")
    )
    before = world.snapshot()
    up = subprocess.run([*argv, "up"], env=env, capture_output=True, text=True, timeout=120)
    assert up.returncode != 0, _why(up, world)
    assert "trustpull" in up.stdout + up.stderr
    assert world.image(f"{world.unsigned_repo}:1.0") is None
    assert world.snapshot()[0] == before[0]


# ------------------------------------------------- tampered, revoked, policy-refused, allowed


def test_tampered_trust_data_refused_nothing_pulled(world: World, tmp_path: Path) -> None:
    """A trust server that swaps the signed digest of 1.0 for the evil image's (the sandbox's
    man in the middle): refused as a verification failure, the engine never pulls."""
    import base64
    import shutil

    from fixtures.sandbox import _fetch
    from fixtures.server import FixtureServer
    from fixtures.trustproxy import TrustProxy

    assert world.stack.notary is not None and world.stack.dockerd is not None
    base = f"{world.stack.notary.url}/v2/{world.repo}/_trust/tuf/"
    names = ("root.json", "timestamp.json", "snapshot.json", "targets.json")
    files = {name: _fetch(base + name, world.stack.notary.ca_path) for name in names}
    targets = json.loads(files["targets.json"])
    targets["signed"]["targets"]["1.0"]["hashes"]["sha256"] = base64.b64encode(
        bytes.fromhex(world.evil_digest.removeprefix("sha256:"))
    ).decode()
    files["targets.json"] = json.dumps(targets, separators=(",", ":")).encode()
    snapshot = json.loads(files["snapshot.json"])
    for role in ("root", "targets"):
        sha = base64.b64decode(snapshot["signed"]["meta"][role]["hashes"]["sha256"]).hex()
        files[f"{role}.{sha}.json"] = files[f"{role}.json"]
    timestamp = json.loads(files["timestamp.json"])
    sha = base64.b64decode(timestamp["signed"]["meta"]["snapshot"]["hashes"]["sha256"]).hex()
    files[f"snapshot.{sha}.json"] = files["snapshot.json"]
    with FixtureServer({world.repo: files}) as evil:
        config = tmp_path / "victim"
        world.stack.docker_env(config)
        tls = config / "tls" / f"127.0.0.1:{evil.port}"
        tls.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(evil.ca_path, tls / "ca.crt")
        env = world.env(config, DOCKER_CONTENT_TRUST_SERVER=evil.url)
        proxy = TrustProxy(
            world.tmp / f"mitm{time.monotonic_ns()}", str(world.stack.dockerd.socket_path), env
        ).start()
        try:
            world.rmi(f"{world.repo}:1.0", f"{world.repo}:evil")
            before = world.snapshot()
            proc = world.client("pull", f"{world.repo}:1.0", proxy=proxy)
            assert proc.returncode == 1, proc
            assert "trustpull: pull of" in proc.stderr and "[HashMismatch]" in proc.stderr, proc
            proc = world.client(
                "run", "--rm", "--network", "none", f"{world.repo}:1.0", proxy=proxy
            )
            assert proc.returncode == 125, proc
            assert world.snapshot() == before
        finally:
            proxy.stop()


def test_revoked_tag_refused(world: World) -> None:
    ref = f"{world.repo}:gone"
    world.push(ref, "revoked", sign=True)
    world.rmi(ref)
    proc = world.client("pull", ref)
    assert proc.returncode == 0, _why(proc, world)
    world.rmi(ref)
    world.engine("trust", "revoke", "-y", ref, trust=True)
    before = world.snapshot()
    proc = world.client("pull", ref)
    assert proc.returncode == 1 and "[NoSuchTag]" in proc.stderr, _why(proc, world)
    assert world.snapshot() == before


def test_policy_refused_and_policy_accepted_unsigned(world: World, tmp_path: Path) -> None:
    policy = tmp_path / "policy.toml"
    host = world.registry
    plain_path = world.unsigned_repo.split("/", 1)[1]
    app_path = world.repo.split("/", 1)[1]
    policy.write_text(
        "[[rules]]\n"
        'name = "needs-alice"\n'
        f'registry = "{host}"\n'
        f'repository = "{app_path}"\n'
        'signers = ["alice"]\n'
        "\n[[rules]]\n"
        'name = "legacy"\n'
        f'registry = "{host}"\n'
        f'repository = "{plain_path}"\n'
        "allow_unsigned = true\n"
    )
    os.chmod(policy, 0o600)
    proxy = world.start_proxy(policy=policy)
    try:
        world.rmi(f"{world.repo}:1.0")
        before = world.snapshot()
        proc = world.client("pull", f"{world.repo}:1.0", proxy=proxy)
        assert proc.returncode == 1, _why(proc, world)
        assert "refused" in proc.stderr and ("[Policy]" in proc.stderr or "alice" in proc.stderr)
        assert world.snapshot() == before
        # explicitly accepted unsigned: pulled by tag, the rule's warning first
        proc = world.client("pull", f"{world.unsigned_repo}:1.0", proxy=proxy)
        assert proc.returncode == 0, _why(proc, world)
        assert "trustpull: WARNING:" in proc.stdout, proc.stdout
        proc = world.client(
            "run",
            "--rm",
            "--network",
            "none",
            f"{world.unsigned_repo}:1.0",
            "cat",
            "/marker",
            proxy=proxy,
        )
        assert proc.returncode == 0 and "unsigned" in proc.stdout, _why(proc, world)
        assert "WARNING: trustpull:" in proc.stderr, proc.stderr
        verdicts = {d.get("verdict") for d in proxy.decisions()}
        assert "unsigned-accepted" in verdicts and "refused" in verdicts
    finally:
        proxy.stop()
        world.rmi(f"{world.unsigned_repo}:1.0")


def _trustpull_pull(world: World, policy: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`trustpull pull --policy POLICY ARGS…` of this checkout, against the world's stack."""
    import sys

    return subprocess.run(
        [sys.executable, "-m", "cli.main", "pull", "--policy", str(policy), *args],
        env=world.env(world.proxy_config),
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def test_docker_pull_all_tags_pulls_every_signed_tag(world: World) -> None:
    world.rmi(f"{world.repo}:1.0", f"{world.repo}:2.0")
    proc = world.client("pull", "-a", world.repo)
    assert proc.returncode == 0, _why(proc, world)
    one, two = world.image(f"{world.repo}:1.0"), world.image(f"{world.repo}:2.0")
    assert one is not None and two is not None
    assert f"{world.repo}@{world.signed2_digest}" in two["RepoDigests"]
    assert world.image(f"{world.repo}:evil") is None


def test_docker_build_must_not_shadow_a_signed_tag(world: World, tmp_path: Path) -> None:
    ref = _signed_present(world)
    (tmp_path / "Dockerfile").write_text(f"FROM {ref}\nRUN echo shadow > /s\n")
    before = world.snapshot()
    proc = world.client("build", "-t", ref, str(tmp_path), DOCKER_BUILDKIT="0")
    assert proc.returncode != 0 and "must not shadow a signed tag" in proc.stderr, proc
    assert world.snapshot() == before


def test_docker_pull_all_tags_of_an_unsigned_accepted_repository(
    world: World, tmp_path: Path
) -> None:
    """`docker pull -a` of a repository an `allow_unsigned` rule accepts: the proxy forwards
    the all-tags pull (what the engine does with it), and `trustpull pull -a` under the same
    policy asks the engine for the same: both end with every tag, from the service's one
    answer (`unsigned`), with the rule's warning."""

    plain = world.unsigned_repo
    world.push(f"{plain}:2.0", "unsigned two", sign=False)
    policy = tmp_path / "policy.toml"
    policy.write_text(
        "[[rules]]\n"
        'name = "legacy"\n'
        f'registry = "{world.registry}"\n'
        f'repository = "{plain.split("/", 1)[1]}"\n'
        "allow_unsigned = true\n"
    )
    os.chmod(policy, 0o600)
    wanted = {f"{plain}:1.0", f"{plain}:2.0"}

    def plain_tags() -> set[str]:
        return {t for t in world.tags() if t.startswith(f"{plain}:")}

    proxy = world.start_proxy(policy=policy)
    try:
        world.rmi(*wanted)
        assert plain_tags() == set()
        proc = world.client("pull", "-a", plain, proxy=proxy)
        assert proc.returncode == 0, _why(proc, world)
        assert "trustpull: WARNING:" in proc.stdout, proc.stdout
        assert plain_tags() == wanted, proc.stdout
        creates = [d for d in proxy.decisions() if d.get("verdict") == "unsigned-accepted"]
        assert creates and creates[-1].get("reference") == plain, creates
    finally:
        proxy.stop()
        world.rmi(*wanted)
    proc = _trustpull_pull(world, policy, "-a", plain)
    try:
        assert proc.returncode == 0, proc
        assert plain_tags() == wanted, proc
    finally:
        world.rmi(*wanted)


def test_docker_pull_all_tags_and_by_digest_under_a_tag_rule(world: World, tmp_path: Path) -> None:
    """The docker CLI 28 through the proxy and `trustpull pull` under one policy with a rule
    for tag 2.0: refusing 2.0, `docker pull -a` and `docker pull NAME@<2.0's digest>` are
    refused with nothing pulled (a digest never escapes its tag's rule) while 1.0 and its
    digest pull; the repository rule's wrong root pin refuses 2.0 too although the tag rule
    decides it (trustpull pull: exit 5)."""

    host, path = world.repo.split("/", 1)
    scope = f'registry = "{host}"\nrepository = "{path}"\n'
    refuse = tmp_path / "refuse-2.toml"
    refuse.write_text(f'[[rules]]\nname = "no-2"\n{scope}tag = "2.0"\nrefuse = true\n')
    pinned = tmp_path / "pinned.toml"
    pinned.write_text(
        f'[[rules]]\nname = "repo"\n{scope}root_keys = ["{"0" * 64}"]\n\n'
        f'[[rules]]\nname = "two"\n{scope}tag = "2.0"\n'
    )
    for policy in (refuse, pinned):
        os.chmod(policy, 0o600)

    def trustpull(policy: Path, *args: str) -> subprocess.CompletedProcess[str]:
        return _trustpull_pull(world, policy, *args)

    one, two = f"{world.repo}:1.0", f"{world.repo}:2.0"
    proxy = world.start_proxy(policy=refuse)
    try:
        world.rmi(one, two)
        before = world.snapshot()
        for args in (("-a", world.repo), (f"{world.repo}@{world.signed2_digest}",), (two,)):
            proc = world.client("pull", *args, proxy=proxy)
            assert proc.returncode == 1 and "no-2" in proc.stderr, _why(proc, world)
            assert world.snapshot() == before, args
            cli = trustpull(refuse, *args)
            assert cli.returncode == 9 and world.snapshot() == before, cli
        proc = world.client("pull", f"{world.repo}@{world.signed_digest}", proxy=proxy)
        assert proc.returncode == 0, _why(proc, world)
        proc = world.client("pull", one, proxy=proxy)
        assert proc.returncode == 0 and world.image(one) is not None, _why(proc, world)
    finally:
        proxy.stop()
        world.rmi(one, two)
    proxy = world.start_proxy(policy=pinned)
    try:
        before = world.snapshot()
        proc = world.client("pull", two, proxy=proxy)
        assert proc.returncode == 1 and "TrustPin" in proc.stderr, _why(proc, world)
        assert world.snapshot() == before
        cli = trustpull(pinned, two)
        assert cli.returncode == 5 and world.snapshot() == before, cli
    finally:
        proxy.stop()
        world.rmi(two)


def test_docker_build_quiet_runs_by_its_name_X40q(world: World, tmp_path: Path) -> None:
    """`docker build -q` (q=1): the engine's only message is `{"stream":"sha256:<ID>\\n"}`,
    no aux ID and no `Successfully built`; the build must still be in the ledger, so it runs
    by its name through the proxy as it does against the engine. A RUN step of a build that
    is not quiet printing an unverified image's ID must not put that image in the ledger."""
    ref = _signed_present(world)
    (tmp_path / "Dockerfile").write_text(f"FROM {ref}\nRUN echo quiet > /built\n")
    name = f"quietbuild{time.monotonic_ns()}:1"
    try:
        proc = world.client("build", "-q", "-t", name, str(tmp_path), DOCKER_BUILDKIT="0")
        assert proc.returncode == 0, _why(proc, world)
        image = world.image(name)
        assert image is not None and proc.stdout.strip() == image["Id"], proc.stdout
        proc = world.client("run", "--rm", "--network", "none", name, "cat", "/built")
        assert proc.returncode == 0 and proc.stdout == "quiet\n", _why(proc, world)
    finally:
        world.rmi(name)
    world.pull_direct(f"{world.unsigned_repo}:1.0")  # behind the proxy's back
    try:
        evil = world.image(f"{world.unsigned_repo}:1.0")
        assert evil is not None
        (tmp_path / "Dockerfile").write_text(f"FROM {ref}\nRUN echo {evil['Id']}\n")
        proc = world.client("build", str(tmp_path), DOCKER_BUILDKIT="0")
        assert proc.returncode == 0 and f"\n{evil['Id']}\n" in proc.stdout, _why(proc, world)
        before = world.snapshot()
        proc = world.client("run", "--rm", "--network", "none", evil["Id"], "true")
        assert proc.returncode == 125 and "trustpull" in proc.stderr, _why(proc, world)
        assert world.snapshot() == before
    finally:
        world.rmi(f"{world.unsigned_repo}:1.0")
        world.engine("image", "prune", "-f", check=False)


def test_docker_build_with_a_dockerfile_outside_the_context_X40r(
    world: World, tmp_path: Path
) -> None:
    """`docker build -f ../other.Dockerfile ctx` and `docker build -f- ctx < Dockerfile`: the
    CLI adds the Dockerfile to the context as `.dockerfile.<random>` with moby's
    ReplaceFileTarWrapper, which closes the pipe before the tar writer, so the archive ends
    right after that member's data (no padding, no end blocks). Go's reader takes that for
    the end and the engine builds; the proxy refused it 400 [Context]."""
    ref = _signed_present(world)
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "kept.txt").write_text("kept\n")
    outside = tmp_path / "other.Dockerfile"
    outside.write_text(f"FROM {ref}\nCOPY kept.txt /kept\n")
    names = [f"outsidebuild{time.monotonic_ns()}:{n}" for n in (1, 2)]
    try:
        for name, args, stdin in (
            (names[0], ("-f", str(outside)), None),
            (names[1], ("-f-",), outside.read_text()),
        ):
            proc = world.client(
                "build", "-t", name, *args, str(context), DOCKER_BUILDKIT="0", input=stdin
            )
            assert proc.returncode == 0, _why(proc, world)
            assert f"{world.repo}@{world.signed_digest}" in proc.stdout  # pinned as ever
            proc = world.client("run", "--rm", "--network", "none", name, "cat", "/kept")
            assert proc.returncode == 0 and proc.stdout == "kept\n", _why(proc, world)
    finally:
        world.rmi(*names)


def test_docker_build_takes_no_cache_from_an_engine_before_25_0_2_X40s(
    world: World, tmp_path: Path
) -> None:
    """§2.4 step 6: before 25.0.2/24.0.9 (GHSA-xw73-rw38-6vjc) any local image whose parent
    and step config match is a cache hit, so a build through the proxy must run with
    nocache=1. A predefined build arg (`http_proxy`) is kept out of the step's cache key: an
    image built directly on the engine with `http_proxy=EVIL` was the cached result of the
    proxied build of the same Dockerfile, which then ran EVIL under its ledger name."""
    version = json.loads(world.engine("version", "--format", "{{json .Server.Version}}").stdout)
    major, minor, patch = (int(part) for part in version.split("+")[0].split(".")[:3])
    if (major, minor) > (25, 0) or (major, minor, patch) >= (25, 0, 2):
        pytest.skip(f"dockerd {version} takes only local builds as cache candidates")
    ref = _signed_present(world)
    (tmp_path / "Dockerfile").write_text(f'FROM {ref}\nRUN echo "${{http_proxy:-clean}}" > /b\n')
    direct = _direct_classic_build(world, "-q", "--build-arg", "http_proxy=EVIL", str(tmp_path))
    assert direct.returncode == 0, direct
    planted = direct.stdout.strip()
    name = f"nocachebuild{time.monotonic_ns()}:1"
    try:
        proc = world.client(
            "build",
            "-t",
            name,
            "--build-arg",
            "http_proxy=http://proxy.invalid:3128",
            str(tmp_path),
            DOCKER_BUILDKIT="0",
        )
        assert proc.returncode == 0, _why(proc, world)
        assert "Using cache" not in proc.stdout, proc.stdout
        proc = world.client("run", "--rm", "--network", "none", name, "cat", "/b")
        assert proc.returncode == 0, _why(proc, world)
        assert proc.stdout == "http://proxy.invalid:3128\n", proc.stdout
    finally:
        world.rmi(name, planted)


def test_docker_build_cache_from_verified_images_only_X40t(world: World, tmp_path: Path) -> None:
    """§2.4 step 6: each `--cache-from` image must be admitted. A CI's `docker pull N:T ||
    true; docker build --cache-from N:T` of a signed image built through the proxy as it does
    against the engine (it was refused, every cachefrom was); a cache source that is not
    present is skipped, as the engine skips it; one that is present but unverified is 403."""
    import tempfile

    from fixtures.proxies import EngineProxy

    ref = _signed_present(world)
    signed = world.image(ref)
    assert signed is not None
    (tmp_path / "Dockerfile").write_text(f"FROM {ref}\nRUN echo cached > /c\n")
    name = f"cachefrombuild{time.monotonic_ns()}:1"
    short = Path(tempfile.mkdtemp(prefix="tph-", dir="/tmp"))
    recorder = EngineProxy(world.engine_socket, short / "engine.sock").start()
    proxy = world.start_proxy(engine=str(recorder.socket_path))
    try:
        for sources in ((ref,), (ref, "not-present-here:1")):
            args = [arg for source in sources for arg in ("--cache-from", source)]
            proc = world.client(
                "build", "-t", name, *args, str(tmp_path), DOCKER_BUILDKIT="0", proxy=proxy
            )
            assert proc.returncode == 0, _why(proc, world)
            builds = [r for r in recorder.requests if r.path == "/build"]
            # forwarded by the ID checked: a retag before the build changes nothing
            assert builds[-1].query["cachefrom"] == [json.dumps([signed["Id"]])], builds
            proc = world.client("run", "--rm", "--network", "none", name, "cat", "/c", proxy=proxy)
            assert proc.returncode == 0 and proc.stdout == "cached\n", _why(proc, world)
    finally:
        proxy.stop()
        recorder.stop()
        world.rmi(name)
    plain = f"{world.unsigned_repo}:1.0"
    world.pull_direct(plain)  # behind the proxy's back
    try:
        before = world.snapshot()
        proc = world.client(
            "build", "--cache-from", plain, "-t", name, str(tmp_path), DOCKER_BUILDKIT="0"
        )
        assert proc.returncode == 1, _why(proc, world)
        assert f"trustpull: cache source {plain} refused" in proc.stderr, proc.stderr
        assert "[CacheFrom]" in proc.stderr
        assert world.snapshot() == before
    finally:
        world.rmi(plain)
