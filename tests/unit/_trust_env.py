"""Shared helpers for the trust-core tests: a baseline repository, a live fixture server with
its CA installed the way docker reads it, a recording fake engine and cache snapshots.

Nothing here talks to docker or a real notary: the server is fixtures/server.py on loopback
over real HTTPS, the metadata comes from fixtures/notarygen.py.
"""

from __future__ import annotations

import base64
import datetime as dt
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from fixtures.notarygen import Repo, RepoBuilder
from fixtures.server import FixtureServer
from fixtures.swizzle import Swizzler
from trust.errors import (
    AuthError,
    InputError,
    NetworkError,
    NoSuchTagError,
    NoTrustDataError,
    TrustpullError,
)
from trust.lookup import Resolution
from trust.notary.client import NotaryClient
from trust.notary.trusted_set import TrustData
from trust.policy import Policy
from trust.reference import Reference, parse
from trust.service import TrustService
from trust.settings import Limits, Settings, TrustPinning
from trust.trusted_pull import PullResult, pull

GUN = "127.0.0.1:5000/ns/app"
REF = f"{GUN}:1.0"
#: A fixed "now" for the builders, whole seconds so that every expiry string has one length.
NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)

#: Digests of the baseline repository (see `baseline_builder`).
D_TARGETS = "aa" * 32  # "1.0" in targets (must lose to releases)
D_ONLY_TARGETS = "bb" * 32  # "only-targets" in targets
D1 = "11" * 32  # "1.0" in targets/releases
D2 = "22" * 32  # "2.0" in targets/releases
D_ALICE = "a1" * 32  # "alice-only" in targets/alice
D_CI = "c1" * 32  # "ci-only" in targets/releases/ci

#: Exit codes from the project's table (attacks.md "Outcome vocabulary"), written out here so
#: that a change of trust/errors.py is noticed.
EXIT_CODE = {
    InputError: 3,
    NoTrustDataError: 4,
    NoSuchTagError: 4,
    NetworkError: 6,
    AuthError: 7,
}

FAST = Limits(
    connect_timeout=1.0,
    read_timeout=1.0,
    file_timeout=2.0,
    total_timeout=10.0,
    ping_timeout=1.0,
    retries=2,
    retry_backoff=0.01,
    retry_after_cap=0.05,
)


def expected_exit(exc_type: type[TrustpullError]) -> int:
    for klass in exc_type.__mro__:
        if klass in EXIT_CODE:
            return EXIT_CODE[klass]
    return 5  # every verification kind, Cache included


def b64(hexdigest: str) -> str:
    return base64.b64encode(bytes.fromhex(hexdigest)).decode()


def baseline_builder(gun: str = GUN, *, releases: bool = True, others: bool = True) -> RepoBuilder:
    """targets + targets/releases (+ targets/alice, targets/releases/ci), tags as above."""
    builder = RepoBuilder(gun, now=NOW)
    builder.add_target("1.0", D_TARGETS, 528)
    builder.add_target("only-targets", D_ONLY_TARGETS, 529)
    if releases:
        builder.add_delegation("targets/releases")
        builder.add_target("1.0", D1, 530, role="targets/releases")
        builder.add_target("2.0", D2, 531, role="targets/releases")
    if others:
        builder.add_delegation("targets/alice")
        builder.add_target("alice-only", D_ALICE, 532, role="targets/alice")
        if releases:
            builder.add_delegation("targets/releases/ci")
            builder.add_target("ci-only", D_CI, 533, role="targets/releases/ci")
    return builder


