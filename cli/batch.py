"""`trustpull check`, `trustpull policy show` and `resolve --write`: commands over many images.

Kept apart from cli/main.py so that file stays small; no trust logic here either: references
are collected by `trust.manifests`, checked by `trust.batch`/`trust.policy`, and rendered here.
Shared plumbing comes from cli/common.py (this module is imported by cli/main.py at its end).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import click

from cli.common import (
    EPILOG,
    common_options,
    load_cli_config,
    notice,
    print_json,
    run,
    service_for,
)

if TYPE_CHECKING:
    from trust.config import Configuration


def _short(digest: str | None) -> str:
    return digest[:19] if digest else "-"


# ------------------------------------------------------------------------------ check


def _collect(
    references: Sequence[str],
    lists: Sequence[str],
    compose: Sequence[str],
    k8s: Sequence[str],
    dockerfiles: Sequence[str],
    build_args: Sequence[str],
) -> list[str]:
    from trust.errors import UsageError
    from trust.manifests import read_text, refs_from_dockerfile, refs_from_list, yaml_sites

    texts = list(references)
    for path in lists:
        text = sys.stdin.read() if path == "-" else read_text(path)
        texts.extend(site.text for site in refs_from_list(text, path))
    for path in compose:
        texts.extend(site.text for site in yaml_sites(read_text(path), path, "compose")[1])
    for path in k8s:
        texts.extend(site.text for site in yaml_sites(read_text(path), path, "k8s")[1])
    args: dict[str, str] = {}
    for item in build_args:
        name, eq, value = item.partition("=")
        if not name or not eq:
            raise UsageError(f"--build-arg {item!r}: expected NAME=VALUE")
        args[name] = value
    for path in dockerfiles:
        texts.extend(site.text for site in refs_from_dockerfile(read_text(path), path, args))
    return texts


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
@click.option("--dockerfile", multiple=True, metavar="FILE", help="Dockerfile: FROM images.")
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
@common_options
def check_command(
    references: Sequence[str],
    lists: Sequence[str],
    compose: Sequence[str],
    k8s: Sequence[str],
    dockerfile: Sequence[str],
    build_args: Sequence[str],
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
        from cli.progress import BatchProgress
        from cli.render import tabwrite
        from trust.batch import check_references
        from trust.service import Verification

        texts = _collect(references, lists, compose, k8s, dockerfile, build_args)
        if not texts:
            raise click.UsageError(
                "no images: give references, -f, --compose, --k8s or --dockerfile"
            )
        service = service_for(load_cli_config(config, offline=offline, policy=policy))
        progress = BatchProgress(
            len(set(texts)), tty=None if output == "text" and not quiet else False
        )

        def done(outcome: Verification) -> None:
            progress.finished(outcome.verdict.upper(), outcome.input, outcome.reason)

        try:
            report = check_references(texts, service, workers=workers, on_done=done)
        finally:
            progress.close()
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
    files: Sequence[str], configuration: Configuration, check_only: bool, output: str
) -> int:
    """`resolve --write FILE...` (and `--check`): pin every image to its verified digest."""
    from trust.errors import PolicyError, TrustpullError, combined_exit_code
    from trust.manifests import pinned_text, read_text, rewrite, yaml_sites

    service = service_for(configuration)
    codes: list[int] = []
    items: list[dict[str, object]] = []
    for path in files:
        text = read_text(path)
        _kind, sites = yaml_sites(text, path)
        changes = {}
        first = len(codes)
        for site in sites:
            item: dict[str, object] = {"file": path, "line": site.line, "input": site.text}
            try:
                verification = service.verify(site.text)
                ref = verification.reference
                assert ref is not None
                if verification.unsigned is not None:
                    notice(f"{site.origin}: {verification.unsigned}; left as it is")
                    item["unsigned"] = verification.unsigned
                    codes.append(0)
                    items.append(item)
                    continue
                resolutions = verification.resolutions
                new = pinned_text(site.text, resolutions[0].tag, resolutions[0].digest)
                item["reference"] = new
                if check_only and (ref.digest is None or new != site.text):
                    raise PolicyError(
                        f"{site.origin}: {site.text} is not pinned to its verified digest "
                        f"(expected {new})"
                    )
                if new != site.text:
                    changes[site] = new
                codes.append(0)
            except TrustpullError as error:
                if check_only and error.exit_code == 4:
                    error = PolicyError(
                        f"{site.origin}: {site.text} is not pinned to a verified digest: "
                        f"{error.message}"
                    )
                elif not error.message.startswith(site.origin):
                    error = error.derive(prefix=f"{site.origin}: ")
                item["error"] = error.to_json()
                codes.append(error.exit_code)
                if output != "json":
                    click.echo(f"Error: {error.diagnostics()}", err=True)
            items.append(item)
        file_ok = combined_exit_code(codes[first:]) == 0
        if changes and not check_only and file_ok:
            new_text = rewrite(text, path, changes)
            target = Path(path)
            temp = target.with_name(f".{target.name}.trustpull-tmp")
            temp.write_text(new_text, encoding="utf-8")
            temp.replace(target)
            if output != "json":
                click.echo(f"{path}: {len(changes)} image(s) pinned to verified digests")
        elif output != "json" and file_ok:
            verb = "pinned to verified digests" if check_only else "already pinned"
            click.echo(f"{path}: every image {verb}")
    if output == "json":
        print_json(items)
    return combined_exit_code(codes)
