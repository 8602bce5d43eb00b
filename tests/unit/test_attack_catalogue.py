"""Catalogue cases (shared/spec/attacks.md) not covered by test_notary_client.py, end to end.

Same harness as test_notary_client.py: a generated repository (fixtures/notarygen.py) served by
FixtureServer over real HTTPS on loopback, `trust.trusted_pull.pull` with a recording fake
engine, and `Env.refuse` checking REFUSE + KEEP + NOPULL: the exact error class and exit code,
the trust cache byte-identical, no temporary file, no pull or tag sent to the engine.

The transport module has finer-grained tests of the same faults (tests/unit/test_transport.py);
these prove the whole path, from reference to engine, refuses them.
"""

from __future__ import annotations

import copy
import datetime as dt
import errno
import json
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization

from fixtures.notarygen import Key, Repo, RepoBuilder, generate_key
from fixtures.tlsgen import make_ca
from tests.unit._listener import TOKEN, Listener
from tests.unit._trust_env import (
    D1,
    D2,
    FAST,
    GUN,
    NOW,
    REF,
    Env,
    baseline_builder,
    env_factory,
)
from trust.config import load_config
from trust.credentials import RegistryAuth
from trust.errors import (
    AuthError,
    CertificateError,
    InputError,
    InvalidReferenceError,
    LengthError,
    MalformedError,
    NetworkError,
    TrustPinError,
)
from trust.lookup import lookup_tag
from trust.notary.client import trust_server_for
from trust.reference import parse
from trust.settings import TrustPinning

MakeEnv = Callable[..., Env]
DAY = dt.timedelta(days=1)
PREFIX = GUN.split("/", 1)[0] + "/"


@pytest.fixture
def make_env(isolated_home: Path) -> Iterator[MakeEnv]:
    yield from env_factory()


def digest_of(env: Env, ref: str = REF, **kwargs: Any) -> str:
    data = env.update(ref, **kwargs)
    return lookup_tag(data, parse(ref).tag or "latest").digest


def root_builder(*root_keys: Key) -> RepoBuilder:
    """The baseline repository whose root role is exactly `root_keys` (first use: no cache)."""
    builder = baseline_builder(others=False)
    builder.rotate_key("root", list(root_keys), sign_with="new")
    return builder


def ca_file(tmp_path: Path, *keys: Key, name: str = "ca.pem") -> bytes:
    """The CA bundle `name` as the configuration loader hands it over: the file's PEM bytes."""
    path = tmp_path / name
    path.write_bytes(
        b"".join(k.cert.public_bytes(serialization.Encoding.PEM) for k in keys if k.cert)
    )
    return path.read_bytes()


def ca_key(cn: str = "Pinned CA", **kwargs: Any) -> Key:
    return generate_key("ecdsa-x509", cn=cn, is_ca=True, not_before=NOW - 30 * DAY, **kwargs)


# =========================================================================== D. pinning


def test_D08_pinned_ca(make_env: MakeEnv, tmp_path: Path) -> None:
    """The root leaf must chain to the CA pinned for the longest matching GUN prefix."""
    ca, other = ca_key(), ca_key("Other CA")
    builder = baseline_builder(others=False)
    leaf = builder.new_key("ecdsa-x509", issuer=ca)
    builder.rotate_key("root", [leaf], sign_with="new")
    env = make_env(builder)
    env.refuse(TrustPinError, trust_pinning=TrustPinning(ca={PREFIX: ca_file(tmp_path, other)}))
    # The most specific prefix wins: the right CA for the whole host, the wrong one for the GUN.
    both = {PREFIX: ca_file(tmp_path, ca), GUN: ca_file(tmp_path, other, name="o.pem")}
    env.refuse(TrustPinError, trust_pinning=TrustPinning(ca=both))
    # Certs outrank CA: a wrong cert-id pin refuses even with the right CA.
    env.refuse(
        TrustPinError,
        trust_pinning=TrustPinning(certs={GUN: ("0" * 64,)}, ca={PREFIX: ca_file(tmp_path, ca)}),
    )
    # An expired CA next to the right one is ignored; the chain to the valid one still holds.
    old = ca_key("Old CA", not_after=NOW - DAY)
    pinning = TrustPinning(ca={PREFIX: ca_file(tmp_path, old, ca, name="both.pem")})
    assert digest_of(env, trust_pinning=pinning) == "sha256:" + D1


