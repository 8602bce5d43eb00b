"""The Docker Engine API calls trustpull makes: pull (by tag or digest), tag, inspect.

The requests are built by hand on top of docker-py's `APIClient` transport (unix socket, TLS,
version negotiation) rather than its `pull()`/`tag()` helpers, because those would read
`~/.docker/config.json` on their own for `X-Registry-Auth`, and trustpull must send exactly the
credentials it resolved for the exact registry (dct.md §1.8, attacks.md J07).

Podman's Docker-compatible service (`podman system service`) is an engine too; where its answers
differ from dockerd's, this module evens them out (README, "Podman"): it is recognised by the
`Libpod-Api-Version` header it sends on every answer; a pull of every tag (docker's `fromImage`
without `tag`) is refused there, because podman pulls only `:latest` then; `image_tags` leaves
out the `NAME@sha256:…` names that podman gives an image pulled by digest; and a
registry that the engine reaches over HTTPS but that answers plain HTTP gets the engine's own
way to mark it insecure in the error.

`docker` is imported inside functions so that `trustpull --help` does not pay for it.
"""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from trust.credentials import RegistryAuth
from trust.errors import AuthError, EngineError

if TYPE_CHECKING:
    import requests

__all__ = ["DEFAULT_DOCKER_HOST", "Engine", "EventCallback", "preload"]

DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"
EventCallback = Callable[[dict[str, Any]], None]

#: Engine error texts that mean the registry refused our credentials (or their absence).
_AUTH_RE = re.compile(
    r"unauthorized|authentication required|\bdenied\b|no basic auth credentials|"
    r"incorrect username or password",
    re.IGNORECASE,
)
_ANONYMOUS_HEADER = RegistryAuth().to_engine_header()
#: Sent by podman's service on every answer (dockerd never sends it).
_PODMAN_HEADER = "Libpod-Api-Version"
_PLAIN_HTTP_REGISTRY = "server gave HTTP response to HTTPS client"


def _unreachable(host: str) -> EngineError:
    return EngineError(
        f"Cannot connect to the Docker daemon at {host}. Is the docker daemon running?"
    )


def _probe_unix_socket(host: str) -> None:
    """Fail fast, and without docker-py's leaked socket, when a unix socket does not answer."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(5.0)
        sock.connect(host[len("unix://") :])
    except OSError:
        raise _unreachable(host) from None
    finally:
        sock.close()


def _classify(message: str, status: int | None = None) -> EngineError | AuthError:
    """An engine error text as EngineError, or AuthError when the registry refused access."""
    if status in (401, 403) or _AUTH_RE.search(message):
        return AuthError(message)
    return EngineError(message)


def _insecure_registry_advice(message: str, name: str, podman: bool) -> str:
    """The engine's message, plus where that engine marks a plain-HTTP registry insecure."""
    if _PLAIN_HTTP_REGISTRY not in message:
        return message
    registry = name.split("/", 1)[0]
    if podman:
        where = (
            f'podman: add [[registry]] location = "{registry}", insecure = true to its '
            "registries.conf (/etc/containers/registries.conf.d/*.conf or "
            "$CONTAINERS_REGISTRIES_CONF) and restart the service"
        )
    else:
        where = f'docker: add "{registry}" to "insecure-registries" in the daemon\'s daemon.json'
    return f"{message} (the registry {registry} speaks plain HTTP; to allow it, {where})"


def _error_message(response: requests.Response) -> str:
    """The engine's `{"message": …}` body, else the raw text, else the HTTP status."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return str(body["message"])
    text = response.text.strip()
    return text or f"engine answered HTTP {response.status_code}"


def _json_messages(chunks: Iterator[bytes]) -> Iterator[dict[str, Any]]:
    """Decode the engine's stream of concatenated JSON objects, whatever the chunking."""
    decoder = json.JSONDecoder()
    buffer = ""
    for chunk in chunks:
        buffer += chunk.decode("utf-8", "replace")
        while True:
            buffer = buffer.lstrip()
            if not buffer:
                break
            try:
                value, end = decoder.raw_decode(buffer)
            except ValueError:
                break  # incomplete: wait for more bytes
            buffer = buffer[end:]
            if isinstance(value, dict):
                yield value
    if buffer.strip():
        raise EngineError(f"engine sent a truncated or invalid message: {buffer[:200]!r}")


def preload() -> None:
    """Import the engine client (the docker SDK) now: a trusted pull does it while its trust
    server request is out (trust.prefetch), instead of after the verification."""
    import docker  # noqa: F401


