"""Strict JSON decoding and Go-compatible canonical JSON (shared/spec/dct.md §3).

Notary verifies a signature over the canonical re-encoding of the decoded `signed` value, not over
the file's bytes (checksums, on the other hand, cover the raw bytes). The decoder here is stricter
than Go's where Go silently repairs input (dct.md §3.4): it refuses invalid UTF-8, lone
surrogates, NaN/Infinity, duplicate keys and integers above 2**53, so that the verifier and any
consumer can never read two different values out of one document.
"""

from __future__ import annotations

import json
import math
import re
from decimal import Decimal, InvalidOperation
from typing import Any

from trust.errors import MalformedError

__all__ = ["MAX_SAFE_INTEGER", "JSONFloat", "encode_canonical", "loads_strict"]

#: Go decodes numbers through float64: larger integers do not survive canonicalisation.
MAX_SAFE_INTEGER = 2**53

_SURROGATE = re.compile("[\ud800-\udfff]")


class JSONFloat(Decimal):
    """A number written with a fraction or exponent (`2.0`, `1e3`): never a valid integer field."""


def _parse_int(text: str) -> int:
    value = int(text)
    if abs(value) > MAX_SAFE_INTEGER:
        raise MalformedError(f"integer {text[:40]} is larger than 2**53")
    return value


def _parse_float(text: str) -> JSONFloat:
    try:
        return JSONFloat(text)
    except InvalidOperation as exc:  # pragma: no cover - json only hands us valid numbers
        raise MalformedError(f"invalid number {text[:40]}") from exc


def _reject_constant(name: str) -> Any:
    raise MalformedError(f"invalid JSON literal {name}")


def _object_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise MalformedError(f"duplicate JSON key {key!r}")
        if _SURROGATE.search(key):
            raise MalformedError("JSON key holds a lone surrogate")
        result[key] = value
    return result


def _check_strings(value: Any) -> None:
    """Refuse lone surrogates (from `\\ud800` escapes) anywhere in the document."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                raise MalformedError("JSON string holds a lone surrogate")
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def loads_strict(data: bytes) -> Any:
    """Decode UTF-8 JSON bytes strictly; raise `MalformedError` on anything Go would repair."""
    if not isinstance(data, bytes | bytearray):
        raise MalformedError("JSON input must be bytes")
    try:
        text = bytes(data).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedError(f"metadata is not valid UTF-8: {exc.reason}") from None
    if text.startswith("\ufeff"):
        raise MalformedError("metadata starts with a byte order mark")
    try:
        value = json.loads(
            text,
            object_pairs_hook=_object_pairs,
            parse_int=_parse_int,
            parse_float=_parse_float,
            parse_constant=_reject_constant,
        )
    except MalformedError:
        raise
    except (ValueError, RecursionError) as exc:
        raise MalformedError(f"invalid JSON: {str(exc)[:200]}") from None
    _check_strings(value)
    return value


def _encode_string(value: str, out: list[bytes]) -> None:
    out.append(b'"')
    out.append(value.replace("\\", "\\\\").replace('"', '\\"').encode("utf-8"))
    out.append(b'"')


def _encode_number(value: int | Decimal | float) -> bytes:
    if isinstance(value, int):
        return str(value).encode("ascii")
    as_float = float(value)
    if not math.isfinite(as_float) or as_float != int(as_float):
        # Go's canonical encoder refuses non-integral floats: such a document cannot be signed.
        raise MalformedError(f"number {value} cannot be canonicalised (not an integer)")
    return str(int(as_float)).encode("ascii")


def _encode(value: Any, out: list[bytes], depth: int) -> None:
    if depth > 512:
        raise MalformedError("JSON nested too deeply")
    if value is None:
        out.append(b"null")
    elif value is True:
        out.append(b"true")
    elif value is False:
        out.append(b"false")
    elif isinstance(value, str):
        _encode_string(value, out)
    elif isinstance(value, int | float | Decimal):
        out.append(_encode_number(value))
    elif isinstance(value, list | tuple):
        out.append(b"[")
        for index, item in enumerate(value):
            if index:
                out.append(b",")
            _encode(item, out, depth + 1)
        out.append(b"]")
    elif isinstance(value, dict):
        out.append(b"{")
        # Go sorts map keys by their UTF-8 bytes (identical to code point order for valid text).
        for index, key in enumerate(sorted(value, key=lambda k: k.encode("utf-8"))):
            if not isinstance(key, str):
                raise MalformedError("JSON object keys must be strings")
            if index:
                out.append(b",")
            _encode_string(key, out)
            out.append(b":")
            _encode(value[key], out, depth + 1)
        out.append(b"}")
    else:
        raise MalformedError(f"cannot canonicalise a {type(value).__name__}")


def encode_canonical(value: Any) -> bytes:
    """Canonical JSON bytes as docker/go's `MarshalCanonical` produces them (dct.md §3.1)."""
    out: list[bytes] = []
    _encode(value, out, 0)
    return b"".join(out)
