"""Image references in deployment files, and rewriting them to verified digests.

Collection (for `trustpull check`, `resolve --write`, `resolve --compose`):

- reference lists: one reference per line;
- Dockerfiles, read as BuildKit's parser reads them (`moby/buildkit` frontend/dockerfile/parser,
  which the classic builder of docker 28 shares): the `# escape=` and `# syntax=` parser
  directives, continuation lines joined with nothing in between, comment and empty lines inside
  a continuation dropped, heredocs (`RUN <<EOF`) skipped to their terminator. Images are the
  base of every stage (`FROM`), `COPY --from=<image>` and `RUN --mount=…,from=<image>` (stage
  names and numeric stage indexes are not images), and the BuildKit frontend named by
  `# syntax=` (BuildKit pulls and runs it). Global `ARG` defaults and `--build-arg` values are
  substituted as docker does. Anything this reader cannot read for certain is refused
  (InputError, exit 3) rather than skipped;
- compose `services.*.image` with compose 1.29's interpolation (`$V`, `${V}`, `${V:-d}`,
  `${V-d}`, `${V:?e}`, `${V?e}`, `$$`) over the environment first, then `.env`;
- Kubernetes pod specs found anywhere in any document (every workload kind, `List` items,
  CronJob job templates, init and ephemeral containers).

YAML is bounded: every node is visited once (aliases are not re-walked: a "billion laughs"
file costs its size, not its expansion), merge keys (`<<: *base`) are followed to the mapping
that holds the value, and the file size and number of sites are capped (`Limits`).

Rewriting (`trustpull resolve --write`): each site knows where its value sits (line and
column, in the file's own line endings); the new text is spliced into the original text at
exactly that place, so every other byte of the file is kept. Where a value cannot be replaced
in place (interpolated, escaped, split over lines) the site says why and the rewrite refuses.

Longer than 500 lines because it holds the three readers (Dockerfiles as BuildKit parses
them, compose with compose 1.29's interpolation, Kubernetes pod specs) and the in-place rewrite,
which must find exactly the sites the readers report.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trust.errors import InputError

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_SITES",
    "Edit",
    "ImageSite",
    "compose_interpolate",
    "decode",
    "image_site",
    "load_yaml",
    "pinned_text",
    "read_text",
    "refs_from_dockerfile",
    "refs_from_list",
    "rewrite",
    "split_lines",
    "yaml_sites",
]

_CONTAINER_KEYS = ("initContainers", "containers", "ephemeralContainers")
DEFAULT_MAX_BYTES = 4 * 1024 * 1024
DEFAULT_MAX_SITES = 10_000


@dataclass(frozen=True)
class Edit:
    """Where a pinned value is written: replace `old` at (line, column) with `prefix + new`."""

    line: int  # 1-based
    column: int  # 0-based, in characters of the decoded line
    old: str
    prefix: str = ""


@dataclass(frozen=True)
class ImageSite:
    """One image reference found in a file: its text and where it is."""

    text: str
    path: str
    line: int  # 1-based (0: given on the command line)
    column: int = 0  # 0-based column of the value's first character (a quote, if quoted)
    #: Set for sites whose value cannot be rewritten in place (why not).
    fixed: str | None = None
    #: What kind of reference: image (YAML), list, command-line, from, copy-from, mount-from,
    #: syntax, argument (a Dockerfile FROM pinned through its ARG default).
    kind: str = "image"
    #: Dockerfile sites: where the pin is written (None: YAML, located by line/column).
    edit: Edit | None = field(default=None, compare=False)
    #: Said to the user when the pin is written somewhere else than the reference (ARG default).
    note: str | None = field(default=None, compare=False)

    @property
    def origin(self) -> str:
        return f"{self.path}:{self.line}" if self.line else self.path or self.text


def decode(data: bytes, path: str) -> str:
    """UTF-8 text, every byte kept (line endings and a byte order mark included)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{path}: not UTF-8 text") from None


