"""Deployment files against verified digests: collect (`check`), pin in place (`resolve
--write`), gate (`--check`), and pin compose without editing it (`resolve --compose --override`).

Every verification goes through `verify()` (one call into the verification service, for all the
images of a run at once, concurrently); the rest is reading files (`trust.manifests`) and
writing them safely (`trust.safewrite`). Nothing here prints: each front end renders the
returned `PinReport` (or `Collected` for `check`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from trust.errors import InputError, PolicyError, TrustpullError, combined_exit_code
from trust.manifests import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_SITES,
    ImageSite,
    decode,
    image_site,
    load_yaml,
    pinned_text,
    read_text,
    refs_from_dockerfile,
    refs_from_list,
    rewrite,
    yaml_sites,
)

if TYPE_CHECKING:
    from trust.batch import CheckReport
    from trust.service import TrustService, Verification
    from trust.settings import Limits

__all__ = [
    "PinReport",
    "Sources",
    "collect",
    "compose_environment",
    "compose_images",
    "outcome_for",
    "pin_files",
    "reference_key",
    "verify",
    "write_override",
]

Notice = Callable[[str], None]


# ------------------------------------------------------------------------------ verification


def verify(
    texts: Sequence[str],
    service: TrustService,
    *,
    workers: int = 8,
    on_done: Callable[[Verification], None] | None = None,
) -> CheckReport:
    """Every reference through the one verification service (never raises)."""
    from trust.batch import check_references

    return check_references(texts, service, workers=workers, on_done=on_done)


def reference_key(text: str) -> str:
    from trust.reference import parse

    try:
        return str(parse(text))
    except TrustpullError:
        return f"invalid:{text}"


def outcome_for(report: CheckReport) -> dict[str, Verification]:
    """Verifications by normalised reference (what `check_references` de-duplicates by)."""
    return {reference_key(outcome.input): outcome for outcome in report.outcomes}


def _located(error: TrustpullError, origin: str) -> TrustpullError:
    """A new error of the same kind whose message starts with the file:line (never mutated)."""
    if error.message.startswith(origin):
        return error
    return error.derive(prefix=f"{origin}: ")


def _limits(limits: Limits | None) -> tuple[int, int]:
    if limits is None:
        return DEFAULT_MAX_BYTES, DEFAULT_MAX_SITES
    return limits.manifest_max_bytes, limits.manifest_max_sites


# ------------------------------------------------------------------------------ compose


def compose_environment(
    compose_file: str, env_file: str | None = None, environ: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The interpolation mapping compose 1.29 uses (compose/config/environment.py):
    `--env-file` (relative to the working directory, must exist) or else `.env` beside the
    compose file (optional), read with python-dotenv exactly as compose calls it, then the
    process environment on top (the environment wins)."""
    from dotenv import dotenv_values

    if env_file:
        path = os.path.join(os.getcwd(), env_file)
        if not os.path.isfile(path):
            raise InputError(f"{env_file}: env file not found")
    else:
        path = os.path.join(os.path.dirname(os.path.abspath(compose_file)), ".env")
        if not os.path.isfile(path):
            path = ""
    values: dict[str, str] = {}
    if path:
        try:
            loaded = dotenv_values(dotenv_path=path, encoding="utf-8-sig", interpolate=True)
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"{path}: cannot read the env file: {exc}") from None
        values = {k: v for k, v in loaded.items() if v is not None}
    values.update(os.environ if environ is None else environ)
    return values


@dataclass(frozen=True)
class ServiceImage:
    service: str
    site: ImageSite | None  # None: the service builds its image (build:), nothing is pulled
    builds: bool = False
    profiles: tuple[str, ...] = ()


def _services(doc: Any, path: str) -> Any:
    services = doc.get("services") if hasattr(doc, "get") else None
    if not hasattr(services, "items"):
        raise InputError(f"{path}: a compose file needs a services: mapping")
    return services


