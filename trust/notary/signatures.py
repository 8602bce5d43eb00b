"""Signature envelopes and threshold verification (dct.md §2.1, §2.4).

The message is always the canonical JSON of the decoded `signed` value (dct.md §3.2), never the
file's bytes. Threshold counting is stricter than notary in two places, both marked below:
duplicate key IDs in a role are refused, and distinct *public keys* are counted, not key IDs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from trust.errors import MalformedError, SignatureError, ThresholdError
from trust.notary.cjson import encode_canonical
from trust.notary.keys import PublicKey, b64decode_strict

__all__ = ["Signature", "parse_signatures", "verify_message", "verify_threshold"]

_FIELDS = ("keyid", "method", "sig")


@dataclass(frozen=True)
class Signature:
    """One entry of an envelope's `signatures` list; `method` is already lower-cased."""

    keyid: str
    method: str
    sig: bytes


def parse_signatures(value: object) -> list[Signature]:
    """Parse the `signatures` member strictly (`MalformedError` on wrong types or base64).

    `null` gives an empty list, as Go decodes it to a nil slice: verification then fails with
    "no signatures" (attacks.md A01), which is the distinct error notary reports.
    """
    if value is None:
        return []
    if not isinstance(value, list):
        raise MalformedError("signatures must be a JSON list")
    result: list[Signature] = []
    for index, item in enumerate(value):
        if not isinstance(item, dict):
            raise MalformedError(f"signature {index} must be a JSON object")
        for name in item:
            # Go matches struct fields case-insensitively; an alias could smuggle a second value.
            if name not in _FIELDS and name.lower() in _FIELDS:
                raise MalformedError(f"signature {index} has an ambiguous field {name!r}")
        keyid = item.get("keyid")
        method = item.get("method")
        if not isinstance(keyid, str) or not isinstance(method, str):
            raise MalformedError(f"signature {index} needs string keyid and method")
        sig = b64decode_strict(item.get("sig"), f"signature {index} sig")
        result.append(Signature(keyid=keyid, method=method.lower(), sig=sig))
    return result


def verify_threshold(
    role: str,
    signed: object,
    signatures: Sequence[Signature],
    keys: Mapping[str, PublicKey],
    keyids: Sequence[str],
    threshold: int,
) -> set[bytes]:
    """Check that `threshold` distinct keys of the role signed `signed`; return their identities.

    Raises `SignatureError` when there are no signatures at all, `MalformedError` for a bad
    threshold, repeated key IDs or a key whose content does not match its ID, and
    `ThresholdError` when too few distinct keys produced a valid signature.
    """
    return _verify(role, lambda: encode_canonical(signed), signatures, keys, keyids, threshold)


def verify_message(
    role: str,
    message: bytes,
    signatures: Sequence[Signature],
    keys: Mapping[str, PublicKey],
    keyids: Sequence[str],
    threshold: int,
) -> set[bytes]:
    """`verify_threshold` when the canonical JSON of `signed` is already at hand
    (`Envelope.message`, computed once by the strict decoder)."""
    return _verify(role, lambda: message, signatures, keys, keyids, threshold)


def _verify(
    role: str,
    message_of: Callable[[], bytes],
    signatures: Sequence[Signature],
    keys: Mapping[str, PublicKey],
    keyids: Sequence[str],
    threshold: int,
) -> set[bytes]:
    if not signatures:
        raise SignatureError(f"{role}: no signatures")
    if isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < 1:
        raise MalformedError(f"invalid threshold specified for {role}: {threshold!r}")
    allowed = set(keyids)
    if len(allowed) != len(keyids):
        # Stricter than notary, which would count the repeated ID once (attacks.md A06).
        raise MalformedError(f"{role}: key IDs listed for the role are not unique")
    message = message_of()
    valid: set[bytes] = set()
    for signature in signatures:
        if signature.keyid not in allowed:
            continue
        key = keys.get(signature.keyid)
        if key is None:
            continue
        if key.key_id != signature.keyid:
            raise MalformedError(f"{role}: key ID is not valid for key content")
        # A bad signature is skipped, never fatal: junk next to a valid quorum must not break
        # a good update (attacks.md A11).
        if key.verify(signature.method, signature.sig, message):
            # Stricter than notary: count public keys, so a key listed under two types (ecdsa
            # and ecdsa-x509, say) counts once.
            valid.add(key.identity)
    if len(valid) < threshold:
        raise ThresholdError(f"valid signatures did not meet threshold for {role}")
    return valid
