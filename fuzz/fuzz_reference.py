"""Fuzz target: image references and reference patterns (trust/reference.py).

Input: UTF-8 text (invalid bytes replaced). Every parser either returns or raises
`InvalidReferenceError`; whatever `parse` accepts prints as a reference that parses again to the
same name, tag and digest. Text after a NUL is a glob pattern for `familiar_match`, which may
also raise the ValueError("syntax error in pattern") its contract names (Go's path.Match).
Seeds: every input of shared/realworld/reference-vectors.json (distribution/reference's tests).
"""

from __future__ import annotations

import json
from collections.abc import Iterator

from _common import REFERENCE_VECTORS, main
from _instrument import instrumented

with instrumented():
    from trust.errors import InvalidReferenceError
    from trust.reference import (
        familiar_match,
        parse,
        parse_any_reference,
        parse_docker_ref,
        parse_named,
        parse_normalized_named,
        parse_reference,
    )

MAX_LEN = 1024


def seeds() -> Iterator[bytes]:
    cases = json.loads(REFERENCE_VECTORS.read_bytes())["cases"]
    for case in cases:
        text = case.get("input")
        if isinstance(text, str):
            yield text.encode("utf-8", "surrogatepass")
            name = (case.get("expected") or {}).get("name")
            if isinstance(name, str) and name:
                yield f"{text}\0{name.rsplit('/', 1)[0]}/*".encode("utf-8", "surrogatepass")


def one_input(data: bytes) -> None:
    text, _, pattern = data.decode("utf-8", "replace").partition("\0")
    for parser in (parse_reference, parse_named, parse_normalized_named, parse_docker_ref):
        try:
            parser(text)
        except InvalidReferenceError:
            pass
    for default_tag in (True, False):
        try:
            ref = parse(text, default_tag=default_tag)
        except InvalidReferenceError:
            continue
        again = parse(str(ref), default_tag=default_tag)
        if (again.name, again.tag, again.digest) != (ref.name, ref.tag, ref.digest):
            raise AssertionError(f"{text!r} prints as {ref} which parses differently")
    try:
        any_ref = parse_any_reference(text)
    except InvalidReferenceError:
        return
    if pattern:
        try:
            familiar_match(pattern, any_ref)
        except ValueError as exc:
            if "syntax error in pattern" not in str(exc):
                raise


if __name__ == "__main__":
    main(one_input)
