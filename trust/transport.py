"""The HTTP layer under the Notary client: safe fetching only, no verification.

Everything a hostile or broken trust server can do to a client *before* signatures are checked
is handled here (attacks.md group G): TLS is always verified, bodies are capped while they are
read (never trusting headers, decoded bytes counted should a server compress anyway), every
request is bounded by connect/read timeouts, a per-file wall-clock deadline and a whole-session
budget, redirects are followed by hand (https only, Authorization dropped on a host change),
and the docker token handshake (dct.md §1.5) sends credentials only to the trust server and the
realm its own challenge names.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import http.cookiejar
import ipaddress
import json
import socket
import ssl
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlencode, urljoin, urlsplit

import certifi
import requests
import requests.utils
import urllib3.exceptions
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from trust.errors import AuthError, ConfigError, InputError, LengthError, NetworkError
from trust.settings import Limits, validate_trust_server_url
from trust.version import __version__

__all__ = [
    "Challenge",
    "NotFoundError",
    "RegistryAuthLike",
    "TrustServerSession",
    "parse_challenges",
]

#: Bodies are read this much at a time (at most one socket read each, see `_read_body`).
_CHUNK = 64 * 1024
#: A token endpoint answer is a small JSON document; anything bigger is refused.
_TOKEN_MAX_BYTES = 256 * 1024
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_FORBIDDEN_IN_NAME = ("..", "//", "\\", "%", "?", "#")


class NotFoundError(NetworkError):
    """A 404 from the trust server. The client maps it on root.json to "no trust data" (G02)."""

    kind = "NotFound"


class RegistryAuthLike(Protocol):
    """What `trust.credentials.RegistryAuth` offers; fields are "" when absent."""

    @property
    def username(self) -> str: ...

    @property
    def password(self) -> str: ...

    @property
    def identitytoken(self) -> str: ...


# ------------------------------------------------------------------------ WWW-Authenticate


@dataclass(frozen=True)
class Challenge:
    """One `WWW-Authenticate` challenge; scheme and parameter names are lower-cased (docker)."""

    scheme: str
    params: Mapping[str, str] = field(default_factory=dict)


_TOKEN_CHARS = frozenset(
    "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
)


def _skip_space(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t":
        pos += 1
    return pos


def _read_token(text: str, pos: int) -> tuple[str, int]:
    start = pos
    while pos < len(text) and text[pos] in _TOKEN_CHARS:
        pos += 1
    return text[start:pos], pos


def _read_quoted(text: str, pos: int) -> tuple[str, int]:
    """A quoted-string starting at `text[pos] == '"'`; backslash escapes one character."""
    out: list[str] = []
    pos += 1
    while pos < len(text):
        char = text[pos]
        if char == "\\" and pos + 1 < len(text):
            out.append(text[pos + 1])
            pos += 2
            continue
        if char == '"':
            return "".join(out), pos + 1
        out.append(char)
        pos += 1
    return "".join(out), pos  # unterminated: keep what there is, like docker's parser


def parse_challenges(headers: Iterable[str]) -> list[Challenge]:
    """Parse every challenge of every `WWW-Authenticate` header value (RFC 7235 syntax).

    One header may carry several challenges separated by commas; a new challenge starts at a
    token that is not followed by `=`. Malformed pieces are skipped rather than guessed at.
    """
    result: list[Challenge] = []
    for header in headers:
        text = header
        pos = 0
        scheme: str | None = None
        params: dict[str, str] = {}
        while pos < len(text):
            pos = _skip_space(text, pos)
            if pos < len(text) and text[pos] == ",":
                pos += 1
                continue
            word, after = _read_token(text, pos)
            if not word:
                pos += 1  # junk character: skip it
                continue
            probe = _skip_space(text, after)
            if probe < len(text) and text[probe] == "=" and scheme is not None:
                value_pos = _skip_space(text, probe + 1)
                if value_pos < len(text) and text[value_pos] == '"':
                    value, pos = _read_quoted(text, value_pos)
                else:
                    value, pos = _read_token(text, value_pos)
                    if not value:  # token68 padding such as "abc==": not a parameter
                        pos = value_pos
                        while pos < len(text) and text[pos] not in ", \t":
                            pos += 1
                        continue
                params[word.lower()] = value
                continue
            if probe < len(text) and text[probe] == "=":
                pos = probe + 1  # a parameter before any scheme: ignore it
                continue
            if scheme is not None:
                result.append(Challenge(scheme, params))
            scheme, params, pos = word.lower(), {}, after
        if scheme is not None:
            result.append(Challenge(scheme, params))
    return result


# ---------------------------------------------------------------------------------- TLS


def _tls_context(docker_config: Path, netloc: str) -> ssl.SSLContext:
    """The TLS context for a trust server, built once per process for the same certificate files.

    Building one costs ~40 ms of CPU (the system store); `trustpull check` opens a session per
    repository. The key includes each file's name, size and mtime, so a changed CA is reloaded.
    """
    if not netloc or netloc in (".", "..") or "/" in netloc or "\\" in netloc:
        raise InputError(f"invalid trust server host {netloc!r}")
    directory = docker_config / "tls" / netloc
    try:
        stamp = tuple(
            sorted((e.name, e.stat().st_size, e.stat().st_mtime_ns) for e in directory.iterdir())
        )
    except OSError:
        stamp = ()
    return _cached_tls_context(str(docker_config), netloc, stamp)


@functools.lru_cache(maxsize=64)
def _cached_tls_context(
    docker_config: str, netloc: str, stamp: tuple[tuple[str, int, int], ...]
) -> ssl.SSLContext:
    return _build_tls_context(Path(docker_config), netloc)


def _build_tls_context(docker_config: Path, netloc: str) -> ssl.SSLContext:
    """System and certifi roots plus `<docker_config>/tls/<host[:port]>/` (dct.md §1.5).

    Mirrors docker's `ReadCertsDirectory`: `*.crt` are extra CAs (added, not replacing), each
    `*.cert` needs its `*.key` and vice versa. TLS 1.2 is the floor; verification is never off.
    """
    if not netloc or netloc in (".", "..") or "/" in netloc or "\\" in netloc:
        raise InputError(f"invalid trust server host {netloc!r}")
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    if not context.cert_store_stats().get("x509_ca"):
        # Docker trusts the system roots; certifi only stands in where the system has none
        # (loading both cost ~0.1 s of CPU per run for nothing).
        context.load_verify_locations(cafile=certifi.where())
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    directory = docker_config / "tls" / netloc
    try:
        names = sorted(entry.name for entry in directory.iterdir())
    except FileNotFoundError:
        return context
    except OSError as exc:
        raise ConfigError(
            f"{directory}: cannot read certificate directory: {exc.strerror}"
        ) from None
    present = set(names)
    for name in names:
        path = directory / name
        if name.endswith(".crt"):
            try:
                context.load_verify_locations(cafile=str(path))
            except (ssl.SSLError, OSError, ValueError) as exc:
                raise ConfigError(f"{path}: not a usable CA certificate: {exc}") from None
        elif name.endswith(".cert"):
            key_name = name[: -len(".cert")] + ".key"
            if key_name not in present:
                raise ConfigError(
                    f"missing key {key_name} for client certificate {name}. "
                    "CA certificates must use the extension .crt"
                )
            try:
                # The password callback stops OpenSSL from prompting on a terminal.
                context.load_cert_chain(str(path), str(directory / key_name), password=lambda: b"")
            except (ssl.SSLError, OSError, ValueError) as exc:
                raise ConfigError(
                    f"{path}: not a usable client certificate and key: {exc}"
                ) from None
        elif name.endswith(".key"):
            cert_name = name[: -len(".key")] + ".cert"
            if cert_name not in present:
                raise ConfigError(f"missing client certificate {cert_name} for key {name}")
    return context


# ------------------------------------------------------------------ deadline watchdog plumbing


class _Watch:
    """The connections used by the request in flight, so a timer can cut them at the deadline.

    Socket timeouts bound each single read, not a server that trickles a byte just often enough
    (G04); shutting the socket down from a timer bounds the headers phase too.
    """

    def __init__(self) -> None:
        self.connections: list[HTTPConnection] = []
        self.fired = False
        self.lock = threading.Lock()

    def cut(self) -> None:
        with self.lock:
            self.fired = True
            for conn in self.connections:
                sock = conn.sock
                if sock is not None:
                    try:
                        # The plain socket method: never touch the SSL object another thread uses.
                        socket.socket.shutdown(sock, socket.SHUT_RDWR)
                    except OSError:
                        pass


_local = threading.local()


def _register(conn: HTTPConnection) -> None:
    watch: _Watch | None = getattr(_local, "watch", None)
    if watch is not None:
        with watch.lock:
            watch.connections.append(conn)


class _WatchedHTTPConnection(HTTPConnection):
    def connect(self) -> None:
        _register(self)
        super().connect()

    def request(self, *args: Any, **kwargs: Any) -> None:
        _register(self)
        super().request(*args, **kwargs)


class _WatchedHTTPSConnection(HTTPSConnection):
    def connect(self) -> None:
        _register(self)
        super().connect()

    def request(self, *args: Any, **kwargs: Any) -> None:
        _register(self)
        super().request(*args, **kwargs)


class _WatchedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


class _Adapter(HTTPAdapter):
    """Uses our SSLContext for every pool (direct and proxied), and no urllib3 retries."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self._context = context
        super().__init__(max_retries=0)

    def init_poolmanager(
        self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any
    ) -> None:
        pool_kwargs["ssl_context"] = self._context
        super().init_poolmanager(connections, maxsize, block, **pool_kwargs)
        self.poolmanager.pool_classes_by_scheme = {
            "http": _WatchedHTTPPool,
            "https": _WatchedHTTPSPool,
        }

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        proxy_kwargs["ssl_context"] = self._context
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        manager.pool_classes_by_scheme = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}
        return manager

    def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
        conn.cert_reqs = "CERT_REQUIRED"  # the CAs are in our context, nothing to add per pool


