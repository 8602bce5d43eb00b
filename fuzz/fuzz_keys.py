"""Fuzz target: public key loading, certificates and signature checks (trust/notary/keys.py).

Input: one selector byte, then either (selector 0) a key object in JSON as metadata carries it,
or (otherwise) raw key material under one of notary's key types. A key that loads is put through
everything the verifier asks of it: its certificates (then `validate_certificate`), canonical ID,
identity, and `verify` for every method, which must return a bool and never raise.
Seeds: every key object of every real-world root and delegating targets file, and the PEM
certificate and public key files beside them.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from typing import Any

from _common import main, realworld_files
from _instrument import instrumented

with instrumented():
    from trust.errors import TrustpullError
    from trust.notary.cjson import loads_strict
    from trust.notary.keys import PublicKey, parse_pem_certificates
    from trust.notary.x509root import validate_certificate

KEYTYPES = ("ecdsa", "ecdsa-x509", "rsa", "rsa-x509", "ed25519")
METHODS = ("ecdsa", "rsapss", "rsapkcs1v15", "eddsa", "pycrypto-pkcs#1 pss")
MAX_LEN = 8192
NOW = dt.datetime(2019, 1, 1, tzinfo=dt.UTC)


def _key_objects(document: Any) -> Iterator[Any]:
    signed = document.get("signed") if isinstance(document, dict) else None
    if not isinstance(signed, dict):
        return
    for holder in (signed, signed.get("delegations")):
        keys = holder.get("keys") if isinstance(holder, dict) else None
        if isinstance(keys, dict):
            yield from keys.values()


def seeds() -> Iterator[bytes]:
    for path in realworld_files():
        try:
            document = json.loads(path.read_bytes())
        except ValueError:
            continue
        for key in _key_objects(document):
            yield b"\0" + json.dumps(key).encode()
    for pattern in ("*.crt", "*.pem", "*.pub"):
        for path in realworld_files(pattern):
            data = path.read_bytes()
            yield bytes([1 + KEYTYPES.index("ecdsa-x509")]) + data
            yield bytes([1 + KEYTYPES.index("rsa")]) + data


def one_input(data: bytes) -> None:
    if not data:
        return
    try:
        if data[0] == 0:
            key = PublicKey.from_json(loads_strict(data[1:]))
        else:
            key = PublicKey(KEYTYPES[(data[0] - 1) % len(KEYTYPES)], data[1:])
    except TrustpullError:
        return
    if len(key.key_id) != 64:
        raise AssertionError("key ID is not 64 hex digits")
    try:
        for cert in key.certificates():
            validate_certificate(cert, NOW, check_expiry=True, warnings=[])
    except TrustpullError:
        pass
    try:
        key.canonical_id  # noqa: B018 - property under test
    except TrustpullError:
        pass
    key.identity  # noqa: B018
    message = data[1:33]
    for method in METHODS:
        for signature in (data[-64:], data[-256:], data[-512:]):
            if key.verify(method, signature, message) not in (True, False):
                raise AssertionError("verify returned a non-bool")
    try:
        parse_pem_certificates(data[1:])
    except TrustpullError:
        pass


if __name__ == "__main__":
    main(one_input)
