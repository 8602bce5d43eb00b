"""Plumbing shared by every command: options, settings, error-to-exit-code mapping, JSON.

The commands (cli/main.py, cli/batch.py) only parse options, call the library and render.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import click

from trust.errors import EXIT_CODES, TrustpullError

if TYPE_CHECKING:
    from trust.config import Configuration
    from trust.service import TrustService

EXIT_TABLE = "\n".join(f"  {code}  {meaning}" for code, meaning in EXIT_CODES.items())
EPILOG = f"\b\nExit codes:\n{EXIT_TABLE}"


def fail(error: TrustpullError, verbose: bool) -> None:
    click.echo(f"Error: {error.diagnostics()}", err=True)
    if verbose and error.detail:
        click.echo(f"detail: {error.detail}", err=True)
    if verbose and error.__cause__ is not None:
        import traceback

        traceback.print_exception(error.__cause__, file=sys.stderr)


def run(verbose: bool, body: Callable[[], int]) -> None:
    """Run a command body; map errors to exit codes. Unexpected exceptions are exit 1."""
    try:
        code = body()
    except TrustpullError as error:
        fail(error, verbose)
        code = error.exit_code
    except click.exceptions.Exit:
        raise
    except click.ClickException:
        raise
    except Exception as error:  # the one place a bug becomes exit 1 with a message
        click.echo(f"Error: internal error: {type(error).__name__}: {error}", err=True)
        if verbose:
            import traceback

            traceback.print_exc()
        code = 1
    sys.exit(code)


def load_cli_config(
    config: str | None,
    *,
    disable_trust: bool = False,
    offline: bool = False,
    policy: str | None = None,
    engine_socket: str | None = None,
) -> Configuration:
    """The settings and policy for this run: command line over environment over file."""
    from trust.config import load_config

    return load_config(
        os.environ,
        config_file=config,
        content_trust=False if disable_trust else None,
        offline=offline,
        policy_file=policy,
        engine_socket=engine_socket,
    )


def notice(text: str) -> None:
    """The library's notices on stderr: trust-on-first-use lines as they are, others as
    warnings."""
    plain = text.startswith(("trust on first use", "first use of", "mirror: "))
    click.echo(text if plain else f"WARNING: {text}", err=True)


def service_for(
    configuration: Configuration,
    early: Sequence[str] = (),
    *,
    all_tags: bool = False,
    inspect: bool = False,
) -> TrustService:
    """The one verification service every command asks.

    `early`: the references the command will verify (`inspect`: inspect); their first trust
    server requests go out now, from a thread, while the verifier is imported (trust.prefetch:
    only when bytes are fetched moves).
    """
    prefetch = None
    if early:
        from trust.prefetch import Prefetch

        prefetch = Prefetch(configuration.settings, configuration.policy)
        prefetch.start(early, all_tags=all_tags, inspect=inspect)
    from trust.service import TrustService

    return TrustService(
        configuration.settings, configuration.policy, notice=notice, prefetch=prefetch
    )


def print_json(value: object) -> None:
    import json

    click.echo(json.dumps(value, indent=4))


F = TypeVar("F", bound=Callable[..., Any])


def common_options(func: F) -> F:
    """The options every verifying command takes, with `-o text|json`."""
    return output_options(("text", "json"))(func)


def output_options(outputs: tuple[str, ...]) -> Callable[[F], F]:
    """The common options with the given `-o` formats (`check` adds sarif)."""

    def decorate(func: F) -> F:
        return _add_options(func, outputs)

    return decorate


def _add_options(func: F, outputs: tuple[str, ...]) -> F:
    options = [
        click.option("--config", "config", metavar="FILE", help="Configuration file (TOML)."),
        click.option(
            "--output",
            "-o",
            "output",
            type=click.Choice(list(outputs)),
            default="text",
            show_default=True,
            help="Output format.",
        ),
        click.option(
            "--offline", is_flag=True, help="No network: verify the cached trust data only."
        ),
        click.option(
            "--verbose", "-v", is_flag=True, help="Show a failure's low-level detail and traceback."
        ),
        click.option(
            "--policy",
            "policy",
            metavar="FILE",
            help="Policy rules file ([[rules]]); replaces the config file's rules.",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func
