"""trust.notary.signatures: envelope parsing and threshold verification (dct.md §2.4)."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from tests.unit._notary_helpers import (
    TRUSTDATA,
    PrivateKey,
    cert_key,
    ec_key,
    load_json,
    make_cert,
    plain_key,
    rsa_key,
    sign,
    trustdata,
)
from trust.errors import MalformedError, SignatureError, ThresholdError
from trust.notary.cjson import encode_canonical
from trust.notary.keys import PublicKey
from trust.notary.signatures import Signature, parse_signatures, verify_threshold

SIGNED: dict[str, Any] = {"_type": "Timestamp", "version": 3, "meta": {"snapshot": {}}}

#: set → folder holding its metadata (shared/realworld/README.md, "files" column).
REAL_SETS = {
    "notary-fixture-0.1": "tuf/docker.com/notary0.1/samplerepo/metadata",
    "notary-fixture-0.3": "tuf/docker.com/notary0.3/tst/metadata",
    "docker-library-alpine-2018": ".",
    "dockertrusttest-busybox-good": ".",
    "dockertrusttest-busybox-bad": ".",
    "harbor-busybox-2017-03-07": "valid",
    "harbor-busybox-2017-03-15": "valid",
    "harbor-busybox-2020-02-24": "valid",
    "connaisseur-sample-image": "_compact",
    "connaisseur-alice-image": "_compact",
    "connaisseur-bob-image": "_compact",
    "connaisseur-charlie-image": "_compact",
    "connaisseur-dave-image": "_compact",
    "connaisseur-eve-image": "_compact",
    "connaisseur-phbelitz-sample": "_compact",
    "connaisseur-sample-san-sama": "_compact",
}
BASE_ROLES = ("root", "targets", "snapshot", "timestamp")


def _role_file(folder: Path, role: str) -> str:
    """The set's file for a base role (`root.json`, `sample2_root.json`, `snapshot.<h>.json`)."""
    matches = [p for p in folder.glob("*.json") if p.name.split(".")[0].rsplit("_", 1)[-1] == role]
    assert len(matches) == 1, (folder, role, matches)
    return str(matches[0].relative_to(TRUSTDATA))


def _keys(obj: dict[str, Any]) -> dict[str, PublicKey]:
    return {key_id: PublicKey.from_json(value) for key_id, value in obj.items()}


@pytest.mark.parametrize("role", BASE_ROLES)
@pytest.mark.parametrize("name", sorted(REAL_SETS))
def test_real_metadata_meets_its_root_threshold(name: str, role: str) -> None:
    folder = trustdata(f"{name}/{REAL_SETS[name]}")
    root = load_json(_role_file(folder, "root"))["signed"]
    document = load_json(_role_file(folder, role))
    spec = root["roles"][role]
    signers = verify_threshold(
        role,
        document["signed"],
        parse_signatures(document["signatures"]),
        _keys(root["keys"]),
        spec["keyids"],
        spec["threshold"],
    )
    assert len(signers) >= spec["threshold"]
    # The same signatures over a changed body never verify.
    tampered = dict(document["signed"], version=document["signed"]["version"] + 1)
    with pytest.raises(ThresholdError, match=f"did not meet threshold for {role}"):
        verify_threshold(
            role,
            tampered,
            parse_signatures(document["signatures"]),
            _keys(root["keys"]),
            spec["keyids"],
            spec["threshold"],
        )


@pytest.mark.parametrize(
    "name", ["notary-fixture-0.3", "connaisseur-alice-image", "connaisseur-dave-image"]
)
def test_real_delegations_meet_their_threshold(name: str) -> None:
    folder = trustdata(f"{name}/{REAL_SETS[name]}")
    delegations = load_json(_role_file(folder, "targets"))["signed"]["delegations"]
    keys = _keys(delegations["keys"])
    checked = 0
    for role in delegations["roles"]:
        path = folder / f"{role['name']}.json"
        if not path.exists():
            continue
        document = load_json(str(path.relative_to(TRUSTDATA)))
        verify_threshold(
            role["name"],
            document["signed"],
            parse_signatures(document["signatures"]),
            keys,
            role["keyids"],
            role["threshold"],
        )
        checked += 1
    assert checked