def test_D09b_rotation_must_still_pass_the_pin(make_env: MakeEnv) -> None:
    """A root rotation signed correctly by the old root is refused when the new root does not
    satisfy the configured pin (notary de958036)."""
    env = make_env()
    pinned = TrustPinning(certs={GUN: (env.builder.keys("root")[0].canonical_id,)})
    assert digest_of(env, trust_pinning=pinned) == "sha256:" + D1
    env.builder.rotate_key("root")  # signed by old + new: a valid rotation
    env.serve()
    env.refuse(TrustPinError, trust_pinning=pinned)
    # Without the pin the same rotation is accepted (the refusal was the pin's doing).
    assert digest_of(env) == "sha256:" + D1


# =========================================================================== E. delegations


def test_E11_diamond_cannot_arise_under_E07(make_env: MakeEnv) -> None:
    """A role reachable from two delegators needs a parent to list a non-direct child
    (`targets` listing `targets/releases/ci` beside `targets/releases`): E07's direct-child
    rule refuses that file, so no role is ever verified through two parents."""

    def mutate(env: Env, repo: Repo) -> Repo:
        signed = copy.deepcopy(repo.signed("targets"))
        attacker = env.builder.new_key()
        signed["delegations"]["keys"][attacker.keyid] = attacker.to_dict()
        signed["delegations"]["roles"].append(
            {
                "name": "targets/releases/ci",
                "keyids": [attacker.keyid],
                "threshold": 1,
                "paths": [""],
            }
        )
        return env.sw.rechain(env.sw.resign_envelope(repo, "targets", signed), ["targets"])

    env = make_env(publish=False)
    env.serve(mutate(env, env.builder.publish()))
    env.refuse(MalformedError)


# =========================================================================== F. x509


@pytest.mark.parametrize("weakness", ["sha1-ecdsa", "sha1-rsa", "rsa-1024"])
def test_F03_weak_certificate_crypto(make_env: MakeEnv, weakness: str) -> None:
    builder = baseline_builder(others=False)
    if weakness == "sha1-ecdsa":
        key = builder.new_key("ecdsa-x509", cert_hash=hashes.SHA1())  # noqa: S303
    elif weakness == "sha1-rsa":
        key = builder.new_key("rsa-x509", cert_hash=hashes.SHA1())  # noqa: S303
    else:
        key = builder.new_key("rsa-x509", rsa_bits=1024)
    builder.rotate_key("root", [key], sign_with="new")
    make_env(builder).refuse(CertificateError)


def test_F03_control_rsa_2048_sha256_is_accepted(make_env: MakeEnv) -> None:
    builder = baseline_builder(others=False)
    builder.rotate_key("root", [builder.new_key("rsa-x509")], sign_with="new")
    assert digest_of(make_env(builder)) == "sha256:" + D1


@pytest.mark.parametrize("shape", ["ca-only", "two-leaves", "intermediate-first"])
def test_F04_malformed_certificate_bundle(make_env: MakeEnv, shape: str) -> None:
    builder = baseline_builder(others=False)
    ca = ca_key()
    leaf = builder.new_key("ecdsa-x509", issuer=ca)
    assert leaf.cert is not None and ca.cert is not None
    if shape == "ca-only":
        key = generate_key("ecdsa-x509", cn=GUN, is_ca=True, not_before=NOW - DAY)
    elif shape == "two-leaves":
        second = builder.new_key("ecdsa-x509")
        assert second.cert is not None
        key = leaf.with_public(public=_pem_b64(leaf.cert, second.cert))
    else:
        key = leaf.with_public(public=_pem_b64(ca.cert, leaf.cert))
    builder.rotate_key("root", [key], sign_with="new")
    make_env(builder).refuse(CertificateError)


def _pem_b64(*certs: Any) -> str:
    import base64

    return base64.b64encode(
        b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)
    ).decode()


def test_F05_expired_intermediate_with_a_ca_pin(make_env: MakeEnv, tmp_path: Path) -> None:
    root_ca = ca_key("Root CA")
    pinning = TrustPinning(ca={PREFIX: ca_file(tmp_path, root_ca)})

    def env_with(intermediate: Key) -> Env:
        builder = baseline_builder(others=False)
        assert intermediate.cert is not None
        leaf = builder.new_key("ecdsa-x509", issuer=intermediate, chain=[intermediate.cert])
        builder.rotate_key("root", [leaf], sign_with="new")
        return make_env(builder)

    expired = ca_key("Intermediate", issuer=root_ca, not_after=NOW - DAY)
    env_with(expired).refuse(TrustPinError, trust_pinning=pinning)
    valid = ca_key("Intermediate", issuer=root_ca)
    assert digest_of(env_with(valid), trust_pinning=pinning) == "sha256:" + D1