class Engine:
    """A connection to one Docker engine; every failure surfaces as EngineError or AuthError."""

    def __init__(self, api: Any, host: str) -> None:
        self._api = api
        self.host = host
        self._podman: bool | None = None

    @classmethod
    def connect(cls, environ: Mapping[str, str], *, timeout: float = 60.0) -> Engine:
        """Connect as the docker CLI would: DOCKER_HOST, DOCKER_TLS_VERIFY, DOCKER_CERT_PATH.

        The API version is negotiated (`version="auto"` asks the engine), so an old engine
        (API 1.41, dockerd 20.10) works; an unreachable engine fails here, not mid-pull.
        """
        import docker
        from docker.errors import DockerException, TLSParameterError

        host = environ.get("DOCKER_HOST") or DEFAULT_DOCKER_HOST
        try:
            kwargs = docker.utils.kwargs_from_env(environment=dict(environ))
        except TLSParameterError as exc:
            raise EngineError(f"invalid Docker TLS settings: {exc}") from None
        kwargs.setdefault("base_url", host)
        if host.startswith("unix://"):
            _probe_unix_socket(host)
        try:
            api = docker.APIClient(version="auto", timeout=timeout, **kwargs)
        except DockerException as exc:
            if "fetching server API version" in str(exc):
                raise _unreachable(host) from None
            raise EngineError(f"cannot use Docker host {host}: {exc}") from None
        return cls(api, host)

    def close(self) -> None:
        self._api.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def api_version(self) -> str:
        return str(self._api.api_version)

    @property
    def is_podman(self) -> bool:
        """True for podman's Docker-compatible service (asked once, with `GET /_ping`)."""
        if self._podman is None:
            response = self._request("GET", "/_ping")
            with response:
                self._podman = _PODMAN_HEADER in response.headers
        return self._podman

    def _url(self, path: str) -> str:
        return f"{self._api.base_url}/v{self._api.api_version}{path}"

    def _request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        import requests

        kwargs.setdefault("timeout", self._api.timeout)
        try:
            # APIClient is a requests.Session bound to the engine's transport (unix/TLS).
            response: requests.Response = self._api.request(method, self._url(path), **kwargs)
        except requests.ConnectionError:
            raise _unreachable(self.host) from None
        except requests.Timeout:
            raise EngineError(f"timed out talking to the Docker daemon at {self.host}") from None
        return response

    def pull(
        self,
        name: str,
        tag_or_digest: str | None,
        *,
        auth: RegistryAuth | None,
        on_event: EventCallback | None = None,
        all_tags: bool = False,
        platform: str | None = None,
    ) -> None:
        """`POST /images/create`: pull `name` at a tag or `sha256:` digest (docker's request).

        `name` is the fully qualified repository. Each streamed JSON message goes to
        `on_event`; an `error` inside the 200 stream fails the pull like an HTTP error does.
        """
        import requests

        if all_tags and self.is_podman:
            raise EngineError(
                f"the engine at {self.host} is podman, whose Docker-compatible API cannot pull "
                f"every tag of {name} (it would pull :latest only); name the tags, or pull with "
                "content trust on (then -a pulls every signed tag by its digest)"
            )
        params: dict[str, str] = {"fromImage": name}
        if not all_tags:
            params["tag"] = tag_or_digest or "latest"
        if platform:
            params["platform"] = platform.lower()
        header = auth.to_engine_header() if auth is not None else _ANONYMOUS_HEADER
        response = self._request(
            "POST",
            "/images/create",
            params=params,
            headers={"X-Registry-Auth": header},
            stream=True,
            timeout=None,
        )
        with response:
            podman = _PODMAN_HEADER in response.headers
            if podman:
                self._podman = True
            if response.status_code >= 400:
                refusal = _insecure_registry_advice(_error_message(response), name, podman)
                raise _classify(refusal, response.status_code)
            try:
                for message in _json_messages(response.iter_content(chunk_size=None)):
                    if message.get("error") or message.get("errorDetail"):
                        detail = message.get("errorDetail") or {}
                        text = message.get("error") or (
                            detail.get("message") if isinstance(detail, dict) else None
                        )
                        advised = _insecure_registry_advice(
                            str(text or "pull failed"), name, podman
                        )
                        raise _classify(advised)
                    if on_event is not None:
                        on_event(message)
            except requests.RequestException as exc:
                raise EngineError(f"pull stream from {self.host} broke: {exc}") from None

    def tag(self, source: str, repo: str, tag: str) -> None:
        """`POST /images/<source>/tag`; only 201 Created counts as success.

        `source` keeps `@` and `:` unescaped in the path, as the Go client sends them.
        """
        path = f"/images/{quote(source, safe='/:@')}/tag"
        response = self._request("POST", path, params={"repo": repo, "tag": tag})
        with response:
            if response.status_code != 201:
                raise EngineError(
                    f"pulled {source} but could not tag it as {repo}:{tag}: "
                    f"{_error_message(response)}"
                )

    def _inspect_list(self, ref: str, key: str) -> list[str]:
        """One list field of a local image's inspect answer (`GET /images/<ref>/json`)."""
        response = self._request("GET", f"/images/{quote(ref, safe='/:@')}/json")
        with response:
            if response.status_code != 200:
                raise EngineError(f"cannot inspect image {ref}: {_error_message(response)}")
            try:
                values = response.json().get(key) or []
            except (ValueError, AttributeError):
                raise EngineError(f"invalid inspect answer for {ref}") from None
        return [str(value) for value in values]

    def image_repo_digests(self, ref: str) -> list[str]:
        """`RepoDigests` of a local image."""
        return self._inspect_list(ref, "RepoDigests")

    def image_tags(self, ref: str) -> list[str]:
        """`RepoTags` of a local image, `NAME:TAG` only.

        After a pull by digest podman names the image `NAME@sha256:…` too, and its image list
        (`GET /images/json`, what `docker images` shows) has that name among the RepoTags;
        docker has it only in RepoDigests. Podman 4.3's inspect answer already leaves it out;
        any such name is dropped here all the same, so that both engines answer alike.
        """
        return [tag for tag in self._inspect_list(ref, "RepoTags") if "@" not in tag]
