"""trust.http (through trust.notary.remote) against a real in-process HTTPS server (no mocks):
attacks.md group G.

The server below is private to this file on purpose (fixtures/server.py is a separate piece of
work): each test installs small route functions that misbehave in one specific way.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import shutil
import ssl
import stat
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import urllib3.util.connection

from fixtures.tlsgen import CertificateAuthority, make_ca
from tests.unit._trust_env import FAST
from trust.errors import (
    AuthError,
    ConfigError,
    InputError,
    LengthError,
    NetworkError,
    NoTrustDataError,
    TrustpullError,
)
from trust.http import Challenge, RealmPolicy, TokenStore, parse_challenges, tls_context
from trust.http.auth import StoredToken, credential_fingerprint, fingerprint_matches
from trust.notary.client import NotaryClient
from trust.notary.remote import DOCKER_HUB_NOTICE, NotFoundError
from trust.notary.remote import NotaryRemote as TrustServerSession
from trust.reference import parse
from trust.settings import Limits, Settings

GUN = "registry.test/org/app"
TUF = f"/v2/{GUN}/_trust/tuf/"


# ------------------------------------------------------------------------------ test server


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes


Route = Callable[["Handler"], None]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: LocalServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _dispatch(self) -> None:
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.server.seen.append(
            Seen(
                self.command,
                parts.path,
                parse_qs(parts.query),
                {k.lower(): v for k, v in self.headers.items()},
                body,
            )
        )
        route = self.server.routes.get(parts.path)
        if route is None:
            self.reply(404, b'{"errors":[{"code":"METADATA_NOT_FOUND"}]}')
            return
        route(self)

    do_GET = _dispatch
    do_POST = _dispatch

    def reply(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        if "Content-Length" not in (headers or {}):
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()

    def stopping(self) -> bool:
        return self.server.stop.is_set()


class LocalServer(ThreadingHTTPServer):
    """HTTP(S) on 127.0.0.1 in a thread; the TLS handshake runs in the handler thread."""

    daemon_threads = True

    def __init__(self, context: ssl.SSLContext | None) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.context = context
        self.routes: dict[str, Route] = {}
        self.seen: list[Seen] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.02})
        self.thread.daemon = True
        self.thread.start()

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    @property
    def url(self) -> str:
        scheme = "https" if self.context else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    def get_request(self) -> tuple[Any, Any]:
        sock, addr = self.socket.accept()
        if self.context is None:
            return sock, addr
        wrapped = self.context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return wrapped, addr

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients that hang up on purpose are the point of these tests

    def paths(self) -> list[str]:
        return [seen.path for seen in self.seen]

    def close(self) -> None:
        self.stop.set()
        self.shutdown()
        self.server_close()
        self.thread.join(2)


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    return make_ca(tmp_path_factory.mktemp("ca"))


@pytest.fixture
def start(ca: CertificateAuthority, tmp_path: Path) -> Iterator[Callable[..., LocalServer]]:
    servers: list[LocalServer] = []

    def _start(*, tls: bool = True, authority: CertificateAuthority | None = None) -> LocalServer:
        context = None
        if tls:
            issued = (authority or ca).issue_server(tmp_path / f"srv{len(servers)}")
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(issued.cert_path, issued.key_path)
        server = LocalServer(context)
        servers.append(server)
        return server

    yield _start
    for server in servers:
        server.close()


@pytest.fixture
def docker_config(tmp_path: Path) -> Path:
    path = tmp_path / "docker"
    path.mkdir()
    return path


def trust_ca(docker_config: Path, ca: CertificateAuthority, server: LocalServer) -> None:
    """Docker's layout: the trust server's CA in `<config>/tls/<host:port>/ca.crt`."""
    directory = docker_config / "tls" / f"127.0.0.1:{server.port}"
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copy(ca.cert_path, directory / "ca.crt")


@dataclass
class Creds:
    username: str = ""
    password: str = ""
    identitytoken: str = ""


@dataclass
class Clock:
    offset: float = 0.0
    sleeps: list[float] = field(default_factory=list)

    def __call__(self) -> float:
        return time.monotonic() + self.offset

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        time.sleep(seconds)


@pytest.fixture
def server(
    start: Callable[..., LocalServer], docker_config: Path, ca: CertificateAuthority
) -> LocalServer:
    srv: LocalServer = start()
    trust_ca(docker_config, ca, srv)
    return srv


@pytest.fixture
def connect(
    server: LocalServer, docker_config: Path
) -> Iterator[Callable[..., TrustServerSession]]:
    sessions: list[TrustServerSession] = []

    def _connect(limits: Limits = FAST, **kwargs: Any) -> TrustServerSession:
        session = TrustServerSession(
            kwargs.pop("url", server.url),
            GUN,
            limits=limits,
            docker_config=docker_config,
            **kwargs,
        )
        sessions.append(session)
        return session

    yield _connect
    for session in sessions:
        session.close()


def serve(body: bytes, status: int = 200, **headers: str) -> Route:
    return lambda req: req.reply(status, body, {k.replace("_", "-"): v for k, v in headers.items()})


# ------------------------------------------------------------------------------ basics


def test_200_returns_body_with_identity_and_user_agent(
    server: LocalServer, connect: Callable[..., TrustServerSession]
) -> None:
    server.routes[TUF + "root.json"] = serve(b'{"signed":{}}')
    session = connect(user_agent="trustpull-test/1")
    assert session.get_metadata("root", 1024) == b'{"signed":{}}'
    seen = server.seen[-1]
    assert seen.path == TUF + "root.json"
    assert seen.headers["user-agent"] == "trustpull-test/1"
    assert seen.headers["accept-encoding"] == "identity"
    assert "authorization" not in seen.headers
    assert session.request_count == 1


def test_delegation_names_keep_their_slash(
    server: LocalServer, connect: Callable[..., TrustServerSession]
) -> None:
    name = "targets/releases." + "ab" * 32
    server.routes[TUF + name + ".json"] = serve(b"{}")
    assert connect().get_metadata(name, 10) == b"{}"


def test_404_maps_to_not_found_with_docker_text(
    server: LocalServer, connect: Callable[..., TrustServerSession]
) -> None:
    with pytest.raises(NotFoundError) as info:
        connect().get_metadata("root", 1024)
    assert info.value.message == (
        "root trust data unavailable.  Has a notary repository been initialized?"
    )
    assert info.value.exit_code == 6
    assert info.value.kind == "NotFound"
    assert isinstance(info.value, NetworkError)
    assert len(server.seen) == 1  # a 404 is an answer, not retried


@pytest.mark.parametrize("status", [401, 403])
def test_401_and_403_are_auth_errors(
    server: LocalServer, connect: Callable[..., TrustServerSession], status: int
) -> None:
    server.routes[TUF + "timestamp.json"] = serve(b"denied", status)
    with pytest.raises(AuthError) as info:
        connect().get_metadata("timestamp", 1024)
    assert info.value.exit_code == 7
    assert str(status) in info.value.message
    assert len(server.seen) == 1


def test_other_4xx_is_network_error_without_retry(
    server: LocalServer, connect: Callable[..., TrustServerSession]
) -> None:
    body = json.dumps({"errors": [{"code": "X", "detail": "bad\nthing"}]}).encode()
    server.routes[TUF + "root.json"] = serve(body, 400)
    with pytest.raises(NetworkError) as info:
        connect().get_metadata("root", 1024)
    assert "400" in info.value.message and "badthing" in info.value.message
    assert not isinstance(info.value, NotFoundError)
    assert len(server.seen) == 1


@pytest.mark.parametrize(
    "name", ["../root", "a//b", "a\\b", "root%2e", "/root", "root?x", "root#x", "", "ro ot"]
)
def test_unsafe_names_refused_before_any_request(
    server: LocalServer, connect: Callable[..., TrustServerSession], name: str
) -> None:
    session = connect()
    with pytest.raises(InputError):
        session.get_metadata(name, 10)
    assert session.request_count == 0 and server.seen == []


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:1", "ftp://host", "https://u:p@host", "https://h/?q", "host"]
)
def test_server_url_must_be_https(docker_config: Path, url: str) -> None:
    with pytest.raises(InputError):
        TrustServerSession(url, GUN, limits=FAST, docker_config=docker_config)


def test_netrc_never_adds_credentials(
    server: LocalServer,
    connect: Callable[..., TrustServerSession],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login leak password secret\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    monkeypatch.setenv("HOME", str(tmp_path))
    server.routes[TUF + "root.json"] = serve(b"{}")
    connect().get_metadata("root", 10)
    assert "authorization" not in server.seen[-1].headers


# ------------------------------------------------------------------------------ retries


def test_500_is_retried_then_network_error(
    server: LocalServer, connect: Callable[..., TrustServerSession]
) -> None:
    server.routes[TUF + "snapshot.json"] = serve(b"oops", 500)
    session = connect()
    with pytest.raises(NetworkError) as info:
        session.get_metadata("snapshot", 1024)
    assert info.value.message == "unable to reach trust server at this time: 500."
    assert server.paths().count(TUF + "snapshot.json") == 3  # 1 + limits.retries
    assert session.request_count == 3


def test_503_then_200_succeeds(
    server: LocalServer, connect: Callable[..., TrustServerSession]
) -> None:
    answers = [503, 200]
    server.routes[TUF + "snapshot.json"] = lambda req: req.reply(answers.pop(0), b"ok")
    assert connect().get_metadata("snapshot", 10) == b"ok"


def test_429_honours_retry_after_only_up_to_the_cap(
    server: LocalServer, connect: Callable[..., TrustServerSession]
) -> None:
    answers = [429, 429, 200]
    server.routes[TUF + "timestamp.json"] = lambda req: req.reply(
        answers.pop(0), b"ok", {"Retry-After": "3600"}
    )
    clock = Clock()
    started = time.monotonic()
    assert connect(sleep=clock.sleep).get_metadata("timestamp", 10) == b"ok"
    assert len(clock.sleeps) == 2
    assert all(0 < delay <= FAST.retry_after_cap for delay in clock.sleeps)
    assert time.monotonic() - started < 1.0


def test_429_exhausted_is_network_error(
    server: LocalServer, connect: Callable[..., TrustServerSession]
) -> None:
    server.routes[TUF + "timestamp.json"] = serve(b"slow down", 429, Retry_After="1")
    with pytest.raises(NetworkError, match="unable to reach trust server at this time: 429"):
        connect().get_metadata("timestamp", 10)
    assert len(server.seen) == 3


def test_connection_refused_is_retried_then_network_error(
    docker_config: Path,
) -> None:
    clock = Clock()
    session = TrustServerSession(
        "https://127.0.0.1:1", GUN, limits=FAST, docker_config=docker_config, sleep=clock.sleep
    )
    with session, pytest.raises(NetworkError, match="error contacting notary server"):
        session.get_metadata("root", 10)
    assert session.request_count == 3
    assert len(clock.sleeps) == 2


def test_no_ping_the_first_request_is_the_metadata(
    server: LocalServer, connect: Callable[..., TrustServerSession]
) -> None:
    """issue 13: no `/v2/` ping up front; `ping()` is kept for callers and sends nothing."""
    server.routes[TUF + "timestamp.json"] = serve(b"{}")
    session = connect()
    assert session.request_count == 0
    assert session.get_metadata("timestamp", 10) == b"{}"
    assert [seen.path for seen in server.seen] == [TUF + "timestamp.json"]


# ------------------------------------------------------------------------------ sizes


def test_content_length_over_cap_is_length_error_before_reading(
    server: LocalServer, connect: Callable[..., TrustServerSession]
) -> None:
    def huge(req: Handler) -> None:
        req.send_response(200)
        req.send_header("Content-Length", str(10**12))
        req.end_headers()
        req.wfile.write(b"x" * 10)
        req.wfile.flush()
        req.server.stop.wait(2)

    server.routes[TUF + "timestamp.json"] = huge
    started = time.monotonic()
    with pytest.raises(LengthError) as info:
        connect().get_metadata("timestamp", 1000)
    assert info.value.exit_code == 5
    assert time.monotonic() - started < 0.5


def test_endless_body_is_capped(
    server: LocalServer, connect: Callable[..., TrustServerSession]
) -> None:
    def endless(req: Handler) -> None:
        req.send_response(200)
        req.send_header("Connection", "close")
        req.end_headers()
        req.close_connection = True
        while not req.stopping():
            req.wfile.write(b"x" * 4096)

    server.routes[TUF + "timestamp.json"] = endless
    with pytest.raises(LengthError, match="longer than the 65536-byte limit"):
        connect().get_metadata("timestamp", 65536)


def test_body_at_exactly_the_cap_is_fine(
    server: LocalServer, connect: Callable[..., TrustServerSession]
) -> None:
    server.routes[TUF + "targets.json"] = serve(b"y" * 5000)
    assert connect().get_metadata("targets", 5000) == b"y" * 5000
    with pytest.raises(LengthError):
        connect().get_metadata("targets", 4999)


def test_short_body_against_content_length_is_network_error(
    server: LocalServer, connect: Callable[..., TrustServerSession]
) -> None:
    def short(req: Handler) -> None:
        req.send_response(200)
        req.send_header("Content-Length", "100")
        req.end_headers()
        req.wfile.write(b"{" * 50)
        req.close_connection = True

    server.routes[TUF + "root.json"] = short
    with pytest.raises(NetworkError) as info:
        connect().get_metadata("root", 1000)
    assert not isinstance(info.value, LengthError)
    assert server.paths().count(TUF + "root.json") == 3  # a broken body is retried like a reset


def test_truncated_chunked_body_is_network_error(
    server: LocalServer, connect: Callable[..., TrustServerSession]
) -> None:
    def chunked(req: Handler) -> None:
        req.send_response(200)
        req.send_header("Transfer-Encoding", "chunked")
        req.end_headers()
        req.wfile.write(b"5\r\nhello\r\n20\r\nonly-part")
        req.close_connection = True

    server.routes[TUF + "root.json"] = chunked
    with pytest.raises(NetworkError, match="error contacting notary server"):
        connect(Limits(read_timeout=1.0, retries=0)).get_metadata("root", 1000)


def test_whole_chunked_body_is_read(
    server: LocalServer, connect: Callable[..., TrustServerSession]
) -> None:
    def chunked(req: Handler) -> None:
        req.send_response(200)
        req.send_header("Transfer-Encoding", "chunked")
        req.end_headers()
        req.wfile.write(b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")

    server.routes[TUF + "root.json"] = chunked
    assert connect().get_metadata("root", 11) == b"hello world"


def test_gzip_answer_is_decoded_and_gzip_bomb_is_capped(
    server: LocalServer, connect: Callable[..., TrustServerSession]
) -> None:
    small = gzip.compress(b'{"ok":true}')
    bomb = gzip.compress(b" " * (20 * 1024 * 1024), compresslevel=9)
    assert len(bomb) < 64 * 1024
    server.routes[TUF + "small.json"] = serve(small, Content_Encoding="gzip")
    server.routes[TUF + "timestamp.json"] = serve(bomb, Content_Encoding="gzip")
    session = connect()
    assert session.get_metadata("small", 100) == b'{"ok":true}'
    with pytest.raises(LengthError):
        session.get_metadata("timestamp", 64 * 1024)


def test_unknown_content_encoding_is_refused(
    server: LocalServer, connect: Callable[..., TrustServerSession]
) -> None:
    server.routes[TUF + "root.json"] = serve(b"zz", Content_Encoding="br")
    with pytest.raises(NetworkError, match="Content-Encoding"):
        connect().get_metadata("root", 100)


def test_huge_error_body_is_read_only_up_to_the_cap(
    server: LocalServer, connect: Callable[..., TrustServerSession]
) -> None:
    def endless_error(req: Handler) -> None:
        req.send_response(400)
        req.send_header("Connection", "close")
        req.end_headers()
        req.close_connection = True
        while not req.stopping():
            req.wfile.write(b"e" * 4096)

    server.routes[TUF + "root.json"] = endless_error
    started = time.monotonic()
    with pytest.raises(NetworkError, match="400"):
        connect(Limits(error_body_max_bytes=1024)).get_metadata("root", 100)
    assert time.monotonic() - started < 1.0


# ------------------------------------------------------------------------------ time


def test_trickling_body_is_slow_retrieval_within_the_deadline(
    server: LocalServer, connect: Callable[..., TrustServerSession]
) -> None:
    def trickle(req: Handler) -> None:
        req.send_response(200)
        req.send_header("Content-Length", "1000")
        req.end_headers()
        while not req.stopping():
            req.wfile.write(b"x")
            req.wfile.flush()
            time.sleep(0.02)

    server.routes[TUF + "timestamp.json"] = trickle
    limits = Limits(read_timeout=0.5, file_timeout=0.4, retries=2, retry_backoff=0.01)
    started = time.monotonic()
    with pytest.raises(NetworkError, match=r"slow retrieval of timestamp\.json"):
        connect(limits).get_metadata("timestamp", 10_000)
    assert time.monotonic() - started < 0.9
    assert len(server.seen) == 1  # no retry once the file's deadline is spent


def test_trickling_headers_are_cut_at_the_deadline(
    server: LocalServer, connect: Callable[..., TrustServerSession]
) -> None:
    def trickle_headers(req: Handler) -> None:
        req.wfile.write(b"HTTP/1.1 200 OK\r\n")
        while not req.stopping():
            req.wfile.write(b"X-Slow: 1\r\n")
            req.wfile.flush()
            time.sleep(0.02)

    server.routes[TUF + "timestamp.json"] = trickle_headers
    started = time.monotonic()
    with pytest.raises(NetworkError, match="slow retrieval"):
        connect(Limits(read_timeout=0.5, file_timeout=0.3)).get_metadata("timestamp", 100)
    assert time.monotonic() - started < 0.8


def test_silent_server_hits_read_timeout(
    server: LocalServer, connect: Callable[..., TrustServerSession]
) -> None:
    def silent(req: Handler) -> None:
        req.server.stop.wait(2)

    server.routes[TUF + "root.json"] = silent
    started = time.monotonic()
    with pytest.raises(NetworkError):
        connect(
            Limits(read_timeout=0.2, file_timeout=5, retries=1, retry_backoff=0.01)
        ).get_metadata("root", 100)
    assert 0.3 < time.monotonic() - started < 1.2
    assert len(server.seen) == 2


def test_session_budget_bounds_all_files(
    server: LocalServer, connect: Callable[..., TrustServerSession]
) -> None:
    server.routes[TUF + "root.json"] = serve(b"{}")
    clock = Clock()
    session = connect(Limits(total_timeout=5), clock=clock)
    assert session.get_metadata("root", 10) == b"{}"
    clock.offset = 6
    with pytest.raises(NetworkError, match="longer than 5s"):
        session.get_metadata("root", 10)


# ------------------------------------------------------------------------------ redirects


def test_redirects_followed_up_to_the_limit(
    server: LocalServer, connect: Callable[..., TrustServerSession]
) -> None:
    server.routes[TUF + "root.json"] = serve(b"", 302, Location=TUF + "moved.json")
    server.routes[TUF + "moved.json"] = serve(b"{}")
    server.routes[TUF + "loop.json"] = serve(b"", 307, Location=TUF + "loop.json")
    session = connect(Limits(max_redirects=3, retries=0))
    assert session.get_metadata("root", 10) == b"{}"
    with pytest.raises(NetworkError, match="after 3 redirects"):
        session.get_metadata("loop", 10)
    assert server.paths().count(TUF + "loop.json") == 4


@pytest.mark.parametrize(
    "location", ["http://127.0.0.1:{port}/x.json", "file:///etc/passwd", "ftp://127.0.0.1/x"]
)
def test_redirect_to_non_https_refused(
    server: LocalServer, connect: Callable[..., TrustServerSession], location: str
) -> None:
    server.routes[TUF + "root.json"] = serve(b"", 302, Location=location.format(port=server.port))
    with pytest.raises(NetworkError, match="non-https"):
        connect().get_metadata("root", 10)
    assert len(server.seen) == 1


def test_authorization_dropped_when_redirect_changes_host(
    server: LocalServer,
    connect: Callable[..., TrustServerSession],
    start: Callable[..., LocalServer],
) -> None:
    other: LocalServer = start()  # same CA, reached as "localhost": another host
    other.routes[TUF + "root.json"] = serve(b"{}")
    to_other = serve(b"", 302, Location=f"https://localhost:{other.port}{TUF}root.json")

    def root(req: Handler) -> None:
        if req.headers.get("Authorization"):
            to_other(req)
        else:
            req.reply(401, b"", {"WWW-Authenticate": 'Basic realm="trust"'})

    server.routes[TUF + "root.json"] = root
    server.routes[TUF + "timestamp.json"] = serve(b"", 302, Location=TUF + "ts2.json")
    server.routes[TUF + "ts2.json"] = serve(b"{}")
    session = connect(credentials=lambda: Creds("alice", "pw"))
    assert session.get_metadata("root", 10) == b"{}"
    basic = "Basic " + base64.b64encode(b"alice:pw").decode()
    assert server.seen[-1].headers["authorization"] == basic
    assert "authorization" not in other.seen[-1].headers
    assert session.get_metadata("timestamp", 10) == b"{}"
    assert server.seen[-1].path == TUF + "ts2.json"
    assert server.seen[-1].headers["authorization"] == basic  # same host keeps it


# ------------------------------------------------------------------------------ TLS


def test_untrusted_ca_is_network_error_without_retry(
    start: Callable[..., LocalServer],
    docker_config: Path,
    ca: CertificateAuthority,
    tmp_path: Path,
) -> None:
    rogue = make_ca(tmp_path / "rogue", "rogue CA")
    srv: LocalServer = start(authority=rogue)
    trust_ca(docker_config, ca, srv)  # trusts the real CA, not the rogue one
    with TrustServerSession(srv.url, GUN, limits=FAST, docker_config=docker_config) as session:
        with pytest.raises(NetworkError, match="TLS") as info:
            session.get_metadata("root", 10)
        assert info.value.exit_code == 6
        assert session.request_count == 1


def test_no_ca_directory_means_system_roots_only(
    start: Callable[..., LocalServer], docker_config: Path
) -> None:
    srv: LocalServer = start()
    with TrustServerSession(srv.url, GUN, limits=FAST, docker_config=docker_config) as session:
        with pytest.raises(NetworkError, match="TLS"):
            session.get_metadata("root", 10)


def test_client_certificate_pairs_validated_like_docker(
    docker_config: Path, ca: CertificateAuthority, tmp_path: Path
) -> None:
    directory = docker_config / "tls" / "notary.test:4443"
    issued = ca.issue_server(tmp_path / "client", "client")
    directory.mkdir(parents=True)
    shutil.copy(issued.cert_path, directory / "client.cert")
    with pytest.raises(ConfigError) as info:
        TrustServerSession(
            "https://notary.test:4443", GUN, limits=FAST, docker_config=docker_config
        )
    assert info.value.message == (
        "missing key client.key for client certificate client.cert. "
        "CA certificates must use the extension .crt"
    )
    shutil.copy(issued.key_path, directory / "client.key")
    TrustServerSession(
        "https://notary.test:4443", GUN, limits=FAST, docker_config=docker_config
    ).close()
    (directory / "client.cert").unlink()
    with pytest.raises(ConfigError) as info:
        TrustServerSession(
            "https://notary.test:4443", GUN, limits=FAST, docker_config=docker_config
        )
    assert info.value.message == "missing client certificate client.cert for key client.key"


def test_bad_ca_file_is_config_error(docker_config: Path) -> None:
    directory = docker_config / "tls" / "notary.test"
    directory.mkdir(parents=True)
    (directory / "ca.crt").write_text("not a certificate")
    with pytest.raises(ConfigError, match=r"ca\.crt"):
        TrustServerSession("https://notary.test", GUN, limits=FAST, docker_config=docker_config)


# ------------------------------------------------------------------------------ auth


def test_parse_challenges() -> None:
    parsed = parse_challenges(
        [
            'Bearer realm="https://auth.test/token",Service="notary, the server",scope="a:b:pull"',
            'BASIC realm=x, Negotiate abc==, Bearer realm="q\\"x"',
        ]
    )
    assert parsed == [
        Challenge(
            "bearer",
            {
                "realm": "https://auth.test/token",
                "service": "notary, the server",
                "scope": "a:b:pull",
            },
        ),
        Challenge("basic", {"realm": "x"}),
        Challenge("negotiate", {}),
        Challenge("bearer", {"realm": 'q"x'}),
    ]


def bearer_setup(
    server: LocalServer, realm: str, token_server: LocalServer | None = None, **token_doc: Any
) -> LocalServer:
    """The trust server demands `Bearer good-token`; the token endpoint hands it out."""
    tokens = token_server or server
    doc = token_doc or {"token": "good-token", "expires_in": 300}
    tokens.routes["/token"] = serve(json.dumps(doc).encode())

    def protected(req: Handler) -> None:
        if req.headers.get("Authorization") == "Bearer good-token":
            req.reply(200, b"{}")
        else:
            req.reply(
                401, b"", {"WWW-Authenticate": f'Bearer realm="{realm}",service="notary.test"'}
            )

    server.routes[TUF + "root.json"] = protected
    server.routes[TUF + "timestamp.json"] = protected
    return tokens


def token_requests(server: LocalServer) -> list[Seen]:
    return [seen for seen in server.seen if seen.path == "/token"]


def test_bearer_anonymous_token_is_fetched_once_and_reused(
    server: LocalServer, connect: Callable[..., TrustServerSession]
) -> None:
    bearer_setup(server, f"{server.url}/token")
    session = connect()
    assert session.get_metadata("root", 10) == b"{}"
    assert session.get_metadata("timestamp", 10) == b"{}"
    (token_req,) = token_requests(server)
    assert token_req.method == "GET"
    assert token_req.query == {
        "service": ["notary.test"],
        "scope": [f"repository:{GUN}:pull"],
    }
    assert "authorization" not in token_req.headers
    assert session.request_count == 4


def test_bearer_with_basic_credentials(
    server: LocalServer, connect: Callable[..., TrustServerSession]
) -> None:
    bearer_setup(server, f"{server.url}/token", access_token="good-token", token="other")
    session = connect(credentials=lambda: Creds("bob", "s3cret"))
    assert session.get_metadata("root", 10) == b"{}"  # access_token wins over token
    (token_req,) = token_requests(server)
    assert token_req.query["account"] == ["bob"]
    assert token_req.headers["authorization"] == "Basic " + base64.b64encode(b"bob:s3cret").decode()


def test_bearer_with_identity_token_posts_refresh_grant(
    server: LocalServer, connect: Callable[..., TrustServerSession]
) -> None:
    bearer_setup(server, f"{server.url}/token")
    session = connect(credentials=lambda: Creds("bob", "", identitytoken="refresh-me"))
    assert session.get_metadata("root", 10) == b"{}"
    (token_req,) = token_requests(server)
    assert token_req.method == "POST"
    form = parse_qs(token_req.body.decode())
    assert form == {
        "grant_type": ["refresh_token"],
        "refresh_token": ["refresh-me"],
        "client_id": ["docker"],
        "scope": [f"repository:{GUN}:pull"],
        "service": ["notary.test"],
    }


def test_expired_token_is_renewed(
    server: LocalServer, connect: Callable[..., TrustServerSession]
) -> None:
    bearer_setup(server, f"{server.url}/token", token="good-token", expires_in=10)
    clock = Clock()
    session = connect(Limits(total_timeout=1000), clock=clock)
    session.get_metadata("root", 10)
    clock.offset = 30  # under the 60 s floor: still cached
    session.get_metadata("root", 10)
    assert len(token_requests(server)) == 1
    clock.offset = 61
    session.get_metadata("root", 10)
    assert len(token_requests(server)) == 2


def test_http_realm_on_loopback_is_allowed(
    server: LocalServer,
    connect: Callable[..., TrustServerSession],
    start: Callable[..., LocalServer],
) -> None:
    plain: LocalServer = start(tls=False)
    bearer_setup(server, f"{plain.url}/token", token_server=plain)
    session = connect()
    assert session.get_metadata("root", 10) == b"{}"
    assert len(token_requests(plain)) == 1


@pytest.mark.parametrize(
    "realm", ["http://token.test/token", "ftp://127.0.0.1/token", "https://u:p@auth.test/t", ""]
)
def test_bad_realms_are_refused_before_sending_anything(
    server: LocalServer, connect: Callable[..., TrustServerSession], realm: str
) -> None:
    bearer_setup(server, realm)
    session = connect(credentials=lambda: Creds("bob", "pw"))
    with pytest.raises(AuthError, match="realm"):
        session.get_metadata("root", 10)
    assert session.request_count == 1


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (401, b"no"),
        (403, b"no"),
        (500, b"broken"),
        (200, b"<html>portal</html>"),
        (200, b'{"expires_in": 300}'),
        (200, b'["token"]'),
        (200, b'{"token": "bad token"}'),
    ],
)
def test_token_endpoint_failures_are_auth_errors(
    server: LocalServer, connect: Callable[..., TrustServerSession], status: int, body: bytes
) -> None:
    bearer_setup(server, f"{server.url}/token")
    server.routes["/token"] = serve(body, status)
    session = connect()
    with pytest.raises(AuthError) as info:
        session.get_metadata("root", 10)
    assert info.value.exit_code == 7


def test_401_after_token_sent_is_auth_error(
    server: LocalServer, connect: Callable[..., TrustServerSession]
) -> None:
    bearer_setup(server, f"{server.url}/token", token="wrong-token")
    session = connect()
    with pytest.raises(AuthError, match="401"):
        session.get_metadata("root", 10)


def test_basic_challenge_without_credentials_is_auth_error(
    server: LocalServer, connect: Callable[..., TrustServerSession]
) -> None:
    server.routes[TUF + "root.json"] = serve(b"", 401, WWW_Authenticate='Basic realm="trust"')
    session = connect(credentials=lambda: Creds("alice", ""))
    with pytest.raises(AuthError, match="no basic auth credentials"):
        session.get_metadata("root", 10)
    assert session.request_count == 1


def test_failing_credentials_fail_every_request_of_the_session(
    server: LocalServer, connect: Callable[..., TrustServerSession]
) -> None:
    """A credential helper's failure is the answer for the whole session: a later request
    (the root after an early timestamp request, trust.prefetch) fails with the helper's
    message too, instead of going out without credentials and reporting the server's 401."""
    calls: list[int] = []

    def helper_fails() -> Creds:
        calls.append(1)
        raise AuthError("error getting credentials from docker-credential-x: keychain is locked")

    for name in ("root", "timestamp"):
        server.routes[TUF + f"{name}.json"] = serve(
            b"", 401, WWW_Authenticate='Basic realm="trust"'
        )
    session = connect(credentials=helper_fails)
    for name in ("timestamp", "root"):
        with pytest.raises(AuthError, match="keychain is locked"):
            session.get_metadata(name, 10)
    assert calls == [1]  # the helper runs once
    assert session.request_count == 2  # each request met its challenge, nothing more


