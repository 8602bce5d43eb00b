"""The docker token handshake's pieces: where credentials may go, token answers, a token store.

* `RealmPolicy` (issue 11 item 8): a trust server's 401 challenge names the token realm, so the
  server would otherwise decide where the registry password goes. Credentials are sent only to
  a realm on the trust server's own host, the registry's host, a realm the registry is known to
  use (Docker Hub: `auth.docker.io`), or one listed in the config (`[auth] realms`). docker
  sends them to any https realm.
* `parse_token`: docker's token answer (`token` or `access_token`, lifetime
  `max(expires_in, 60)` s from `issued_at`; dct.md §1.5), validated strictly.
* `TokenStore`: bearer tokens kept between runs (issue 13: one request per warm resolve), one
  file per (server origin, scope), mode 0600 in a 0700 directory, used only until they expire.
  A token is a pull grant for one repository on one server, never a password; it is used only
  with the credentials it was issued for (a salted hash of them is kept beside it); a store that
  cannot be read or written is ignored (the handshake then runs again).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import hmac
import ipaddress
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from trust.errors import AuthError

__all__ = [
    "BASIC_MARKER_SECONDS",
    "TOKEN_MAX_BYTES",
    "WELL_KNOWN_REALM_HOSTS",
    "RealmPolicy",
    "StoredToken",
    "Token",
    "TokenStore",
    "check_realm_url",
    "credential_fingerprint",
    "error_detail",
    "fingerprint_matches",
    "is_loopback_literal",
    "parse_token",
]

#: Token realm hosts a registry is known to use, by registry domain (docker's reference domain).
WELL_KNOWN_REALM_HOSTS: Mapping[str, frozenset[str]] = {
    "docker.io": frozenset({"auth.docker.io", "index.docker.io", "registry-1.docker.io"}),
}
#: A token endpoint answer is a small JSON document; anything bigger is refused.
TOKEN_MAX_BYTES = 256 * 1024
#: How long "this server wants Basic auth" is remembered (no secret is stored for it).
BASIC_MARKER_SECONDS = 24 * 3600.0
#: A stored token is not used in its last seconds (clock skew, the request's own duration).
_STORE_MARGIN = 10.0
_STORE_MAX_BYTES = 64 * 1024


def is_loopback_literal(host: str) -> bool:
    """127.0.0.0/8, ::1 or "localhost", by text only: no DNS lookup (G11)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_realm_url(realm: str) -> None:
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
    if scheme == "http" and is_loopback_literal(host):
        return
    raise AuthError(f"refusing token realm {realm!r}: it must be https (http only on loopback)")


def _origin_and_path(url: str) -> tuple[str, str, int | None, str]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    port = parts.port or (443 if scheme == "https" else 80)
    return scheme, (parts.hostname or "").lower(), port, parts.path or "/"


@dataclass(frozen=True)
class RealmPolicy:
    """Which token realms may receive the registry's credentials."""

    #: Host names (lower case) whose realms may receive credentials, any port.
    hosts: frozenset[str] = frozenset()
    #: Configured realm URLs (`[auth] realms`): same scheme, host and port, path under theirs.
    realms: tuple[str, ...] = ()
    #: Named in the refusal: where the user adds a realm.
    config_hint: str = "[auth] realms in trustpull's config file"

    @classmethod
    def for_server(
        cls,
        server_url: str,
        registry_domain: str | None,
        configured: Iterable[str] = (),
        *,
        config_hint: str | None = None,
    ) -> RealmPolicy:
        """The trust server's host, the registry's host and its well-known realms, `configured`."""
        hosts = {(urlsplit(server_url).hostname or "").lower()}
        if registry_domain:
            hosts.add((urlsplit("//" + registry_domain).hostname or "").lower())
            hosts |= WELL_KNOWN_REALM_HOSTS.get(registry_domain, frozenset())
        hosts.discard("")
        return cls(
            frozenset(hosts),
            tuple(configured),
            config_hint or "[auth] realms in trustpull's config file",
        )

    def allows(self, realm: str) -> bool:
        try:
            scheme, host, port, path = _origin_and_path(realm)
        except ValueError:
            return False
        if host in self.hosts:
            return True
        for entry in self.realms:
            try:
                e_scheme, e_host, e_port, e_path = _origin_and_path(entry)
            except ValueError:
                continue
            if (scheme, host, port) != (e_scheme, e_host, e_port):
                continue
            if path == e_path or path.startswith(e_path.rstrip("/") + "/") or e_path == "/":
                return True
        return False

    def refusal(self, realm: str, server: str) -> AuthError:
        host = urlsplit(realm).hostname or realm
        return AuthError(
            f"refusing to send registry credentials to the token realm {realm} named by "
            f"{server}: {host} is neither the trust server's nor the registry's host",
            hint=f"if you trust {host} with these credentials, add {realm!r} to {self.config_hint}",
        )


@dataclass(frozen=True)
class Token:
    value: str
    #: Seconds the token stays valid, counted from when the answer arrived.
    lifetime: float


def _printable(text: str) -> str:
    return "".join(char for char in text if char.isprintable())[:200]


