"""Engine requests and error mapping against a fake engine on a unix socket; progress output."""

from __future__ import annotations

import base64
import gc
import io
import json
import socketserver
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from cli.progress import PullProgress
from trust.credentials import RegistryAuth
from trust.engine import Engine, _json_messages
from trust.errors import AuthError, EngineError

Reply = tuple[int, list[bytes]]


@dataclass
class FakeEngine:
    """Records requests; answers /version itself and everything else from `routes`."""

    socket_path: Path
    routes: dict[tuple[str, str], Callable[[], Reply]] = field(default_factory=dict)
    requests: list[dict[str, Any]] = field(default_factory=list)
    #: Sent on every answer (podman's service sends `Libpod-Api-Version`).
    headers: dict[str, str] = field(default_factory=dict)


def _handler(fake: FakeEngine) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _answer(self, method: str) -> None:
            parts = urlsplit(self.path)
            fake.requests.append(
                {
                    "method": method,
                    "path": parts.path,
                    "query": parse_qs(parts.query),
                    "headers": dict(self.headers),
                }
            )
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            if parts.path == "/version":
                status, chunks = 200, [json.dumps({"ApiVersion": "1.41"}).encode()]
            else:
                route = fake.routes.get((method, parts.path))
                status, chunks = route() if route else (404, [b'{"message":"no route"}'])
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            for name, value in fake.headers.items():
                self.send_header(name, value)
            self.end_headers()
            try:
                for chunk in chunks:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                self.wfile.write(b"0\r\n\r\n")
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client stopped reading at an error message, as it should

        def do_GET(self) -> None:
            self._answer("GET")

        def do_POST(self) -> None:
            self._answer("POST")

    return Handler


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


@pytest.fixture()
def fake(tmp_path: Path) -> Iterator[FakeEngine]:
    fake = FakeEngine(tmp_path / "e.sock")
    server = _Server(str(fake.socket_path), _handler(fake))
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    yield fake
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture()
def engine(fake: FakeEngine) -> Iterator[Engine]:
    with Engine.connect({"DOCKER_HOST": f"unix://{fake.socket_path}"}, timeout=5) as engine:
        yield engine


def _stream(*messages: dict[str, Any]) -> Callable[[], Reply]:
    return lambda: (200, [json.dumps(m).encode() + b"\r\n" for m in messages])


PULLED = (
    {"status": "Pulling from ns/app", "id": "1.0"},
    {"status": "Downloading", "id": "abc", "progress": "[==>  ] 1B/2B", "progressDetail": {}},
    {"status": "Pull complete", "id": "abc"},
    {"status": "Digest: sha256:" + "a" * 64},
)


def test_version_negotiated(engine: Engine) -> None:
    assert engine.api_version == "1.41"


def test_pull_request_and_events(fake: FakeEngine, engine: Engine) -> None:
    fake.routes["POST", "/v1.41/images/create"] = _stream(*PULLED)
    events: list[dict[str, Any]] = []
    engine.pull("r.example/ns/app", "1.0", auth=None, on_event=events.append)
    request = fake.requests[-1]
    assert request["query"] == {"fromImage": ["r.example/ns/app"], "tag": ["1.0"]}
    assert request["headers"]["X-Registry-Auth"] == "e30="
    assert events == list(PULLED)


def test_pull_by_digest_with_auth_and_platform(fake: FakeEngine, engine: Engine) -> None:
    fake.routes["POST", "/v1.41/images/create"] = _stream(*PULLED)
    digest = "sha256:" + "b" * 64
    auth = RegistryAuth(username="u", password="p", serveraddress="r.example")
    engine.pull("r.example/ns/app", digest, auth=auth, platform="Linux/AMD64")
    request = fake.requests[-1]
    assert request["query"]["tag"] == [digest]
    assert request["query"]["platform"] == ["linux/amd64"]
    sent = json.loads(base64.urlsafe_b64decode(request["headers"]["X-Registry-Auth"]))
    assert sent == {"username": "u", "password": "p", "serveraddress": "r.example"}