def test_credentials_only_go_to_the_trust_server(
    server: LocalServer, connect: Callable[..., TrustServerSession]
) -> None:
    """The first request carries nothing; the token endpoint gets the password, metadata the
    bearer token."""
    bearer_setup(server, f"{server.url}/token")
    session = connect(credentials=lambda: Creds("bob", "pw"))
    session.get_metadata("root", 10)
    first, token, meta = server.seen
    assert "authorization" not in first.headers
    assert token.headers["authorization"].startswith("Basic ")
    assert meta.headers["authorization"] == "Bearer good-token"


# ------------------------------------------------------------------------------ environment


def test_proxy_comes_from_the_environment(
    server: LocalServer, connect: Callable[..., TrustServerSession], monkeypatch: pytest.MonkeyPatch
) -> None:
    server.routes[TUF + "root.json"] = serve(b"{}")
    for name in ("NO_PROXY", "no_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:1")  # nothing listens there
    with pytest.raises(NetworkError, match="error contacting notary server"):
        connect(Limits(retries=0)).get_metadata("root", 10)
    assert server.seen == []
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    assert connect(Limits(retries=0)).get_metadata("root", 10) == b"{}"


def test_tls_context_floor_and_verification(docker_config: Path) -> None:
    context = tls_context(docker_config, "notary.test")
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname
    with pytest.raises(InputError):
        tls_context(docker_config, "..")


