"""trustpull's command line: parse options, call the library, render the result as text or JSON.

No trust logic lives here. `trustpull NAME` is `trustpull pull NAME` (the default command); a
repository named like a subcommand is pulled with `trustpull pull NAME`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

import click

from cli.common import (
    EPILOG,
    EXIT_TABLE,
    common_options,
    fail,
    load_cli_config,
    print_json,
    run,
    service_for,
)
from trust.errors import NoTrustDataError, TrustpullError, UsageError, combined_exit_code
from trust.version import __version__

MAIN_HELP = f"""Verified docker pulls with Docker Content Trust (Notary v1).

\b
trustpull NAME[:TAG|@DIGEST] checks the image's signed trust data, maps the tag
to the manifest digest the publisher signed, pulls exactly NAME@sha256:... through
the Docker engine and tags it. Trust is ON unless DOCKER_CONTENT_TRUST is false
(0, f, F, false, FALSE, False) or --disable-content-trust is given.

\b
Examples:
  trustpull registry.example.com/team/app:1.4
  trustpull resolve --output json alpine:3.19
  trustpull inspect --pretty registry.example.com/team/app
  DOCKER_CONTENT_TRUST=0 trustpull alpine       # plain pull, no verification

\b
Exit codes:
{EXIT_TABLE}
"""


class DefaultCommandGroup(click.Group):
    """A group whose unknown first word means `pull` (so `trustpull alpine` pulls)."""

    default_command = "pull"

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h", "--version"):
            args = [self.default_command, *args]
        return super().parse_args(ctx, args)


@click.group(
    cls=DefaultCommandGroup,
    help=MAIN_HELP,
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.version_option(__version__, "--version", prog_name="trustpull")
def main() -> None:
    """Entry point (see MAIN_HELP)."""


# ------------------------------------------------------------------------------------ pull


class TextReporter:
    """docker pull's output: `Pull (i of n)`, progress, `Tagging … as …`."""

    def __init__(self, quiet: bool) -> None:
        from cli.progress import PullProgress

        self.quiet = quiet
        self.progress = PullProgress(sys.stdout, quiet=quiet)

    def default_tag(self) -> None:
        if not self.quiet:
            click.echo("Using default tag: latest")

    def pulling(self, index: int, total: int, pinned_familiar: str) -> None:
        click.echo(f"Pull ({index} of {total}): {pinned_familiar}")

    def event(self, message: dict[str, Any]) -> None:
        self.progress(message)

    def tagging(self, source_familiar: str, target_familiar: str) -> None:
        click.echo(f"Tagging {source_familiar} as {target_familiar}", err=True)

    def notice(self, text: str) -> None:
        from cli.common import notice

        notice(text)


@main.command("pull", epilog=EPILOG)
@click.argument("references", nargs=-1, required=True, metavar="NAME[:TAG|@DIGEST]...")
@click.option("--all-tags", "-a", is_flag=True, help="Pull every signed tag (each by digest).")
@click.option(
    "--disable-content-trust",
    "disable_trust",
    is_flag=True,
    help="Skip image verification (plain pull).",
)
@click.option("--quiet", "-q", is_flag=True, help="Suppress progress output.")
@click.option(
    "--platform", metavar="OS/ARCH", help="Platform to pull, if the image is multi-platform."
)
@click.option(
    "--save-credentials",
    is_flag=True,
    help="Store credentials typed at the login prompt (credential helper, else config.json).",
)
@click.option(
    "--engine-socket",
    metavar="PATH",
    help="The engine's unix socket (e.g. podman's /run/podman/podman.sock); overrides DOCKER_HOST.",
)
@common_options
def pull_command(
    references: Sequence[str],
    all_tags: bool,
    disable_trust: bool,
    quiet: bool,
    platform: str | None,
    save_credentials: bool,
    engine_socket: str | None,
    config: str | None,
    output: str,
    offline: bool,
    verbose: bool,
    policy: str | None,
) -> None:
    """Pull images, verified by their signed trust data unless trust is off.

    \b
    Examples:
      trustpull pull registry.example.com/team/app:1.4
      trustpull pull -a registry.example.com/team/app
      trustpull pull --disable-content-trust alpine:3.19
    """

    def body() -> int:
        configuration = load_cli_config(
            config,
            disable_trust=disable_trust,
            offline=offline,
            policy=policy,
            engine_socket=engine_socket,
        )
        settings = configuration.settings
        if not settings.content_trust:
            click.echo("WARNING: content trust is off: the image is not verified", err=True)
            if configuration.policy is not None:
                click.echo(
                    f"WARNING: --disable-content-trust bypasses the policy in "
                    f"{configuration.policy.origin}",
                    err=True,
                )
        # Trust off: no service (nothing is verified), so the verifier is never imported.
        service = (
            service_for(configuration, references, all_tags=all_tags)
            if settings.content_trust
            else None
        )
        # Imported once the early request is out (trust.prefetch): this overlaps it.
        from trust.engine import preload
        from trust.trusted_pull import NullReporter, pull

        preload()

        results = []
        for text in references:
            reporter = TextReporter(quiet) if output == "text" else NullReporter()
            result = pull(
                text,
                settings,
                reporter=reporter,
                all_tags=all_tags,
                platform=platform,
                service=service,
                privilege=_login_prompt() if sys.stdin.isatty() else None,
            )
            results.append(result)
            if result.unsigned is not None and output == "json":
                click.echo(f"WARNING: {result.unsigned}", err=True)  # text: the reporter said it
            if save_credentials and result.prompted_auth is not None and result.error is None:
                _save_credentials(result, settings)
            if output == "text":
                if result.error is not None:
                    fail(result.error, verbose)
                elif result.reference is not None:
                    ref = result.reference
                    click.echo(ref.name if all_tags else str(ref))
        if output == "json":
            print_json([item for r in results for item in r.to_json()])
        return combined_exit_code(r.exit_code for r in results)

    run(verbose, body)


