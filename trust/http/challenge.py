"""`WWW-Authenticate` parsing (RFC 7235 syntax, docker's lower-casing): pure, no I/O."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

__all__ = ["Challenge", "parse_challenges"]


@dataclass(frozen=True)
class Challenge:
    """One `WWW-Authenticate` challenge; scheme and parameter names are lower-cased (docker)."""

    scheme: str
    params: Mapping[str, str] = field(default_factory=dict)


_TOKEN_CHARS = frozenset(
    "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
)


def _skip_space(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t":
        pos += 1
    return pos


def _read_token(text: str, pos: int) -> tuple[str, int]:
    start = pos
    while pos < len(text) and text[pos] in _TOKEN_CHARS:
        pos += 1
    return text[start:pos], pos


def _read_quoted(text: str, pos: int) -> tuple[str, int]:
    """A quoted-string starting at `text[pos] == '"'`; backslash escapes one character."""
    out: list[str] = []
    pos += 1
    while pos < len(text):
        char = text[pos]
        if char == "\\" and pos + 1 < len(text):
            out.append(text[pos + 1])
            pos += 2
            continue
        if char == '"':
            return "".join(out), pos + 1
        out.append(char)
        pos += 1
    return "".join(out), pos  # unterminated: keep what there is, like docker's parser


def parse_challenges(headers: Iterable[str]) -> list[Challenge]:
    """Parse every challenge of every `WWW-Authenticate` header value (RFC 7235 syntax).

    One header may carry several challenges separated by commas; a new challenge starts at a
    token that is not followed by `=`. Malformed pieces are skipped rather than guessed at.
    """
    result: list[Challenge] = []
    for header in headers:
        text = header
        pos = 0
        scheme: str | None = None
        params: dict[str, str] = {}
        while pos < len(text):
            pos = _skip_space(text, pos)
            if pos < len(text) and text[pos] == ",":
                pos += 1
                continue
            word, after = _read_token(text, pos)
            if not word:
                pos += 1  # junk character: skip it
                continue
            probe = _skip_space(text, after)
            if probe < len(text) and text[probe] == "=" and scheme is not None:
                value_pos = _skip_space(text, probe + 1)
                if value_pos < len(text) and text[value_pos] == '"':
                    value, pos = _read_quoted(text, value_pos)
                else:
                    value, pos = _read_token(text, value_pos)
                    if not value:  # token68 padding such as "abc==": not a parameter
                        pos = value_pos
                        while pos < len(text) and text[pos] not in ", \t":
                            pos += 1
                        continue
                params[word.lower()] = value
                continue
            if probe < len(text) and text[probe] == "=":
                pos = probe + 1  # a parameter before any scheme: ignore it
                continue
            if scheme is not None:
                result.append(Challenge(scheme, params))
            scheme, params, pos = word.lower(), {}, after
        if scheme is not None:
            result.append(Challenge(scheme, params))
    return result