def test_tls_context_is_built_once_by_concurrent_sessions(
    docker_config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`check`'s workers and the early requests ask together: one system-store load, not one
    each (the cache alone lets every thread miss it at once)."""
    import threading

    from trust.http import tls

    built: list[str] = []
    real = tls._build_tls_context

    def slow_build(config: Path, netloc: str) -> ssl.SSLContext:
        built.append(netloc)
        threading.Event().wait(0.05)  # long enough for every thread to reach the cache
        return real(config, netloc)

    monkeypatch.setattr(tls, "_build_tls_context", slow_build)
    tls._cached_tls_context.cache_clear()
    results: list[ssl.SSLContext] = []
    threads = [
        threading.Thread(target=lambda: results.append(tls_context(docker_config, "once.test")))
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    tls._cached_tls_context.cache_clear()
    assert built == ["once.test"]
    assert len(results) == 4 and all(r is results[0] for r in results)


# ------------------------------------------------------------------- realms (issue 11 item 8)


def other_realm(start: Callable[..., LocalServer]) -> LocalServer:
    """A listener on another host ("localhost", not the trust server's 127.0.0.1) that records
    everything and would hand out the token."""
    listener: LocalServer = start()
    listener.routes["/token"] = serve(json.dumps({"token": "good-token"}).encode())
    return listener


def test_credentials_never_go_to_a_realm_on_another_host(
    server: LocalServer,
    connect: Callable[..., TrustServerSession],
    start: Callable[..., LocalServer],
) -> None:
    listener = other_realm(start)
    realm = f"https://localhost:{listener.port}/token"
    bearer_setup(server, realm, token_server=listener)
    session = connect(credentials=lambda: Creds("bob", "s3cret"))
    with pytest.raises(AuthError) as info:
        session.get_metadata("root", 10)
    assert info.value.exit_code == 7
    assert realm in info.value.message
    assert "[auth] realms" in (info.value.hint or "")
    assert listener.seen == []  # nothing at all reached the other host
    assert session.request_count == 1


def test_a_configured_realm_receives_the_credentials(
    server: LocalServer,
    connect: Callable[..., TrustServerSession],
    start: Callable[..., LocalServer],
) -> None:
    listener = other_realm(start)
    bearer_setup(server, f"https://localhost:{listener.port}/token", token_server=listener)
    session = connect(
        credentials=lambda: Creds("bob", "s3cret"), realms=[f"https://localhost:{listener.port}"]
    )
    assert session.get_metadata("root", 10) == b"{}"
    (token_req,) = token_requests(listener)
    assert token_req.headers["authorization"] == "Basic " + base64.b64encode(b"bob:s3cret").decode()


def test_an_anonymous_token_may_come_from_another_host(
    server: LocalServer,
    connect: Callable[..., TrustServerSession],
    start: Callable[..., LocalServer],
) -> None:
    """Without credentials nothing secret is at stake: the realm is asked anonymously."""
    listener = other_realm(start)
    bearer_setup(server, f"https://localhost:{listener.port}/token", token_server=listener)
    assert connect().get_metadata("root", 10) == b"{}"
    (token_req,) = token_requests(listener)
    assert "authorization" not in token_req.headers and "account" not in token_req.query


@pytest.mark.parametrize(
    ("realm", "allowed"),
    [
        ("https://notary.example.com/auth", True),  # the trust server's host, any port
        ("https://notary.example.com:5001/auth", True),
        ("https://registry.example.com/token", True),  # the registry's host
        ("https://auth.example.com/token", True),  # configured origin
        ("https://auth.example.com:8443/token", False),  # another port than configured
        ("https://sso.example.com/realm/token", True),  # configured path prefix
        ("https://sso.example.com/realmx", False),
        ("https://evil.example/token", False),
    ],
)
def test_realm_policy(realm: str, allowed: bool) -> None:
    policy = RealmPolicy.for_server(
        "https://notary.example.com",
        "registry.example.com:5000",
        ["https://auth.example.com", "https://sso.example.com/realm"],
    )
    assert policy.allows(realm) is allowed


def test_docker_hub_realm_is_well_known() -> None:
    hub = RealmPolicy.for_server("https://notary.docker.io", "docker.io")
    assert hub.allows("https://auth.docker.io/token")
    assert not RealmPolicy.for_server("https://notary.example.com", "example.com").allows(
        "https://auth.docker.io/token"
    )


# ------------------------------------------------------------- token store (issue 13)


def test_a_kept_token_makes_the_next_run_one_request(
    server: LocalServer, connect: Callable[..., TrustServerSession], docker_config: Path
) -> None:
    bearer_setup(server, f"{server.url}/token", token="good-token", expires_in=300)
    store = TokenStore(docker_config / "trust" / "tokens")
    first = connect(credentials=lambda: Creds("bob", "pw"), token_store=store)
    assert first.get_metadata("timestamp", 10) == b"{}"
    assert first.request_count == 3  # 401, token, timestamp
    (kept,) = store.directory.iterdir()
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.directory.stat().st_mode) == 0o700
    assert "pw" not in kept.read_text()  # a pull token, never the password
    warm = connect(credentials=lambda: Creds("bob", "pw"), token_store=store)
    assert warm.get_metadata("timestamp", 10) == b"{}"
    assert warm.request_count == 1
    assert server.seen[-1].headers["authorization"] == "Bearer good-token"


@pytest.mark.parametrize("changed", [Creds("bob", "new-pw"), Creds("eve", "pw"), None])
def test_a_kept_token_is_only_used_with_the_credentials_it_was_issued_for(
    server: LocalServer,
    connect: Callable[..., TrustServerSession],
    docker_config: Path,
    changed: Creds | None,
) -> None:
    bearer_setup(server, f"{server.url}/token")
    store = TokenStore(docker_config / "trust" / "tokens")
    assert connect(credentials=lambda: Creds("bob", "pw"), token_store=store).get_metadata(
        "timestamp", 10
    )
    session = connect(credentials=lambda: changed, token_store=store)
    assert session.get_metadata("timestamp", 10) == b"{}"
    assert session.request_count == 3  # the kept token was not sent: 401, token, timestamp
    assert "authorization" not in server.seen[-3].headers


def test_a_kept_token_is_never_used_for_another_scope_or_host(
    server: LocalServer, docker_config: Path, start: Callable[..., LocalServer], ca: Any
) -> None:
    store = TokenStore(docker_config / "trust" / "tokens")
    store.save(
        server.url, f"repository:{GUN}:pull", StoredToken("r", "s", "kept", time.time() + 300)
    )
    assert store.load(server.url, "repository:registry.test/org/other:pull") is None
    assert store.load("https://127.0.0.1:1", f"repository:{GUN}:pull") is None
    assert store.load(server.url, f"repository:{GUN}:pull") is not None


def test_an_expired_kept_token_is_dropped(docker_config: Path) -> None:
    now = [1000.0]
    store = TokenStore(docker_config / "tokens", wall=lambda: now[0])
    scope = f"repository:{GUN}:pull"
    store.save("https://n.test", scope, StoredToken("r", "s", "kept", 1100.0))
    assert store.load("https://n.test", scope) is not None
    now[0] = 1095.0  # inside the safety margin
    assert store.load("https://n.test", scope) is None
    assert list(store.directory.iterdir()) == []


def test_a_basic_challenge_is_remembered_without_the_password(
    server: LocalServer, connect: Callable[..., TrustServerSession], docker_config: Path
) -> None:
    basic = "Basic " + base64.b64encode(b"alice:pw").decode()

    def protected(req: Handler) -> None:
        if req.headers.get("Authorization") == basic:
            req.reply(200, b"{}")
        else:
            req.reply(401, b"", {"WWW-Authenticate": 'Basic realm="trust"'})

    server.routes[TUF + "timestamp.json"] = protected
    store = TokenStore(docker_config / "trust" / "tokens")
    first = connect(credentials=lambda: Creds("alice", "pw"), token_store=store)
    assert first.get_metadata("timestamp", 10) == b"{}" and first.request_count == 2
    (kept,) = store.directory.iterdir()
    assert "cHc" not in kept.read_text() and '"pw"' not in kept.read_text()
    warm = connect(credentials=lambda: Creds("alice", "pw"), token_store=store)
    assert warm.get_metadata("timestamp", 10) == b"{}" and warm.request_count == 1
    assert server.seen[-1].headers["authorization"] == basic
    other = connect(credentials=lambda: Creds("alice", "other"), token_store=store)
    with pytest.raises(AuthError):
        other.get_metadata("timestamp", 10)
    assert other.request_count == 2  # not sent preemptively: 401, then the wrong password


def test_a_token_the_server_refuses_is_not_kept(
    server: LocalServer, connect: Callable[..., TrustServerSession], docker_config: Path
) -> None:
    bearer_setup(server, f"{server.url}/token", token="wrong-token")
    store = TokenStore(docker_config / "trust" / "tokens")
    with pytest.raises(AuthError, match="401"):
        connect(token_store=store).get_metadata("root", 10)
    assert not store.directory.exists() or list(store.directory.iterdir()) == []


def test_a_refused_kept_token_is_forgotten_and_the_handshake_runs_again(
    server: LocalServer, connect: Callable[..., TrustServerSession], docker_config: Path
) -> None:
    bearer_setup(server, f"{server.url}/token")
    store = TokenStore(docker_config / "trust" / "tokens")
    scope = f"repository:{GUN}:pull"
    anonymous = credential_fingerprint("", "", "")
    store.save(server.url, scope, StoredToken("x", "y", "revoked", time.time() + 300, anonymous))
    session = connect(token_store=store)
    assert session.get_metadata("root", 10) == b"{}"
    assert session.request_count == 3  # the kept token refused (401), token, retry
    assert store.load(server.url, scope).value == "good-token"  # type: ignore[union-attr]


def test_a_kept_token_fingerprint_tells_apart_credentials_holding_a_nul() -> None:
    # Credentials reach the proxy in a client's JSON header, where "\u0000" is valid: joined
    # with NUL, ("a\0b", "c") and ("a", "b\0c") had one fingerprint, so a token kept for one
    # client's credentials was used with another's.
    kept = credential_fingerprint("a\0b", "c", "")
    assert fingerprint_matches(kept, "a\0b", "c", "")
    assert not fingerprint_matches(kept, "a", "b\0c", "")
    assert not fingerprint_matches(credential_fingerprint("a", "b", "\0"), "a", "b\0", "")


# ------------------------------------------------------------ messages (issue 14)


def test_unresolvable_host_is_said_in_words(docker_config: Path) -> None:
    with TrustServerSession(
        "https://no-such-host.invalid", GUN, limits=Limits(retries=0), docker_config=docker_config
    ) as session:
        with pytest.raises(NetworkError) as info:
            session.get_metadata("timestamp", 10)
    error = info.value
    assert error.message == "error contacting notary server: cannot resolve no-such-host.invalid"
    assert error.exit_code == 6
    assert error.detail and "no-such-host.invalid" in error.detail  # the raw text, for -v


def test_refused_connection_is_said_in_words(docker_config: Path) -> None:
    with TrustServerSession(
        "https://127.0.0.1:1", GUN, limits=FAST, docker_config=docker_config
    ) as session:
        with pytest.raises(NetworkError) as info:
            session.get_metadata("timestamp", 10)
    assert info.value.message == "error contacting notary server: connection refused by 127.0.0.1:1"
    assert "Connection" not in info.value.message and info.value.detail


def test_untrusted_certificate_names_the_ca_directory(
    start: Callable[..., LocalServer], docker_config: Path
) -> None:
    srv: LocalServer = start()  # its CA is not in docker_config/tls
    with TrustServerSession(srv.url, GUN, limits=FAST, docker_config=docker_config) as session:
        with pytest.raises(NetworkError) as info:
            session.get_metadata("root", 10)
    netloc = f"127.0.0.1:{srv.port}"
    assert info.value.message == (
        f"error contacting notary server: TLS: certificate not trusted for {netloc} "
        f"(put its CA in {docker_config / 'tls' / netloc}/, named *.crt)"
    )
    assert "_Watched" not in info.value.message and "SSL" in (info.value.detail or "")


def test_cli_prints_the_words_and_the_detail_only_with_verbose(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from cli.main import main

    env = {
        "DOCKER_CONFIG": str(tmp_path / "docker"),
        "DOCKER_CONTENT_TRUST_SERVER": "https://127.0.0.1:1",
        "TRUSTPULL_CONFIG": str(tmp_path / "none.toml"),
        "HOME": str(tmp_path),
    }
    (tmp_path / "none.toml").write_text("")
    plain = CliRunner().invoke(main, ["resolve", "127.0.0.1:5000/a/b:1"], env=env)
    assert plain.exit_code == 6
    assert "Error: error contacting notary server: connection refused by 127.0.0.1:1" in (
        plain.output
    )
    assert "detail:" not in plain.output
    verbose = CliRunner().invoke(main, ["resolve", "-v", "127.0.0.1:5000/a/b:1"], env=env)
    assert verbose.exit_code == 6 and "detail: " in verbose.output


# ----------------------------------------------- Docker Hub's Notary is gone (issue 14)


@pytest.fixture
def hub(
    ca: CertificateAuthority,
    docker_config: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[LocalServer]:
    """A local server answering as notary.docker.io:443 (its name in a test CA certificate)."""
    issued = ca.issue_server(tmp_path / "hub", hosts=("notary.docker.io",))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(issued.cert_path, issued.key_path)
    srv = LocalServer(context)
    directory = docker_config / "tls" / "notary.docker.io"
    directory.mkdir(parents=True)
    shutil.copy(ca.cert_path, directory / "ca.crt")
    original = urllib3.util.connection.create_connection

    def create_connection(address: tuple[str, int], *args: Any, **kwargs: Any) -> Any:
        if address == ("notary.docker.io", 443):
            if srv.stop.is_set():
                raise ConnectionRefusedError(111, "Connection refused")
            address = ("127.0.0.1", srv.port)
        return original(address, *args, **kwargs)

    monkeypatch.setattr(urllib3.util.connection, "create_connection", create_connection)
    yield srv
    srv.close()


def hub_update(docker_config: Path, name: str = "alpine:3.19") -> TrustpullError:
    client = NotaryClient(Settings(docker_config=docker_config, limits=FAST), warn=lambda _: None)
    with pytest.raises(TrustpullError) as info:
        client.update(parse(name))
    return info.value


def test_docker_hub_without_trust_data_says_what_to_do(
    hub: LocalServer, docker_config: Path
) -> None:
    error = hub_update(docker_config)  # root.json: 404
    assert isinstance(error, NoTrustDataError) and error.exit_code == 4
    assert error.hint == DOCKER_HUB_NOTICE
    text = error.diagnostics()
    assert "Docker Hub no longer serves content trust data" in text
    assert "cannot be verified with Notary" in text
    assert "[[rules]]" in text and "[trust_servers]" in text and "[[trust_sources]]" in text
    assert hub.paths() == ["/v2/docker.io/library/alpine/_trust/tuf/root.json"]


def test_docker_hub_without_an_answer_says_what_to_do(
    hub: LocalServer, docker_config: Path
) -> None:
    hub.stop.set()  # connections to notary.docker.io are refused from now on
    error = hub_update(docker_config)
    assert isinstance(error, NetworkError) and error.exit_code == 6
    assert error.message == (
        "error contacting notary server: connection refused by notary.docker.io"
    )
    assert error.hint == DOCKER_HUB_NOTICE


def test_other_trust_servers_get_no_docker_hub_notice(
    server: LocalServer, docker_config: Path
) -> None:
    settings = Settings(docker_config=docker_config, limits=FAST, trust_server_override=server.url)
    with pytest.raises(NoTrustDataError) as info:
        NotaryClient(settings, warn=lambda _: None).update(parse("alpine:3.19"))
    assert info.value.hint is None


def test_config_auth_realms_are_parsed_strictly(tmp_path: Path) -> None:
    from trust.config import load_config

    path = tmp_path / "config.toml"
    path.write_text('[auth]\nrealms = ["https://auth.example.com", "https://sso.example.com/t"]\n')
    settings = load_config({"HOME": str(tmp_path)}, config_file=path).settings
    assert settings.auth_realms == ("https://auth.example.com", "https://sso.example.com/t")
    for body, problem in [
        ('[auth]\nrealms = ["http://auth.example.com"]\n', "must be an https URL"),
        ('[auth]\nrealms = "https://auth.example.com"\n', "must be an array"),
        ('[auth]\nrealms = ["https://u:p@auth.example.com"]\n', "must not carry credentials"),
        ('[auth]\nrealm = ["https://auth.example.com"]\n', "unknown key"),
    ]:
        path.write_text(body)
        with pytest.raises(ConfigError, match=problem) as info:
            load_config({"HOME": str(tmp_path)}, config_file=path)
        assert "auth.realm" in info.value.message


# ------------------------------------------------------------------------------ shared connections


def _count_connections(server: LocalServer, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    accepted = [0]
    original = server.get_request

    def counting() -> tuple[Any, Any]:
        accepted[0] += 1
        return original()

    monkeypatch.setattr(server, "get_request", counting)
    return accepted


def test_a_ca_file_rewritten_with_its_size_and_mtime_put_back_is_read_again(
    docker_config: Path, tmp_path: Path
) -> None:
    """The TLS context is cached per CA files; a CA replaced by one of the same size whose
    mtime is put back (`cp -p`, `os.utime`) is another CA: the context is built again, or a
    long-running proxy would go on trusting the replaced one (the trust cache's identities
    compare inode and ctime for the same reason)."""
    from fixtures.tlsgen import make_ca

    directory = docker_config / "tls" / "replaced.test"
    directory.mkdir(parents=True)
    old, new = (make_ca(tmp_path / n).cert_path.read_bytes() for n in ("old", "new"))
    width = max(len(old), len(new))
    old, new = old.ljust(width, b"\n"), new.ljust(width, b"\n")  # text after PEM is ignored
    (directory / "ca.crt").write_bytes(old)
    before = os.stat(directory / "ca.crt")
    first = tls_context(docker_config, "replaced.test")
    staged = directory / "ca.crt.new"  # not *.crt: not read while staged
    staged.write_bytes(new)
    os.replace(staged, directory / "ca.crt")
    os.utime(directory / "ca.crt", ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.stat(directory / "ca.crt")
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    assert tls_context(docker_config, "replaced.test") is not first


def test_sessions_to_one_server_share_connections_under_one_tls_configuration(
    server: LocalServer,
    docker_config: Path,
    tmp_path: Path,
    ca: CertificateAuthority,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """issue 13: `check` opens one session per repository; they reuse one kept-alive
    connection to the trust server, but never one made under another TLS configuration."""
    accepted = _count_connections(server, monkeypatch)
    for gun in ("registry.test/org/a", "registry.test/org/b"):
        server.routes[f"/v2/{gun}/_trust/tuf/timestamp.json"] = serve(gun.encode())
    first = TrustServerSession(
        server.url, "registry.test/org/a", limits=FAST, docker_config=docker_config
    )
    second = TrustServerSession(
        server.url, "registry.test/org/b", limits=FAST, docker_config=docker_config
    )
    assert first.get_metadata("timestamp", 100) == b"registry.test/org/a"
    first.close()  # closing one session leaves the shared connections to the others
    assert second.get_metadata("timestamp", 100) == b"registry.test/org/b"
    assert second.request_count == 1
    assert accepted[0] == 1
    other_config = tmp_path / "other-config"
    trust_ca(other_config, ca, server)
    third = TrustServerSession(
        server.url, "registry.test/org/a", limits=FAST, docker_config=other_config
    )
    assert third.get_metadata("timestamp", 100) == b"registry.test/org/a"
    assert accepted[0] == 2
    for session in (second, third):
        session.close()


def test_one_session_used_by_many_threads_at_once(
    server: LocalServer, connect: Callable[..., TrustServerSession]
) -> None:
    """A Notary update downloads several delegations at once on its one session: every answer
    reaches its caller and every request is counted."""
    names = [f"targets/d{i}" for i in range(8)]
    for name in names:
        server.routes[TUF + f"{name}.json"] = serve(name.encode())
    session = connect()
    results: dict[str, list[bytes]] = {name: [] for name in names}

    def worker(name: str) -> None:
        for _ in range(10):
            results[name].append(session.get_metadata(name, 100))

    threads = [threading.Thread(target=worker, args=(name,)) for name in names]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert results == {name: [name.encode()] * 10 for name in names}
    assert session.request_count == 80