def error_detail(body: bytes) -> str:
    """A short, printable hint from an error body (docker's `errors[0].detail` when present)."""
    try:
        doc = json.loads(body)
        detail = doc["errors"][0]["detail"]
        text = detail if isinstance(detail, str) else json.dumps(detail)
    except (ValueError, KeyError, IndexError, TypeError):
        return ""
    text = _printable(text)
    return f" ({text})" if text else ""


def parse_token(status: int, body: bytes) -> Token:
    """The token of a token endpoint's answer, or AuthError."""
    if status in (401, 403):
        raise AuthError(f"token server refused the credentials: {status}{error_detail(body)}")
    if status != 200:
        raise AuthError(f"token server failed: {status}{error_detail(body)}")
    try:
        doc = json.loads(body)
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
    return Token(value, remaining)


@dataclass(frozen=True)
class StoredToken:
    realm: str
    service: str
    value: str
    #: Wall-clock (epoch seconds) end of validity.
    expires_at: float
    #: `credential_fingerprint` of the credentials the token was issued for ("" when unknown).
    fingerprint: str = ""
    #: "bearer", or "basic": the server asked for Basic auth (the value is a placeholder; the
    #: password itself is never stored, it is sent from the credentials again).
    scheme: str = "bearer"


def credential_fingerprint(
    username: str, password: str, identitytoken: str, salt: bytes | None = None
) -> str:
    """`<salt hex>:<sha256(salt, credentials) hex>`: a kept token is used only with the same
    credentials it was issued for (another user, a changed password: the handshake runs again).
    Salted per token so that equal credentials do not show as equal across files."""
    salt = salt if salt is not None else os.urandom(16)
    # Each field length-prefixed: any character (NUL included) may be in one, so a plain
    # separator would give two different credentials one fingerprint.
    fields = (part.encode("utf-8", "surrogatepass") for part in (username, password, identitytoken))
    digest = hashlib.sha256(
        salt + b"".join(len(part).to_bytes(8, "big") + part for part in fields)
    ).hexdigest()
    return f"{salt.hex()}:{digest}"


def fingerprint_matches(fingerprint: str, username: str, password: str, identity: str) -> bool:
    salt_hex, _, _ = fingerprint.partition(":")
    try:
        salt = bytes.fromhex(salt_hex)
    except ValueError:
        return False
    expected = credential_fingerprint(username, password, identity, salt)
    return bool(salt) and hmac.compare_digest(expected, fingerprint)


class TokenStore:
    """Bearer tokens between runs: `<directory>/<sha256(origin, scope)>.json`, mode 0600."""

    def __init__(self, directory: Path, *, wall: Callable[[], float] = time.time) -> None:
        self.directory = directory
        self._wall = wall

    def _path(self, origin: str, scope: str) -> Path:
        key = hashlib.sha256(json.dumps([origin, scope]).encode()).hexdigest()[:40]
        return self.directory / f"{key}.json"

    def load(self, origin: str, scope: str) -> StoredToken | None:
        """The unexpired token kept for `scope` on `origin`, or None (anything odd is ignored)."""
        path = self._path(origin, scope)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
        except OSError:
            return None
        try:
            with os.fdopen(fd, "rb") as handle:
                data = handle.read(_STORE_MAX_BYTES + 1)
            doc = json.loads(data)
            token = StoredToken(
                realm=doc["realm"],
                service=doc["service"],
                value=doc["token"],
                expires_at=float(doc["expires_at"]),
                fingerprint=doc.get("credentials", ""),
                scheme=doc.get("scheme", "bearer"),
            )
            valid = (
                len(data) <= _STORE_MAX_BYTES
                and doc.get("origin") == origin
                and doc.get("scope") == scope
                and token.scheme in ("bearer", "basic")
                and all(
                    isinstance(v, str)
                    for v in (token.realm, token.service, token.value, token.fingerprint)
                )
                and all(0x21 <= ord(char) < 0x7F for char in token.value)
            )
        except (OSError, ValueError, KeyError, TypeError):
            valid = False
        if not valid:
            self.forget(origin, scope)
            return None
        if self._wall() >= token.expires_at - _STORE_MARGIN:
            self.forget(origin, scope)
            return None
        return token

    def save(self, origin: str, scope: str, token: StoredToken) -> None:
        """Keep `token` for the next run; failures are silent (the handshake just runs again)."""
        doc = {
            "origin": origin,
            "scope": scope,
            "realm": token.realm,
            "service": token.service,
            "token": token.value,
            "expires_at": token.expires_at,
            "credentials": token.fingerprint,
            "scheme": token.scheme,
        }
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd, temp = tempfile.mkstemp(dir=self.directory, prefix=".token-", suffix=".tmp")
        except OSError:
            return
        try:
            with os.fdopen(fd, "w") as handle:  # mkstemp: mode 0600, O_EXCL
                json.dump(doc, handle)
            os.replace(temp, self._path(origin, scope))
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(temp)

    def forget(self, origin: str, scope: str) -> None:
        with contextlib.suppress(OSError):
            os.unlink(self._path(origin, scope))
