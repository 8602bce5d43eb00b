"""Root validation: leaf certificates, rotation, trust pinning (dct.md §2.9, §2.11).

Notary never trusts a root key because the root lists it: root keys must be x509 leaf
certificates whose CN matches the GUN, and the root must verify against keys rebuilt from those
certificates. This module follows notary's `ValidateRoot` step by step; where trustpull is
stricter the code says so. It does no I/O: a pinned CA bundle arrives as PEM bytes
(`TrustPinning.ca`, read by the configuration loader).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID, SignatureAlgorithmOID
from cryptography.x509.verification import (
    Criticality,
    ExtensionPolicy,
    Policy,
    PolicyBuilder,
    Store,
    VerificationError,
)

from trust.errors import (
    CertificateError,
    MalformedError,
    RootRotationError,
    SignatureError,
    ThresholdError,
    TrustPinError,
)
from trust.notary.keys import (
    RSA_X509_KEY,
    X509_KEY_TYPES,
    PublicKey,
    key_from_certificates,
    parse_pem_certificates,
)
from trust.notary.signatures import Signature, verify_message
from trust.settings import TrustPinning

__all__ = [
    "NO_VALID_LEAF",
    "RootCheck",
    "cn_matches_gun",
    "validate_certificate",
    "validate_root",
]

NO_VALID_LEAF = (
    "could not validate the path to a trusted root: unable to retrieve valid leaf certificates"
)
ROTATION_FAILED = (
    "could not rotate trust to a new trusted root: "
    "failed to validate data with current trusted certificates"
)
INTEGRITY_FAILED = "failed to validate integrity of roots"
PIN_NO_MATCH = "unable to match any certificates to trust_pinning config"
PIN_NO_TOFU = "invalid trust pinning specified"

MIN_RSA_BITS = 2048
#: notary's ValidateCertificate gives one day of leeway on NotBefore.
NOT_BEFORE_LEEWAY = timedelta(days=1)
#: "near expiry" warning horizon (notary: six calendar months).
NEAR_EXPIRY = timedelta(days=183)

_WEAK_SIGNATURE_ALGORITHMS = frozenset(
    {
        SignatureAlgorithmOID.RSA_WITH_SHA1,
        x509.ObjectIdentifier("1.3.14.3.2.29"),  # the old OIW sha1WithRSASignature
        SignatureAlgorithmOID.DSA_WITH_SHA1,
        SignatureAlgorithmOID.ECDSA_WITH_SHA1,
        # Stricter than notary, which only names the three SHA-1 algorithms: MD5 too.
        SignatureAlgorithmOID.RSA_WITH_MD5,
    }
)


@dataclass(frozen=True)
class RootCheck:
    """Outcome of `validate_root`: the root's usable keys, warnings, and whether TOFU applied."""

    #: key ID (of the re-encoded bundle) → key, for every leaf that survived all checks.
    leaf_keys: Mapping[str, PublicKey]
    warnings: tuple[str, ...] = ()
    #: True when no pin applied: the root is trusted on first use (or through `previous`).
    tofu: bool = True


@dataclass(frozen=True)
class _Leaf:
    key_id: str
    leaf: x509.Certificate
    intermediates: tuple[x509.Certificate, ...]


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _common_name(cert: x509.Certificate) -> str | None:
    """The subject CN, or None unless there is exactly one (Go silently takes the last)."""
    try:
        values = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    except (ValueError, KeyError, TypeError):  # a subject cryptography cannot decode (fuzz_keys)
        return None
    if len(values) != 1 or not isinstance(values[0].value, str):
        return None
    return values[0].value


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        ext = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    except x509.ExtensionNotFound:
        return False
    except ValueError:  # a malformed extension block: treat as unusable by the caller
        raise CertificateError("certificate extensions do not parse") from None
    return ext.value.ca


def cn_matches_gun(cn: str, gun: str) -> bool:
    """notary `MatchCNToGun`: equal, or a CN ending in `*` whose prefix starts the GUN.

    All trailing `*` are removed, and only a trailing `*` is special: `docker.io/*/app` matches
    nothing, and a CN of `*` matches every GUN (attacks.md F06).
    """
    if not cn or not gun:
        return False
    if cn.endswith("*"):
        return gun.startswith(cn.rstrip("*"))
    return cn == gun


