"""What the proxy keeps between requests (trust.notary.pool.Kept): one request per warm update,
and never a different verdict from the CLI's full procedure (issue 12, "Long-running")."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.unit._trust_env import D1, D2, GUN, NOW, REF, Env, env_factory
from trust.errors import ExpiredError, RollbackError
from trust.notary.client import NotaryClient
from trust.notary.pool import Kept
from trust.notary.trusted_set import TrustData, TrustedSet, stable_until
from trust.notary.x509root import NEAR_EXPIRY
from trust.reference import parse

MakeEnv = Callable[..., Env]
TS = f"/v2/{GUN}/_trust/tuf/timestamp.json"


@pytest.fixture
def make_env(isolated_home: Path) -> Iterator[MakeEnv]:
    yield from env_factory()


def _update(env: Env, kept: Kept, now: dt.datetime | None = None) -> tuple[TrustData, list[str]]:
    """One update as the proxy makes it (a new client per request, the same `Kept`)."""
    env.server.clear_requests()
    client = NotaryClient(env.settings, now=now, warn=env.warnings.append, kept=kept)
    data = client.update(parse(REF))
    return data, [r.path for r in env.server.requests]


def _digest(data: TrustData, tag: str) -> str:
    return data.roles["targets/releases"].targets.targets[tag].hashes["sha256"].hex()


def _count_verifications(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Every TrustedSet built from now on (one per verification of cached or fetched roles)."""
    built: list[object] = []
    original = TrustedSet.__init__

    def counting(self: TrustedSet, *args: Any, **kwargs: Any) -> None:
        built.append(self)
        original(self, *args, **kwargs)

    monkeypatch.setattr(TrustedSet, "__init__", counting)
    return built


