"""Private helpers for the key, signature and root tests: keys, certificates, signed roots."""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from tests.ci import skip_or_fail
from trust.notary.cjson import encode_canonical
from trust.notary.keys import PublicKey, key_from_certificates
from trust.notary.signatures import Signature
from trust.notary.x509root import RootCheck, validate_root
from trust.settings import TrustPinning

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey

NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
GUN = "registry.test/org/app"

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
TRUSTDATA = SHARED / "realworld" / "trustdata"


def trustdata(relative: str) -> Path:
    """A path under shared/realworld/trustdata; fail in CI, skip elsewhere, when it is missing."""

    path = TRUSTDATA / relative
    if not path.exists():
        skip_or_fail(f"real trust data missing: {path}")
    return path


def load_json(relative: str) -> Any:
    return json.loads(trustdata(relative).read_bytes())


# ---------------------------------------------------------------------------- keys


def ec_key(curve: ec.EllipticCurve | None = None) -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(curve or ec.SECP256R1())


def rsa_key(bits: int = 2048) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def spki(private: PrivateKey) -> bytes:
    return private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def plain_key(private: PrivateKey) -> PublicKey:
    """A non-x509 notary key for `private` (ecdsa, rsa or ed25519)."""
    if isinstance(private, ed25519.Ed25519PrivateKey):
        raw = private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return PublicKey("ed25519", raw)
    keytype = "ecdsa" if isinstance(private, ec.EllipticCurvePrivateKey) else "rsa"
    return PublicKey(keytype, spki(private))


def key_json(key: PublicKey) -> dict[str, Any]:
    return {
        "keytype": key.keytype,
        "keyval": {"private": None, "public": base64.b64encode(key.public).decode()},
    }


def sign(private: PrivateKey, message: bytes, method: str | None = None) -> tuple[str, bytes]:
    """Sign as notary does: raw r||s ECDSA over SHA-256, RSA-PSS salt 32, plain Ed25519."""
    if isinstance(private, ec.EllipticCurvePrivateKey):
        der = private.sign(message, ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        half = (private.curve.key_size + 7) // 8
        return method or "ecdsa", r.to_bytes(half, "big") + s.to_bytes(half, "big")
    if isinstance(private, rsa.RSAPrivateKey):
        if method == "rsapkcs1v15":
            return method, private.sign(message, padding.PKCS1v15(), hashes.SHA256())
        pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
        return method or "rsapss", private.sign(message, pss, hashes.SHA256())
    return method or "eddsa", private.sign(message)


# ---------------------------------------------------------------------------- certificates


def name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_cert(
    private: PrivateKey,
    cn: str,
    *,
    not_before: datetime | None = None,
    not_after: datetime | None = None,
    issuer: tuple[x509.Certificate, PrivateKey] | None = None,
    ca: bool = False,
) -> x509.Certificate:
    """A certificate like notary's (CN, 10 years) or a CA; self-signed unless `issuer`."""
    start = not_before or NOW - timedelta(days=30)
    end = not_after or start + timedelta(days=3650)
    issuer_name, signer = (name(cn), private) if issuer is None else (issuer[0].subject, issuer[1])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name(cn))
        .issuer_name(issuer_name)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
    )
    if ca:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
    else:
        builder = builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
    algorithm = None if isinstance(signer, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(signer, algorithm)


def sha1_rsa_cert(private: rsa.RSAPrivateKey, cn: str) -> x509.Certificate:
    """An RSA certificate whose signature algorithm says sha1WithRSA.

    `cryptography` refuses to sign with SHA-1, so a SHA-256 certificate's algorithm OID
    (…1.1.11) is rewritten to …1.1.5 (same length); notary never checks the cert signature.
    """
    der = make_cert(private, cn).public_bytes(serialization.Encoding.DER)
    sha256_oid = bytes.fromhex("06092a864886f70d01010b")
    assert der.count(sha256_oid) == 2
    return x509.load_der_x509_certificate(
        der.replace(sha256_oid, bytes.fromhex("06092a864886f70d010105"))
    )


def pem(*certs: x509.Certificate) -> bytes:
    return b"".join(cert.public_bytes(serialization.Encoding.PEM) for cert in certs)


def cert_key(*certs: x509.Certificate) -> PublicKey:
    """An x509 notary key: leaf then intermediates, as notary encodes them."""
    return key_from_certificates(certs[0], list(certs[1:]))


# ---------------------------------------------------------------------------- roots


@dataclass
class Root:
    """A root's signed body, signatures and the arguments `validate_root` needs."""

    signed: dict[str, Any]
    signatures: list[Signature]
    keys: dict[str, PublicKey]
    root_keyids: list[str]
    threshold: int
    signers: list[tuple[str, PrivateKey]] = field(default_factory=list)

    @property
    def previous(self) -> tuple[dict[str, PublicKey], list[str], int]:
        return self.keys, self.root_keyids, self.threshold

    def sign_with(self, keyid: str, private: PrivateKey, method: str | None = None) -> None:
        used, sig = sign(private, encode_canonical(self.signed), method)
        self.signatures.append(Signature(keyid, used, sig))


def build_root(
    root_keys: Sequence[tuple[PublicKey, PrivateKey]],
    *,
    threshold: int = 1,
    signers: Sequence[tuple[PublicKey, PrivateKey]] | None = None,
    version: int = 1,
) -> Root:
    """A notary-shaped root listing `root_keys` for the root role, signed by `signers`."""
    other = plain_key(ec_key())
    keys = {key.key_id: key for key, _ in root_keys}
    keys[other.key_id] = other
    root_ids = [key.key_id for key, _ in root_keys]
    signed: dict[str, Any] = {
        "_type": "Root",
        "consistent_snapshot": False,
        "expires": "2030-01-01T00:00:00Z",
        "keys": {key_id: key_json(key) for key_id, key in keys.items()},
        "roles": {
            "root": {"keyids": root_ids, "threshold": threshold},
            **{
                role: {"keyids": [other.key_id], "threshold": 1}
                for role in ("targets", "snapshot", "timestamp")
            },
        },
        "version": version,
    }
    root = Root(signed, [], keys, root_ids, threshold)
    for key, private in root_keys if signers is None else signers:
        root.sign_with(key.key_id, private)
    return root


def check(
    root: Root,
    *,
    gun: str = GUN,
    now: datetime = NOW,
    previous: Root | None = None,
    pinning: TrustPinning | None = None,
    tofu_allowed: bool = True,
) -> RootCheck:
    return validate_root(
        gun=gun,
        keys=root.keys,
        root_keyids=root.root_keyids,
        threshold=root.threshold,
        message=encode_canonical(root.signed),
        signatures=root.signatures,
        now=now,
        previous=None if previous is None else previous.previous,
        pinning=pinning or TrustPinning(),
        tofu_allowed=tofu_allowed,
    )


def leaf_key(cn: str = GUN, **kwargs: Any) -> tuple[PublicKey, ec.EllipticCurvePrivateKey]:
    """An ECDSA P-256 key with a notary-style self-signed leaf certificate for `cn`."""
    private = ec_key()
    return cert_key(make_cert(private, cn, **kwargs)), private
