"""An HTTP (or, given a certificate, HTTPS) listener on loopback that records every connection
and every request with its headers: the attacker's end of a test that asserts nothing was sent
to it. A TLS handshake counts as a connection whether or not it succeeds.

It answers every request with a bearer token (`TOKEN`), so a client that wrongly goes there
would also get something it could go on with.
"""

from __future__ import annotations

import json
import ssl
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any

TOKEN = "attacker-token-5f1c"


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        return None

    def _answer(self) -> None:
        size = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(size) if size else b""
        self.server.owner.record(Seen(self.command, self.path, dict(self.headers.items()), body))
        reply = json.dumps({"token": TOKEN, "access_token": TOKEN, "expires_in": 300}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    do_GET = do_POST = do_HEAD = _answer


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: Listener

    context: ssl.SSLContext | None = None

    def process_request(self, request: Any, client_address: Any) -> None:
        self.owner.connected()
        super().process_request(request, client_address)

    def finish_request(self, request: Any, client_address: Any) -> None:
        if self.context is None:
            super().finish_request(request, client_address)
            return
        try:
            tls = self.context.wrap_socket(request, server_side=True)
        except (OSError, ssl.SSLError):
            return
        try:
            super().finish_request(tls, client_address)
        finally:
            tls.close()


class Listener:
    """`with Listener() as wire:` ... `wire.port`, `wire.connections`, `wire.requests`.

    `tls=(cert_path, key_path)` serves HTTPS with that certificate.
    """

    def __init__(self, host: str = "127.0.0.1", *, tls: tuple[Path, Path] | None = None) -> None:
        self._server = _Server((host, 0), _Handler)
        self._server.owner = self
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            self._server.context = context
        self._lock = threading.Lock()
        self.connections = 0
        self.requests: list[Seen] = []
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def connected(self) -> None:
        with self._lock:
            self.connections += 1

    def record(self, seen: Seen) -> None:
        with self._lock:
            self.requests.append(seen)

    def __enter__(self) -> Listener:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
