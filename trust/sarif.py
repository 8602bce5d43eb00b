"""`check -o sarif`: the check report as SARIF 2.1.0 for code scanning.

One result per image that is not accepted, located at every file and line it came from
(Dockerfile, compose, Kubernetes, reference list; an image given on the command line has no
location). Rule ids are per failure kind (exit code), each with help text naming the fix.
Accepted images, and images a rule accepts unsigned, give no result.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from trust.manifests import ImageSite

if TYPE_CHECKING:
    from trust.batch import CheckReport

__all__ = ["RULES", "sarif_log"]

SCHEMA = (
    "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
)

#: exit code → (rule id, short description, help text naming the fix, level)
RULES: dict[int, tuple[str, str, str, str]] = {
    3: (
        "TP003-invalid-reference",
        "The image reference cannot be read",
        "Write a valid image reference (NAME[:TAG][@sha256:DIGEST]); variables must resolve.",
        "error",
    ),
    4: (
        "TP004-not-signed",
        "The image is not signed with Docker Content Trust",
        "Use a tag signed in the repository's trust data (`docker trust inspect NAME`), or "
        "have the publisher sign it (`docker trust sign NAME:TAG`); a pinned digest must be "
        "the one signed for its tag: re-pin with `trustpull resolve --write FILE`.",
        "error",
    ),
    5: (
        "TP005-verification-failed",
        "The trust data of the image failed verification (possible attack)",
        "Do not use this image. Investigate the repository's trust data (signatures, expiry, "
        "rollback, root key); re-pin only after the publisher has repaired it.",
        "error",
    ),
    6: (
        "TP006-trust-server-unreachable",
        "The trust server could not be reached",
        "Check the trust server URL, network and TLS settings, then run the check again.",
        "warning",
    ),
    7: (
        "TP007-authentication-refused",
        "Authentication to the registry or trust server was refused",
        "Log in (`trustpull login` or `docker login`) with an account that may read the "
        "repository, then run the check again.",
        "warning",
    ),
    9: (
        "TP009-policy-not-met",
        "The signing policy's rule for the image is not met",
        "Use an image signed as the rule requires (signers, threshold, pins, validity), see "
        "`trustpull policy show NAME`, or change the policy through review.",
        "error",
    ),
}
_OTHER = (
    "TP001-internal-error",
    "The check failed unexpectedly",
    "Run `trustpull check -v` for details and report the problem.",
    "error",
)


def _rule(code: int) -> tuple[str, str, str, str]:
    return RULES.get(code, _OTHER)


def _location(site: ImageSite, base: Path | None) -> dict[str, object]:
    uri = Path(site.path)
    if base is not None:
        try:
            uri = uri.resolve().relative_to(base.resolve())
        except ValueError:
            uri = uri.resolve()
    region: dict[str, object] = {"startLine": max(site.line, 1)}
    region["startColumn"] = site.column + 1
    return {
        "physicalLocation": {
            "artifactLocation": {"uri": uri.as_posix()},
            "region": region,
        }
    }


def sarif_log(
    report: CheckReport,
    sites: Sequence[ImageSite],
    *,
    version: str | None = None,
    base: Path | None = None,
) -> dict[str, object]:
    """The SARIF 2.1.0 log of `report`; `sites` give each reference's file:line. `base`
    makes artifact URIs relative (default: the working directory)."""
    from trust.pinning import outcome_for
    from trust.pinning import reference_key as key_of

    base = Path.cwd() if base is None else base
    if version is None:
        from importlib.metadata import PackageNotFoundError
        from importlib.metadata import version as package_version

        try:
            version = package_version("trustpull")
        except PackageNotFoundError:
            version = "0"
    where: dict[str, list[ImageSite]] = {}
    for site in sites:
        if site.path and site.line:
            where.setdefault(key_of(site.text), []).append(site)
    used: dict[int, int] = {}
    results: list[dict[str, object]] = []
    for key, outcome in outcome_for(report).items():
        if outcome.error is None:
            continue
        code = outcome.error.exit_code
        rule_id, _short, help_text, level = _rule(code)
        if code not in used:
            used[code] = len(used)
        result: dict[str, object] = {
            "ruleId": rule_id,
            "ruleIndex": used[code],
            "level": level,
            "message": {
                "text": f"{outcome.input}: {outcome.error.message.splitlines()[0]} "
                f"(fix: {help_text})"
            },
            "properties": {
                "image": outcome.input,
                "exitCode": code,
                "errorKind": outcome.error.kind,
                "policyRule": outcome.rule.label if outcome.rule else None,
            },
        }
        locations = [_location(site, base) for site in where.get(key, [])]
        if locations:
            result["locations"] = locations
        results.append(result)
    rules = []
    for code in sorted(used, key=used.__getitem__):
        rule_id, short, help_text, level = _rule(code)
        rules.append(
            {
                "id": rule_id,
                "name": rule_id.split("-", 1)[1].title().replace("-", ""),
                "shortDescription": {"text": short},
                "help": {"text": help_text},
                "defaultConfiguration": {"level": level},
                "properties": {"exitCode": code},
            }
        )
    return {
        "$schema": SCHEMA,
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "trustpull",
                        "version": version,
                        "rules": rules,
                    }
                },
                "results": results,
            }
        ],
    }
