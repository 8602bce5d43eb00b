"""The docker CLI plugin's pieces without the docker CLI: argv, global options, install files.

The real docker CLI 28 runs the installed plugin in tests/integration/test_plugin.py.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli.docker_plugin import apply_global_options, parse_global_options
from cli.main import main
from cli.plugin import EXECUTABLE, METADATA, launcher_text
from trust.errors import InputError, UsageError


def _parse(*args: str) -> tuple[dict[str, object], list[str]]:
    options, rest = parse_global_options(list(args))
    return vars(options), rest


def test_global_options_in_every_pflag_spelling() -> None:
    options, rest = _parse(
        "--config", "/c", "-H", "unix:///a.sock", "-Dl", "debug", "--tlsverify=false",
        "trustpull", "pull", "-q", "alpine",
    )  # fmt: skip
    assert rest == ["trustpull", "pull", "-q", "alpine"]
    assert options["config"] == "/c"
    assert options["hosts"] == ["unix:///a.sock"]
    assert options["debug"] is True and options["log_level"] == "debug"
    assert options["tlsverify"] is False
    options, rest = _parse("--config=/d", "-Htcp://h:2376", "--context=prod", "trustpull")
    assert (options["config"], options["hosts"], options["context"]) == (
        "/d",
        ["tcp://h:2376"],
        "prod",
    )
    assert rest == ["trustpull"]


@pytest.mark.parametrize(
    "args", [["--bogus", "trustpull"], ["-x", "trustpull"], ["--config"], ["--tls=maybe"]]
)
def test_bad_global_options_are_usage_errors(args: list[str]) -> None:
    with pytest.raises(UsageError):
        parse_global_options(args)


def _context(config: Path, name: str, host: str, **endpoint: object) -> Path:
    digest = hashlib.sha256(name.encode()).hexdigest()
    meta = config / "contexts" / "meta" / digest
    meta.mkdir(parents=True)
    (meta / "meta.json").write_text(
        json.dumps(
            {"Name": name, "Metadata": {}, "Endpoints": {"docker": {"Host": host, **endpoint}}}
        )
    )
    return config / "contexts" / "tls" / digest / "docker"


def test_config_host_and_context_become_the_environment(tmp_path: Path) -> None:
    env: dict[str, str] = {"HOME": str(tmp_path)}
    options, _ = parse_global_options(["--config", str(tmp_path), "-H", "tcp://x:1", "trustpull"])
    apply_global_options(options, env)
    assert env["DOCKER_CONFIG"] == str(tmp_path) and env["DOCKER_HOST"] == "tcp://x:1"

    _context(tmp_path, "prod", "unix:///prod.sock")
    env = {"DOCKER_CONFIG": str(tmp_path), "DOCKER_TLS_VERIFY": "1"}
    options, _ = parse_global_options(["--context", "prod", "trustpull"])
    apply_global_options(options, env)
    assert env["DOCKER_HOST"] == "unix:///prod.sock"
    assert "DOCKER_TLS_VERIFY" not in env  # the context's endpoint has no TLS


def test_current_context_from_env_then_config_unless_docker_host(tmp_path: Path) -> None:
    _context(tmp_path, "a", "unix:///a.sock")
    _context(tmp_path, "b", "unix:///b.sock")
    (tmp_path / "config.json").write_text(json.dumps({"currentContext": "b"}))
    none = parse_global_options(["trustpull"])[0]
    env = {"DOCKER_CONFIG": str(tmp_path)}
    apply_global_options(none, env)
    assert env["DOCKER_HOST"] == "unix:///b.sock"
    env = {"DOCKER_CONFIG": str(tmp_path), "DOCKER_CONTEXT": "a"}
    apply_global_options(none, env)
    assert env["DOCKER_HOST"] == "unix:///a.sock"
    env = {"DOCKER_CONFIG": str(tmp_path), "DOCKER_HOST": "unix:///mine.sock"}
    apply_global_options(none, env)
    assert env["DOCKER_HOST"] == "unix:///mine.sock"


def test_context_tls_material_is_used_or_refused(tmp_path: Path) -> None:
    tls = _context(tmp_path, "tls", "tcp://engine:2376")
    tls.mkdir(parents=True)
    for name in ("ca.pem", "cert.pem", "key.pem"):
        (tls / name).write_text("x")
    env = {"DOCKER_CONFIG": str(tmp_path)}
    apply_global_options(parse_global_options(["-c", "tls", "trustpull"])[0], env)
    assert env["DOCKER_CERT_PATH"] == str(tls) and env["DOCKER_TLS_VERIFY"] == "1"
    (tls / "key.pem").unlink()
    with pytest.raises(InputError, match=r"needs ca\.pem, cert\.pem and key\.pem"):
        apply_global_options(parse_global_options(["-c", "tls", "trustpull"])[0], env)
    _context(tmp_path, "skip", "tcp://engine:2376", SkipTLSVerify=True)
    with pytest.raises(InputError, match="skips TLS verification"):
        apply_global_options(parse_global_options(["-c", "skip", "trustpull"])[0], env)


def test_context_errors_are_clear(tmp_path: Path) -> None:
    env = {"DOCKER_CONFIG": str(tmp_path)}
    with pytest.raises(InputError, match='context "nope" does not exist'):
        apply_global_options(parse_global_options(["--context", "nope", "trustpull"])[0], env)
    with pytest.raises(UsageError, match="either specify --host or --context"):
        apply_global_options(
            parse_global_options(["-H", "unix:///x", "-c", "a", "trustpull"])[0], env
        )
    with pytest.raises(UsageError, match="only one -H"):
        apply_global_options(parse_global_options(["-H", "a", "-H", "b", "trustpull"])[0], env)
    with pytest.raises(UsageError, match="--tls without --tlsverify"):
        apply_global_options(parse_global_options(["--tls", "trustpull"])[0], {})


def test_tls_files_map_to_one_cert_path(tmp_path: Path) -> None:
    env: dict[str, str] = {}
    options = parse_global_options(
        ["--tlscacert", f"{tmp_path}/ca.pem", "--tlscert", f"{tmp_path}/cert.pem", "trustpull"]
    )[0]
    apply_global_options(options, env)
    assert env == {"DOCKER_CERT_PATH": str(tmp_path), "DOCKER_TLS_VERIFY": "1"}
    with pytest.raises(UsageError, match="one directory"):
        apply_global_options(
            parse_global_options(["--tlscacert", "/a/my-ca.pem", "trustpull"])[0], {}
        )


def _run_launcher(path: Path, *args: str, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(
        [str(path), *args], capture_output=True, text=True, check=False, timeout=60, env=env
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_install_writes_a_marked_launcher_that_answers_metadata(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["docker-plugin", "install", "--dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    path = tmp_path / EXECUTABLE
    assert path.stat().st_mode & 0o777 == 0o755
    assert json.loads(_run_launcher(path, "docker-cli-plugin-metadata")) == METADATA
    assert METADATA["SchemaVersion"] == "0.1.0"
    assert {"Vendor", "Version", "ShortDescription", "URL"} <= METADATA.keys()
    # Installing again replaces our own file.
    again = CliRunner().invoke(main, ["docker-plugin", "install", "--dir", str(tmp_path)])
    assert again.exit_code == 0 and "Replaced" in again.output
    # The launcher runs trustpull itself; run by hand, it takes trustpull's argv.
    assert "Usage: docker trustpull" in _run_launcher(path, "trustpull", "--help")
    assert "Usage: docker trustpull pull" in _run_launcher(path, "help", "trustpull", "pull")


def test_uninstall_removes_only_what_install_wrote(tmp_path: Path) -> None:
    runner = CliRunner()
    path = tmp_path / EXECUTABLE
    path.write_text("#!/bin/sh\necho someone else's plugin\n")
    for command in ("install", "uninstall"):
        result = runner.invoke(main, ["docker-plugin", command, "--dir", str(tmp_path)])
        assert result.exit_code == 3, result.output
        assert "not written by trustpull" in result.output
    assert path.read_text().startswith("#!/bin/sh\necho someone")

    path.unlink()
    assert runner.invoke(main, ["docker-plugin", "install", "--dir", str(tmp_path)]).exit_code == 0
    path.write_text(path.read_text().replace("-P -c", "-c"))  # changed after install
    result = runner.invoke(main, ["docker-plugin", "uninstall", "--dir", str(tmp_path)])
    assert result.exit_code == 3 and "changed since" in result.output
    assert path.exists()

    path.unlink()
    assert runner.invoke(main, ["docker-plugin", "install", "--dir", str(tmp_path)]).exit_code == 0
    result = runner.invoke(main, ["docker-plugin", "uninstall", "--dir", str(tmp_path)])
    assert result.exit_code == 0 and not path.exists()
    result = runner.invoke(main, ["docker-plugin", "uninstall", "--dir", str(tmp_path)])
    assert result.exit_code == 0 and "nothing to do" in result.output


def test_symlink_is_never_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    (tmp_path / EXECUTABLE).symlink_to(victim)
    result = CliRunner().invoke(main, ["docker-plugin", "uninstall", "--dir", str(tmp_path)])
    assert result.exit_code == 3 and victim.read_text() == "keep me"


def test_launcher_quotes_paths_and_pins_this_installation() -> None:
    text = launcher_text("/opt/my venv/bin/python", "/src/it's here")
    assert "'/opt/my venv/bin/python' -P -c" in text
    assert "'/src/it'\"'\"'s here'" in text
    assert text.splitlines()[-1].startswith("# trustpull-docker-plugin-sha256: ")


def test_default_dir_is_docker_config_cli_plugins(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["docker-plugin", "install"], env={"DOCKER_CONFIG": str(tmp_path)}
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "cli-plugins" / EXECUTABLE).is_file()
    assert "WARNING" not in result.output
