"""Property-based fuzzing (hypothesis) of everything that reads untrusted input (attacks.md A14,
B11, B12, I08): the metadata parser, canonical JSON, key loading and the reference parser.

The main property: on any input, only the project's typed errors (`TrustpullError` subclasses)
come out, never another exception, and every call returns quickly (the per-example deadline
catches a hang or catastrophic backtracking). Signature verification has its own: `verify` is
True exactly for the bytes that were signed, by that key, with that method.

Settings come from the hypothesis profile (tests/conftest.py): `ci` by default (derandomised,
300 examples, 512-byte inputs: the same inputs every run, well under a minute), `long` with
`--hypothesis-profile=long` (random, many examples, larger inputs). The coverage-guided fuzzers
are in fuzz/.
"""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Callable
from functools import cache
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st

from fixtures.notarygen import Repo, generate_key, sign_message
from tests.unit._trust_env import GUN, baseline_builder
from trust.errors import InvalidReferenceError, MalformedError, TrustpullError
from trust.notary.cjson import MAX_SAFE_INTEGER, encode_canonical, loads_strict
from trust.notary.keys import PublicKey
from trust.notary.metadata import (
    parse_envelope,
    parse_root,
    parse_snapshot,
    parse_targets,
    parse_timestamp,
)
from trust.reference import parse

#: Largest binary input per profile (512 bytes under `ci`); text sizes scale with it.
MAX_BYTES = {"ci": 512, "long": 8192}
BIG = MAX_BYTES.get(settings.get_current_profile_name(), 512)
SCALE = BIG // 512

ROLES = ("root", "timestamp", "snapshot", "targets", "targets/releases")

JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**60), max_value=2**60)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


@cache
def good_repo() -> Repo:
    """One generated repository with every role (targets/releases included), made once."""
    return baseline_builder(others=False).publish()


def parse_role(data: bytes, role: str) -> object:
    """What the trusted set does with a downloaded file before any trust decision."""
    envelope = parse_envelope(data, role)
    typed: dict[str, Callable[[Any], object]] = {
        "root": parse_root,
        "timestamp": parse_timestamp,
        "snapshot": parse_snapshot,
    }
    if role in typed:
        return typed[role](envelope)
    return parse_targets(envelope, role)


def only_typed_errors(call: Callable[[], object]) -> None:
    try:
        call()
    except TrustpullError:
        pass


# ------------------------------------------------------------------------------ metadata


@given(data=st.binary(max_size=BIG), role=st.sampled_from(ROLES))
def test_metadata_parser_on_arbitrary_bytes(data: bytes, role: str) -> None:
    only_typed_errors(lambda: parse_role(data, role))


@given(
    role=st.sampled_from(ROLES),
    edits=st.lists(
        st.tuples(
            st.sampled_from(["flip", "insert", "delete"]),
            st.integers(0, 1 << 16),
            st.binary(min_size=1, max_size=3),
        ),
        min_size=1,
        max_size=4,
    ),
)
def test_metadata_parser_on_mutated_real_files(
    role: str, edits: list[tuple[str, int, bytes]]
) -> None:
    data = bytearray(good_repo().role_bytes(role))
    for kind, position, blob in edits:
        at = position % (len(data) + 1)
        if kind == "flip" and at < len(data):
            data[at] ^= blob[0] or 1
        elif kind == "insert":
            data[at:at] = blob
        else:
            del data[at : at + len(blob)]
    only_typed_errors(lambda: parse_role(bytes(data), role))


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _paths(item, (*prefix, index))
    return found


@given(role=st.sampled_from(ROLES), pick=st.integers(0, 1 << 16), value=JSON_VALUES)
def test_metadata_parser_on_schema_mutations(role: str, pick: int, value: Any) -> None:
    """Valid JSON, wrong shape: any one subtree of a real document replaced by any JSON."""
    document = json.loads(good_repo().role_bytes(role))
    paths = _paths(document)
    path = paths[pick % len(paths)]
    if not path:
        document = value
    else:
        parent = document
        for step in path[:-1]:
            parent = parent[step]
        parent[path[-1]] = copy.deepcopy(value)
    data = json.dumps(document).encode()
    only_typed_errors(lambda: parse_role(data, role))


def test_schema_mutation_can_fail() -> None:
    """The harness is live: an unmodified file parses, a broken one raises a typed error."""
    for role in ROLES:
        parse_role(good_repo().role_bytes(role), role)
    with pytest.raises(MalformedError):
        parse_role(b'{"signed": [], "signatures": []}', "timestamp")


