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
_CONTROL_RE = re.compile("[\x00-\x1f\x7f]")
#: Keys real clients repeat on purpose; every other key of an interpreted route must be single.
LIST_KEYS = {"t", "changes"}


def _go_unescape(text: str, *, plus_is_space: bool) -> str:
    """Go's `unescape`: `%XX` → byte (invalid escape is an error), `+` → space in queries."""
    if "%" not in text and (not plus_is_space or "+" not in text):
        return text  # nothing to decode (a str is already valid text)
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
    if _CONTROL_RE.search(path) is not None:
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
    #: The template's first path segment when it is literal (`images`), else None.
    first: str | None = None


def _route(method: str, template: str, name: str, interpreted: bool = False) -> Route:
    regex = ""
    for part in re.split(r"(\{[^}]+\})", template):
        if part.startswith("{"):
            var, _, kind = part[1:-1].partition(":")
            regex += {"": _ONE, ".*": _ANY, ".+": _PLUS}[kind].format(var)
        else:
            regex += re.escape(part)
    first = template.split("/")[1] if template.count("/") >= 1 else ""
    return Route(name, method, re.compile(regex), interpreted, None if "{" in first else first)


#: The engine's routes in its registration order (moby api/server/router/*), one a line:
#: method, path template, route name, and `interpreted` where the proxy reads the parameters.
_TABLE = """
# system
OPTIONS /{anyroute:.*}                              options
GET     /_ping                                      ping
HEAD    /_ping                                      ping
GET     /events                                     events
GET     /info                                       info
GET     /version                                    version
GET     /system/df                                  system.df
POST    /auth                                       auth
# containers
HEAD    /containers/{name:.*}/archive               containers.archive.head
GET     /containers/json                            containers.list
GET     /containers/{name:.*}/export                containers.export
GET     /containers/{name:.*}/changes               containers.changes
GET     /containers/{name:.*}/json                  containers.inspect
GET     /containers/{name:.*}/top                   containers.top
GET     /containers/{name:.*}/logs                  containers.logs
GET     /containers/{name:.*}/stats                 containers.stats
GET     /containers/{name:.*}/attach/ws             containers.attach.ws
GET     /exec/{id:.*}/json                          exec.inspect
GET     /containers/{name:.*}/archive               containers.archive.get
POST    /containers/create                          containers.create       interpreted
POST    /containers/{name:.*}/kill                  containers.kill
POST    /containers/{name:.*}/pause                 containers.pause
POST    /containers/{name:.*}/unpause               containers.unpause
POST    /containers/{name:.*}/restart               containers.restart
POST    /containers/{name:.*}/start                 containers.start
POST    /containers/{name:.*}/stop                  containers.stop
POST    /containers/{name:.*}/wait                  containers.wait
POST    /containers/{name:.*}/resize                containers.resize
POST    /containers/{name:.*}/attach                containers.attach
POST    /containers/{name:.*}/copy                  containers.copy
POST    /containers/{name:.*}/exec                  containers.exec
POST    /exec/{name:.*}/start                       exec.start
POST    /exec/{name:.*}/resize                      exec.resize
POST    /containers/{name:.*}/rename                containers.rename
POST    /containers/{name:.*}/update                containers.update
POST    /containers/prune                           containers.prune
PUT     /containers/{name:.*}/archive               containers.archive.put
DELETE  /containers/{name:.*}                       containers.delete
GET     /containers/{name}/checkpoints              checkpoints.list
POST    /containers/{name}/checkpoints              checkpoints.create
DELETE  /containers/{name}/checkpoints/{checkpoint} checkpoints.delete
# images
GET     /images/json                                images.list
GET     /images/search                              images.search
GET     /images/get                                 images.save
GET     /images/{name:.*}/get                       images.save
GET     /images/{name:.*}/history                   images.history
GET     /images/{name:.*}/json                      images.inspect
POST    /commit                                     commit                  interpreted
POST    /images/load                                images.load             interpreted
POST    /images/create                              images.create           interpreted
POST    /images/{name:.*}/push                      images.push
POST    /images/{name:.*}/tag                       images.tag              interpreted
POST    /images/prune                               images.prune
DELETE  /images/{name:.*}                           images.delete
# networks
GET     /networks                                   networks.list
GET     /networks/                                  networks.list
GET     /networks/{id:.+}                           networks.inspect
POST    /networks/create                            networks.create
POST    /networks/{id:.*}/connect                   networks.connect
POST    /networks/{id:.*}/disconnect                networks.disconnect
POST    /networks/prune                             networks.prune
DELETE  /networks/{id:.*}                           networks.delete
# volumes
GET     /volumes                                    volumes.list
GET     /volumes/{name:.*}                          volumes.inspect
POST    /volumes/create                             volumes.create          interpreted
POST    /volumes/prune                              volumes.prune
PUT     /volumes/{name:.*}                          volumes.update
DELETE  /volumes/{name:.*}                          volumes.delete
# build, BuildKit
POST    /build                                      build                   interpreted
POST    /build/prune                                build.prune
POST    /build/cancel                               build.cancel
POST    /session                                    session
POST    /grpc                                       grpc
# swarm
GET     /swarm                                      swarm.inspect
GET     /swarm/unlockkey                            swarm.unlockkey
POST    /swarm/init                                 swarm.init
POST    /swarm/join                                 swarm.join
POST    /swarm/leave                                swarm.leave
POST    /swarm/update                               swarm.update
POST    /swarm/unlock                               swarm.unlock
GET     /services                                   services.list
GET     /services/{id}                              services.inspect
POST    /services/create                            services.create         interpreted
POST    /services/{id}/update                       services.update         interpreted
DELETE  /services/{id}                              services.delete
GET     /services/{id}/logs                         services.logs
GET     /nodes                                      nodes.list
GET     /nodes/{id}                                 nodes.inspect
DELETE  /nodes/{id}                                 nodes.delete
POST    /nodes/{id}/update                          nodes.update
GET     /tasks                                      tasks.list
GET     /tasks/{id}                                 tasks.inspect
GET     /tasks/{id}/logs                            tasks.logs
GET     /secrets                                    secrets.list
POST    /secrets/create                             secrets.create
DELETE  /secrets/{id}                               secrets.delete
GET     /secrets/{id}                               secrets.inspect
POST    /secrets/{id}/update                        secrets.update
GET     /configs                                    configs.list
POST    /configs/create                             configs.create
DELETE  /configs/{id}                               configs.delete
GET     /configs/{id}                               configs.inspect
POST    /configs/{id}/update                        configs.update
# plugins
GET     /plugins                                    plugins.list
GET     /plugins/{name:.*}/json                     plugins.inspect
GET     /plugins/privileges                         plugins.privileges      interpreted
DELETE  /plugins/{name:.*}                          plugins.delete
POST    /plugins/{name:.*}/enable                   plugins.enable
POST    /plugins/{name:.*}/disable                  plugins.disable
POST    /plugins/pull                               plugins.pull            interpreted
POST    /plugins/{name:.*}/push                     plugins.push
POST    /plugins/{name:.*}/upgrade                  plugins.upgrade         interpreted
POST    /plugins/{name:.*}/set                      plugins.set
POST    /plugins/create                             plugins.create
# distribution
GET     /distribution/{name:.*}/json                distribution.inspect
"""


