"""Fuzz target: the strict JSON decoder and canonical JSON encoder (trust/notary/cjson.py).

Input: raw bytes as a server would send them. `loads_strict` either decodes them or raises
`MalformedError`; whatever it decodes, `encode_canonical` encodes (or refuses with a typed
error), and the canonical form is a fixed point: decoding and re-encoding it gives the same
bytes (unless it holds raw control characters, which canonical JSON writes as Go does and no
strict decoder reads back, or a float beyond 2**53, which it writes as an integer literal).
Seeds: every JSON file of shared/realworld (trust data and the reference vectors).
"""

from __future__ import annotations

from collections.abc import Iterator

from _common import REFERENCE_VECTORS, main, realworld_files
from _instrument import instrumented

with instrumented():
    from trust.errors import MalformedError, TrustpullError
    from trust.notary.cjson import encode_canonical, loads_strict

MAX_LEN = 32768


def seeds() -> Iterator[bytes]:
    for path in realworld_files():
        yield path.read_bytes()
    if REFERENCE_VECTORS.is_file():
        yield REFERENCE_VECTORS.read_bytes()


def one_input(data: bytes) -> None:
    try:
        value = loads_strict(data)
    except MalformedError:
        return
    try:
        encoded = encode_canonical(value)
    except TrustpullError:
        return
    if any(byte < 0x20 for byte in encoded):
        return
    try:
        again = loads_strict(encoded)
    except MalformedError:
        # A decoded float beyond 2**53 is written as Go writes it, an integer literal, which
        # the strict decoder then refuses (> 2**53): not a fixed point, and not a contract.
        return
    if encode_canonical(again) != encoded:
        raise AssertionError("canonical JSON is not a fixed point")


if __name__ == "__main__":
    main(one_input)