# ------------------------------------------------------------------------------ canonical JSON


def _canonical_values(text: st.SearchStrategy[str]) -> st.SearchStrategy[Any]:
    return st.recursive(
        st.none()
        | st.booleans()
        | st.integers(min_value=-MAX_SAFE_INTEGER, max_value=MAX_SAFE_INTEGER)
        | text,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
        max_leaves=20,
    )


#: Any text without lone surrogates (which JSON cannot carry in UTF-8).
ANY_TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=20)
#: ... and without control characters: canonical JSON writes those raw (as Go's encoder does),
#: and no strict JSON decoder (Go's included) reads raw control characters back.
PRINTABLE_TEXT = st.text(st.characters(exclude_categories=["Cs", "Cc"]), max_size=20)


@given(value=_canonical_values(PRINTABLE_TEXT))
def test_canonical_json_round_trips(value: Any) -> None:
    encoded = encode_canonical(value)
    decoded = loads_strict(encoded)
    assert decoded == value
    assert encode_canonical(decoded) == encoded  # a fixed point


@given(value=_canonical_values(ANY_TEXT), indent=st.none() | st.integers(0, 2))
def test_canonical_form_of_any_served_document(value: Any, indent: int | None) -> None:
    """The real flow: a server's (escaped, any layout) JSON is decoded strictly, then its
    canonical form is what signatures cover; it is the canonical form of the value."""
    served = json.dumps(value, indent=indent, ensure_ascii=indent is None).encode()
    assert encode_canonical(loads_strict(served)) == encode_canonical(value)


