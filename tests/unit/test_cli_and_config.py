"""The CLI's contract (exit-code table, default command, usage errors) and strict settings."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli.main import main
from trust.config import (
    Limits,
    content_trust_from_env,
    load_config,
    parse_go_bool,
    validate_trust_server_url,
)
from trust.errors import (
    EXIT_CODES,
    ConfigError,
    InputError,
    TrustpullError,
    UsageError,
    combined_exit_code,
)
from trust.service import TrustService
from trust.settings import Settings
from trust.trusted_pull import pull

ROOT = Path(__file__).resolve().parents[2]


def test_readme_exit_code_table_matches_the_error_module() -> None:
    text = (ROOT / "README.md").read_text()
    block = text.split("<!-- exit-codes:start -->")[1].split("<!-- exit-codes:end -->")[0]
    rows = dict(re.findall(r"^\| (\d) \| (.+?) \|$", block, flags=re.M))
    assert {int(k): v for k, v in rows.items()} == EXIT_CODES


def test_help_lists_every_exit_code() -> None:
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    for code, meaning in EXIT_CODES.items():
        assert f"{code}  {meaning}" in result.output


def test_every_error_class_has_a_documented_exit_code() -> None:
    def walk(cls: type[TrustpullError]) -> list[type[TrustpullError]]:
        return [cls, *(c for sub in cls.__subclasses__() for c in walk(sub))]

    for cls in walk(TrustpullError):
        assert cls.exit_code in EXIT_CODES, cls


@pytest.mark.parametrize(
    ("codes", "expected"),
    [([0, 0], 0), ([4, 5], 5), ([3, 8], 8), ([6, 7], 7), ([4, 9, 5], 5), ([3], 3), ([8, 4], 4)],
)
def test_combined_exit_code_severity(codes: list[int], expected: int) -> None:
    assert combined_exit_code(codes) == expected


def test_bad_reference_is_exit_3_without_engine_or_network() -> None:
    result = CliRunner().invoke(main, ["Alpine"])
    assert result.exit_code == 3
    assert "must be lowercase" in result.output


DIGEST = "sha256:" + "a" * 64


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        ("alpine:3.19", "tag can't be used with --all-tags/-a"),
        (f"alpine@{DIGEST}", "a digest can't be used with --all-tags/-a"),
        (f"alpine:3.19@{DIGEST}", "tag can't be used with --all-tags/-a"),
    ],
)
def test_all_tags_with_tag_or_digest_is_one_usage_error_everywhere(
    reference: str, message: str, isolated_home: Path
) -> None:
    """One refusal, one exit code whatever the command and whether trust is on: a tag or a
    digest with -a is usage (2), said in the same words (the trust-off pull never asks the
    service, so this is the one place that proves it raises the service's refusal)."""
    runs = {
        "pull": CliRunner().invoke(main, ["pull", "-a", reference]),
        "pull, DOCKER_CONTENT_TRUST=0": CliRunner().invoke(
            main, ["pull", "-a", reference], env={"DOCKER_CONTENT_TRUST": "0"}
        ),
        "pull --disable-content-trust": CliRunner().invoke(
            main, ["pull", "--disable-content-trust", "-a", reference]
        ),
        "resolve": CliRunner().invoke(main, ["resolve", "-a", reference]),
    }
    for how, result in runs.items():
        assert (how, result.exit_code) == (how, 2)
        assert message in result.output, how
    errors = {
        how: result.output.replace("WARNING: content trust is off: the image is not verified\n", "")
        for how, result in runs.items()
    }
    assert len(set(errors.values())) == 1, errors


@pytest.mark.parametrize("trust_on", [True, False])
def test_all_tags_refusal_comes_before_the_mirror_mapping(trust_on: bool) -> None:
    """The usage refusal is raised before anything else the service does: a mirror prefix that
    names no repository (an InputError, exit 3) does not hide it, with trust on or off."""
    settings = Settings(content_trust=trust_on, mirrors={"mirror.corp:5000/app": "example.com"})
    result = pull("mirror.corp:5000/app:1", settings, all_tags=True)
    assert isinstance(result.error, UsageError)
    assert (result.exit_code, result.error.message) == (2, "tag can't be used with --all-tags/-a")
    with pytest.raises(UsageError, match="tag can't be used with --all-tags/-a"):
        TrustService(settings).verify("mirror.corp:5000/app:1", all_tags=True)


def test_unknown_option_is_usage_error() -> None:
    assert CliRunner().invoke(main, ["pull", "--no-such-option", "alpine"]).exit_code == 2


def test_version() -> None:
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0 and "trustpull" in result.output


def _console_script(*args: str) -> subprocess.CompletedProcess[str]:
    """`trustpull ARGS` through cli.entry (the console script), reporting at exit whether
    click was imported."""
    code = (
        "import atexit, sys\n"
        "atexit.register(lambda: print('click' in sys.modules, file=sys.stderr))\n"
        f"sys.argv = ['trustpull', *{list(args)!r}]\n"
        "from cli.entry import main\n"
        "main()\n"
    )
    root = str(Path(__file__).resolve().parents[2])
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=root, check=False
    )


def test_console_script_answers_version_like_click_without_importing_it() -> None:
    proc = _console_script("--version")
    assert proc.stdout == CliRunner().invoke(main, ["--version"]).output
    assert (proc.returncode, proc.stderr.split()) == (0, ["False"])