def _login_prompt() -> Callable[[str, TrustpullError], Any]:
    """docker's privilege function: ask for username and password (not echoed) on a terminal.

    Only passed when stdin is a terminal, so CI gets the auth error at once. Prompts go to
    stderr so that stdout stays the pull's output.
    """

    def ask(key: str, refusal: TrustpullError) -> Any:
        from trust.credentials import RegistryAuth

        click.echo(f"{refusal.message}\nPlease login prior to pull ({key}):", err=True)
        username = click.prompt("Username", err=True, default="", show_default=False).strip()
        if not username:
            return None
        password = click.prompt(
            "Password", hide_input=True, err=True, default="", show_default=False
        )
        if not password:
            return None
        return RegistryAuth(username=username, password=password, serveraddress=key)

    return ask


def _save_credentials(result: Any, settings: Any) -> None:
    """`--save-credentials`: store what was typed at the prompt and accepted by the registry."""
    from trust.credentials import store_registry_auth

    ref = result.reference
    try:
        where = store_registry_auth(
            ref.domain, result.prompted_auth, settings.docker_config, os.environ
        )
    except TrustpullError as error:
        click.echo(f"WARNING: credentials not saved: {error.diagnostics()}", err=True)
        return
    click.echo(f"Login credentials for {ref.domain} saved in {where}", err=True)


# ------------------------------------------------------------------------------------ resolve


