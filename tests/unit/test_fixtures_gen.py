"""The fixture generator, swizzler and server checked on their own, without trustpull's verifier.

Tests of the verifier trust these fixtures, so the fixtures get an independent check here: key
ids and signatures are recomputed with `cryptography` directly, meta hashes against the exact
bytes, and (when the notary CLI is installed) notary itself must accept the generated data.
"""

from __future__ import annotations

import base64
import datetime as dt
import gzip
import hashlib
import json
import shutil
import socket
import stat
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from fixtures.notarygen import (
    Key,
    Repo,
    RepoBuilder,
    generate_key,
    sign_envelope,
    write_trust_cache,
)
from fixtures.server import Fault, FixtureServer
from fixtures.swizzle import DELETE, Swizzler
from tests.ci import in_ci
from trust.notary.cjson import encode_canonical

GUN = "registry.test/org/app"
DIGEST1 = hashlib.sha256(b"manifest one").hexdigest()
DIGEST2 = hashlib.sha256(b"manifest two").hexdigest()
NOW = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
#: What `requests` raises for a body that did not arrive whole.
BROKEN = (requests.exceptions.ConnectionError, requests.exceptions.ChunkedEncodingError)


# -- independent verification helpers ----------------------------------------------------------


def _public_key(key: dict[str, Any]) -> Any:
    raw = base64.b64decode(key["keyval"]["public"])
    if key["keytype"].endswith("-x509"):
        return x509.load_pem_x509_certificate(raw).public_key()
    if key["keytype"] == "ed25519":
        return ed25519.Ed25519PublicKey.from_public_bytes(raw)
    return serialization.load_der_public_key(raw)


def verify_signature(key: dict[str, Any], method: str, sig_b64: str, message: bytes) -> bool:
    """Notary's verifiers (dct.md §2.3), written against `cryptography` directly."""
    public = _public_key(key)
    sig = base64.b64decode(sig_b64)
    try:
        if method == "ecdsa":
            assert isinstance(public, ec.EllipticCurvePublicKey)
            size = (public.curve.key_size + 7) // 8
            if len(sig) != 2 * size:
                return False
            r, s = int.from_bytes(sig[:size], "big"), int.from_bytes(sig[size:], "big")
            public.verify(encode_dss_signature(r, s), message, ec.ECDSA(hashes.SHA256()))
        elif method == "rsapss":
            assert isinstance(public, rsa.RSAPublicKey)
            pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
            public.verify(sig, message, pss, hashes.SHA256())
        elif method == "rsapkcs1v15":
            assert isinstance(public, rsa.RSAPublicKey)
            public.verify(sig, message, padding.PKCS1v15(), hashes.SHA256())
        elif method == "eddsa":
            assert isinstance(public, ed25519.Ed25519PublicKey)
            public.verify(sig, message)
        else:
            return False
    except InvalidSignature:
        return False
    return True


def manual_key_id(key: dict[str, Any]) -> str:
    text = '{"keytype":"%s","keyval":{"private":null,"public":"%s"}}' % (  # noqa: UP031
        key["keytype"],
        key["keyval"]["public"],
    )
    return hashlib.sha256(text.encode()).hexdigest()


def role_keys(repo: Repo, role: str) -> tuple[dict[str, dict[str, Any]], int]:
    """keyid → key and threshold for `role`, read from root or the delegating file."""
    if role in ("root", "targets", "snapshot", "timestamp"):
        root = repo.signed("root")
        spec = root["roles"][role]
        return {k: root["keys"][k] for k in spec["keyids"]}, spec["threshold"]
    parent = role.rsplit("/", 1)[0]
    delegations = repo.signed(parent)["delegations"]
    entry = next(r for r in delegations["roles"] if r["name"] == role)
    return {k: delegations["keys"][k] for k in entry["keyids"]}, entry["threshold"]


def valid_signers(repo: Repo, role: str) -> set[str]:
    keys, _ = role_keys(repo, role)
    envelope = repo.envelope(role)
    message = encode_canonical(envelope["signed"])
    good = set()
    for sig in envelope["signatures"]:
        key = keys.get(sig["keyid"])
        if key is not None and verify_signature(key, sig["method"].lower(), sig["sig"], message):
            good.add(sig["keyid"])
    return good