def validate_certificate(
    cert: x509.Certificate,
    now: datetime,
    *,
    check_expiry: bool,
    warnings: list[str] | None = None,
) -> None:
    """notary `ValidateCertificate`; raises `CertificateError`. Near-expiry goes to `warnings`."""
    cn = _common_name(cert) or ""
    not_before = cert.not_valid_before_utc
    not_after = cert.not_valid_after_utc
    if not_before > not_after:
        raise CertificateError(f"certificate with CN {cn} has an invalid validity window")
    if cert.signature_algorithm_oid in _WEAK_SIGNATURE_ALGORITHMS:
        raise CertificateError(f"certificate with CN {cn} uses an invalid SHA1 signature algorithm")
    try:
        key = cert.public_key()
    except (ValueError, UnsupportedAlgorithm):
        raise CertificateError(f"certificate with CN {cn} has an unusable public key") from None
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < MIN_RSA_BITS:
        raise CertificateError(f"certificate with CN {cn}: RSA bit length is too short")
    if check_expiry:
        moment = _aware(now)
        if not_before > moment + NOT_BEFORE_LEEWAY or moment > not_after:
            raise CertificateError(f"certificate with CN {cn} is expired")
        if warnings is not None and not_after < moment + NEAR_EXPIRY:
            warnings.append(f"certificate with CN {cn} is near expiry ({not_after:%Y-%m-%d})")


def _extract(keys: Mapping[str, PublicKey], root_keyids: Sequence[str]) -> list[_Leaf]:
    """notary `parseAllCerts`: one leaf (first, the only non-CA) plus CA intermediates per key.

    A key that fails any rule is skipped, so non-x509 root keys never count (attacks.md D10).
    Stricter than notary: the declared type must match the leaf's key algorithm (F07).
    """
    found: list[_Leaf] = []
    for keyid in root_keyids:
        key = keys.get(keyid)
        if key is None:
            continue
        if key.key_id != keyid:
            raise MalformedError("root: key ID is not valid for key content")
        if key.keytype not in X509_KEY_TYPES:
            continue
        try:
            certs = key.certificates()
            flags = [_is_ca(cert) for cert in certs]
            leaf_key = certs[0].public_key()
        except (CertificateError, ValueError, UnsupportedAlgorithm):
            continue
        if flags.count(False) != 1 or flags[0]:
            continue
        wanted: type = (
            rsa.RSAPublicKey if key.keytype == RSA_X509_KEY else ec.EllipticCurvePublicKey
        )
        if not isinstance(leaf_key, wanted):
            continue
        found.append(_Leaf(key.key_id, certs[0], tuple(certs[1:])))
    return found


def _filter_leaves(
    leaves: Sequence[_Leaf], gun: str, now: datetime, *, check_expiry: bool, warnings: list[str]
) -> list[_Leaf]:
    """notary `validRootLeafCerts` and `validRootIntCerts` (intermediates only with expiry)."""
    kept: list[_Leaf] = []
    for item in leaves:
        cn = _common_name(item.leaf)
        if cn is None or not cn_matches_gun(cn, gun):
            continue
        try:
            validate_certificate(item.leaf, now, check_expiry=check_expiry, warnings=warnings)
        except CertificateError:
            continue
        intermediates = item.intermediates
        if check_expiry:
            good: list[x509.Certificate] = []
            for cert in intermediates:
                try:
                    validate_certificate(cert, now, check_expiry=True)
                except CertificateError:
                    continue
                good.append(cert)
            intermediates = tuple(good)
        kept.append(_Leaf(item.key_id, item.leaf, intermediates))
    return kept


def _keys_for(leaves: Sequence[_Leaf]) -> dict[str, PublicKey]:
    """notary `CertsToKeys`: re-encoded bundles indexed by their freshly computed IDs."""
    result: dict[str, PublicKey] = {}
    for item in leaves:
        try:
            key = key_from_certificates(item.leaf, item.intermediates)
        except CertificateError:
            continue
        result[key.key_id] = key
    return result


def _require_ca(_policy: Policy, _cert: x509.Certificate, ext: Any) -> None:
    if not isinstance(ext, x509.BasicConstraints) or not ext.ca:
        raise ValueError("basicConstraints.cA must be asserted by an issuing certificate")