def read_text(path: str | Path, max_bytes: int = DEFAULT_MAX_BYTES) -> str:
    """The file as text, without any newline translation (CRLF stays CRLF)."""
    from trust.safewrite import read_bytes

    return decode(read_bytes(path, max_bytes=max_bytes), str(path))


def split_lines(text: str) -> list[str]:
    """Lines with their endings, split on `\\n` only (as docker's and YAML's readers count)."""
    return re.split(r"(?<=\n)", text)


# ------------------------------------------------------------------------------ lists


def refs_from_list(text: str, path: str) -> list[ImageSite]:
    """One reference per line; blank lines and `#` comments are skipped."""
    sites = []
    for number, line in enumerate(text.splitlines(), start=1):
        item = line.split("#", 1)[0].strip()
        if item:
            sites.append(ImageSite(item, path, number, line.find(item), kind="list"))
    return sites


# ------------------------------------------------------------------------------ variables

_VAR_RE = re.compile(
    r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-+])([^}$]*))?\}|([A-Za-z_][A-Za-z0-9_]*))"
)


def _substitute(text: str, values: Mapping[str, str]) -> str:
    """Dockerfile variable syntax: $V, ${V}, ${V:-default}, ${V:+alt}, ${V-d}, ${V+alt}."""

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


_COMPOSE_RE = re.compile(
    r"\$(?:(?P<escaped>\$)|(?P<named>[_a-z][_a-z0-9]*)|\{(?P<braced>[_a-z][_a-z0-9]*"
    r"(?:(?P<sep>:?[-?])[^}]*)?)\}|(?P<invalid>))",
    re.IGNORECASE,
)


def compose_interpolate(value: str, env: Mapping[str, str], origin: str) -> str:
    """compose 1.29's interpolation (compose/config/interpolation.py), refusing what it refuses.

    An unset variable without a default is "" (compose warns); `${V:?err}` unset is refused
    here as compose refuses it; `${V:+x}` and nested defaults are not compose 1.29 syntax."""

    def one(match: re.Match[str]) -> str:
        if match.group("escaped") is not None:
            return "$"
        if match.group("invalid") is not None:
            raise InputError(f"{origin}: invalid interpolation format in {value!r}")
        braced = match.group("braced")
        sep = match.group("sep")
        if braced is None or not sep:
            return env.get(match.group("named") or braced, "")
        var, _, word = braced.partition(sep)
        if "${" in word:
            raise InputError(f"{origin}: nested interpolation in {value!r} is not supported")
        if sep == ":-":
            return env.get(var) or word
        if sep == "-":
            return env.get(var, word)
        if (sep == ":?" and not env.get(var)) or (sep == "?" and var not in env):
            raise InputError(f"{origin}: required variable {var} is missing: {word or var}")
        return env[var]

    return _COMPOSE_RE.sub(one, value)


# ------------------------------------------------------------------------------ Dockerfile

_DIRECTIVE_RE = re.compile(r"^#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$")
_KNOWN_DIRECTIVES = ("syntax", "escape", "check")
_HEREDOC_WORD = re.compile(
    r"^(\d*)<<(-?)(?:([\"'])([A-Za-z_][A-Za-z0-9_.-]*)\3|([A-Za-z_][A-Za-z0-9_.-]*))$"
)
_SYNTAX_FRONTENDS = ("docker/dockerfile", "docker.io/docker/dockerfile")


@dataclass
class _Instruction:
    line: int
    text: str  # the logical line, continuations joined
    segments: list[tuple[int, int, int]]  # (offset in text, 1-based line, column in that line)

    @property
    def keyword(self) -> str:
        return self.text.split(None, 1)[0].upper() if self.text.strip() else ""

    def where(self, offset: int, length: int) -> tuple[int, int] | None:
        """(line, column) of text[offset:offset+length] if it lies on one physical line."""
        for index, (start, line, column) in enumerate(self.segments):
            end = self.segments[index + 1][0] if index + 1 < len(self.segments) else len(self.text)
            last = index + 1 == len(self.segments)
            if start <= offset < end or (last and offset == end):
                if offset + length > end:
                    return None
                return line, column + offset - start
        return None

    def words(self) -> list[tuple[int, str]]:
        return [(m.start(), m.group()) for m in re.finditer(r"\S+", self.text)]


