"""trust.prefetch: the early request changes when bytes are fetched, nothing else.

Every outcome is compared with the same verification without the early request: the same
verdict, digest, error type, exit code and message, and the same server answers verified.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.unit._trust_env import D1, GUN, Env, env_factory
from trust.errors import AuthError, NetworkError
from trust.policy import Policy, Rule, Scope
from trust.prefetch import Prefetch, Prefetched
from trust.reference import parse
from trust.route import settings_for
from trust.service import TrustService, Verification
from trust.settings import Settings, TrustSourceConfig

MakeEnv = Callable[..., Env]
REF = f"{GUN}:1.0"


@pytest.fixture
def make_env(isolated_home: Path) -> Iterator[MakeEnv]:
    yield from env_factory()


def _count(env: Env, name: str) -> int:
    return len(env.server.requests_for(f"*/_trust/tuf/{name}.json"))


def _outcome(settings: Settings, *, early: bool, text: str = REF) -> Verification:
    """`service.check(text)` as `trustpull check` runs it, with or without the early request."""
    prefetch = None
    if early:
        prefetch = Prefetch(settings)
        prefetch.start([text])
    return TrustService(settings, prefetch=prefetch).check(text)


def _same(late: Verification, early: Verification) -> None:
    assert early.verdict == late.verdict
    assert early.exit_code == late.exit_code
    assert [r.digest for r in early.resolutions] == [r.digest for r in late.resolutions]
    if late.error is None:
        assert early.error is None
    else:
        assert type(early.error) is type(late.error)
        assert early.error is not None and early.error.message == late.error.message


# ------------------------------------------------------------------ the early answer is used


def test_warm_early_timestamp_is_the_clients_one_request(make_env: MakeEnv) -> None:
    env = make_env()
    TrustService(env.settings).verify(REF)  # trust the root first
    before = _count(env, "timestamp")
    prefetch = Prefetch(env.settings)
    assert prefetch.start([REF]) == 1
    (resolution,) = TrustService(env.settings, prefetch=prefetch).verify(REF).resolutions
    assert resolution.digest == "sha256:" + D1
    assert _count(env, "timestamp") - before == 1  # the early request was the client's
    assert prefetch.take(env.settings.trust_server_override or "", GUN, env.settings) is None


def test_a_timestamp_cached_after_the_early_request_sends_the_clients_own(
    make_env: MakeEnv,
) -> None:
    """Another process verifies a re-signed repository between the early request and the
    client's update: the early timestamp is then older than the cache, and used, it would
    refuse the pull as a rollback that the client's own request (the newer one) never sees."""
    from trust.notary.client import NotaryClient

    env = make_env()
    TrustService(env.settings).verify(REF)  # trust the root first
    prefetch = Prefetch(env.settings)
    assert prefetch.start([REF]) == 1
    early = prefetch._pending[0]
    early._done.wait(10)  # the early answer is in: the old timestamp
    env.builder.bump("timestamp")
    env.serve()
    NotaryClient(env.settings, warn=lambda _text: None).update(parse(REF))  # the other process
    late = _outcome(env.settings, early=False)
    (resolution,) = TrustService(env.settings, prefetch=prefetch).verify(REF).resolutions
    assert late.verdict == "pass" and resolution.digest == "sha256:" + D1


def test_inspect_takes_the_early_timestamp(make_env: MakeEnv) -> None:
    """`trustpull inspect NAME:TAG` (parsed without a default tag, routed as the service's
    inspect routes it) takes the early request as its one timestamp request too."""
    env = make_env()
    TrustService(env.settings).verify(REF)
    before = _count(env, "timestamp")
    prefetch = Prefetch(env.settings)
    assert prefetch.start([REF], inspect=True) == 1
    ref = parse(REF, default_tag=False)
    early = TrustService(env.settings, prefetch=prefetch).inspect(ref, REF, "1.0")
    assert _count(env, "timestamp") - before == 1
    assert early == TrustService(env.settings).inspect(ref, REF, "1.0")


