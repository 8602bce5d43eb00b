"""Notary v1 public keys: parsing, key IDs and signature verification (dct.md §2.2, §2.3).

A key is kept as notary keeps it, a type name plus the decoded `public` bytes; the ID is always
recomputed from that content, never taken from the name a document gives it (attacks.md A08).
Verification never raises: an unknown method, a key of the wrong type, a key or signature that
does not parse, all simply make that one signature invalid (dct.md §2.3, attacks.md A10).
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

from trust.errors import CertificateError, MalformedError
from trust.notary.cjson import encode_canonical

if TYPE_CHECKING:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

# `cryptography` is imported where it is used, never at module level: parsing metadata (and
# computing key IDs, which need only hashlib) must not pay for it (issue 13's import profile).

__all__ = [
    "ECDSA_KEY",
    "ECDSA_X509_KEY",
    "ED25519_KEY",
    "RSA_KEY",
    "RSA_X509_KEY",
    "X509_KEY_TYPES",
    "PublicKey",
    "b64decode_strict",
    "key_from_certificates",
    "key_id_for",
    "parse_pem_certificates",
]

ECDSA_KEY = "ecdsa"
ECDSA_X509_KEY = "ecdsa-x509"
RSA_KEY = "rsa"
RSA_X509_KEY = "rsa-x509"
ED25519_KEY = "ed25519"
X509_KEY_TYPES = frozenset({ECDSA_X509_KEY, RSA_X509_KEY})

#: notary's `minRSAKeySizeBit` / `minRSAKeySizeByte` (tuf/signed/verifiers.go).
MIN_RSA_BITS = 2048
MIN_RSA_SIG_BYTES = 256
#: notary signs RSA-PSS with a salt as long as the SHA-256 digest, and verifies exactly that.
PSS_SALT_LENGTH = 32


@functools.cache
def _pem_block() -> re.Pattern[bytes]:
    """Compiled on first use (importing this module compiles no regular expression)."""
    return re.compile(
        rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n([A-Za-z0-9+/=\r\n]*?)-----END \1-----(\r?\n)?"
    )


def _go_curves() -> tuple[type[ec.EllipticCurve], ...]:
    """The curves Go's x509.ParsePKIXPublicKey accepts; anything else is unusable, as in notary."""
    from cryptography.hazmat.primitives.asymmetric import ec

    return (ec.SECP224R1, ec.SECP256R1, ec.SECP384R1, ec.SECP521R1)