def _read_dockerfile(
    text: str, path: str
) -> tuple[dict[str, tuple[str, int, int]], list[_Instruction]]:
    """(parser directives: name → (value, line, column), instructions), as BuildKit reads them."""
    raw_lines = text.split("\n")
    lines = [raw[:-1] if raw.endswith("\r") else raw for raw in raw_lines]
    if lines and lines[0].startswith("\ufeff"):
        lines[0] = lines[0][1:]
        bom = 1
    else:
        bom = 0
    directives: dict[str, tuple[str, int, int]] = {}
    index = 0
    while index < len(lines):
        match = _DIRECTIVE_RE.match(lines[index])
        if not match or match.group(1).lower() not in _KNOWN_DIRECTIVES:
            break
        name = match.group(1).lower()
        if name in directives:
            raise InputError(f"{path}:{index + 1}: only one {name} parser directive can be used")
        directives[name] = (match.group(2), index + 1, match.start(2) + (bom if index == 0 else 0))
        index += 1
    escape = directives.get("escape", ("\\", 0, 0))[0]
    if escape not in ("\\", "`"):
        raise InputError(f"{path}: invalid escape token {escape!r} (must be ` or \\)")
    continuation = re.compile(re.escape(escape) + r"[ \t]*$")

    def is_comment(line: str) -> bool:
        return line.lstrip(" \t").startswith("#")

    instructions: list[_Instruction] = []
    number = 0
    while number < len(lines):
        raw = lines[number]
        number += 1
        if is_comment(raw):
            continue
        stripped = raw.lstrip(" \t")
        offset_col = len(raw) - len(stripped) + (bom if number == 1 else 0)
        start_line = number
        match = continuation.search(stripped)
        body = stripped[: match.start()] if match else stripped
        if match is None and not body.strip():
            continue
        instruction = _Instruction(start_line, body, [(0, start_line, offset_col)])
        while match is not None and number < len(lines):
            raw = lines[number]
            number += 1
            if is_comment(raw) or not raw.strip(" \t"):
                continue
            match = continuation.search(raw)
            piece = raw[: match.start()] if match else raw
            instruction.segments.append((len(instruction.text), number, 0))
            instruction.text += piece
        if not instruction.text.strip():
            continue
        instructions.append(instruction)
        keyword = instruction.keyword
        if keyword in ("RUN", "COPY", "ADD") and "<<" in instruction.text:
            for _offset, word in instruction.words():
                if "<<" not in word:
                    continue
                heredoc = _HEREDOC_WORD.match(word)
                if heredoc is None:
                    raise InputError(
                        f"{path}:{start_line}: cannot read {word!r} (a heredoc this reader "
                        "does not know): refused rather than guessed"
                    )
                terminator = heredoc.group(4) or heredoc.group(5)
                chomp = heredoc.group(2) == "-"
                while True:
                    if number >= len(lines):
                        raise InputError(f"{path}:{start_line}: unterminated heredoc {word}")
                    body_line = lines[number]
                    number += 1
                    if (body_line.lstrip("\t") if chomp else body_line) == terminator:
                        break
    return directives, instructions


def _split_quoted(text: str) -> list[tuple[int, str]]:
    """Words (offset, word) split on whitespace outside quotes."""
    words, start, quote = [], None, ""
    for index, char in enumerate(text):
        if quote:
            if char == quote:
                quote = ""
            continue
        if char in "\"'":
            quote = char
            start = index if start is None else start
        elif char.isspace():
            if start is not None:
                words.append((start, text[start:index]))
                start = None
        elif start is None:
            start = index
    if start is not None:
        words.append((start, text[start:]))
    return words


