"""The proxy's parser, router and Go-JSON rules, and its framing against a recording fake engine.

The fake engine is a tiny HTTP server on a unix socket that records every request it receives
(method, target, headers, body) and answers 200 `{}` (201 for creates); it stands for the engine
only where the engine's behaviour is not the point: what the proxy FORWARDS is.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.unit._engines import exchange
from trust.proxy import gojson
from trust.proxy.framing import HTTPRefusal, check_head
from trust.proxy.handlers import build_proxy, compare_versions, sanitize
from trust.proxy.routes import match_route, parse_query, parse_target
from trust.proxy.server import DecisionLog, bind_listener
from trust.settings import ProxyConfig, Settings

# ------------------------------------------------------------------------------ pure parts


@pytest.mark.parametrize(
    "raw",
    [
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked",
        b"GET / HTTP/1.0\r\nTransfer-Encoding: chunked",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\r\n chunked",
        b"POST / HTTP/1.1\nHost: x",
        b"POST / HTTP/1.1\r\nHost : x",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 5",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +5",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 5",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked",
        b"POST http://x/ HTTP/1.1\r\nHost: x",
        b"OPTIONS * HTTP/1.1\r\nHost: x",
        b"PRI * HTTP/2.0",
        b"GET / HTTP/1.1",
        b"GET /a#b HTTP/1.1\r\nHost: x",
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close, X-Registry-Auth",
        b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x00b",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=x",
        # X13b: Go lowers media types with Unicode rules (U+0130 -> i, U+212A -> k)
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Type: mult\u0130part/form-data; b=x".encode(),
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain; x=\u212a".encode(),
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: a\r\nContent-Type: b",
        b"GET / HTTP/1.1\r\nHost: x\r\nExpect: foo",
        b"GET / HTTP/3.0\r\nHost: x",
    ],
)
def test_strict_head_refuses_ambiguous_shapes(raw: bytes) -> None:
    with pytest.raises(HTTPRefusal) as refused:
        check_head(raw)
    assert refused.value.status in (400, 417, 501, 505)


def test_strict_head_accepts_what_real_clients_send() -> None:
    head = check_head(
        b"POST /v1.41/images/create?fromImage=a&tag=b HTTP/1.1\r\nHost: api.moby.localhost\r\n"
        b"User-Agent: Docker-Client/28.2.2 (linux)\r\nContent-Length: 0\r\n"
        b"X-Registry-Auth: e30=\r\nConnection: Upgrade\r\nUpgrade: tcp"
    )
    assert head.method == "POST" and head.get(b"x-registry-auth") == b"e30="
    assert head.wants_upgrade() == b"tcp"
    assert check_head(b"GET /_ping HTTP/1.0").version == (1, 0)


def test_version_prefixes_and_decoded_paths_X01_X02() -> None:
    for text in ("/v1.41/images/create", "/v1.41.0/images/create", "/v01.41/images/create"):
        target = parse_target(text + "?fromImage=a")
        assert target.path == "/images/create"
    assert parse_target("/images/create").version is None
    assert parse_target("/v1.41/images%2Fcreate").path == "/images/create"
    assert parse_target("/v1.41/%69mages/create").path == "/images/create"
    with pytest.raises(HTTPRefusal):
        parse_target("/v1.41/images%zz")
    with pytest.raises(HTTPRefusal) as moved:
        parse_target("/v1.41//images/create?x=1")
    assert moved.value.status == 301
    assert (b"location", b"/v1.41/images/create?x=1") in moved.value.headers
    assert compare_versions("1.41.0", "1.41") == 0
    assert compare_versions("1.041", "1.41") == 0
    assert compare_versions("1.99", "1.41") == 1
    assert compare_versions("1", "1.12") == -1


def test_route_table_X04() -> None:
    match = match_route("POST", "/images/evil:latest/tag")
    assert match is not None and match.route.name == "images.tag"
    assert match.params["name"] == "evil:latest"
    assert match_route("POST", "/images/create/") is None
    assert match_route("POST", "/Images/create") is None
    assert match_route("post", "/images/create") is None
    assert match_route("HEAD", "/images/create") is None
    match = match_route("POST", "/images/a/b:1/tag")
    assert match is not None and match.params["name"] == "a/b:1"


def test_query_rules_X14_X16() -> None:
    query = parse_query("FromImage=a&fromImage=b&tag=c+d")
    assert query.first("fromImage") == "b" and query.first("tag") == "c d"
    for bad in ("a=b;c", "a=%zz", "a=%4"):
        with pytest.raises(HTTPRefusal):
            parse_query(bad)


def test_go_json_rules_X18_X19() -> None:
    for body in (
        '{"Image":"good","image":"evil"}',
        '{"IMAGE":"evil"}',
        '{"Image":"good","Image":"evil"}',
        '{"Im\\u0061ge":"evil"}',
    ):
        obj = gojson.loads(body.encode())
        assert gojson.get(obj, "Image") == "evil"
        gojson.set_field(obj, "Image", "pinned")
        assert json.loads(gojson.dumps(obj)) == {"Image": "pinned"}
    obj = gojson.loads(b'{"Ho\\u017ftConfig":{"Privileged":true}}')
    assert gojson.get(gojson.get(obj, "HostConfig"), "Privileged") is True
    with pytest.raises(HTTPRefusal):  # after a normal one, Go merges the two (§1.4)
        gojson.get(gojson.loads(b'{"HostConfig":{},"Ho\\u017ftConfig":{}}'), "HostConfig")
    for bad in (b'{"Image":"a"} {"Image":"b"}', b'{"Image":"a"}x', b"\xff", b"NaN"):
        with pytest.raises(HTTPRefusal):
            gojson.loads(bad)


def test_go_json_merges_and_nulls_are_not_last_wins() -> None:
    """Go decodes a repeated object into what the first set and ignores a null for a string or
    struct field: such duplicates are refused; a ligature key is no field name at all."""
    for body in (
        b'{"Image":"evil","Image":null}',
        b'{"Image":null,"image":"evil","IMAGE":null}',
        b'{"HostConfig":{"Binds":["/run:/r"]},"hostconfig":{}}',
        b'{"HostConfig":{"Binds":["/run:/r"]},"HostConfig":null}',
        b'{"HostConfig":{"Mounts":[{"Type":"image"}]},"HostConfig":{"Mounts":[{}]}}',
    ):
        field = "Image" if b"Image" in body else "HostConfig"
        with pytest.raises(HTTPRefusal) as refused:
            gojson.get(gojson.loads(body), field)
        assert refused.value.status == 400
    decoys = b'{"HostConfig":{"Binds":["/run:/r"]},"Ho\\ufb06Config":{},"HostCon\\ufb01g":{}}'
    assert gojson.get(gojson.get(gojson.loads(decoys), "HostConfig"), "Binds") == ["/run:/r"]
    assert gojson.get(gojson.loads(b'{"\\u212aind":"k","Ima\\u017fe":1}'), "Kind") == "k"
    opts = gojson.loads(b'{"device":"/run","Device":"/tmp"}')
    assert gojson.get_key(opts, "device") == "/run"


def test_refusal_messages_never_change_docker_runs_exit_code() -> None:
    text = sanitize("permission denied; no such file or directory; is a directory")
    assert "permission denied" not in text and "no such file or directory" not in text


def test_proxy_config_is_strict(tmp_path: Path) -> None:
    from trust.config import load_config
    from trust.errors import ConfigError

    cfg = tmp_path / "c.toml"
    cfg.write_text('[proxy]\nmode = "audit"\nsocket_mode = "0660"\nallow_load = true\n')
    proxy = load_config({}, config_file=cfg).settings.proxy
    assert proxy.mode == "audit" and proxy.socket_mode == 0o660 and proxy.allow_load
    for bad in ("allow_lod = true", 'mode = "off"', "allow_load = 1", "max_connections = -1"):
        cfg.write_text(f"[proxy]\n{bad}\n")
        with pytest.raises(ConfigError):
            load_config({}, config_file=cfg)


# ----------------------------------------------------------------- against a fake engine


class _Recorder(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen: list[dict[str, Any]]

    def log_message(self, format: str, *args: Any) -> None:
        return None

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    break
                body += self.rfile.read(size)
                self.rfile.readline()
        self.server.seen.append(  # type: ignore[attr-defined]
            {"method": self.command, "path": self.path, "headers": dict(self.headers), "body": body}
        )
        if "/get?size=" in self.path:  # a chunked stream, as the engine's save answers
            size = int(self.path.rsplit("=", 1)[1])
            self.send_response(200)
            self.send_header("Content-Type", "application/x-tar")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            data, at = _pattern(size), 0
            while at < size:
                step = min(size - at, 1 + (at * 7919) % 70000)
                self.wfile.write(b"%x\r\n" % step + data[at : at + step] + b"\r\n")
                at += step
            self.wfile.write(b"0\r\n\r\n")
            return
        if self.path.endswith("/wait"):  # as the engine's wait: the head now, the body at exit
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.flush()
            time.sleep(1.0)
            exit_body = b'{"StatusCode":0,"Error":null}'
            self.wfile.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(exit_body), exit_body))
            return
        if self.path.endswith("/version"):
            answer = json.dumps({"ApiVersion": "1.41", "MinAPIVersion": "1.12"}).encode()
            status = 200
        elif "/containers/create" in self.path:
            answer, status = b'{"Id":"abc","Warnings":[]}', 201
        else:
            answer, status = b"{}", 200
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _handle


def _pattern(size: int) -> bytes:
    return (bytes(range(256)) * (size // 256 + 1))[:size]


class _UnixServer(ThreadingHTTPServer):
    address_family = socket.AF_UNIX

    def server_bind(self) -> None:
        self.socket.bind(self.server_address)

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, _ = self.socket.accept()
        return sock, ("local", 0)


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    path = str(tmp_path / "engine.sock")
    server = _UnixServer(path, _Recorder)
    server.seen = []  # type: ignore[attr-defined]
    os.chmod(path, 0o660)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield path, server.seen  # type: ignore[attr-defined]
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def proxy(tmp_path: Path, fake: tuple[str, list[dict[str, Any]]]) -> Iterator[str]:
    engine, _ = fake
    config = ProxyConfig(header_timeout=2.0, idle_timeout=5.0)
    listen = str(tmp_path / "p.sock")
    listener = bind_listener(listen, engine, config)
    log_path = tmp_path / "log"
    handle = open(log_path, "w")
    server = build_proxy(Settings(), engine, config, DecisionLog(handle))
    thread = threading.Thread(target=server.serve, args=(listener,), daemon=True)
    thread.start()
    try:
        yield listen
    finally:
        server.stop()
        handle.close()


def _exchange(path: str, data: bytes, wait: float = 1.0) -> bytes:
    return exchange(path, data, wait)


def test_keep_alive_pipelining_and_http10(proxy: str, fake: Any) -> None:
    _, seen = fake
    two = (
        b"GET /v1.41/containers/json HTTP/1.1\r\nHost: x\r\n\r\n"
        b"GET /v1.41/images/json HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    out = _exchange(proxy, two)
    assert out.count(b"HTTP/1.1 200") == 2, out
    assert [s["path"] for s in seen[-2:]] == ["/v1.41/containers/json", "/v1.41/images/json"]
    out = _exchange(proxy, b"GET /v1.41/info HTTP/1.0\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200") or out.startswith(b"HTTP/1.0 200"), out


def test_an_answer_head_is_relayed_before_its_late_body(proxy: str, fake: Any) -> None:
    """`docker run` waits for the head of `POST /containers/{id}/wait` before it starts the
    container; the body comes at the container's exit. A head held back until its body
    arrived hung every `docker run` through the proxy."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(proxy)
        sock.sendall(b"POST /v1.41/containers/abc/wait HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.settimeout(0.6)
        first = sock.recv(65536)
        assert first.startswith(b"HTTP/1.1 200") and first.endswith(b"\r\n\r\n"), first
        sock.settimeout(5)
        rest = b""
        while not rest.endswith(b"0\r\n\r\n"):
            got = sock.recv(65536)
            assert got, (first, rest)
            rest += got
    assert b'{"StatusCode":0,"Error":null}' in rest


def test_pipelined_after_a_json_body_X27(proxy: str, fake: Any) -> None:
    _, seen = fake
    body = b'{"Cmd":["true"]}'
    data = (
        b"POST /v1.41/containers/create HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
        + b"GET /v1.41/images/json HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    out = _exchange(proxy, data)
    assert out.count(b"HTTP/1.1 20") == 2, out
    assert seen[-1]["path"] == "/v1.41/images/json"


def test_chunked_body_is_reframed_and_trailers_dropped_X26(proxy: str, fake: Any) -> None:
    _, seen = fake
    data = (
        b"POST /v1.41/containers/c/update HTTP/1.1\r\nHost: x\r\n"
        b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        b"5;foo=bar\r\nhello\r\n0\r\nX-Registry-Auth: evil\r\n\r\n"
    )
    out = _exchange(proxy, data)
    assert out.startswith(b"HTTP/1.1 200"), out
    assert seen[-1]["body"] == b"hello"
    assert "X-Registry-Auth" not in seen[-1]["headers"]


def _chunks(data: bytes, step: int) -> bytes:
    return b"".join(
        b"%x\r\n" % len(data[i : i + step]) + data[i : i + step] + b"\r\n"
        for i in range(0, len(data), step)
    )


def test_large_bodies_stream_both_ways_and_the_connection_is_reused(proxy: str, fake: Any) -> None:
    _, seen = fake
    size = 5 * 1024 * 1024 + 17
    body = os.urandom(size)
    head = (
        b"POST /v1.41/containers/c/update HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(proxy)
        sock.settimeout(20)
        sock.sendall(head + _chunks(body, 32768) + b"0\r\n\r\n")
        sock.sendall(
            f"GET /v1.41/images/x/get?size={size} HTTP/1.1\r\nHost: x\r\n"
            "Connection: close\r\n\r\n".encode()
        )
        out = bytearray()
        while chunk := sock.recv(1 << 20):
            out += chunk
    assert seen[-2]["body"] == body  # the request body, re-chunked, intact
    first_end = out.index(b"\r\n\r\n{}") + 6
    second = bytes(out[first_end:])
    assert second.startswith(b"HTTP/1.1 200"), second[:200]
    stream = second[second.index(b"\r\n\r\n") + 4 :]
    decoded, at = bytearray(), 0
    while True:  # the proxy's own chunked framing towards the client
        eol = stream.index(b"\r\n", at)
        n = int(stream[at:eol], 16)
        if n == 0:
            break
        decoded += stream[eol + 2 : eol + 2 + n]
        assert stream[eol + 2 + n : eol + 4 + n] == b"\r\n"
        at = eol + 4 + n
    assert bytes(decoded) == _pattern(size)


@pytest.mark.parametrize(
    "chunked",
    [
        b"5 \r\nhello\r\n0\r\n\r\n",
        b"5\nhello\r\n0\r\n\r\n",
        b"00000000000000005\r\nhello\r\n0\r\n\r\n",
        b"5\r\nhelloXX0\r\n\r\n",
        b"5\r\nhello\r\n0\r\n X: folded\r\n\r\n",
    ],
)
def test_malformed_chunked_bodies_never_complete_upstream_X26(
    proxy: str, fake: Any, chunked: bytes
) -> None:
    _, seen = fake
    hidden = b"POST /v1.41/images/create?fromImage=evil HTTP/1.1\r\nHost: x\r\n\r\n"
    out = _exchange(
        proxy,
        b"POST /v1.41/containers/c/update HTTP/1.1\r\nHost: x\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n" + chunked + hidden,
    )
    assert out.startswith(b"HTTP/1.1 400"), out
    time.sleep(0.2)
    # the engine never saw a complete request, nor the hidden one (the proxy's own
    # `GET /version` is all it got)
    assert [s["path"] for s in seen if not s["path"].endswith("/version")] == []


def test_pipelined_after_a_chunked_body_X27(proxy: str, fake: Any) -> None:
    _, seen = fake
    data = (
        b"POST /v1.41/containers/c/update HTTP/1.1\r\nHost: x\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
        b"POST /v1.41/newthing HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
    )
    out = _exchange(proxy, data)
    assert out.startswith(b"HTTP/1.1 200") and b"HTTP/1.1 403" in out, out
    forwarded = [s for s in seen if not s["path"].endswith("/version")]
    assert [(s["method"], s["body"]) for s in forwarded] == [("POST", b"hello")]


def test_forwarded_target_is_reencoded_X02(proxy: str, fake: Any) -> None:
    _, seen = fake
    _exchange(
        proxy, b"GET /v1.41/%69mages/json?a=b+c HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    assert seen[-1]["path"] == "/v1.41/images/json?a=b%20c"


def test_unknown_mutating_route_refused_and_get_passes(proxy: str, fake: Any) -> None:
    _, seen = fake
    count = len(seen)
    out = _exchange(proxy, b"POST /v1.41/newthing HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 403"), out
    assert len(seen) == count
    out = _exchange(proxy, b"GET /v1.41/newthing HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200"), out


def test_create_bodies_go_reads_otherwise_never_reach_the_engine(
    proxy: str, fake: tuple[str, list[dict[str, Any]]]
) -> None:
    """`Image` then `null` (the engine creates from the first), a `HostConfig` decoy key and a
    repeated `HostConfig` (Go keeps the first one's binds): never forwarded."""
    engine, seen = fake
    for body, status in (
        (
            b'{"Image":"sha256:' + b"a" * 64 + b'","Image":null}',
            400,
        ),
        (
            b'{"HostConfig":{"Binds":["' + engine.encode() + b':/s"]},"Ho\\ufb06Config":{}}',
            403,
        ),
        (
            b'{"HostConfig":{"Binds":["' + engine.encode() + b':/s"]},"hostconfig":{}}',
            400,
        ),
    ):
        count = len(seen)
        head = b"POST /v1.41/containers/create HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        head += b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
        out = _exchange(proxy, head + body)
        assert out.startswith(b"HTTP/1.1 %d" % status), (body, out)
        assert not any("/containers/create" in r["path"] for r in seen[count:]), body


def test_a_volume_mount_binding_the_engine_socket_directory_is_refused(
    proxy: str, fake: tuple[str, list[dict[str, Any]]]
) -> None:
    """A `volume` mount whose local driver options bind-mount a host `device` exposes the
    engine socket as a `bind` mount or `POST /volumes/create` would: refused the same way."""
    engine, seen = fake
    options = {"type": "none", "o": "bind", "device": os.path.dirname(engine)}
    mount = {
        "Type": "volume",
        "Target": "/e",
        "VolumeOptions": {"DriverConfig": {"Options": options}},
    }
    body = json.dumps({"HostConfig": {"Mounts": [mount]}}).encode()
    count = len(seen)
    head = b"POST /v1.41/containers/create HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
    head += b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
    out = _exchange(proxy, head + body)
    assert out.startswith(b"HTTP/1.1 403") and b"EngineSocket" in out, out
    assert not any("/containers/create" in r["path"] for r in seen[count:])


def test_a_service_mounting_the_engine_socket_is_refused(
    proxy: str, fake: tuple[str, list[dict[str, Any]]]
) -> None:
    """A service's tasks run on this node too: its `Mounts` are checked as a container's."""
    engine, seen = fake
    options = {"type": "none", "o": "bind", "device": os.path.dirname(engine)}
    for mount in (
        {"Type": "bind", "Source": engine, "Target": "/s"},
        {"Type": "volume", "Target": "/e", "VolumeOptions": {"DriverConfig": {"Options": options}}},
    ):
        spec = {"Name": "s", "TaskTemplate": {"ContainerSpec": {"Mounts": [mount]}}}
        body = json.dumps(spec).encode()
        count = len(seen)
        head = b"POST /v1.41/services/create HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        head += b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
        out = _exchange(proxy, head + body)
        assert out.startswith(b"HTTP/1.1 403") and b"EngineSocket" in out, out
        assert not any("/services/create" in r["path"] for r in seen[count:])


def test_smuggling_shapes_never_reach_the_engine_X23_X24(proxy: str, fake: Any) -> None:
    _, seen = fake
    count = len(seen)
    hidden = b"POST /v1.41/images/create?fromImage=evil HTTP/1.1\r\nHost: x\r\n\r\n"
    for data in (
        b"POST /_ping HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + hidden,
        b"GET /_ping HTTP/1.0\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n"
        + hidden,
    ):
        out = _exchange(proxy, data)
        assert out.startswith(b"HTTP/1.1 400"), out
    assert len(seen) == count


def test_expect_100_continue_passes_for_allowed_bodies(proxy: str, fake: Any) -> None:
    _, seen = fake
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(proxy)
        sock.settimeout(3)
        sock.sendall(
            b"POST /v1.41/containers/c/update HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
            b"Expect: 100-continue\r\nConnection: close\r\n\r\n"
        )
        assert sock.recv(100).startswith(b"HTTP/1.1 100")
        sock.sendall(b"hello")
        rest = b""
        while chunk := sock.recv(1000):
            rest += chunk
        assert b"200" in rest.split(b"\r\n")[0]
    assert seen[-1]["body"] == b"hello"
    assert "Expect" not in seen[-1]["headers"]


def test_header_timeout_408(proxy: str) -> None:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(proxy)
        sock.sendall(b"GET /_ping HTTP/1.1\r\nHo")
        sock.settimeout(5)
        started = time.monotonic()
        assert sock.recv(100).startswith(b"HTTP/1.1 408")
        assert time.monotonic() - started < 4


def test_a_head_dripped_byte_by_byte_still_ends_at_the_header_deadline(proxy: str) -> None:
    """The header deadline counts from the first byte: each byte received does not restart
    it (the kernel timeout is re-armed with what is left of it)."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(proxy)
        sock.settimeout(0.05)
        started = time.monotonic()
        got = b""
        for byte in b"GET /_ping HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"y" * 100:
            try:
                sock.sendall(bytes([byte]))
                got += sock.recv(100)
            except TimeoutError:
                continue
            except OSError:
                break
            if got:
                break
            time.sleep(0.05)
        sock.settimeout(5)
        with contextlib.suppress(OSError):
            got += sock.recv(100)
        assert got.startswith(b"HTTP/1.1 408"), got
        assert 1.8 < time.monotonic() - started < 4  # header_timeout is 2 s


def test_an_idle_kept_connection_is_closed_after_the_idle_timeout(proxy: str) -> None:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(proxy)
        sock.sendall(b"GET /_ping HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.settimeout(0.5)
        got = b""
        with contextlib.suppress(TimeoutError):
            while more := sock.recv(65536):
                got += more
        assert got.startswith(b"HTTP/1.1 200"), got
        sock.settimeout(10)
        started = time.monotonic() - 0.5
        assert sock.recv(100) == b""  # closed quietly, no answer
        assert 4.5 < time.monotonic() - started < 8  # idle_timeout is 5 s


@pytest.mark.parametrize("seconds", [4.9999999, 0.9999996, 2.0])
def test_a_timeout_just_under_a_whole_second_still_serves(
    tmp_path: Path, fake: tuple[str, list[dict[str, Any]]], seconds: float
) -> None:
    """The kernel timeout is a timeval: a fraction that rounds up to a million microseconds
    (what is left of a header deadline can be 2.9999998 s) is a whole second more, never an
    invalid timeval that setsockopt refuses (EDOM) and that dropped the connection unanswered."""
    engine, _ = fake
    config = ProxyConfig(header_timeout=seconds, idle_timeout=seconds)
    listen = str(tmp_path / "p.sock")
    listener = bind_listener(listen, engine, config)
    handle = open(tmp_path / "log", "w")
    server = build_proxy(Settings(), engine, config, DecisionLog(handle))
    threading.Thread(target=server.serve, args=(listener,), daemon=True).start()
    try:
        out = _exchange(listen, b"GET /_ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert out.startswith(b"HTTP/1.1 200 "), out
        assert "connection-error" not in (tmp_path / "log").read_text()
    finally:
        server.stop()
        handle.close()


@pytest.mark.parametrize("key", ["header_timeout", "idle_timeout"])
@pytest.mark.parametrize("value", ["0", "0.0"])
def test_a_zero_head_or_idle_timeout_is_refused_at_startup(
    tmp_path: Path, key: str, value: str
) -> None:
    """A zero timeout once meant none (a Python socket timeout of 0 was passed as None); read
    as a deadline already reached, `idle_timeout = 0` closed every connection before its first
    request and `header_timeout = 0` answered 408 to any head that took two reads. Neither is
    a limit: refused when the configuration is read, naming the key."""
    from trust.config import load_config
    from trust.errors import ConfigError

    path = tmp_path / "config.toml"
    path.write_text(f"[proxy]\n{key} = {value}\n")
    with pytest.raises(ConfigError) as info:
        load_config({}, config_file=path)
    assert key in info.value.message and f"{path}:2" in info.value.message
    path.write_text(f"[proxy]\n{key} = 0.5\n")
    assert getattr(load_config({}, config_file=path).settings.proxy, key) == 0.5


def test_socket_never_wider_than_the_engines_X50(tmp_path: Path, fake: Any) -> None:
    from trust.errors import ConfigError

    engine, _ = fake
    with pytest.raises(ConfigError, match="wider"):
        bind_listener(str(tmp_path / "w.sock"), engine, ProxyConfig(socket_mode=0o666))
    listener = bind_listener(str(tmp_path / "ok.sock"), engine, ProxyConfig())
    assert os.stat(tmp_path / "ok.sock").st_mode & 0o777 == 0o660
    listener.close()
    with pytest.raises(ConfigError, match="abstract"):
        bind_listener("@trustpull", engine, ProxyConfig())


def test_copy_from_images_the_reader_did_not_report_fail_closed_X40() -> None:
    from trust.proxy.builds import _refuse_unreported_from

    _refuse_unreported_from("FROM a AS b\nCOPY --from=b /x /x\nCOPY --from=0 /y /y\n", set(), "D")
    _refuse_unreported_from("FROM a\nCOPY --from=c:1 /x /x\n", {"c:1"}, "D")
    for text in (
        "FROM a\nCOPY --from=evil:1 /x /x\n",
        "FROM a\nRUN --mount=from=evil,target=/x t\n",
    ):
        with pytest.raises(HTTPRefusal):
            _refuse_unreported_from(text, set(), "D")


def test_context_paths_are_the_engines_X40f() -> None:
    """The proxy names each context member by the path the engine's untar writes it to."""
    from trust.proxy.context import norm_path

    for name, path in (
        ("Dockerfile", "Dockerfile"),
        ("./Dockerfile", "Dockerfile"),
        ("/Dockerfile", "Dockerfile"),
        ("//Dockerfile", "Dockerfile"),
        ("a/../Dockerfile", "Dockerfile"),
        ("/../Dockerfile", "Dockerfile"),
        ("sub/./Dockerfile/", "sub/Dockerfile"),
        (".Dockerfile", ".Dockerfile"),
        ("..Dockerfile", "..Dockerfile"),
        ("./", ""),
        ("", ""),
        ("..", None),
        ("../Dockerfile", None),
        ("a/../../Dockerfile", None),
    ):
        assert norm_path(name) == path, name


def _tar(*members: tuple[str, bytes | str], compress: str = "") -> bytes:
    """Raw tar bytes; a str value `-> T` is a symbolic link to T, `dir` a directory, `type:X`
    a member of type X with 512 bytes of data."""
    import io
    import tarfile

    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:" + compress, format=tarfile.PAX_FORMAT) as tar:
        for name, value in members:
            info = tarfile.TarInfo(name)
            if isinstance(value, bytes):
                info.size = len(value)
                tar.addfile(info, io.BytesIO(value))
            elif value.startswith("-> "):
                info.type, info.linkname = tarfile.SYMTYPE, value[3:]
                tar.addfile(info)
            elif value == "dir":
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.type, info.size = value[5:].encode(), 512
                tar.addfile(info, io.BytesIO(b"x" * 512))
    return out.getvalue()


def _stream(data: bytes, dockerfile: str = "Dockerfile", piece: int = 1000) -> tuple[bytes, bytes]:
    """(the Dockerfile read, the archive the engine gets with it pinned to b"PINNED")."""
    from trust.proxy.context import ContextStream

    pieces = iter([data[i : i + piece] for i in range(0, len(data), piece)])
    context = ContextStream(pieces, dockerfile, max_dockerfile=4096, max_context=1 << 30)
    out = b"".join(context.members())
    return context.dockerfile, out + b"".join(context.finish(b"PINNED"))


def test_a_context_is_rewritten_with_its_dockerfile_pinned_at_the_end_X40f() -> None:
    import io
    import tarfile

    big = bytes(range(256)) * 2000  # over one batch: sent as its own pieces
    for compress in ("", "gz", "xz"):
        data = _tar(
            ("d", "dir"),
            ("d/big.bin", big),
            ("Dockerfile", b"FROM a\n"),
            ("link", "-> d/big.bin"),
            ("dockerfile", b"lower"),
            compress=compress,
        )
        read, out = _stream(data + (b"trailing garbage" if not compress else b""))
        assert read == b"FROM a\n"
        with tarfile.open(fileobj=io.BytesIO(out), mode="r:") as tar:  # plain tar, always
            names = [(m.name, m.type) for m in tar.getmembers()]
            assert names == [
                ("d", tarfile.DIRTYPE),
                ("d/big.bin", tarfile.REGTYPE),
                ("link", tarfile.SYMTYPE),
                ("dockerfile", tarfile.REGTYPE),
                ("Dockerfile", tarfile.REGTYPE),
            ]
            assert tar.extractfile("d/big.bin").read() == big  # type: ignore[union-attr]
            assert tar.extractfile("Dockerfile").read() == b"PINNED"  # type: ignore[union-attr]
            assert tar.extractfile("dockerfile").read() == b"lower"  # type: ignore[union-attr]
        assert out.endswith(b"\0" * 1024) and b"trailing" not in out
    # the engine's fallback: `dockerfile` when there is no `Dockerfile`
    read, out = _stream(_tar(("dockerfile", b"FROM b\n")))
    assert read == b"FROM b\n" and b"PINNED" in out
    read, _ = _stream(_tar(("sub/x.Dockerfile", b"FROM c\n")), "./sub/x.Dockerfile")
    assert read == b"FROM c\n"


def test_contexts_the_engine_would_read_otherwise_are_refused_X40f() -> None:
    signed, other = b"FROM signed\n", b"FROM other\n"
    for dockerfile, members in (
        ("Dockerfile", (("Dockerfile", other), ("./Dockerfile", signed))),  # a second copy
        ("Dockerfile", (("Dockerfile", other), ("a/../Dockerfile", signed))),
        ("Dockerfile", (("sub", "-> ."), ("Dockerfile", signed), ("sub/Dockerfile", other))),
        ("x/Dockerfile", (("sub", "-> x"), ("x/Dockerfile", signed), ("sub/Dockerfile", other))),
        ("Dockerfile", (("sub/Dockerfile", other), ("sub", "-> ."), ("Dockerfile", signed))),
        ("Dockerfile", (("f", b""), ("f/x", b""), ("Dockerfile", signed))),
        ("Dockerfile", ((".", "-> /"), ("Dockerfile", signed))),
        ("Dockerfile", (("../x", b""), ("Dockerfile", signed))),
        ("Dockerfile", (("Dockerfile", "-> other"), ("other", signed))),
        ("Dockerfile", (("Dockerfile", "dir"), ("Dockerfile/x", b""), ("dockerfile", signed))),
        ("Dockerfile", (("Dockerfile/x", b""), ("dockerfile", signed))),
        ("Dockerfile", (("Dockerfile", b"x" * 5000),)),  # over max_dockerfile: 413
        ("Dockerfile", (("other", signed),)),
        ("../Dockerfile", (("Dockerfile", signed),)),
        # a member whose header claims data it does not carry once re-written would make the
        # engine read the next members' bytes as data and crafted content as headers
        ("Dockerfile", (("odd", "type:Z"), ("Dockerfile", signed))),
        ("Dockerfile", (("odd", "type:V"), ("Dockerfile", signed))),
        # bzip2's magic first: the engine would decompress the forwarded tar (X40l)
        ("Dockerfile", (("BZh91AY&SY", b"x"), ("Dockerfile", signed))),
        ("BZhfile", (("BZhfile", signed),)),
        # ... or its name once the engine's tarsum re-writes it as a pax header (X40n)
        ("Dockerfile", (("BZh91AY&SY/" + "x" * 120, b"x"), ("Dockerfile", signed))),
        ("Dockerfile", (("./q/../B\u00e9Zh91/\u00e9", b"x"), ("Dockerfile", signed))),
        ("BZh/\u00e9", (("BZh/\u00e9", signed),)),
    ):
        with pytest.raises(HTTPRefusal):
            _stream(_tar(*members), dockerfile)
    truncated = _tar(("a.bin", b"x" * 3000), ("Dockerfile", signed))[:2000]  # X40o
    for data in (b"not a tar at all" * 100, _tar(("Dockerfile", signed))[:520], truncated):
        with pytest.raises(HTTPRefusal):
            _stream(data)


def test_an_archive_ending_in_the_last_members_padding_is_its_end_X40r() -> None:
    """The docker CLI's context for `-f` outside the context (or `-f-`) ends right after its
    last member's data, without padding or end blocks (moby's ReplaceFileTarWrapper); Go
    reads the end there, and so must the proxy. Cut inside the data it is still refused."""
    import gzip
    import io
    import tarfile

    signed = b"FROM signed\n"  # 12 bytes: the data ends 500 bytes before its block does
    whole = _tar(("a.txt", b"x" * 600), (".dockerfile.1234", signed))
    data_end = 512 * 4 + len(signed)  # header, a.txt (two blocks), header, the data
    assert whole[data_end : data_end + 500] == b"\0" * 500
    for data in (whole[:data_end], whole[: data_end + 100], whole[: data_end + 499]):
        for body in (data, gzip.compress(data)):
            read, out = _stream(body, ".dockerfile.1234")
            assert read == signed
            with tarfile.open(fileobj=io.BytesIO(out), mode="r:") as tar:
                assert [m.name for m in tar.getmembers()] == ["a.txt", ".dockerfile.1234"]
            assert out.endswith(b"\0" * 1024) and len(out) % 512 == 0
    for cut in (data_end - 1, 812):  # inside the Dockerfile's or a.txt's data
        for body in (whole[:cut], gzip.compress(whole[:cut])):
            with pytest.raises(HTTPRefusal):
                _stream(body, ".dockerfile.1234")


def test_a_name_with_a_nul_is_refused_X40m() -> None:
    """Re-written in a header's name field, `Dockerfile<NUL>` is `Dockerfile` to Go."""
    import io
    import tarfile

    for records, kind in (
        ({"path": "Dockerfile\0"}, tarfile.REGTYPE),
        ({"path": "a\0b"}, tarfile.REGTYPE),
        ({"linkpath": "evil\0x"}, tarfile.SYMTYPE),
    ):
        out = io.BytesIO()
        with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
            info = tarfile.TarInfo("x")
            info.type, info.pax_headers = kind, records
            data = b"FROM evil\n" if kind == tarfile.REGTYPE else b""
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
            info = tarfile.TarInfo("dockerfile")
            info.size = 12
            tar.addfile(info, io.BytesIO(b"FROM signed\n"))
        with pytest.raises(HTTPRefusal, match="NUL"):
            _stream(out.getvalue())


def test_the_dockerfile_as_the_classic_builder_reads_it_X40h() -> None:
    """trust.proxy.classic splits lines and builder flags as the engine's v0.8 parser does
    (each case below was seen on dockerd 20.10 through the proxy, see test_X40h/test_X40i)."""
    from trust.errors import InputError
    from trust.proxy.classic import check_forwarded, instructions, split_command

    def read(text: str) -> tuple[str, list[tuple[int, str]]]:
        escape, lines = instructions(text)
        return escape, [(line.start, line.text) for line in lines]

    assert read("FROM a\nRUN echo \\\\\nFROM b\n") == (
        "\\",
        [(1, "FROM a"), (2, "RUN echo \\\\"), (3, "FROM b")],
    )
    assert read(" # escape=`\nFROM a\nRUN echo \\\nFROM b\n")[0] == "`"
    assert read("# check=x\n# escape=`\nFROM a\n")[0] == "\\"
    assert read("#\u00a0escape=`\nFROM a\n")[0] == "\\"
    assert read("FROM a\nRUN true <<EOF\nFROM b\nRUN x \\\nEOF\n")[1][2:] == [
        (3, "FROM b"),
        (4, "RUN x EOF"),
    ]
    assert read("\ufeffFROM a\r\nRUN a \\\r\n  # c\r\n\r\n  b\r\n")[1] == [
        (1, "FROM a"),
        (2, "RUN a   b"),
    ]
    assert split_command('COPY --fr"om"=x --chown=0 a b') == (
        "copy",
        ["--from=x", "--chown=0"],
        "a b",
    )
    assert split_command("copy --fr\\om=x a b") == ("copy", ["--from=x"], "a b")
    assert split_command('FROM --platform="${X:+ s AS --platform=}linux" u') == (
        "from",
        ["--platform=${X:+ s AS --platform=}linux"],
        "u",
    )
    assert split_command("COPY -- --from=x a") == ("copy", [], "--from=x a")
    allowed = {"r/a@sha256:1"}
    check_forwarded(
        "FROM r/a@sha256:1 AS first\nFROM first\nCOPY --from=0 x y\nCOPY --from=FIRST x y\n"
        "FROM scratch\nCOPY --from=r/a@sha256:1 x y\nONBUILD RUN true\n"
        "COPY --chown=fromage x y\n",
        allowed,
        "D",
    )
    for text in (
        "FROM r/a@sha256:1\nFROM b\n",
        "FROM $X\n",
        "FROM r/a@sha256:1 AS a\nCOPY --from=a x y\n",  # a stage is usable only after it
        "FROM r/a@sha256:1\nCOPY --from=1 x y\n",
        "FROM r/a@sha256:1\nCOPY --from=99999999999999999999 x y\n",  # not an index to Go
        'FROM r/a@sha256:1\nCOPY --fr"om"=b x y\n',
        "FROM r/a@sha256:1\nRUN --mount=type=bind,from=b true\n",
        'FROM r/a@sha256:1\nONBUILD COPY --fr"om"=b x y\n',
        "FROM r/a@sha256:1\n# escape=x\n" + "x" * 70000 + "\n",
    ):
        with pytest.raises(InputError):
            check_forwarded(text, allowed, "D")


def test_a_context_of_tiny_members_keeps_the_proxy_small_X56(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Stream mode kept every TarInfo read and the checks every path as a string: a context
    of empty members cost the proxy about 1.5 times its size (a 10 GiB build_spool_max of
    them: 15 GiB). Now members are not kept, paths are 64-bit digests, and the count is
    bounded."""
    import tarfile
    import tracemalloc

    from trust.proxy import context as context_module
    from trust.proxy.context import ContextStream

    def pieces(count: int, deep: bool) -> Iterator[bytes]:
        batch = []
        for i in range(count):
            name = f"{i:060d}/{i:028d}" if deep else f"d/{i:088d}"
            batch.append(tarfile.TarInfo(name).tobuf(tarfile.USTAR_FORMAT))
            if len(batch) == 1000:
                yield b"".join(batch)
                batch = []
        info = tarfile.TarInfo("Dockerfile")
        info.size = 7
        yield b"".join(batch) + info.tobuf(tarfile.USTAR_FORMAT) + b"FROM a\n".ljust(1536, b"\0")

    for deep in (False, True):
        tracemalloc.start()
        try:
            context = ContextStream(pieces(20_000, deep), "Dockerfile", 4096, 1 << 40)
            for _ in context.members():
                pass
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert context.dockerfile == b"FROM a\n"
        assert peak < 10 * 1024 * 1024, (deep, peak)  # 10 MiB of context; was 18 MiB flat
    monkeypatch.setattr(context_module, "_MAX_MEMBERS", 100)
    context = ContextStream(pieces(100, False), "Dockerfile", 4096, 1 << 40)
    with pytest.raises(HTTPRefusal, match="members") as refused:
        for _ in context.members():
            pass
    assert refused.value.status == 413


def test_only_extended_attribute_records_are_re_sent_X40p() -> None:
    """Go refuses a pax `uid=abc` (Python reads 0) or a NUL in a name record part-way through
    the streamed context: numbers and names are written from what Python read."""
    import io
    import tarfile

    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("a")
        info.size = 1
        info.pax_headers = {
            "uid": "abc",
            "mtime": "1e5",
            "atime": "x",
            "uname": "a\0b",
            "SCHILY.xattr.security.capability": "cap",
            "SCHILY.xattr.user.a\0b": "x",
            "comment": "c",
        }
        tar.addfile(info, io.BytesIO(b"x"))
        info = tarfile.TarInfo("Dockerfile")
        info.size = 7
        tar.addfile(info, io.BytesIO(b"FROM a\n"))
    _, forwarded = _stream(out.getvalue())
    with tarfile.open(fileobj=io.BytesIO(forwarded), mode="r:") as tar:
        member = tar.getmember("a")
        assert member.pax_headers == {
            "SCHILY.xattr.security.capability": "cap",
            "mtime": "100000.0",  # Python writes a float mtime so, and Go reads it
        }
        assert member.uid == 0 and member.uname == "ab" and member.mtime == 100000


def test_long_name_and_pax_headers_are_bounded_X56() -> None:
    """Python reads a long-name or pax header's whole data into memory (a 300 MiB long name
    grew the process by 3.6 GiB); over Go's 1 MiB limit the context is refused unread."""
    import tarfile

    for kind in (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK, tarfile.XHDTYPE):
        special = tarfile.TarInfo("././@LongLink")
        special.type, special.size = kind, 2 * 1024 * 1024
        head = special.tobuf(tarfile.USTAR_FORMAT)

        def pieces(head: bytes = head) -> Iterator[bytes]:
            yield head
            yield b"a" * (2 * 1024 * 1024)  # drained, never parsed

        from trust.proxy.context import ContextStream

        context = ContextStream(pieces(), "Dockerfile", 4096, 1 << 40)
        with pytest.raises(HTTPRefusal, match="header of"):
            for _ in context.members():
                pass


def test_engines_before_the_cache_fix_build_without_cache_X40s() -> None:
    """GHSA-xw73-rw38-6vjc was fixed in 25.0.2 and 24.0.9: older classic builders (and any
    version the proxy cannot read) take any local image as a cached step."""
    from trust.proxy.builds import any_image_is_cache

    for old in ("20.10.24+dfsg1", "23.0.6", "24.0.8", "25.0.0", "25.0.1", "4.3.1", "", "dev"):
        assert any_image_is_cache(old), old
    for fixed in ("24.0.9", "25.0.2", "25.0.5", "26.1.4", "28.5.2"):
        assert not any_image_is_cache(fixed), fixed
