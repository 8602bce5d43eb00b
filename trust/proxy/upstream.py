"""Requests the proxy itself sends to the engine (inspects, pulls by digest, tags).

Each call uses its own unix-socket connection (http.client), with the client's API version in
the path so the engine applies the same version gates (§1.1). Client bytes never go here.
"""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

__all__ = ["EngineDown", "Upstream"]


class EngineDown(Exception):
    """The engine's socket did not answer."""


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float | None) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


@dataclass
class Answer:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            return None

    @property
    def message(self) -> str:
        value = self.json()
        if isinstance(value, dict) and isinstance(value.get("message"), str):
            return str(value["message"])
        return self.body.decode("utf-8", "replace").strip() or f"HTTP {self.status}"


class Upstream:
    """The engine at a unix socket path."""

    def __init__(self, path: str, timeout: float = 60.0) -> None:
        self.path = path
        self.timeout = timeout

    def connect_raw(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(self.path)
        except OSError as exc:
            sock.close()
            raise EngineDown(str(exc.strerror or exc)) from None
        return sock

    def _open(
        self,
        method: str,
        target: str,
        headers: dict[str, str] | None = None,
        body: bytes | None = None,
        timeout: float | None = None,
    ) -> tuple[_UnixConnection, http.client.HTTPResponse]:
        conn = _UnixConnection(self.path, timeout)
        try:
            conn.request(method, target, body=body, headers=headers or {})
            response = conn.getresponse()
        except OSError as exc:
            conn.close()
            raise EngineDown(str(getattr(exc, "strerror", None) or exc)) from None
        except http.client.HTTPException as exc:
            conn.close()
            raise EngineDown(f"invalid answer: {exc}") from None
        return conn, response

    def call(
        self,
        method: str,
        target: str,
        headers: dict[str, str] | None = None,
        body: bytes | None = None,
        limit: int = 16 * 1024 * 1024,
    ) -> Answer:
        conn, response = self._open(method, target, headers, body, self.timeout)
        try:
            data = response.read(limit)
            return Answer(response.status, response.getheaders(), data)
        except OSError as exc:
            raise EngineDown(str(exc)) from None
        finally:
            conn.close()

    def stream(
        self,
        method: str,
        target: str,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, list[tuple[str, str]], Iterator[bytes], Any]:
        """A streaming call: status, headers, an iterator over body pieces, a closer."""
        conn, response = self._open(method, target, headers, None, None)

        def pieces() -> Iterator[bytes]:
            try:
                while True:
                    chunk = response.read1(65536)
                    if not chunk:
                        return
                    yield chunk
            except OSError as exc:
                raise EngineDown(str(exc)) from None

        return response.status, response.getheaders(), pieces(), conn.close


def vpath(version: str | None, path: str) -> str:
    prefix = f"/v{version}" if version is not None else ""
    return quote(prefix + path, safe="/:@-._~!$&'()*+,=")


def image_path(version: str | None, name: str, suffix: str) -> str:
    return vpath(version, f"/images/{name}{suffix}")