@pytest.mark.parametrize(
    ("cn", "accepted"),
    [
        ("*", True),  # a trailing `*` is a prefix: valid for every GUN (documented)
        (PREFIX + "*", True),
        (PREFIX + "*/app", False),  # `*` in the middle matches nothing
        ("127.0.0.1:5000/other/*", False),
    ],
)
def test_F06_wildcard_common_names(make_env: MakeEnv, cn: str, accepted: bool) -> None:
    builder = baseline_builder(others=False)
    builder.rotate_key("root", [builder.new_key("ecdsa-x509", cn=cn)], sign_with="new")
    env = make_env(builder)
    if accepted:
        assert digest_of(env) == "sha256:" + D1
    else:
        env.refuse(CertificateError)


@pytest.mark.parametrize("material", ["public-key-pem", "random-bytes", "rsa-cert-as-ecdsa"])
def test_F07_x509_key_that_is_not_its_declared_certificate(
    make_env: MakeEnv, material: str
) -> None:
    import base64

    builder = baseline_builder(others=False)
    real = builder.new_key("ecdsa-x509")
    assert real.private_key is not None
    if material == "public-key-pem":
        pem = real.private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        key = real.with_public(public=base64.b64encode(pem).decode())
    elif material == "random-bytes":
        key = real.with_public(public=base64.b64encode(os.urandom(64)).decode())
    else:
        rsa_cert = builder.new_key("rsa-x509").cert
        assert rsa_cert is not None
        key = real.with_public(public=_pem_b64(rsa_cert))  # signed with the EC key
    builder.rotate_key("root", [key], sign_with="new")
    make_env(builder).refuse(CertificateError)


# =========================================================================== G. transport


def test_G04_trickling_server_is_cut_at_the_file_deadline(make_env: MakeEnv) -> None:
    env = make_env()
    env.server.add_fault("*/timestamp.json", trickle=(1, 0.05))
    limits = replace(FAST, file_timeout=0.5, read_timeout=0.5, retries=0)
    started = time.monotonic()
    error = env.refuse(NetworkError, limits=limits)
    assert "slow retrieval" in error.message
    assert time.monotonic() - started < 3.0


def test_G04_silent_server_hits_the_read_timeout(make_env: MakeEnv) -> None:
    env = make_env()
    env.server.add_fault("*/snapshot.*", hang=True)
    limits = replace(FAST, read_timeout=0.3, file_timeout=1.0, retries=1, retry_backoff=0.01)
    started = time.monotonic()
    env.refuse(NetworkError, limits=limits)
    assert time.monotonic() - started < 4.0


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        ({"reset_after": 40}, NetworkError),
        ({"truncate_to": 40}, NetworkError),
        # A whole body that is wrong is not a network failure: exit 5, not 6.
        (
            {"status": 200, "body": b"<html>captive portal</html>", "content_type": "text/html"},
            MalformedError,
        ),
    ],
)
def test_G05_truncated_or_garbled_answers(
    make_env: MakeEnv, fault: dict[str, Any], error: type[Exception]
) -> None:
    env = make_env()
    env.server.add_fault("*/timestamp.json", **fault)
    env.refuse(error, limits=replace(FAST, retries=0))  # type: ignore[arg-type]


def test_G07_gzip_bomb_is_capped_on_decoded_bytes(make_env: MakeEnv) -> None:
    env = make_env()
    env.server.add_fault("*/timestamp.json", gzip_bomb=64 << 20)
    env.refuse(LengthError)
    sent = env.server.requests_for("*/timestamp.json")
    assert sent and all(r.headers.get("Accept-Encoding") == "identity" for r in sent)


@pytest.mark.parametrize("kind", ["to-http", "to-file", "loop"])
def test_G08_redirects(make_env: MakeEnv, kind: str) -> None:
    env = make_env()
    path = f"/v2/{GUN}/_trust/tuf/timestamp.json"
    location = {
        "to-http": f"http://127.0.0.1:{env.server.port}{path}",
        "to-file": "file:///etc/passwd",
        "loop": path,
    }[kind]
    env.server.add_fault("*/timestamp.json", redirect=location)
    env.refuse(NetworkError, limits=replace(FAST, max_redirects=3, retries=0))
    hits = len(env.server.requests_for("*/timestamp.json"))
    assert hits == (4 if kind == "loop" else 1)


