"""Registry credentials, found the way the docker CLI finds them (dct.md §1.10).

The same credentials go to the engine (`X-Registry-Auth`) and, later, to the trust server's token
handshake, so they are resolved in one place. They are looked up by the *exact* registry of the
canonical reference and never borrowed from another host (attacks.md J07).

Order: `DOCKER_AUTH_CONFIG` (its `auths`), then `$DOCKER_CONFIG/config.json`: a credential
helper (`credHelpers[key]`, else `credsStore`) if one is configured, else `auths[key]`.
As in docker, a configured helper is authoritative for its registry: when it has no
credentials the answer is anonymous, not a fallback to `auths`.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trust.errors import AuthError, ConfigError

__all__ = [
    "DOCKER_HUB_KEY",
    "CredentialSource",
    "RegistryAuth",
    "credential_key",
    "from_engine_header",
    "from_registry_config",
    "resolve_registry_auth",
    "store_registry_auth",
]

logger = logging.getLogger(__name__)

#: The credential key docker uses for Docker Hub (the "official index").
DOCKER_HUB_KEY = "https://index.docker.io/v1/"
_HUB_DOMAINS = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
#: A credential helper's username meaning "the secret is an identity token".
_TOKEN_USERNAME = "<token>"  # noqa: S105 (a protocol marker, not a secret)
_HELPER_TIMEOUT = 60.0


@dataclass(frozen=True)
class RegistryAuth:
    """Credentials for one registry; secrets are kept out of `repr` so they never hit logs."""

    username: str = ""
    password: str = field(default="", repr=False)
    identitytoken: str = field(default="", repr=False)
    serveraddress: str = ""

    @property
    def is_anonymous(self) -> bool:
        return not (self.username or self.password or self.identitytoken)

    def to_engine_header(self) -> str:
        """`X-Registry-Auth`: URL-safe base64 *with* padding of docker's AuthConfig JSON.

        Keys are `omitempty` and in the Go struct's order, so the bytes match the docker CLI's;
        anonymous is `{}`, i.e. `e30=`.
        """
        fields = (
            ("username", self.username),
            ("password", self.password),
            ("serveraddress", self.serveraddress),
            ("identitytoken", self.identitytoken),
        )
        payload = {key: value for key, value in fields if value}
        text = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
        return base64.urlsafe_b64encode(text.encode("utf-8")).decode("ascii")


#: Credentials for one registry domain (exactly that registry's, or None for anonymous). The
#: CLI's source is the docker configuration; the proxy's, the headers of the client's request.
CredentialSource = Callable[[str], "RegistryAuth | None"]


def credential_key(registry_domain: str) -> str:
    """The config.json / helper key for a registry: Docker Hub's legacy URL, else host[:port]."""
    if registry_domain in _HUB_DOMAINS:
        return DOCKER_HUB_KEY
    return registry_domain


def _hostname(key: str) -> str:
    """docker's `ConvertToHostname`: drop an http(s) scheme and anything after the host."""
    for scheme in ("http://", "https://"):
        if key.startswith(scheme):
            key = key[len(scheme) :]
            break
    return key.split("/", 1)[0]


def _registry_host(key: str) -> str:
    """One spelling per registry: a key or domain as a host, Docker Hub's aliases as one."""
    return _hostname(credential_key(_hostname(key)))


def _decode_auth(value: str, where: str) -> tuple[str, str]:
    """An `auth` field: std base64 of `user:password`; NULs trimmed from the password."""
    try:
        decoded = base64.b64decode(value, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise ConfigError(f"{where}: invalid auth configuration (auth is not base64)") from None
    user, sep, password = decoded.partition(":")
    if not sep:
        raise ConfigError(f"{where}: invalid auth configuration (auth lacks user:password)")
    return user, password.strip("\x00")


def _entry_auth(entry: Any, key: str, where: str) -> RegistryAuth | None:
    """One `auths` entry as RegistryAuth; None when it carries no credentials."""
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: auths[{key!r}] must be an object")
    for name in ("auth", "username", "password", "identitytoken"):
        if not isinstance(entry.get(name, ""), str):
            raise ConfigError(f"{where}: auths[{key!r}].{name} must be a string")
    username: str = entry.get("username", "")
    password: str = entry.get("password", "")
    if entry.get("auth"):
        username, password = _decode_auth(entry["auth"], f"{where}: auths[{key!r}]")
    auth = RegistryAuth(
        username=username,
        password=password,
        identitytoken=entry.get("identitytoken", ""),
        serveraddress=key,
    )
    return None if auth.is_anonymous else auth


def _from_auths(doc: Mapping[str, Any], key: str, where: str) -> RegistryAuth | None:
    """`auths[key]`, else the first key (sorted) whose hostname form equals `key` exactly."""
    auths = doc.get("auths", {})
    if not isinstance(auths, dict):
        raise ConfigError(f"{where}: auths must be an object")
    if key in auths:
        return _entry_auth(auths[key], key, where)
    for candidate in sorted(auths):
        if _hostname(candidate) == key:
            return _entry_auth(auths[candidate], candidate, where)
    return None


def _load_json(text: str, where: str) -> dict[str, Any]:
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"{where}: invalid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{where}: must be a JSON object")
    return doc


