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

import contextlib
import os
import re
import sys
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import click

from cli.common import run
from trust.errors import InputError, InternalError, UsageError
from trust.version import __version__

# hashlib, json, signal, socket, subprocess, tempfile and threading are imported by the functions
# that use them: this module is imported by every `trustpull` command, `--version` included.

__all__ = [
    "METADATA",
    "PLUGIN_NAME",
    "GlobalOptions",
    "apply_global_options",
    "docker_plugin_group",
    "install_plugin",
    "parse_global_options",
    "plugin_main",
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

# ------------------------------------------------------------------------ global options

#: The docker CLI's global options (cli/flags/options.go) that take a value, by spelling.
_VALUE_FLAGS = {
    "--config": "config",
    "--log-level": "log_level",
    "-l": "log_level",
    "--tlscacert": "tlscacert",
    "--tlscert": "tlscert",
    "--tlskey": "tlskey",
    "--host": "host",
    "-H": "host",
    "--context": "context",
    "-c": "context",
}
_BOOL_FLAGS = {"--debug": "debug", "-D": "debug", "--tls": "tls", "--tlsverify": "tlsverify"}
_SHORT_VALUE = {"l", "H", "c"}
_SHORT_BOOL = {"D"}
_GO_TRUE = {"1", "t", "T", "true", "TRUE", "True"}
_GO_FALSE = {"0", "f", "F", "false", "FALSE", "False"}


@dataclass
class GlobalOptions:
    """The docker CLI global options given before `trustpull` (None: not given)."""

    config: str | None = None
    hosts: list[str] = field(default_factory=list)
    context: str | None = None
    debug: bool = False
    log_level: str | None = None
    tls: bool | None = None
    tlsverify: bool | None = None
    tlscacert: str | None = None
    tlscert: str | None = None
    tlskey: str | None = None


def _set(options: GlobalOptions, name: str, value: str | bool) -> None:
    if name == "host":
        options.hosts.append(str(value))
    else:
        setattr(options, name, value)


def _go_bool(flag: str, text: str) -> bool:
    if text in _GO_TRUE:
        return True
    if text in _GO_FALSE:
        return False
    raise UsageError(f'invalid argument "{text}" for "{flag}" flag: parse error')


def parse_global_options(args: Sequence[str]) -> tuple[GlobalOptions, list[str]]:
    """Split `[GLOBAL OPTIONS] rest...` the way pflag reads the docker CLI's global flags.

    Supports `--flag value`, `--flag=value`, `-H value`, `-Hvalue`, `-Dl debug` and
    `--tlsverify=false`. Stops at the first word that is not an option (the plugin name).
    """
    options = GlobalOptions()
    index = 0
    while index < len(args):
        arg = args[index]
        if arg == "--":
            index += 1
            break
        if not arg.startswith("-") or arg == "-":
            break
        if arg.startswith("--"):
            name, eq, inline = arg.partition("=")
            if name in _VALUE_FLAGS:
                if eq:
                    value = inline
                else:
                    index += 1
                    if index >= len(args):
                        raise UsageError(f"flag needs an argument: {name}")
                    value = args[index]
                _set(options, _VALUE_FLAGS[name], value)
            elif name in _BOOL_FLAGS:
                _set(options, _BOOL_FLAGS[name], _go_bool(name, inline) if eq else True)
            else:
                raise UsageError(f"unknown docker global option: {name}")
            index += 1
            continue
        # A cluster of short flags: booleans first, the last one may take a value.
        letters = arg[1:]
        position = 0
        while position < len(letters):
            letter = letters[position]
            if letter in _SHORT_BOOL:
                _set(options, _BOOL_FLAGS[f"-{letter}"], True)
                position += 1
                continue
            if letter in _SHORT_VALUE:
                value = letters[position + 1 :].removeprefix("=")
                if not value:
                    index += 1
                    if index >= len(args):
                        raise UsageError(f"flag needs an argument: -{letter}")
                    value = args[index]
                _set(options, _VALUE_FLAGS[f"-{letter}"], value)
                break
            raise UsageError(f"unknown docker global option: -{letter}")
        index += 1
    return options, list(args[index:])


def _context_store_meta(docker_config: Path, name: str) -> Path:
    """Where the docker CLI keeps a context's metadata (cli/context/store)."""
    import hashlib

    digest = hashlib.sha256(name.encode()).hexdigest()
    return docker_config / "contexts" / "meta" / digest / "meta.json"


def _current_context(environ: Mapping[str, str], docker_config: Path) -> str | None:
    """docker's resolveContextName when neither --context nor -H is given."""
    import json

    if environ.get("DOCKER_HOST"):
        return None
    if environ.get("DOCKER_CONTEXT"):
        return environ["DOCKER_CONTEXT"]
    try:
        config = json.loads((docker_config / "config.json").read_text())
    except (OSError, ValueError):
        return None
    current = config.get("currentContext") if isinstance(config, dict) else None
    return current if isinstance(current, str) and current else None


def _apply_context(name: str, docker_config: Path, environ: MutableMapping[str, str]) -> None:
    """Point DOCKER_HOST (and the TLS variables) at the docker endpoint of context `name`."""
    import json

    meta_path = _context_store_meta(docker_config, name)
    try:
        meta = json.loads(meta_path.read_text())
    except FileNotFoundError:
        raise InputError(
            f'context "{name}" does not exist (no {meta_path})',
            hint="list contexts with `docker context ls`",
        ) from None
    except (OSError, ValueError) as exc:
        raise InputError(f'context "{name}": cannot read {meta_path}: {exc}') from None
    endpoint = meta.get("Endpoints", {}).get("docker") if isinstance(meta, dict) else None
    host = endpoint.get("Host") if isinstance(endpoint, dict) else None
    if not isinstance(host, str) or not host:
        raise InputError(f'context "{name}" has no docker endpoint ({meta_path})')
    assert isinstance(endpoint, dict)
    tls_dir = meta_path.parent.parent.parent / "tls" / meta_path.parent.name / "docker"
    present = {f for f in ("ca.pem", "cert.pem", "key.pem") if (tls_dir / f).is_file()}
    for variable in ("DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH", "DOCKER_TLS"):
        environ.pop(variable, None)  # a context's endpoint carries its own TLS settings
    if endpoint.get("SkipTLSVerify"):
        raise InputError(
            f'context "{name}" skips TLS verification of the engine, which trustpull does not do'
        )
    if present == {"ca.pem", "cert.pem", "key.pem"}:
        environ["DOCKER_CERT_PATH"] = str(tls_dir)
        environ["DOCKER_TLS_VERIFY"] = "1"
    elif present:
        raise InputError(
            f'context "{name}" has only {", ".join(sorted(present))} in {tls_dir}: trustpull '
            "needs ca.pem, cert.pem and key.pem together for a TLS engine endpoint"
        )
    environ["DOCKER_HOST"] = host


def apply_global_options(options: GlobalOptions, environ: MutableMapping[str, str]) -> None:
    """Turn the docker CLI's global options into the environment trustpull reads.

    `--config` → DOCKER_CONFIG; `-H` → DOCKER_HOST; `--context` (else DOCKER_CONTEXT, else the
    config's `currentContext`, unless DOCKER_HOST is set, as docker decides) → the context's
    docker endpoint; `--tlsverify` and TLS files in one directory → DOCKER_TLS_VERIFY and
    DOCKER_CERT_PATH. `-D` and `-l` are accepted and have no effect.
    """
    from trust.config import docker_config_dir

    if options.config is not None:
        environ["DOCKER_CONFIG"] = options.config
    if len(options.hosts) > 1:
        raise UsageError("specify only one -H")
    if options.hosts and options.context is not None:
        raise UsageError("conflicting options: either specify --host or --context, not both")
    docker_config = docker_config_dir(environ)
    if options.hosts:
        environ["DOCKER_HOST"] = options.hosts[0]
    else:
        name = options.context or _current_context(environ, docker_config)
        if name is not None and name != "default":
            _apply_context(name, docker_config, environ)
    files = {
        name: value
        for name, value in (
            ("ca.pem", options.tlscacert),
            ("cert.pem", options.tlscert),
            ("key.pem", options.tlskey),
        )
        if value is not None
    }
    if files:
        directories = {str(Path(value).parent) for value in files.values()}
        if len(directories) != 1 or any(Path(v).name != n for n, v in files.items()):
            raise UsageError(
                "trustpull reads engine TLS files from one directory as ca.pem, cert.pem and "
                "key.pem (DOCKER_CERT_PATH): give --tlscacert/--tlscert/--tlskey that way"
            )
        environ["DOCKER_CERT_PATH"] = directories.pop()
    if options.tlsverify is True or (files and options.tlsverify is None):
        environ["DOCKER_TLS_VERIFY"] = "1"
    elif options.tlsverify is False:
        environ.pop("DOCKER_TLS_VERIFY", None)
    if options.tls and not environ.get("DOCKER_TLS_VERIFY"):
        raise UsageError(
            "--tls without --tlsverify does not verify the engine: trustpull does not do that; "
            "use --tlsverify"
        )


# ------------------------------------------------------------------------ running as a plugin


def _watch_cli_socket(environ: Mapping[str, str]) -> None:
    """docker's plugin socket: when the docker CLI closes it (it was told to stop), stop too.

    The docker CLI listens on an abstract unix socket named in DOCKER_CLI_PLUGIN_SOCKET and
    closes every connection on its first SIGINT/SIGTERM when its output is not a terminal
    (with a terminal, the signal reaches the plugin's process group directly).
    """
    address = environ.get("DOCKER_CLI_PLUGIN_SOCKET")
    if not address:
        return
    import signal
    import socket
    import threading

    name = "\0" + address[1:] if address.startswith("@") else address
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(name)
    except OSError:
        sock.close()
        return

    def wait() -> None:
        with contextlib.suppress(OSError):
            while sock.recv(1):
                pass
        # A real SIGINT (not _thread.interrupt_main) also interrupts a blocking network read:
        # KeyboardInterrupt in the main thread, click prints "Aborted!", exit 1.
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=wait, name="docker-cli-socket", daemon=True).start()