@dataclass
class _Arg:
    name: str
    value: str | None  # None: declared without a default (or unreadable, see `why`)
    line: int
    edit: Edit | None  # where the default is (or where `=default` is inserted)
    why: str | None = None  # set if the default cannot be read or pinned


def _parse_args(instruction: _Instruction, path: str, escape: str) -> list[_Arg]:
    keyword_len = len(instruction.text) - len(instruction.text.lstrip())
    rest_start = keyword_len + len(instruction.text.split(None, 1)[0])
    args = []
    for offset, word in _split_quoted(instruction.text[rest_start:]):
        offset += rest_start
        name, eq, default = word.partition("=")
        why = None
        value_offset = offset + len(name) + len(eq)
        if eq and len(default) >= 2 and default[0] == default[-1] and default[0] in "\"'":
            default = default[1:-1]
            value_offset += 1
        if any(c in default for c in "\"'" + escape):
            why = "its default uses quoting or escapes this reader does not evaluate"
        where = instruction.where(value_offset, len(default))
        edit = None
        if where is not None:
            edit = Edit(where[0], where[1], default, "" if eq else "=")
        elif why is None:
            why = "its default is split over lines"
        args.append(_Arg(name, default if eq else None, instruction.line, edit, why))
    return args


def refs_from_dockerfile(
    text: str,
    path: str,
    build_args: Mapping[str, str] | None = None,
    literals: list[ImageSite] | None = None,
) -> list[ImageSite]:
    """Every external image a build of this Dockerfile pulls, in file order.

    Global `ARG`s (before the first FROM) are substituted with their defaults, overridden by
    `build_args` as `--build-arg` would; a FROM, `COPY --from` or `--mount from=` naming a stage
    (by name or index), and `scratch`, are not images. Raises InputError for anything that
    cannot be read for certain (a later stage's name, variables in `--from`, unknown flags,
    quoting or escapes in an image, a frontend other than docker/dockerfile).

    `literals`, when given, receives a site (kind "stage") for each FROM whose variables
    resolved to `scratch` or an earlier stage: its text is what they resolved to, at the
    place of the FROM's word (the proxy writes it there, so the engine evaluates nothing).
    """
    overrides = dict(build_args or {})
    directives, instructions = _read_dockerfile(text, path)
    escape = directives.get("escape", ("\\", 0, 0))[0]
    sites: list[ImageSite] = []
    if "syntax" in directives:
        value, line, column = directives["syntax"]
        frontend = value.split("@", 1)[0]
        slash, colon = frontend.rfind("/"), frontend.rfind(":")
        if colon > slash:
            frontend = frontend[:colon]
        if frontend not in _SYNTAX_FRONTENDS:
            raise InputError(
                f"{path}:{line}: # syntax={value}: a BuildKit frontend other than "
                "docker/dockerfile reads this file with its own grammar; refused"
            )
        sites.append(
            ImageSite(value, path, line, column, kind="syntax", edit=Edit(line, column, value))
        )

    all_stages: dict[str, int] = {}
    stage_count = 0
    for instruction in instructions:
        if instruction.keyword == "FROM":
            words = instruction.words()[1:]
            plain = [w for _o, w in words if not w.startswith("--")]
            if len(plain) >= 3 and plain[1].lower() == "as":
                all_stages.setdefault(plain[2].lower(), stage_count)
            stage_count += 1

    values: dict[str, str] = {}
    meta: dict[str, _Arg] = {}
    stages: dict[str, int] = {}
    stage = -1

    def external(value: str, instruction: _Instruction, what: str) -> bool:
        """Whether `value` (of --from / from=) names an image rather than a stage."""
        where = f"{path}:{instruction.line}"
        if "$" in value or escape in value or any(q in value for q in "\"'"):
            raise InputError(
                f"{where}: {what}={value}: variables, quotes and escapes in a stage or image "
                "name are not read by trustpull; write the name out"
            )
        if value.isdigit():
            if int(value) >= stage:
                raise InputError(f"{where}: {what}={value}: no earlier stage with that index")
            return False
        if value.lower() in stages:
            return False
        if value.lower() in all_stages:
            raise InputError(
                f"{where}: {what}={value} names a later stage: BuildKit and the classic "
                "builder disagree on it; refused"
            )
        return True

    def add_literal(value: str, offset: int, instruction: _Instruction, kind: str) -> None:
        place = instruction.where(offset, len(value))
        line, column = place if place else (instruction.line, 0)
        fixed = None if place else "it is split over lines"
        sites.append(
            ImageSite(
                value, path, line, column, fixed, kind, Edit(line, column, value) if place else None
            )
        )

    for instruction in instructions:
        keyword = instruction.keyword
        where = f"{path}:{instruction.line}"
        words = instruction.words()[1:]
        if keyword == "ARG" and stage < 0:
            for declared in _parse_args(instruction, path, escape):
                if declared.name in overrides:
                    values[declared.name] = overrides[declared.name]
                elif declared.value is not None and declared.why is None:
                    values[declared.name] = _substitute(declared.value, values)
                elif declared.value is not None:
                    values.pop(declared.name, None)
                meta[declared.name] = declared
            continue
        if keyword == "FROM":
            stage += 1
            flags = [w for _o, w in words if w.startswith("--")]
            args = [(o, w) for o, w in words if not w.startswith("--")]
            for flag in flags:
                if not flag.startswith("--platform="):
                    raise InputError(f"{where}: FROM {flag}: unknown flag")
            if not args:
                raise InputError(f"{where}: FROM without an image")
            if len(args) not in (1, 3) or (len(args) == 3 and args[1][1].lower() != "as"):
                raise InputError(f"{where}: FROM takes IMAGE [AS NAME]: {instruction.text.strip()}")
            offset, raw = args[0]
            if escape in raw or any(q in raw for q in "\"'"):
                raise InputError(
                    f"{where}: FROM {raw}: quotes and escapes are not read by trustpull"
                )
            image = _substitute(raw, values) if "$" in raw else raw
            if not image:
                raise InputError(f"{where}: FROM {raw} is empty after substitution")
            if "$" in image:
                raise InputError(
                    f"{where}: FROM {raw}: variable syntax trustpull does not evaluate"
                )
            earlier_stage = image.lower() in stages
            if image.lower() not in stages and image.lower() in all_stages and image != raw:
                raise InputError(f"{where}: FROM {raw} names a later stage; refused")
            if len(args) == 3:
                stages.setdefault(args[2][1].lower(), stage)
            if image.lower() == "scratch" or earlier_stage:
                if literals is not None and image != raw:
                    place = instruction.where(offset, len(raw))
                    line, column = place if place else (instruction.line, 0)
                    fixed = None if place else "it is split over lines"
                    edit = Edit(line, column, raw) if place else None
                    literals.append(ImageSite(image, path, line, column, fixed, "stage", edit))
                continue
            if image == raw:
                add_literal(raw, offset, instruction, "from")
                continue
            place = instruction.where(offset, len(raw))
            line, column = place if place else (instruction.line, 0)
            single = re.fullmatch(
                r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))", raw
            )
            name = (single.group(1) or single.group(2)) if single else None
            arg = meta.get(name) if name else None
            if arg is None or arg.edit is None or arg.why is not None:
                fixed = (
                    f"FROM {raw} is built from ARGs; write FROM ${{NAME}} with "
                    "ARG NAME=<image> (or the image itself) to pin it"
                    if arg is None
                    else f"ARG {arg.name} (line {arg.line}): {arg.why or 'cannot be rewritten'}"
                )
                sites.append(ImageSite(image, path, line, column, fixed, "from"))
                continue
            given = (
                " (the --build-arg value is written as the default)" if name in overrides else ""
            )
            note = (
                f"{where}: FROM {raw} pinned through the default of ARG {name} "
                f"(line {arg.line}){given}"
            )
            sites.append(ImageSite(image, path, line, column, None, "argument", arg.edit, note))
            continue
        if keyword in ("COPY", "RUN", "ADD"):
            for offset, word in words:
                if not word.startswith("--"):
                    break
                if keyword == "COPY" and (word == "--from" or word.startswith("--from=")):
                    if word == "--from":
                        raise InputError(f"{where}: COPY --from needs =NAME")
                    value = word[len("--from=") :]
                    if external(value, instruction, "--from"):
                        add_literal(value, offset + len("--from="), instruction, "copy-from")
                elif keyword == "RUN" and word.startswith("--mount="):
                    position = offset + len("--mount=")
                    for item in word[len("--mount=") :].split(","):
                        key, eq, value = item.partition("=")
                        if key.strip().lower() == "from":
                            if not eq or not value:
                                raise InputError(f"{where}: --mount from= without a value")
                            if external(value, instruction, "from"):
                                add_literal(
                                    value, position + len(key) + 1, instruction, "mount-from"
                                )
                        position += len(item) + 1
        if keyword == "ONBUILD" and ("--from" in instruction.text or "from=" in instruction.text):
            raise InputError(
                f"{where}: ONBUILD with --from/from=: images of a later build are not checked here"
            )
    if stage < 0 and instructions:
        raise InputError(f"{path}: no FROM instruction")
    return sites


