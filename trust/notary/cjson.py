"""Strict JSON decoding and Go-compatible canonical JSON (shared/spec/dct.md §3).

Notary verifies a signature over the canonical re-encoding of the decoded `signed` value, not over
the file's bytes (checksums, on the other hand, cover the raw bytes). The decoder here is stricter
than Go's where Go silently repairs input (dct.md §3.4): it refuses invalid UTF-8, lone
surrogates, NaN/Infinity, duplicate keys and integers above 2**53, so that the verifier and any
consumer can never read two different values out of one document.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import json
import math
import re
from collections.abc import Iterator
from decimal import Decimal, InvalidOperation
from typing import Any

from trust.errors import MalformedError

__all__ = [
    "MAX_SAFE_INTEGER",
    "JSONFloat",
    "collection_paused",
    "decode_envelope",
    "encode_canonical",
    "loads_strict",
]

#: Go decodes numbers through float64: larger integers do not survive canonicalisation.
MAX_SAFE_INTEGER = 2**53


@functools.cache
def _surrogate() -> re.Pattern[str]:
    """Compiled on first use: a warm run that only reads plain documents never needs it."""
    return re.compile("[\ud800-\udfff]")


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
        if _surrogate().search(key):
            raise MalformedError("JSON key holds a lone surrogate")
        result[key] = value
    return result


def _check_strings(value: Any) -> None:
    """Refuse lone surrogates (from `\\ud800` escapes) anywhere in the document."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if _surrogate().search(item):
                raise MalformedError("JSON string holds a lone surrogate")
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _utf8(data: bytes) -> str:
    if not isinstance(data, bytes | bytearray):
        raise MalformedError("JSON input must be bytes")
    try:
        text = bytes(data).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedError(f"metadata is not valid UTF-8: {exc.reason}") from None
    if text.startswith("\ufeff"):
        raise MalformedError("metadata starts with a byte order mark")
    return text


def _loads_text(text: str) -> Any:
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


def loads_strict(data: bytes) -> Any:
    """Decode UTF-8 JSON bytes strictly; raise `MalformedError` on anything Go would repair."""
    return _loads_text(_utf8(data))


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


def _encode(value: Any, out: list[bytes]) -> None:
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
            _encode(item, out)
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
            _encode(value[key], out)
        out.append(b"}")
    else:
        raise MalformedError(f"cannot canonicalise a {type(value).__name__}")


def encode_canonical(value: Any) -> bytes:
    """Canonical JSON bytes as docker/go's `MarshalCanonical` produces them (dct.md §3.1).

    Nesting is bounded by the interpreter's recursion limit, as in the decoder (which meets the
    same limit first for anything decoded): deeper is `MalformedError`, never `RecursionError`.
    """
    out: list[bytes] = []
    try:
        _encode(value, out)
    except RecursionError:
        raise MalformedError("JSON nested too deeply") from None
    return b"".join(out)


# --------------------------------------------------------------------------- the fast path
#
# Nearly all metadata is *plain*: no backslash anywhere (so no escape sequence, hence no control
# character, quote, backslash or surrogate inside any decoded string) and no run of 16 digits
# (so no integer beyond 2**53, which has 16). For values decoded from a plain document, the
# standard library's C encoder with `ensure_ascii=False, sort_keys=True, separators=(",", ":")`
# writes exactly what Go's canonical encoder writes (dct.md §3.1): strings copied raw between
# quotes, keys sorted by code point (= UTF-8 byte order when there are no surrogates), integers
# in decimal; numbers with a fraction or exponent go through `_plain_number`, `_encode_number`'s
# rule. dct.md §3.4 row 7 warns against `json.dumps` in general: the precondition rules out
# every reason it gives (escaped control characters, escaped non-ASCII, floats as `1.0`).
#
# When a plain envelope's bytes *are* the canonical encoding of what they decode to (notary
# writes them that way), they hold no duplicate key either: a canonical encoding has one entry
# per key, and equal bytes cannot hold more. That equality lets `decode_envelope` skip
# `loads_strict`'s per-object duplicate check, its slowest part; any other input takes the
# strict path unchanged. Either way the decoded value and the signed message are the same.