def role_verifies(repo: Repo, role: str) -> bool:
    _, threshold = role_keys(repo, role)
    return len(valid_signers(repo, role)) >= threshold


def meta_matches(repo: Repo, parent: str, role: str) -> bool:
    entry = repo.signed(parent)["meta"][role]
    data = repo.role_bytes(role)
    return entry["length"] == len(data) and all(
        base64.b64decode(value) == hashlib.new(alg, data).digest()
        for alg, value in entry["hashes"].items()
    )


def assert_repo_consistent(repo: Repo) -> None:
    for role in repo.roles:
        assert role_verifies(repo, role), role
        if role not in ("snapshot", "timestamp"):
            assert meta_matches(repo, "snapshot", role), role
    assert meta_matches(repo, "timestamp", "snapshot")
    for role in repo.roles:
        data = repo.role_bytes(role)
        envelope = json.loads(data)
        # Byte-exact notary form: canonical signed part, compact signatures, nothing else.
        expected = (
            b'{"signed":'
            + encode_canonical(envelope["signed"])
            + b',"signatures":'
            + json.dumps(envelope["signatures"], separators=(",", ":")).encode()
            + b"}"
        )
        assert data == expected, role
        assert repo.files[f"{role}.{hashlib.sha256(data).hexdigest()}.json"] == data


@pytest.fixture(scope="module")
def builder() -> RepoBuilder:
    """root v1, timestamp/snapshot/targets v2, targets/releases v1 (attacks.md state S0)."""
    b = RepoBuilder(GUN, now=NOW)
    b.add_target("latest", DIGEST1, 528)
    b.publish()
    b.add_delegation("targets/releases")
    b.add_target("latest", DIGEST2, 700, role="targets/releases")
    b.publish()
    return b


# -- keys and signatures ------------------------------------------------------------------------


@pytest.mark.parametrize("keytype", ["ecdsa", "ecdsa-x509", "rsa", "rsa-x509", "ed25519"])
def test_key_ids_and_signatures(keytype: str) -> None:
    key = generate_key(keytype, cn=GUN)
    as_dict = key.to_dict()
    assert key.keyid == manual_key_id(as_dict)
    public = base64.b64decode(key.public)
    if keytype == "ed25519":
        assert len(public) == 32
    elif keytype.endswith("-x509"):
        assert public.startswith(b"-----BEGIN CERTIFICATE-----\n") and public.endswith(b"\n")
        cert = x509.load_pem_x509_certificate(public)
        spki = cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        bare = {
            "keytype": keytype.removesuffix("-x509"),
            "keyval": {"private": None, "public": base64.b64encode(spki).decode()},
        }
        assert key.canonical_id == manual_key_id(bare) != key.keyid
    else:
        serialization.load_der_public_key(public)
        assert key.canonical_id == key.keyid
    methods = {"ecdsa": ["ecdsa"], "rsa": ["rsapss", "rsapkcs1v15"], "ed25519": ["eddsa"]}
    message = encode_canonical({"_type": "Targets", "version": 1})
    for method in methods[keytype.removesuffix("-x509")]:
        sig = key.sign(message, method)
        if method == "ecdsa":
            assert len(sig) == 64
        sig_b64 = base64.b64encode(sig).decode()
        assert verify_signature(as_dict, method, sig_b64, message)
        assert not verify_signature(as_dict, method, sig_b64, message + b" ")


def test_ecdsa_p384_pads_to_96_bytes() -> None:
    key = generate_key("ecdsa", curve=ec.SECP384R1())
    sig = key.sign(b"message")
    assert len(sig) == 96
    assert verify_signature(key.to_dict(), "ecdsa", base64.b64encode(sig).decode(), b"message")


