"""trust.prefetch: the early timestamp request changes when bytes are fetched, nothing else."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.unit._trust_env import D1, GUN, Env, env_factory
from trust.errors import NetworkError, TrustpullError
from trust.notary.client import trust_server_for
from trust.policy import Policy, Rule, Scope
from trust.prefetch import Prefetch, Prefetched, session_key, trust_server
from trust.reference import parse
from trust.service import TrustService
from trust.settings import Settings, TrustSourceConfig

MakeEnv = Callable[..., Env]


@pytest.fixture
def make_env(isolated_home: Path) -> Iterator[MakeEnv]:
    yield from env_factory()


def _timestamps(env: Env) -> int:
    return len(env.server.requests_for("*/timestamp.json"))


def test_trust_server_is_the_clients_choice() -> None:
    cases = [
        Settings(),
        Settings(trust_server_override="https://notary.example:4443"),
        Settings(trust_servers={"reg.example": "https://trust.example"}),
    ]
    for settings in cases:
        for text in ("alpine", "reg.example/a/b:1", "127.0.0.1:5000/x:2"):
            domain = parse(text).domain
            assert trust_server(domain, settings) == trust_server_for(domain, settings)
    assert trust_server("docker.io", Settings(), "https://rule.example") == "https://rule.example"


def test_early_timestamp_is_used_once_and_verified_as_usual(make_env: MakeEnv) -> None:
    env = make_env()
    prefetch = Prefetch(env.settings)
    assert prefetch.start([f"{GUN}:1.0"]) == 1
    service = TrustService(env.settings, prefetch=prefetch)
    (resolution,) = service.verify(f"{GUN}:1.0").resolutions
    assert resolution.digest == "sha256:" + D1
    assert _timestamps(env) == 1  # the early request was the client's request
    assert prefetch.take(env.settings.trust_server_override or "", GUN, env.settings) is None
    # A second verification (another service, warm cache) asks the network again.
    TrustService(env.settings).verify(f"{GUN}:1.0")
    assert _timestamps(env) == 2


def test_early_answer_is_checked_like_any_other(make_env: MakeEnv) -> None:
    """A bad timestamp fetched early is refused exactly as a bad one fetched late."""
    env = make_env()
    TrustService(env.settings).verify(f"{GUN}:1.0")  # trust the root first
    env.serve(env.sw.sign_with_wrong_key(env.builder.publish(), "timestamp"))
    with pytest.raises(TrustpullError) as late:
        TrustService(env.settings).verify(f"{GUN}:1.0")
    before = _timestamps(env)
    prefetch = Prefetch(env.settings)
    prefetch.start([f"{GUN}:1.0"])
    with pytest.raises(type(late.value)) as early:
        TrustService(env.settings, prefetch=prefetch).verify(f"{GUN}:1.0")
    assert early.value.exit_code == late.value.exit_code == 5
    assert early.value.message == late.value.message
    assert _timestamps(env) - before == before - 1  # as many timestamp requests as without


def test_early_network_error_is_raised_where_the_client_asks(tmp_path: Path) -> None:
    settings = Settings(
        trust_server_override="https://127.0.0.1:9", docker_config=tmp_path / "docker"
    )
    prefetch = Prefetch(settings)
    assert prefetch.start(["127.0.0.1:5000/ns/app:1.0"]) == 1
    early = prefetch.take("https://127.0.0.1:9", "127.0.0.1:5000/ns/app", settings)
    assert early is not None
    with pytest.raises(NetworkError):
        early.get_metadata("timestamp", settings.limits.timestamp_max_bytes)
    early.close()


def test_session_must_match_server_gun_and_settings(tmp_path: Path) -> None:
    settings = Settings(trust_server_override="https://127.0.0.1:9", docker_config=tmp_path)
    prefetch = Prefetch(settings)
    prefetch.start(["127.0.0.1:5000/ns/app:1.0"], wait=False)
    other = dataclasses.replace(settings, docker_config=tmp_path / "other")
    assert prefetch.take("https://127.0.0.1:9", "127.0.0.1:5000/ns/app", other) is None
    assert prefetch.take("https://127.0.0.1:8", "127.0.0.1:5000/ns/app", settings) is None
    assert prefetch.take("https://127.0.0.1:9", "127.0.0.1:5000/ns/other", settings) is None
    assert prefetch.take("https://127.0.0.1:9", "127.0.0.1:5000/ns/app", settings) is not None
    prefetch.close()


def test_nothing_is_fetched_early_when_the_command_would_not_ask(tmp_path: Path) -> None:
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
    assert Prefetch(base).start([f"127.0.0.1:5000/a@sha256:{D1}", "not a ref!"]) == 0
    refuse = Rule("no", 0, Scope(registry="127.0.0.1:5000"), origin="t.toml:no", refuse=True)
    assert Prefetch(base, Policy((refuse,), "t.toml")).start(["127.0.0.1:5000/a:1"]) == 0
    # one request per (server, GUN), however many tags
    prefetch = Prefetch(base)
    assert prefetch.start(["127.0.0.1:5000/a:1", "127.0.0.1:5000/a:2"], wait=False) == 1
    prefetch.close()


def test_prefetched_is_a_metadata_source_for_other_roles(make_env: MakeEnv) -> None:
    env = make_env()
    server = env.settings.trust_server_override or ""
    early = Prefetched(session_key(server, GUN, env.settings), 1 << 16)
    early.run(server, GUN, env.settings)
    assert early.get_metadata("timestamp", 1 << 16)  # the early answer
    assert early.get_metadata("timestamp", 1 << 16)  # a second one: the network
    assert early.get_metadata("root", 1 << 20)
    assert _timestamps(env) == 2
    assert early.request_count == 3
    early.close()


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
    prefetch.start([f"{GUN}:1.0"])
    (resolution,) = TrustService(env.settings, prefetch=prefetch).verify(f"{GUN}:1.0").resolutions
    assert resolution.digest == "sha256:" + D1
    assert preconnect.adopt(parts.hostname, parts.port, 1.0) is None  # used up
    preconnect.discard()


def test_preconnect_to_a_closed_port_falls_back_to_the_usual_error(tmp_path: Path) -> None:
    from trust import preconnect

    preconnect.start("127.0.0.1", 9)
    assert preconnect.adopt("127.0.0.1", 9, 1.0) is None  # refused: the caller connects itself