def test_first_use_early_root_is_the_clients_root_request(make_env: MakeEnv) -> None:
    env = make_env()
    early = _outcome(env.settings, early=True)
    assert early.accepted and _count(env, "root") == 1 and _count(env, "timestamp") == 1
    shutil.rmtree(env.trust_dir)
    env.server.clear_requests()
    late = _outcome(env.settings, early=False)
    _same(late, early)
    assert _count(env, "root") == 1 and _count(env, "timestamp") == 1


def test_early_answer_is_checked_like_any_other(make_env: MakeEnv) -> None:
    """A bad timestamp fetched early is refused exactly as a bad one fetched late."""
    env = make_env()
    TrustService(env.settings).verify(REF)
    env.serve(env.sw.sign_with_wrong_key(env.builder.publish(), "timestamp"))
    late = _outcome(env.settings, early=False)
    assert late.exit_code == 5
    timestamps = _count(env, "timestamp")
    _same(late, _outcome(env.settings, early=True))
    assert _count(env, "timestamp") - timestamps == timestamps - 1  # as many requests


def test_another_first_request_goes_to_the_network(make_env: MakeEnv) -> None:
    """The early answer only answers the same first request; otherwise it is dropped and
    every request of the session goes out as without it."""
    env = make_env()
    server = env.settings.trust_server_override or ""
    early = Prefetched(server, GUN, env.settings, ("timestamp", 1 << 16))
    early.run()
    assert _count(env, "timestamp") == 1
    assert early.get_metadata("root", 1 << 20)  # not the early request: the network
    assert early.get_metadata("timestamp", 1 << 16)  # no longer the first: the network too
    assert _count(env, "timestamp") == 2 and early.request_count == 3
    early.close()


def test_session_must_match_server_gun_and_settings(tmp_path: Path) -> None:
    settings = Settings(trust_server_override="https://127.0.0.1:9", docker_config=tmp_path)
    prefetch = Prefetch(settings)
    assert prefetch.start(["127.0.0.1:5000/ns/app:1.0"], wait=False) == 1
    other = dataclasses.replace(settings, docker_config=tmp_path / "other")
    assert prefetch.take("https://127.0.0.1:9", "127.0.0.1:5000/ns/app", other) is None
    assert prefetch.take("https://127.0.0.1:8", "127.0.0.1:5000/ns/app", settings) is None
    assert prefetch.take("https://127.0.0.1:9", "127.0.0.1:5000/ns/other", settings) is None
    assert prefetch.take("https://127.0.0.1:9", "127.0.0.1:5000/ns/app", settings) is not None
    prefetch.close()


# ------------------------------------------------------------------ errors: the same outcome


def test_network_error_is_the_same_outcome(make_env: MakeEnv) -> None:
    env = make_env()
    env.server.stop()
    late = _outcome(env.settings, early=False)
    assert isinstance(late.error, NetworkError) and late.exit_code == 6
    _same(late, _outcome(env.settings, early=True))


def test_network_error_with_a_warm_cache_is_the_same_outcome(make_env: MakeEnv) -> None:
    """The cached timestamp stands in (with its warning) whether the failure came early or
    late."""
    env = make_env()
    TrustService(env.settings).verify(REF)
    env.server.add_fault("*/timestamp.json", status=503)
    late = _outcome(env.settings, early=False)
    assert late.accepted
    _same(late, _outcome(env.settings, early=True))


def test_tls_error_is_the_same_outcome(make_env: MakeEnv) -> None:
    env = make_env()
    shutil.rmtree(env.docker_config / "tls")  # the fixture server's CA is no longer trusted
    late = _outcome(env.settings, early=False)
    assert late.exit_code == 6
    _same(late, _outcome(env.settings, early=True))


@pytest.mark.parametrize("cached", [False, True])
def test_refused_credentials_are_the_same_outcome(make_env: MakeEnv, cached: bool) -> None:
    env = make_env()
    if cached:
        TrustService(env.settings).verify(REF)
    env.server.add_fault("*", status=401, headers={"WWW-Authenticate": 'Basic realm="t"'})
    (env.docker_config / "config.json").write_text(
        json.dumps({"auths": {"127.0.0.1:5000": {"auth": "YWxpY2U6d3Jvbmc="}}})
    )
    late = _outcome(env.settings, early=False)
    assert late.exit_code == 7
    _same(late, _outcome(env.settings, early=True))