def test_pull_all_tags_omits_tag(fake: FakeEngine, engine: Engine) -> None:
    fake.routes["POST", "/v1.41/images/create"] = _stream(*PULLED)
    engine.pull("r.example/ns/app", None, auth=None, all_tags=True)
    assert "tag" not in fake.requests[-1]["query"]


def test_error_inside_stream(fake: FakeEngine, engine: Engine) -> None:
    fake.routes["POST", "/v1.41/images/create"] = _stream(
        PULLED[0], {"errorDetail": {"message": "read: connection reset"}, "error": "read: reset"}
    )
    with pytest.raises(EngineError, match="read: reset") as info:
        engine.pull("r.example/ns/app", "1.0", auth=None)
    assert not isinstance(info.value, AuthError)


def test_unauthorized_inside_stream_is_auth_error(fake: FakeEngine, engine: Engine) -> None:
    fake.routes["POST", "/v1.41/images/create"] = _stream(
        {"errorDetail": {"message": "unauthorized: authentication required"}}
    )
    with pytest.raises(AuthError, match="authentication required"):
        engine.pull("r.example/ns/app", "1.0", auth=None)


@pytest.mark.parametrize(
    ("status", "message", "kind"),
    [
        (404, "manifest for r.example/ns/app:2 not found: manifest unknown", EngineError),
        (500, "Get https://r.example/v2/: dial tcp: connection refused", EngineError),
        (401, "Head ...: no basic auth credentials", AuthError),
        (404, "pull access denied for x, repository does not exist: denied", AuthError),
    ],
)
def test_http_errors(
    fake: FakeEngine, engine: Engine, status: int, message: str, kind: type[Exception]
) -> None:
    fake.routes["POST", "/v1.41/images/create"] = lambda: (
        status,
        [json.dumps({"message": message}).encode()],
    )
    with pytest.raises(kind) as info:
        engine.pull("r.example/ns/app", "2", auth=None)
    assert type(info.value) is kind
    assert message in str(info.value)


def test_tag_request_and_201_only(fake: FakeEngine, engine: Engine) -> None:
    source = "r.example/ns/app@sha256:" + "c" * 64
    path = f"/v1.41/images/{source}/tag"
    fake.routes["POST", path] = lambda: (201, [])
    engine.tag(source, "r.example/ns/app", "1.0")
    assert fake.requests[-1]["query"] == {"repo": ["r.example/ns/app"], "tag": ["1.0"]}
    fake.routes["POST", path] = lambda: (200, [])
    with pytest.raises(EngineError, match="could not tag"):
        engine.tag(source, "r.example/ns/app", "1.0")


def test_image_repo_digests(fake: FakeEngine, engine: Engine) -> None:
    digests = ["r.example/ns/app@sha256:" + "d" * 64]
    fake.routes["GET", "/v1.41/images/r.example/ns/app:1.0/json"] = lambda: (
        200,
        [json.dumps({"RepoDigests": digests}).encode()],
    )
    assert engine.image_repo_digests("r.example/ns/app:1.0") == digests
    with pytest.raises(EngineError, match="cannot inspect"):
        engine.image_repo_digests("r.example/ns/absent:1.0")


def test_engine_down(tmp_path: Path) -> None:
    with pytest.raises(EngineError, match="Cannot connect to the Docker daemon at unix://"):
        Engine.connect({"DOCKER_HOST": f"unix://{tmp_path}/none.sock"})


# docker-py's UnixHTTPConnection.connect leaks its socket when connect() fails; collect it here
# while ResourceWarning is ignored, or it surfaces later as an unraisable-exception error.
@pytest.mark.filterwarnings("ignore::ResourceWarning")
def test_engine_goes_away(fake: FakeEngine, tmp_path: Path) -> None:
    engine = Engine.connect({"DOCKER_HOST": f"unix://{fake.socket_path}"})
    fake.socket_path.unlink()
    with pytest.raises(EngineError, match="Cannot connect"):
        engine.pull("r.example/ns/app", "1.0", auth=None)
    engine.close()
    gc.collect()


