"""Which trust source answers for a reference: Notary (the default) or a configured TUF repository.

`[[trust_sources]]` entries in the config file name a scope (a registry host or a repository
prefix); the longest scope that contains the reference wins and Notary answers when none does.
Selection is purely textual and happens before any network I/O, so a reference inside a TUF
scope can never fall back to Notary (or to an unpinned pull) when the TUF repository fails.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # config imports this module: no runtime import the other way round
    from trust.config import Settings
    from trust.reference import Reference
    from trust.resolve import Resolution

__all__ = [
    "TrustSourceConfig",
    "inspect_with_source",
    "resolve_with_source",
    "scope_matches",
    "select_source",
]


@dataclass(frozen=True)
class TrustSourceConfig:
    """One `[[trust_sources]]` entry; paths are absolute once the config file is parsed."""

    #: `registry.example.com` or `registry.example.com/team` (no scheme, tag or digest).
    scope: str
    #: https base URL under which `root.json`, `timestamp.json`, ... are published.
    metadata_url: str
    #: The user's trusted initial root.json: the only root trusted without a signature.
    root: Path
    type: str = "tuf"
    #: Where verified metadata is kept between runs (rollback protection); None: the default.
    cache_dir: Path | None = None


def scope_matches(scope: str, name: str) -> bool:
    """True when the fully qualified repository `name` is `scope` or lies under it (by segment)."""
    return name == scope or name.startswith(scope + "/")


def select_source(ref: Reference, settings: Settings) -> TrustSourceConfig | None:
    """The configured source with the longest scope containing `ref`, or None for Notary."""
    best: TrustSourceConfig | None = None
    for source in settings.trust_sources:
        if scope_matches(source.scope, ref.name) and (
            best is None or len(source.scope) > len(best.scope)
        ):
            best = source
    return best


def resolve_with_source(
    source: TrustSourceConfig,
    ref: Reference,
    settings: Settings,
    *,
    all_tags: bool = False,
    notice: Callable[[str], None] | None = None,
) -> list[Resolution]:
    """Resolve `ref` through a configured (non-Notary) source; errors are never swallowed."""
    from trust.tufsource import TufSource

    return TufSource(source, settings, warn=notice).resolve(ref, all_tags)


def inspect_with_source(
    source: TrustSourceConfig,
    ref: Reference,
    settings: Settings,
    name_as_typed: str,
    tag: str | None,
    *,
    notice: Callable[[str], None] | None = None,
) -> dict[str, object]:
    """`docker trust inspect`'s object for `ref` from a configured (non-Notary) source."""
    from trust.tufsource import TufSource

    return TufSource(source, settings, warn=notice).inspect(ref, name_as_typed, tag)
