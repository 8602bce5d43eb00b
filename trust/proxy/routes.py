"""The engine's router as the engine applies it (engine-proxy.md §1.1–§1.3).

Paths are percent-decoded as Go's `url.URL.Path` is, matched against a copy of the engine's
route table (gorilla/mux: decoded path, case-sensitive, no trailing-slash tolerance, `{name:.*}`
variables that match slashes), behind the optional `/v[0-9.]+` prefix. Queries are split as Go's
`url.ParseQuery` does; anything Go would drop or report (`;`, bad escapes) is refused, and so is
a repeated key on a route whose parameters the proxy interprets.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from urllib.parse import quote

from trust.proxy.framing import HTTPRefusal

__all__ = ["Query", "Route", "Target", "match_route", "parse_query", "parse_target"]

_VERSION_RE = re.compile(r"/v([0-9.]+)(/.*)")
_HEX = "0123456789abcdefABCDEF"
#: Keys real clients repeat on purpose; every other key of an interpreted route must be single.
LIST_KEYS = {"t", "changes"}


def _go_unescape(text: str, *, plus_is_space: bool) -> str:
    """Go's `unescape`: `%XX` → byte (invalid escape is an error), `+` → space in queries."""
    out = bytearray()
    i = 0
    raw = text.encode("latin-1", "strict") if text.isascii() else text.encode()
    while i < len(raw):
        byte = raw[i]
        if byte == 0x25:  # %
            pair = raw[i + 1 : i + 3].decode("latin-1")
            if len(pair) != 2 or pair[0] not in _HEX or pair[1] not in _HEX:
                raise HTTPRefusal(400, f"trustpull: invalid URL escape {raw[i : i + 3]!r}")
            out.append(int(pair, 16))
            i += 3
            continue
        out.append(0x20 if (plus_is_space and byte == 0x2B) else byte)
        i += 1
    try:
        return out.decode("utf-8")
    except UnicodeDecodeError:
        raise HTTPRefusal(400, "trustpull: percent-encoded bytes are not UTF-8") from None


@dataclass(frozen=True)
class Query:
    """The parsed query, pairs in their original order."""

    pairs: tuple[tuple[str, str], ...]

    def first(self, key: str) -> str | None:
        """`url.Values.Get`: the first value, or None when absent."""
        for k, v in self.pairs:
            if k == key:
                return v
        return None

    def get(self, key: str) -> str:
        return self.first(key) or ""

    def all(self, key: str) -> list[str]:
        return [v for k, v in self.pairs if k == key]

    def replaced(self, **values: str | None) -> Query:
        """Every pair of each named key removed, then the new value (if any) appended once."""
        keep = [(k, v) for k, v in self.pairs if k not in values]
        keep.extend((k, v) for k, v in values.items() if v is not None)
        return Query(tuple(keep))

    def encode(self) -> str:
        return "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in self.pairs)


def parse_query(raw: str) -> Query:
    pairs: list[tuple[str, str]] = []
    for part in raw.split("&") if raw else []:
        if ";" in part:
            raise HTTPRefusal(400, "trustpull: invalid semicolon separator in query")
        if not part:
            continue
        key, _, value = part.partition("=")
        pairs.append(
            (_go_unescape(key, plus_is_space=True), _go_unescape(value, plus_is_space=True))
        )
    return Query(tuple(pairs))


def booleanish(value: str | None) -> bool:
    """The engine's `BoolValue`: empty, 0, no, false, none (trimmed, any case) are false."""
    return (value or "").strip().lower() not in ("", "0", "no", "false", "none")


@dataclass(frozen=True)
class Target:
    """A request target as the engine decodes it."""

    version: str | None  # the version string as sent (`1.41`, `1.41.0`), None unversioned
    path: str  # decoded, without the version prefix
    query: Query
    raw_query: str

    def encode(self, path: str | None = None, query: Query | None = None) -> str:
        """The target the proxy forwards: re-encoded from what it decoded (§1.2)."""
        use = self.path if path is None else path
        prefix = f"/v{self.version}" if self.version is not None else ""
        encoded = quote(prefix + use, safe="/:@-._~!$&'()*+,=")
        q = (self.query if query is None else query).encode()
        return f"{encoded}?{q}" if q else encoded

    def with_path(self, path: str, query: Query | None = None) -> str:
        return self.encode(path, query if query is not None else Query(()))


def parse_target(target: str) -> Target:
    raw_path, _, raw_query = target.partition("?")
    path = _go_unescape(raw_path, plus_is_space=False)
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in path):
        raise HTTPRefusal(400, "trustpull: control byte in the decoded path")
    cleaned = posixpath.normpath(path)
    if cleaned.startswith("//"):
        cleaned = "/" + cleaned.lstrip("/")
    if path.endswith("/") and cleaned != "/":
        cleaned += "/"
    if cleaned != path:
        location = quote(cleaned, safe="/:@-._~!$&'()*+,=") + (f"?{raw_query}" if raw_query else "")
        raise HTTPRefusal(
            301, "Moved Permanently", headers=((b"location", location.encode()),), kind="Redirect"
        )
    query = parse_query(raw_query)
    match = _VERSION_RE.fullmatch(path)
    if match:
        return Target(match.group(1), match.group(2), query, raw_query)
    return Target(None, path, query, raw_query)