def _plugin_args(rest: list[str]) -> list[str]:
    """The trustpull arguments from what follows the global options."""
    if rest[:2] == ["help", PLUGIN_NAME]:  # `docker help trustpull [SUB...]`
        return [*rest[2:], "--help"]
    if rest[:1] == [PLUGIN_NAME]:
        return rest[1:]
    if os.environ.get("DOCKER_CLI_PLUGIN_ORIGINAL_CLI_COMMAND"):
        raise UsageError(f"docker ran this plugin as {rest[:1]}, not {PLUGIN_NAME}")
    return rest  # run by hand: `docker-trustpull pull NAME` is `trustpull pull NAME`


#: cobra's ShellCompDirective values (the docker CLI's completion protocol).
_COMPLETE_DEFAULT = 0
_COMPLETE_NO_FILES = 4


def _complete(words: list[str]) -> None:
    """`docker-trustpull __complete trustpull ARGS... PARTIAL` (docker's tab completion):
    subcommand names for the first word, the shell's default completion after it."""
    from cli.main import main

    if len(words) == 1:
        for name in sorted(main.commands):
            command = main.commands[name]
            if name.startswith(words[0]) and not command.hidden:
                click.echo(f"{name}\t{command.get_short_help_str(limit=60)}")
        click.echo(f":{_COMPLETE_NO_FILES}")
    else:
        click.echo(f":{_COMPLETE_DEFAULT}")