@pytest.mark.parametrize("how", ["no-ca", "rogue-ca"])
def test_G09_untrusted_certificate(make_env: MakeEnv, tmp_path: Path, how: str) -> None:
    env = make_env()
    tls_dir = env.docker_config / "tls" / f"127.0.0.1:{env.server.port}"
    shutil.rmtree(tls_dir)
    if how == "rogue-ca":
        rogue = make_ca(tmp_path / "rogue", "rogue CA")
        tls_dir.mkdir()
        shutil.copy(rogue.cert_path, tls_dir / "ca.crt")
    error = env.refuse(NetworkError)
    assert "TLS" in error.message or "certificate" in error.message.lower()
    assert env.server.requests == []  # no request got through
    # The handshakes were tried (and refused by trustpull), and none retried over plain http,
    # which the server would see as an HTTP request on its TLS port.
    deadline = time.monotonic() + 5  # the server notes a failed handshake in its own thread
    while not any("TLS handshake" in e for e in env.server.errors):
        assert time.monotonic() < deadline, env.server.errors
        time.sleep(0.01)
    assert not [e for e in env.server.errors if "http request" in e.lower()], env.server.errors


@pytest.mark.parametrize(
    "url",
    ["http://{host}", "ftp://{host}", "{host}", "https://user:pw@{host}", "https://{host}/?q=1"],
)
def test_G10_trust_server_url_forms_refused(make_env: MakeEnv, url: str) -> None:
    """Each form is refused with exit 3 from the environment and when handed in directly (a
    config entry, a policy rule, the API), and nothing connects to the host it names: a real
    listener there records every connection (TLS or not) and every request."""
    env = make_env()
    with Listener() as wire:
        value = url.format(host=f"127.0.0.1:{wire.port}")
        with pytest.raises(InputError) as caught:
            load_config({"DOCKER_CONTENT_TRUST_SERVER": value})
        assert caught.value.exit_code == 3
        error = env.refuse(InputError, trust_server_override=value)
        assert "trust server" in error.message
    assert (wire.connections, wire.requests) == (0, [])
    assert env.server.requests == []


def _challenge(realm: str) -> dict[str, str]:
    return {"WWW-Authenticate": f'Bearer realm="{realm}",service="notary",scope="x"'}


def _registry_credentials(env: Env) -> str:
    """config.json credentials for the GUN's registry: what a wrong realm would be sent."""
    config = {"auths": {GUN.split("/", 1)[0]: {"auth": _basic("alice", "pw-secret-7e")}}}
    (env.docker_config / "config.json").write_text(json.dumps(config))
    return "Basic " + _basic("alice", "pw-secret-7e")


def _leaked(requests: list[Any], credentials: str) -> list[Any]:
    """Requests that carried the registry credentials in any form (header, query, body)."""
    return [
        r
        for r in requests
        if "Authorization" in r.headers
        or "pw-secret-7e" in r.path
        or "alice" in r.path
        or b"pw-secret-7e" in getattr(r, "body", b"")
        or credentials in r.headers.values()
    ]


@pytest.mark.parametrize("case", ["http-realm-elsewhere", "token-500", "token-not-json", "403"])
def test_G11_token_authentication_faults(make_env: MakeEnv, case: str) -> None:
    env = make_env()
    credentials = _registry_credentials(env)
    base = env.server.url
    with Listener() as attacker:
        # `127.1` is this machine (inet_aton's short form) but not a loopback literal, so the
        # realm is a plain-http host elsewhere with a real listener behind it.
        elsewhere = f"http://127.1:{attacker.port}/token"
        if case == "403":
            env.server.add_fault("*/timestamp.json", status=403)
        else:
            realm = elsewhere if case == "http-realm-elsewhere" else f"{base}/token"
            env.server.add_fault("/v2/", status=401, headers=_challenge(realm))
            env.server.add_fault("*/_trust/tuf/*", status=401, headers=_challenge(realm))
            if case == "token-500":
                env.server.add_fault("/token*", status=500)
            elif case == "token-not-json":
                env.server.add_fault(
                    "/token*", status=200, body=b"<html>", content_type="text/html"
                )
        error = env.refuse(AuthError)
    assert error.exit_code == 7
    # Auth failures are never "not signed", and never fall back to a cache.
    # No credentials left the process for the attacker's realm: nothing connected to it at all.
    assert _leaked(attacker.requests, credentials) == []
    assert (attacker.connections, attacker.requests) == (0, [])
    # The run did not go on with the attacker's token either.
    assert not any(TOKEN in v for r in env.server.requests for v in r.headers.values())
    token_requests = [r for r in env.server.requests if r.path.startswith("/token")]
    if case in ("token-500", "token-not-json"):
        # The fault under test was reached: the trust server's own realm was asked.
        assert token_requests and all(
            r.headers.get("Authorization") == credentials for r in token_requests
        )
    else:
        assert token_requests == []