def test_certificate_shape_and_options() -> None:
    key = generate_key("ecdsa-x509", cn=GUN)
    assert key.cert is not None
    cert = key.cert
    assert cert.subject.rfc4514_string() == f"CN={GUN}"
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == dt.timedelta(days=3650)
    assert cert.signature_hash_algorithm is not None
    assert cert.signature_hash_algorithm.name == "sha256"
    start = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    old = generate_key(
        "rsa-x509",
        cn="other/gun",
        not_before=start,
        not_after=start + dt.timedelta(days=1),
        cert_hash=hashes.SHA1(),  # noqa: S303
    )
    assert old.cert is not None
    assert old.cert.not_valid_before_utc == start
    assert old.cert.signature_hash_algorithm is not None
    assert old.cert.signature_hash_algorithm.name == "sha1"
    ca = generate_key("ecdsa-x509", cn="intermediate", is_ca=True)
    leaf = generate_key("ecdsa-x509", cn=GUN, issuer=ca, chain=[ca.cert] if ca.cert else [])
    pem = base64.b64decode(leaf.public)
    assert pem.count(b"BEGIN CERTIFICATE") == 2
    assert leaf.cert is not None and leaf.cert.issuer.rfc4514_string() == "CN=intermediate"


# -- repositories -------------------------------------------------------------------------------


def test_published_repo_is_consistent(builder: RepoBuilder) -> None:
    repo = builder.history[-1]
    assert_repo_consistent(repo)
    assert {r: repo.version(r) for r in repo.roles} == {
        "root": 1,
        "targets": 2,
        "snapshot": 2,
        "timestamp": 2,
        "targets/releases": 1,
    }
    assert set(repo.signed("snapshot")["meta"]) == {"root", "targets", "targets/releases"}
    assert set(repo.signed("timestamp")["meta"]) == {"snapshot"}
    assert repo.files["1.root.json"] == repo.role_bytes("root")
    targets = repo.signed("targets")
    assert targets["targets"]["latest"] == {
        "hashes": {"sha256": base64.b64encode(bytes.fromhex(DIGEST1)).decode()},
        "length": 528,
    }
    assert targets["delegations"]["roles"][0]["paths"] == [""]
    assert repo.signed("timestamp")["expires"] == "2030-01-15T00:00:00Z"
    assert repo.signed("root")["_type"] == "Root"
    root_key = next(iter(role_keys(repo, "root")[0].values()))
    assert root_key["keytype"] == "ecdsa-x509"
    # The first state is kept untouched for replay tests.
    first = builder.history[0]
    assert first.version("targets") == 1 and "targets/releases" not in first.roles
    assert_repo_consistent(first)


def test_root_rotation_signed_by_old_and_new() -> None:
    b = RepoBuilder(GUN, now=NOW)
    b.add_target("latest", DIGEST1, 1)
    b.publish()
    old_ids = {k.keyid for k in b.keys("root")}
    new = b.rotate_key("root")
    repo = b.publish()
    assert repo.version("root") == 2
    signer_ids = {s["keyid"] for s in repo.envelope("root")["signatures"]}
    assert signer_ids == old_ids | {k.keyid for k in new}
    v1 = json.loads(repo.files["1.root.json"])["signed"]
    message = encode_canonical(repo.signed("root"))
    for sig in repo.envelope("root")["signatures"]:
        key = repo.signed("root")["keys"].get(sig["keyid"]) or v1["keys"][sig["keyid"]]
        assert verify_signature(key, sig["method"], sig["sig"], message)
    assert repo.files["2.root.json"] == repo.role_bytes("root")
    assert_repo_consistent(repo)
    b.rotate_key("root", sign_with="new")
    repo3 = b.publish()
    assert len(repo3.envelope("root")["signatures"]) == 1
    # A later root change without rotation is signed by the current key only.
    b.bump("root")
    assert len(b.publish().envelope("root")["signatures"]) == 1


def test_key_rotation_threshold_and_other_keytypes() -> None:
    b = RepoBuilder(GUN, root_keytype="rsa-x509", keytype="rsa", now=NOW)
    b.add_target("latest", DIGEST1, 1)
    b.add_delegation("targets/releases", [generate_key("ed25519"), generate_key("ecdsa")], 2)
    b.add_delegation("targets/releases/ci", paths=["ci-"])
    b.add_target("ci-1", DIGEST2, 2, role="targets/releases/ci")
    repo = b.publish()
    assert_repo_consistent(repo)
    b.rotate_key("targets", threshold=1, keytype="ecdsa")
    b.rotate_key("targets/releases", [generate_key("rsa")], threshold=1)
    repo2 = b.publish()
    assert_repo_consistent(repo2)
    assert repo2.version("root") == 2 and repo2.version("targets/releases") == 2
    b.remove_delegation("targets/releases")
    repo3 = b.publish()
    assert "targets/releases.json" not in repo3.files
    assert set(repo3.signed("snapshot")["meta"]) == {"root", "targets"}
    assert_repo_consistent(repo3)