def _rows(table: str) -> tuple[Route, ...]:
    routes = []
    for line in (line for line in table.splitlines() if line and not line.startswith("#")):
        method, template, name, *flag = line.split()
        if flag not in ([], ["interpreted"]):
            raise ValueError(f"route line {line!r}: the fourth column is `interpreted` or nothing")
        routes.append(_route(method, template, name, bool(flag)))
    return tuple(routes)


ROUTES: tuple[Route, ...] = _rows(_TABLE)


def _buckets(
    routes: tuple[Route, ...],
) -> dict[str, tuple[dict[str, tuple[Route, ...]], tuple[Route, ...]]]:
    """Per method: the routes a path's first segment can reach, in table order.

    A route whose template starts with a literal segment matches only paths with that first
    segment; a route starting with a variable can match any path, so it is in every bucket.
    `match_route` so tries a few patterns instead of the whole table, with the same result.
    """
    out: dict[str, tuple[dict[str, tuple[Route, ...]], tuple[Route, ...]]] = {}
    for method in dict.fromkeys(route.method for route in routes):
        mine = [route for route in routes if route.method == method]
        anywhere = tuple(route for route in mine if route.first is None)
        firsts = dict.fromkeys(route.first for route in mine if route.first is not None)
        by_first = {
            first: tuple(r for r in mine if r.first is None or r.first == first)
            for first in firsts
            if first is not None
        }
        out[method] = (by_first, anywhere)
    return out


_BUCKETS = _buckets(ROUTES)


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
    by_first, anywhere = _BUCKETS.get(method, ({}, ()))
    first = path.split("/", 2)[1] if path.startswith("/") else None
    candidates = by_first.get(first, anywhere) if first is not None else anywhere
    for route in candidates:
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