def compose_images(
    path: str, env: Mapping[str, str], *, max_bytes: int = DEFAULT_MAX_BYTES
) -> tuple[Any, list[ServiceImage]]:
    """(the loaded document, each service's image as compose 1.29 resolves it: own `image:`,
    else through `extends` (same file or `file:`), interpolated with `env`)."""
    docs = load_yaml(read_text(path, max_bytes), path, max_bytes)
    if len(docs) != 1:
        raise InputError(f"{path}: a compose file is one YAML document")
    #: absolute path → (the path as the user or the `extends` spelled it, its services)
    cache: dict[str, tuple[str, Any]] = {os.path.abspath(path): (path, _services(docs[0], path))}

    def lookup(key: str, name: str, depth: int) -> ServiceImage:
        file, services = cache[key]
        service = services.get(name)
        if not hasattr(service, "get"):
            raise InputError(f"{file}: service {name!r} is not a mapping")
        profiles = tuple(str(p) for p in (service.get("profiles") or ()))
        if "image" in service:
            site = image_site(service, "image", file, env)
            return ServiceImage(name, site, "build" in service, profiles)
        if "build" in service:
            return ServiceImage(name, None, True, profiles)
        if "extends" not in service:
            raise InputError(f"{file}: service {name!r} has neither image: nor build:")
        if depth > 8:
            raise InputError(f"{file}: extends nested more than 8 deep at {name!r}")
        extends = service["extends"]
        target_key = key
        if isinstance(extends, str):
            target = extends
        elif hasattr(extends, "get") and isinstance(extends.get("service"), str):
            target = extends["service"]
            if extends.get("file") is not None:
                other = os.path.join(os.path.dirname(file), str(extends["file"]))
                target_key = os.path.abspath(other)
                if target_key not in cache:
                    others = load_yaml(read_text(other, max_bytes), other, max_bytes)
                    if len(others) != 1:
                        raise InputError(f"{other}: a compose file is one YAML document")
                    cache[target_key] = (other, _services(others[0], other))
        else:
            raise InputError(f"{file}: service {name!r}: extends must name a service")
        if target not in cache[target_key][1]:
            raise InputError(f"{file}: service {name!r} extends unknown service {target!r}")
        base = lookup(target_key, target, depth + 1)
        return ServiceImage(name, base.site, base.builds, profiles)

    main = os.path.abspath(path)
    found = [lookup(main, str(name), 0) for name in cache[main][1]]
    return docs[0], found


# ------------------------------------------------------------------------------ collection


@dataclass(frozen=True)
class Sources:
    """What `check` reads images from."""

    references: Sequence[str] = ()
    lists: Sequence[str] = ()
    compose: Sequence[str] = ()
    k8s: Sequence[str] = ()
    dockerfiles: Sequence[str] = ()
    build_args: Mapping[str, str] = field(default_factory=dict)
    env_file: str | None = None


def parse_build_args(items: Sequence[str]) -> dict[str, str]:
    from trust.errors import UsageError

    args: dict[str, str] = {}
    for item in items:
        name, eq, value = item.partition("=")
        if not name or not eq:
            raise UsageError(f"--build-arg {item!r}: expected NAME=VALUE")
        args[name] = value
    return args


def collect(
    sources: Sources, limits: Limits | None = None, *, stdin: Callable[[], str] | None = None
) -> list[ImageSite]:
    """Every image site, each with its file:line (command-line references have line 0)."""
    max_bytes, max_sites = _limits(limits)
    sites = [ImageSite(text, "", 0, kind="command-line") for text in sources.references]
    for path in sources.lists:
        if path == "-":
            import sys

            text = stdin() if stdin is not None else sys.stdin.read()
        else:
            text = read_text(path, max_bytes)
        sites.extend(refs_from_list(text, path))
    for path in sources.compose:
        env = compose_environment(path, sources.env_file)
        _doc, images = compose_images(path, env, max_bytes=max_bytes)
        unique = {(s.site.path, s.site.line, s.site.column): s.site for s in images if s.site}
        sites.extend(unique.values())
    for path in sources.k8s:
        sites.extend(yaml_sites(read_text(path, max_bytes), path, "k8s", max_sites=max_sites)[1])
    for path in sources.dockerfiles:
        text = read_text(path, max_bytes)
        sites.extend(refs_from_dockerfile(text, path, sources.build_args))
    if len(sites) > max_sites:
        raise InputError(f"more than {max_sites} image sites (limits.manifest_max_sites)")
    return sites


# ------------------------------------------------------------------------------ --write/--check