def plugin_main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the `docker-trustpull` executable (never returns)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args == [METADATA_COMMAND]:
        import json

        click.echo(json.dumps(METADATA, indent=2))
        sys.exit(0)
    if args[:2] == ["__complete", PLUGIN_NAME]:
        _complete(args[2:] or [""])
        sys.exit(0)

    try:
        options, rest = parse_global_options(args)
        apply_global_options(options, os.environ)
        prepared = _plugin_args(rest)
    except (UsageError, InputError) as error:
        click.echo(f"Error: {error.diagnostics()}", err=True)
        sys.exit(error.exit_code)
    _watch_cli_socket(os.environ)
    from cli.main import main

    main.help = (main.help or "") + PLUGIN_HELP
    main.main(args=prepared or ["--help"], prog_name=f"docker {PLUGIN_NAME}")


PLUGIN_HELP = f"""
\b
As a docker CLI plugin, `docker {PLUGIN_NAME} X` is `trustpull X`, with docker's global
options applied: --config (DOCKER_CONFIG), -H/--host (DOCKER_HOST), --context and the
current context (the context's docker endpoint), --tlsverify; -D and -l are accepted and
ignored. The exit code is trustpull's.
"""


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
        "from cli.plugin import plugin_main; plugin_main()"
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


@dataclass(frozen=True)
class Installed:
    path: Path
    replaced: bool
    on_docker_path: bool


def install_plugin(directory: str | None, environ: Mapping[str, str]) -> Installed:
    """Write the launcher atomically (mode 0755); replace only a launcher of ours."""
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