def test_expiry_signers_and_paths_omitted() -> None:
    b = RepoBuilder(GUN, now=NOW)
    b.add_delegation("targets/releases", paths=None)
    b.set_expiry("targets", "2116-07-03T17:56:36.027379879-05:00")
    b.set_expiry("timestamp", NOW - dt.timedelta(seconds=1, microseconds=500))
    attacker = generate_key("ecdsa")
    b.set_signers("snapshot", [attacker])
    repo = b.publish()
    assert repo.signed("targets")["expires"] == "2116-07-03T17:56:36.027379879-05:00"
    assert repo.signed("timestamp")["expires"] == "2029-12-31T23:59:58.9995Z"
    assert "paths" not in repo.signed("targets")["delegations"]["roles"][0]
    assert not role_verifies(repo, "snapshot")
    assert meta_matches(repo, "timestamp", "snapshot")


def test_write_trust_cache(tmp_path: Path, builder: RepoBuilder) -> None:
    repo = builder.history[-1]
    metadata = write_trust_cache(repo, tmp_path / "trust")
    assert metadata == tmp_path / "trust" / "tuf" / GUN / "metadata"
    assert (metadata / "targets" / "releases.json").read_bytes() == repo.role_bytes(
        "targets/releases"
    )
    assert sorted(p.name for p in metadata.glob("*.json")) == [
        "root.json",
        "snapshot.json",
        "targets.json",
        "timestamp.json",
    ]
    assert stat.S_IMODE((metadata / "root.json").stat().st_mode) == 0o600


# -- swizzling ----------------------------------------------------------------------------------


def test_rechained_tamper_breaks_only_the_signature(builder: RepoBuilder) -> None:
    repo = builder.history[-1]
    sw = Swizzler(builder)
    tampered = sw.set_field(repo, "targets", "targets.latest.length", 1)
    # Without rechaining, the hash check breaks and the old checksum name serves the new bytes.
    old_hex = hashlib.sha256(repo.role_bytes("targets")).hexdigest()
    assert tampered.files[f"targets.{old_hex}.json"] == tampered.role_bytes("targets")
    assert not meta_matches(tampered, "snapshot", "targets")
    bad = sw.rechain(tampered, ["targets"])
    assert meta_matches(bad, "snapshot", "targets")
    assert meta_matches(bad, "timestamp", "snapshot")
    assert role_verifies(bad, "snapshot") and role_verifies(bad, "timestamp")
    assert not role_verifies(bad, "targets")
    assert bad.version("snapshot") == repo.version("snapshot")
    assert repo.signed("targets")["targets"]["latest"]["length"] == 528  # input untouched
    # Re-signed instead, the edit is the only change and everything verifies.
    assert_repo_consistent(sw.rechain(sw.set_field(repo, "targets", ["version"], 9, resign=True)))


def test_signature_mutations(builder: RepoBuilder) -> None:
    repo = builder.history[-1]
    sw = Swizzler(builder)
    assert sw.clear_signatures(repo, "timestamp").envelope("timestamp")["signatures"] == []
    assert "signatures" not in sw.remove_signatures_field(repo, "timestamp").envelope("timestamp")
    dup = sw.duplicate_signatures(repo, "targets", 3)
    assert len(dup.envelope("targets")["signatures"]) == 3 and role_verifies(dup, "targets")
    junk = sw.add_junk_signature(repo, "targets")
    assert len(junk.envelope("targets")["signatures"]) == 2 and role_verifies(junk, "targets")
    assert not role_verifies(sw.corrupt_signatures(repo, "targets"), "targets")
    assert not role_verifies(sw.sign_with_wrong_key(repo, "targets"), "targets")
    ts_key = builder.keys("timestamp")[0]
    wrong = sw.sign_with_wrong_key(repo, "targets", ts_key)
    assert wrong.envelope("targets")["signatures"][0]["keyid"] == ts_key.keyid
    assert not role_verifies(wrong, "targets")
    lied = sw.sign_with_wrong_key(repo, "targets", claim_keyid=builder.keys("targets")[0].keyid)
    assert not role_verifies(lied, "targets")
    assert sw.set_method(repo, "targets", "RSAPSS").envelope("targets")["signatures"][0][
        "method"
    ] == ("RSAPSS")
    resigned = sw.resign(repo, "targets", [ts_key])
    assert valid_signers(resigned, "targets") == set()


