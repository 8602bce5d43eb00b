"""Settings and limits: the leaf every other room reads, importing nothing of trustpull but errors.

After python-tuf's `ngclient/config.py`: plain frozen values, no file, environment or network
access. `trust.config` is the loader that builds them from the TOML file, the environment and
the command line; the policy (`[[rules]]`) is loaded beside them, not inside them, because the
policy model sits above the settings in the house.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from trust.errors import ConfigError, InputError

__all__ = [
    "Limits",
    "ProxyConfig",
    "Settings",
    "TrustPinning",
    "TrustSourceConfig",
    "content_trust_from_env",
    "engine_socket_host",
    "parse_go_bool",
    "scope_matches",
    "trust_server_for",
    "validate_trust_server_url",
]

#: Docker Hub's Notary, the trust server of `docker.io` unless configured otherwise.
OFFICIAL_TRUST_SERVER = "https://notary.docker.io"

KIB = 1024


@dataclass(frozen=True)
class Limits:
    """Every size, time and count bound trustpull applies (config section `[limits]`)."""

    #: timestamp.json is fetched without a known length: this caps it (attacks.md G06).
    timestamp_max_bytes: int = 64 * KIB
    #: root.json and <v>.root.json when no length is known.
    root_max_bytes: int = 512 * KIB
    #: Any other file is capped by its parent's meta length; this is an absolute ceiling on top.
    metadata_max_bytes: int = 64 * 1024 * KIB
    #: Bodies of error answers are read only this far.
    error_body_max_bytes: int = 64 * KIB
    #: How many `<v>.root.json` steps one update may walk (attacks.md D03).
    max_root_rotations: int = 32
    #: Delegated roles per repository and delegation depth (attacks.md E08).
    max_delegations: int = 256
    max_delegation_depth: int = 8
    #: Seconds: TCP connect, between two reads, one whole file, the whole run's trust update.
    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    file_timeout: float = 60.0
    total_timeout: float = 300.0
    #: Unused since the `/v2/` ping went (the first metadata request goes out at once, README
    #: "Tokens"); kept so that a config file that sets it still loads.
    ping_timeout: float = 5.0
    #: Retries of idempotent requests on connection errors, 5xx and 429.
    retries: int = 2
    retry_backoff: float = 0.5
    retry_after_cap: float = 10.0
    max_redirects: int = 10
    #: Engine API timeout for non-streaming calls (the pull stream itself is not time-bounded).
    engine_timeout: float = 60.0
    #: Deployment files read by `check` and `resolve --write/--compose` (Dockerfile, compose,
    #: Kubernetes, reference lists): bytes per file, and image sites per run (YAML aliases
    #: are visited once, so a site is counted once however often it is referenced).
    manifest_max_bytes: int = 4 * 1024 * KIB
    manifest_max_sites: int = 10_000
    #: Trust server sessions (connection and token) a long-running proxy keeps idle between
    #: updates, least recently used closed first (trust.notary.pool).
    idle_sessions: int = 64
    #: Verified results a long-running proxy keeps, one per repository and trust server.
    kept_results: int = 1024

    def __post_init__(self) -> None:
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ConfigError(f"limits.{item.name} must be a non-negative number")


@dataclass(frozen=True)
class TrustPinning:
    """Notary's `trust_pinning` semantics and names (dct.md §2.9 step 5)."""

    #: GUN, or prefix ending in `*`, → root certificate key IDs (x509 or canonical form).
    certs: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    #: GUN prefix → PEM bytes of a CA bundle that the root's leaf must chain to (the loader
    #: reads the file; the verifier does no I/O).
    ca: Mapping[str, bytes] = field(default_factory=dict)
    #: Refuse trust on first use when no pin applies.
    disable_tofu: bool = False

    def applying(self, gun: str) -> tuple[str, str] | None:
        """Which pin notary's trustPinChecker uses for `gun` (the order of
        trust.notary.x509root): ("certs", the exact GUN or the longest `*` wildcard), else
        ("ca", the longest CA prefix), else None."""
        if gun in self.certs:
            return ("certs", gun)
        wildcards = [p for p in self.certs if p.endswith("*") and gun.startswith(p[:-1])]
        if wildcards:
            return ("certs", max(wildcards, key=len))
        prefixes = [p for p in self.ca if gun.startswith(p)]
        if prefixes:
            return ("ca", max(prefixes, key=len))
        return None


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


@dataclass(frozen=True)
class ProxyConfig:
    """The `[proxy]` table (shared/spec/engine-proxy.md §0.4); read only by `trustpull proxy`."""

    listen: str | None = None
    engine: str | None = None
    socket_group: str | None = None
    #: None: the engine socket's mode; never wider than it.
    socket_mode: int | None = None
    mode: str = "enforce"
    allow_buildkit: bool = False
    allow_load: bool = False
    allow_import: bool = False
    allow_import_url: bool = False
    allow_commit: bool = False
    allow_plugin_create: bool = False
    allow_swarm: bool = False
    ledger: str | None = None
    max_json_body: int = 4 * 1024 * KIB
    max_dockerfile: int = 1024 * KIB
    build_spool_max: int = 10 * 1024 * 1024 * KIB
    max_header_bytes: int = 1024 * KIB
    header_timeout: float = 30.0
    idle_timeout: float = 300.0
    max_connections: int = 1024
    max_connections_per_uid: int = 256
    verify_cache_ttl: float = 60.0

    def __post_init__(self) -> None:
        if self.mode not in ("enforce", "audit"):
            raise ConfigError('proxy.mode must be "enforce" or "audit"')
        if self.socket_mode is not None and not 0 <= self.socket_mode <= 0o777:
            raise ConfigError("proxy.socket_mode must be a permission mode such as 0o660")
        if self.listen is not None and self.listen.startswith(("@", "unix://@")):
            raise ConfigError("proxy.listen: an abstract socket has no file permissions")