@given(data=st.binary(max_size=BIG // 2))
def test_loads_strict_raises_only_malformed(data: bytes) -> None:
    try:
        loads_strict(data)
    except MalformedError:
        pass


@given(text=st.text(alphabet='{}[]",:0123456789.eE+-tfnrul \\u\ud7ffa', max_size=64 * SCALE))
def test_loads_strict_on_json_like_text(text: str) -> None:
    try:
        loads_strict(text.encode("utf-8", "surrogatepass"))
    except MalformedError:
        pass


@given(value=JSON_VALUES | st.sets(st.integers(), max_size=2) | st.binary(max_size=4))
def test_encode_canonical_raises_only_malformed(value: Any) -> None:
    try:
        encode_canonical(value)
    except MalformedError:
        pass


# ------------------------------------------------------------------------------ keys

KEYTYPES = st.sampled_from(["ecdsa", "ecdsa-x509", "rsa", "rsa-x509", "ed25519", "x", ""])


def _key_objects() -> st.SearchStrategy[Any]:
    public = st.one_of(
        st.binary(max_size=300).map(lambda b: base64.b64encode(b).decode()),
        st.sampled_from([_real_public(k) for k in ("root", "targets")]),
        JSON_SCALARS,
    )
    keyval = st.fixed_dictionaries(
        {"public": public}, optional={"private": st.none() | st.text(max_size=4), "x": JSON_SCALARS}
    )
    well_formed = st.fixed_dictionaries({"keytype": KEYTYPES, "keyval": keyval})
    return well_formed | JSON_VALUES


def _real_public(role: str) -> str:
    signed = json.loads(good_repo().role_bytes("root"))["signed"]
    keyid = signed["roles"][role]["keyids"][0]
    return str(signed["keys"][keyid]["keyval"]["public"])


@given(obj=_key_objects(), message=st.binary(max_size=32), signature=st.binary(max_size=80))
def test_public_key_loading(obj: Any, message: bytes, signature: bytes) -> None:
    try:
        key = PublicKey.from_json(obj)
    except TrustpullError:
        return
    assert len(key.key_id) == 64
    for method in ("ecdsa", "rsapss", "rsapkcs1v15", "eddsa", "pycrypto-pkcs#1 pss", "?"):
        # Nobody signed `message`: arbitrary bytes are never a valid signature (and verify
        # answers a bool, never raises).
        assert key.verify(method, signature, message) is False
    only_typed_errors(key.certificates)


# ------------------------------------------------------------------------------ signatures

METHODS = ("ecdsa", "rsapss", "rsapkcs1v15", "eddsa", "pycrypto-pkcs#1 pss")


@cache
def signing_cases() -> dict[str, tuple[PublicKey, Any, str]]:
    """name → (PublicKey as the verifier loads it, the private key, the method notary uses)."""
    cases: dict[str, tuple[PublicKey, Any, str]] = {}
    plans = [
        ("ecdsa-p256", "ecdsa", "ecdsa", {}),
        ("ecdsa-p384", "ecdsa", "ecdsa", {"curve": ec.SECP384R1()}),
        ("ecdsa-x509", "ecdsa-x509", "ecdsa", {"cn": GUN}),
        ("rsa-pss", "rsa", "rsapss", {}),
        ("rsa-x509-pkcs1v15", "rsa-x509", "rsapkcs1v15", {"cn": GUN}),
        ("ed25519", "ed25519", "eddsa", {}),
    ]
    for name, keytype, method, kwargs in plans:
        key = generate_key(keytype, **kwargs)
        cases[name] = (PublicKey.from_json(key.to_dict()), key.private_key, method)
    # An `rsa` key whose public value is a PEM `PUBLIC KEY` (old pycrypto signers).
    rsa_private = cases["rsa-pss"][1]
    pem = rsa_private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    cases["rsa-pem-pycrypto"] = (PublicKey("rsa", pem), rsa_private, "pycrypto-pkcs#1 pss")
    return cases


def _mutate(data: bytes, kind: str, position: int, blob: bytes) -> bytes:
    buffer = bytearray(data)
    at = position % (len(buffer) + 1)
    if kind == "flip" and at < len(buffer):
        buffer[at] ^= blob[0] or 1
    elif kind == "insert":
        buffer[at:at] = blob
    elif kind == "delete":
        del buffer[at : at + len(blob)]
    elif kind == "truncate":
        del buffer[at:]
    return bytes(buffer)


MUTATIONS = st.lists(
    st.tuples(
        st.sampled_from(["signature", "message"]),
        st.sampled_from(["flip", "insert", "delete", "truncate", "none"]),
        st.integers(0, 1 << 16),
        st.binary(min_size=1, max_size=3),
    ),
    max_size=3,
)


@given(
    case=st.sampled_from(sorted(signing_cases())),
    message=st.binary(max_size=BIG // 4),
    mutations=MUTATIONS,
)
def test_verify_is_true_iff_the_signed_bytes(
    case: str, message: bytes, mutations: list[tuple[str, str, int, bytes]]
) -> None:
    """verify(method, sig', msg') is True exactly when sig' and msg' are the signed bytes: an
    unmodified signature verifies, any change to the signature or the message does not."""
    key, private, method = signing_cases()[case]
    signature = sign_message(private, message, method)
    sent_signature, sent_message = signature, message
    for where, kind, position, blob in mutations:
        if where == "signature":
            sent_signature = _mutate(sent_signature, kind, position, blob)
        else:
            sent_message = _mutate(sent_message, kind, position, blob)
    unchanged = sent_signature == signature and sent_message == message
    assert key.verify(method, sent_signature, sent_message) is unchanged
    # Method names are matched case-insensitively, as notary does.
    assert key.verify(method.upper(), sent_signature, sent_message) is unchanged


@given(case=st.sampled_from(sorted(signing_cases())), message=st.binary(max_size=64))
def test_a_signature_verifies_under_no_other_key_or_method(case: str, message: bytes) -> None:
    key, private, method = signing_cases()[case]
    signature = sign_message(private, message, method)
    assert key.verify(method, signature, message) is True
    for other in METHODS:
        if other != method:
            assert key.verify(other, signature, message) is False, other
    for name, (other_key, other_private, other_method) in signing_cases().items():
        if other_private is private:
            continue  # the same private key under another encoding (rsa-pem-pycrypto)
        for candidate in {method, other_method}:
            assert other_key.verify(candidate, signature, message) is False, (name, candidate)


# ------------------------------------------------------------------------------ references

REFERENCE_ALPHABET = "abcz019._-/:@ABZ[]%+ \t\n"


@given(
    text=st.text(max_size=80)
    | st.text(alphabet=REFERENCE_ALPHABET, max_size=300)
    | st.builds(
        lambda name, tag, hexes: f"{name}:{tag}@sha256:{hexes}",
        st.text(alphabet="abc./-_:0", max_size=40),
        st.text(alphabet="abc.-_0A", max_size=20),
        st.text(alphabet="0123456789abcdefA", min_size=60, max_size=68),
    ),
    default_tag=st.booleans(),
)
def test_reference_parser_raises_only_invalid_reference(text: str, default_tag: bool) -> None:
    try:
        ref = parse(text, default_tag=default_tag)
    except InvalidReferenceError:
        return
    # Whatever parses prints in a form that parses again to the same image.
    again = parse(str(ref), default_tag=default_tag)
    assert (again.name, again.tag, again.digest) == (ref.name, ref.tag, ref.digest)
    assert str(again) == str(ref)