class FakeEngine:
    """Records what trustpull asks of the Docker engine; never talks to one."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def pull(self, name: str, tag_or_digest: str | None, **kwargs: Any) -> None:
        self.calls.append(("pull", name, tag_or_digest))

    def tag(self, source: str, repo: str, tag: str) -> None:
        self.calls.append(("tag", source, repo, tag))

    def close(self) -> None:
        self.calls.append(("close",))


CacheState = dict[str, tuple[bytes, int]]


@dataclass
class Env:
    server: FixtureServer
    builder: RepoBuilder
    docker_config: Path
    settings: Settings
    warnings: list[str] = field(default_factory=list)

    @property
    def sw(self) -> Swizzler:
        return Swizzler(self.builder)

    @property
    def trust_dir(self) -> Path:
        return self.docker_config / "trust"

    @property
    def metadata_dir(self) -> Path:
        return self.trust_dir / "tuf" / GUN / "metadata"

    def serve(self, repo: Repo | None = None) -> Repo:
        """Serve `repo`, or a fresh publish of the builder."""
        repo = repo if repo is not None else self.builder.publish()
        self.server.publish(GUN, repo)
        return repo

    def with_settings(self, **changes: Any) -> Settings:
        return replace(self.settings, **changes)

    def client(self, now: dt.datetime | None = None, **changes: Any) -> NotaryClient:
        settings = self.with_settings(**changes) if changes else self.settings
        return NotaryClient(settings, now=now, warn=self.warnings.append)

    def update(self, ref: str = REF, now: dt.datetime | None = None, **changes: Any) -> TrustData:
        return self.client(now, **changes).update(parse(ref))

    def cache(self) -> CacheState:
        """Every file under the trust dir (bytes, mode), the lock file excepted."""
        state: CacheState = {}
        if not self.trust_dir.exists():
            return state
        for path in sorted(self.trust_dir.rglob("*")):
            if path.name == ".trustpull.lock" or path.is_dir():
                continue
            info = path.lstat()
            data = path.read_bytes() if path.is_file() and not path.is_symlink() else b"<link>"
            state[str(path.relative_to(self.trust_dir))] = (data, info.st_mode & 0o7777)
        return state

    def pull(
        self, ref: str = REF, now: dt.datetime | None = None, **changes: Any
    ) -> tuple[PullResult, FakeEngine]:
        engine = FakeEngine()
        settings = self.with_settings(**changes) if changes else self.settings
        client = NotaryClient(settings, now=now, warn=self.warnings.append)
        service = TrustService(settings, client_factory=lambda _s, _r: client)
        result = pull(ref, settings, environ={}, engine_factory=lambda: engine, service=service)
        return result, engine

    def refuse(
        self,
        exc_type: type[TrustpullError],
        ref: str = REF,
        now: dt.datetime | None = None,
        *,
        cache_may_change: Callable[[CacheState, CacheState], None] | None = None,
        **changes: Any,
    ) -> TrustpullError:
        """REFUSE + KEEP + NOPULL: exact error class and exit code, cache untouched, no
        engine call, no temporary file left."""
        before = self.cache()
        result, engine = self.pull(ref, now, **changes)
        error = result.error
        assert error is not None, f"expected {exc_type.__name__}, the pull was accepted"
        assert type(error) is exc_type, f"expected {exc_type.__name__}, got {error!r}"
        assert result.exit_code == expected_exit(exc_type)
        assert not result.pulled
        assert [c for c in engine.calls if c[0] in ("pull", "tag")] == []
        after = self.cache()
        if cache_may_change is None:
            assert after == before, "a refused run changed the trust cache"
        else:
            cache_may_change(before, after)
        leftovers = [p for p in self.trust_dir.rglob(".tmp-*")] if self.trust_dir.exists() else []
        assert leftovers == []
        return error


def install_ca(server: FixtureServer, docker_config: Path) -> None:
    tls = docker_config / "tls" / f"127.0.0.1:{server.port}"
    tls.mkdir(parents=True, exist_ok=True)
    shutil.copy(server.ca_path, tls / "ca.crt")


def env_factory() -> Iterator[Callable[..., Env]]:
    """Body of the `make_env` fixture: `make_env(builder=None, publish=True)` → a running
    `Env`; every server started is stopped afterwards. Needs conftest's `isolated_home`."""
    servers: list[FixtureServer] = []

    def factory(builder: RepoBuilder | None = None, *, publish: bool = True) -> Env:
        builder = builder or baseline_builder()
        server = FixtureServer().start()
        servers.append(server)
        docker_config = Path(os.environ["DOCKER_CONFIG"])
        install_ca(server, docker_config)
        settings = Settings(
            trust_server_override=server.url,
            docker_config=docker_config,
            limits=FAST,
            trust_pinning=TrustPinning(),
        )
        env = Env(server, builder, docker_config, settings)
        if publish:
            env.serve()
        return env

    yield factory
    for server in servers:
        server.stop()


def resolve_reference(
    ref: Reference,
    settings: Settings,
    *,
    client: NotaryClient | None = None,
    all_tags: bool = False,
    notice: Callable[[str], None] | None = None,
    policy: Policy | None = None,
) -> list[Resolution]:
    """The verified resolutions of `ref` through the one verification service, optionally
    with a prepared Notary client (its fixed clock and warnings)."""
    factory = None if client is None else (lambda _settings, _roles: client)
    service = TrustService(settings, policy, notice=notice, client_factory=factory)
    return list(service.verify(ref, all_tags=all_tags).resolutions)
