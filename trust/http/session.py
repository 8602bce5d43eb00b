"""`HttpsSession`: bounded GETs under one https base URL, with docker's auth handshake.

Everything a hostile or broken server can do to a client *before* signatures are checked is
handled here (attacks.md group G): TLS is always verified (`trust.http.tls`), bodies are capped
while they are read (never trusting headers; decoded bytes counted should a server compress
anyway), every request is bounded by connect/read timeouts, a per-file wall-clock deadline
(`trust.http.watchdog`) and a whole-session budget, GETs are retried on connection failures,
429 and 5xx, redirects are followed by hand (https only, Authorization dropped on a host change).

Authentication is lazy (issue 13): no `/v2/` ping. A request goes out with whatever the session
already holds (a token from this run or from the `TokenStore`); a 401 under `Auth.prefix` is
answered once: `Bearer` by docker's token flow for `Auth.scope` (credentials only to a realm the
`RealmPolicy` allows), `Basic` with the registry's username and password. A stored token that is
refused is forgotten and the handshake runs again. 401/403 otherwise come back to the caller.

The one public class is used by the Notary client (`trust.notary.remote`) and by the TUF
fetcher (`trust.tufsource`) alike; bodies are read by `trust.http.body`.

Longer than 500 lines because the request core (caps, deadlines, retries, redirects) and
docker's token handshake share one state per request; the pure parts (challenge parser, TLS
files, body reading, the realm rule and token store, failure wording) are already their own
modules.
"""

from __future__ import annotations

import base64
import datetime as dt
import http.cookiejar
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar
from urllib.parse import urlencode, urljoin, urlsplit

import requests
import requests.utils

from trust.errors import AuthError, InputError, NetworkError, TrustpullError
from trust.http.auth import (
    BASIC_MARKER_SECONDS,
    TOKEN_MAX_BYTES,
    RealmPolicy,
    StoredToken,
    TokenStore,
    check_realm_url,
    credential_fingerprint,
    fingerprint_matches,
    parse_token,
)
from trust.http.body import BodyReader, RetryableError
from trust.http.challenge import Challenge, parse_challenges
from trust.http.reasons import describe, raw_reason
from trust.http.tls import tls_context
from trust.http.watchdog import Watch, shared_adapter, watch
from trust.settings import Limits, validate_trust_server_url
from trust.version import __version__

__all__ = ["Auth", "Credentials", "HttpsSession", "Reply"]

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
#: Prepared GETs a session keeps (metadata files, token realms): a few dozen at most.
_PREPARED_MAX = 64


class Credentials(Protocol):
    """What `trust.credentials.RegistryAuth` offers; fields are "" when absent."""

    @property
    def username(self) -> str: ...

    @property
    def password(self) -> str: ...

    @property
    def identitytoken(self) -> str: ...


@dataclass(frozen=True)
class Auth:
    """How a session may authenticate. The default sends nothing, ever."""

    #: Called at most once, when a challenge asks for credentials (a helper may run).
    credentials: Callable[[], Credentials | None] | None = None
    #: The bearer scope (`repository:<GUN>:pull`); None: Bearer challenges are not answered.
    scope: str | None = None
    #: Authorization is only sent to URLs on the base URL's origin under this path prefix;
    #: None: under the base URL's own path.
    prefix: str | None = None
    realms: RealmPolicy = field(default_factory=RealmPolicy)
    #: Where tokens are kept between runs; None: for this session only.
    store: TokenStore | None = None


@dataclass(frozen=True)
class Reply:
    """A final answer: the whole body (≤ `max_bytes`) for a 200, a capped prefix otherwise."""

    status: int
    body: bytes
    url: str
    challenges: tuple[Challenge, ...] = ()
    #: True when an Authorization header went out with the final request.
    authenticated: bool = False


@dataclass
class _Raw:
    status: int
    body: bytes
    url: str
    challenges: list[str]
    retry_after: float | None


@dataclass
class _Held:
    """The Authorization this session holds, and where it came from."""

    header: str
    expires: float  # session clock; inf for Basic
    stored: bool = False
    #: A fresh token, kept for the next run once a request with it was not refused.
    keep: StoredToken | None = None


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme.lower(), parts.netloc.lower()


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


_P = ParamSpec("_P")
_T = TypeVar("_T")