_DIGITS_AS_ZERO = bytes(0x30 if 0x30 <= b <= 0x39 else b for b in range(256))
_LONG_DIGIT_RUN = b"0" * 16
_SIGNED_FIRST = b'{"signed":'
_SIGNATURES_NEXT = b',"signatures":'
_SIGNATURES_FIRST = b'{"signatures":'
_SIGNED_NEXT = b',"signed":'
_JSON_SPACE = b" \t\n\r"


@contextlib.contextmanager
def collection_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while a large document's objects are built.

    Decoding 100,000 targets allocates some 400,000 containers, none in a cycle; the collector
    would walk the growing heap (and everything else the process holds) again and again for
    nothing: a third of the CPU time at 100,000 tags, more at 10,000 in a process with a big
    heap (benchmarks/README.md). It is only paused, never left off: whoever paused
    it resumes it, so with threads it can at worst run a little earlier than it would have.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _is_plain(data: bytes) -> bool:
    return b"\\" not in data and _LONG_DIGIT_RUN not in data.translate(_DIGITS_AS_ZERO)


def _plain_number(value: object) -> int:
    """`json.dumps` hands over what it cannot encode: only JSONFloat, from `parse_float`."""
    if isinstance(value, Decimal):
        as_float = float(value)
        if not math.isfinite(as_float) or as_float != int(as_float):
            raise MalformedError(f"number {value} cannot be canonicalised (not an integer)")
        return int(as_float)
    raise MalformedError(f"cannot canonicalise a {type(value).__name__}")


def _encode_plain(value: Any) -> bytes:
    """`encode_canonical(value)` for a value decoded from a plain document (see above)."""
    try:
        text = json.dumps(
            value,
            ensure_ascii=False,
            sort_keys=True,
            separators=(",", ":"),
            check_circular=False,
            default=_plain_number,
        )
    except RecursionError:
        raise MalformedError("JSON nested too deeply") from None
    return text.encode("utf-8")


def _canonical_layout(data: bytes, first: bytes, middle: bytes, a: bytes, b: bytes) -> bool:
    """`data` is `first + a + middle + b + "}"`, then JSON whitespace only."""
    end = len(first) + len(a) + len(middle) + len(b) + 1
    return (
        len(data) >= end
        and data.startswith(first)
        and data.startswith(a, len(first))
        and data.startswith(middle, len(first) + len(a))
        and data.startswith(b, end - 1 - len(b))
        and data[end - 1] == 0x7D  # "}"
        and not data[end:].strip(_JSON_SPACE)
    )


def decode_envelope(data: bytes) -> tuple[Any, bytes | None]:
    """`loads_strict(data)` for a signed envelope, and the canonical bytes of its `signed`.

    The message is None when the document is not an object with a `signed` member (the
    caller's schema check refuses it). Same value, same message and same errors as
    `loads_strict` followed by `encode_canonical`, only faster for notary's own output.
    """
    with collection_paused():
        return _decode_envelope(data)


def _decode_envelope(data: bytes) -> tuple[Any, bytes | None]:
    text = _utf8(data)
    plain = _is_plain(bytes(data))
    if plain:
        try:
            value = json.loads(text, parse_float=_parse_float, parse_constant=_reject_constant)
        except MalformedError:
            raise
        except (ValueError, RecursionError) as exc:
            raise MalformedError(f"invalid JSON: {str(exc)[:200]}") from None
        if type(value) is dict and len(value) == 2 and "signed" in value and "signatures" in value:
            try:
                message = _encode_plain(value["signed"])
                signatures = _encode_plain(value["signatures"])
            except MalformedError:  # the strict path below says what is wrong, as it always did
                message = signatures = b""
            if message and (
                _canonical_layout(data, _SIGNED_FIRST, _SIGNATURES_NEXT, message, signatures)
                or _canonical_layout(data, _SIGNATURES_FIRST, _SIGNED_NEXT, signatures, message)
            ):
                return value, message
        del value
    value = _loads_text(text)  # the strict decoder decides, errors included
    if not isinstance(value, dict) or "signed" not in value:
        return value, None
    encode = _encode_plain if plain else encode_canonical
    return value, encode(value["signed"])
