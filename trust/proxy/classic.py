"""The Dockerfile as the classic builder reads it (engine-proxy.md §2.4 step 3).

The proxy's Dockerfile reader (trust/manifests.py) follows current BuildKit. The engine's classic
builder reads with the parser vendored in its own release: moby 20.10 (Debian's dockerd) carries
BuildKit's v0.8 parser (moby/moby@5d6db842238e: vendor/github.com/moby/buildkit/frontend/
dockerfile/parser/parser.go, `Parse`, `processLine`, `trimContinuationCharacter`,
`possibleParserDirective`; split_command.go, `splitCommand`, `extractBuilderFlags`), which
differs: no heredocs, no `check` directive, a directive may follow leading blanks, blanks are
Go's, an escaped escape at a line's end is no continuation, and builder flags are unquoted
(`--fr"om"=X` is `--from=X`) and only leading. This module reads a text the way that parser
does, so the proxy can check the Dockerfile it forwards, as the engine will read it, uses no
image the proxy did not pin (`check_forwarded`).
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass

from trust.errors import InputError

__all__ = ["Line", "check_forwarded", "instructions", "onbuild_copies_from", "split_command"]

#: Go's unicode.IsSpace: the Latin-1 blanks, then Unicode's White_Space.
_GO_SPACE = frozenset(
    "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008"
    "\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
_RE2_SPACE = "[\t\n\f\r ]"  # RE2's \s
_DIRECTIVE = re.compile(
    rf"#{_RE2_SPACE}*([a-zA-Z][a-zA-Z0-9]*){_RE2_SPACE}*={_RE2_SPACE}*(.+?){_RE2_SPACE}*\Z"
)
_WHITESPACE = re.compile(r"[\t\v\f\r ]+")  # the parser's reWhitespace
_DIRECTIVES = ("escape", "syntax")  # what the v0.8 parser knows
_MAX_LINE = 64 * 1024 - 1  # bufio.Scanner's token limit: longer lines fail the engine's parse


@dataclass(frozen=True)
class Line:
    """One instruction: the 1-based line it starts on and its text, continuations joined."""

    start: int
    text: str


def _trim_left(text: str) -> str:
    index = 0
    while index < len(text) and text[index] in _GO_SPACE:
        index += 1
    return text[index:]


def _trim(text: str) -> str:
    text = _trim_left(text)
    end = len(text)
    while end and text[end - 1] in _GO_SPACE:
        end -= 1
    return text[:end]


def instructions(text: str) -> tuple[str, list[Line]]:
    """(escape token, instructions) of `text` as the engine's parser splits it; InputError
    where that parser fails (the engine would refuse the build too)."""
    physical = text.split("\n")
    if physical and physical[-1] == "":
        physical.pop()  # no token after a final newline
    physical = [raw[:-1] if raw.endswith("\r") else raw for raw in physical]
    if any(len(raw.encode("utf-8", "surrogateescape")) > _MAX_LINE for raw in physical):
        raise InputError("a Dockerfile line is longer than the engine reads")
    escape = "\\"
    done = False
    seen: set[str] = set()

    def directive(token: str) -> None:
        nonlocal escape, done
        if done:
            return
        match = _DIRECTIVE.match(token)
        key = match.group(1).lower() if match else ""
        if key not in _DIRECTIVES:
            done = True
            return
        if key in seen:
            raise InputError(f"only one {key} parser directive can be used")
        seen.add(key)
        if key == "escape":
            assert match is not None
            if match.group(2) not in ("`", "\\"):
                raise InputError(f"invalid escape token {match.group(2)!r}")
            escape = match.group(2)

    def process(raw: str, strip: bool) -> str:
        token = _trim_left(raw) if strip else raw
        directive(token)
        return "" if token.startswith("#") else token

    def continued(line: str) -> tuple[str, bool]:
        e = re.escape(escape)
        pattern = re.compile(rf"([^{e}]){e}[ \t]*\Z|^{e}[ \t]*\Z")
        match = pattern.search(line)
        if match is None:
            return line, False
        return line[: match.start()] + (match.group(1) or ""), True

    out: list[Line] = []
    index = 0
    number = 0
    while index < len(physical):
        raw = physical[index]
        index += 1
        if number == 0 and raw.startswith("\ufeff"):
            raw = raw[1:]
        token = process(raw, True)
        number += 1
        start = number
        line, more = continued(token)
        if not more and line == "":
            continue
        while more and index < len(physical):
            raw = physical[index]
            index += 1
            token = process(raw, False)
            number += 1
            if _trim_left(raw).startswith("#") or _trim_left(token) == "":
                continue
            piece, more = continued(token)
            line += piece
        out.append(Line(start, line))
    return escape, out


def _builder_flags(rest: str) -> tuple[str, list[str]]:
    """(the rest, the flags) as extractBuilderFlags reads them: byte by byte (a byte is taken
    for the rune of its value, so 0x85 and 0xA0 inside a UTF-8 character are blanks), leading
    `--` words only, quotes and backslashes removed, `--` alone ending the flags."""
    data = rest.encode("utf-8", "surrogateescape")
    words: list[str] = []
    word = ""
    phase = "spaces"
    quote = ""
    blank_ok = False
    char = "\0"
    pos = 0
    size = len(data)

    def tail(at: int) -> str:
        return data[at:].decode("utf-8", "surrogateescape")

    while pos <= size:
        if pos != size:
            char = chr(data[pos])
        if phase == "spaces":
            if pos == size:
                break
            if char in _GO_SPACE:
                pos += 1
                continue
            if char != "-" or pos + 1 == size or data[pos + 1] != ord("-"):
                return tail(pos), words
            phase = "word"
        if phase in ("word", "quote") and pos == size:
            if word != "--" and (blank_ok or word):
                words.append(word)
            break
        if phase == "word":
            if char in _GO_SPACE:
                phase = "spaces"
                if word == "--":
                    return tail(pos), words
                if blank_ok or word:
                    words.append(word)
                word = ""
                blank_ok = False
                pos += 1
                continue
            if char in "'\"":
                quote = char
                blank_ok = True
                phase = "quote"
                pos += 1
                continue
            if char == "\\":
                if pos + 1 == size:
                    pos += 1
                    continue
                pos += 1
                char = chr(data[pos])
            word += char
            pos += 1
            continue
        if char == quote:
            phase = "word"
            pos += 1
            continue
        if char == "\\":
            if pos + 1 == size:
                phase = "word"
                pos += 1
                continue
            pos += 1
            char = chr(data[pos])
        word += char
        pos += 1
    return "", words


def split_command(line: str) -> tuple[str, list[str], str]:
    """(instruction name in lower case, builder flags, the rest) as splitCommand reads them."""
    parts = _WHITESPACE.split(_trim(line), maxsplit=1)
    command = parts[0].lower()
    if len(parts) < 2:
        return command, [], ""
    rest, flags = _builder_flags(parts[1])
    return command, flags, _trim(rest)


def _from_words(rest: str) -> list[str]:
    return _WHITESPACE.split(rest) if rest else []


def _stage_index(value: str) -> int | None:
    """strconv.ParseInt(value, 10, 0), or None where it fails (the value is then a name)."""
    if not re.fullmatch(r"[+-]?[0-9]+", value):
        return None
    number = int(value)
    return number if -(2**63) <= number < 2**63 else None


def check_forwarded(text: str, allowed: Collection[str], path: str) -> None:
    """Raise InputError unless each image the classic builder takes from `text` is `scratch`,
    an earlier stage or one of `allowed` (the references the proxy pinned), written out with
    no variable, quote or escape; no flag other than COPY's `--from` may name a source."""
    escape, lines = instructions(text)
    done: list[str] = []  # names (lower case, '' for none) of the stages before the current
    current: str | None = None

    def fail(line: Line, what: str) -> InputError:
        return InputError(f"{path}:{line.start}: {what}")

    for line in lines:
        command, flags, rest = split_command(line.text)
        if command == "from":
            if current is not None:
                done.append(current)
            words = _from_words(rest)
            if any(not flag.startswith("--platform=") for flag in flags):
                raise fail(line, f"FROM flags {flags} are not read by trustpull")
            if len(words) not in (1, 3) or (len(words) == 3 and words[1].lower() != "as"):
                raise fail(line, "FROM takes IMAGE [AS NAME]")
            image = words[0]
            if any(c in image for c in "$\"'" + escape):
                raise fail(line, f"FROM {image}: the engine would evaluate this reference")
            if image.lower() not in done and image != "scratch" and image not in allowed:
                raise fail(line, f"FROM {image} as the engine reads it is not a pinned image")
            current = words[2].lower() if len(words) == 3 else ""
            continue
        for flag in flags:
            if command == "copy" and flag.startswith("--from="):
                value = flag[len("--from=") :]
                index = _stage_index(value)
                if (
                    value
                    and value.lower() not in done
                    and not (index is not None and 0 <= index < len(done))
                    and value not in allowed
                ):
                    raise fail(line, f"COPY {flag} as the engine reads it is not a pinned image")
            elif _names_source(flag):
                raise fail(line, f"{command.upper()} {flag}: a source trustpull does not pin")
        if command == "onbuild" and onbuild_copies_from(rest):
            raise fail(line, "ONBUILD with --from/from=: images of a later build are not checked")


def onbuild_copies_from(trigger: str) -> bool:
    """Whether an ONBUILD trigger, as the engine parses it when it runs, has a flag naming a
    source (`--from=`, a `--mount` with `from=`), however it is quoted."""
    try:
        _, lines = instructions(trigger)
    except InputError:
        return True
    for line in lines:
        command, flags, rest = split_command(line.text)
        if command == "onbuild":
            flags = flags + split_command(rest)[1]
        if any(_names_source(flag) for flag in flags):
            return True
    return False


def _names_source(flag: str) -> bool:
    """Whether a builder flag names a build source: `--from=…` (any case: stricter than the
    engine's case-sensitive flags), or a `--mount=` with a `from` key."""
    name, _, value = flag[2:].partition("=")
    return name.lower() == "from" or (name.lower() == "mount" and "from" in value.lower())