def test_field_mutations(builder: RepoBuilder) -> None:
    repo = builder.history[-1]
    sw = Swizzler(builder)
    expired = sw.expire(repo, "targets/releases")
    assert expired.signed("targets/releases")["expires"] == "2029-12-31T23:59:00Z"
    assert role_verifies(expired, "targets/releases")
    assert sw.set_type(repo, "timestamp", "Snapshot").signed("timestamp")["_type"] == "Snapshot"
    assert sw.set_version(repo, "snapshot", 0).version("snapshot") == 0
    no_root = sw.remove_meta(repo, "snapshot", "root")
    assert "root" not in no_root.signed("snapshot")["meta"] and role_verifies(no_root, "snapshot")
    gone = sw.set_field(repo, "targets", "delegations.roles.0.paths", DELETE, resign=True)
    assert "paths" not in gone.signed("targets")["delegations"]["roles"][0]
    floaty = sw.set_field(repo, "targets", "version", 2.5)
    assert b'"version":2.5' in floaty.role_bytes("targets")
    swapped = sw.swap(repo, "timestamp", "snapshot")
    assert swapped.signed("timestamp")["_type"] == "Snapshot"
    assert swapped.signed("snapshot")["_type"] == "Timestamp"
    replayed = sw.take(repo, "targets", builder.history[0])
    assert replayed.version("targets") == 1
    with pytest.raises(json.JSONDecodeError):
        sw.invalid_json(repo, "root").envelope("root")
    padded = sw.pad(repo, "snapshot", 1000)
    assert len(padded.role_bytes("snapshot")) == len(repo.role_bytes("snapshot")) + 1000
    assert padded.signed("snapshot") == repo.signed("snapshot")
    assert len(sw.truncate(repo, "snapshot", 10).role_bytes("snapshot")) == 10
    removed = sw.remove(repo, "targets/releases")
    assert not any(n.startswith("targets/releases") and n.count(".") == 1 for n in removed.files)
    assert "targets/releases.json" not in removed.files
    envelope = sign_envelope({"_type": "Timestamp"}, builder.keys("timestamp"))
    assert sw.set_envelope(repo, "timestamp", envelope).signed("timestamp") == {
        "_type": "Timestamp"
    }


def test_swizzler_with_plain_key_mapping(builder: RepoBuilder) -> None:
    keys: dict[str, list[Key]] = {r: builder.signing_keys(r) for r in builder.roles}
    sw = Swizzler(keys)
    repo = sw.rechain(sw.pad(builder.history[-1], "targets", 5))
    assert_repo_consistent_hashes = meta_matches(repo, "snapshot", "targets")
    assert assert_repo_consistent_hashes and role_verifies(repo, "timestamp")


# -- server -------------------------------------------------------------------------------------


@pytest.fixture()
def server(builder: RepoBuilder) -> Any:
    before = set(threading.enumerate())
    with FixtureServer({GUN: builder.history[-1]}) as srv:
        yield srv
    leftover = [t for t in threading.enumerate() if t not in before and t.is_alive()]
    assert leftover == []


def _get(srv: FixtureServer, name: str, **kwargs: Any) -> requests.Response:
    return requests.get(srv.metadata_url(GUN, name), verify=str(srv.ca_path), timeout=10, **kwargs)