@pytest.mark.parametrize(
    "relative",
    [
        "connaisseur-single-files/wrong_key_format.json",
        "connaisseur-single-files/redos_targets.json",
        "connaisseur-single-files/missing_path.json",
    ],
)
def test_connaisseur_tampered_targets_are_refused(relative: str) -> None:
    """Edited copies of the phbelitz-sample targets: the old signature no longer fits."""
    root = load_json("connaisseur-phbelitz-sample/_compact/sample_root.json")["signed"]
    document = load_json(relative)
    spec = root["roles"]["targets"]
    with pytest.raises(ThresholdError):
        verify_threshold(
            "targets",
            document["signed"],
            parse_signatures(document["signatures"]),
            _keys(root["keys"]),
            spec["keyids"],
            spec["threshold"],
        )


def test_connaisseur_synthetic_invalid_targets_signature_is_refused() -> None:
    root = load_json("connaisseur-synthetic/never-expire-image/root.json")["signed"]
    spec = root["roles"]["targets"]
    good = load_json("connaisseur-synthetic/never-expire-image/targets.json")
    bad = load_json("connaisseur-synthetic/02_invalid_signature_targets.json")
    keys = _keys(root["keys"])
    args = (keys, spec["keyids"], spec["threshold"])
    verify_threshold("targets", good["signed"], parse_signatures(good["signatures"]), *args)
    with pytest.raises(ThresholdError):
        verify_threshold("targets", bad["signed"], parse_signatures(bad["signatures"]), *args)


# ---------------------------------------------------------------------------- parsing


def test_parse_signatures() -> None:
    parsed = parse_signatures(
        [
            {"keyid": "ab", "method": "ECDSA", "sig": "AQI=\n"},
            {"keyid": "cd", "method": "rsapss", "sig": "", "extra": True},
        ]
    )
    assert parsed == [Signature("ab", "ecdsa", b"\x01\x02"), Signature("cd", "rsapss", b"")]
    assert parse_signatures(None) == []
    assert parse_signatures([]) == []


@pytest.mark.parametrize(
    "value",
    [
        {},
        "sigs",
        [None],
        [[]],
        [{"method": "ecdsa", "sig": "AA=="}],
        [{"keyid": 1, "method": "ecdsa", "sig": "AA=="}],
        [{"keyid": "a", "method": None, "sig": "AA=="}],
        [{"keyid": "a", "method": "ecdsa"}],
        [{"keyid": "a", "method": "ecdsa", "sig": "AA"}],
        [{"keyid": "a", "method": "ecdsa", "sig": "A*=="}],
        [{"keyid": "a", "method": "ecdsa", "sig": 5}],
        [{"keyid": "a", "method": "ecdsa", "sig": "AA==", "Sig": "AQ=="}],
    ],
)
def test_parse_signatures_refuses_bad_shapes(value: object) -> None:
    with pytest.raises(MalformedError):
        parse_signatures(value)


# ---------------------------------------------------------------------------- threshold


def _signature(key: PublicKey, private: Any, signed: object = SIGNED, **kw: Any) -> Signature:
    method, sig = sign(private, encode_canonical(signed), kw.get("method"))
    return Signature(kw.get("keyid", key.key_id), method, sig)


def _pairs(count: int) -> list[tuple[PublicKey, Any]]:
    result = []
    for _ in range(count):
        private = ec_key()
        result.append((plain_key(private), private))
    return result


def test_every_key_type_counts() -> None:
    privates: list[PrivateKey] = [ec_key(), rsa_key(), ed25519.Ed25519PrivateKey.generate()]
    keys = [plain_key(p) for p in privates]
    x509_private = rsa_key()
    keys.append(cert_key(make_cert(x509_private, "x")))
    privates.append(x509_private)
    sigs = [_signature(k, p) for k, p in zip(keys, privates, strict=True)]
    by_id = {k.key_id: k for k in keys}
    result = verify_threshold("targets", SIGNED, sigs, by_id, list(by_id), 4)
    assert result == {k.identity for k in keys}


def test_no_signatures_is_a_distinct_error() -> None:
    ((key, _),) = _pairs(1)
    with pytest.raises(SignatureError, match="timestamp: no signatures"):
        verify_threshold("timestamp", SIGNED, [], {key.key_id: key}, [key.key_id], 1)


@pytest.mark.parametrize("threshold", [0, -1, True, 1.0, "1", None])
def test_degenerate_thresholds_are_malformed(threshold: Any) -> None:
    ((key, private),) = _pairs(1)
    with pytest.raises(MalformedError):
        verify_threshold(
            "timestamp",
            SIGNED,
            [_signature(key, private)],
            {key.key_id: key},
            [key.key_id],
            threshold,
        )


