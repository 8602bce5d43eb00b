"""`docker trustpull`: the installed plugin run by the real docker CLI 28 against the stack.

The docker CLI finds the plugin, asks its metadata, lists it in `docker --help`, runs it with
its own argv (global options first) and passes its exit code through; trustpull must honour
`--config`, `-H` and `--context` as the docker CLI does.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from cli.plugin import METADATA
from fixtures.stack import DOCKER_CLI, Stack
from tests.integration._signed import Signed, _why

pytestmark = pytest.mark.integration


@pytest.fixture()
def signed(stack: Stack, tmp_path: Path, request: pytest.FixtureRequest) -> Signed:
    name = request.node.name.removeprefix("test_").replace("_", "-")[:24]
    return Signed(stack, tmp_path, name)


def _install(signed: Signed, config: Path) -> Path:
    """`trustpull docker-plugin install` into `$DOCKER_CONFIG/cli-plugins` of `config`."""
    proc = signed.ok(signed.tp("docker-plugin", "install", config=config))
    path = config / "cli-plugins" / "docker-trustpull"
    assert f"Installed {path}" in proc.stdout, _why(proc)
    return path


def test_docker_cli_is_28(signed: Signed) -> None:
    proc = signed.ok(
        signed.docker("version", "--format", "{{.Client.Version}}", config=signed.publisher)
    )
    assert proc.stdout.startswith("28."), _why(proc)


def test_listed_with_metadata_and_help(signed: Signed) -> None:
    config = signed.config("consumer")
    _install(signed, config)
    listing = signed.ok(signed.docker("--help", config=config))
    line = next(
        (x for x in listing.stdout.splitlines() if x.strip().startswith("trustpull*")), None
    )
    assert line is not None and METADATA["ShortDescription"] in line, _why(listing)
    info = signed.ok(
        signed.docker("info", "--format", "{{json .ClientInfo.Plugins}}", config=config)
    )
    plugins = {p["Name"]: p for p in json.loads(info.stdout)}
    assert "Err" not in plugins["trustpull"], _why(info)
    for key, value in METADATA.items():
        assert plugins["trustpull"][key] == value, _why(info)

    for argv in (["trustpull", "--help"], ["help", "trustpull"], ["trustpull"]):
        proc = signed.docker(*argv, config=config)
        assert proc.returncode == 0, _why(proc)
        assert "Usage: docker trustpull [OPTIONS] COMMAND" in proc.stdout, _why(proc)
        assert "Exit codes:" in proc.stdout and "docker-plugin" in proc.stdout, _why(proc)
    for argv in (["trustpull", "pull", "--help"], ["help", "trustpull", "pull"]):
        proc = signed.docker(*argv, config=config)
        assert proc.returncode == 0, _why(proc)
        assert "Usage: docker trustpull pull [OPTIONS] NAME" in proc.stdout, _why(proc)

    # Tab completion: the docker CLI asks the plugin (cobra's __complete protocol).
    completed = signed.ok(signed.docker("__complete", "trustpull", "p", config=config))
    names = [line.split("\t")[0] for line in completed.stdout.splitlines()]
    assert names == ["pin", "policy", "proxy", "pull", ":4"], _why(completed)

    removed = signed.ok(signed.tp("docker-plugin", "uninstall", config=config))
    listing = signed.ok(signed.docker("--help", config=config))
    assert "trustpull*" not in listing.stdout, _why(removed, listing)


def test_pull_resolve_and_exit_codes(signed: Signed) -> None:
    digest = signed.push_signed("1.0", "one")
    ref = f"{signed.repo}:1.0"
    config = signed.config("consumer")
    _install(signed, config)

    pulled = signed.docker("trustpull", "pull", ref, config=config)
    assert pulled.returncode == 0, _why(pulled)
    assert f"Pull (1 of 1): {ref}@{digest}" in pulled.stdout.splitlines(), _why(pulled)
    assert f"Tagging {signed.repo}@{digest} as {ref}" in pulled.stderr.splitlines(), _why(pulled)
    assert "trust on first use" in pulled.stderr, _why(pulled)
    digests = signed.repo_digests(ref)
    assert digests is not None and f"{signed.repo}@{digest}" in digests, _why(pulled)

    resolved = signed.docker("trustpull", "resolve", ref, config=config)
    assert resolved.returncode == 0 and resolved.stdout == f"{ref}@{digest}\n", _why(resolved)

    # Exit codes pass through the docker CLI unchanged.
    unsigned = signed.docker("trustpull", "resolve", f"{signed.repo}:nope", config=config)
    assert unsigned.returncode == 4, _why(unsigned)
    assert "No valid trust data for nope" in unsigned.stderr, _why(unsigned)
    usage = signed.docker("trustpull", "resolve", "--bogus", ref, config=config)
    assert usage.returncode == 2, _why(usage)

    pins = signed.tmp / "wrong-pin.toml"
    pins.write_text(f'[trust_pinning.certs]\n"{signed.repo}" = ["{"0" * 64}"]\n')
    fresh = signed.config("fresh")
    _install(signed, fresh)
    refused = signed.docker("trustpull", "pull", "--config", str(pins), ref, config=fresh)
    assert refused.returncode == 5, _why(refused)
    assert "unable to match any certificates to trust_pinning config" in refused.stderr
    assert "Pull (1 of 1)" not in refused.stdout, _why(refused)


def test_global_options_config_host_and_context(signed: Signed) -> None:
    digest = signed.push_signed("2.0", "two")
    ref = f"{signed.repo}:2.0"
    pinned = f"{ref}@{digest}\n"
    assert signed.stack.dockerd is not None
    engine = signed.stack.docker_host

    # --config: the plugin and the notary CA live only in `chosen`; DOCKER_CONFIG names a bare
    # directory (no CA: a trustpull that ignored --config would fail TLS, exit 6).
    chosen = signed.config("chosen")
    _install(signed, chosen)
    bare = signed.tmp / "bare"
    bare.mkdir()
    proc = signed.docker(
        "--config", str(chosen), "trustpull", "resolve", ref,
        config=chosen, extra={"DOCKER_CONFIG": str(bare)},
    )  # fmt: skip
    assert proc.returncode == 0 and proc.stdout == pinned, _why(proc)
    assert signed.metadata_dir(chosen).is_dir() and not (bare / "trust").exists(), _why(proc)

    # -H beats a DOCKER_HOST that points nowhere.
    nowhere = {"DOCKER_HOST": f"unix://{signed.tmp}/nowhere.sock"}
    proc = signed.docker("trustpull", "pull", "-q", ref, config=chosen, extra=nowhere)
    assert proc.returncode == 8, _why(proc)  # control: the engine is unreachable
    proc = signed.docker("-H", engine, "trustpull", "pull", "-q", ref, config=chosen, extra=nowhere)
    assert proc.returncode == 0, _why(proc)

    # --context NAME and the current context (`docker context use`), DOCKER_HOST unset.
    no_host = {"DOCKER_HOST": None}
    signed.ok(
        signed.docker(
            "context", "create", "tpctx", "--docker", f"host={engine}", config=chosen, extra=no_host
        )
    )
    signed.untag(ref)
    proc = signed.docker(
        "--context", "tpctx", "trustpull", "pull", ref, config=chosen, extra=no_host
    )
    assert proc.returncode == 0 and f"Pull (1 of 1): {ref}@{digest}" in proc.stdout, _why(proc)
    signed.ok(signed.docker("context", "use", "tpctx", config=chosen, extra=no_host))
    signed.untag(ref)
    proc = signed.docker("trustpull", "pull", ref, config=chosen, extra=no_host)
    assert proc.returncode == 0, _why(proc)
    assert signed.repo_digests(ref) is not None, _why(proc)

    proc = signed.docker(
        "--context", "nope", "trustpull", "resolve", ref, config=chosen, extra=no_host
    )
    assert proc.returncode != 0 and "nope" in proc.stderr, _why(proc)
    proc = signed.docker(
        "-H", engine, "--context", "tpctx", "trustpull", "resolve", ref, config=chosen
    )
    assert proc.returncode != 0 and "--context" in proc.stderr, _why(proc)


def test_interrupted_docker_cli_stops_the_plugin(signed: Signed) -> None:
    """SIGINT to the docker CLI (output not a terminal): it closes the plugin socket, and the
    plugin, blocked on a trust server that never answers, stops at once instead of waiting."""
    config = signed.config("consumer")
    _install(signed, config)
    with socket.socket() as silent:  # accepts connections, never says a word
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        limits = signed.tmp / "slow.toml"
        limits.write_text("[limits]\nconnect_timeout = 60.0\nread_timeout = 60.0\n")
        env = signed.run_env(config, {"DOCKER_CONTENT_TRUST_SERVER": f"https://127.0.0.1:{port}"})
        argv = [DOCKER_CLI, "trustpull", "resolve", "--config", str(limits), f"{signed.repo}:1"]
        proc = subprocess.Popen(
            argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        try:
            silent.settimeout(30)
            conn, _ = silent.accept()  # the plugin is now waiting for the TLS handshake
            began = time.monotonic()
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=20)
            conn.close()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert time.monotonic() - began < 10, err
    assert proc.returncode == 1 and "Aborted!" in err, f"[exit {proc.returncode}]\n{out}\n{err}"