# ------------------------------------------------------------------------------ YAML


def load_yaml(text: str, path: str, max_bytes: int = DEFAULT_MAX_BYTES) -> list[Any]:
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    if len(text.encode("utf-8", "surrogatepass")) > max_bytes:
        raise InputError(f"{path}: over the limit of {max_bytes} bytes (limits.manifest_max_bytes)")
    try:
        return [doc for doc in YAML(typ="rt", pure=True).load_all(text) if doc is not None]
    except YAMLError as exc:
        raise InputError(f"{path}: invalid YAML: {exc}") from None
    except RecursionError:
        raise InputError(f"{path}: YAML nested too deeply") from None
    except TypeError as exc:  # a mapping inside a complex key: "unhashable type" (fuzz_manifests)
        raise InputError(f"{path}: invalid YAML: {exc}") from None


def _owner(node: Any, key: str) -> Any:
    """The mapping that holds `key` itself: `node`, or a mapping merged in with `<<`."""
    from ruamel.yaml.comments import merge_attrib

    pending, seen = [node], set()
    while pending:
        current = pending.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        own = getattr(current, "_ok", None)
        if own is None or key in own:
            return current
        pending.extend(getattr(current, merge_attrib, []))
    raise InputError(f"cannot locate {key}")


def image_site(
    node: Any, key: str, path: str, env: Mapping[str, str] | None, kind: str = "image"
) -> ImageSite:
    holder = _owner(node, key)
    value = holder.get(key)
    line, column = holder.lc.value(key)
    if not isinstance(value, str):
        raise InputError(f"{path}:{line + 1}: {key} must be a string")
    fixed = None
    text = value
    if "$" in value and env is not None:
        text = compose_interpolate(value, env, f"{path}:{line + 1}")
        fixed = (
            "it uses variable interpolation (pin the resolved images without editing the "
            "file: resolve --compose FILE --override OUT)"
        )
    return ImageSite(text, path, line + 1, column, fixed, kind)