def b64decode_strict(value: object, what: str) -> bytes:
    """Go's std-base64 decoding of a `[]byte` field: padding required, `\\r` and `\\n` ignored.

    Python's `b64decode` silently drops any non-alphabet character unless `validate=True`
    (dct.md §3.4 row 11), so those are removed explicitly and nothing else is tolerated.
    """
    if not isinstance(value, str):
        raise MalformedError(f"{what} must be a base64 string")
    cleaned = value.replace("\r", "").replace("\n", "")
    try:
        return base64.b64decode(cleaned.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise MalformedError(f"{what} is not valid base64") from None


def key_id_for(keytype: str, public: bytes) -> str:
    """Notary's `TUFKey.ID()`: hex SHA-256 of the canonical JSON of the key, `private` null."""
    obj = {
        "keytype": keytype,
        "keyval": {"private": None, "public": base64.b64encode(public).decode("ascii")},
    }
    return hashlib.sha256(encode_canonical(obj)).hexdigest()


def parse_pem_certificates(data: bytes) -> list[x509.Certificate]:
    """Parse a PEM bundle in which every block is a `CERTIFICATE` (raises `CertificateError`).

    Stricter than notary's `LoadCertBundleFromPEM`, which skips text around the blocks: here
    only whitespace may appear outside a block, and PEM headers are refused.
    """
    from cryptography import x509

    certs: list[x509.Certificate] = []
    position = 0
    for match in _pem_block().finditer(data):
        if data[position : match.start()].strip():
            raise CertificateError("certificate bundle holds data outside PEM blocks")
        position = match.end()
        if match.group(1) != b"CERTIFICATE":
            kind = match.group(1).decode("ascii")
            raise CertificateError(f"invalid PEM block type {kind} in certificate bundle")
        body = match.group(2).replace(b"\r", b"").replace(b"\n", b"")
        try:
            der = base64.b64decode(body, validate=True)
            certs.append(x509.load_der_x509_certificate(der))
        except (binascii.Error, ValueError, x509.InvalidVersion):  # not a ValueError (fuzz_keys)
            raise CertificateError("certificate in bundle does not parse") from None
    if data[position:].strip():
        raise CertificateError("certificate bundle holds data outside PEM blocks")
    if not certs:
        raise CertificateError("no valid certificates found in bundle")
    return certs


def _spki_der(key: PublicKeyTypes) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _check_json_fields(obj: Mapping[str, Any], known: Sequence[str], what: str) -> None:
    """Refuse `KeyType`-style aliases: Go matches field names case-insensitively (§3.4 row 9)."""
    lowered = {name.lower() for name in known}
    for name in obj:
        if name not in known and name.lower() in lowered:
            raise MalformedError(f"{what} has an ambiguous field {name!r}")


@dataclass(frozen=True)
class PublicKey:
    """One public key as notary models it; `key_id` is always computed from the content."""

    keytype: str
    public: bytes
    key_id: str = field(init=False)

    def __post_init__(self) -> None:
        if not isinstance(self.keytype, str) or not isinstance(self.public, bytes):
            raise MalformedError("key type must be a string and key material bytes")
        object.__setattr__(self, "key_id", key_id_for(self.keytype, self.public))

    @classmethod
    def from_json(cls, obj: object) -> PublicKey:
        """Parse `{"keytype": T, "keyval": {"private": null, "public": b64}}` strictly.

        Unknown extra members are ignored, as Go does; a non-null `private` is refused (a public
        metadata file must never carry key material, and notary would drop it from the ID).
        """
        if not isinstance(obj, dict):
            raise MalformedError("key must be a JSON object")
        _check_json_fields(obj, ("keytype", "keyval"), "key")
        keytype = obj.get("keytype")
        keyval = obj.get("keyval")
        if not isinstance(keytype, str) or not keytype:
            raise MalformedError("key has no keytype string")
        if not isinstance(keyval, dict):
            raise MalformedError("key has no keyval object")
        _check_json_fields(keyval, ("public", "private"), "keyval")
        if keyval.get("private") is not None:
            raise MalformedError("public key carries private key material")
        if "public" not in keyval:
            raise MalformedError("key has no public value")
        public = b64decode_strict(keyval["public"], "key public value")
        return cls(keytype, public)

    # ------------------------------------------------------------------ parsed material

    def certificates(self) -> list[x509.Certificate]:
        """The PEM bundle of an x509 key (leaf first by convention); `CertificateError` else."""
        if self.keytype not in X509_KEY_TYPES:
            raise CertificateError(f"key {self.key_id} of type {self.keytype} holds no certificate")
        return parse_pem_certificates(self.public)

    @cached_property
    def _crypto_key(self) -> PublicKeyTypes | None:
        """The key object behind this key, or None when unusable (wrong type, no parse)."""
        from cryptography.exceptions import UnsupportedAlgorithm

        try:
            return self._load_crypto_key()
        except (CertificateError, MalformedError, ValueError, UnsupportedAlgorithm, TypeError):
            return None

    def _load_crypto_key(self) -> PublicKeyTypes | None:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

        loaded: PublicKeyTypes
        if self.keytype == ED25519_KEY:
            if len(self.public) != 32:
                return None
            return ed25519.Ed25519PublicKey.from_public_bytes(self.public)
        if self.keytype in X509_KEY_TYPES:
            loaded = self.certificates()[0].public_key()
            wanted: type = ec.EllipticCurvePublicKey
            if self.keytype == RSA_X509_KEY:
                wanted = rsa.RSAPublicKey
            # A certificate whose key does not fit the declared type is unusable (attacks.md
            # F07); it is never reinterpreted as the other type.
            return loaded if isinstance(loaded, wanted) else None
        if self.keytype == ECDSA_KEY:
            loaded = serialization.load_der_public_key(self.public)
            return loaded if isinstance(loaded, ec.EllipticCurvePublicKey) else None
        if self.keytype == RSA_KEY:
            loaded = serialization.load_der_public_key(self.public)
            return loaded if isinstance(loaded, rsa.RSAPublicKey) else None
        return None

    @cached_property
    def _pem_rsa_key(self) -> rsa.RSAPublicKey | None:
        """For `pycrypto-pkcs#1 pss`: an `rsa` key whose public value is a PEM `PUBLIC KEY`."""
        if self.keytype != RSA_KEY:
            return None
        from cryptography.exceptions import UnsupportedAlgorithm
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        match = _pem_block().fullmatch(self.public.strip() + b"\n")
        if match is None or match.group(1) != b"PUBLIC KEY":
            return None
        try:
            body = match.group(2).replace(b"\r", b"").replace(b"\n", b"")
            der = base64.b64decode(body, validate=True)
            loaded = serialization.load_der_public_key(der)
        except (binascii.Error, ValueError, UnsupportedAlgorithm):
            return None
        return loaded if isinstance(loaded, rsa.RSAPublicKey) else None

    @property
    def canonical_id(self) -> str:
        """dct.md §2.2 `CanonicalKeyID`: for x509 keys, the ID of the first certificate's key.

        Raises `CertificateError` when the x509 key is unusable, including a certificate whose
        key algorithm does not match the declared type (notary would compute a bogus ID).
        """
        if self.keytype not in X509_KEY_TYPES:
            return self.key_id
        key = self._crypto_key
        if key is None:
            raise CertificateError(f"key {self.key_id} holds no usable {self.keytype} certificate")
        plain = ECDSA_KEY if self.keytype == ECDSA_X509_KEY else RSA_KEY
        return key_id_for(plain, _spki_der(key))

    @cached_property
    def identity(self) -> bytes:
        """SPKI DER of the underlying key, so one key counts once toward a threshold.

        Notary counts distinct key IDs, so one key listed as `ecdsa` and as `ecdsa-x509` counts
        twice there; trustpull counts it once. An unusable key gets an identity that can match
        no other key (it never verifies anything, so it never counts anyway).
        """
        key = self._crypto_key or self._pem_rsa_key
        if key is None:
            return b"unusable:" + self.key_id.encode("ascii")
        return _spki_der(key)

    # ------------------------------------------------------------------ verification

    def verify(self, method: str, signature: bytes, message: bytes) -> bool:
        """True only if `signature` by this key over `message` is valid for `method`."""
        try:
            return self._verify(method.lower(), signature, message)
        except Exception:  # never raise from verification (attacks.md A10, A14)
            return False

    def _verify(self, method: str, signature: bytes, message: bytes) -> bool:
        from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

        if not isinstance(signature, bytes) or not isinstance(message, bytes):
            return False
        if method == "ecdsa":
            if self.keytype not in (ECDSA_KEY, ECDSA_X509_KEY):
                return False
            key = self._crypto_key
            if not isinstance(key, ec.EllipticCurvePublicKey):
                return False
            return _verify_ecdsa(key, signature, message)
        if method in ("rsapss", "rsapkcs1v15"):
            if self.keytype not in (RSA_KEY, RSA_X509_KEY):
                return False
            key = self._crypto_key
            if not isinstance(key, rsa.RSAPublicKey):
                return False
            return _verify_rsa(key, method == "rsapss", signature, message)
        if method == "pycrypto-pkcs#1 pss":
            pem_key = self._pem_rsa_key
            if pem_key is None:
                return False
            return _verify_rsa(pem_key, True, signature, message)
        if method == "eddsa":
            if self.keytype != ED25519_KEY:
                return False
            key = self._crypto_key
            if not isinstance(key, ed25519.Ed25519PublicKey) or len(signature) != 64:
                return False
            key.verify(signature, message)
            return True
        return False


def _verify_ecdsa(key: ec.EllipticCurvePublicKey, signature: bytes, message: bytes) -> bool:
    """Raw `r||s`, each half exactly ⌈bits/8⌉ bytes; SHA-256 whatever the curve (as notary)."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

    if not isinstance(key.curve, _go_curves()):
        return False
    half = (key.curve.key_size + 7) // 8
    if len(signature) != 2 * half:
        return False  # also refuses DER-encoded signatures
    r = int.from_bytes(signature[:half], "big")
    s = int.from_bytes(signature[half:], "big")
    if r == 0 or s == 0:
        return False
    try:
        key.verify(encode_dss_signature(r, s), message, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


def _verify_rsa(key: rsa.RSAPublicKey, pss: bool, signature: bytes, message: bytes) -> bool:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    if key.key_size < MIN_RSA_BITS or len(signature) < MIN_RSA_SIG_BYTES:
        return False
    pad: padding.AsymmetricPadding = padding.PKCS1v15()
    if pss:
        pad = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=PSS_SALT_LENGTH)
    try:
        key.verify(signature, message, pad, hashes.SHA256())
    except InvalidSignature:
        return False
    return True


def key_from_certificates(
    leaf: x509.Certificate, intermediates: Sequence[x509.Certificate]
) -> PublicKey:
    """notary `CertsToKeys`/`CertBundleToKey`: leaf then intermediates, re-encoded as PEM.

    The type follows the leaf's key algorithm; any other algorithm raises `CertificateError`.
    """
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    try:
        leaf_key = leaf.public_key()
    except (ValueError, UnsupportedAlgorithm):
        raise CertificateError("leaf certificate key does not parse") from None
    if isinstance(leaf_key, ec.EllipticCurvePublicKey):
        keytype = ECDSA_X509_KEY
    elif isinstance(leaf_key, rsa.RSAPublicKey):
        keytype = RSA_X509_KEY
    else:
        raise CertificateError("leaf certificate key is neither ECDSA nor RSA")
    pem = b"".join(cert.public_bytes(serialization.Encoding.PEM) for cert in (leaf, *intermediates))
    return PublicKey(keytype, pem)
