"""A Notary server's metadata API (`GET <server>/v2/<GUN>/_trust/tuf/<role>.json`) over
`trust.http.HttpsSession`, with notary's status mapping (dct.md §2.5).

There is no `/v2/` ping (issue 13): the first metadata request goes out with the token kept
from an earlier run, if any, and a 401 challenge is answered when it comes. 401/403 after
credentials is `AuthError` (exit 7), never "not signed" and never a reason to use the cache.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from trust.errors import AuthError, InputError, NetworkError
from trust.http import Auth, Credentials, HttpsSession, RealmPolicy, TokenStore
from trust.http.auth import error_detail
from trust.settings import Limits, Settings

__all__ = [
    "DOCKER_HUB_NOTICE",
    "DOCKER_HUB_TRUST_SERVER",
    "NotFoundError",
    "NotaryRemote",
    "remote_for",
]

#: Docker Hub's Notary (trust.settings.OFFICIAL_TRUST_SERVER).
DOCKER_HUB_TRUST_SERVER = "https://notary.docker.io"
#: What a user of a Docker Hub image is told when Docker Hub's Notary has nothing or is gone.
DOCKER_HUB_NOTICE = (
    "Docker Hub no longer serves content trust data (Docker retired its Notary service, "
    "notary.docker.io; shutdown date 2026-12-08), so Docker Hub images cannot be verified with "
    "Notary. "
    "To pull them with trustpull: add a policy rule for these images ([[rules]] in the config), "
    "sign them on a trust server of your own ([trust_servers] or DOCKER_CONTENT_TRUST_SERVER), "
    "or publish them in a TUF repository you control ([[trust_sources]])."
)
_FORBIDDEN_IN_NAME = ("..", "//", "\\", "%", "?", "#")


class NotFoundError(NetworkError):
    """A 404 from the trust server. The client maps it on root.json to "no trust data" (G02)."""

    kind = "NotFound"


def check_component(value: str, what: str) -> None:
    if (
        not value
        or value.startswith("/")
        or any(bad in value for bad in _FORBIDDEN_IN_NAME)
        or any(ord(char) < 0x21 or ord(char) == 0x7F for char in value)
    ):
        raise InputError(f"refusing unsafe {what} {value!r} in a trust server path")


class NotaryRemote:
    """One trust server and one GUN: bounded metadata fetches (the client's MetadataSource)."""

    def __init__(
        self,
        server_url: str,
        gun: str,
        *,
        limits: Limits,
        docker_config: Path,
        credentials: Callable[[], Credentials | None] | None = None,
        realms: Iterable[str] = (),
        token_store: TokenStore | None = None,
        config_hint: str | None = None,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], None] | None = None,
        user_agent: str | None = None,
        wall: Callable[[], float] | None = None,
    ) -> None:
        check_component(gun, "GUN")
        self._gun = gun
        scope = f"repository:{gun}:pull"
        registry = gun.split("/", 1)[0]
        auth = Auth(
            credentials=credentials,
            scope=scope,
            prefix=urlsplit(server_url).path.rstrip("/") + "/v2/",
            realms=RealmPolicy.for_server(server_url, registry, realms, config_hint=config_hint),
            store=token_store,
        )
        timing: dict[str, Any] = {}
        if clock is not None:
            timing["clock"] = clock
        if sleep is not None:
            timing["sleep"] = sleep
        if wall is not None:
            timing["wall"] = wall
        if user_agent is not None:
            timing["user_agent"] = user_agent
        self._auth = auth
        self._session = HttpsSession(
            server_url,
            limits=limits,
            docker_config=docker_config,
            auth=auth,
            label="notary server",
            **timing,
        )
        self._server = self._session.base_url
        self._base = f"{self._server}/v2/{gun}/_trust/tuf/"
        self._hub = self._server == DOCKER_HUB_TRUST_SERVER

    @property
    def request_count(self) -> int:
        """HTTP requests sent so far (tokens, redirects and retries included)."""
        return self._session.request_count

    @property
    def auth(self) -> Auth:
        """How this remote may authenticate: credentials source, scope, realm policy, store."""
        return self._auth

    @property
    def base_url(self) -> str:
        """`<server>/v2/<GUN>/_trust/tuf/`, for messages and logs."""
        return self._base

    def close(self) -> None:
        self._session.close()

    def renew(self) -> None:
        """Start a new update on a kept session (trust.notary.pool): a fresh time budget."""
        self._session.renew()

    def __enter__(self) -> NotaryRemote:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def ping(self) -> None:
        """Nothing: challenges are answered when a metadata request meets one (issue 13)."""

    def get_metadata(self, name: str, max_bytes: int) -> bytes:
        """`GET <base><name>.json`, at most `max_bytes` bytes, mapped to trustpull's errors."""
        check_component(name, "metadata name")
        hint = DOCKER_HUB_NOTICE if self._hub else None
        try:
            reply = self._session.get(
                f"{self._base}{name}.json", max_bytes=max_bytes, what=f"{name}.json"
            )
        except NetworkError as error:
            if hint is None:
                raise
            raise NetworkError(error.message, hint=hint, detail=error.detail) from error
        status = reply.status
        if status == 200:
            return reply.body
        if status == 404:
            raise NotFoundError(
                f"{name} trust data unavailable.  Has a notary repository been initialized?",
                hint=hint,
            )
        if status in (401, 403):
            detail = " with the credentials sent" if reply.authenticated else ""
            raise AuthError(
                f"you are not authorized to perform this operation: server returned {status}"
                f"{detail}."
            )
        if status == 429 or status >= 500:
            raise NetworkError(f"unable to reach trust server at this time: {status}.", hint=hint)
        raise NetworkError(
            f"unexpected answer from trust server for {name}.json: "
            f"{status}{error_detail(reply.body)}",
            hint=hint,
        )


def remote_for(
    server: str,
    gun: str,
    settings: Settings,
    credentials: Callable[[], Credentials | None] | None = None,
) -> NotaryRemote:
    """The session `NotaryClient.make_session` uses for `settings`: the registry credentials of
    the GUN's registry (by default docker's config, helpers, `DOCKER_AUTH_CONFIG`; the engine
    proxy passes the client request's own), asked only when a challenge comes, `[auth] realms`,
    and tokens kept under the trust directory.

    The one construction: trust.prefetch's early request uses it too.
    """
    if credentials is None:
        from trust.credentials import resolve_registry_auth

        domain = gun.split("/", 1)[0]

        def from_docker_config() -> Credentials | None:
            return resolve_registry_auth(domain, settings.docker_config, os.environ)

        credentials = from_docker_config

    return NotaryRemote(
        server,
        gun,
        limits=settings.limits,
        docker_config=settings.docker_config,
        credentials=credentials,
        realms=settings.auth_realms,
        token_store=TokenStore(settings.trust_dir / "tokens"),
        config_hint=f"[auth] realms in {settings.config_file or 'the config file'}",
    )
