"""Inputs the coverage-guided fuzzers (fuzz/) found that made a parser raise something other
than a `TrustpullError` (an untyped crash: exit 1 instead of the documented exit code).

Each test is named `test_fuzz_finding_<target>_…` and holds the minimised input; see
fuzz/README.md ("Findings") for the run that found it.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from fixtures.notarygen import Key
from tests.unit._trust_env import GUN, Env, baseline_builder, env_factory
from trust.errors import CertificateError, InputError
from trust.manifests import yaml_sites
from trust.notary.keys import PublicKey, parse_pem_certificates

MakeEnv = Callable[..., Env]


@pytest.fixture
def make_env(isolated_home: Path) -> Iterator[MakeEnv]:
    yield from env_factory()


def _with_cn_encoded_as(key: Key, tag: int, content: bytes) -> Key:
    """`key`'s certificate with the CN value (a PrintableString, tag 0x13) re-encoded as the
    DER element `tag`/`content`, in subject and issuer (self-signed); the signature no longer
    matches, which is beside the point: the certificate must be refused, not crash."""
    assert key.cert is not None
    der = key.cert.public_bytes(serialization.Encoding.DER)
    cn = GUN.encode()
    marker = b"\x06\x03\x55\x04\x03\x13" + bytes([len(cn)]) + cn  # OID 2.5.4.3, PrintableString
    assert der.count(marker) == 2
    broken = der.replace(marker, marker[:5] + bytes([tag, len(content)]) + content)
    pem = b"-----BEGIN CERTIFICATE-----\n" + base64.encodebytes(broken)
    pem += b"-----END CERTIFICATE-----\n"
    return Key(key.keytype, base64.b64encode(pem).decode(), key.private_key)


@pytest.mark.parametrize(
    ("tag", "content", "raised"),
    [
        (0x53, GUN.encode(), "KeyError: 83 (an ASN.1 string type cryptography does not know)"),
        (0x03, b"\x00" + GUN.encode()[:-1], "TypeError: oid must be X500_UNIQUE_IDENTIFIER"),
    ],
    ids=["unknown-string-tag", "bit-string-cn"],
)
def test_fuzz_finding_keys_certificate_subject_that_does_not_decode(
    make_env: MakeEnv, tag: int, content: bytes, raised: str
) -> None:
    """fuzz_keys: a root certificate whose subject CN does not decode made x509root's CN lookup
    raise (`raised`): a crash, exit 1; it is an unusable certificate (exit 5)."""
    builder = baseline_builder(others=False)
    key = _with_cn_encoded_as(builder.new_key("ecdsa-x509"), tag, content)
    builder.rotate_key("root", [key], sign_with="new")
    error = make_env(builder).refuse(CertificateError)
    assert error.exit_code == 5


@pytest.mark.parametrize("text", ["? - name: c\n: y\n", "? [{a: 1}]\n: y\n"])
def test_fuzz_finding_manifests_yaml_mapping_inside_a_complex_key(text: str) -> None:
    """fuzz_manifests: a YAML complex key holding a mapping made ruamel raise TypeError
    (unhashable CommentedMap), a crash of `check`/`resolve` (exit 1); it is invalid input."""
    with pytest.raises(InputError) as caught:
        yaml_sites(text, "k8s.yaml")
    assert caught.value.exit_code == 3
    assert "invalid YAML" in caught.value.message


def _with_version(key: Key, version: int) -> Key:
    """`key`'s certificate with its X.509 version field ([0] EXPLICIT INTEGER 2, i.e. v3) set
    to `version`, which no X.509 version has (cryptography raised InvalidVersion)."""
    assert key.cert is not None
    der = key.cert.public_bytes(serialization.Encoding.DER)
    field = b"\xa0\x03\x02\x01\x02"
    assert der.count(field) == 1
    broken = der.replace(field, field[:-1] + bytes([version]))
    pem = b"-----BEGIN CERTIFICATE-----\n" + base64.encodebytes(broken)
    pem += b"-----END CERTIFICATE-----\n"
    return Key(key.keytype, base64.b64encode(pem).decode(), key.private_key)


def test_fuzz_finding_keys_certificate_with_an_invalid_x509_version(make_env: MakeEnv) -> None:
    """fuzz_keys: a certificate whose version field is not v1-v3 made `parse_pem_certificates`
    raise cryptography's InvalidVersion (not a ValueError), a crash (exit 1) when a root key
    held it; it is a certificate that does not parse (exit 5)."""
    builder = baseline_builder(others=False)
    key = _with_version(builder.new_key("ecdsa-x509"), 22)
    key_pem = base64.b64decode(key.public)
    with pytest.raises(CertificateError):
        parse_pem_certificates(key_pem)
    with pytest.raises(CertificateError):
        PublicKey("ecdsa-x509", key_pem).certificates()
    builder.rotate_key("root", [key], sign_with="new")
    error = make_env(builder).refuse(CertificateError)
    assert error.exit_code == 5
