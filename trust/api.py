"""The public Python API: a few functions over the one verification service.

Everything here is re-exported by `trust` (see `trust.__all__`); the rest of the package is
private by name. Every function verifies with trust on, whatever `DOCKER_CONTENT_TRUST` says
(the library is used on purpose), and raises a `trust.errors.TrustpullError` subclass on
failure: its `exit_code` is the CLI's, its `kind` the attack catalogue's outcome.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from trust.batch import DEFAULT_WORKERS, CheckReport, check_references
from trust.config import Configuration, load_config
from trust.lookup import Resolution
from trust.reference import parse
from trust.service import TrustService, Verification
from trust.trusted_pull import PullResult
from trust.trusted_pull import pull as _pull_one

__all__ = [
    "check",
    "inspect",
    "list_signed_tags",
    "load_settings",
    "pull",
    "resolve",
    "verify",
]

Notice = Callable[[str], None]


def load_settings(
    environ: Mapping[str, str] | None = None,
    *,
    config_file: str | Path | None = None,
    policy_file: str | Path | None = None,
    offline: bool = False,
) -> Configuration:
    """The settings and policy as the `trustpull` command would load them.

    Reads `$TRUSTPULL_CONFIG` or `~/.config/trustpull/config.toml` (or `config_file`), the
    environment (`DOCKER_CONFIG`, `DOCKER_CONTENT_TRUST_SERVER`, …) and `policy_file`.
    Raises `ConfigError` (exit 3) for a malformed file, naming file, line and key.

    `environ` (default: `os.environ`) decides what these settings hold; what is read later,
    at each verification, still comes from the process environment: registry credentials
    (`DOCKER_AUTH_CONFIG`, before `$DOCKER_CONFIG/config.json`) and the default cache of a
    `[[trust_sources]]` entry without `cache_dir` (`XDG_CACHE_HOME`).
    """
    return load_config(environ, config_file=config_file, policy_file=policy_file, offline=offline)


def _service(config: Configuration | None, notice: Notice | None) -> TrustService:
    configuration = config if config is not None else load_config()
    settings = dataclasses.replace(configuration.settings, content_trust=True)
    return TrustService(settings, configuration.policy, notice=notice)


def verify(
    reference: str,
    *,
    config: Configuration | None = None,
    all_tags: bool = False,
    notice: Notice | None = None,
) -> Verification:
    """Verify one image reference (`NAME[:TAG][@DIGEST]`) and return what was verified.

    Under the configured policy when `config` has one. `notice` receives warnings and the
    trust-on-first-use line. Raises `InvalidReferenceError`/`UsageError` (3/2) for bad input,
    `NotSignedError` (4), `VerificationError` (5: a possible attack), `NetworkError` (6),
    `AuthError` (7) or `PolicyError` (9). A repository a policy rule accepts unsigned is
    returned with `unsigned` set and no resolutions.
    """
    return _service(config, notice).verify(reference, all_tags=all_tags)


def resolve(
    reference: str, *, config: Configuration | None = None, notice: Notice | None = None
) -> str:
    """The pinned reference (`NAME:TAG@sha256:…`) that `reference` verifies to.

    Raises what `verify` raises; a repository accepted unsigned by a rule has no digest to
    give, so it raises `NoTrustDataError` (4) with the rule's message.
    """
    verification = verify(reference, config=config, notice=notice)
    if verification.unsigned is not None:
        from trust.errors import NoTrustDataError

        raise NoTrustDataError(verification.unsigned)
    return verification.resolutions[0].reference


def list_signed_tags(
    repository: str, *, config: Configuration | None = None, notice: Notice | None = None
) -> list[Resolution]:
    """Every signed tag of `repository` (`NAME`, no tag), each verified under its rule.

    Raises what `verify` raises (`UsageError` when a tag or digest is given).
    """
    return list(verify(repository, config=config, all_tags=True, notice=notice).resolutions)


def inspect(
    repository: str, *, config: Configuration | None = None, notice: Notice | None = None
) -> dict[str, object]:
    """`docker trust inspect`'s object for `repository` (`NAME` or `NAME:TAG`).

    Raises `NotSignedError` (4), `VerificationError` (5), `NetworkError` (6) or `AuthError`
    (7); `UsageError` (2) for a digest reference.
    """
    from trust.errors import UsageError

    ref = parse(repository, default_tag=False)
    if ref.digest is not None:
        raise UsageError("inspect takes NAME[:TAG], not a digest")
    tag = ref.tag if ref.tag_given else None
    return _service(config, notice).inspect(ref, repository, tag)


def check(
    references: Sequence[str],
    *,
    config: Configuration | None = None,
    workers: int = DEFAULT_WORKERS,
    notice: Notice | None = None,
) -> CheckReport:
    """Check many references concurrently (each repository verified once).

    Never raises for a reference: each outcome carries its verdict and error; `exit_code`
    combines them as the CLI does.
    """
    return check_references(references, _service(config, notice), workers=workers)


def pull(
    reference: str,
    *,
    config: Configuration | None = None,
    all_tags: bool = False,
    platform: str | None = None,
    environ: Mapping[str, str] | None = None,
    engine_factory: Callable[[], Any] | None = None,
    notice: Notice | None = None,
) -> PullResult:
    """Verify, pull `NAME@sha256:<verified>` through the Docker engine and tag it.

    The engine is `DOCKER_HOST` (or the default socket) unless `engine_factory` gives one.
    Raises what `verify` raises, and `EngineError` (8) when the engine cannot pull or tag; a
    raised error means nothing unverified was pulled.
    """
    service = _service(config, notice)
    result = _pull_one(
        reference,
        service.settings,
        all_tags=all_tags,
        platform=platform,
        environ=environ,
        engine_factory=engine_factory,
        service=service,
    )
    if result.error is not None:
        raise result.error
    return result