@pytest.mark.parametrize("cached", [False, True])
def test_failing_credential_helper_is_the_same_outcome(
    make_env: MakeEnv, cached: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reverted speed merge's bug: the early request met the challenge, the helper failed,
    and the client's next request went out without credentials (exit 7, but the server's 401
    instead of the helper's message)."""
    env = make_env()
    if cached:
        TrustService(env.settings).verify(REF)
    helper = tmp_path / "bin" / "docker-credential-tpfail"
    helper.parent.mkdir()
    helper.write_text(f"#!{sys.executable}\nimport sys\nprint('keychain is locked')\nsys.exit(3)\n")
    helper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{helper.parent}:{Path(sys.executable).parent}:/usr/bin:/bin")
    (env.docker_config / "config.json").write_text(
        json.dumps({"credHelpers": {"127.0.0.1:5000": "tpfail"}})
    )
    env.server.add_fault("*", status=401, headers={"WWW-Authenticate": 'Basic realm="t"'})
    late = _outcome(env.settings, early=False)
    assert late.exit_code == 7 and late.error is not None
    assert "error getting credentials from docker-credential-tpfail" in late.error.message
    assert "keychain is locked" in late.error.message
    _same(late, _outcome(env.settings, early=True))
    # An early request the client does not take (it asks for the root first, as after an
    # expired cached root) leaves the session failing with the helper's error too.
    server = env.settings.trust_server_override or ""
    dropped = Prefetched(server, GUN, env.settings, ("timestamp", 1 << 16))
    dropped.run()
    with pytest.raises(AuthError, match="keychain is locked"):
        dropped.get_metadata("root", 1 << 20)
    dropped.close()


def test_early_error_is_raised_where_the_client_asks(tmp_path: Path) -> None:
    settings = Settings(
        trust_server_override="https://127.0.0.1:9", docker_config=tmp_path / "docker"
    )
    prefetch = Prefetch(settings)
    assert prefetch.start(["127.0.0.1:5000/ns/app:1.0"]) == 1
    early = prefetch.take("https://127.0.0.1:9", "127.0.0.1:5000/ns/app", settings)
    assert early is not None
    with pytest.raises(NetworkError):
        early.get_metadata(*early.first)
    early.close()


# ------------------------------------------------------------------ where the service asks


def test_nothing_is_fetched_early_when_the_service_would_not_ask(tmp_path: Path) -> None:
    base = Settings(trust_server_override="https://127.0.0.1:9", docker_config=tmp_path)
    assert Prefetch(dataclasses.replace(base, offline=True)).start(["127.0.0.1:5000/a:1"]) == 0
    tuf = dataclasses.replace(
        base,
        trust_sources=(
            TrustSourceConfig(
                scope="127.0.0.1:5000/a", metadata_url="https://t/m", root=tmp_path / "r.json"
            ),
        ),
    )
    assert Prefetch(tuf).start(["127.0.0.1:5000/a:1"], wait=False) == 0
    refuse = Rule("no", 0, Scope(registry="127.0.0.1:5000"), origin="t.toml:no", refuse=True)
    assert Prefetch(base, Policy((refuse,), "t.toml")).start(["127.0.0.1:5000/a:1"]) == 0
    refused_names = ["not a ref!", "127.0.0.1:5000/metadata/a:1", "Reg.example/a:1"]
    assert Prefetch(base).start(refused_names) == 0
    assert Prefetch(base).start(["127.0.0.1:5000/a:1"], all_tags=True) == 0  # usage error
    assert Prefetch(base).start([f"127.0.0.1:5000/a@sha256:{D1}"], inspect=True) == 0
    prefetch = Prefetch(base)  # one request per (server, GUN, settings), however many tags
    assert prefetch.start(["127.0.0.1:5000/a:1", "127.0.0.1:5000/a:2"], wait=False) == 1
    prefetch.close()


def test_the_rules_trust_server_and_the_mirrors_origin(tmp_path: Path) -> None:
    """The service's own routing (trust.route): the origin's GUN, the rule's trust server."""
    base = Settings(docker_config=tmp_path, mirrors={"mirror.corp/hub": "docker.io"})
    rule = Rule(
        "own",
        0,
        Scope(registry="docker.io"),
        origin="t.toml:own",
        trust_server="https://127.0.0.1:9",
    )
    prefetch = Prefetch(base, Policy((rule,), "t.toml"))
    assert prefetch.start(["mirror.corp/hub/library/alpine:3"], wait=False) == 1
    origin = parse("docker.io/library/alpine:3")
    settings = settings_for(rule, origin, base)
    assert settings.trust_server_override == "https://127.0.0.1:9"
    assert prefetch.take("https://notary.docker.io", origin.name, base) is None
    early = prefetch.take("https://127.0.0.1:9", origin.name, settings)
    assert early is not None
    early.close()


# ------------------------------------------------------------------ the early TCP connection


def test_preconnected_socket_is_adopted_once_for_its_address_only(make_env: MakeEnv) -> None:
    """The early TCP connection carries the client's TLS session (the server's certificate is
    checked on it as usual); it serves one connection to exactly its address."""
    from urllib.parse import urlsplit

    from trust import preconnect

    env = make_env()
    parts = urlsplit(env.settings.trust_server_override or "")
    assert parts.hostname and parts.port
    assert preconnect.start(parts.hostname, parts.port)
    assert preconnect.adopt(parts.hostname, parts.port + 1, 1.0) is None  # another address
    prefetch = Prefetch(env.settings)
    prefetch.start([REF])
    (resolution,) = TrustService(env.settings, prefetch=prefetch).verify(REF).resolutions
    assert resolution.digest == "sha256:" + D1
    assert preconnect.adopt(parts.hostname, parts.port, 1.0) is None  # used up
    preconnect.discard()


def test_preconnect_to_a_closed_port_falls_back_to_the_usual_error() -> None:
    from trust import preconnect

    preconnect.start("127.0.0.1", 9)
    assert preconnect.adopt("127.0.0.1", 9, 1.0) is None  # refused: the caller connects itself


def test_no_early_connection_when_a_proxy_is_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    """The connection would bypass the proxy the session goes through."""
    import socket

    from trust import preconnect
    from trust.prefetch import start_connection

    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        start_connection(f"https://127.0.0.1:{port}")
        adopted = preconnect.adopt("127.0.0.1", port, 1.0)
        assert adopted is not None  # without a proxy: started
        adopted.close()
        monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:1")
        start_connection(f"https://127.0.0.1:{port}")
        assert preconnect.adopt("127.0.0.1", port, 1.0) is None


def test_a_tag_rules_tag_is_fetched_early_from_its_repository_rules_server(
    tmp_path: Path,
) -> None:
    """The early request for a tag a tag-scoped rule decides goes where the service sends it:
    the repository rule's trust server (it went to the file's, which the policy names nowhere)."""
    base = Settings(docker_config=tmp_path, trust_server_override="https://127.0.0.1:8")
    scope = Scope(registry="127.0.0.1:5000", repository="a")
    repo = Rule("repo", 0, scope, origin="t.toml:repo", trust_server="https://127.0.0.1:9")
    two = Rule("two", 1, dataclasses.replace(scope, tag="2"), origin="t.toml:two")
    prefetch = Prefetch(base, Policy((repo, two), "t.toml"))
    assert prefetch.start(["127.0.0.1:5000/a:2"], wait=False) == 1
    ref = parse("127.0.0.1:5000/a:2")
    assert prefetch.take("https://127.0.0.1:8", ref.name, base) is None
    early = prefetch.take("https://127.0.0.1:9", ref.name, settings_for(repo, ref, base))
    assert early is not None
    early.close()