def _compose_sites(doc: Any, path: str, env: Mapping[str, str]) -> list[ImageSite]:
    services: Any = doc.get("services") if hasattr(doc, "get") else None
    if not hasattr(services, "items"):
        raise InputError(f"{path}: a compose file needs a services: mapping")
    sites = []
    for _name, service in services.items():
        if hasattr(service, "get") and "image" in service:
            sites.append(image_site(service, "image", path, env))
    return sites


def _pod_sites(root: Any, path: str, out: list[ImageSite], max_sites: int) -> None:
    """Every container list of every pod spec, at any depth; each node visited once."""
    seen: set[int] = set()
    pending = [root]
    while pending:
        node = pending.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if hasattr(node, "items") and hasattr(node, "lc"):
            for key in _CONTAINER_KEYS:
                containers = node.get(key)
                if isinstance(containers, list) and id(containers) not in seen:
                    seen.add(id(containers))
                    for container in containers:
                        if id(container) in seen:
                            continue
                        seen.add(id(container))
                        if hasattr(container, "get") and "image" in container:
                            out.append(image_site(container, "image", path, None))
                            if len(out) > max_sites:
                                raise InputError(
                                    f"{path}: more than {max_sites} image sites "
                                    "(limits.manifest_max_sites)"
                                )
            pending.extend(v for k, v in node.items() if k not in _CONTAINER_KEYS)
        elif isinstance(node, list):
            pending.extend(node)


