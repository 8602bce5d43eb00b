"""The verifier's short paths decide exactly as the strict paths they stand in for.

`cjson.decode_envelope` skips the per-object duplicate check and uses the C encoder only when
the bytes are plain and canonical; `metadata.parse_targets` takes a short path for the common
target entry. Each is checked here against the reference it replaces (`loads_strict` +
`encode_canonical`, and `_file_meta`): same value, same signed message, same error class, on
hand-written edge cases and on generated documents in every layout (benchmarks/README.md has
why the short paths exist).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trust.errors import MalformedError
from trust.notary.cjson import (
    MAX_SAFE_INTEGER,
    collection_paused,
    decode_envelope,
    encode_canonical,
    loads_strict,
)
from trust.notary.metadata import (
    Envelope,
    FileMeta,
    _file_meta,
    parse_envelope,
    parse_targets,
)

FUZZ = settings(
    derandomize=True,
    max_examples=300,
    deadline=2000,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def reference(data: bytes) -> tuple[Any, bytes | None] | type[Exception]:
    """What the verifier did before the short path: strict decode, then canonical encoding."""
    try:
        value = loads_strict(data)
        if not isinstance(value, dict) or "signed" not in value:
            return value, None
        return value, encode_canonical(value["signed"])
    except MalformedError:
        return MalformedError


def fast(data: bytes) -> tuple[Any, bytes | None] | type[Exception]:
    try:
        return decode_envelope(data)
    except MalformedError:
        return MalformedError


def assert_same(data: bytes) -> None:
    expected, got = reference(data), fast(data)
    assert got == expected, data[:200]
    if isinstance(expected, tuple) and isinstance(got, tuple):  # and equal in type (1, 1.0)
        assert repr(got[0]) == repr(expected[0])


SIGNED = {"_type": "Targets", "expires": "2030-01-01T00:00:00Z", "version": 2, "targets": {}}
SIGS = [{"keyid": "ab", "method": "ecdsa", "sig": "AAAA"}]


def canonical_envelope(signed: Any = None, signatures: Any = None, first: str = "signed") -> bytes:
    signed = SIGNED if signed is None else signed
    signatures = SIGS if signatures is None else signatures
    parts = {"signed": encode_canonical(signed), "signatures": encode_canonical(signatures)}
    second = "signatures" if first == "signed" else "signed"
    return b'{"%s":%s,"%s":%s}' % (
        first.encode(),
        parts[first],
        second.encode(),
        parts[second],
    )


CASES = {
    "canonical, signed first": canonical_envelope(),
    "canonical, signatures first": canonical_envelope(first="signatures"),
    "canonical + newline": canonical_envelope() + b"\n",
    "canonical + junk": canonical_envelope() + b"x",
    "two documents": canonical_envelope() + canonical_envelope(),
    "indented": json.dumps({"signed": SIGNED, "signatures": SIGS}, indent=2).encode(),
    "keys unsorted": b'{"signed":{"version":2,"_type":"Targets"},"signatures":[]}',
    "duplicate key inside signed": b'{"signed":{"a":1,"a":1},"signatures":[]}',
    "duplicate key, other value": b'{"signed":{"a":1,"a":2},"signatures":[]}',
    "duplicate top-level key": b'{"signed":{},"signed":{},"signatures":[]}',
    "duplicate signatures": b'{"signed":{},"signatures":[],"signatures":[]}',
    "duplicate in signatures": b'{"signed":{},"signatures":[{"a":1,"a":1}]}',
    "third member": b'{"signed":{},"signatures":[],"x":1}',
    "no signatures": b'{"signed":{}}',
    "no signed": b'{"signatures":[]}',
    "not an object": b"[1,2]",
    "2**53": b'{"signed":{"n":%d},"signatures":[]}' % MAX_SAFE_INTEGER,
    "2**53 + 1": b'{"signed":{"n":%d},"signatures":[]}' % (MAX_SAFE_INTEGER + 1),
    "-(2**53 + 1)": b'{"signed":{"n":-%d},"signatures":[]}' % (MAX_SAFE_INTEGER + 1),
    "16 digits in a string": b'{"signed":{"n":"1234567890123456"},"signatures":[]}',
    "integral float": b'{"signed":{"n":2.0},"signatures":[]}',
    "exponent": b'{"signed":{"n":1e3},"signatures":[]}',
    "fraction": b'{"signed":{"n":1.5},"signatures":[]}',
    "minus zero float": b'{"signed":{"n":-0.0},"signatures":[]}',
    "huge exponent": b'{"signed":{"n":1e400},"signatures":[]}',
    "NaN": b'{"signed":{"n":NaN},"signatures":[]}',
    "escaped quote": b'{"signed":{"s":"a\\"b"},"signatures":[]}',
    "escaped newline": b'{"signed":{"s":"a\\nb"},"signatures":[]}',
    "escaped non-ASCII": b'{"signed":{"s":"\\u00e9"},"signatures":[]}',
    "raw non-ASCII": '{"signed":{"s":"é"},"signatures":[]}'.encode(),
    "lone surrogate": b'{"signed":{"s":"\\ud800"},"signatures":[]}',
    "surrogate pair": b'{"signed":{"s":"\\ud83d\\ude00"},"signatures":[]}',
    "raw control character": b'{"signed":{"s":"a\x01b"},"signatures":[]}',
    "invalid UTF-8": b'{"signed":{"s":"\xff"},"signatures":[]}',
    "byte order mark": b"\xef\xbb\xbf" + canonical_envelope(),
    "nested 100": b'{"signed":' + b"[" * 100 + b"]" * 100 + b',"signatures":[]}',
    "nested 5000": b'{"signed":' + b"[" * 5000 + b"]" * 5000 + b',"signatures":[]}',
    "empty": b"",
}


@pytest.mark.parametrize("name", list(CASES))
def test_decode_envelope_matches_the_strict_path(name: str) -> None:
    assert_same(CASES[name])


def test_the_short_path_is_taken_for_canonical_input(monkeypatch: pytest.MonkeyPatch) -> None:
    """Canonical plain bytes never reach the strict decoder; anything else always does."""
    calls: list[str] = []
    import trust.notary.cjson as cjson

    real = cjson._loads_text

    def recording(text: str) -> Any:
        calls.append(text)
        return real(text)

    monkeypatch.setattr(cjson, "_loads_text", recording)
    decode_envelope(CASES["canonical, signed first"])
    decode_envelope(CASES["canonical, signatures first"])
    assert calls == []
    for name in ("duplicate key inside signed", "escaped quote", "2**53 + 1", "indented"):
        fast(CASES[name])
        assert calls, name
        calls.clear()


def test_signatures_cover_the_same_message_on_both_paths() -> None:
    data = CASES["canonical, signed first"]
    envelope = parse_envelope(data, "targets")
    assert isinstance(envelope, Envelope)
    assert envelope.message == encode_canonical(SIGNED)
    assert envelope.message == data[len(b'{"signed":') : len(b'{"signed":') + len(envelope.message)]


def test_collection_paused_restores_the_collector() -> None:
    import gc

    assert gc.isenabled()
    with collection_paused():
        assert not gc.isenabled()
        with collection_paused():  # nested: the inner one leaves it to the outer one
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(MalformedError), collection_paused():
        raise MalformedError("x")
    assert gc.isenabled()


# ------------------------------------------------------------------------ generated documents

TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)
VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**60), max_value=2**60)
    | st.floats(allow_nan=False, allow_infinity=False)
    | TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=16,
)


def _layouts(signed: Any, signatures: Any) -> list[bytes]:
    out = []
    for ascii_only in (True, False):
        for indent in (None, 1):
            text = json.dumps(
                {"signed": signed, "signatures": signatures},
                ensure_ascii=ascii_only,
                indent=indent,
                separators=None if indent else (",", ":"),
            )
            out.append(text.encode("utf-8", "surrogatepass"))
    try:
        out.append(canonical_envelope(signed, signatures))
        out.append(canonical_envelope(signed, signatures, first="signatures"))
    except MalformedError:
        pass
    return out


@FUZZ
@given(signed=VALUES, signatures=VALUES)
def test_generated_envelopes_in_every_layout(signed: Any, signatures: Any) -> None:
    for data in _layouts(signed, signatures):
        assert_same(data)


@FUZZ
@given(signed=st.dictionaries(TEXT, VALUES, min_size=1, max_size=4), extra=VALUES)
def test_a_duplicated_key_is_refused_in_every_layout(signed: dict[str, Any], extra: Any) -> None:
    key = next(iter(signed))
    for data in _layouts(signed, []):
        encoded_key = json.dumps(key, ensure_ascii=False).encode("utf-8", "surrogatepass")
        if not data.startswith(b'{"signed":{'):
            continue
        head = len(b'{"signed":{')
        duplicate = encoded_key + b":" + json.dumps(extra).encode() + b","
        assert fast(data[:head] + duplicate + data[head:]) is MalformedError


@FUZZ
@given(data=st.binary(max_size=200))
def test_arbitrary_bytes(data: bytes) -> None:
    assert_same(data)


@FUZZ
@given(text=st.text(alphabet='{}[]",:0123456789.eE+-tfnrul \\u\ud7ffasigned', max_size=64))
def test_json_like_text(text: str) -> None:
    assert_same(text.encode("utf-8", "surrogatepass"))
    assert_same(('{"signed":' + text + ',"signatures":[]}').encode("utf-8", "surrogatepass"))


# ------------------------------------------------------------------------ target entries

DIGEST = hashlib.sha256(b"3").digest()  # its base64 has "+", "/" and "A"
B64 = base64.b64encode(DIGEST).decode()
SHA512 = base64.b64encode(bytes(64)).decode()
URL_SAFE = B64.replace("+", "-").replace("/", "_")

ENTRIES: dict[str, Any] = {
    "common": {"length": 3, "hashes": {"sha256": B64}},
    "length 0": {"length": 0, "hashes": {"sha256": B64}},
    "length 2**53": {"length": MAX_SAFE_INTEGER, "hashes": {"sha256": B64}},
    "length 2**53 + 1": {"length": MAX_SAFE_INTEGER + 1, "hashes": {"sha256": B64}},
    "negative length": {"length": -1, "hashes": {"sha256": B64}},
    "length true": {"length": True, "hashes": {"sha256": B64}},
    "length float": {"length": 3.0, "hashes": {"sha256": B64}},
    "length string": {"length": "3", "hashes": {"sha256": B64}},
    "with custom": {"length": 3, "hashes": {"sha256": B64}, "custom": {"a": 1}},
    "custom null": {"length": 3, "hashes": {"sha256": B64}, "custom": None},
    "case alias": {"length": 3, "Length": 4, "hashes": {"sha256": B64}},
    "only alias": {"Length": 3, "hashes": {"sha256": B64}},
    "extra key": {"length": 3, "hashes": {"sha256": B64}, "x": 1},
    "no hashes": {"length": 3},
    "hashes a list": {"length": 3, "hashes": [B64]},
    "empty hashes": {"length": 3, "hashes": {}},
    "sha512 too": {"length": 3, "hashes": {"sha256": B64, "sha512": SHA512}},
    "sha512 only": {"length": 3, "hashes": {"sha512": SHA512}},
    "unknown algorithm": {"length": 3, "hashes": {"md5": "AAAA"}},
    "unknown algorithm, bad base64": {"length": 3, "hashes": {"md5": "A"}},
    "short digest": {"length": 3, "hashes": {"sha256": base64.b64encode(DIGEST[:31]).decode()}},
    "long digest": {"length": 3, "hashes": {"sha256": base64.b64encode(DIGEST + b"x").decode()}},
    "newline in base64": {"length": 3, "hashes": {"sha256": B64[:20] + "\n" + B64[20:]}},
    "CRLF in base64": {"length": 3, "hashes": {"sha256": B64[:20] + "\r\n" + B64[20:]}},
    "no padding": {"length": 3, "hashes": {"sha256": B64.rstrip("=")}},
    "extra padding": {"length": 3, "hashes": {"sha256": B64 + "="}},
    "url-safe alphabet": {"length": 3, "hashes": {"sha256": URL_SAFE}},
    "space inside": {"length": 3, "hashes": {"sha256": B64[:43].replace("A", " ", 1) + "="}},
    "non-ASCII": {"length": 3, "hashes": {"sha256": "é" * 43 + "="}},
    "digest a number": {"length": 3, "hashes": {"sha256": 5}},
    "not an object": [3, B64],
    "null": None,
}


def _targets_envelope(entry: Any) -> Envelope:
    signed = {
        "_type": "Targets",
        "version": 1,
        "expires": "2030-01-01T00:00:00Z",
        "targets": {"tag": entry},
    }
    return Envelope(raw=b"", signed=signed, signatures=(), message=b"")


@pytest.mark.parametrize("name", list(ENTRIES))
def test_target_entries_match_file_meta(name: str) -> None:
    entry = ENTRIES[name]
    try:
        expected: FileMeta | type[Exception] = _file_meta(entry, "targets.targets['tag']")
    except MalformedError:
        expected = MalformedError
    try:
        got: FileMeta | type[Exception] = parse_targets(
            _targets_envelope(entry), "targets"
        ).targets["tag"]
    except MalformedError:
        got = MalformedError
    assert got == expected


def test_target_files_mapping_behaves_like_a_read_only_dict() -> None:
    signed = {
        "_type": "Targets",
        "version": 1,
        "expires": dt.datetime(2030, 1, 1).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "targets": {"a": ENTRIES["common"], "b": ENTRIES["with custom"]},
    }
    files = parse_targets(Envelope(b"", signed, (), b""), "targets").targets
    assert list(files) == ["a", "b"] and len(files) == 2
    assert "a" in files and "c" not in files and files.get("c") is None
    assert files["a"] == FileMeta(3, {"sha256": DIGEST})
    assert files["b"].custom == {"a": 1}
    assert dict(files.items()) == {"a": files["a"], "b": files["b"]}
    with pytest.raises(KeyError):
        files["c"]
    with pytest.raises(TypeError):
        files["a"] = files["b"]  # type: ignore[index]