def test_server_layout_and_records(server: FixtureServer, builder: RepoBuilder) -> None:
    repo = builder.history[-1]
    ping = requests.get(server.url + "/v2/", verify=str(server.ca_path), timeout=10)
    assert ping.status_code == 200 and ping.json() == {}
    for name in [
        "root.json",
        "timestamp.json",
        "targets/releases.json",
        "1.root.json",
        f"snapshot.{hashlib.sha256(repo.role_bytes('snapshot')).hexdigest()}.json",
    ]:
        resp = _get(server, name, headers={"X-Probe": name})
        assert resp.status_code == 200 and resp.content == repo.files[name]
    missing = _get(server, "nothing.json")
    assert missing.status_code == 404 and missing.json()["errors"][0]["code"]
    other = requests.get(
        server.url + "/v2/other/gun/_trust/tuf/root.json", verify=str(server.ca_path), timeout=10
    )
    assert other.status_code == 404
    recorded = server.requests
    assert [r.path for r in recorded][:2] == ["/v2/", f"/v2/{GUN}/_trust/tuf/root.json"]
    assert recorded[1].headers["X-Probe"] == "root.json" and recorded[1].method == "GET"
    assert recorded[3].name == "targets/releases.json"
    assert len(server.requests_for("*/targets/*")) == 1
    server.publish(GUN, builder.history[0])
    assert _get(server, "targets.json").content == builder.history[0].role_bytes("targets")
    server.unpublish(GUN)
    assert _get(server, "root.json").status_code == 404
    server.clear_requests()
    assert server.requests == []


def test_fault_status_times_and_headers(server: FixtureServer) -> None:
    server.add_fault("*/timestamp.json", status=503, times=1, headers={"Retry-After": "1"})
    first = _get(server, "timestamp.json")
    assert first.status_code == 503 and first.headers["Retry-After"] == "1"
    assert _get(server, "timestamp.json").status_code == 200
    server.add_fault("*/root.json", content_type="text/html", body=b"<html>portal</html>")
    html = _get(server, "root.json")
    assert html.headers["Content-Type"] == "text/html" and html.content == b"<html>portal</html>"
    server.add_fault("*/snapshot.json", redirect="http://127.0.0.1:1/elsewhere")
    redirect = _get(server, "snapshot.json", allow_redirects=False)
    assert redirect.status_code == 302
    assert redirect.headers["Location"] == "http://127.0.0.1:1/elsewhere"