@dataclass
class PinReport:
    """What `resolve --write/--check/--override` did: JSON items, text lines, errors."""

    items: list[dict[str, object]] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    errors: list[TrustpullError] = field(default_factory=list)
    codes: list[int] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return combined_exit_code(self.codes)

    def fail(self, error: TrustpullError, item: dict[str, object] | None = None) -> None:
        self.errors.append(error)
        self.codes.append(error.exit_code)
        if item is not None:
            item["error"] = error.to_json()


def _is_dockerfile(path: str) -> bool:
    name = os.path.basename(path).lower()
    if name.endswith((".yml", ".yaml", ".json")):
        return False
    return "dockerfile" in name or "containerfile" in name


def _file_sites(
    path: str, text: str, build_args: Mapping[str, str], env_file: str | None, max_sites: int
) -> tuple[str, list[ImageSite]]:
    if _is_dockerfile(path):
        return "dockerfile", refs_from_dockerfile(text, path, build_args)
    first = load_yaml(text, path)
    kind = "compose" if first and hasattr(first[0], "get") and "services" in first[0] else "k8s"
    if kind == "compose":
        env = compose_environment(path, env_file)
        _doc, images = compose_images(path, env)
        for image in images:
            if image.site is not None and image.site.path != path:
                raise InputError(
                    f"{path}: service {image.service!r} takes its image from "
                    f"{image.site.origin} (extends): pin that file"
                )
        return kind, yaml_sites(text, path, "compose", env=env, max_sites=max_sites)[1]
    return kind, yaml_sites(text, path, "k8s", max_sites=max_sites)[1]


def pin_files(
    files: Sequence[str],
    service: TrustService,
    *,
    check_only: bool = False,
    build_args: Mapping[str, str] | None = None,
    env_file: str | None = None,
    notice: Notice | None = None,
) -> PinReport:
    """`resolve --write FILE...`: pin every image of each file (compose, Kubernetes,
    Dockerfile) to its verified digest in place; with `check_only`, change nothing and fail
    unless every image already is (interpolated or ARG-composed images fail with exit 3)."""
    from trust.safewrite import read_bytes, replace_bytes

    max_bytes, max_sites = _limits(service.settings.limits)
    report = PinReport()
    loaded: list[tuple[str, str, list[ImageSite]]] = []
    for path in files:
        try:
            data = read_bytes(path, max_bytes=max_bytes, follow=check_only)
            text = decode(data, path)
            _kind, sites = _file_sites(path, text, build_args or {}, env_file, max_sites)
        except TrustpullError as error:
            report.fail(error, {"file": path})
            report.items.append({"file": path, "error": error.to_json()})
            continue
        loaded.append((path, text, sites))
    texts = [s.text for _p, _t, sites in loaded for s in sites if not (check_only and s.fixed)]
    outcomes = outcome_for(verify(texts, service)) if texts else {}
    for path, text, sites in loaded:
        changes: dict[ImageSite, str] = {}
        first = len(report.codes)
        unsigned = 0
        for site in sites:
            item: dict[str, object] = {"file": path, "line": site.line, "input": site.text}
            report.items.append(item)
            if check_only and site.fixed:
                report.fail(
                    InputError(
                        f"{site.origin}: {site.text} cannot be gated as pinned: {site.fixed}; "
                        "write the pinned reference itself"
                    ),
                    item,
                )
                continue
            outcome = outcomes[reference_key(site.text)]
            if outcome.error is not None:
                failure = outcome.error
                if check_only and failure.exit_code == 4:
                    failure = PolicyError(
                        f"{site.origin}: {site.text} is not pinned to a verified digest: "
                        f"{failure.message}"
                    )
                report.fail(_located(failure, site.origin), item)
                continue
            if outcome.unsigned is not None:
                if notice is not None:
                    notice(f"{site.origin}: {outcome.unsigned}; left as it is")
                item["unsigned"] = outcome.unsigned
                report.codes.append(0)
                unsigned += 1
                continue
            resolution = outcome.resolutions[0]
            new = pinned_text(site.text, resolution.tag, resolution.digest)
            item["reference"] = new
            ref = outcome.reference
            if check_only and (ref is None or ref.digest is None or new != site.text):
                report.fail(
                    PolicyError(
                        f"{site.origin}: {site.text} is not pinned to its verified digest "
                        f"(expected {new})"
                    ),
                    item,
                )
                continue
            if new != site.text:
                changes[site] = new
                if site.note:
                    item["note"] = site.note
            report.codes.append(0)
        file_ok = combined_exit_code(report.codes[first:]) == 0
        if not file_ok:
            continue
        if changes and not check_only:
            try:
                replace_bytes(path, rewrite(text, path, changes).encode("utf-8"))
            except TrustpullError as error:
                report.fail(error)
                continue
            report.lines.extend(s.note for s in changes if s.note)
            left = f", {unsigned} left UNSIGNED (accepted by a rule)" if unsigned else ""
            report.lines.append(f"{path}: {len(changes)} image(s) pinned to verified digests{left}")
        else:
            verb = "pinned to verified digests" if check_only else "already pinned"
            if unsigned:  # never "pinned" of an image a rule accepts unverified
                verb += f" or accepted UNSIGNED by a rule ({unsigned} UNSIGNED)"
            report.lines.append(f"{path}: every image {verb}")
    return report


