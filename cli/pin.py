"""`trustpull pin`: show a verified repository's root and print or add its pin (trust.pin)."""

from __future__ import annotations

import os
from pathlib import Path

import click

from cli.common import EPILOG, print_json, run
from trust.errors import UsageError

__all__ = ["pin_command"]


def _render(result: object) -> str:
    from trust.pin import PinResult

    assert isinstance(result, PinResult)
    ref = result.reference
    verified = result.verified
    lines: list[str] = []
    if verified.first_use:
        how = " (trust on first use: nothing was cached or pinned)"
    elif not verified.data.root_check.tofu:
        how = " (its root matches a configured pin)"
    else:
        how = " (against its cached root, trusted on first use earlier)"
    servers = sorted({r.trust_server for r in verified.resolutions})
    lines.append(f"Verified {ref.name}{how}")
    if servers:
        lines.append(f"  trust server: {', '.join(servers)}")
    tags = [r.tag for r in verified.resolutions if r.tag]
    if tags:
        lines.append(f"  signed tags:  {', '.join(tags)}")
    count = len(result.certificates)
    for number, cert in enumerate(result.certificates, start=1):
        lines.append(f"Root certificate {number} of {count}:")
        issuer = "(self-signed)" if cert.self_signed else cert.issuer
        lines.append(f"  subject:      {cert.subject}")
        lines.append(f"  issuer:       {issuer}")
        lines.append(
            f"  valid:        {cert.not_before:%Y-%m-%d %H:%M:%S} UTC to "
            f"{cert.not_after:%Y-%m-%d %H:%M:%S} UTC"
        )
        lines.append(f"  key type:     {cert.key_type} ({cert.keytype})")
        lines.append(f"  root.json ID: {cert.key_id}")
        lines.append(f"  canonical ID: {cert.canonical_id}")
    pin = result.pin
    lines.append("")
    if result.already:
        lines.append(f"{result.config} has this pin already:")
    elif result.written:
        lines.append(f"Added to {result.config}:")
    elif result.config is not None:
        lines.append(f"Pin (add it to {result.config}, or run again with --write FILE):")
    else:
        lines.append("Pin (add it to your trustpull config file, or run again with --write FILE):")
    lines.append("")
    lines.extend(pin.toml().rstrip("\n").splitlines())
    lines.append("")
    lines.append(f"Verified again with the pin in force: the root of {ref.name} matches it.")
    if result.first_rules:
        lines.append(
            "Note: this is the first [[rules]] entry of the file: with rules configured, trust "
            "is on whatever DOCKER_CONTENT_TRUST says and an unsigned image is a policy "
            "violation (exit 9)."
        )
    return "\n".join(lines)


@click.command("pin", epilog=EPILOG)
@click.argument("name", metavar="NAME[:TAG]")
@click.option(
    "--write",
    "write",
    metavar="CONFIG",
    help="Add the pin to this configuration file (created if missing; the rest of the file "
    "is kept as it is) once it verified with the pin in force.",
)
@click.option(
    "--rule",
    "rule",
    metavar="NAME",
    help="Pin with a policy rule named NAME ([[rules]] with root_keys) "
    "instead of [trust_pinning.certs].",
)
@click.option(
    "--ca",
    "ca",
    nargs=2,
    type=(click.Path(dir_okay=False), str),
    metavar="FILE PREFIX",
    help="Pin the CA in FILE for every repository whose name starts with PREFIX "
    "([trust_pinning.ca]); refused unless the CA anchors NAME's root.",
)
@click.option(
    "--config",
    "config",
    metavar="FILE",
    help="Configuration file to read (TOML); --write CONFIG reads CONFIG.",
)
@click.option(
    "--output",
    "-o",
    "output",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="Output format.",
)
@click.option(
    "--verbose", "-v", is_flag=True, help="Show a failure's low-level detail and traceback."
)
def pin_command(
    name: str,
    write: str | None,
    rule: str | None,
    ca: tuple[str, str] | None,
    config: str | None,
    output: str,
    verbose: bool,
) -> None:
    """Verify a repository, show its root certificate and key ID, and print or add its pin.

    The repository is verified as `trustpull resolve` does (every signed tag unless a tag is
    given; trust on first use if nothing is cached or pinned, and it says so). The pin is a
    [trust_pinning.certs] entry (GUN = [canonical root key IDs]), a [[rules]] entry with
    root_keys (--rule NAME), or a [trust_pinning.ca] entry (--ca FILE PREFIX). Before anything
    is written the pin must accept the verified root by itself, the edited file must pass the
    strict configuration loader, and the repository must verify again with the pin in force.
    Nothing is written for a repository that does not verify.

    \b
    Examples:
      trustpull pin registry.example.com/team/app
      trustpull pin --write ~/.config/trustpull/config.toml registry.example.com/team/app
      trustpull pin --rule team-app --write policy.toml registry.example.com/team/app
      trustpull pin --ca corp-ca.pem registry.example.com/team/ registry.example.com/team/app
    """

    def body() -> int:
        from trust.pin import pin_repository
        from trust.reference import parse

        if rule is not None and ca is not None:
            raise UsageError("give --rule or --ca, not both")
        if write is not None and config is not None and Path(write) != Path(config):
            raise UsageError("--write CONFIG names the file read and written: drop --config")
        ref = parse(name, default_tag=False)
        if ref.digest is not None:
            raise UsageError("pin takes NAME[:TAG], not a digest")

        def notice(text: str) -> None:
            shown = text if text.startswith("trust on first use") else f"WARNING: {text}"
            click.echo(shown, err=True)

        target = write or config
        result = pin_repository(
            ref,
            config=Path(target) if target else None,
            write=write is not None,
            environ=os.environ,
            rule=rule,
            ca=(Path(ca[0]), ca[1]) if ca is not None else None,
            notice=notice,
        )
        if output == "json":
            print_json(result.to_json())
        else:
            click.echo(_render(result))
        return 0

    run(verbose, body)