@main.command("resolve", epilog=EPILOG)
@click.argument("references", nargs=-1, metavar="NAME[:TAG|@DIGEST]...")
@click.option("--all-tags", "-a", is_flag=True, help="Every signed tag of each repository.")
@click.option(
    "--write",
    "write_files",
    multiple=True,
    metavar="FILE",
    help="Rewrite the images of a compose file, Kubernetes manifests or a Dockerfile to "
    "NAME:TAG@sha256:...",
)
@click.option(
    "--check",
    "check_only",
    is_flag=True,
    help="With --write: change nothing, fail "
    "(exit 9) unless every image is already pinned to its verified digest.",
)
@click.option(
    "--build-arg", "build_args", multiple=True, metavar="NAME=VALUE", help="Dockerfile ARG."
)
@click.option("--env-file", metavar="PATH", help="Compose env file, as docker-compose --env-file.")
@click.option("--compose", "compose_file", metavar="FILE", help="With --override: compose file.")
@click.option("--override", metavar="OUT", help="Write a compose override pinning every image.")
@common_options
def resolve_command(
    references: Sequence[str],
    all_tags: bool,
    write_files: Sequence[str],
    check_only: bool,
    build_args: Sequence[str],
    env_file: str | None,
    compose_file: str | None,
    override: str | None,
    config: str | None,
    output: str,
    offline: bool,
    verbose: bool,
    policy: str | None,
) -> None:
    """Verify and print the pinned reference (NAME:TAG@sha256:...) of each image.

    No engine is needed, and trust is always on here, whatever DOCKER_CONTENT_TRUST says.

    \b
    Examples:
      trustpull resolve alpine:3.19
      trustpull resolve --output json registry.example.com/team/app:1.4
    """

    if write_files or check_only or compose_file or override:
        from cli.batch import resolve_write

        pair = (compose_file, override) if compose_file and override else None
        if (compose_file or override) and (pair is None or write_files or check_only):
            raise click.UsageError("--compose FILE and --override OUT go together, alone")
        if (not write_files and pair is None) or references or all_tags:
            raise click.UsageError("--write FILE... takes no references; --check needs --write")
        run(
            verbose,
            lambda: resolve_write(
                write_files,
                load_cli_config(config, offline=offline, policy=policy),
                check_only,
                output,
                build_args,
                env_file,
                pair,
            ),
        )
    if not references:
        raise click.UsageError("Missing argument 'NAME[:TAG|@DIGEST]...'.")

    def body() -> int:
        configuration = load_cli_config(config, offline=offline, policy=policy)
        service = service_for(configuration, references, all_tags=all_tags)
        from trust.service import verify_many  # after the early request (trust.prefetch)

        results = verify_many(service, references, all_tags=all_tags)
        items: list[dict[str, object]] = []
        codes: list[int] = []
        for result in results:
            error = result.error
            if error is None and result.unsigned is not None:
                # resolve prints verified digests; a repository accepted unsigned has none.
                error = NoTrustDataError(result.unsigned)
            codes.append(error.exit_code if error is not None else 0)
            if error is not None:
                if output == "json":
                    items.append({"input": result.input, "error": error.to_json()})
                else:
                    fail(error, verbose)
                continue
            for resolution in result.resolutions:
                if output == "json":
                    items.append(resolution.to_json())
                else:
                    click.echo(resolution.reference)
        if output == "json":
            print_json(items)
        return combined_exit_code(codes)

    run(verbose, body)


# ------------------------------------------------------------------------------------ inspect


@main.command("inspect", epilog=EPILOG)
@click.argument("references", nargs=-1, required=True, metavar="NAME[:TAG]...")
@click.option(
    "--pretty", is_flag=True, help="Human-friendly tables, as docker trust inspect --pretty."
)
@click.option("--config", "config", metavar="FILE", help="Configuration file (TOML).")
@click.option("--offline", is_flag=True, help="No network: verify the cached trust data only.")
@click.option(
    "--verbose", "-v", is_flag=True, help="Show a failure's low-level detail and traceback."
)
def inspect_command(
    references: Sequence[str], pretty: bool, config: str | None, offline: bool, verbose: bool
) -> None:
    """Show signed tags, signers and administrative keys, as `docker trust inspect` does.

    \b
    Examples:
      trustpull inspect registry.example.com/team/app
      trustpull inspect --pretty registry.example.com/team/app:1.4
    """

    def body() -> int:
        configuration = load_cli_config(config, offline=offline)
        service = service_for(configuration, references, inspect=True)
        # Imported once the early request is out (trust.prefetch).
        from cli.render import render_inspect_pretty
        from trust.reference import parse

        codes: list[int] = []
        documents: list[dict[str, object]] = []
        for text in references:
            try:
                ref = parse(text, default_tag=False)
                if ref.digest is not None:
                    raise UsageError("inspect takes NAME[:TAG], not a digest")
                tag = ref.tag if ref.tag_given else None
                documents.append(service.inspect(ref, text, tag))
                codes.append(0)
            except TrustpullError as error:
                codes.append(error.exit_code)
                fail(error, verbose)
        if pretty:
            click.echo(render_inspect_pretty(documents), nl=False)
        else:
            print_json(documents)
        return combined_exit_code(codes)

    run(verbose, body)


from cli.batch import check_command, policy_group  # noqa: E402  (commands in their own file)
from cli.proxy import proxy_command  # noqa: E402

main.add_command(check_command)
main.add_command(policy_group)
from cli.pin import pin_command  # noqa: E402
from cli.plugin import docker_plugin_group  # noqa: E402

main.add_command(docker_plugin_group)
main.add_command(pin_command)
main.add_command(proxy_command)

if __name__ == "__main__":  # pragma: no cover
    main()