# ------------------------------------------------------------------------------ --override


def _yaml_scalar(text: str) -> str:
    import json

    return json.dumps(text)  # a JSON string is a YAML double-quoted scalar


def write_override(
    compose_file: str,
    out: str,
    service: TrustService,
    *,
    env_file: str | None = None,
    notice: Notice | None = None,
) -> PinReport:
    """`resolve --compose FILE --override OUT`: write a compose override file pinning every
    service's image (as compose 1.29 resolves it: `.env`, interpolation, `extends`) to its
    verified digest; FILE is not touched. Services that build their image are left out (said)."""
    from trust.safewrite import replace_bytes

    report = PinReport()
    max_bytes, _max_sites = _limits(service.settings.limits)
    if os.path.abspath(out) == os.path.abspath(compose_file) or (
        os.path.exists(out) and os.path.samefile(out, compose_file)
    ):
        report.fail(InputError(f"{out}: the override must not be the compose file itself"))
        return report
    try:
        env = compose_environment(compose_file, env_file)
        doc, images = compose_images(compose_file, env, max_bytes=max_bytes)
    except TrustpullError as error:
        report.fail(error)
        return report
    pulled = [i for i in images if i.site is not None and not i.builds]
    for image in images:
        if image.site is None or image.builds:
            message = f"{compose_file}: service {image.service!r} builds its image: not pinned"
            report.lines.append(message)
            if notice is not None:
                notice(message + " (check its Dockerfile with --dockerfile)")
    outcomes = outcome_for(verify([i.site.text for i in pulled if i.site], service))
    pins: list[tuple[str, str]] = []
    for image in pulled:
        assert image.site is not None
        site = image.site
        item: dict[str, object] = {
            "file": site.path,
            "line": site.line,
            "service": image.service,
            "input": site.text,
        }
        report.items.append(item)
        outcome = outcomes[reference_key(site.text)]
        if outcome.error is not None:
            report.fail(_located(outcome.error, site.origin), item)
            continue
        if outcome.unsigned is not None:
            report.fail(
                PolicyError(
                    f"{site.origin}: {site.text}: {outcome.unsigned}, but an override "
                    "pins digests and this image has none that is verified"
                ),
                item,
            )
            continue
        resolution = outcome.resolutions[0]
        new = pinned_text(site.text, resolution.tag, resolution.digest)
        item["reference"] = new
        pins.append((image.service, new))
        report.codes.append(0)
    if report.exit_code != 0:
        return report
    lines = [
        f"# Written by trustpull resolve --compose {os.path.basename(compose_file)}: every",
        "# service's image pinned to its verified digest. Use it with",
        f"#   docker-compose -f {compose_file} -f {out} up",
    ]
    version = doc.get("version") if hasattr(doc, "get") else None
    if version is not None:
        lines.append(f"version: {_yaml_scalar(str(version))}")
    lines.append("services:" if pins else "services: {}")
    for name, new in pins:
        lines.append(f"  {_yaml_scalar(name)}:")
        lines.append(f"    image: {_yaml_scalar(new)}")
    try:
        replace_bytes(out, ("\n".join(lines) + "\n").encode("utf-8"), create=True)
    except TrustpullError as error:
        report.fail(error)
        return report
    report.lines.append(f"{out}: {len(pins)} service image(s) pinned to verified digests")
    return report