def test_a_warm_update_is_one_request_and_the_kept_result(
    make_env: MakeEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = make_env()
    kept = Kept(env.settings.limits)
    _update(env, kept)  # first use: writes the cache, keeps nothing
    second, paths = _update(env, kept)  # everything from the cache: kept
    assert paths == [TS]
    built = _count_verifications(monkeypatch)
    third, paths = _update(env, kept)
    assert paths == [TS]
    assert built == []  # nothing verified again: the kept result
    assert third == second and _digest(third, "1.0") == D1


def test_a_new_timestamp_runs_the_whole_update(make_env: MakeEnv) -> None:
    env = make_env()
    kept = Kept(env.settings.limits)
    _update(env, kept)
    _update(env, kept)
    env.builder.add_target("1.0", D2, 530, role="targets/releases")  # re-signed tag
    env.serve()
    data, paths = _update(env, kept)
    assert _digest(data, "1.0") == D2
    assert paths.count(TS) == 1  # the reuse check's fetch is the workflow's
    assert any("snapshot" in p for p in paths)


def test_a_frozen_timestamp_is_refused_once_it_expires(make_env: MakeEnv) -> None:
    """The kept result never outlives `stable_until`: the same bytes after the timestamp's
    expiry get the CLI's verdict (attacks.md freeze), not the kept one."""
    env = make_env()
    kept = Kept(env.settings.limits)
    _update(env, kept)
    data, _ = _update(env, kept)
    until = stable_until(data, env.settings.trust_pinning, NOW)
    assert until <= data.timestamp.expires
    with pytest.raises(ExpiredError):
        _update(env, kept, now=data.timestamp.expires + dt.timedelta(seconds=1))


def test_stable_until_stops_at_the_first_certificate_boundary(make_env: MakeEnv) -> None:
    """A root certificate's near-expiry warning starts before any role expires: the kept
    result must end there, so the warning appears exactly when the CLI would print it."""
    env = make_env()
    far = NOW + dt.timedelta(days=3650)
    for role in env.builder.roles:
        env.builder.set_expiry(role, far)
    env.serve()
    kept = Kept(env.settings.limits)
    _update(env, kept)
    data, _ = _update(env, kept)
    root_keys = [data.root.keys[k] for k in data.root.roles["root"].keyids]
    certs = [c for key in root_keys for c in key.certificates()]
    first_cert = min(c.not_valid_after_utc for c in certs)
    until = stable_until(data, env.settings.trust_pinning, NOW)
    assert until == min(first_cert - NEAR_EXPIRY, far), (until, first_cert)


def test_an_older_timestamp_is_a_rollback_not_the_kept_result(make_env: MakeEnv) -> None:
    env = make_env()
    kept = Kept(env.settings.limits)
    old = env.builder.history[-1]
    env.builder.bump("timestamp")
    env.serve()
    _update(env, kept)
    _update(env, kept)
    env.serve(old)
    with pytest.raises(RollbackError):
        _update(env, kept)


def test_a_cache_changed_by_another_writer_is_read_again(make_env: MakeEnv) -> None:
    env = make_env()
    kept = Kept(env.settings.limits)
    _update(env, kept)
    _update(env, kept)
    # Another process (the CLI on the same trust dir) verified a newer repository.
    env.builder.bump("timestamp")
    env.serve()
    NotaryClient(env.settings, warn=env.warnings.append).update(parse(REF))
    newer = (env.metadata_dir / "timestamp.json").read_bytes()
    # The server now answers the timestamp the proxy kept: below the cache's floor.
    env.serve(env.builder.history[-2])
    with pytest.raises(RollbackError):
        _update(env, kept)
    assert (env.metadata_dir / "timestamp.json").read_bytes() == newer


def test_a_cache_deleted_while_an_update_verifies_is_not_the_kept_result(
    make_env: MakeEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The identities kept are those of the files the update read: a cache removed after the
    reads (the hint's way to forget a repository) must not match as "absent, unchanged"."""
    env = make_env()
    kept = Kept(env.settings.limits)
    _update(env, kept)  # first use: the cache is written
    original = TrustedSet.result

    def forget_meanwhile(self: TrustedSet, **kwargs: Any) -> TrustData:
        shutil.rmtree(env.metadata_dir)  # the user forgets the repository mid-update
        return original(self, **kwargs)

    monkeypatch.setattr(TrustedSet, "result", forget_meanwhile)
    _update(env, kept)  # verified from what it read before the removal
    monkeypatch.setattr(TrustedSet, "result", original)
    data, paths = _update(env, kept)
    assert data.first_use  # a first contact again, not the result kept from the old cache
    assert paths != [TS]


def test_a_server_down_is_the_clis_cached_fallback_after_one_try(make_env: MakeEnv) -> None:
    env = make_env()
    kept = Kept(env.settings.limits)
    _update(env, kept)
    _update(env, kept)
    env.server.add_fault("*/timestamp.json", status=503)
    env.warnings.clear()
    data, paths = _update(env, kept)
    assert _digest(data, "1.0") == D1
    assert any("trust server unreachable" in w for w in env.warnings), env.warnings
    attempts = 1 + env.settings.limits.retries
    assert paths == [TS] * attempts  # fetched once (with its retries), not again
    env.server.clear_faults()
    _, paths = _update(env, kept)
    assert paths == [TS]


def test_other_settings_never_share_a_kept_result(make_env: MakeEnv) -> None:
    env = make_env()
    kept = Kept(env.settings.limits)
    _update(env, kept)
    _update(env, kept)
    env.server.clear_requests()
    client = NotaryClient(
        env.settings, warn=env.warnings.append, kept=kept, required_roles=frozenset({"x"})
    )
    client.update(parse(REF))
    assert len(env.server.requests) == 1 and os.path.exists(env.metadata_dir)
    assert client.stats.requests == 1


def test_concurrent_requests_share_kept_state_safely(make_env: MakeEnv) -> None:
    """The proxy verifies on many threads: each update leases its own session, the per-GUN
    cache lock orders them, and every one fetches its own timestamp."""
    env = make_env()
    kept = Kept(env.settings.limits)
    _update(env, kept)
    _update(env, kept)
    env.server.clear_requests()
    results: list[str] = []
    errors: list[BaseException] = []

    def one() -> None:
        try:
            client = NotaryClient(env.settings, warn=env.warnings.append, kept=kept)
            results.append(_digest(client.update(parse(REF)), "1.0"))
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=one) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == [] and results == [D1] * 12
    assert [r.path for r in env.server.requests] == [TS] * 12


def test_the_policy_is_decided_at_each_request_on_a_kept_result(make_env: MakeEnv) -> None:
    """A kept result is trust data, never a verdict: a `min_validity` rule is evaluated at the
    request's own time, so a later request fails it although the result is reused."""
    from trust.errors import PolicyError
    from trust.evidence import NotaryEvidence
    from trust.policy import Policy, Rule, Scope
    from trust.service import TrustService

    env = make_env()
    kept = Kept(env.settings.limits)
    data, _ = _update(env, kept)
    earliest = min(NotaryEvidence(data).expiries(["targets", "targets/releases"]).values())
    start = dt.datetime.now(dt.UTC)
    seconds = (earliest - start).total_seconds() - 3600
    rule = Rule("fresh", 0, Scope(registry="127.0.0.1:5000"), min_validity=seconds, origin="p:1")
    policy = Policy((rule,), "p.toml")

    def verify(now: dt.datetime) -> list[str]:
        env.server.clear_requests()
        TrustService(env.settings, policy, now=now, kept=kept).verify(parse(REF))
        return [r.path for r in env.server.requests]

    verify(start)  # full: keeps the result
    assert verify(start) == [TS]  # reused, and the rule holds
    env.server.clear_requests()
    with pytest.raises(PolicyError, match="that rule fresh requires"):
        TrustService(env.settings, policy, now=start + dt.timedelta(hours=2), kept=kept).verify(
            parse(REF)
        )
    assert [r.path for r in env.server.requests] == [TS]  # the kept result, refused by the rule


def test_a_cache_file_rewritten_in_place_with_its_size_and_mtime_put_back_is_read_again(
    make_env: MakeEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another writer may rewrite a cached role in place and put its size and mtime back with
    `os.utime`; its ctime still moves, so the kept result is not used and the cache is read and
    verified again."""
    env = make_env()
    kept = Kept(env.settings.limits)
    _update(env, kept)
    _update(env, kept)
    path = env.metadata_dir / "snapshot.json"
    before = os.lstat(path)
    data = path.read_bytes()
    with open(path, "r+b") as handle:  # same inode, same bytes, same size
        handle.write(data)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.lstat(path)
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (
        before.st_ino,
        before.st_size,
        before.st_mtime_ns,
    )
    built = _count_verifications(monkeypatch)
    data_after, paths = _update(env, kept)
    assert paths == [TS]
    assert built != []  # verified again from the cache, not the kept result
    assert _digest(data_after, "1.0") == D1


def test_a_kept_session_is_not_used_once_its_ca_is_removed(make_env: MakeEnv) -> None:
    """A kept session holds the TLS context it was made with: once the trust server's CA is
    removed from `$DOCKER_CONFIG/tls/<host:port>/`, the CLI no longer trusts the server, and
    neither may the proxy's next update (it got the new, re-signed digest over the kept
    connection, where the CLI's TLS check fails and it falls back to the cache)."""
    env = make_env()
    kept = Kept(env.settings.limits)
    _update(env, kept)
    _update(env, kept)  # a warm update: its session is kept
    for ca in (env.docker_config / "tls" / f"127.0.0.1:{env.server.port}").iterdir():
        ca.unlink()
    env.builder.add_target("1.0", D2, 530, role="targets/releases")
    env.serve()
    env.warnings.clear()
    cli = NotaryClient(env.settings, warn=env.warnings.append).update(parse(REF))
    assert _digest(cli, "1.0") == D1
    assert any("certificate not trusted" in w for w in env.warnings), env.warnings
    env.warnings.clear()
    data, _ = _update(env, kept)
    assert _digest(data, "1.0") == D1
    assert any("certificate not trusted" in w for w in env.warnings), env.warnings


def test_a_kept_session_is_never_leased_under_other_tls_settings(
    make_env: MakeEnv, tmp_path: Path
) -> None:
    """One `Kept` for services with other settings (a library caller): a session made under one
    docker configuration's CAs is not used by an update whose configuration does not trust
    the server (a first contact would trust a root over a TLS connection it never accepted)."""
    import dataclasses

    from trust.errors import NetworkError

    env = make_env()
    kept = Kept(env.settings.limits)
    _update(env, kept)
    other = tmp_path / "other-docker-config"
    other.mkdir()
    settings = dataclasses.replace(env.settings, docker_config=other)
    with pytest.raises(NetworkError, match="certificate not trusted"):
        NotaryClient(settings, warn=env.warnings.append).update(parse(REF))
    with pytest.raises(NetworkError, match="certificate not trusted"):
        NotaryClient(settings, warn=env.warnings.append, kept=kept).update(parse(REF))
    assert not list((other / "trust").rglob("*.json"))  # nothing trusted on first use