@pytest.mark.parametrize("args", [["resolve"], ["inspect"], ["pull", "--no-such-option", "x"]])
def test_console_script_exits_as_click_does(args: list[str]) -> None:
    """The fast exit (os._exit after atexit and a flush) keeps click's output and status."""
    proc = _console_script(*args)
    expected = CliRunner().invoke(main, args, prog_name="trustpull")
    assert proc.returncode == expected.exit_code
    assert proc.stdout + proc.stderr.rsplit("True", 1)[0] == expected.output


@pytest.mark.parametrize(
    ("value", "on"),
    [
        ("", True),
        ("1", True),
        ("yes", True),
        (" 1", True),
        ("0", False),
        ("f", False),
        ("F", False),
        ("false", False),
        ("FALSE", False),
        ("False", False),
        ("no", True),
    ],
)
def test_content_trust_defaults_on(value: str, on: bool) -> None:
    env = {"DOCKER_CONTENT_TRUST": value} if value else {}
    assert content_trust_from_env(env) is on


def test_go_bool() -> None:
    assert parse_go_bool("T") is True and parse_go_bool("0") is False
    assert parse_go_bool("yes") is None


@pytest.mark.parametrize(
    "url",
    [
        "http://notary.test",
        "ftp://notary.test",
        "notary.test",
        "https://user:pw@notary.test",
        "https://notary.test/?x=1",
        "https://notary.test/#frag",
        "https://",
        "file:///etc",
    ],
)
def test_trust_server_url_refused(url: str) -> None:
    with pytest.raises(InputError):
        validate_trust_server_url(url)


def test_trust_server_url_trailing_slash_dropped() -> None:
    assert validate_trust_server_url("https://notary.test:4443/prefix/") == (
        "https://notary.test:4443/prefix"
    )


def test_config_unknown_key_names_file_line_and_key(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("[trust_pinning]\ncerts = {}\ndisable_tofus = true\n")
    with pytest.raises(ConfigError) as info:
        load_config({}, config_file=path)
    assert f"{path}:3" in info.value.message and "disable_tofus" in info.value.message


def test_config_wrong_type_refused(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[limits]\nmax_delegations = "many"\n')
    with pytest.raises(ConfigError) as info:
        load_config({}, config_file=path)
    assert f"{path}:2" in info.value.message


def test_config_unknown_section_refused(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("[trust_pinnin]\n")
    with pytest.raises(ConfigError):
        load_config({}, config_file=path)


def test_config_values_and_precedence(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    key_id = "a" * 64
    path.write_text(
        '[trust_servers]\n"reg.test" = "https://notary.test/"\n'
        f'[trust_pinning]\ncerts = {{ "reg.test/app" = ["{key_id}"] }}\ndisable_tofu = true\n'
        "[limits]\nmax_delegations = 10\nread_timeout = 2\n"
    )
    env = {"DOCKER_CONTENT_TRUST_SERVER": "https://override.test", "DOCKER_CONTENT_TRUST": "0"}
    settings = load_config(env, config_file=path).settings
    assert settings.trust_servers == {"reg.test": "https://notary.test"}
    assert settings.trust_pinning.certs == {"reg.test/app": (key_id,)}
    assert settings.trust_pinning.disable_tofu is True
    assert settings.limits.max_delegations == 10 and settings.limits.read_timeout == 2.0
    assert settings.trust_server_override == "https://override.test"
    assert settings.content_trust is False
    assert load_config(env, config_file=path, content_trust=True).settings.content_trust is True


def test_missing_explicit_config_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        load_config({}, config_file=tmp_path / "absent.toml")


def test_bad_config_via_cli_is_exit_3(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("[limits]\nnope = 1\n")
    result = CliRunner().invoke(main, ["resolve", "--config", str(path), "alpine:3.19"])
    assert result.exit_code == 3


def test_limits_refuse_negative_values() -> None:
    with pytest.raises(ConfigError):
        Limits(max_delegations=-1)


def test_engine_socket_precedence(tmp_path: Path) -> None:
    """`--engine-socket`, then DOCKER_HOST, then `[engine] socket`; None leaves DOCKER_HOST."""
    path = tmp_path / "config.toml"
    path.write_text('[engine]\nsocket = "/run/podman/podman.sock"\n')
    assert load_config({}).settings.engine_host is None
    assert (
        load_config({}, config_file=path).settings.engine_host == "unix:///run/podman/podman.sock"
    )
    docker_host = {"DOCKER_HOST": "unix:///var/run/docker.sock"}
    assert load_config(docker_host, config_file=path).settings.engine_host is None
    chosen = load_config(docker_host, config_file=path, engine_socket="unix:///tmp/e.sock")
    assert chosen.settings.engine_host == "unix:///tmp/e.sock"
    assert load_config({}, engine_socket="/tmp/e.sock").settings.engine_host == "unix:///tmp/e.sock"


@pytest.mark.parametrize("value", ['"podman.sock"', '"tcp://127.0.0.1:2375"', "1"])
def test_engine_socket_in_file_must_be_an_absolute_path(tmp_path: Path, value: str) -> None:
    path = tmp_path / "config.toml"
    path.write_text(f"[engine]\nsocket = {value}\n")
    with pytest.raises(ConfigError) as info:
        load_config({}, config_file=path)
    assert f"{path}:2" in info.value.message and "engine.socket" in info.value.message


def test_engine_socket_option_refuses_a_relative_path() -> None:
    result = CliRunner().invoke(main, ["pull", "--engine-socket", "podman.sock", "alpine:3.19"])
    assert result.exit_code == 3 and "absolute unix socket path" in result.output