@dataclass(frozen=True)
class Settings:
    """Everything the library needs to run, resolved from defaults, file, env and flags."""

    content_trust: bool = True
    docker_config: Path = field(default_factory=lambda: Path.home() / ".docker")
    #: `DOCKER_CONTENT_TRUST_SERVER`: overrides every per-registry server when set.
    trust_server_override: str | None = None
    #: registry host[:port] → trust server URL.
    trust_servers: Mapping[str, str] = field(default_factory=dict)
    trust_pinning: TrustPinning = field(default_factory=TrustPinning)
    limits: Limits = field(default_factory=Limits)
    offline: bool = False
    config_file: Path | None = None
    #: `[[trust_sources]]`: repository scopes verified by a TUF repository instead of Notary.
    trust_sources: tuple[TrustSourceConfig, ...] = ()
    #: The engine to pull through as a `DOCKER_HOST` value (`unix:///run/podman/podman.sock`):
    #: `--engine-socket`, else `[engine] socket` unless `DOCKER_HOST` is set; None: `DOCKER_HOST`.
    engine_host: str | None = None
    #: `[auth] realms`: token realms besides the trust server's and registry's own hosts that may
    #: receive registry credentials (https URLs; trust.http.auth.RealmPolicy).
    auth_realms: tuple[str, ...] = ()
    #: `[proxy]`: settings of `trustpull proxy` (ignored by every other command).
    proxy: ProxyConfig = field(default_factory=ProxyConfig)
    #: `[mirrors]`: mirror prefix (`host[:port][/path]`) → origin prefix. A reference under a
    #: mirror is verified as the origin's repository and pulled from the mirror by digest.
    mirrors: Mapping[str, str] = field(default_factory=dict)

    @property
    def trust_dir(self) -> Path:
        """docker's trust directory, shared with the docker CLI (dct.md §5)."""
        return self.docker_config / "trust"


_GO_TRUE = {"1", "t", "T", "true", "TRUE", "True"}
_GO_FALSE = {"0", "f", "F", "false", "FALSE", "False"}


def parse_go_bool(value: str) -> bool | None:
    """Go's strconv.ParseBool: True/False, or None when the text is not a Go boolean."""
    if value in _GO_TRUE:
        return True
    if value in _GO_FALSE:
        return False
    return None


def content_trust_from_env(environ: Mapping[str, str]) -> bool:
    """Trust is on unless DOCKER_CONTENT_TRUST parses as false by Go's rules.

    Docker treats an unset or empty variable as *off*; trustpull does not, on purpose: a verifying
    tool must not fail open because a variable is missing (README, "Differences from docker").
    """
    value = environ.get("DOCKER_CONTENT_TRUST", "")
    return parse_go_bool(value) is not False


def validate_trust_server_url(url: str) -> str:
    """Accept only `https://host[:port][/path]` (attacks.md G10); drop one trailing slash.

    Docker accepts any https URL verbatim; trustpull also refuses userinfo, query and fragment,
    which have no meaning for a trust server and only hide where requests really go.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise InputError(f"valid https URL required for trust server, got {url}") from None
    if parts.scheme != "https" or not parts.hostname:
        raise InputError(f"valid https URL required for trust server, got {url}")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise InputError(f"trust server URL must not carry credentials: {url}")
    if parts.query or parts.fragment or url.endswith(("?", "#")):
        raise InputError(f"trust server URL must not have a query or fragment: {url}")
    if port == 0:
        raise InputError(f"valid https URL required for trust server, got {url}")
    return url[:-1] if url.endswith("/") else url


def engine_socket_host(value: str) -> str:
    """`--engine-socket` / `[engine] socket`: an absolute unix socket path (or `unix://` URL)."""
    path = value.removeprefix("unix://")
    if not path.startswith("/") or "://" in path:
        raise InputError(f"engine socket must be an absolute unix socket path, got {value!r}")
    return f"unix://{path}"


def trust_server_for(domain: str, settings: Settings) -> str:
    """dct.md §1.4: the env override, else the configured map, else docker's default.

    The one answer to "which trust server serves this registry" (a rule's `trust_server`
    arrives here as `trust_server_override`, trust.route.settings_for); here, with the settings
    it reads, so the early request of trust.prefetch asks it before the verifier is imported.
    """
    if settings.trust_server_override:
        return settings.trust_server_override
    configured = settings.trust_servers.get(domain)
    if configured:
        return configured
    if domain == "docker.io":
        return OFFICIAL_TRUST_SERVER
    return f"https://{domain}"