def test_fault_delay_and_trickle(server: FixtureServer, builder: RepoBuilder) -> None:
    server.add_fault("*/timestamp.json", delay=0.5)
    start = time.monotonic()
    assert _get(server, "timestamp.json").status_code == 200
    assert time.monotonic() - start >= 0.5
    server.add_fault("*/root.json", delay=5)
    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.get(server.metadata_url(GUN, "root.json"), verify=str(server.ca_path), timeout=0.3)
    body = builder.history[-1].role_bytes("targets")
    server.add_fault("*/targets.json", trickle=(len(body) // 3 + 1, 0.2))
    start = time.monotonic()
    assert _get(server, "targets.json").content == body
    assert time.monotonic() - start >= 0.4


def test_fault_broken_bodies(server: FixtureServer, builder: RepoBuilder) -> None:
    body = builder.history[-1].role_bytes("targets")
    server.add_fault("*/targets.json", reset_after=10, times=1)
    with pytest.raises(BROKEN):
        _get(server, "targets.json")
    server.add_fault("*/root.json", truncate_to=10, times=1)
    with pytest.raises(BROKEN):
        _get(server, "root.json")
    server.add_fault("*/snapshot.json", content_length=10_000, times=1)
    with pytest.raises(BROKEN):
        _get(server, "snapshot.json")
    server.add_fault("*/targets.json", oversize=5000, times=1)
    big = _get(server, "targets.json")
    assert big.content == body + b" " * 5000
    assert big.headers["Content-Length"] == str(len(body) + 5000)


def test_fault_endless_body_stops_at_client_limit(server: FixtureServer) -> None:
    server.add_fault("*/timestamp.json", endless=True)
    limit = 3 * 1024 * 1024
    received = 0
    with _get(server, "timestamp.json", stream=True) as resp:
        assert "Content-Length" not in resp.headers
        for chunk in resp.iter_content(64 * 1024):
            received += len(chunk)
            if received >= limit:
                break
    assert received >= limit
    deadline = time.monotonic() + 5
    while not server.endless_sent and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.endless_sent and server.endless_sent[0] < 1 << 30


def test_fault_endless_and_hang_end_on_stop(builder: RepoBuilder) -> None:
    before = set(threading.enumerate())
    srv = FixtureServer({GUN: builder.history[-1]}).start()
    srv.add_fault("*/timestamp.json", endless=True, trickle=(1, 0.5))
    srv.add_fault("*/root.json", hang=True)
    sockets = []
    for name in ("timestamp.json", "root.json"):
        # Raw clients that never read: the server must still stop promptly.
        raw = socket.create_connection(("127.0.0.1", srv.port))
        import ssl

        ctx = ssl.create_default_context(cafile=str(srv.ca_path))
        tls = ctx.wrap_socket(raw, server_hostname="127.0.0.1")
        tls.sendall(f"GET /v2/{GUN}/_trust/tuf/{name} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        sockets.append(tls)
    time.sleep(0.3)
    start = time.monotonic()
    srv.stop()
    assert time.monotonic() - start < 5
    for tls in sockets:
        tls.close()
    leftover = [t for t in threading.enumerate() if t not in before and t.is_alive()]
    assert leftover == []


def test_fault_gzip_bomb(server: FixtureServer, builder: RepoBuilder) -> None:
    body = builder.history[-1].role_bytes("timestamp")
    server.add_fault("*/timestamp.json", gzip_bomb=20 * 1024 * 1024)
    with _get(server, "timestamp.json", stream=True) as resp:
        assert resp.headers["Content-Encoding"] == "gzip"
        raw = resp.raw.read(decode_content=False)
    assert len(raw) < 200 * 1024
    decoded = gzip.decompress(raw)
    assert decoded.startswith(body) and len(decoded) == len(body) + 20 * 1024 * 1024
    assert decoded[len(body) :].strip() == b""


def test_fault_pattern_object_and_clear(server: FixtureServer) -> None:
    fault = server.add_fault("*/timestamp.json", Fault(status=500))
    assert _get(server, "timestamp.json").status_code == 500
    assert fault.hits == 1
    server.clear_faults()
    assert _get(server, "timestamp.json").status_code == 200


# -- fidelity against notary itself ------------------------------------------------------------

NOTARY = shutil.which("notary")


@pytest.mark.skipif(NOTARY is None and not in_ci(), reason="notary CLI not installed")
def test_notary_cli_accepts_generated_repo(tmp_path: Path) -> None:
    assert NOTARY is not None
    b = RepoBuilder(GUN)  # real time: notary checks expiry against its clock
    b.add_target("latest", DIGEST1, 528)
    b.add_delegation("targets/releases", [generate_key("rsa-x509", cn="signer")])
    b.add_target("1.0", DIGEST2, 700, role="targets/releases")
    b.publish()
    b.rotate_key("root")
    b.rotate_key("targets/releases", [generate_key("ed25519")])
    b.add_target("1.0", DIGEST2, 700, role="targets/releases")
    good = b.publish()
    with FixtureServer({GUN: good}) as srv:

        def notary(*args: str, trust: str) -> subprocess.CompletedProcess[str]:
            cmd = [NOTARY, "-s", srv.url, "--tlscacert", str(srv.ca_path), "-d", trust, *args]
            return subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)

        listed = notary("list", GUN, trust=str(tmp_path / "a"))
        assert listed.returncode == 0, listed.stderr
        assert DIGEST1 in listed.stdout and DIGEST2 in listed.stdout
        names = {r.name for r in srv.requests if r.name}
        assert "root.json" in names and "timestamp.json" in names
        assert any(
            n.startswith("snapshot.") and len(n) == len("snapshot..json") + 64 for n in names
        )
        sw = Swizzler(b)
        srv.publish(GUN, sw.rechain(sw.set_field(good, "targets", "targets.latest.length", 1)))
        refused = notary("lookup", GUN, "latest", trust=str(tmp_path / "b"))
        assert refused.returncode != 0