def _auth_locked(
    method: Callable[Concatenate[HttpsSession, _P], _T],
) -> Callable[Concatenate[HttpsSession, _P], _T]:
    """Run a method that reads or changes the session's auth state under its auth lock."""

    def locked(self: HttpsSession, /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        with self._auth_lock:
            return method(self, *args, **kwargs)

    return locked


def _basic(username: str, password: str) -> str:
    pair = f"{username}:{password}".encode()
    return f"Basic {base64.b64encode(pair).decode('ascii')}"


class HttpsSession:
    """One https server (a Notary server, a TUF repository): bounded GETs with auth.

    Public API: `get(url, max_bytes=..., what=...) -> Reply`, `base_url`, `request_count`,
    `close()` (also a context manager). Errors: `NetworkError` (unreachable, TLS, slow, cut
    short, retries exhausted), `LengthError` (a body over its cap), `AuthError` (a handshake
    that failed or was refused), `InputError` (a URL outside the base). Statuses other than
    200 are returned, not raised: the caller knows what a 404 means for it.

    Thread-safe: several threads may `get` at once (a Notary update's concurrent delegation
    downloads); the request counter and the auth state (held token, stored token, credentials,
    a challenge's answer) are changed under locks, so one token handshake runs at a time.
    """

    def __init__(
        self,
        base_url: str,
        *,
        limits: Limits,
        docker_config: Path,
        auth: Auth | None = None,
        label: str = "trust server",
        user_agent: str = f"trustpull/{__version__}",
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._base = validate_trust_server_url(base_url)
        self._limits = limits
        self._auth = auth or Auth()
        self._label = label
        self._clock = clock
        self._sleep = sleep
        self._wall = wall
        self._docker_config = docker_config
        self._origin = _origin(self._base)
        prefix = self._auth.prefix
        self._prefix = prefix if prefix is not None else urlsplit(self._base).path + "/"
        context = tls_context(docker_config, urlsplit(self._base).netloc)
        self._session = requests.Session()
        # No env: that would let ~/.netrc add credentials and REQUESTS_CA_BUNDLE swap our CAs.
        self._session.trust_env = False
        self._session.cookies.set_policy(_NoCookies())
        # Shared by every session under this TLS context (connections reused across
        # repositories); requests go to it directly (`_send`), so it is not mounted, and
        # closing this session leaves it open for the others.
        self._adapter = shared_adapter(context)
        self._session.headers.clear()
        self._session.headers.update(
            {"User-Agent": user_agent, "Accept-Encoding": "identity", "Accept": "*/*"}
        )
        self._requests = 0
        #: The environment's proxies per origin, read once per session (a kept session in the
        #: proxy would otherwise scan the environment on every request).
        self._proxies: dict[tuple[str, str], dict[str, str]] = {}
        #: GETs as requests prepared them, by (url, headers): a kept session asks for the same
        #: file again and again, and preparing (header merging, URL checks) is most of the
        #: client-side cost of a request. Cookies are refused, so nothing else goes in.
        self._prepared: dict[tuple[str, str, tuple[tuple[str, str], ...]], Any] = {}
        self._count_lock = threading.Lock()
        self._auth_lock = threading.RLock()
        self._held: _Held | None = None
        self._store_checked = False
        self._creds_loaded = False
        self._creds: Credentials | None = None
        self._creds_error: TrustpullError | None = None
        self._started = clock()
        self._body = BodyReader(limits, clock, self._slow_message)

    # -------------------------------------------------------------- public API

    @property
    def base_url(self) -> str:
        """The validated base URL (no trailing slash)."""
        return self._base

    @property
    def request_count(self) -> int:
        """HTTP requests sent so far (tokens, redirects and retries included)."""
        return self._requests

    def close(self) -> None:
        self._session.close()

    def renew(self) -> None:
        """A kept session starts another run: the whole-session budget counts from now
        (connections and the held token stay)."""
        self._started = self._clock()

    def __enter__(self) -> HttpsSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def get(self, url: str, *, max_bytes: int, what: str | None = None) -> Reply:
        """GET `url` (on the base URL's origin, under its path) with auth, caps and deadlines."""
        if _origin(url) != self._origin or not urlsplit(url).path.startswith(
            urlsplit(self._base).path + "/"
        ):
            raise InputError(f"refusing to fetch {url!r}: outside {self._base}")
        what = what or url[len(self._base) + 1 :]
        deadline = min(self._clock() + self._limits.file_timeout, self._session_deadline())
        protected = urlsplit(url).path.startswith(self._prefix)
        held = self._current_auth() if protected else None
        raw = self._fetch("GET", url, what, deadline, held.header if held else None, max_bytes)
        if protected and held is not None and held.stored and raw.status in (401, 403):
            # A token kept from an earlier run and refused now (revoked, another account):
            # forget it and authenticate afresh, once.
            self._forget_stored()
            held = None
            if raw.status == 403:
                raw = self._fetch("GET", url, what, deadline, None, max_bytes)
        if protected and raw.status == 401 and held is None:
            answer = self._answer(parse_challenges(raw.challenges), deadline)
            if answer is not None:
                held = answer
                raw = self._fetch("GET", url, what, deadline, held.header, max_bytes)
        if held is not None and held.keep is not None and raw.status not in (401, 403):
            # Kept only once the server took it: a refused token is never written.
            with self._auth_lock:
                if self._auth.store is not None and self._auth.scope is not None and held.keep:
                    self._auth.store.save(self._base, self._auth.scope, held.keep)
                held.keep = None
        return Reply(
            raw.status,
            raw.body,
            raw.url,
            tuple(parse_challenges(raw.challenges)),
            authenticated=held is not None,
        )

    # ----------------------------------------------------------------- auth

    @_auth_locked
    def _current_auth(self) -> _Held | None:
        held = self._held
        if held is not None and self._clock() < held.expires:
            return held
        self._held = None
        scope, store = self._auth.scope, self._auth.store
        if store is not None and scope is not None and not self._store_checked:
            self._store_checked = True
            kept = store.load(self._base, scope)
            if kept is not None and not self._same_credentials(kept.fingerprint):
                store.forget(self._base, scope)
                kept = None
            if kept is not None:
                left = kept.expires_at - self._wall()
                header = f"Bearer {kept.value}"
                if kept.scheme == "basic":
                    creds = self._credentials()
                    if creds is None or not creds.username or not creds.password:
                        return None
                    header = _basic(creds.username, creds.password)
                self._held = _Held(header, self._clock() + left, stored=True)
        return self._held

    def _fingerprint(self) -> str:
        creds = self._credentials()
        if creds is None:
            return credential_fingerprint("", "", "")
        return credential_fingerprint(creds.username, creds.password, creds.identitytoken)

    def _same_credentials(self, fingerprint: str) -> bool:
        creds = self._credentials()
        if creds is None:
            return fingerprint_matches(fingerprint, "", "", "")
        return fingerprint_matches(fingerprint, creds.username, creds.password, creds.identitytoken)

    @_auth_locked
    def _forget_stored(self) -> None:
        if self._auth.store is not None and self._auth.scope is not None:
            self._auth.store.forget(self._base, self._auth.scope)
        self._held = None

    def _credentials(self) -> Credentials | None:
        """The credentials source, asked once. When it fails (a credential helper that exits
        with an error, a malformed config), every later request of this session fails with
        the same error: never as if there were no credentials (which would send the request
        anonymously and report the server's 401 instead of the helper's message)."""
        if self._creds_error is not None:
            raise self._creds_error.fresh()
        if not self._creds_loaded:
            source = self._auth.credentials
            try:
                self._creds = source() if source is not None else None
            except TrustpullError as error:
                self._creds_error = error
                raise
            self._creds_loaded = True
        return self._creds

    @_auth_locked
    def _answer(self, challenges: list[Challenge], deadline: float) -> _Held | None:
        """The Authorization for a 401's challenges, or None when there is nothing to answer."""
        bearer = next((c for c in challenges if c.scheme == "bearer"), None)
        if bearer is not None and self._auth.scope is not None:
            self._held = self._bearer(bearer, self._auth.scope, deadline)
            return self._held
        basic = next((c for c in challenges if c.scheme == "basic"), None)
        if basic is not None and self._auth.credentials is not None:
            creds = self._credentials()
            if creds is None or not creds.username or not creds.password:
                raise AuthError("no basic auth credentials")
            keep = None
            if self._auth.store is not None and self._auth.scope is not None:
                expires_at = self._wall() + BASIC_MARKER_SECONDS
                keep = StoredToken("", "", "-", expires_at, self._fingerprint(), scheme="basic")
            self._held = _Held(_basic(creds.username, creds.password), float("inf"), keep=keep)
            return self._held
        return None

    def _bearer(self, challenge: Challenge, scope: str, deadline: float) -> _Held:
        """docker's token flow (dct.md §1.5) for `scope`, credentials only to allowed realms."""
        realm = challenge.params.get("realm", "")
        service = challenge.params.get("service", "")
        check_realm_url(realm)
        creds = self._credentials()
        has_secret = creds is not None and bool(
            creds.identitytoken or (creds.username and creds.password)
        )
        if has_secret and not self._auth.realms.allows(realm):
            raise self._auth.realms.refusal(realm, self._base)
        if creds is not None and creds.identitytoken:
            form = {
                "grant_type": "refresh_token",
                "refresh_token": creds.identitytoken,
                "client_id": "docker",
                "scope": scope,
            }
            if service:
                form["service"] = service
            raw = self._fetch(
                "POST", realm, "token", deadline, None, TOKEN_MAX_BYTES, data=form, label="token"
            )
        else:
            query: dict[str, str] = {}
            if service:
                query["service"] = service
            query["scope"] = scope
            auth = None
            if creds is not None and creds.username and creds.password:
                query["account"] = creds.username
                auth = _basic(creds.username, creds.password)
            sep = "&" if urlsplit(realm).query else "?"
            raw = self._fetch(
                "GET",
                f"{realm}{sep}{urlencode(query)}",
                "token",
                deadline,
                auth,
                TOKEN_MAX_BYTES,
                label="token",
            )
        token = parse_token(raw.status, raw.body)
        keep = None
        if self._auth.store is not None:
            expires_at = self._wall() + token.lifetime
            keep = StoredToken(realm, service, token.value, expires_at, self._fingerprint())
        return _Held(f"Bearer {token.value}", self._clock() + token.lifetime, keep=keep)

    # ------------------------------------------------------------ transport core

    def _session_deadline(self) -> float:
        return self._started + self._limits.total_timeout

    def _fetch(
        self,
        method: str,
        url: str,
        what: str,
        deadline: float,
        auth: str | None,
        max_bytes: int,
        *,
        data: Mapping[str, str] | None = None,
        label: str | None = None,
    ) -> _Raw:
        """One logical request: redirects, retries (GET only) and bounded body reading."""
        label = "token server" if label == "token" else self._label
        retries = self._limits.retries if method == "GET" else 0
        attempt = 0
        while True:
            self._check_time(deadline, what)
            try:
                raw = self._attempt(method, url, label, what, deadline, auth, max_bytes, data)
            except RetryableError as exc:
                if attempt >= retries or not self._backoff(attempt, None, deadline):
                    raise NetworkError(
                        f"error contacting {label}: {exc.words}", detail=exc.detail
                    ) from None
                attempt += 1
                continue
            if (raw.status == 429 or raw.status >= 500) and attempt < retries:
                if self._backoff(attempt, raw.retry_after, deadline):
                    attempt += 1
                    continue
            return raw

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
    ) -> _Raw:
        """Follow redirects by hand for one attempt and read the final body."""
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
            with watch(remaining) as current:
                response = self._send(method, url, headers, data, timeout, label, what, current)
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
                        target = urljoin(url, location)
                        if urlsplit(target).scheme.lower() != "https":
                            raise NetworkError(
                                f"{label} redirected to a non-https URL; refusing {target!r}"
                            )
                        if _origin(target) != _origin(url):
                            auth = None  # G08(b): never forward credentials to another host
                        if status == 303 or (status in (301, 302) and method == "POST"):
                            method, data = "GET", None
                        url = target
                        continue
                    if status == 200:
                        body = self._body.read(response, max_bytes, deadline, what, current)
                    else:
                        body = self._body.read_error(response, deadline, current)
                    return _Raw(
                        status,
                        body,
                        url,
                        list(response.raw.headers.getlist("WWW-Authenticate")),
                        _retry_after(response.headers.get("Retry-After")),
                    )
                finally:
                    response.close()

    def _send(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        data: Mapping[str, str] | None,
        timeout: tuple[float, float],
        label: str,
        what: str,
        current: Watch,
    ) -> requests.Response:
        origin = _origin(url)
        proxies = self._proxies.get(origin)
        if proxies is None:
            proxies = self._proxies[origin] = requests.utils.get_environ_proxies(url)
        with self._count_lock:
            self._requests += 1
        key = (method, url, tuple(sorted(headers.items())))
        try:
            prepared = self._prepared.get(key) if data is None else None
            if prepared is None:
                prepared = self._session.prepare_request(
                    requests.Request(
                        method,
                        url,
                        headers=dict(headers),
                        data=dict(data) if data is not None else None,
                    )
                )
                if data is None:
                    if len(self._prepared) >= _PREPARED_MAX:
                        self._prepared.clear()
                    self._prepared[key] = prepared
            prepared = prepared.copy()
            # The adapter directly, not Session.send: with allow_redirects=False requests still
            # reads a redirect's whole body (unbounded) and keeps cookies; we want neither.
            return self._adapter.send(
                prepared, stream=True, timeout=timeout, verify=True, cert=None, proxies=proxies
            )
        except requests.exceptions.SSLError as exc:
            if current.fired:
                raise NetworkError(self._slow_message(what)) from None
            raise NetworkError(
                f"error contacting {label}: {describe(exc, url, self._docker_config)}",
                detail=raw_reason(exc),
            ) from None
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
            if current.fired:
                raise NetworkError(self._slow_message(what)) from None
            raise RetryableError(describe(exc, url, self._docker_config), raw_reason(exc)) from None
        except requests.exceptions.RequestException as exc:
            raise NetworkError(
                f"error contacting {label}: {describe(exc, url, self._docker_config)}",
                detail=raw_reason(exc),
            ) from None
