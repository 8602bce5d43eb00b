"""trust.notary.keys: key parsing, key IDs, canonical IDs and every signature method."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding

from tests.unit._notary_helpers import (
    TRUSTDATA,
    cert_key,
    ec_key,
    key_json,
    load_json,
    make_cert,
    pem,
    plain_key,
    rsa_key,
    sign,
    spki,
    trustdata,
)
from trust.errors import CertificateError, MalformedError
from trust.notary.cjson import loads_strict
from trust.notary.keys import PublicKey, key_from_certificates, key_id_for

MESSAGE = b'{"_type":"Targets","version":1}'

NOTARY03_ROOT = "notary-fixture-0.3/tuf/docker.com/notary0.3/tst/metadata/root.json"


# ---------------------------------------------------------------------------- real data


def _metadata_files() -> list[str]:
    if not TRUSTDATA.is_dir():
        return ["<missing>"]
    return sorted(
        str(path.relative_to(TRUSTDATA))
        for path in TRUSTDATA.rglob("*.json")
        if "_compact" not in path.parts
    )


def _keys_in(document: Any) -> dict[str, Any]:
    signed = document.get("signed", {}) if isinstance(document, dict) else {}
    found = dict(signed.get("keys") or {})
    delegations = signed.get("delegations") or {}
    found.update(delegations.get("keys") or {})
    return found


@pytest.mark.parametrize("relative", _metadata_files())
def test_every_real_key_id_recomputes(relative: str) -> None:
    if relative == "<missing>":
        trustdata("")
    try:
        document = load_json(relative)
    except ValueError:
        # Negative material for the JSON parser, not for keys: the strict loader must refuse it.
        with pytest.raises(MalformedError):
            loads_strict((TRUSTDATA / relative).read_bytes())
        return
    for declared, obj in _keys_in(document).items():
        if relative.endswith("wrong_key_format.json") and obj["keyval"]["public"] == "iamwrong":
            # Tampered on purpose: the declared ID no longer matches the (junk) content.
            assert PublicKey.from_json(obj).key_id != declared
            continue
        key = PublicKey.from_json(obj)
        assert key.key_id == declared, relative


def test_notary03_canonical_id_differs_from_x509_id() -> None:
    signed = load_json(NOTARY03_ROOT)["signed"]
    (root_id,) = signed["roles"]["root"]["keyids"]
    key = PublicKey.from_json(signed["keys"][root_id])
    assert key.keytype == "ecdsa-x509"
    assert key.key_id.startswith("354e203b")
    assert key.canonical_id.startswith("f4eaf871")
    # The identity is the certificate's SPKI: a plain ecdsa key for it has the canonical ID.
    assert PublicKey("ecdsa", key.identity).key_id == key.canonical_id


def test_notary03_rsa_x509_delegation_key_verifies_releases() -> None:
    targets = load_json("notary-fixture-0.3/tuf/docker.com/notary0.3/tst/metadata/targets.json")
    releases = load_json(
        "notary-fixture-0.3/tuf/docker.com/notary0.3/tst/metadata/targets/releases.json"
    )
    from trust.notary.cjson import encode_canonical

    keys = {k: PublicKey.from_json(v) for k, v in targets["signed"]["delegations"]["keys"].items()}
    (sig,) = releases["signatures"]
    key = keys[sig["keyid"]]
    assert key.keytype == "rsa-x509"
    message = encode_canonical(releases["signed"])
    assert key.verify(sig["method"], base64.b64decode(sig["sig"]), message)
    assert not key.verify(sig["method"], base64.b64decode(sig["sig"]), message + b" ")


# ---------------------------------------------------------------------------- parsing


def test_key_id_is_sha256_of_canonical_json_with_private_null() -> None:
    key = PublicKey("ecdsa", b"\x01\x02")
    import hashlib

    expected = hashlib.sha256(
        b'{"keytype":"ecdsa","keyval":{"private":null,"public":"AQI="}}'
    ).hexdigest()
    assert key.key_id == expected == key_id_for("ecdsa", b"\x01\x02")


def test_from_json_round_trip_and_newlines_in_base64() -> None:
    key = plain_key(ec_key())
    obj = key_json(key)
    assert PublicKey.from_json(obj) == key
    text = obj["keyval"]["public"]
    obj["keyval"]["public"] = text[:10] + "\r\n" + text[10:]
    parsed = PublicKey.from_json(obj)
    assert parsed.key_id == key.key_id  # the ID is over the re-encoded base64, as in Go
    del obj["keyval"]["private"]
    assert PublicKey.from_json(obj) == key
    obj["extra"] = 1  # unknown members are ignored, as Go does
    assert PublicKey.from_json(obj) == key


@pytest.mark.parametrize(
    "obj",
    [
        None,
        [],
        {"keytype": "ecdsa"},
        {"keytype": 1, "keyval": {"public": "AA=="}},
        {"keytype": "", "keyval": {"public": "AA=="}},
        {"keytype": "ecdsa", "keyval": []},
        {"keytype": "ecdsa", "keyval": {"private": None}},
        {"keytype": "ecdsa", "keyval": {"public": None}},
        {"keytype": "ecdsa", "keyval": {"public": "AA"}},  # no padding
        {"keytype": "ecdsa", "keyval": {"public": "A A="}},
        {"keytype": "ecdsa", "keyval": {"public": "AA==!"}},
        {"keytype": "ecdsa", "keyval": {"public": "AA==", "private": "AA=="}},
        {"keytype": "ecdsa", "KeyType": "rsa", "keyval": {"public": "AA=="}},
        {"keytype": "ecdsa", "keyval": {"public": "AA==", "Public": "AQ=="}},
    ],
)
def test_from_json_refuses_bad_schema(obj: object) -> None:
    with pytest.raises(MalformedError):
        PublicKey.from_json(obj)


def test_unknown_keytype_is_kept_but_never_verifies() -> None:
    private = ec_key()
    public = base64.b64encode(spki(private)).decode()
    key = PublicKey.from_json({"keytype": "ecdsa-sha2-nistp256", "keyval": {"public": public}})
    method, sig = sign(private, MESSAGE)
    assert not key.verify(method, sig, MESSAGE)
    assert key.canonical_id == key.key_id


# ---------------------------------------------------------------------------- methods


@pytest.mark.parametrize("curve", [ec.SECP256R1(), ec.SECP384R1(), ec.SECP521R1()])
def test_ecdsa_raw_signatures_on_every_curve(curve: ec.EllipticCurve) -> None:
    private = ec_key(curve)
    key = plain_key(private)
    method, sig = sign(private, MESSAGE)
    assert len(sig) == {256: 64, 384: 96, 521: 132}[curve.key_size]
    assert key.verify(method, sig, MESSAGE)
    assert key.verify("ECDSA", sig, MESSAGE)  # the method is compared lower-cased
    assert not key.verify(method, sig, MESSAGE + b"x")
    assert not key.verify(method, sig[:-1], MESSAGE)
    assert not key.verify(method, sig + b"\x00", MESSAGE)


def test_ecdsa_der_signature_is_refused() -> None:
    private = ec_key()
    der = private.sign(MESSAGE, ec.ECDSA(hashes.SHA256()))
    assert not plain_key(private).verify("ecdsa", der, MESSAGE)


def test_ecdsa_zero_r_or_s_is_invalid() -> None:
    private = ec_key()
    key = plain_key(private)
    _, sig = sign(private, MESSAGE)
    assert not key.verify("ecdsa", bytes(64), MESSAGE)
    assert not key.verify("ecdsa", bytes(32) + sig[32:], MESSAGE)
    assert not key.verify("ecdsa", sig[:32] + bytes(32), MESSAGE)


def test_ecdsa_x509_key_verifies_and_canonical_id() -> None:
    private = ec_key()
    key = cert_key(make_cert(private, "docker.io/library/alpine"))
    assert key.keytype == "ecdsa-x509"
    method, sig = sign(private, MESSAGE)
    assert key.verify(method, sig, MESSAGE)
    assert key.canonical_id == plain_key(private).key_id != key.key_id
    assert key.identity == plain_key(private).identity == spki(private)
    assert len(key.certificates()) == 1


@pytest.mark.parametrize("keytype", ["rsa", "rsa-x509"])
@pytest.mark.parametrize("method", ["rsapss", "rsapkcs1v15", "RSAPSS"])
def test_rsa_methods(keytype: str, method: str) -> None:
    private = rsa_key()
    key = plain_key(private) if keytype == "rsa" else cert_key(make_cert(private, "x"))
    assert key.keytype == keytype
    used, sig = sign(private, MESSAGE, method.lower())
    assert key.verify(method, sig, MESSAGE)
    assert not key.verify(used, sig, MESSAGE + b"x")
    other = "rsapkcs1v15" if used == "rsapss" else "rsapss"
    assert not key.verify(other, sig, MESSAGE)


def test_rsapss_salt_length_must_be_32() -> None:
    private = rsa_key()
    key = plain_key(private)
    for salt in (0, 20, 64):
        pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=salt)
        assert not key.verify("rsapss", private.sign(MESSAGE, pss, hashes.SHA256()), MESSAGE)


def test_rsapss_mgf1_must_be_sha256() -> None:
    private = rsa_key()
    pss = padding.PSS(mgf=padding.MGF1(hashes.SHA1()), salt_length=32)  # noqa: S303 - on purpose
    sig = private.sign(MESSAGE, pss, hashes.SHA256())
    assert not plain_key(private).verify("rsapss", sig, MESSAGE)


def test_rsa_1024_is_refused() -> None:
    private = rsa_key(1024)
    key = plain_key(private)
    for method in ("rsapss", "rsapkcs1v15"):
        used, sig = sign(private, MESSAGE, method)
        assert not key.verify(used, sig, MESSAGE)


def test_pycrypto_pss_uses_pem_public_key() -> None:
    private = rsa_key()
    pem_public = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    key = PublicKey("rsa", pem_public)
    _, sig = sign(private, MESSAGE, "rsapss")
    assert key.verify("pycrypto-pkcs#1 pss", sig, MESSAGE)
    assert not key.verify("rsapss", sig, MESSAGE)  # rsapss wants DER SPKI
    assert not plain_key(private).verify("pycrypto-pkcs#1 pss", sig, MESSAGE)
    assert key.identity == spki(private)
    # Only for keytype rsa.
    assert not PublicKey("rsa-x509", pem_public).verify("pycrypto-pkcs#1 pss", sig, MESSAGE)


def test_eddsa() -> None:
    private = ed25519.Ed25519PrivateKey.generate()
    key = plain_key(private)
    method, sig = sign(private, MESSAGE)
    assert key.verify(method, sig, MESSAGE)
    assert not key.verify(method, sig[:63], MESSAGE)
    assert not key.verify(method, sig, MESSAGE + b"x")
    assert not PublicKey("ed25519", key.public[:31]).verify(method, sig, MESSAGE)
    assert not PublicKey("ed25519", b"\x00\x01").verify(method, sig, MESSAGE)


def test_wrong_method_for_key_type_is_false() -> None:
    ec_private, rsa_private, ed_private = ec_key(), rsa_key(), ed25519.Ed25519PrivateKey.generate()
    _, ec_sig = sign(ec_private, MESSAGE)
    _, rsa_sig = sign(rsa_private, MESSAGE)
    _, ed_sig = sign(ed_private, MESSAGE)
    for method in ("rsapss", "rsapkcs1v15", "eddsa", "pycrypto-pkcs#1 pss", "unknown", ""):
        assert not plain_key(ec_private).verify(method, ec_sig, MESSAGE)
    for method in ("ecdsa", "eddsa", "unknown"):
        assert not plain_key(rsa_private).verify(method, rsa_sig, MESSAGE)
    for method in ("ecdsa", "rsapss"):
        assert not plain_key(ed_private).verify(method, ed_sig, MESSAGE)


def test_key_type_mismatches_make_the_key_unusable() -> None:
    ec_private, rsa_private = ec_key(), rsa_key()
    _, ec_sig = sign(ec_private, MESSAGE)
    _, rsa_sig = sign(rsa_private, MESSAGE)
    # Plain keys whose DER holds the other algorithm.
    assert not PublicKey("ecdsa", spki(rsa_private)).verify("rsapss", rsa_sig, MESSAGE)
    assert not PublicKey("rsa", spki(ec_private)).verify("ecdsa", ec_sig, MESSAGE)
    # ecdsa-x509 wrapping an RSA certificate, and the reverse (attacks.md F07).
    rsa_cert = pem(make_cert(rsa_private, "x"))
    ec_cert = pem(make_cert(ec_private, "x"))
    wrapped_rsa = PublicKey("ecdsa-x509", rsa_cert)
    assert not wrapped_rsa.verify("rsapss", rsa_sig, MESSAGE)
    assert not wrapped_rsa.verify("ecdsa", rsa_sig, MESSAGE)
    assert not PublicKey("rsa-x509", ec_cert).verify("ecdsa", ec_sig, MESSAGE)
    with pytest.raises(CertificateError):
        _ = wrapped_rsa.canonical_id
    # A certificate given as a plain key, and a PUBLIC KEY block given as a certificate.
    assert not PublicKey("ecdsa", ec_cert).verify("ecdsa", ec_sig, MESSAGE)
    public_pem = ec_private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    not_cert = PublicKey("ecdsa-x509", public_pem)
    assert not not_cert.verify("ecdsa", ec_sig, MESSAGE)
    with pytest.raises(CertificateError):
        not_cert.certificates()
    # Random bytes.
    assert not PublicKey("ecdsa-x509", b"\x00junk").verify("ecdsa", ec_sig, MESSAGE)
    assert not PublicKey("ecdsa", b"\x00junk").verify("ecdsa", ec_sig, MESSAGE)


def test_verify_never_raises_on_odd_input() -> None:
    key = plain_key(ec_key())
    odd: Any = None
    assert not key.verify("ecdsa", odd, MESSAGE)
    assert not key.verify("ecdsa", b"", MESSAGE)
    assert not key.verify(odd, b"", MESSAGE)


# ---------------------------------------------------------------------------- bundles


def test_certificates_bundle_rules() -> None:
    private = ec_key()
    leaf = make_cert(private, "x")
    ca = make_cert(ec_key(), "ca", ca=True)
    key = key_from_certificates(leaf, [ca])
    assert key.public == pem(leaf, ca)
    assert [c.subject for c in key.certificates()] == [leaf.subject, ca.subject]
    with pytest.raises(CertificateError):
        plain_key(private).certificates()
    with pytest.raises(CertificateError):
        PublicKey("ecdsa-x509", pem(leaf) + b"trailing junk\n").certificates()
    with pytest.raises(CertificateError):
        PublicKey("ecdsa-x509", b"junk\n" + pem(leaf)).certificates()
    bad_block = pem(leaf).replace(b"CERTIFICATE", b"PUBLIC KEY")
    with pytest.raises(CertificateError):
        PublicKey("ecdsa-x509", pem(leaf) + bad_block).certificates()
    with pytest.raises(CertificateError):
        PublicKey("ecdsa-x509", b"").certificates()
    broken = pem(leaf).replace(b"\n", b"\n!", 2)
    with pytest.raises(CertificateError):
        PublicKey("ecdsa-x509", broken).certificates()


def test_key_from_certificates_type_follows_leaf() -> None:
    assert key_from_certificates(make_cert(rsa_key(), "x"), []).keytype == "rsa-x509"
    assert key_from_certificates(make_cert(ec_key(), "x"), []).keytype == "ecdsa-x509"
    with pytest.raises(CertificateError):
        key_from_certificates(make_cert(ed25519.Ed25519PrivateKey.generate(), "x"), [])


def test_identity_is_shared_between_plain_and_x509_forms() -> None:
    private = ec_key()
    plain = plain_key(private)
    wrapped = cert_key(make_cert(private, "x"))
    assert plain.key_id != wrapped.key_id
    assert plain.identity == wrapped.identity
    assert PublicKey("ecdsa", b"junk").identity != PublicKey("ecdsa", b"junk2").identity
