"""`trustpull check`, `trustpull policy show` and `resolve --write`: commands over many images.

Kept apart from cli/main.py so that file stays small; no trust logic here either: references
are collected by `trust.manifests`, checked by `trust.batch`/`trust.policy`, and rendered here.
Shared plumbing comes from cli/common.py (this module is imported by cli/main.py at its end).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import click

from cli.common import (
    EPILOG,
    common_options,
    load_cli_config,
    notice,
    output_options,
    print_json,
    run,
    service_for,
)

if TYPE_CHECKING:
    from trust.config import Configuration


def _short(digest: str | None) -> str:
    return digest[:19] if digest else "-"


# ------------------------------------------------------------------------------ check


@click.command("check", epilog=EPILOG)
@click.argument("references", nargs=-1, metavar="[NAME[:TAG|@DIGEST]]...")
@click.option(
    "-f",
    "--file",
    "lists",
    multiple=True,
    metavar="LIST",
    help="File of references, one per line (# comments; - for stdin).",
)
@click.option("--compose", multiple=True, metavar="FILE", help="Compose file: services' image:.")
@click.option("--k8s", multiple=True, metavar="FILE", help="Kubernetes manifests (every pod spec).")
@click.option(
    "--dockerfile",
    multiple=True,
    metavar="FILE",
    help="Dockerfile: FROM, COPY --from and RUN --mount from= images.",
)
@click.option("--env-file", metavar="PATH", help="Compose env file, as docker-compose --env-file.")
@click.option(
    "--build-arg",
    "build_args",
    multiple=True,
    metavar="NAME=VALUE",
    help="Value of a Dockerfile ARG, as docker build --build-arg.",
)
@click.option(
    "--workers",
    "-j",
    type=click.IntRange(1, 64),
    default=8,
    show_default=True,
    help="Repositories verified at the same time.",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress lines; only the table and summary.")
@output_options(("text", "json", "sarif"))
def check_command(
    references: Sequence[str],
    lists: Sequence[str],
    compose: Sequence[str],
    k8s: Sequence[str],
    dockerfile: Sequence[str],
    build_args: Sequence[str],
    env_file: str | None,
    workers: int,
    quiet: bool,
    config: str | None,
    policy: str | None,
    output: str,
    offline: bool,
    verbose: bool,
) -> None:
    """Check every image against the signing policy: verify, apply the matching rule, report.

    Exit 0 only if every image passes; 9 if a rule is not met (5 for a verification failure,
    which wins, then 7, 6, 4, 8, 3). No engine is needed and nothing is pulled.

    \b
    Examples:
      trustpull check --policy policy.toml --compose docker-compose.yml
      trustpull check --k8s deploy/*.yaml --dockerfile Dockerfile -o json
      trustpull check -f images.txt registry.example.com/team/app:1.4
    """

    def body() -> int:
        from trust.pinning import Sources, collect, parse_build_args

        configuration = load_cli_config(config, offline=offline, policy=policy)
        sources = Sources(
            references, lists, compose, k8s, dockerfile, parse_build_args(build_args), env_file
        )
        sites = collect(sources, configuration.settings.limits)
        texts = [site.text for site in sites]
        if not texts:
            raise click.UsageError(
                "no images: give references, -f, --compose, --k8s or --dockerfile"
            )
        # The first repositories' timestamp requests go out now (trust.prefetch), before the
        # verifier is imported; the workers take them as they reach those repositories.
        service = service_for(configuration, texts)
        from cli.progress import BatchProgress
        from cli.render import tabwrite
        from trust.pinning import verify
        from trust.service import Verification

        progress = BatchProgress(
            len(set(texts)), tty=None if output == "text" and not quiet else False
        )

        def done(outcome: Verification) -> None:
            progress.finished(outcome.verdict.upper(), outcome.input, outcome.reason)

        try:
            report = verify(texts, service, workers=workers, on_done=done)
        finally:
            progress.close()
        if output == "sarif":
            from trust.sarif import sarif_log

            print_json(sarif_log(report, sites))
            click.echo(report.summary(), err=True)
            return report.exit_code
        if output == "json":
            print_json([o.to_json() for o in report.outcomes])
            click.echo(report.summary(), err=True)
            return report.exit_code
        rows = [["VERDICT", "IMAGE", "DIGEST", "RULE", "REASON"]]
        for outcome in report.outcomes:
            digest = outcome.resolutions[0].digest if outcome.resolutions else None
            rows.append(
                [
                    outcome.verdict.upper(),
                    outcome.input,
                    _short(digest),
                    outcome.rule.label if outcome.rule else "-",
                    outcome.reason.replace("\n", " "),
                ]
            )
        click.echo(tabwrite(rows, min_width=4), nl=False)
        click.echo(report.summary())
        return report.exit_code

    run(verbose, body)


# ------------------------------------------------------------------------------ policy show


@click.group("policy")
def policy_group() -> None:
    """Inspect the signing policy."""


@policy_group.command("show", epilog=EPILOG)
@click.argument("references", nargs=-1, required=True, metavar="NAME[:TAG|@DIGEST]...")
@common_options
def policy_show(
    references: Sequence[str],
    config: str | None,
    policy: str | None,
    output: str,
    offline: bool,
    verbose: bool,
) -> None:
    """Explain which rule applies to each image, and why (no network).

    \b
    Example:
      trustpull policy show --policy policy.toml registry.example.com/team/app:1.4
    """

    def body() -> int:
        from trust.policy import Policy
        from trust.reference import parse

        configured_policy = load_cli_config(config, offline=offline, policy=policy).policy
        configured = configured_policy is not None
        active = configured_policy if configured_policy is not None else Policy()
        explained = []
        for text in references:
            item = active.explain(parse(text))
            item["input"] = text
            item["policy"] = active.origin if configured else None
            explained.append(item)
        if output == "json":
            print_json(explained)
            return 0
        for item in explained:
            where = item["policy"] or "no policy configured"
            click.echo(f"{item['input']} ({item['reference']})")
            click.echo(f"  policy:   {where}")
            click.echo(f"  rule:     {item['rule']} ({item['origin']})")
            click.echo(f"  scope:    {item['scope']}")
            click.echo(f"  why:      {item['why']}")
            for line in item["requires"]:  # type: ignore[attr-defined]
                click.echo(f"  requires: {line}")
            for other in item["also_matching"]:  # type: ignore[attr-defined]
                click.echo(f"  also matches, less specific: {other['rule']} ({other['scope']})")
        return 0

    run(verbose, body)


# ------------------------------------------------------------------------------ resolve --write


def resolve_write(
    files: Sequence[str],
    configuration: Configuration,
    check_only: bool,
    output: str,
    build_args: Sequence[str] = (),
    env_file: str | None = None,
    override: tuple[str, str] | None = None,
) -> int:
    """`resolve --write FILE...` (and `--check`), `resolve --compose FILE --override OUT`."""
    from trust.pinning import parse_build_args, pin_files, write_override

    service = service_for(configuration)
    if override is not None:
        report = write_override(*override, service, env_file=env_file, notice=notice)
    else:
        args = parse_build_args(build_args)
        report = pin_files(
            files,
            service,
            check_only=check_only,
            build_args=args,
            env_file=env_file,
            notice=notice,
        )
    if output == "json":
        print_json(report.items)
    else:
        for error in report.errors:
            click.echo(f"Error: {error.diagnostics()}", err=True)
        for line in report.lines:
            click.echo(line)
    return report.exit_code