def yaml_sites(
    text: str,
    path: str,
    kind: str = "auto",
    *,
    env: Mapping[str, str] | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_sites: int = DEFAULT_MAX_SITES,
) -> tuple[str, list[ImageSite]]:
    """(`compose` or `k8s`, the image sites in file order). `auto` looks for `services:`.

    `env` is the interpolation mapping for compose (default: the process environment)."""
    docs = load_yaml(text, path, max_bytes)
    if kind == "auto":
        first: Any = docs[0] if docs else None
        kind = "compose" if hasattr(first, "get") and "services" in first else "k8s"
    sites: list[ImageSite] = []
    if kind == "compose":
        for doc in docs:
            sites.extend(_compose_sites(doc, path, os.environ if env is None else env))
    else:
        for doc in docs:
            _pod_sites(doc, path, sites, max_sites)
    unique = {(s.line, s.column): s for s in sites}  # a merged or aliased value is one site
    if len(unique) > max_sites:
        raise InputError(f"{path}: more than {max_sites} image sites (limits.manifest_max_sites)")
    return kind, sorted(unique.values(), key=lambda s: (s.line, s.column))


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


def _placed(site: ImageSite, lines: list[str]) -> Edit:
    """The edit for a YAML site: the value at (line, column), inside its quotes if quoted."""
    row = lines[site.line - 1] if site.line - 1 < len(lines) else ""
    col = site.column
    quote = row[col] if col < len(row) and row[col] in "\"'" else ""
    start = col + len(quote)
    end = start + len(site.text)
    if row[start:end] != site.text or (quote and row[end : end + 1] != quote):
        raise InputError(
            f"{site.origin}: cannot rewrite {site.text!r} in place (escaped or multi-line)"
        )
    return Edit(site.line, start, site.text)


def rewrite(text: str, path: str, changes: Mapping[ImageSite, str]) -> str:
    """Replace each site's value in `text` with its new reference, keeping every other byte."""
    lines = split_lines(text)
    edits: dict[tuple[int, int], tuple[Edit, str]] = {}
    for site, new in changes.items():
        if site.fixed is not None:
            raise InputError(f"{site.origin}: cannot rewrite {site.text!r}: {site.fixed}")
        edit = site.edit or _placed(site, lines)
        row = lines[edit.line - 1] if edit.line - 1 < len(lines) else ""
        if row[edit.column : edit.column + len(edit.old)] != edit.old:
            raise InputError(f"{site.origin}: cannot rewrite {edit.old!r} in place")
        key = (edit.line, edit.column)
        if key in edits and edits[key][1] != new:
            raise InputError(
                f"{path}:{edit.line}: one value would be pinned to two references "
                f"({edits[key][1]} and {new})"
            )
        edits[key] = (edit, new)
    for (_line, _col), (edit, new) in sorted(edits.items(), reverse=True):
        row = lines[edit.line - 1]
        end = edit.column + len(edit.old)
        lines[edit.line - 1] = row[: edit.column] + edit.prefix + new + row[end:]
    return "".join(lines)
