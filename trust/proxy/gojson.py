"""JSON bodies as Go's encoding/json reads them into the engine's structs (engine-proxy.md §1.4).

Object keys match field names case-insensitively (Unicode simple folding: `Ho\\u017ftConfig` is
`HostConfig`) and the LAST matching key wins. Objects are kept as ordered pair lists, so the
proxy sees every duplicate; it decides on the effective value and forwards a body it serialised
itself, with the fields it rewrote under their canonical names and every other pair in order.

"Last wins" holds only for scalars: Go decodes a repeated object (or array) INTO the value the
first one set (`{"HostConfig":{"Binds":[…]},"hostconfig":{}}` keeps the binds) and a `null` into
a string or struct field has no effect (`{"Image":"evil","Image":null}` creates from `evil`), so a
field given more than once with an object, array or null value is refused (`get`).
"""

from __future__ import annotations

import json
from typing import Any

from trust.proxy.framing import HTTPRefusal

__all__ = ["Obj", "dumps", "get", "get_key", "loads", "set_field"]


class Obj(list[tuple[str, Any]]):
    """A JSON object as its ordered (key, value) pairs, duplicates included."""


def _fold(key: str) -> str:
    """Go's `foldName` for matching ASCII field names: ASCII letters upper-cased, U+017F (long
    s) and U+212A (Kelvin sign) folded to `S` and `K` (their simple-folding orbits), every
    other rune kept. Not `casefold()`: it maps U+FB06 (the st ligature) to `st`, so
    `Ho\\ufb06Config` would be a decoy `HostConfig` the proxy reads and the engine ignores."""
    return "".join(
        "S" if c == "\u017f" else "K" if c == "\u212a" else c.upper() if c < "\x80" else c
        for c in key
    )


def _pairs(pairs: list[tuple[str, Any]]) -> Obj:
    return Obj(pairs)


def _no_constants(name: str) -> Any:
    raise HTTPRefusal(400, f"trustpull: {name} is not JSON")


def loads(body: bytes) -> Any:
    """Decode strictly: UTF-8 only, one value, nothing after it but whitespace (X19)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise HTTPRefusal(400, "trustpull: JSON body is not UTF-8") from None
    decoder = json.JSONDecoder(object_pairs_hook=_pairs, parse_constant=_no_constants)
    try:
        value, end = decoder.raw_decode(text.lstrip(" \t\r\n"))
    except ValueError as exc:
        raise HTTPRefusal(400, f"trustpull: invalid JSON body: {exc}") from None
    rest = text.lstrip(" \t\r\n")[end:]
    if rest.strip(" \t\r\n"):
        raise HTTPRefusal(400, "trustpull: unexpected content after the JSON body")
    return value


def get(obj: Any, name: str) -> Any:
    """The value the engine decodes into field `name`: last case-insensitive match, or None.

    Refused (400) when `name` is matched more than once and any match is an object, an array
    or null: Go merges those or ignores the null, so no single pair is what the engine uses."""
    if not isinstance(obj, Obj):
        return None
    matches = [value for key, value in obj if _fold(key) == _fold(name)]
    if len(matches) > 1 and any(v is None or isinstance(v, list) for v in matches):
        raise HTTPRefusal(
            400,
            f"trustpull: JSON field {name} is given {len(matches)} times with an object, "
            "array or null value (the engine would merge them or ignore the null) [Input]",
        )
    return matches[-1] if matches else None


def get_key(obj: Any, key: str) -> Any:
    """The value of map key `key` (a Go map: exact key, no folding, last wins), or None."""
    if not isinstance(obj, Obj):
        return None
    found = None
    for k, value in obj:
        if k == key:
            found = value
    return found


def set_field(obj: Obj, name: str, value: Any) -> None:
    """Replace every pair that matches `name` by one canonical pair at the last one's place."""
    folded = _fold(name)
    places = [i for i, (key, _) in enumerate(obj) if _fold(key) == folded]
    if not places:
        obj.append((name, value))
        return
    last = places[-1]
    obj[last] = (name, value)
    for index in reversed(places[:-1]):
        del obj[index]


def dumps(value: Any) -> bytes:
    return _dump(value).encode("utf-8")


def _dump(value: Any) -> str:
    if isinstance(value, Obj):
        return "{" + ",".join(f"{json.dumps(k)}:{_dump(v)}" for k, v in value) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_dump(v) for v in value) + "]"
    return json.dumps(value)
