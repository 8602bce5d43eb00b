"""Image references in deployment files, and rewriting them to verified digests.

Collection (for `trustpull check`): reference lists, Dockerfile `FROM` lines (global `ARG`
defaults and `--build-arg` values substituted; stage names and `scratch` skipped), compose
`services.*.image`, and Kubernetes pod specs found anywhere in any document (every workload kind,
`List` items, CronJob job templates, init and ephemeral containers).

Rewriting (`trustpull resolve --write`): YAML is read with ruamel.yaml's round-trip loader only
to learn where each `image:` value sits (line and column); the new text is then spliced into the
original bytes at exactly that place. Comments, quoting, indentation and every other byte of the
file are kept, which a dump of the loaded document would not guarantee.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trust.errors import InputError

__all__ = [
    "ImageSite",
    "pinned_text",
    "read_text",
    "refs_from_dockerfile",
    "refs_from_list",
    "rewrite",
    "yaml_sites",
]

_CONTAINER_KEYS = ("initContainers", "containers", "ephemeralContainers")


@dataclass(frozen=True)
class ImageSite:
    """One image reference found in a file: its text and where it is."""

    text: str
    path: str
    line: int  # 1-based
    column: int = 0  # 0-based column of the value's first character (a quote, if quoted)
    #: Set for YAML sites whose value cannot be rewritten in place (why not).
    fixed: str | None = None

    @property
    def origin(self) -> str:
        return f"{self.path}:{self.line}"


def read_text(path: str | Path) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except UnicodeDecodeError:
        raise InputError(f"{path}: not UTF-8 text") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror}") from None


# ------------------------------------------------------------------------------ lists


def refs_from_list(text: str, path: str) -> list[ImageSite]:
    """One reference per line; blank lines and `#` comments are skipped."""
    sites = []
    for number, line in enumerate(text.splitlines(), start=1):
        item = line.split("#", 1)[0].strip()
        if item:
            sites.append(ImageSite(item, path, number))
    return sites


# ------------------------------------------------------------------------------ Dockerfile

_VAR_RE = re.compile(
    r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-+])([^}]*))?\}|([A-Za-z_][A-Za-z0-9_]*))"
)


def _substitute(text: str, values: Mapping[str, str]) -> str:
    """Dockerfile (and compose) variable syntax: $V, ${V}, ${V:-default}, ${V:+alt}, ${V-d}."""

    def one(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(4)
        op, word = match.group(2), match.group(3) or ""
        value = values.get(name)
        if op in (":-", "-"):
            unset = value is None or (op == ":-" and value == "")
            return word if unset else str(value)
        if op in (":+", "+"):
            set_ = value is not None and (op == "+" or value != "")
            return word if set_ else ""
        return value or ""

    return _VAR_RE.sub(one, text)


def _logical_lines(text: str) -> Iterator[tuple[int, str]]:
    """Instructions with `\\` continuations joined; comment lines dropped (1-based start)."""
    start = 0
    parts: list[str] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not parts and (not stripped or stripped.startswith("#")):
            continue
        if parts and stripped.startswith("#"):
            continue  # comment lines inside a continuation are ignored, as buildkit does
        if not parts:
            start = number
        if stripped.endswith("\\"):
            parts.append(stripped[:-1])
            continue
        parts.append(stripped)
        yield start, " ".join(parts)
        parts = []
    if parts:
        yield start, " ".join(parts)


def refs_from_dockerfile(
    text: str, path: str, build_args: Mapping[str, str] | None = None
) -> list[ImageSite]:
    """Base images of every stage: `FROM [--platform=…] IMAGE [AS NAME]`.

    Global `ARG`s (before the first FROM) are substituted with their defaults, overridden by
    `build_args` as `--build-arg` would; a FROM naming an earlier stage, and `scratch`, are
    not images to verify.
    """
    overrides = dict(build_args or {})
    values: dict[str, str] = {}
    stages: set[str] = set()
    seen_from = False
    sites: list[ImageSite] = []
    for line, instruction in _logical_lines(text):
        words = instruction.split()
        keyword = words[0].upper()
        if keyword == "ARG" and not seen_from:
            for word in words[1:]:
                name, eq, default = word.partition("=")
                if name in overrides:
                    values[name] = overrides[name]
                elif eq:
                    values[name] = default.strip("\"'")
            continue
        if keyword != "FROM":
            continue
        seen_from = True
        args = [w for w in words[1:] if not w.startswith("--")]
        if not args:
            raise InputError(f"{path}:{line}: FROM without an image")
        image = _substitute(args[0], values)
        if not image:
            raise InputError(f"{path}:{line}: FROM {args[0]} is empty after substitution")
        earlier_stage = image.lower() in stages
        if len(args) >= 3 and args[1].lower() == "as":
            stages.add(args[2].lower())
        if image.lower() == "scratch" or earlier_stage:
            continue
        sites.append(ImageSite(image, path, line))
    return sites


# ------------------------------------------------------------------------------ YAML


def _load_yaml(text: str, path: str) -> list[Any]:
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    try:
        return [doc for doc in YAML(typ="rt", pure=True).load_all(text) if doc is not None]
    except YAMLError as exc:
        raise InputError(f"{path}: invalid YAML: {exc}") from None
    except TypeError as exc:  # a mapping inside a complex key: "unhashable type" (fuzz_manifests)
        raise InputError(f"{path}: invalid YAML: {exc}") from None


def _site(node: Any, key: str, path: str, *, interpolate: bool) -> ImageSite | None:
    value = node.get(key)
    line, column = node.lc.value(key)
    if not isinstance(value, str):
        raise InputError(f"{path}:{line + 1}: {key} must be a string")
    fixed = None
    text = value
    if "$" in value and interpolate:
        text = _substitute(value.replace("$$", "\0"), os.environ).replace("\0", "$")
        fixed = "it uses variable interpolation"
    return ImageSite(text, path, line + 1, column, fixed)


def _compose_sites(doc: Any, path: str) -> list[ImageSite]:
    services: Any = doc.get("services") if hasattr(doc, "get") else None
    if not hasattr(services, "items"):
        raise InputError(f"{path}: a compose file needs a services: mapping")
    sites = []
    for _name, service in services.items():
        if hasattr(service, "get") and "image" in service:
            site = _site(service, "image", path, interpolate=True)
            if site is not None:
                sites.append(site)
    return sites


def _pod_sites(node: Any, path: str, out: list[ImageSite]) -> None:
    """Every container list of every pod spec, at any depth (so every workload kind)."""
    if hasattr(node, "items") and hasattr(node, "lc"):
        for key in _CONTAINER_KEYS:
            containers = node.get(key)
            if isinstance(containers, list):
                for container in containers:
                    if hasattr(container, "get") and "image" in container:
                        site = _site(container, "image", path, interpolate=False)
                        if site is not None:
                            out.append(site)
        for key, value in node.items():
            if key not in _CONTAINER_KEYS:
                _pod_sites(value, path, out)
    elif isinstance(node, list):
        for item in node:
            _pod_sites(item, path, out)


def yaml_sites(text: str, path: str, kind: str = "auto") -> tuple[str, list[ImageSite]]:
    """(`compose` or `k8s`, the image sites in file order). `auto` looks for `services:`."""
    docs = _load_yaml(text, path)
    if kind == "auto":
        first: Any = docs[0] if docs else None
        kind = "compose" if hasattr(first, "get") and "services" in first else "k8s"
    sites: list[ImageSite] = []
    if kind == "compose":
        for doc in docs:
            sites.extend(_compose_sites(doc, path))
    else:
        for doc in docs:
            _pod_sites(doc, path, sites)
    sites.sort(key=lambda s: (s.line, s.column))
    return kind, sites


# ------------------------------------------------------------------------------ rewriting


def pinned_text(original: str, tag: str | None, digest: str) -> str:
    """`original`'s name as the user spelled it, then `:TAG@DIGEST` (a digest-only reference
    keeps its form: it is already pinned)."""
    base, _, old_digest = original.partition("@")
    slash, colon = base.rfind("/"), base.rfind(":")
    had_tag = colon > slash
    if had_tag:
        base = base[:colon]
    if old_digest and not had_tag:
        return f"{base}@{digest}"
    return f"{base}:{tag}@{digest}" if tag else f"{base}@{digest}"


def rewrite(text: str, path: str, changes: Mapping[ImageSite, str]) -> str:
    """Replace each site's value in `text` with its new reference, keeping every other byte."""
    lines = text.splitlines(keepends=True)
    for site, new in sorted(changes.items(), key=lambda item: (-item[0].line, -item[0].column)):
        if site.fixed is not None:
            raise InputError(f"{site.origin}: cannot rewrite {site.text!r}: {site.fixed}")
        row = lines[site.line - 1]
        col = site.column
        quote = row[col] if col < len(row) and row[col] in "\"'" else ""
        start = col + len(quote)
        if row[start : start + len(site.text)] != site.text or (
            quote and row[start + len(site.text) : start + len(site.text) + 1] != quote
        ):
            raise InputError(
                f"{site.origin}: cannot rewrite {site.text!r} in place (escaped or multi-line)"
            )
        lines[site.line - 1] = row[:start] + new + row[start + len(site.text) :]
    return "".join(lines)