# ---------------------------------------------------------------------------- the route table

_ANY = r"(?P<{}>.*)"
_ONE = r"(?P<{}>[^/]+)"
_PLUS = r"(?P<{}>.+)"


@dataclass(frozen=True)
class Route:
    name: str  # e.g. "images.create"
    method: str
    pattern: re.Pattern[str]
    #: True when the proxy interprets this route's parameters (single-valued keys enforced).
    interpreted: bool = False


def _route(method: str, template: str, name: str, interpreted: bool = False) -> Route:
    regex = ""
    for part in re.split(r"(\{[^}]+\})", template):
        if part.startswith("{"):
            var, _, kind = part[1:-1].partition(":")
            regex += {"": _ONE, ".*": _ANY, ".+": _PLUS}[kind].format(var)
        else:
            regex += re.escape(part)
    return Route(name, method, re.compile(regex), interpreted)


_C = "/containers/{name:.*}"
ROUTES: tuple[Route, ...] = (
    # system
    _route("OPTIONS", "/{anyroute:.*}", "options"),
    _route("GET", "/_ping", "ping"),
    _route("HEAD", "/_ping", "ping"),
    _route("GET", "/events", "events"),
    _route("GET", "/info", "info"),
    _route("GET", "/version", "version"),
    _route("GET", "/system/df", "system.df"),
    _route("POST", "/auth", "auth"),
    # containers
    _route("HEAD", _C + "/archive", "containers.archive.head"),
    _route("GET", "/containers/json", "containers.list"),
    _route("GET", _C + "/export", "containers.export"),
    _route("GET", _C + "/changes", "containers.changes"),
    _route("GET", _C + "/json", "containers.inspect"),
    _route("GET", _C + "/top", "containers.top"),
    _route("GET", _C + "/logs", "containers.logs"),
    _route("GET", _C + "/stats", "containers.stats"),
    _route("GET", _C + "/attach/ws", "containers.attach.ws"),
    _route("GET", "/exec/{id:.*}/json", "exec.inspect"),
    _route("GET", _C + "/archive", "containers.archive.get"),
    _route("POST", "/containers/create", "containers.create", True),
    _route("POST", _C + "/kill", "containers.kill"),
    _route("POST", _C + "/pause", "containers.pause"),
    _route("POST", _C + "/unpause", "containers.unpause"),
    _route("POST", _C + "/restart", "containers.restart"),
    _route("POST", _C + "/start", "containers.start"),
    _route("POST", _C + "/stop", "containers.stop"),
    _route("POST", _C + "/wait", "containers.wait"),
    _route("POST", _C + "/resize", "containers.resize"),
    _route("POST", _C + "/attach", "containers.attach"),
    _route("POST", _C + "/copy", "containers.copy"),
    _route("POST", _C + "/exec", "containers.exec"),
    _route("POST", "/exec/{name:.*}/start", "exec.start"),
    _route("POST", "/exec/{name:.*}/resize", "exec.resize"),
    _route("POST", _C + "/rename", "containers.rename"),
    _route("POST", _C + "/update", "containers.update"),
    _route("POST", "/containers/prune", "containers.prune"),
    _route("PUT", _C + "/archive", "containers.archive.put"),
    _route("DELETE", "/containers/{name:.*}", "containers.delete"),
    _route("GET", "/containers/{name}/checkpoints", "checkpoints.list"),
    _route("POST", "/containers/{name}/checkpoints", "checkpoints.create"),
    _route("DELETE", "/containers/{name}/checkpoints/{checkpoint}", "checkpoints.delete"),
    # images
    _route("GET", "/images/json", "images.list"),
    _route("GET", "/images/search", "images.search"),
    _route("GET", "/images/get", "images.save"),
    _route("GET", "/images/{name:.*}/get", "images.save"),
    _route("GET", "/images/{name:.*}/history", "images.history"),
    _route("GET", "/images/{name:.*}/json", "images.inspect"),
    _route("POST", "/commit", "commit", True),
    _route("POST", "/images/load", "images.load", True),
    _route("POST", "/images/create", "images.create", True),
    _route("POST", "/images/{name:.*}/push", "images.push"),
    _route("POST", "/images/{name:.*}/tag", "images.tag", True),
    _route("POST", "/images/prune", "images.prune"),
    _route("DELETE", "/images/{name:.*}", "images.delete"),
    # networks
    _route("GET", "/networks", "networks.list"),
    _route("GET", "/networks/", "networks.list"),
    _route("GET", "/networks/{id:.+}", "networks.inspect"),
    _route("POST", "/networks/create", "networks.create"),
    _route("POST", "/networks/{id:.*}/connect", "networks.connect"),
    _route("POST", "/networks/{id:.*}/disconnect", "networks.disconnect"),
    _route("POST", "/networks/prune", "networks.prune"),
    _route("DELETE", "/networks/{id:.*}", "networks.delete"),
    # volumes
    _route("GET", "/volumes", "volumes.list"),
    _route("GET", "/volumes/{name:.*}", "volumes.inspect"),
    _route("POST", "/volumes/create", "volumes.create", True),
    _route("POST", "/volumes/prune", "volumes.prune"),
    _route("PUT", "/volumes/{name:.*}", "volumes.update"),
    _route("DELETE", "/volumes/{name:.*}", "volumes.delete"),
    # build, BuildKit
    _route("POST", "/build", "build", True),
    _route("POST", "/build/prune", "build.prune"),
    _route("POST", "/build/cancel", "build.cancel"),
    _route("POST", "/session", "session"),
    _route("POST", "/grpc", "grpc"),
    # swarm
    _route("GET", "/swarm", "swarm.inspect"),
    _route("GET", "/swarm/unlockkey", "swarm.unlockkey"),
    _route("POST", "/swarm/init", "swarm.init"),
    _route("POST", "/swarm/join", "swarm.join"),
    _route("POST", "/swarm/leave", "swarm.leave"),
    _route("POST", "/swarm/update", "swarm.update"),
    _route("POST", "/swarm/unlock", "swarm.unlock"),
    _route("GET", "/services", "services.list"),
    _route("GET", "/services/{id}", "services.inspect"),
    _route("POST", "/services/create", "services.create", True),
    _route("POST", "/services/{id}/update", "services.update", True),
    _route("DELETE", "/services/{id}", "services.delete"),
    _route("GET", "/services/{id}/logs", "services.logs"),
    _route("GET", "/nodes", "nodes.list"),
    _route("GET", "/nodes/{id}", "nodes.inspect"),
    _route("DELETE", "/nodes/{id}", "nodes.delete"),
    _route("POST", "/nodes/{id}/update", "nodes.update"),
    _route("GET", "/tasks", "tasks.list"),
    _route("GET", "/tasks/{id}", "tasks.inspect"),
    _route("GET", "/tasks/{id}/logs", "tasks.logs"),
    _route("GET", "/secrets", "secrets.list"),
    _route("POST", "/secrets/create", "secrets.create"),
    _route("DELETE", "/secrets/{id}", "secrets.delete"),
    _route("GET", "/secrets/{id}", "secrets.inspect"),
    _route("POST", "/secrets/{id}/update", "secrets.update"),
    _route("GET", "/configs", "configs.list"),
    _route("POST", "/configs/create", "configs.create"),
    _route("DELETE", "/configs/{id}", "configs.delete"),
    _route("GET", "/configs/{id}", "configs.inspect"),
    _route("POST", "/configs/{id}/update", "configs.update"),
    # plugins
    _route("GET", "/plugins", "plugins.list"),
    _route("GET", "/plugins/{name:.*}/json", "plugins.inspect"),
    _route("GET", "/plugins/privileges", "plugins.privileges"),
    _route("DELETE", "/plugins/{name:.*}", "plugins.delete"),
    _route("POST", "/plugins/{name:.*}/enable", "plugins.enable"),
    _route("POST", "/plugins/{name:.*}/disable", "plugins.disable"),
    _route("POST", "/plugins/pull", "plugins.pull", True),
    _route("POST", "/plugins/{name:.*}/push", "plugins.push"),
    _route("POST", "/plugins/{name:.*}/upgrade", "plugins.upgrade", True),
    _route("POST", "/plugins/{name:.*}/set", "plugins.set"),
    _route("POST", "/plugins/create", "plugins.create"),
    # distribution
    _route("GET", "/distribution/{name:.*}/json", "distribution.inspect"),
)


@dataclass(frozen=True)
class Match:
    route: Route
    params: dict[str, str]


def match_route(method: str, path: str) -> Match | None:
    """The engine's route for `method path`, or None (the engine's 404 `page not found`).

    A mutating request whose path two routes could claim is refused rather than guessed at:
    the proxy must not depend on registration order it may have copied wrong.
    """
    found: list[Match] = []
    for route in ROUTES:
        if route.method != method:
            continue
        m = route.pattern.fullmatch(path)
        if m is not None:
            found.append(Match(route, m.groupdict()))
    if not found:
        return None
    if method not in ("GET", "HEAD", "OPTIONS"):
        names = {f.route.name for f in found}
        if len(names) > 1:
            raise HTTPRefusal(400, f"trustpull: ambiguous path {path!r} ({sorted(names)})")
    return found[0]


def check_single_keys(query: Query) -> None:
    """On an interpreted route, a repeated key (other than the list keys) is refused (X06)."""
    seen: set[str] = set()
    for key, _ in query.pairs:
        if key in seen and key not in LIST_KEYS:
            raise HTTPRefusal(400, f"trustpull: parameter {key!r} given more than once")
        seen.add(key)