def test_G11_https_realm_on_another_host_gets_no_credentials(
    make_env: MakeEnv, tmp_path: Path
) -> None:
    """issue 11 item 8 over https: a trust server run by another party names an https realm on
    another host (`localhost` is not the trust server's `127.0.0.1`) whose certificate is
    trusted: the registry's credentials are not sent there (exit 7). Failed on the old realm
    rule (any https realm), where the listener received `Authorization: Basic …`."""
    env = make_env()
    credentials = _registry_credentials(env)
    realm_ca = make_ca(tmp_path / "realm", "realm CA")
    cert = realm_ca.issue_server(tmp_path / "realm", hosts=("localhost",))
    tls = env.docker_config / "tls" / f"127.0.0.1:{env.server.port}"
    shutil.copy(realm_ca.cert_path, tls / "realm-ca.crt")  # trusted, as a public CA would be
    with Listener(tls=(cert.cert_path, cert.key_path)) as attacker:
        realm = f"https://localhost:{attacker.port}/token"
        env.server.add_fault("/v2/", status=401, headers=_challenge(realm))
        env.server.add_fault("*/_trust/tuf/*", status=401, headers=_challenge(realm))
        error = env.refuse(AuthError)
    assert error.exit_code == 7
    assert _leaked(attacker.requests, credentials) == []
    assert not any(TOKEN in v for r in env.server.requests for v in r.headers.values())


class _RealmListener(ThreadingHTTPServer):
    """A token endpoint on another host (plain http on 127.0.0.1, named "localhost" in the
    realm): it records every request that reaches it and would hand out a token."""

    daemon_threads = True

    def __init__(self) -> None:
        seen: list[dict[str, str]] = []

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                seen.append({"path": self.path, **{k.lower(): v for k, v in self.headers.items()}})
                body = b'{"token": "attacker-token"}'
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_POST = do_GET

        super().__init__(("127.0.0.1", 0), Handler)
        self.seen = seen
        threading.Thread(target=self.serve_forever, daemon=True).start()


def test_G11_credentials_never_reach_a_realm_on_another_host(make_env: MakeEnv) -> None:
    """issue 11 item 8: the trust server names the token realm; the registry password goes
    there only if it is the trust server's or the registry's host (or configured)."""
    env = make_env()
    config = {"auths": {"127.0.0.1:5000": {"auth": _basic("alice", "alice-pw")}}}
    (env.docker_config / "config.json").write_text(json.dumps(config))
    listener = _RealmListener()
    try:
        realm = f"http://localhost:{listener.server_address[1]}/token"
        env.server.add_fault("/v2/", status=401, headers=_challenge(realm))  # for a pinging client
        env.server.add_fault("*/_trust/tuf/*", status=401, headers=_challenge(realm))
        error = env.refuse(AuthError)
        assert listener.seen == []  # not even a connection reached the other host
        assert error.exit_code == 7
        assert realm in error.message and "[auth] realms" in error.diagnostics()
    finally:
        listener.shutdown()
        listener.server_close()


# =========================================================================== H. cache


def _publish_change(env: Env) -> None:
    env.builder.add_target("1.0", "77" * 32, 530, role="targets/releases")
    env.serve()