def test_json_stream_split_anywhere() -> None:
    data = b'{"status":"a"}\r\n{"status":"b","id":"x"}{"status":"c"}\n'
    for size in (1, 2, 5, len(data)):
        chunks = iter([data[i : i + size] for i in range(0, len(data), size)])
        assert [m["status"] for m in _json_messages(chunks)] == ["a", "b", "c"]
    with pytest.raises(EngineError, match="truncated"):
        list(_json_messages(iter([b'{"status":'])))


# ------------------------------------------------------------------------------- progress


def test_progress_plain_lines_like_docker_piped() -> None:
    out = io.StringIO()
    render = PullProgress(out, tty=False)
    for event in PULLED:
        render(dict(event))
    assert out.getvalue() == (
        "1.0: Pulling from ns/app\nabc: Pull complete\nDigest: sha256:" + "a" * 64 + "\n"
    )


def test_progress_quiet() -> None:
    out = io.StringIO()
    render = PullProgress(out, quiet=True, tty=True)
    for event in PULLED:
        render(dict(event))
    assert out.getvalue() == ""


def test_progress_terminal_rewrites_layer_lines() -> None:
    out = io.StringIO()
    render = PullProgress(out, tty=True)
    render({"status": "Pulling fs layer", "id": "l1"})
    render({"status": "Pulling fs layer", "id": "l2"})
    render({"status": "Downloading", "id": "l1", "progress": "[=> ] 1B/2B"})
    text = out.getvalue()
    # l1 is two lines above the cursor once l2 exists: up 2, clear, rewrite, back down 2.
    assert text.endswith("\x1b[2A\x1b[2K\rl1: Downloading [=> ] 1B/2B\r\x1b[2B")
    assert text.count("\n") == 2


PODMAN = {"Libpod-Api-Version": "4.3.1"}


def test_podman_is_recognised_by_its_header(fake: FakeEngine, engine: Engine) -> None:
    assert engine.is_podman is False
    fake.headers.update(PODMAN)
    with Engine.connect({"DOCKER_HOST": f"unix://{fake.socket_path}"}, timeout=5) as podman:
        assert podman.is_podman is True


def test_podman_all_tags_refused_before_any_pull(fake: FakeEngine, engine: Engine) -> None:
    """Podman's `fromImage` without `tag` pulls :latest only: never a silent partial pull."""
    fake.headers.update(PODMAN)
    fake.routes["POST", "/v1.41/images/create"] = _stream(*PULLED)
    with pytest.raises(EngineError, match=r"podman.*cannot pull every tag") as info:
        engine.pull("r.example/ns/app", None, auth=None, all_tags=True)
    assert not isinstance(info.value, AuthError)
    assert not [r for r in fake.requests if r["path"].endswith("/images/create")]


@pytest.mark.parametrize(
    ("headers", "advice"),
    [({}, '"insecure-registries" in the daemon'), (PODMAN, "insecure = true to its registries")],
)
def test_plain_http_registry_names_the_engines_setting(
    fake: FakeEngine, engine: Engine, headers: dict[str, str], advice: str
) -> None:
    fake.headers.update(headers)
    text = (
        "initializing source docker://r.example:5000/ns/app:1.0: pinging container registry "
        'r.example:5000: Get "https://r.example:5000/v2/": http: server gave HTTP response to '
        "HTTPS client"
    )
    fake.routes["POST", "/v1.41/images/create"] = _stream({"errorDetail": {"message": text}})
    with pytest.raises(EngineError) as info:
        engine.pull("r.example:5000/ns/app", "1.0", auth=None)
    assert text in info.value.message and advice in info.value.message
    assert "r.example:5000" in info.value.message.split(text)[1]


def test_image_tags_leave_out_podmans_digest_names(fake: FakeEngine, engine: Engine) -> None:
    pinned = "r.example/ns/app@sha256:" + "e" * 64
    fake.routes["GET", "/v1.41/images/r.example/ns/app:1.0/json"] = lambda: (
        200,
        [json.dumps({"RepoTags": [pinned, "r.example/ns/app:1.0"]}).encode()],
    )
    assert engine.image_tags("r.example/ns/app:1.0") == ["r.example/ns/app:1.0"]