class _PinChecker:
    """notary `trustPinChecker`: certs exact GUN, longest `*` wildcard, longest CA prefix."""

    def __init__(self, gun: str, pinning: TrustPinning, now: datetime) -> None:
        self.now = _aware(now)
        self.ids: frozenset[str] | None = None
        self.ca_store: Store | None = None
        exact = pinning.certs.get(gun)
        if exact is not None:
            self.ids = frozenset(exact)
            return
        longest = ""
        wildcard: tuple[str, ...] | None = None
        for prefix, ids in pinning.certs.items():
            if prefix.endswith("*") and gun.startswith(prefix[:-1]) and len(prefix) > len(longest):
                longest, wildcard = prefix, tuple(ids)
        if wildcard is not None:
            self.ids = frozenset(wildcard)
            return
        ca_prefix: str | None = None
        for prefix in pinning.ca:
            if gun.startswith(prefix) and (ca_prefix is None or len(prefix) > len(ca_prefix)):
                ca_prefix = prefix
        if ca_prefix is not None:
            self.ca_store = self._load_ca(pinning.ca[ca_prefix], ca_prefix)

    @property
    def applies(self) -> bool:
        return self.ids is not None or self.ca_store is not None

    def _load_ca(self, bundle: bytes, prefix: str) -> Store:
        where = f"the CA bundle pinned for {prefix!r} ([trust_pinning] ca)"
        try:
            certs = parse_pem_certificates(bundle)
        except CertificateError:
            raise TrustPinError("could not load root cert from CA path", hint=where) from None
        valid: list[x509.Certificate] = []
        for cert in certs:
            try:
                # Expired or weak CAs in the bundle are ignored, as notary does (attacks.md D08).
                validate_certificate(cert, self.now, check_expiry=True)
            except CertificateError:
                continue
            valid.append(cert)
        if not valid:
            raise TrustPinError("invalid CA certs provided", hint=where)
        return Store(valid)

    def check(self, item: _Leaf) -> bool:
        if self.ids is not None:
            try:
                key = key_from_certificates(item.leaf, item.intermediates)
                # Stricter than notary's certsCheck, looser in form: the pin may name the x509
                # key ID (as in root.json) or the canonical ID (as `docker trust inspect` shows).
                return key.key_id in self.ids or key.canonical_id in self.ids
            except CertificateError:
                return False
        if self.ca_store is not None:
            return self._chains(item)
        return True

    def _chains(self, item: _Leaf) -> bool:
        """Standard path building from the leaf to a pinned CA through the root's intermediates.

        Like Go's `Verify`, issuers must assert basicConstraints cA and every certificate must
        be valid at `now`; key usages of the leaf are not checked (notary never checks them).
        """
        ca_policy = ExtensionPolicy.permit_all().require_present(
            x509.BasicConstraints, Criticality.AGNOSTIC, _require_ca
        )
        if self.ca_store is None:
            return False
        builder = (
            PolicyBuilder()
            .store(self.ca_store)
            .time(self.now)
            .extension_policies(ca_policy=ca_policy, ee_policy=ExtensionPolicy.permit_all())
        )
        try:
            builder.build_client_verifier().verify(item.leaf, list(item.intermediates))
        except (VerificationError, ValueError, UnsupportedAlgorithm):
            return False
        return True


def _reraise_integrity(exc: SignatureError | ThresholdError) -> SignatureError | ThresholdError:
    kind = type(exc)
    return kind(f"{INTEGRITY_FAILED}: {exc.message}")


def validate_root(
    *,
    gun: str,
    keys: Mapping[str, PublicKey],
    root_keyids: Sequence[str],
    threshold: int,
    message: bytes,
    signatures: Sequence[Signature],
    now: datetime,
    previous: tuple[Mapping[str, PublicKey], Sequence[str], int] | None,
    pinning: TrustPinning,
    tofu_allowed: bool,
) -> RootCheck:
    """notary `ValidateRoot` for an already structure-checked root (dct.md §2.9 steps 2–6).

    `previous` is the trusted root's (keys, root role keyids, root threshold), or None on first
    use. When no pin applies, `tofu_allowed` alone decides: the caller maps `disable_tofu`
    (notary refuses only a first contact; a root loaded from the trusted cache is itself the pin).
    """
    warnings: list[str] = []
    leaves = _filter_leaves(
        _extract(keys, root_keyids), gun, now, check_expiry=True, warnings=warnings
    )
    if not leaves:
        raise CertificateError(NO_VALID_LEAF)

    if previous is not None:
        prev_keys, prev_keyids, prev_threshold = previous
        # The trusted root's certificates may have expired: they still sign the hand-over.
        prev_leaves = _filter_leaves(
            _extract(prev_keys, prev_keyids), gun, now, check_expiry=False, warnings=[]
        )
        trusted = _keys_for(prev_leaves)
        try:
            verify_message("root", message, signatures, trusted, list(trusted), prev_threshold)
        except (SignatureError, ThresholdError):
            raise RootRotationError(ROTATION_FAILED) from None

    checker = _PinChecker(gun, pinning, now)
    tofu = not checker.applies
    if tofu and not tofu_allowed:
        raise TrustPinError(PIN_NO_TOFU)
    pinned = [item for item in leaves if checker.check(item)]
    if not pinned:
        raise TrustPinError(PIN_NO_MATCH)

    own = _keys_for(pinned)
    try:
        verify_message("root", message, signatures, own, list(own), threshold)
    except (SignatureError, ThresholdError) as exc:
        raise _reraise_integrity(exc) from None
    return RootCheck(leaf_keys=MappingProxyType(own), warnings=tuple(warnings), tofu=tofu)