# ------------------------------------------------------------------------------ session


@dataclass
class _Reply:
    status: int
    body: bytes
    url: str
    challenges: list[str]
    content_type: str


@dataclass
class _Token:
    value: str
    expires: float  # on the session clock


def _is_loopback_literal(host: str) -> bool:
    """127.0.0.0/8, ::1 or "localhost", by text only: no DNS lookup (G11)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme.lower(), parts.netloc.lower()


def _check_component(value: str, what: str) -> None:
    if (
        not value
        or value.startswith("/")
        or any(bad in value for bad in _FORBIDDEN_IN_NAME)
        or any(ord(char) < 0x21 or ord(char) == 0x7F for char in value)
    ):
        raise InputError(f"refusing unsafe {what} {value!r} in a trust server path")


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, (when - dt.datetime.now(dt.UTC)).total_seconds())


class _NoCookies(http.cookiejar.DefaultCookiePolicy):
    """Trust metadata needs no cookies; accepting them would only add state an attacker sets."""

    def set_ok(self, cookie: http.cookiejar.Cookie, request: Any) -> bool:
        return False

    def return_ok(self, cookie: http.cookiejar.Cookie, request: Any) -> bool:
        return False


class TrustServerSession:
    """One trust server and one GUN: ping, token handshake and bounded metadata fetches."""

    def __init__(
        self,
        server_url: str,
        gun: str,
        *,
        limits: Limits,
        docker_config: Path,
        credentials: Callable[[], RegistryAuthLike | None] | None = None,
        user_agent: str = f"trustpull/{__version__}",
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._server = validate_trust_server_url(server_url)
        _check_component(gun, "GUN")
        self._gun = gun
        self._limits = limits
        self._credentials = credentials
        self._clock = clock
        self._sleep = sleep
        self._base = f"{self._server}/v2/{gun}/_trust/tuf/"
        self._origin = _origin(self._server)
        self._v2_prefix = urlsplit(self._server).path + "/v2/"
        context = _tls_context(docker_config, urlsplit(self._server).netloc)
        self._session = requests.Session()
        # No env: that would let ~/.netrc add credentials and REQUESTS_CA_BUNDLE swap our CAs.
        self._session.trust_env = False
        self._session.cookies.set_policy(_NoCookies())
        self._adapter = _Adapter(context)
        self._session.mount("https://", self._adapter)
        self._session.mount("http://", self._adapter)
        self._session.headers.clear()
        self._session.headers.update(
            {"User-Agent": user_agent, "Accept-Encoding": "identity", "Accept": "*/*"}
        )
        self._requests = 0
        self._challenges: list[Challenge] = []
        self._tokens: dict[tuple[str, str, str], _Token] = {}
        self._started = clock()

    # -------------------------------------------------------------- public API

    @property
    def request_count(self) -> int:
        """HTTP requests sent so far (ping, tokens, redirects and retries included)."""
        return self._requests

    @property
    def base_url(self) -> str:
        """`<server>/v2/<GUN>/_trust/tuf/`, for messages and logs."""
        return self._base

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> TrustServerSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def ping(self) -> None:
        """`GET <server>/v2/` to learn the auth challenges; network errors are ignored (offline)."""
        deadline = min(self._clock() + self._limits.ping_timeout, self._session_deadline())
        try:
            reply = self._fetch(
                "GET",
                f"{self._server}/v2/",
                label="notary server",
                what="ping",
                deadline=deadline,
                auth=None,
                max_bytes=self._limits.error_body_max_bytes,
                retries=0,
            )
        except NetworkError:
            return
        if reply.status == 401:
            self._challenges = parse_challenges(reply.challenges)

    def get_metadata(self, name: str, max_bytes: int) -> bytes:
        """`GET <base><name>.json`, at most `max_bytes` bytes, mapped to trustpull's errors."""
        _check_component(name, "metadata name")
        url = f"{self._base}{name}.json"
        deadline = min(self._clock() + self._limits.file_timeout, self._session_deadline())
        auth = self._authorization(url, deadline)
        reply = self._fetch(
            "GET",
            url,
            label="notary server",
            what=f"{name}.json",
            deadline=deadline,
            auth=auth,
            max_bytes=max_bytes,
            retries=self._limits.retries,
        )
        status = reply.status
        if status == 200:
            return reply.body
        if status == 404:
            raise NotFoundError(
                f"{name} trust data unavailable.  Has a notary repository been initialized?"
            )
        if status in (401, 403):
            detail = " with the credentials sent" if auth else ""
            raise AuthError(
                f"you are not authorized to perform this operation: server returned {status}"
                f"{detail}."
            )
        if status == 429 or status >= 500:
            raise NetworkError(f"unable to reach trust server at this time: {status}.")
        raise NetworkError(
            f"unexpected answer from trust server for {name}.json: {status}{_detail(reply.body)}"
        )

    # ----------------------------------------------------------------- auth

    def _authorization(self, url: str, deadline: float) -> str | None:
        """The Authorization value for `url`: only for the trust server's own `/v2/` paths."""
        if not self._challenges or _origin(url) != self._origin:
            return None
        if not urlsplit(url).path.startswith(self._v2_prefix):
            return None
        bearer = next((c for c in self._challenges if c.scheme == "bearer"), None)
        if bearer is not None:
            return f"Bearer {self._token(bearer, deadline)}"
        basic = next((c for c in self._challenges if c.scheme == "basic"), None)
        if basic is not None:
            creds = self._creds()
            if creds is None or not creds.username or not creds.password:
                raise AuthError("no basic auth credentials")
            pair = f"{creds.username}:{creds.password}".encode()
            return f"Basic {base64.b64encode(pair).decode('ascii')}"
        return None

    def _creds(self) -> RegistryAuthLike | None:
        return self._credentials() if self._credentials is not None else None

    def _token(self, challenge: Challenge, deadline: float) -> str:
        """A cached bearer token for `repository:<GUN>:pull`, fetched when missing or expired."""
        realm = challenge.params.get("realm", "")
        service = challenge.params.get("service", "")
        scope = f"repository:{self._gun}:pull"
        key = (realm, service, scope)
        cached = self._tokens.get(key)
        if cached is not None and self._clock() < cached.expires:
            return cached.value
        _check_realm(realm)
        creds = self._creds()
        if creds is not None and creds.identitytoken:
            form = {
                "grant_type": "refresh_token",
                "refresh_token": creds.identitytoken,
                "client_id": "docker",
                "scope": scope,
            }
            if service:
                form["service"] = service
            reply = self._fetch(
                "POST",
                realm,
                label="token server",
                what="token",
                deadline=deadline,
                auth=None,
                max_bytes=_TOKEN_MAX_BYTES,
                retries=0,
                data=form,
            )
        else:
            query: dict[str, str] = {}
            if service:
                query["service"] = service
            query["scope"] = scope
            auth = None
            if creds is not None and creds.username and creds.password:
                query["account"] = creds.username
                pair = f"{creds.username}:{creds.password}".encode()
                auth = f"Basic {base64.b64encode(pair).decode('ascii')}"
            sep = "&" if urlsplit(realm).query else "?"
            reply = self._fetch(
                "GET",
                f"{realm}{sep}{urlencode(query)}",
                label="token server",
                what="token",
                deadline=deadline,
                auth=auth,
                max_bytes=_TOKEN_MAX_BYTES,
                retries=self._limits.retries,
            )
        token = self._parse_token(reply)
        self._tokens[key] = token
        return token.value

    def _parse_token(self, reply: _Reply) -> _Token:
        if reply.status in (401, 403):
            raise AuthError(
                f"token server refused the credentials: {reply.status}{_detail(reply.body)}"
            )
        if reply.status != 200:
            raise AuthError(f"token server failed: {reply.status}{_detail(reply.body)}")
        try:
            doc = json.loads(reply.body)
        except (ValueError, UnicodeDecodeError):
            raise AuthError("token server returned an answer that is not JSON") from None
        if not isinstance(doc, dict):
            raise AuthError("token server returned an answer that is not a JSON object")
        value = doc.get("access_token") or doc.get("token")
        if not isinstance(value, str) or not value:
            raise AuthError("token server returned no token")
        if not all(0x21 <= ord(char) < 0x7F for char in value):
            raise AuthError("token server returned a token with invalid characters")
        expires_in = doc.get("expires_in", 60)
        if isinstance(expires_in, bool) or not isinstance(expires_in, int | float):
            raise AuthError("token server returned an invalid expires_in")
        lifetime = max(float(expires_in), 60.0)
        remaining = lifetime
        issued = doc.get("issued_at")
        if issued is not None:
            try:
                when = dt.datetime.fromisoformat(str(issued))
                if when.tzinfo is None:
                    when = when.replace(tzinfo=dt.UTC)
            except ValueError:
                raise AuthError("token server returned an invalid issued_at") from None
            age = (dt.datetime.now(dt.UTC) - when).total_seconds()
            remaining = min(lifetime, lifetime - age)
        return _Token(value, self._clock() + remaining)

    # ------------------------------------------------------------ transport core

    def _session_deadline(self) -> float:
        return self._started + self._limits.total_timeout

    def _fetch(
        self,
        method: str,
        url: str,
        *,
        label: str,
        what: str,
        deadline: float,
        auth: str | None,
        max_bytes: int,
        retries: int,
        data: Mapping[str, str] | None = None,
    ) -> _Reply:
        """One logical request: redirects, retries (GET only) and bounded body reading.

        Returns the final status with its body: the whole body (≤ `max_bytes`, else
        LengthError) for a 200, at most `error_body_max_bytes` for anything else.
        """
        attempt = 0
        if method != "GET":
            retries = 0
        while True:
            self._check_time(deadline, what)
            try:
                reply = self._attempt(method, url, label, what, deadline, auth, max_bytes, data)
            except _Retryable as exc:
                if attempt >= retries or not self._backoff(attempt, None, deadline):
                    raise NetworkError(f"error contacting {label}: {exc}") from None
                attempt += 1
                continue
            if (reply.status == 429 or reply.status >= 500) and attempt < retries:
                if self._backoff(attempt, reply.retry_after, deadline):
                    attempt += 1
                    continue
            return reply.reply

    def _backoff(self, attempt: int, retry_after: float | None, deadline: float) -> bool:
        """Sleep before the next attempt; False when that would pass the deadline."""
        delay = self._limits.retry_backoff * (2**attempt)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self._limits.retry_after_cap))
        delay = min(delay, self._limits.retry_after_cap)
        if self._clock() + delay >= deadline:
            return False
        self._sleep(delay)
        return True

    def _check_time(self, deadline: float, what: str) -> None:
        if self._clock() >= deadline:
            raise NetworkError(self._slow_message(what))

    def _slow_message(self, what: str) -> str:
        if self._clock() >= self._session_deadline():
            return (
                f"slow retrieval of {what}: the trust update took longer than "
                f"{self._limits.total_timeout:g}s"
            )
        return f"slow retrieval of {what}: not complete within {self._limits.file_timeout:g}s"

    def _attempt(
        self,
        method: str,
        url: str,
        label: str,
        what: str,
        deadline: float,
        auth: str | None,
        max_bytes: int,
        data: Mapping[str, str] | None,
    ) -> _Attempt:
        """Follow redirects by hand for one attempt and read the final body."""
        current_url = url
        current_method = method
        current_data = data
        redirects = 0
        while True:
            remaining = deadline - self._clock()
            if remaining <= 0:
                raise NetworkError(self._slow_message(what))
            timeout = (
                min(self._limits.connect_timeout, remaining),
                min(self._limits.read_timeout, remaining),
            )
            headers = {"Authorization": auth} if auth else {}
            watch = _Watch()
            timer = threading.Timer(remaining, watch.cut)
            timer.daemon = True
            _local.watch = watch
            timer.start()
            try:
                response = self._send(
                    current_method, current_url, headers, current_data, timeout, label, what, watch
                )
                try:
                    status = response.status_code
                    if status in _REDIRECTS:
                        location = response.headers.get("Location")
                        redirects += 1
                        if not location:
                            raise NetworkError(f"{label} sent a redirect without a Location")
                        if redirects > self._limits.max_redirects:
                            raise NetworkError(
                                f"{label}: stopped after {self._limits.max_redirects} redirects"
                            )
                        target = urljoin(current_url, location)
                        if urlsplit(target).scheme.lower() != "https":
                            raise NetworkError(
                                f"{label} redirected to a non-https URL; refusing {target!r}"
                            )
                        if _origin(target) != _origin(current_url):
                            auth = None  # G08(b): never forward credentials to another host
                        if status == 303 or (status in (301, 302) and current_method == "POST"):
                            current_method, current_data = "GET", None
                        current_url = target
                        continue
                    if status == 200:
                        body = self._read_body(response, max_bytes, deadline, what, watch)
                    else:
                        body = self._read_error_body(response, deadline, watch)
                    retry_after = _retry_after(response.headers.get("Retry-After"))
                    raw_headers = response.raw.headers
                    challenges = list(raw_headers.getlist("WWW-Authenticate"))
                    reply = _Reply(
                        status,
                        body,
                        current_url,
                        challenges,
                        response.headers.get("Content-Type", ""),
                    )
                    return _Attempt(reply, retry_after)
                finally:
                    response.close()
            finally:
                timer.cancel()
                _local.watch = None

    def _send(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        data: Mapping[str, str] | None,
        timeout: tuple[float, float],
        label: str,
        what: str,
        watch: _Watch,
    ) -> requests.Response:
        proxies = requests.utils.get_environ_proxies(url)
        self._requests += 1
        try:
            prepared = self._session.prepare_request(
                requests.Request(
                    method,
                    url,
                    headers=dict(headers),
                    data=dict(data) if data is not None else None,
                )
            )
            # The adapter directly, not Session.send: with allow_redirects=False requests still
            # reads a redirect's whole body (unbounded) and keeps cookies; we want neither.
            return self._adapter.send(
                prepared, stream=True, timeout=timeout, verify=True, cert=None, proxies=proxies
            )
        except requests.exceptions.SSLError as exc:
            if watch.fired:
                raise NetworkError(self._slow_message(what)) from None
            raise NetworkError(
                f"TLS error talking to {label} at {_host(url)}: {_reason(exc)}"
            ) from None
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
            if watch.fired:
                raise NetworkError(self._slow_message(what)) from None
            raise _Retryable(_reason(exc)) from None
        except requests.exceptions.RequestException as exc:
            raise NetworkError(f"error contacting {label}: {_reason(exc)}") from None

    def _read_body(
        self,
        response: requests.Response,
        max_bytes: int,
        deadline: float,
        what: str,
        watch: _Watch,
    ) -> bytes:
        """Read the whole body, capped at `max_bytes` decoded bytes, within the deadline.

        Content-Length is only used to refuse early and to detect a short body; it is never
        trusted as the cap. Compression is decoded here, bounded, so a gzip bomb cannot expand
        beyond the cap (G07).
        """
        declared = _content_length(response)
        if declared is not None and declared > max_bytes:
            raise LengthError(
                f"{what} is {declared} bytes according to the server, more than the "
                f"{max_bytes}-byte limit"
            )
        decoder = _decoder(response.headers.get("Content-Encoding", ""), what)
        parts: list[bytes] = []
        total = 0
        received = 0
        raw = response.raw
        while True:
            chunk = self._read_chunk(raw, deadline, what, watch)
            if not chunk:
                break
            received += len(chunk)
            if decoder is not None:
                # max_length stops a bomb inside zlib: at most one byte past the cap is made.
                chunk = decoder.decompress(chunk, max_bytes + 1 - total)
            total += len(chunk)
            if total > max_bytes:
                raise LengthError(f"{what} is longer than the {max_bytes}-byte limit")
            parts.append(chunk)
        if declared is not None and received != declared:
            raise NetworkError(
                f"{what}: incomplete answer ({received} of {declared} bytes received)"
            )
        if decoder is not None:
            if not decoder.eof:
                raise NetworkError(f"{what}: compressed body is truncated")
            tail = decoder.flush()
            total += len(tail)
            if total > max_bytes:
                raise LengthError(f"{what} is longer than the {max_bytes}-byte limit")
            parts.append(tail)
        return b"".join(parts)

    def _read_chunk(self, raw: Any, deadline: float, what: str, watch: _Watch) -> bytes:
        """At most one socket read, with its timeout shrunk to what is left of the deadline."""
        remaining = deadline - self._clock()
        if remaining <= 0 or watch.fired:
            raise NetworkError(self._slow_message(what))
        sock = getattr(getattr(raw, "connection", None), "sock", None)
        if sock is not None:
            try:
                sock.settimeout(min(self._limits.read_timeout, remaining))
            except OSError:
                pass
        try:
            data = raw.read1(_CHUNK, decode_content=False)
        except (urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
            if watch.fired or self._clock() >= deadline:
                raise NetworkError(self._slow_message(what)) from None
            if isinstance(exc, urllib3.exceptions.SSLError | ssl.SSLError):
                raise NetworkError(f"TLS error while reading {what}: {exc}") from None
            raise _Retryable(f"connection broken while reading {what}: {_reason(exc)}") from None
        if watch.fired:
            raise NetworkError(self._slow_message(what))
        return bytes(data) if data else b""

    def _read_error_body(
        self, response: requests.Response, deadline: float, watch: _Watch
    ) -> bytes:
        """At most `error_body_max_bytes` of an error answer; failures here are not interesting."""
        cap = self._limits.error_body_max_bytes
        parts: list[bytes] = []
        total = 0
        try:
            while total < cap:
                chunk = self._read_chunk(response.raw, deadline, "error answer", watch)
                if not chunk:
                    break
                parts.append(chunk[: cap - total])
                total += len(chunk)
        except (NetworkError, _Retryable):
            pass
        return b"".join(parts)


@dataclass
class _Attempt:
    reply: _Reply
    retry_after: float | None

    @property
    def status(self) -> int:
        return self.reply.status


class _Retryable(Exception):
    """Internal: a connection failure or timeout that a GET may try again."""


def _check_realm(realm: str) -> None:
    """A realm must be https; http only on a literal loopback host (test stacks, G11)."""
    try:
        parts = urlsplit(realm)
        host = parts.hostname or ""
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise AuthError(f"invalid token realm {realm!r}") from None
    if not host or parts.username is not None or "@" in parts.netloc:
        raise AuthError(f"invalid token realm {realm!r}")
    scheme = parts.scheme.lower()
    if scheme == "https":
        return
    if scheme == "http" and _is_loopback_literal(host):
        return
    raise AuthError(f"refusing token realm {realm!r}: it must be https (http only on loopback)")


def _content_length(response: requests.Response) -> int | None:
    value = response.headers.get("Content-Length")
    if value is None:
        return None
    value = value.strip()
    if not value.isdigit():
        raise NetworkError(f"trust server sent an invalid Content-Length {value[:40]!r}")
    return int(value)


def _decoder(encoding: str, what: str) -> Any:
    """A bounded decompressor for the Content-Encoding the server used anyway, or None."""
    name = encoding.strip().lower()
    if name in ("", "identity"):
        return None
    if name in ("gzip", "x-gzip"):
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if name == "deflate":
        return zlib.decompressobj()
    raise NetworkError(f"{what}: unsupported Content-Encoding {name[:40]!r}")


def _detail(body: bytes) -> str:
    """A short, printable hint from an error body (docker's `errors[0].detail` when present)."""
    try:
        doc = json.loads(body)
        detail = doc["errors"][0]["detail"]
        text = detail if isinstance(detail, str) else json.dumps(detail)
    except (ValueError, KeyError, IndexError, TypeError):
        return ""
    text = "".join(char for char in text if char.isprintable())[:200]
    return f" ({text})" if text else ""


def _host(url: str) -> str:
    return urlsplit(url).netloc


def _reason(exc: BaseException) -> str:
    """The innermost useful message of a requests/urllib3 exception chain."""
    text = str(exc)
    inner: BaseException | None = exc
    while inner is not None and inner.args and isinstance(inner.args[0], BaseException):
        inner = inner.args[0]
        text = str(inner)
    reason = getattr(inner, "reason", None)
    if reason is not None:
        text = str(reason)
    return text[:300]