def test_duplicate_keyids_are_malformed() -> None:
    ((key, private),) = _pairs(1)
    sig = _signature(key, private)
    with pytest.raises(MalformedError, match="not unique"):
        verify_threshold("snapshot", SIGNED, [sig] * 6, {key.key_id: key}, [key.key_id] * 6, 6)


def test_keyid_key_mismatch_is_a_hard_failure() -> None:
    (key_a, private_a), (key_b, _) = _pairs(2)
    # Key B's entry holds key A: the declared ID does not match the content (attacks.md A08).
    keys = {key_a.key_id: key_a, key_b.key_id: key_a}
    good = _signature(key_a, private_a)
    forged = _signature(key_a, private_a, keyid=key_b.key_id)
    with pytest.raises(MalformedError, match="key ID is not valid for key content"):
        verify_threshold("targets", SIGNED, [good, forged], keys, list(keys), 1)


def test_below_threshold() -> None:
    (key_a, private_a), (key_b, _) = _pairs(2)
    keys = {key_a.key_id: key_a, key_b.key_id: key_b}
    sigs = [_signature(key_a, private_a)]
    with pytest.raises(ThresholdError, match="valid signatures did not meet threshold for root"):
        verify_threshold("root", SIGNED, sigs, keys, list(keys), 2)


def test_duplicate_signatures_by_one_key_count_once() -> None:
    (key_a, private_a), (key_b, _) = _pairs(2)
    keys = {key_a.key_id: key_a, key_b.key_id: key_b}
    sigs = [_signature(key_a, private_a), _signature(key_a, private_a)]
    with pytest.raises(ThresholdError):
        verify_threshold("root", SIGNED, sigs, keys, list(keys), 2)


def test_same_key_as_ecdsa_and_ecdsa_x509_counts_once() -> None:
    private = ec_key()
    plain = plain_key(private)
    wrapped = cert_key(make_cert(private, "x"))
    keys = {plain.key_id: plain, wrapped.key_id: wrapped}
    sigs = [_signature(plain, private), _signature(wrapped, private)]
    with pytest.raises(ThresholdError):
        verify_threshold("targets", SIGNED, sigs, keys, list(keys), 2)
    assert verify_threshold("targets", SIGNED, sigs, keys, list(keys), 1) == {plain.identity}


def test_junk_signatures_beside_a_valid_quorum_are_ignored() -> None:
    (key_a, private_a), (key_b, private_b), (outsider, outsider_private) = _pairs(3)
    keys = {key_a.key_id: key_a, key_b.key_id: key_b, outsider.key_id: outsider}
    role_ids = [key_a.key_id, key_b.key_id]
    junk = [
        Signature(key_b.key_id, "ecdsa", b""),  # empty sig from a listed key
        Signature(key_b.key_id, "rsapss", b"\x00" * 256),  # wrong method
        Signature("f" * 64, "ecdsa", b"\x01" * 64),  # unknown key ID
        _signature(outsider, outsider_private),  # valid, but not the role's key
        _signature(key_b, private_b, signed={"other": 1}),  # valid over another body
    ]
    good = _signature(key_a, private_a)
    for order in ([*junk, good], [good, *junk]):
        assert verify_threshold("timestamp", SIGNED, order, keys, role_ids, 1) == {key_a.identity}
    with pytest.raises(ThresholdError):
        verify_threshold("timestamp", SIGNED, [*junk, good], keys, role_ids, 2)


def test_signature_by_listed_keyid_without_key_is_ignored() -> None:
    (key_a, private_a), (key_b, private_b) = _pairs(2)
    keys = {key_a.key_id: key_a}
    sigs = [_signature(key_b, private_b), _signature(key_a, private_a)]
    verify_threshold("targets", SIGNED, sigs, keys, [key_a.key_id, key_b.key_id], 1)


def test_message_is_canonical_json_of_signed() -> None:
    ((key, private),) = _pairs(1)
    signed = {"b": [1, 2.0], "a": "x\ny"}
    sig = _signature(key, private, signed=signed)
    # Same value, another key order and a float written as 2.0: one canonical message.
    assert verify_threshold(
        "targets", {"a": "x\ny", "b": [1, 2]}, [sig], {key.key_id: key}, [key.key_id], 1
    )
    encoded = base64.b64encode(sig.sig).decode()
    assert parse_signatures([{"keyid": key.key_id, "method": "ECDSA", "sig": encoded}]) == [sig]