def test_H03_failed_rename_keeps_old_files_and_no_temp(
    make_env: MakeEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ENOSPC at the rename: the old file stays whole, temp files go, and (decided) the
    verified pull goes on with a warning."""
    env = make_env()
    env.update()
    before = env.cache()
    _publish_change(env)

    def full(src: Any, dst: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("trust.notary.cache.os.replace", full)
    result, engine = env.pull()
    assert result.error is None and result.pulled
    assert [c[2] for c in engine.calls if c[0] == "pull"] == ["sha256:" + "77" * 32]
    assert any("could not write" in w and "No space left" in w for w in env.warnings)
    assert env.cache() == before
    assert list(env.trust_dir.rglob(".tmp-*")) == []


def test_H03_crash_mid_write_leaves_no_torn_file(
    make_env: MakeEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = make_env()
    env.update()
    before = env.cache()
    _publish_change(env)
    real_fsync = os.fsync
    calls: list[int] = []

    def crash(fd: int) -> None:
        calls.append(fd)
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr("trust.notary.cache.os.fsync", crash)
    result, _ = env.pull()
    monkeypatch.setattr("trust.notary.cache.os.fsync", real_fsync)
    assert result.error is None and calls
    assert env.cache() == before
    assert list(env.trust_dir.rglob(".tmp-*")) == []
    # The next run writes the new state whole.
    assert digest_of(env) == "sha256:" + "77" * 32
    after = env.cache()
    path = f"tuf/{GUN}/metadata/targets/releases.json"
    assert after[path][0] == env.builder.repo.role_bytes("targets/releases")


def test_H05_cache_cannot_be_written(make_env: MakeEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    """EACCES on every cache write (tests run as root, so chmod 0500 would not stop them):
    (decided) the verified pull is accepted with a warning that trust was not persisted."""
    env = make_env()

    def denied(*args: Any, **kwargs: Any) -> Any:
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr("trust.notary.cache.tempfile.mkstemp", denied)
    result, engine = env.pull()
    assert result.error is None and result.pulled and result.exit_code == 0
    assert [c[0] for c in engine.calls if c[0] in ("pull", "tag")] == ["pull", "tag"]
    assert [c[2] for c in engine.calls if c[0] == "pull"] == ["sha256:" + D1]
    assert any("not persisted" in w and "rollback protection" in w for w in env.warnings)
    files = [p for p in env.trust_dir.rglob("*") if p.is_file() and p.name != ".trustpull.lock"]
    assert files == []


# =========================================================================== I. input


@pytest.mark.parametrize("text", [f"{GUN.upper()}:1.0", "127.0.0.1:5000/ns/App:1.0"])
def test_I01_upper_case_repository_refused_before_io(make_env: MakeEnv, text: str) -> None:
    env = make_env()
    error = env.refuse(InvalidReferenceError, text)
    assert env.server.requests == []
    if "App" in text:
        assert "must be lowercase" in error.message


@pytest.mark.parametrize(
    "text", [f"{GUN}/{'a' * 250}:1.0", f"{GUN}:{'t' * 129}"], ids=["name-256", "tag-129"]
)
def test_I02_too_long_refused_before_io(make_env: MakeEnv, text: str) -> None:
    env = make_env()
    env.refuse(InvalidReferenceError, text)
    assert env.server.requests == []


@pytest.mark.parametrize(
    "digest",
    [
        "sha256:" + "AB" * 32,
        "sha256:" + "a" * 63,
        "sha256:" + "a" * 65,
        "md5:" + "a" * 32,
        "sha256:" + "g" * 64,
    ],
)
def test_I06_malformed_digests_refused_before_io(make_env: MakeEnv, digest: str) -> None:
    env = make_env()
    env.refuse(InvalidReferenceError, f"{GUN}@{digest}")
    env.refuse(InvalidReferenceError, "a" * 64)  # a bare 64-hex name
    assert env.server.requests == []


@pytest.mark.parametrize(
    "text",
    ["alpine", "library/alpine", "docker.io/alpine", "index.docker.io/library/alpine:latest"],
)
def test_I07_docker_hub_forms_normalise_to_one_gun(make_env: MakeEnv, text: str) -> None:
    ref = parse(text)
    assert ref.name == "docker.io/library/alpine" and ref.tag == "latest"
    from trust.settings import Settings

    assert trust_server_for(ref.domain, Settings()) == "https://notary.docker.io"
    # End to end, with the trust server overridden to the fixture: that one name is the GUN
    # verified and the repository pulled, by the digest signed for `latest`.
    hub = "docker.io/library/alpine"
    builder = baseline_builder(hub, others=False)
    builder.add_target("latest", D2, 540, role="targets/releases")
    env = make_env(builder, publish=False)
    env.server.publish(hub, builder.publish())
    result, engine = env.pull(text)
    assert result.error is None and result.exit_code == 0
    assert engine.calls[0] == ("pull", hub, "sha256:" + D2)
    tuf_paths = {r.path.split("/_trust/")[0] for r in env.server.requests if "/_trust/" in r.path}
    assert tuf_paths == {f"/v2/{hub}"}


def test_I07_verified_gun_is_the_pulled_repository(make_env: MakeEnv) -> None:
    env = make_env()
    result, engine = env.pull(GUN)  # no tag: latest is the default, and is not signed here
    assert result.error is not None and result.exit_code == 4
    result, engine = env.pull(REF)
    assert result.error is None
    assert engine.calls[0] == ("pull", GUN, "sha256:" + D1)
    assert engine.calls[1] == ("tag", f"{GUN}@sha256:{D1}", GUN, "1.0")
    tuf_paths = {
        r.path.split("/_trust/", 1)[0] for r in env.server.requests if "/_trust/" in r.path
    }
    assert tuf_paths == {f"/v2/{GUN}"}


@pytest.mark.parametrize(
    "text",
    [
        "--help",
        "-v=/:/host",
        f"https://{GUN}",
        "127.0.0.1:5000//app",
        f"{GUN}/",
        ":tag",
        "@sha256:" + "a" * 64,
        "",
    ],
)
def test_I08_injection_schemes_and_empty_components(make_env: MakeEnv, text: str) -> None:
    env = make_env()
    env.refuse(InvalidReferenceError, text)
    assert env.server.requests == []


# =========================================================================== J. engine side


def test_J07_credentials_are_chosen_by_the_exact_registry_host(make_env: MakeEnv) -> None:
    """Two hosts in config.json: the engine gets only the GUN's registry's credentials, and the
    trust server (which asked for none) gets no Authorization header at all."""
    env = make_env()
    config = {
        "auths": {
            "127.0.0.1:5000": {"auth": _basic("right", "pw-right")},
            "127.0.0.1:5001": {"auth": _basic("wrong", "pw-wrong")},
            "https://index.docker.io/v1/": {"auth": _basic("hub", "pw-hub")},
        }
    }
    (env.docker_config / "config.json").write_text(json.dumps(config))
    seen: list[RegistryAuth | None] = []
    pulled: list[str | None] = []

    class Recording:
        def pull(self, name: str, tag_or_digest: str | None, **kwargs: Any) -> None:
            seen.append(kwargs.get("auth"))
            pulled.append(tag_or_digest)

        def tag(self, source: str, repo: str, tag: str) -> None:
            return None

        def close(self) -> None:
            return None

    from trust.service import TrustService
    from trust.trusted_pull import pull

    service = TrustService(env.settings, notice=env.warnings.append)
    result = pull(REF, env.settings, environ={}, engine_factory=Recording, service=service)
    assert result.error is None and result.exit_code == 0
    assert pulled == ["sha256:" + D1]
    assert len(seen) == 1 and seen[0] is not None
    assert (seen[0].username, seen[0].password) == ("right", "pw-right")
    assert all("Authorization" not in r.headers for r in env.server.requests)


def _basic(user: str, password: str) -> str:
    import base64

    return base64.b64encode(f"{user}:{password}".encode()).decode()


def test_J07_trust_server_gets_the_guns_registry_credentials_only(make_env: MakeEnv) -> None:
    """A Basic challenge from the trust server: it gets the GUN registry's credentials, never
    another host's, even though the trust server itself is at another address."""
    env = make_env()
    config = {
        "auths": {
            "127.0.0.1:5000": {"auth": _basic("right", "pw-right")},
            f"127.0.0.1:{env.server.port}": {"auth": _basic("wrong", "pw-wrong")},
        }
    }
    (env.docker_config / "config.json").write_text(json.dumps(config))
    env.server.add_fault(
        "*/_trust/tuf/*", status=401, headers={"WWW-Authenticate": 'Basic realm="t"'}, times=1
    )
    assert lookup_tag(env.update(), "1.0").digest == "sha256:" + D1
    sent = {r.headers.get("Authorization") for r in env.server.requests if "/_trust/" in r.path}
    # The first request goes out bare (no ping, issue 13), the challenge is answered once.
    assert sent == {None, "Basic " + _basic("right", "pw-right")}
