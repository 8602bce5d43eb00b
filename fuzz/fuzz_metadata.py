"""Fuzz target: Notary metadata files as a trust server serves them (trust/notary/metadata.py).

Input: one selector byte (which role the file is read as), then the file's bytes. Each input goes
through what the trusted set does before any trust decision: the envelope, the role's typed
parser, the signature list; a root also has its own signatures checked against its own root
keys and its certificates validated (x509root.validate_root, first use, no pin).
Seeds: every metadata file of shared/realworld/trustdata, under its own role.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

from _common import main, realworld_files
from _instrument import instrumented
from cryptography.x509.oid import NameOID

with instrumented():
    from trust.errors import TrustpullError
    from trust.notary.metadata import (
        parse_envelope,
        parse_root,
        parse_snapshot,
        parse_targets,
        parse_timestamp,
    )
    from trust.notary.signatures import verify_threshold
    from trust.notary.x509root import validate_root
    from trust.settings import TrustPinning

ROLES = ("root", "timestamp", "snapshot", "targets", "targets/releases", "targets/a/b")
MAX_LEN = 32768


def role_of(path: Path) -> str | None:
    """The role a real-world file holds, from its name (`sample2_root.json`, `targets/x.json`)."""
    stem = path.stem.split("_")[-1].split(".")[-1]
    if path.parent.name == "targets":
        return "targets/releases"
    if stem in ROLES[:4]:
        return stem
    if stem == "releases":
        return "targets/releases"
    return None


def seeds() -> Iterator[bytes]:
    for path in realworld_files():
        role = role_of(path)
        if role is not None:
            yield bytes([ROLES.index(role)]) + path.read_bytes()


def _gun_of(root: object) -> str:
    for key in getattr(root, "keys", {}).values():
        try:
            cert = key.certificates()[0]
        except TrustpullError:
            continue
        names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        if names:
            return str(names[0].value)
    return "docker.io/library/fuzz"


def one_input(data: bytes) -> None:
    if not data:
        return
    role = ROLES[data[0] % len(ROLES)]
    body = data[1:]
    try:
        envelope = parse_envelope(body, role)
        if role == "root":
            root = parse_root(envelope)
            keys = root.roles["root"]
            verify_threshold(
                "root", envelope.signed, envelope.signatures, root.keys, keys.keyids, 1
            )
            validate_root(
                gun=_gun_of(root),
                keys=root.keys,
                root_keyids=keys.keyids,
                threshold=keys.threshold,
                message=envelope.message,
                signatures=envelope.signatures,
                now=root.expires - dt.timedelta(days=1),
                previous=None,
                pinning=TrustPinning(),
                tofu_allowed=True,
            )
        elif role == "timestamp":
            parse_timestamp(envelope)
        elif role == "snapshot":
            parse_snapshot(envelope)
        else:
            parse_targets(envelope, role)
    except TrustpullError:
        pass


if __name__ == "__main__":
    main(one_input)
