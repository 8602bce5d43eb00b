"""The head parsers' one-pass checks against a line-by-line reference (random header blocks).

`framing.check_head` and `framing.parse_response_head` validate a whole header block with one
pattern and fall back to line-by-line checks only to name what is wrong. This reads the same
blocks with an independent line-by-line reader written from the rules (RFC 9112 §5: a token,
a colon, a value free of control bytes other than HTAB; no bare CR or LF, no empty line, no
folding) and requires the same headers, or a refusal, from both.
"""

from __future__ import annotations

import random
import re

import pytest

from trust.proxy.framing import HeadError, HTTPRefusal, check_head, parse_response_head

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")


def _reference(block: bytes) -> list[tuple[bytes, bytes]] | None:
    """The (name, value) pairs of a header block (each line after its CRLF), or None."""
    if not block:
        return []
    if not block.startswith(b"\r\n"):
        return None
    out = []
    for line in block[2:].split(b"\r\n"):
        if b"\r" in line or b"\n" in line or b":" not in line:
            return None
        name, _, value = line.partition(b":")
        if _TOKEN.fullmatch(name) is None:
            return None
        value = value.strip(b" \t")
        if _CONTROL.search(value):
            return None
        out.append((name, value))
    return out


_PIECES = [
    b"Host",
    b"X-A",
    b"content-type",
    b":",
    b" ",
    b"\t",
    b"\r\n",
    b"\r",
    b"\n",
    b"\x00",
    b"\x7f",
    b"\xff",
    b"value",
    b"a:b",
    b"\x01",
    b"",
]


def _blocks(seed: int, count: int) -> list[bytes]:
    rng = random.Random(seed)
    blocks = []
    for _ in range(count):
        lines = []
        for _ in range(rng.randint(0, 4)):
            if rng.random() < 0.7:
                lines.append(rng.choice([b"X-A", b"Host", b"User-Agent"]) + b": " + b"v" * 3)
            else:
                lines.append(b"".join(rng.choice(_PIECES) for _ in range(rng.randint(0, 6))))
        blocks.append(b"".join(b"\r\n" + line for line in lines))
    return blocks


@pytest.mark.parametrize("seed", range(4))
def test_request_heads_match_the_line_reader(seed: int) -> None:
    for block in _blocks(seed, 5000):
        expected = _reference(block)
        if expected is None or all(n.lower() != b"host" for n, _ in expected):
            block = b"\r\nHost: x" + block
            expected = _reference(block)
        raw = b"GET /_ping HTTP/1.1" + block
        try:
            head = check_head(raw)
        except HTTPRefusal:
            assert expected is None or _framing_refused(expected), block
            continue
        assert expected is not None, block
        assert list(head.headers) == [(n.lower(), v) for n, v in expected], block


def _framing_refused(headers: list[tuple[bytes, bytes]]) -> bool:
    """Well-formed lines that the framing rules refuse (a repeated Host or Content-Type, a
    Content-Type that is not ASCII (X13b)…)."""
    names = [n.lower() for n, _ in headers]
    return (
        any(names.count(n) > 1 for n in (b"host", b"content-type"))
        or any(n == b"connection" or n == b"expect" for n in names)
        or any(n.lower() == b"content-type" and not v.isascii() for n, v in headers)
    )


@pytest.mark.parametrize("seed", range(4))
def test_answer_heads_match_the_line_reader(seed: int) -> None:
    for block in _blocks(seed + 100, 5000):
        expected = _reference(block)
        try:
            head = parse_response_head(b"HTTP/1.1 200 OK" + block)
        except HeadError:
            assert expected is None, block
            continue
        assert expected is not None, block
        assert list(head.headers) == expected, block
