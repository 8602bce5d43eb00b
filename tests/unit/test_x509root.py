"""trust.notary.x509root: root leaf certificates, rotation and trust pinning (dct.md §2.9)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from tests.unit._notary_helpers import (
    GUN,
    NOW,
    Root,
    build_root,
    cert_key,
    check,
    ec_key,
    leaf_key,
    load_json,
    make_cert,
    pem,
    plain_key,
    rsa_key,
    sha1_rsa_cert,
    trustdata,
)
from trust.errors import (
    CertificateError,
    MalformedError,
    RootRotationError,
    SignatureError,
    ThresholdError,
    TrustPinError,
)
from trust.notary.keys import PublicKey
from trust.notary.signatures import parse_signatures
from trust.notary.x509root import (
    NO_VALID_LEAF,
    cn_matches_gun,
    validate_certificate,
    validate_root,
)
from trust.settings import TrustPinning

# ---------------------------------------------------------------------------- real data

#: set → (root.json path, GUN) from shared/realworld/README.md.
REAL_ROOTS = {
    "notary-fixture-0.1": (
        "notary-fixture-0.1/tuf/docker.com/notary0.1/samplerepo/metadata/root.json",
        "docker.com/notary0.1/samplerepo",
    ),
    "notary-fixture-0.3": (
        "notary-fixture-0.3/tuf/docker.com/notary0.3/tst/metadata/root.json",
        "docker.com/notary0.3/tst",
    ),
    "docker-library-alpine-2018": (
        "docker-library-alpine-2018/root.json",
        "docker.io/library/alpine",
    ),
    "dockertrusttest-busybox-good": (
        "dockertrusttest-busybox-good/root.json",
        "dockertrusttest.docker.io/library/busybox",
    ),
    "dockertrusttest-busybox-bad": (
        "dockertrusttest-busybox-bad/root.json",
        "dockertrusttest.docker.io/library/busybox",
    ),
    "harbor-busybox-2017-03-07": (
        "harbor-busybox-2017-03-07/valid/root.json",
        "10.117.4.142/notary-demo/busybox",
    ),
    "harbor-busybox-2017-03-15": (
        "harbor-busybox-2017-03-15/valid/root.json",
        "10.117.4.142/notary-demo/busybox",
    ),
    "harbor-busybox-2020-02-24": (
        "harbor-busybox-2020-02-24/valid/root.json",
        "jt-dev.local.goharbor.io/library/busybox",
    ),
    "connaisseur-sample-image": (
        "connaisseur-sample-image/_compact/root.json",
        "docker.io/phbelitz/sample-image",
    ),
    "connaisseur-alice-image": (
        "connaisseur-alice-image/_compact/root.json",
        "docker.io/phbelitz/alice-image",
    ),
    "connaisseur-bob-image": (
        "connaisseur-bob-image/_compact/root.json",
        "docker.io/phbelitz/delegation",
    ),
    "connaisseur-phbelitz-sample": (
        "connaisseur-phbelitz-sample/_compact/sample_root.json",
        "docker.io/phbelitz/sample",
    ),
    "connaisseur-sample-san-sama": (
        "connaisseur-sample-san-sama/_compact/sample2_root.json",
        "docker.io/phbelitz/sample-san-sama",
    ),
}


def _real_root(relative: str) -> Root:
    document = load_json(relative)
    signed = document["signed"]
    keys = {k: PublicKey.from_json(v) for k, v in (signed.get("keys") or {}).items()}
    spec = signed["roles"]["root"]
    return Root(
        signed, parse_signatures(document["signatures"]), keys, spec["keyids"], spec["threshold"]
    )


def _leaf(root: Root) -> x509.Certificate:
    return root.keys[root.root_keyids[0]].certificates()[0]


@pytest.mark.parametrize("name", sorted(REAL_ROOTS))
def test_real_roots_valid_while_their_certificates_were(name: str) -> None:
    relative, gun = REAL_ROOTS[name]
    root = _real_root(relative)
    leaf = _leaf(root)
    during = leaf.not_valid_before_utc + timedelta(days=30)
    result = check(root, gun=gun, now=during)
    assert result.tofu
    assert set(result.leaf_keys) == set(root.root_keyids)  # the re-encoding is notary's own
    # As a rotation from itself (previous = the same root), too.
    check(root, gun=gun, now=during, previous=root)
    # After NotAfter (and long before NotBefore) the leaf is refused.
    for moment in (
        leaf.not_valid_after_utc + timedelta(seconds=1),
        datetime(2000, 1, 1, tzinfo=UTC),
    ):
        with pytest.raises(CertificateError, match=NO_VALID_LEAF):
            check(root, gun=gun, now=moment)
    # Today: refused exactly when the certificate has expired (never hard-code the verdict).
    today = datetime.now(UTC)
    if leaf.not_valid_after_utc < today:
        with pytest.raises(CertificateError, match=NO_VALID_LEAF):
            check(root, gun=gun, now=today)
    else:
        check(root, gun=gun, now=today)
    # Another GUN never matches.
    with pytest.raises(CertificateError, match=NO_VALID_LEAF):
        check(root, gun=gun + "x", now=during)


def test_expired_real_roots_are_refused_today() -> None:
    """notary0.3 and docker-library alpine carry 10-year certificates from 2015/2016."""
    today = datetime.now(UTC)
    for name in ("notary-fixture-0.3", "docker-library-alpine-2018"):
        relative, gun = REAL_ROOTS[name]
        root = _real_root(relative)
        if _leaf(root).not_valid_after_utc < today:
            with pytest.raises(CertificateError, match=NO_VALID_LEAF):
                check(root, gun=gun, now=today)


def test_notary03_pin_by_x509_id_and_by_canonical_id() -> None:
    relative, gun = REAL_ROOTS["notary-fixture-0.3"]
    root = _real_root(relative)
    during = _leaf(root).not_valid_before_utc + timedelta(days=30)
    (root_id,) = root.root_keyids
    canonical = root.keys[root_id].canonical_id
    assert root_id.startswith("354e203b") and canonical.startswith("f4eaf871")
    for pinned in (root_id, canonical):
        result = check(root, gun=gun, now=during, pinning=TrustPinning(certs={gun: (pinned,)}))
        assert not result.tofu
    with pytest.raises(TrustPinError, match="unable to match any certificates"):
        check(root, gun=gun, now=during, pinning=TrustPinning(certs={gun: ("0" * 64,)}))


def test_busybox_good_pin_refuses_bad_root() -> None:
    good = _real_root(REAL_ROOTS["dockertrusttest-busybox-good"][0])
    bad = _real_root(REAL_ROOTS["dockertrusttest-busybox-bad"][0])
    gun = REAL_ROOTS["dockertrusttest-busybox-good"][1]
    moment = max(_leaf(good).not_valid_before_utc, _leaf(bad).not_valid_before_utc)
    moment += timedelta(days=30)
    pinning = TrustPinning(certs={gun: tuple(good.root_keyids)})
    check(good, gun=gun, now=moment, pinning=pinning)
    with pytest.raises(TrustPinError):
        check(bad, gun=gun, now=moment, pinning=pinning)
    # Without a pin, a rotation from good to bad is not signed by good's key.
    with pytest.raises(RootRotationError, match="could not rotate trust"):
        check(bad, gun=gun, now=moment, previous=good)


def test_harbor_root_change_without_old_signature_is_refused() -> None:
    old = _real_root(REAL_ROOTS["harbor-busybox-2017-03-07"][0])
    new = _real_root(REAL_ROOTS["harbor-busybox-2017-03-15"][0])
    gun = REAL_ROOTS["harbor-busybox-2017-03-07"][1]
    moment = datetime(2017, 4, 1, tzinfo=UTC)
    check(new, gun=gun, now=moment)
    with pytest.raises(RootRotationError):
        check(new, gun=gun, now=moment, previous=old)


@pytest.mark.parametrize(
    "relative",
    [
        "connaisseur-synthetic/never-expire-image/root.json",
        "connaisseur-synthetic/01_expired_root.json",
        "connaisseur-synthetic/06_no_signature_root.json",
        "connaisseur-synthetic/07_root_multiple_signatures.json",
    ],
)
def test_connaisseur_synthetic_roots_have_no_leaf(relative: str) -> None:
    """Their root certificate is a self-signed CA (no GUN CN): no usable leaf at any date."""
    root = _real_root(relative)
    for gun in ("securesystems.de", "docker.io/securesystemsengineering/sample"):
        for moment in (datetime(2024, 1, 1, tzinfo=UTC), datetime.now(UTC)):
            with pytest.raises(CertificateError, match=NO_VALID_LEAF):
                check(root, gun=gun, now=moment)


def test_connaisseur_single_files_roots_are_refused() -> None:
    gun = "docker.io/phbelitz/sample"
    moment = datetime(2021, 1, 1, tzinfo=UTC)
    check(_real_root(REAL_ROOTS["connaisseur-phbelitz-sample"][0]), gun=gun, now=moment)
    with pytest.raises(ThresholdError, match="failed to validate integrity of roots"):
        check(_real_root("connaisseur-single-files/wrong_signature.json"), gun=gun, now=moment)
    with pytest.raises(CertificateError, match=NO_VALID_LEAF):
        check(_real_root("connaisseur-single-files/missing_keys_root.json"), gun=gun, now=moment)


def test_trustdata_helper_reports_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception):
        trustdata("no-such-set/root.json")


# ---------------------------------------------------------------------------- CN and certs


@pytest.mark.parametrize(
    ("cn", "gun", "expected"),
    [
        ("docker.io/library/alpine", "docker.io/library/alpine", True),
        ("docker.io/library/alpine", "docker.io/library/alpine2", False),
        ("docker.io/library/*", "docker.io/library/alpine", True),
        ("docker.io/library/**", "docker.io/library/alpine", True),
        ("docker.io/*", "docker.io/library/alpine", True),
        ("docker.io/lib*", "docker.io/library/alpine", True),
        ("*", "anything/at/all", True),
        ("docker.io/*/alpine", "docker.io/library/alpine", False),
        ("*/alpine", "docker.io/library/alpine", False),
        ("docker.io/other/*", "docker.io/library/alpine", False),
        ("", "docker.io/library/alpine", False),
        ("Docker.io/library/alpine", "docker.io/library/alpine", False),
    ],
)
def test_cn_matches_gun(cn: str, gun: str, expected: bool) -> None:
    assert cn_matches_gun(cn, gun) is expected


def _swap_validity(cert: x509.Certificate) -> x509.Certificate:
    """Swap NotBefore and NotAfter in the DER (same-length UTCTime strings)."""
    der = cert.public_bytes(serialization.Encoding.DER)
    before = cert.not_valid_before_utc.strftime("%y%m%d%H%M%SZ").encode()
    after = cert.not_valid_after_utc.strftime("%y%m%d%H%M%SZ").encode()
    swapped = der.replace(before, b"@" * 13).replace(after, before).replace(b"@" * 13, after)
    return x509.load_der_x509_certificate(swapped)


def test_validate_certificate_rules() -> None:
    private = ec_key()
    validate_certificate(make_cert(private, "x"), NOW, check_expiry=True)
    inverted = _swap_validity(
        make_cert(private, "x", not_before=datetime(2020, 1, 1), not_after=datetime(2021, 1, 1))
    )
    with pytest.raises(CertificateError, match="validity window"):
        validate_certificate(inverted, NOW, check_expiry=False)
    with pytest.raises(CertificateError, match="SHA1"):
        validate_certificate(sha1_rsa_cert(rsa_key(), "x"), NOW, check_expiry=False)
    with pytest.raises(CertificateError, match="too short"):
        validate_certificate(make_cert(rsa_key(1024), "x"), NOW, check_expiry=False)
    expired = make_cert(private, "x", not_before=NOW - timedelta(days=400), not_after=NOW)
    validate_certificate(expired, NOW + timedelta(days=1), check_expiry=False)
    with pytest.raises(CertificateError, match="certificate with CN x is expired"):
        validate_certificate(expired, NOW + timedelta(seconds=1), check_expiry=True)
    soon = make_cert(private, "x", not_before=NOW + timedelta(hours=23))
    validate_certificate(soon, NOW, check_expiry=True)  # one day of leeway
    later = make_cert(private, "x", not_before=NOW + timedelta(hours=25))
    with pytest.raises(CertificateError):
        validate_certificate(later, NOW, check_expiry=True)
    validate_certificate(later, NOW, check_expiry=False)
    warnings: list[str] = []
    near = make_cert(
        private, "x", not_before=NOW - timedelta(days=10), not_after=NOW + timedelta(days=60)
    )
    validate_certificate(near, NOW, check_expiry=True, warnings=warnings)
    assert warnings and "near expiry" in warnings[0]
    # A naive `now` is read as UTC.
    validate_certificate(make_cert(private, "x"), NOW.replace(tzinfo=None), check_expiry=True)


# ---------------------------------------------------------------------------- leaf filter


def test_tofu_accepts_a_self_consistent_root() -> None:
    key, private = leaf_key()
    result = check(build_root([(key, private)]))
    assert result.tofu and result.warnings == ()
    assert list(result.leaf_keys) == [key.key_id]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"cn": "registry.test/org/other"},
        {"cn": "registry.test/*/app"},
        {"not_before": NOW - timedelta(days=800), "not_after": NOW - timedelta(days=1)},
        {"not_before": NOW + timedelta(days=2)},
    ],
)
def test_unusable_leaf_is_refused(kwargs: dict[str, Any]) -> None:
    key, private = leaf_key(**kwargs)
    with pytest.raises(CertificateError, match=NO_VALID_LEAF):
        check(build_root([(key, private)]))


def test_wildcard_leaf_is_accepted() -> None:
    for cn in ("registry.test/*", "registry.test/org/a*", "*"):
        key, private = leaf_key(cn=cn)
        check(build_root([(key, private)]))


def test_not_yet_valid_within_a_day_is_accepted_and_near_expiry_warns() -> None:
    key, private = leaf_key(not_before=NOW + timedelta(hours=12))
    check(build_root([(key, private)]))
    key, private = leaf_key(
        not_before=NOW - timedelta(days=3000), not_after=NOW + timedelta(days=30)
    )
    result = check(build_root([(key, private)]))
    assert len(result.warnings) == 1 and GUN in result.warnings[0]


def test_sha1_and_short_rsa_leaves_are_refused() -> None:
    private = rsa_key()
    key = cert_key(sha1_rsa_cert(private, GUN))
    with pytest.raises(CertificateError, match=NO_VALID_LEAF):
        check(build_root([(key, private)]))
    weak = rsa_key(1024)
    with pytest.raises(CertificateError, match=NO_VALID_LEAF):
        check(build_root([(cert_key(make_cert(weak, GUN)), weak)]))


def test_rsa_x509_root_is_accepted() -> None:
    private = rsa_key()
    key = cert_key(make_cert(private, GUN))
    assert key.keytype == "rsa-x509"
    check(build_root([(key, private)]))


def _bundle_root(bundle: bytes, private: Any, keytype: str = "ecdsa-x509") -> Root:
    key = PublicKey(keytype, bundle)
    return build_root([(key, private)])


def test_bundle_shapes() -> None:
    private = ec_key()
    leaf = make_cert(private, GUN)
    ca_private = ec_key()
    ca = make_cert(ca_private, "ca", ca=True)
    other_leaf = make_cert(ec_key(), GUN)
    # Leaf then CA intermediate: fine, and the intermediate is kept in the re-encoded key.
    result = check(_bundle_root(pem(leaf, ca), private))
    (key,) = result.leaf_keys.values()
    assert len(key.certificates()) == 2
    for bundle in (
        pem(leaf, other_leaf),  # two leaves
        pem(ca, leaf),  # intermediate before the leaf
        pem(ca),  # CA only
        pem(leaf) + b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
    ):
        with pytest.raises(CertificateError, match=NO_VALID_LEAF):
            check(_bundle_root(bundle, private))


def test_key_type_must_match_the_certificate() -> None:
    private = rsa_key()
    with pytest.raises(CertificateError, match=NO_VALID_LEAF):
        check(_bundle_root(pem(make_cert(private, GUN)), private, "ecdsa-x509"))
    ec_private = ec_key()
    with pytest.raises(CertificateError, match=NO_VALID_LEAF):
        check(_bundle_root(pem(make_cert(ec_private, GUN)), ec_private, "rsa-x509"))


def test_plain_root_keys_never_count() -> None:
    private = ec_key()
    with pytest.raises(CertificateError, match=NO_VALID_LEAF):
        check(build_root([(plain_key(private), private)]))


def test_multiple_cn_leaf_is_refused() -> None:
    private = ec_key()
    subject = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, "x"), x509.NameAttribute(NameOID.COMMON_NAME, GUN)]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(private.public_key())
        .serial_number(1)
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=365))
        .sign(private, hashes.SHA256())
    )
    with pytest.raises(CertificateError, match=NO_VALID_LEAF):
        check(build_root([(cert_key(cert), private)]))


def test_keyid_mismatch_in_root_keys_is_malformed() -> None:
    key, private = leaf_key()
    other, _ = leaf_key()
    root = build_root([(key, private)])
    root.keys[other.key_id] = key
    root.root_keyids.append(other.key_id)
    with pytest.raises(MalformedError):
        check(root)


# ---------------------------------------------------------------------------- self-consistency


def test_root_threshold_needs_distinct_leaves() -> None:
    pair_a, pair_b = leaf_key(), leaf_key()
    check(build_root([pair_a, pair_b], threshold=2))
    root = build_root([pair_a, pair_b], threshold=2, signers=[pair_a])
    with pytest.raises(ThresholdError, match="failed to validate integrity of roots"):
        check(root)
    # One signature of an unusable (expired) leaf does not count either.
    expired = leaf_key(not_before=NOW - timedelta(days=900), not_after=NOW - timedelta(days=1))
    with pytest.raises(ThresholdError):
        check(build_root([pair_a, expired], threshold=2))


def test_unsigned_root_is_refused() -> None:
    root = build_root([leaf_key()], signers=[])
    with pytest.raises(SignatureError, match="no signatures"):
        check(root)


def test_signature_keyid_must_match_the_re_encoded_bundle() -> None:
    """An intermediate dropped as expired changes the bundle, so the keyid no longer fits."""
    private = ec_key()
    ca_private = ec_key()
    expired_ca = make_cert(
        ca_private,
        "ca",
        ca=True,
        not_before=NOW - timedelta(days=900),
        not_after=NOW - timedelta(days=1),
    )
    leaf = make_cert(private, GUN, issuer=(expired_ca, ca_private))
    with pytest.raises(ThresholdError, match="failed to validate integrity"):
        check(_bundle_root(pem(leaf, expired_ca), private))


# ---------------------------------------------------------------------------- rotation


def test_rotation_signed_by_previous_keys() -> None:
    old, new = leaf_key(), leaf_key()
    previous = build_root([old])
    rotated = build_root([new], signers=[new, old], version=2)
    assert check(rotated, previous=previous).leaf_keys.keys() == {new[0].key_id}
    with pytest.raises(RootRotationError, match="current trusted certificates"):
        check(build_root([new], version=2), previous=previous)


def test_rotation_previous_certificates_may_have_expired() -> None:
    old = leaf_key(not_before=NOW - timedelta(days=4000), not_after=NOW - timedelta(days=5))
    new = leaf_key()
    previous = build_root([old])
    check(build_root([new], signers=[new, old], version=2), previous=previous)


def test_rotation_needs_previous_threshold() -> None:
    old_a, old_b, new = leaf_key(), leaf_key(), leaf_key()
    previous = build_root([old_a, old_b], threshold=2)
    check(build_root([new], signers=[new, old_a, old_b]), previous=previous)
    with pytest.raises(RootRotationError):
        check(build_root([new], signers=[new, old_a]), previous=previous)


def test_rotation_previous_keys_must_match_the_gun() -> None:
    old = leaf_key(cn="registry.test/org/other")
    new = leaf_key()
    with pytest.raises(RootRotationError):
        check(build_root([new], signers=[new, old]), previous=build_root([old]))


def test_rotation_signed_only_by_previous_fails_integrity() -> None:
    old, new = leaf_key(), leaf_key()
    with pytest.raises(ThresholdError, match="integrity"):
        check(build_root([new], signers=[old]), previous=build_root([old]))


# ---------------------------------------------------------------------------- pinning


def test_pin_by_x509_id_and_by_canonical_id() -> None:
    key, private = leaf_key()
    root = build_root([(key, private)])
    for pinned in (key.key_id, key.canonical_id):
        result = check(root, pinning=TrustPinning(certs={GUN: ("0" * 64, pinned)}))
        assert not result.tofu
    with pytest.raises(TrustPinError, match="unable to match any certificates"):
        check(root, pinning=TrustPinning(certs={GUN: ("0" * 64,)}))


def test_pin_drops_unpinned_leaves_before_the_threshold() -> None:
    pair_a, pair_b = leaf_key(), leaf_key()
    root = build_root([pair_a, pair_b], threshold=2)
    with pytest.raises(ThresholdError):
        check(root, pinning=TrustPinning(certs={GUN: (pair_a[0].key_id,)}))


def test_exact_pin_beats_wildcard_and_longest_wildcard_wins() -> None:
    key, private = leaf_key()
    root = build_root([(key, private)])
    wrong = ("0" * 64,)
    right = (key.key_id,)
    check(root, pinning=TrustPinning(certs={GUN: right, "registry.test/*": wrong}))
    with pytest.raises(TrustPinError):
        check(root, pinning=TrustPinning(certs={GUN: wrong, "registry.test/*": right}))
    check(
        root, pinning=TrustPinning(certs={"registry.test/org/*": right, "registry.test/*": wrong})
    )
    with pytest.raises(TrustPinError):
        check(root, pinning=TrustPinning(certs={"registry.test/org/*": wrong, "*": right}))
    # A wildcard that does not cover the GUN does not apply: TOFU.
    assert check(root, pinning=TrustPinning(certs={"other.test/*": wrong})).tofu


def _ca(tmp_path: Path, *certs: x509.Certificate, file: str = "ca.pem") -> bytes:
    """A pinned CA bundle as the loader hands it over: PEM bytes (the verifier reads no file)."""
    return pem(*certs)


def _ca_pair(**kwargs: Any) -> tuple[x509.Certificate, Any]:
    private = ec_key()
    return make_cert(private, "Pinned CA", ca=True, **kwargs), private


def test_ca_pin_chain(tmp_path: Path) -> None:
    ca, ca_private = _ca_pair()
    private = ec_key()
    leaf = make_cert(private, GUN, issuer=(ca, ca_private))
    root = _bundle_root(pem(leaf), private)
    result = check(root, pinning=TrustPinning(ca={"registry.test/": _ca(tmp_path, ca)}))
    assert not result.tofu
    # A leaf issued by another CA does not chain.
    other, _ = _ca_pair()
    with pytest.raises(TrustPinError, match="unable to match any certificates"):
        check(root, pinning=TrustPinning(ca={"registry.test/": _ca(tmp_path, other, file="o.pem")}))
    # A self-signed leaf does not chain either.
    key, self_private = leaf_key()
    with pytest.raises(TrustPinError):
        check(
            build_root([(key, self_private)]),
            pinning=TrustPinning(ca={"registry.test/": _ca(tmp_path, ca)}),
        )


def test_ca_pin_through_root_intermediate(tmp_path: Path) -> None:
    ca, ca_private = _ca_pair()
    int_private = ec_key()
    intermediate = make_cert(int_private, "Intermediate", ca=True, issuer=(ca, ca_private))
    private = ec_key()
    leaf = make_cert(private, GUN, issuer=(intermediate, int_private))
    pinning = TrustPinning(ca={"registry.test/": _ca(tmp_path, ca)})
    check(_bundle_root(pem(leaf, intermediate), private), pinning=pinning)
    with pytest.raises(TrustPinError):
        check(_bundle_root(pem(leaf), private), pinning=pinning)


def test_ca_pin_expired_ca_in_bundle_is_ignored(tmp_path: Path) -> None:
    ca, ca_private = _ca_pair()
    old_ca, _ = _ca_pair(not_before=NOW - timedelta(days=900), not_after=NOW - timedelta(days=1))
    private = ec_key()
    root = _bundle_root(pem(make_cert(private, GUN, issuer=(ca, ca_private))), private)
    check(root, pinning=TrustPinning(ca={"registry.test/": _ca(tmp_path, old_ca, ca)}))
    with pytest.raises(TrustPinError, match="invalid CA certs provided"):
        check(root, pinning=TrustPinning(ca={"registry.test/": _ca(tmp_path, old_ca, file="x")}))
    with pytest.raises(TrustPinError, match="could not load root cert"):
        check(root, pinning=TrustPinning(ca={"registry.test/": b"not a PEM bundle"}))


def test_ca_pin_longest_prefix_wins_and_certs_beat_ca(tmp_path: Path) -> None:
    ca, ca_private = _ca_pair()
    other, _ = _ca_pair()
    private = ec_key()
    leaf = make_cert(private, GUN, issuer=(ca, ca_private))
    root = _bundle_root(pem(leaf), private)
    good, bad = _ca(tmp_path, ca, file="good"), _ca(tmp_path, other, file="bad")
    check(root, pinning=TrustPinning(ca={"registry.test/org/": good, "registry.test/": bad}))
    with pytest.raises(TrustPinError):
        check(root, pinning=TrustPinning(ca={"registry.test/org/": bad, "registry.test/": good}))
    key = root.keys[root.root_keyids[0]]
    with pytest.raises(TrustPinError):
        check(root, pinning=TrustPinning(certs={GUN: ("0" * 64,)}, ca={"registry.test/": good}))
    check(root, pinning=TrustPinning(certs={GUN: (key.key_id,)}, ca={"registry.test/": bad}))


def test_disable_tofu() -> None:
    """`tofu_allowed` decides when no pin applies; `disable_tofu` reaches it via the caller."""
    pair = leaf_key()
    root = build_root([pair])
    with pytest.raises(TrustPinError, match="invalid trust pinning specified"):
        check(root, tofu_allowed=False)
    with pytest.raises(TrustPinError, match="invalid trust pinning specified"):
        check(root, previous=root, tofu_allowed=False)
    # A root loaded from the trusted cache is itself the pin: the caller allows it.
    assert check(root, pinning=TrustPinning(disable_tofu=True), tofu_allowed=True).tofu
    # A pin that applies is not TOFU, and needs no permission.
    pinned = TrustPinning(certs={GUN: (pair[0].key_id,)}, disable_tofu=True)
    assert not check(root, pinning=pinned, tofu_allowed=False).tofu
    unrelated = TrustPinning(certs={"other.test/*": ("0" * 64,)})
    with pytest.raises(TrustPinError, match="invalid trust pinning specified"):
        check(root, pinning=unrelated, tofu_allowed=False)


def test_rotation_must_also_pass_the_pin() -> None:
    old, new = leaf_key(), leaf_key()
    previous = build_root([old])
    rotated = build_root([new], signers=[new, old])
    with pytest.raises(TrustPinError):
        check(rotated, previous=previous, pinning=TrustPinning(certs={GUN: (old[0].key_id,)}))


def test_validate_root_keyword_only() -> None:
    with pytest.raises(TypeError):
        validate_root(GUN)  # type: ignore[call-arg]