def _helper_for(doc: Mapping[str, Any], key: str, where: str) -> str | None:
    helpers = doc.get("credHelpers", {})
    store = doc.get("credsStore", "")
    if not isinstance(helpers, dict) or not all(isinstance(v, str) for v in helpers.values()):
        raise ConfigError(f"{where}: credHelpers must map registries to helper names")
    if not isinstance(store, str):
        raise ConfigError(f"{where}: credsStore must be a string")
    helper: str = helpers.get(key) or store
    if not helper:
        return None
    if "/" in helper or helper.startswith("."):
        raise ConfigError(f"{where}: invalid credential helper name {helper!r}")
    return helper


def _call_helper(
    executable: str, verb: str, stdin: str, environ: Mapping[str, str], failure: str
) -> subprocess.CompletedProcess[bytes]:
    """Run `docker-credential-<x> <verb>` with `stdin`, bounded in time; no shell, ever."""
    try:
        return subprocess.run(
            [executable, verb],
            input=stdin.encode("utf-8"),
            capture_output=True,
            env=dict(environ),
            timeout=_HELPER_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise AuthError(f"{failure}: {exc}") from None


def _run_helper(helper: str, key: str, environ: Mapping[str, str]) -> RegistryAuth | None:
    """`docker-credential-<helper> get` with the server address on stdin (native_store.go)."""
    program = f"docker-credential-{helper}"
    executable = shutil.which(program, path=environ.get("PATH"))
    if executable is None:
        # docker ignores a broken helper and pulls anonymously; say why credentials are missing.
        logger.warning(
            "credential helper %s not found on PATH; no credentials for %s", program, key
        )
        return None
    proc = _call_helper(
        executable, "get", key, environ, f"error getting credentials from {program}"
    )
    out = proc.stdout.decode("utf-8", "replace").strip()
    if proc.returncode != 0:
        if "credentials not found" in out.lower():
            return None
        detail = out or proc.stderr.decode("utf-8", "replace").strip()
        raise AuthError(f"error getting credentials from {program}: {detail}")
    try:
        reply = json.loads(out)
        username, secret = reply.get("Username", ""), reply.get("Secret", "")
        server = reply.get("ServerURL", "") or key
    except (ValueError, AttributeError):
        raise AuthError(f"error getting credentials from {program}: invalid reply") from None
    if not all(isinstance(v, str) for v in (username, secret, server)):
        raise AuthError(f"error getting credentials from {program}: invalid reply")
    if username == _TOKEN_USERNAME:
        auth = RegistryAuth(identitytoken=secret, serveraddress=server)
    else:
        auth = RegistryAuth(username=username, password=secret, serveraddress=server)
    return None if auth.is_anonymous else auth


def _decode_header_json(value: str) -> Any:
    """The engine's decoding of `X-Registry-Auth` / `X-Registry-Config`: URL-safe base64
    (padding optional) of JSON; None when it does not decode (the engine then refuses)."""
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        return json.loads(raw)
    except (ValueError, binascii.Error):
        return None


def from_engine_header(value: str | None, registry_domain: str) -> RegistryAuth | None:
    """The credentials of a client's `X-Registry-Auth`, for `registry_domain` only.

    The header carries the credentials of the registry the request names (the docker CLI's
    `serveraddress` says which). They are returned only when that is `registry_domain`: a
    header naming another registry never becomes this one's credentials (attacks.md J07).
    Only the fields the engine itself uses go on (username, password, identity token).
    """
    doc = _decode_header_json(value) if value else None
    if not isinstance(doc, dict):
        return None
    fields = ("username", "password", "identitytoken", "serveraddress")
    if not all(isinstance(doc.get(name, ""), str) for name in fields):
        return None
    server = doc.get("serveraddress", "")
    if server and _registry_host(server) != _registry_host(registry_domain):
        return None
    auth = RegistryAuth(
        username=doc.get("username", ""),
        password=doc.get("password", ""),
        identitytoken=doc.get("identitytoken", ""),
        serveraddress=server or credential_key(registry_domain),
    )
    return None if auth.is_anonymous else auth


def from_registry_config(value: str | None, registry_domain: str) -> RegistryAuth | None:
    """The entry of a build's `X-Registry-Config` (a map of registry key → AuthConfig) for
    exactly `registry_domain`, chosen as `auths` entries are; another key is never used."""
    doc = _decode_header_json(value) if value else None
    if not isinstance(doc, dict):
        return None
    try:
        return _from_auths({"auths": doc}, credential_key(registry_domain), "X-Registry-Config")
    except ConfigError:
        return None  # a malformed entry counts as none (nothing is borrowed from another)


def resolve_registry_auth(
    registry_domain: str, docker_config: Path, environ: Mapping[str, str]
) -> RegistryAuth | None:
    """Credentials for exactly `registry_domain`, or None for anonymous access.

    A malformed `config.json` or `DOCKER_AUTH_CONFIG` is a ConfigError (never silently
    anonymous); a credential helper that fails other than "not found" is an AuthError.
    """
    key = credential_key(registry_domain)
    env_config = environ.get("DOCKER_AUTH_CONFIG")
    if env_config:
        found = _from_auths(_load_json(env_config, "DOCKER_AUTH_CONFIG"), key, "DOCKER_AUTH_CONFIG")
        if found is not None:
            return found
    path = docker_config / "config.json"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read docker configuration: {exc}") from None
    if not text.strip():
        return None
    doc = _load_json(text, str(path))
    helper = _helper_for(doc, key, str(path))
    if helper is not None:
        return _run_helper(helper, key, environ)
    return _from_auths(doc, key, str(path))


def store_registry_auth(
    registry_domain: str,
    auth: RegistryAuth,
    docker_config: Path,
    environ: Mapping[str, str],
) -> str:
    """Store `auth` for `registry_domain` where `docker login` would; returns where it went.

    Through the configured helper (`credHelpers[key]`, else `credsStore`) with the
    `docker-credential-<helper> store` protocol, else as `auths[key].auth` in config.json,
    written atomically with mode 0600 and every other key kept. Only called when the user asked
    (`--save-credentials`): typed credentials are never stored silently.
    """
    if not auth.username or not (auth.password or auth.identitytoken):
        raise AuthError("refusing to store incomplete credentials")
    key = credential_key(registry_domain)
    path = docker_config / "config.json"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        text = ""
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read docker configuration: {exc}") from None
    doc = _load_json(text, str(path)) if text.strip() else {}
    helper = _helper_for(doc, key, str(path))
    if helper is not None:
        _store_with_helper(helper, key, auth, environ)
        return f"docker-credential-{helper}"
    auths = doc.setdefault("auths", {})
    if not isinstance(auths, dict):
        raise ConfigError(f"{path}: auths must be an object")
    pair = f"{auth.username}:{auth.password}".encode()
    entry: dict[str, str] = {"auth": base64.b64encode(pair).decode("ascii")}
    if auth.identitytoken:
        entry = {"auth": base64.b64encode(f"{auth.username}:".encode()).decode("ascii")}
        entry["identitytoken"] = auth.identitytoken
    auths[key] = entry
    _write_private(path, json.dumps(doc, indent="\t") + "\n")
    return str(path)


def _store_with_helper(
    helper: str, key: str, auth: RegistryAuth, environ: Mapping[str, str]
) -> None:
    """`docker-credential-<helper> store` with {ServerURL, Username, Secret} on stdin."""
    program = f"docker-credential-{helper}"
    executable = shutil.which(program, path=environ.get("PATH"))
    if executable is None:
        raise AuthError(f"cannot store credentials: {program} not found on PATH")
    if auth.identitytoken:
        username, secret = _TOKEN_USERNAME, auth.identitytoken
    else:
        username, secret = auth.username, auth.password
    payload = json.dumps({"ServerURL": key, "Username": username, "Secret": secret})
    proc = _call_helper(
        executable, "store", payload, environ, f"error storing credentials with {program}"
    )
    if proc.returncode != 0:
        detail = (proc.stdout or proc.stderr).decode("utf-8", "replace").strip()
        raise AuthError(f"error storing credentials with {program}: {detail[:300]}")


def _write_private(path: Path, text: str) -> None:
    """Replace `path` atomically by a 0600 file (it holds secrets)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".config.json.", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise ConfigError(f"{path}: cannot write docker configuration: {exc.strerror}") from None
