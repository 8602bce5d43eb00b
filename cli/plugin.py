"""`docker trustpull`: trustpull as a docker CLI plugin, and the commands that install it.

The docker CLI (cli-plugins/manager in docker/cli) finds an executable `docker-trustpull` in
`$DOCKER_CONFIG/cli-plugins` (`~/.docker/cli-plugins`), in the `cliPluginsExtraDirs` of its
config.json, or in the system plugin directories. It calls it twice:

- `docker-trustpull docker-cli-plugin-metadata`, to list it (`docker --help`, `docker info`):
  the answer is one JSON object with `SchemaVersion` "0.1.0" and a `Vendor`;
- `docker-trustpull [GLOBAL OPTIONS] trustpull SUBCOMMAND ...` to run it: the docker CLI passes
  its own argv unchanged (global options included), sets `DOCKER_CLI_PLUGIN_ORIGINAL_CLI_COMMAND`
  and `DOCKER_CLI_PLUGIN_SOCKET` (an abstract unix socket that it closes when it is told to stop)
  and passes the plugin's exit status through as its own. `docker help trustpull [SUB]` arrives
  as `docker-trustpull help trustpull [SUB]`.

`plugin_main` turns the global options into the environment trustpull already reads
(`--config` → DOCKER_CONFIG, `-H/--host` → DOCKER_HOST, `--context` → the context's endpoint) and
runs the ordinary click CLI, so `docker trustpull X` is exactly `trustpull X`.

`trustpull docker-plugin install` writes the executable: a shell script that runs this
interpreter with this installation's `cli` package (so it works from a virtualenv or a source
tree), ending in a marker line with the SHA-256 of everything above it. `uninstall` removes a
file only when that marker is there and still matches, so it never deletes a file that another
tool (or the user) wrote or changed.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

import click

from cli.common import run
from trust.errors import InputError, InternalError
from trust.version import __version__

__all__ = [
    "METADATA",
    "METADATA_COMMAND",
    "PLUGIN_NAME",
    "docker_plugin_group",
    "install_plugin",
    "uninstall_plugin",
]

PLUGIN_NAME = "trustpull"
EXECUTABLE = f"docker-{PLUGIN_NAME}"
METADATA_COMMAND = "docker-cli-plugin-metadata"
#: The project's home page as the plugin metadata names it (shown by `docker info`).
PROJECT_URL = "https://pypi.org/project/trustpull/"

METADATA: dict[str, str] = {
    "SchemaVersion": "0.1.0",
    "Vendor": "trustpull",
    "Version": __version__,
    "ShortDescription": "Verified pulls with Docker Content Trust (Notary v1)",
    "URL": PROJECT_URL,
}

#: The last line of a launcher written by `install`: the SHA-256 of every line above it.
MARKER_PREFIX = "# trustpull-docker-plugin-sha256: "
_MARKER_RE = re.compile(rf"^{re.escape(MARKER_PREFIX)}([0-9a-f]{{64}})\n\Z", re.MULTILINE)

#: docker's own search path after `$DOCKER_CONFIG/cli-plugins` (manager_unix.go).
SYSTEM_PLUGIN_DIRS = (
    "/usr/local/lib/docker/cli-plugins",
    "/usr/local/libexec/docker/cli-plugins",
    "/usr/lib/docker/cli-plugins",
    "/usr/libexec/docker/cli-plugins",
)

# ------------------------------------------------------------------------ install / uninstall


def _shell_quote(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"


def launcher_text(python: str, source_dir: str) -> str:
    """The `docker-trustpull` script: this interpreter, this installation's `cli` package.

    `-P` keeps the current directory off `sys.path` (a `cli/` or `click.py` there must not
    run), and the package directory goes first so this installation's code runs.
    """
    code = (
        "import sys; sys.path.insert(0, sys.argv.pop(1)); "
        "from cli.docker_plugin import plugin_main; plugin_main()"
    )
    body = (
        "#!/bin/sh\n"
        f"# {EXECUTABLE}: the docker CLI plugin of trustpull {__version__} "
        f"(`docker {PLUGIN_NAME} --help`).\n"
        "# Written by `trustpull docker-plugin install`; "
        "`trustpull docker-plugin uninstall` removes it.\n"
        f"exec {_shell_quote(python)} -P -c {_shell_quote(code)} {_shell_quote(source_dir)} "
        '"$@"\n'
    )
    import hashlib

    return body + MARKER_PREFIX + hashlib.sha256(body.encode()).hexdigest() + "\n"


def _ours(data: bytes) -> bool | None:
    """True: written by install and unchanged; False: has the marker but was changed;
    None: not ours at all."""
    try:
        text = data.decode()
    except UnicodeDecodeError:
        return None
    match = _MARKER_RE.search(text)
    if match is None or not text.endswith(match.group(0)):
        return None
    body = text[: match.start()]
    import hashlib

    return hashlib.sha256(body.encode()).hexdigest() == match.group(1)


def plugin_dir(directory: str | None, environ: Mapping[str, str]) -> Path:
    """DIR, else `$DOCKER_CONFIG/cli-plugins`, else `~/.docker/cli-plugins`."""
    from trust.config import docker_config_dir

    if directory is not None:
        return Path(directory)
    return docker_config_dir(environ) / "cli-plugins"


def _check_existing(path: Path) -> bool:
    """Whether `path` holds a launcher we may replace (False: nothing there)."""
    try:
        path.lstat()
    except FileNotFoundError:
        return False
    if path.is_symlink() or not path.is_file():
        raise InputError(f"{path} exists and is not a regular file: not touched")
    verdict = _ours(path.read_bytes())
    if verdict is None:
        raise InputError(
            f"{path} exists and was not written by trustpull: not touched",
            hint="remove or rename it yourself if it should be replaced",
        )
    if verdict is False:
        raise InputError(
            f"{path} was written by trustpull but has been changed since: not touched",
            hint="remove it yourself if it should be replaced",
        )
    return True


def _docker_search_dirs(environ: Mapping[str, str]) -> list[Path]:
    import json

    from trust.config import docker_config_dir

    config = docker_config_dir(environ)
    dirs: list[Path] = []
    try:
        extra = json.loads((config / "config.json").read_text()).get("cliPluginsExtraDirs", [])
        dirs.extend(Path(d) for d in extra if isinstance(d, str))
    except (OSError, ValueError, AttributeError):
        pass
    dirs.append(config / "cli-plugins")
    dirs.extend(Path(d) for d in SYSTEM_PLUGIN_DIRS)
    return dirs


class Installed(NamedTuple):
    path: Path
    replaced: bool
    on_docker_path: bool


def install_plugin(directory: str | None, environ: Mapping[str, str]) -> Installed:
    """Write the launcher atomically (mode 0755); replace only a launcher of ours."""
    import contextlib
    import json
    import subprocess
    import tempfile

    import cli

    target_dir = plugin_dir(directory, environ)
    target_dir.mkdir(parents=True, exist_ok=True)
    path = target_dir / EXECUTABLE
    replaced = _check_existing(path)
    source_dir = str(Path(cli.__file__).resolve().parent.parent)
    if not sys.executable:
        raise InternalError("cannot tell which Python runs trustpull (sys.executable is empty)")
    text = launcher_text(os.path.abspath(sys.executable), source_dir)
    handle, temp = tempfile.mkstemp(dir=target_dir, prefix=f".{EXECUTABLE}.")
    try:
        with os.fdopen(handle, "w") as out:
            out.write(text)
        os.chmod(temp, 0o755)  # noqa: S103  (an executable for every user, as docker's own)
        # Ask the new launcher for its metadata before it replaces anything.
        proc = subprocess.run(
            [temp, METADATA_COMMAND], capture_output=True, text=True, timeout=60, check=False
        )
        try:
            answered = json.loads(proc.stdout) == METADATA
        except ValueError:
            answered = False
        if proc.returncode != 0 or not answered:
            raise InternalError(
                f"the new {EXECUTABLE} did not answer {METADATA_COMMAND} "
                f"(exit {proc.returncode}): {proc.stderr.strip()}; nothing installed"
            )
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    searched = {p.resolve() for p in _docker_search_dirs(environ)}
    return Installed(path, replaced, target_dir.resolve() in searched)


def uninstall_plugin(directory: str | None, environ: Mapping[str, str]) -> Path | None:
    """Remove the launcher if install wrote it and it is unchanged; None if there is none."""
    path = plugin_dir(directory, environ) / EXECUTABLE
    if not _check_existing(path):
        return None
    path.unlink()
    return path


@click.group("docker-plugin")
def docker_plugin_group() -> None:
    """Install or remove `docker trustpull`, trustpull as a docker CLI plugin.

    \b
    After `trustpull docker-plugin install`, `docker trustpull ...` runs this trustpull with
    the docker CLI's global options honoured: --config (DOCKER_CONFIG), -H/--host (DOCKER_HOST),
    --context (the context's docker endpoint), --tlsverify; exit codes pass through.

    \b
    Examples:
      trustpull docker-plugin install
      docker trustpull pull registry.example.com/team/app:1.4
      docker --context prod trustpull resolve registry.example.com/team/app:1.4
      trustpull docker-plugin uninstall
    """


_DIR_HELP = "Plugin directory (default: $DOCKER_CONFIG/cli-plugins, else ~/.docker/cli-plugins)."


@docker_plugin_group.command("install")
@click.option("--dir", "directory", metavar="DIR", help=_DIR_HELP)
def install_command(directory: str | None) -> None:
    """Write the docker-trustpull executable (replaces only one that install wrote)."""

    def body() -> int:
        done = install_plugin(directory, os.environ)
        verb = "Replaced" if done.replaced else "Installed"
        click.echo(f"{verb} {done.path}: try `docker {PLUGIN_NAME} --help`")
        if not done.on_docker_path:
            click.echo(
                f"WARNING: the docker CLI does not look in {done.path.parent}: add it to "
                '"cliPluginsExtraDirs" in its config.json, or install without --dir',
                err=True,
            )
        return 0

    run(False, body)


@docker_plugin_group.command("uninstall")
@click.option("--dir", "directory", metavar="DIR", help=_DIR_HELP)
def uninstall_command(directory: str | None) -> None:
    """Remove the docker-trustpull executable, only if install wrote it and it is unchanged."""

    def body() -> int:
        removed = uninstall_plugin(directory, os.environ)
        if removed is None:
            click.echo(f"No {EXECUTABLE} in {plugin_dir(directory, os.environ)}: nothing to do")
        else:
            click.echo(f"Removed {removed}")
        return 0

    run(False, body)
