"""The loader: settings and policy from the TOML file, the environment and the command line.

Precedence (highest first): command line, environment (`DOCKER_CONTENT_TRUST`,
`DOCKER_CONTENT_TRUST_SERVER`, `DOCKER_CONFIG`, ...), the TOML file, defaults. The file is parsed
strictly: an unknown key or a wrong type is refused with the file, line and key named, because a
typo in a security setting (say `disable_tofu`) must never be silently ignored.

The values it builds live in `trust.settings` (a leaf: `Limits`, `TrustPinning`, `Settings`) and
`trust.policy` (the rule model); this module is the only one that reads the file.

Longer than 500 lines because every table of the file (limits, pinning, servers, trust
sources, rules, engine, auth, proxy, mirrors) is read here by one strict reader that names file,
line and key; split per table, the line lookup and the precedence rules would be copied.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from trust.errors import ConfigError, InputError
from trust.reference import DOMAIN_AND_PORT, REMOTE_NAME
from trust.settings import (
    Limits,
    ProxyConfig,
    Settings,
    TrustPinning,
    TrustSourceConfig,
    content_trust_from_env,
    engine_socket_host,
    parse_go_bool,
    scope_matches,
    validate_trust_server_url,
)

if TYPE_CHECKING:  # imported where a policy is read: a command without one never loads them
    from trust.policy import Policy

__all__ = [
    "Configuration",
    "Limits",
    "ProxyConfig",
    "Settings",
    "TrustPinning",
    "content_trust_from_env",
    "default_config_path",
    "docker_config_dir",
    "load_config",
    "load_policy_file",
    "parse_go_bool",
    "validate_trust_server_url",
]


@dataclass(frozen=True)
class Configuration:
    """What the loader found: the settings, and the policy when one is configured.

    Kept as a pair (not a policy inside `Settings`) because the settings are a leaf and the
    policy model sits above them; every front end hands both to `trust.service.TrustService`.
    """

    settings: Settings
    policy: Policy | None = None


def docker_config_dir(environ: Mapping[str, str]) -> Path:
    """`$DOCKER_CONFIG`, else `~/.docker` (docker's cli/config Dir())."""
    value = environ.get("DOCKER_CONFIG")
    if value:
        return Path(value)
    return Path(environ.get("HOME") or Path.home()) / ".docker"


def default_config_path(environ: Mapping[str, str]) -> Path:
    """`$TRUSTPULL_CONFIG`, else `$XDG_CONFIG_HOME/trustpull/config.toml` (`~/.config/...`)."""
    explicit = environ.get("TRUSTPULL_CONFIG")
    if explicit:
        return Path(explicit)
    base = environ.get("XDG_CONFIG_HOME") or str(
        Path(environ.get("HOME") or Path.home()) / ".config"
    )
    return Path(base) / "trustpull" / "config.toml"


# ---------------------------------------------------------------------------- file parsing


def _line_of(text: str, section: str | None, key: str) -> int | None:
    """Best-effort line number of `key` (inside `[section]` when given) in TOML text."""
    current: str | None = None
    key_pattern = re.compile(rf"^\s*(\"?){re.escape(key)}\1\s*=")
    for number, line in enumerate(text.splitlines(), start=1):
        header = re.match(r"^\s*\[+\s*([^\]]+?)\s*\]+", line)
        if header:
            current = header.group(1).strip()
            if section is None and current == key:
                return number
            continue
        if current == section and key_pattern.match(line):
            return number
    return None


class _FileReader:
    """Checks a parsed TOML document, naming the file, line and key of the first problem."""

    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        self.text = text

    def fail(self, section: str | None, key: str, problem: str) -> ConfigError:
        line = _line_of(self.text, section, key)
        where = f"{self.path}:{line}" if line else str(self.path)
        dotted = f"{section}.{key}" if section else key
        return ConfigError(f"{where}: {dotted}: {problem}")

    def table(self, doc: Mapping[str, Any], name: str) -> Mapping[str, Any]:
        value = doc.get(name, {})
        if not isinstance(value, dict):
            raise self.fail(None, name, "must be a table")
        return value


_SECTIONS = {
    "trust_servers",
    "trust_pinning",
    "limits",
    "trust_sources",
    "rules",
    "engine",
    "auth",
    "proxy",
    "mirrors",
}
_PINNING_KEYS = {"certs", "ca", "disable_tofu"}


def _read_file(path: Path) -> tuple[dict[str, Any], _FileReader]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: configuration file not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read configuration file: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8")
        doc = tomllib.loads(text)
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: configuration file is not UTF-8") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    return doc, _FileReader(path, text)


def _parse_limits(reader: _FileReader, table: Mapping[str, Any]) -> Limits:
    known = {item.name: item for item in dataclasses.fields(Limits)}
    values: dict[str, Any] = {}
    for key, value in table.items():
        if key not in known:
            raise reader.fail("limits", key, "unknown key")
        default = getattr(Limits(), key)
        wants_int = isinstance(default, int)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise reader.fail("limits", key, "must be a number")
        if wants_int and not isinstance(value, int):
            raise reader.fail("limits", key, "must be an integer")
        if value < 0:
            raise reader.fail("limits", key, "must not be negative")
        values[key] = float(value) if not wants_int else value
    return Limits(**values)


def _parse_pinning(reader: _FileReader, table: Mapping[str, Any]) -> TrustPinning:
    for key in table:
        if key not in _PINNING_KEYS:
            raise reader.fail("trust_pinning", key, "unknown key")
    certs_raw = table.get("certs", {})
    if not isinstance(certs_raw, dict):
        raise reader.fail("trust_pinning", "certs", "must be a table of GUN = [key IDs]")
    certs: dict[str, tuple[str, ...]] = {}
    for gun, ids in certs_raw.items():
        if isinstance(ids, str):
            ids = [ids]
        if not isinstance(ids, list) or not all(
            isinstance(i, str) and re.fullmatch(r"[0-9a-f]{64}", i) for i in ids
        ):
            raise reader.fail("trust_pinning.certs", gun, "must be a list of 64-hex key IDs")
        certs[gun] = tuple(ids)
    ca_raw = table.get("ca", {})
    if not isinstance(ca_raw, dict) or not all(isinstance(v, str) for v in ca_raw.values()):
        raise reader.fail("trust_pinning", "ca", "must be a table of GUN prefix = CA file")
    ca: dict[str, bytes] = {}
    for prefix, value in ca_raw.items():
        path = (reader.path.parent / value).resolve()
        try:
            ca[prefix] = path.read_bytes()
        except OSError as exc:
            problem = f"cannot read the CA file {path}: {exc.strerror or exc}"
            raise reader.fail("trust_pinning.ca", prefix, problem) from None
    disable_tofu = table.get("disable_tofu", False)
    if not isinstance(disable_tofu, bool):
        raise reader.fail("trust_pinning", "disable_tofu", "must be true or false")
    return TrustPinning(certs=certs, ca=ca, disable_tofu=disable_tofu)


def _check_pins_apply(
    reader: _FileReader,
    pinning: TrustPinning,
    sources: Sequence[TrustSourceConfig],
    mirrors: Mapping[str, str],
) -> None:
    """Refuse a `[trust_pinning]` entry that could never apply, instead of ignoring the pin the
    user wrote: every name it covers lies in a `[[trust_sources]]` scope (verified by that TUF
    root alone; a rule's `root_keys` there is refused too) or under a `[mirrors]` prefix (pins
    are looked up by the origin's GUN). An exact GUN covers itself; a `prefix*` key and a `ca`
    prefix cover every name starting with the prefix, so only one ending inside such a scope
    (`scope/…`) is wholly in it."""
    scopes = [
        (source.scope, "[[trust_sources]] scope", "those names are verified by its TUF root")
        for source in sources
    ]
    scopes += [
        (mirror, "[mirrors] prefix", f"pins are looked up by the origin's GUN, under {origin}")
        for mirror, origin in mirrors.items()
    ]
    entries = [("trust_pinning.certs", key) for key in pinning.certs]
    entries += [("trust_pinning.ca", key) for key in pinning.ca]
    for section, key in entries:
        exact = section == "trust_pinning.certs" and not key.endswith("*")
        prefix = key.removesuffix("*")
        for scope, what, instead in scopes:
            if scope_matches(scope, key) if exact else prefix.startswith(scope + "/"):
                raise reader.fail(
                    section,
                    key,
                    f"every name it pins lies in the {what} {scope}, where the pin never "
                    f"applies ({instead})",
                )


def _parse_engine(reader: _FileReader, table: Mapping[str, Any]) -> str | None:
    for key in table:
        if key != "socket":
            raise reader.fail("engine", key, "unknown key")
    value = table.get("socket")
    if value is None:
        return None
    if not isinstance(value, str):
        raise reader.fail("engine", "socket", "must be a string (a unix socket path)")
    try:
        return engine_socket_host(value)
    except InputError as exc:
        raise reader.fail("engine", "socket", exc.message) from None


def _parse_servers(reader: _FileReader, table: Mapping[str, Any]) -> dict[str, str]:
    servers: dict[str, str] = {}
    for registry, url in table.items():
        if not isinstance(url, str):
            raise reader.fail("trust_servers", registry, "must be an https URL string")
        try:
            servers[registry] = validate_trust_server_url(url)
        except InputError as exc:
            raise reader.fail("trust_servers", registry, exc.message) from None
    return servers


def _parse_auth(reader: _FileReader, table: Mapping[str, Any]) -> tuple[str, ...]:
    """`[auth] realms = ["https://auth.example.com", ...]`: https URLs without credentials."""
    for key in table:
        if key != "realms":
            raise reader.fail("auth", key, "unknown key")
    realms = table.get("realms", [])
    if not isinstance(realms, list) or not all(isinstance(r, str) for r in realms):
        raise reader.fail("auth", "realms", "must be an array of https URL strings")
    for realm in realms:
        try:
            parts = urlsplit(realm)
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError:
            raise reader.fail("auth", "realms", f"not a URL: {realm!r}") from None
        if parts.scheme != "https" or not parts.hostname:
            raise reader.fail("auth", "realms", f"must be an https URL: {realm!r}")
        if parts.username is not None or "@" in parts.netloc or parts.query or parts.fragment:
            raise reader.fail(
                "auth", "realms", f"must not carry credentials, query or fragment: {realm!r}"
            )
    return tuple(realms)


_SOURCE_KEYS = {"scope", "type", "metadata_url", "root", "cache_dir"}
_SOURCE_TYPES = {"tuf"}


def _scope_pattern() -> re.Pattern[str]:
    return re.compile(rf"{DOMAIN_AND_PORT}(?:/{REMOTE_NAME})?")


def _entry_line(text: str, section: str, index: int, key: str | None) -> int | None:
    """Line of `key` in the `index`-th `[[section]]` block (its header line if key is None
    or absent): `_line_of` cannot tell the entries of an array of tables apart."""
    header = re.compile(rf"^\s*\[\[\s*{re.escape(section)}\s*\]\]")
    other = re.compile(r"^\s*\[")
    key_pattern = re.compile(rf"^\s*(\"?){re.escape(key)}\1\s*=") if key else None
    seen = -1
    inside = False
    header_line: int | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        if header.match(line):
            seen += 1
            inside = seen == index
            if inside:
                header_line = number
            continue
        if other.match(line):
            inside = False
            continue
        if inside and key_pattern is not None and key_pattern.match(line):
            return number
    return header_line


def _parse_trust_sources(reader: _FileReader, value: Any) -> tuple[TrustSourceConfig, ...]:
    """`[[trust_sources]]`: strict keys, https metadata URL, an existing root file, unique scopes.

    Relative paths are taken from the config file's directory, so a config and the root.json it
    names can be moved together.
    """
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise reader.fail(None, "trust_sources", "must be an array of tables ([[trust_sources]])")

    def fail(index: int, key: str | None, problem: str) -> ConfigError:
        line = _entry_line(reader.text, "trust_sources", index, key)
        where = f"{reader.path}:{line}" if line else str(reader.path)
        dotted = f"trust_sources[{index}]" + (f".{key}" if key else "")
        return ConfigError(f"{where}: {dotted}: {problem}")

    scope_re = _scope_pattern()
    sources: list[TrustSourceConfig] = []
    seen: dict[str, int] = {}
    for index, entry in enumerate(value):
        for key in entry:
            if key not in _SOURCE_KEYS:
                raise fail(index, key, "unknown key")
        for key in ("scope", "type", "metadata_url", "root"):
            if key not in entry:
                raise fail(index, None, f"missing key {key!r}")
        for key, item in entry.items():
            if not isinstance(item, str) or not item:
                raise fail(index, key, "must be a non-empty string")
        scope = entry["scope"]
        first = scope.split("/", 1)[0]
        if not scope_re.fullmatch(scope) or not (
            "." in first or ":" in first or first == "localhost"
        ):
            raise fail(
                index,
                "scope",
                "must be a registry host or a repository prefix starting with one "
                "(registry.example.com, registry.example.com/team), without tag or digest",
            )
        if first != first.lower():
            raise fail(index, "scope", "the registry host must be lower case")
        if scope in seen:
            raise fail(index, "scope", f"same scope as trust_sources[{seen[scope]}]")
        seen[scope] = index
        if entry["type"] not in _SOURCE_TYPES:
            raise fail(index, "type", f'unknown source type {entry["type"]!r} (expected "tuf")')
        try:
            url = validate_trust_server_url(entry["metadata_url"])
        except InputError as exc:
            raise fail(index, "metadata_url", exc.message) from None
        root = (reader.path.parent / entry["root"]).resolve()
        if not root.is_file():
            raise fail(index, "root", f"trusted root file {root} does not exist")
        cache_dir = entry.get("cache_dir")
        sources.append(
            TrustSourceConfig(
                scope=scope,
                metadata_url=url,
                root=root,
                type=entry["type"],
                cache_dir=(reader.path.parent / cache_dir).resolve() if cache_dir else None,
            )
        )
    return tuple(sources)


def _registry_prefix_problem(value: str) -> str | None:
    """Why `value` is not a `host[:port][/path]` registry prefix (None when it is one)."""
    first = value.split("/", 1)[0]
    if not _scope_pattern().fullmatch(value) or not (
        "." in first or ":" in first or first == "localhost"
    ):
        return (
            "must be a registry host[:port] or a repository prefix starting with one "
            "(mirror.corp:5000, harbor.corp/dockerhub), without scheme, tag or digest"
        )
    if first != first.lower():
        return "the registry host must be lower case"
    return None


def _parse_mirrors(reader: _FileReader, table: Mapping[str, Any]) -> dict[str, str]:
    """`[mirrors]`: mirror prefix = origin prefix, both registry names; no self-maps, no chains.

    An origin must not overlap any mirror prefix (by whole path segments, either way round):
    then a mapped name is never mapped again, and no mirror can shadow its own origin's names.
    """
    mirrors: dict[str, str] = {}
    for mirror, origin in table.items():
        if isinstance(origin, dict):
            dotted, inner = mirror, origin  # `mirror.corp = ...` unquoted is a nested table
            while isinstance(inner, dict) and len(inner) == 1:
                key, inner = next(iter(inner.items()))
                dotted += f".{key}"
            raise reader.fail(
                "mirrors",
                dotted,
                'must be "MIRROR" = "ORIGIN"; quote a mirror name that has dots or a port '
                '("mirror.corp:5000" = "registry.example.com")',
            )
        problem = _registry_prefix_problem(mirror)
        if problem is not None:
            raise reader.fail("mirrors", mirror, f"mirror {problem}")
        if not isinstance(origin, str):
            raise reader.fail("mirrors", mirror, "must be an origin registry name string")
        problem = _registry_prefix_problem(origin)
        if problem is not None:
            raise reader.fail("mirrors", mirror, f"origin {origin!r} {problem}")
        mirrors[mirror] = origin
    for mirror, origin in mirrors.items():
        if mirror == origin:
            raise reader.fail("mirrors", mirror, "a mirror cannot map to itself")
        for other in mirrors:
            if scope_matches(other, origin) or scope_matches(origin, other):
                what = "its own mirror prefix" if other == mirror else f"the mirror {other!r}"
                raise reader.fail(
                    "mirrors",
                    mirror,
                    f"origin {origin!r} overlaps {what}: mirrors cannot map to themselves or chain",
                )
    return mirrors


def _rules_fail(reader: _FileReader) -> Callable[[int, str | None, str], ConfigError]:
    """A `[[rules]]` error naming file, line (of the key in that rule) and field."""

    def fail(index: int, key: str | None, problem: str) -> ConfigError:
        if index < 0:
            return reader.fail(None, "rules", problem)
        line = _entry_line(reader.text, "rules", index, key)
        where = f"{reader.path}:{line}" if line else str(reader.path)
        dotted = f"rules[{index}]" + (f".{key}" if key else "")
        return ConfigError(f"{where}: {dotted}: {problem}")

    return fail


def _parse_rules(reader: _FileReader, value: Any) -> Policy:
    """`[[rules]]`, the same way for the config file and a rules-only `--policy` file."""

    def origin(index: int) -> str:
        line = _entry_line(reader.text, "rules", index, None)
        return f"{reader.path}:{line}" if line else str(reader.path)

    from trust.policy_file import parse_rules

    return parse_rules(
        value,
        _rules_fail(reader),
        base_dir=reader.path.parent,
        origin=origin,
        source=str(reader.path),
    )


def _parse_proxy(reader: _FileReader, table: Mapping[str, Any]) -> ProxyConfig:
    known = {item.name: item for item in dataclasses.fields(ProxyConfig)}
    defaults = ProxyConfig()
    values: dict[str, Any] = {}
    for key, value in table.items():
        if key not in known:
            raise reader.fail("proxy", key, "unknown key")
        default = getattr(defaults, key)
        if key == "socket_mode":
            if isinstance(value, str) and re.fullmatch(r"0?o?[0-7]{3,4}", value):
                value = int(value.replace("o", ""), 8)
            if isinstance(value, bool) or not isinstance(value, int):
                raise reader.fail("proxy", key, 'must be an octal mode such as 0o660 or "0660"')
        elif isinstance(default, bool):
            if not isinstance(value, bool):
                raise reader.fail("proxy", key, "must be true or false")
        elif isinstance(default, int):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise reader.fail("proxy", key, "must be a non-negative integer")
        elif isinstance(default, float):
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise reader.fail("proxy", key, "must be a non-negative number")
            if key in ("header_timeout", "idle_timeout") and value == 0:
                # no "none" either: the proxy would take a deadline already reached
                raise reader.fail("proxy", key, "must be a positive number of seconds")
            value = float(value)
        elif not isinstance(value, str) or not value:
            raise reader.fail("proxy", key, "must be a non-empty string")
        values[key] = value
    try:
        return ProxyConfig(**values)
    except ConfigError as error:
        raise reader.fail("proxy", "mode", error.message) from None


def load_policy_file(path: Path) -> tuple[Policy, _FileReader]:
    """A rules-only file (`--policy FILE`): `[[rules]]` and nothing else."""
    doc, reader = _read_file(path)
    for key in doc:
        if key != "rules":
            raise reader.fail(None, key, "unknown section (a policy file holds [[rules]] only)")
    return _parse_rules(reader, doc.get("rules", [])), reader


def load_config(
    environ: Mapping[str, str] | None = None,
    *,
    config_file: str | Path | None = None,
    content_trust: bool | None = None,
    offline: bool = False,
    policy_file: str | Path | None = None,
    engine_socket: str | None = None,
) -> Configuration:
    """Build the settings and the policy from (highest first) explicit arguments, the
    environment, the file, and defaults.

    A policy (`[[rules]]`, replaced by `policy_file` when given) turns content trust on whatever
    `DOCKER_CONTENT_TRUST` says; only an explicit `content_trust=False` (the command line's
    `--disable-content-trust`) bypasses it.
    """
    env = os.environ if environ is None else environ
    explicit = config_file is not None
    path = Path(config_file) if config_file is not None else default_config_path(env)
    if not explicit and "TRUSTPULL_CONFIG" in env:
        explicit = True
    limits = Limits()
    pinning = TrustPinning()
    servers: dict[str, str] = {}
    sources: tuple[TrustSourceConfig, ...] = ()
    mirrors: dict[str, str] = {}
    policy: Policy | None = None
    realms: tuple[str, ...] = ()
    used_file: Path | None = None
    file_engine: str | None = None
    proxy = ProxyConfig()
    if explicit or path.is_file():
        doc, reader = _read_file(path)
        used_file = path
        for key in doc:
            if key not in _SECTIONS:
                raise reader.fail(None, key, "unknown section")
        limits = _parse_limits(reader, reader.table(doc, "limits"))
        pinning = _parse_pinning(reader, reader.table(doc, "trust_pinning"))
        servers = _parse_servers(reader, reader.table(doc, "trust_servers"))
        file_engine = _parse_engine(reader, reader.table(doc, "engine"))
        realms = _parse_auth(reader, reader.table(doc, "auth"))
        proxy = _parse_proxy(reader, reader.table(doc, "proxy"))
        mirrors = _parse_mirrors(reader, reader.table(doc, "mirrors"))
        if "trust_sources" in doc:
            sources = _parse_trust_sources(reader, doc["trust_sources"])
        _check_pins_apply(reader, pinning, sources, mirrors)
        if "rules" in doc and policy_file is None:
            from trust.policy_file import check_mirror_scopes, check_trust_sources

            policy = _parse_rules(reader, doc["rules"])
            check_trust_sources(policy, sources, _rules_fail(reader))
            check_mirror_scopes(policy, mirrors, _rules_fail(reader))
    if policy_file is not None:
        from trust.policy_file import check_mirror_scopes, check_trust_sources

        policy, policy_reader = load_policy_file(Path(policy_file))
        check_trust_sources(policy, sources, _rules_fail(policy_reader))
        check_mirror_scopes(policy, mirrors, _rules_fail(policy_reader))
    override = env.get("DOCKER_CONTENT_TRUST_SERVER") or None
    if override is not None:
        override = validate_trust_server_url(override)
    if content_trust is None:
        content_trust = True if policy is not None else content_trust_from_env(env)
    engine_host = engine_socket_host(engine_socket) if engine_socket is not None else None
    if engine_host is None and not env.get("DOCKER_HOST"):
        engine_host = file_engine
    settings = Settings(
        content_trust=content_trust,
        docker_config=docker_config_dir(env),
        trust_server_override=override,
        trust_servers=servers,
        trust_pinning=pinning,
        limits=limits,
        offline=offline,
        config_file=used_file,
        trust_sources=sources,
        engine_host=engine_host,
        auth_realms=realms,
        proxy=proxy,
        mirrors=mirrors,
    )
    return Configuration(settings, policy)
