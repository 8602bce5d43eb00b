"""The bypass catalogue of shared/spec/engine-proxy.md §4 (X01–X59) on the real engine.

Each test sends what the case describes to the proxy (raw bytes where the case is about
parsing or framing) and then asks the ENGINE directly what it holds: no new image, tag or
container unless the case says so.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fixtures.proxies import EngineProxy, EngineRequest, RegistryShim
from fixtures.server import FixtureServer
from fixtures.stack import DOCKER_CLI, Stack
from fixtures.trustproxy import TrustProxy, busybox_tar
from tests.integration.proxy_world import World, api, raw_request, status_of, statuses

pytestmark = pytest.mark.integration

V = "/v1.41"


@pytest.fixture(scope="module")
def world(stack: Stack) -> Iterator[World]:
    w = World(stack)
    try:
        yield w
    finally:
        w.close()


@pytest.fixture(scope="module")
def evil_id(world: World) -> str:
    """An unverified image in the engine (imported directly, behind the proxy's back)."""
    tar_path = world.tmp / "evil.tar"
    tar_path.write_bytes(busybox_tar("evil local image"))
    name = f"evil-local{time.monotonic_ns()}:1"
    world.engine("import", "--change", 'CMD ["/bin/sh"]', str(tar_path), name)
    image = world.image(name)
    assert image is not None
    return str(image["Id"])


def req(
    method: str,
    target: str,
    headers: dict[str, str] | None = None,
    body: bytes = b"",
    *,
    version: str = "1.1",
    length: bool = True,
    close: bool = True,
) -> bytes:
    lines = [f"{method} {target} HTTP/{version}", "Host: api.moby.localhost"]
    if close and "Connection" not in (headers or {}):
        lines.append("Connection: close")
    for key, value in (headers or {}).items():
        lines.append(f"{key}: {value}")
    if length and body is not None and "Transfer-Encoding" not in (headers or {}):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def send(world: World, data: bytes, proxy: TrustProxy | None = None) -> bytes:
    return raw_request((proxy or world.proxy).socket, data)


def body_of(response: bytes) -> bytes:
    return response.split(b"\r\n\r\n", 1)[1] if b"\r\n\r\n" in response else b""


def unchanged(world: World, before: tuple[set[str], set[str], set[str]]) -> None:
    after = world.snapshot()
    assert after == before, f"engine changed: {[a - b for a, b in zip(after, before, strict=True)]}"


def pull_target(name: str, tag: str, prefix: str = V) -> str:
    return f"{prefix}/images/create?fromImage={name}&tag={tag}"


def create_body(image: str, **extra: object) -> bytes:
    return json.dumps({"Image": image, "Cmd": ["true"], **extra}).encode()


JSON = {"Content-Type": "application/json"}


# ---------------------------------------------------------------- routing and parameters


def test_X01_version_prefix_variants(world: World) -> None:
    before = world.snapshot()
    for prefix in ("/v1.41.0", "/v01.41", "/v1.041", "/v1.41.", ""):
        response = send(world, req("POST", pull_target(world.unsigned_repo, "1.0", prefix)))
        assert status_of(response) == 403, (prefix, response)
        assert b"NoTrustData" in response
    response = send(world, req("POST", pull_target(world.unsigned_repo, "1.0", "/v1.99")))
    assert status_of(response) == 400 and b"too new" in response, response
    unchanged(world, before)


def test_X02_percent_encoded_path(world: World, evil_id: str) -> None:
    before = world.snapshot()
    for path in (f"{V}/images%2Fcreate", f"{V}/%69mages/create"):
        response = send(world, req("POST", f"{path}?fromImage={world.unsigned_repo}&tag=1.0"))
        assert status_of(response) == 403, (path, response)
    response = send(world, req("POST", f"{V}/images/{evil_id[7:19]}/tag?repo={world.repo}&tag=1.0"))
    assert status_of(response) == 403, response
    response = send(world, req("POST", f"{V}/images/create%zz?fromImage=x"))
    assert status_of(response) == 400, response
    unchanged(world, before)


def test_X03_dot_segments_and_double_slashes(world: World) -> None:
    before = world.snapshot()
    for path in (f"{V}//images/create", f"{V}/containers/../images/create"):
        response = send(world, req("POST", f"{path}?fromImage={world.unsigned_repo}&tag=1.0"))
        assert status_of(response) == 301, response
        assert b"location: /v1.41/images/create?fromimage=" in response.lower(), response
    unchanged(world, before)


def test_X04_near_miss_routes(world: World) -> None:
    before = world.snapshot()
    target = f"?fromImage={world.unsigned_repo}&tag=1.0"
    for method, path in (
        ("POST", f"{V}/images/create/"),
        ("POST", f"{V}/Images/create"),
        ("post", f"{V}/images/create"),
    ):
        response = send(world, req(method, path + target))
        assert status_of(response) in (403, 404), (method, path, response)
    response = send(world, req("HEAD", f"{V}/images/create{target}", length=False))
    assert status_of(response) in (404, 405), response
    response = send(world, req("OPTIONS", f"{V}/images/create{target}", length=False))
    assert status_of(response) == 200, response
    unchanged(world, before)


def test_X05_absolute_form_target(world: World) -> None:
    before = world.snapshot()
    response = send(world, req("POST", f"http://x{pull_target(world.unsigned_repo, '1.0')}"))
    assert status_of(response) == 400, response
    response = send(world, req("OPTIONS", "*", length=False))
    assert status_of(response) == 400, response
    unchanged(world, before)


def test_X06_from_image_twice(world: World) -> None:
    before = world.snapshot()
    for query in (
        f"fromImage={world.unsigned_repo}&fromImage={world.repo}&tag=1.0",
        f"fromImage={world.repo}&fromImage={world.unsigned_repo}&tag=1.0",
    ):
        response = send(world, req("POST", f"{V}/images/create?{query}"))
        assert status_of(response) == 400, response
    unchanged(world, before)


def test_X07_tag_twice(world: World) -> None:
    before = world.snapshot()
    response = send(
        world, req("POST", f"{V}/images/create?fromImage={world.repo}&tag=evil&tag=1.0")
    )
    assert status_of(response) == 400, response
    unchanged(world, before)


def test_X08_tag_in_from_image_overridden_by_tag(world: World) -> None:
    before = world.snapshot()
    response = send(world, req("POST", f"{V}/images/create?fromImage={world.repo}:1.0&tag=evil"))
    assert status_of(response) == 403, response
    assert f"{world.repo}:evil".encode() in response
    unchanged(world, before)


def test_X09_tag_digest_replaces_from_image_digest(world: World) -> None:
    before = world.snapshot()
    target = (
        f"{V}/images/create?fromImage={world.repo}@{world.signed_digest}&tag={world.evil_digest}"
    )
    response = send(world, req("POST", target))
    assert status_of(response) == 403, response
    assert world.evil_digest.encode() in response
    unchanged(world, before)


def test_X10_tag_and_digest_together(world: World) -> None:
    before = world.snapshot()
    response = send(world, req("POST", pull_target(f"{world.repo}:1.0@{world.evil_digest}", "")))
    assert status_of(response) == 403, response
    unchanged(world, before)
    world.rmi(f"{world.repo}:1.0", f"{world.repo}@{world.signed_digest}")
    response = send(world, req("POST", pull_target(f"{world.repo}:1.0@{world.signed_digest}", "")))
    assert status_of(response) == 200, response
    assert b"errorDetail" not in response
    image = world.image(f"{world.repo}@{world.signed_digest}")
    assert image is not None and f"{world.repo}:1.0" not in (image.get("RepoTags") or [])


def test_X11_empty_first_from_image_selects_import(world: World) -> None:
    before = world.snapshot()
    target = (
        f"{V}/images/create?fromImage=&fromImage={world.repo}&tag=1&fromSrc=-&repo={world.repo}"
    )
    response = send(world, req("POST", target, body=busybox_tar("x")))
    assert status_of(response) in (400, 403), response
    target = f"{V}/images/create?fromImage=&fromSrc=-&repo={world.repo}:1.0"
    response = send(world, req("POST", target, body=busybox_tar("x")))
    assert status_of(response) == 403 and b"allow_import" in response, response
    unchanged(world, before)


def test_X12_urlencoded_body_overrides_query(world: World) -> None:
    before = world.snapshot()
    body = f"fromImage={world.unsigned_repo}&tag=1.0".encode()
    for route in (
        "/images/create?fromImage=" + world.repo + "&tag=1.0",
        "/_ping",
        "/containers/json",
    ):
        response = send(
            world,
            req("POST", V + route, {"Content-Type": "application/x-www-form-urlencoded"}, body),
        )
        assert status_of(response) == 400, (route, response)
    unchanged(world, before)


def test_X13_multipart_body_on_build(world: World) -> None:
    before = world.snapshot()
    boundary = "xyz"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="remote"\r\n\r\n'
        f"http://127.0.0.1:1/ctx.tar\r\n--{boundary}--\r\n"
    ).encode()
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    response = send(world, req("POST", f"{V}/build", headers, body))
    assert status_of(response) == 400, response
    unchanged(world, before)


def test_X13b_multipart_spelled_with_a_dotted_capital_i(world: World) -> None:
    """Go's mime.ParseMediaType lowers the media type with Unicode rules, so
    `multİpart/form-data` (U+0130, whose lower case is `i`) is multipart to the engine's
    `FormValue`. On 20.10 `/build` parses the form from after the first 4096 bytes of the
    body: a context file's data can carry a `remote` part, and the engine then builds the
    Dockerfile a URL serves, pulling its unverified `FROM` itself."""
    import http.server
    import io
    import tarfile

    served = f"FROM {world.unsigned_repo}:1.0\n".encode()
    fetched: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            fetched.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(served)))
            self.end_headers()
            self.wfile.write(served)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    boundary = "xyz"
    url = f"http://127.0.0.1:{server.server_address[1]}/Dockerfile"
    part = (
        f'\r\n--{boundary}\r\nContent-Disposition: form-data; name="remote"\r\n\r\n'
        f"{url}\r\n--{boundary}--\r\n"
    ).encode()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in (("pad", b"p" * 5000), ("form", part), ("Dockerfile", b"FROM scratch\n")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    before = world.snapshot()
    try:
        for kind in ("mult\u0130part/form-data", "MULT\u0130PART/FORM-DATA"):
            data = req("POST", f"{V}/build?t=x13b{time.monotonic_ns()}", {}, buf.getvalue())
            head, sep, body = data.partition(b"\r\n\r\n")
            header = f"\r\nContent-Type: {kind}; boundary={boundary}".encode()
            response = raw_request(world.proxy.socket, head + header + sep + body, read_timeout=60)
            assert status_of(response) == 400 and b"trustpull" in response, (kind, response)
        assert fetched == []
        assert world.image(f"{world.unsigned_repo}:1.0") is None
        unchanged(world, before)
    finally:
        server.shutdown()
        server.server_close()
        world.rmi(f"{world.unsigned_repo}:1.0")


def test_X14_semicolons_and_bad_escapes(world: World) -> None:
    before = world.snapshot()
    for target in (
        f"{V}/images/create?fromImage={world.unsigned_repo};x=y&tag=1.0",
        f"{V}/build?pull=%zz&pull=1",
        f"{V}/build?dockerfile=a;b&remote=http://127.0.0.1:1/x",
    ):
        response = send(world, req("POST", target))
        assert status_of(response) == 400, (target, response)
    unchanged(world, before)


def test_X15_fragment_and_control_bytes(world: World) -> None:
    before = world.snapshot()
    for target in (
        f"{V}/images/create?fromImage=x#&fromImage={world.unsigned_repo}",
        f"{V}/images%00/create?fromImage={world.unsigned_repo}",
        f"{V}/images/create?fromImage=\t{world.unsigned_repo}",
    ):
        response = send(world, req("POST", target))
        assert status_of(response) == 400, (target, response)
    unchanged(world, before)


def test_X16_parameter_name_case(world: World) -> None:
    before = world.snapshot()
    target = f"{V}/images/create?FromImage={world.repo}&fromImage={world.unsigned_repo}&tag=1.0"
    response = send(world, req("POST", target))
    assert status_of(response) == 403 and world.unsigned_repo.encode() in response, response
    unchanged(world, before)


def test_X17_forced_options_replace_not_append() -> None:
    from trust.proxy.routes import booleanish, parse_query

    query = parse_query("nocache=0&t=a&nocache=off&pull=1")
    forced = query.replaced(nocache="1")
    assert forced.all("nocache") == ["1"] and forced.first("nocache") == "1"
    assert forced.all("t") == ["a"]
    assert parse_query("fromImage=a&tag=b").replaced(tag="sha256:x").encode() == (
        "fromImage=a&tag=sha256%3Ax"
    )
    assert booleanish("off") and booleanish("nope") and booleanish("1")
    assert not booleanish("False") and not booleanish(" no ") and not booleanish("")


# ---------------------------------------------------------------------------- JSON bodies


def test_X18_case_variants_and_duplicates_of_image(world: World) -> None:
    signed = f"{world.repo}:1.0"
    evil = f"{world.unsigned_repo}:1.0"
    before = world.snapshot()
    bodies = [
        f'{{"Image":"{signed}","image":"{evil}","Cmd":["true"]}}',
        f'{{"Image":"{signed}","IMAGE":"{evil}","Cmd":["true"]}}',
        f'{{"Image":"{signed}","Cmd":["true"],"Image":"{evil}"}}',
        f'{{"Image":"{signed}","Im\\u0061ge":"{evil}","Cmd":["true"]}}',
    ]
    for body in bodies:
        response = send(world, req("POST", f"{V}/containers/create", JSON, body.encode()))
        assert status_of(response) == 403, (body, response)
        assert world.unsigned_repo.encode() in response
    unchanged(world, before)


def test_X18b_null_and_repeated_objects_are_not_last_wins(world: World, evil_id: str) -> None:
    """Go ignores a `null` for a string field and merges a repeated object: the engine itself
    creates from the first `Image` of `{"Image":E,"Image":null}` (checked behind the proxy);
    through the proxy each such body is refused and the engine holds nothing new."""
    behind = json.dumps({"Image": evil_id, "Cmd": ["true"]})[:-1] + ',"Image":null}'
    created = api(world.engine_socket, "POST", f"{V}/containers/create", behind.encode(), JSON)
    assert created[0] == 201, created
    world.engine("rm", "-f", json.loads(created[1])["Id"])
    world.client("pull", f"{world.repo}:1.0")  # the binds cases name a present signed image
    before = world.snapshot()
    sock = world.engine_socket
    for body in (
        behind,
        f'{{"Image":"{world.repo}:1.0","HostConfig":{{"Binds":["{sock}:/s"]}},"hostconfig":{{}}}}',
        f'{{"Image":"{world.repo}:1.0","HostConfig":{{"Binds":["{sock}:/s"]}},"Ho\\ufb06Config":{{}}}}',
    ):
        response = send(world, req("POST", f"{V}/containers/create", JSON, body.encode()))
        assert status_of(response) in (400, 403), (body, response)
    unchanged(world, before)


def test_X19_trailing_json_value(world: World) -> None:
    before = world.snapshot()
    signed = f"{world.repo}:1.0"
    for body in (
        f'{{"Image":"{signed}"}} {{"Image":"{world.unsigned_repo}:1.0"}}',
        f'{{"Image":"{signed}"}}garbage',
    ):
        response = send(world, req("POST", f"{V}/containers/create", JSON, body.encode()))
        assert status_of(response) == 400, response
    unchanged(world, before)


def test_X20_oversized_body(world: World) -> None:
    before = world.snapshot()
    padding = "x" * (5 * 1024 * 1024)
    body = json.dumps(
        {
            "Labels": {"pad": padding},
            "Image": f"{world.unsigned_repo}:1.0",
            "HostConfig": {"Privileged": True},
        }
    ).encode()
    response = send(world, req("POST", f"{V}/containers/create", JSON, body))
    assert status_of(response) == 413, response[:300]
    unchanged(world, before)


def _chunked(body: bytes, ext: str = "", trailer: str = "") -> bytes:
    size = f"{len(body):x}{ext}"
    return f"{size}\r\n".encode() + body + b"\r\n0\r\n" + trailer.encode() + b"\r\n"


def test_X21_body_the_length_says_is_not_there(world: World) -> None:
    before = world.snapshot()
    evil = create_body(f"{world.unsigned_repo}:1.0")
    smuggle = {
        "Content-Type": "application/json",
        "Content-Length": "0",
        "Transfer-Encoding": "chunked",
    }
    response = send(
        world, req("POST", f"{V}/containers/create", smuggle, _chunked(evil), length=False)
    )
    assert status_of(response) == 400, response
    chunked = {"Content-Type": "application/json", "Transfer-Encoding": "chunked"}
    response = send(
        world, req("POST", f"{V}/containers/create", chunked, _chunked(evil), length=False)
    )
    assert status_of(response) == 403, response
    response = send(world, req("POST", f"{V}/build?remote=http://127.0.0.1:1/x.tar&version=1"))
    assert status_of(response) == 403 and b"remote" in response, response
    response = send(world, req("POST", f"{V}/build?remote=client-session&session=abc&version=2"))
    assert status_of(response) == 403 and b"BuildKit" in response, response
    unchanged(world, before)


def _engine_lists_its_socket(world: World, body: bytes) -> None:
    """Sent straight to the engine, `body` makes a container that sees the engine's socket
    (the case is real on this engine), which is then removed."""
    status, created, _ = api(world.engine_socket, "POST", f"{V}/containers/create", body, JSON)
    assert status == 201, created
    cid = json.loads(created)["Id"]
    try:
        world.engine("start", "-a", cid)
        listed = world.engine("logs", cid).stdout
        assert os.path.basename(world.engine_socket) in listed.split(), listed
    finally:
        world.engine("rm", "-f", "-v", cid)


def test_X22_image_mount(world: World) -> None:
    signed = f"{world.repo}:1.0"
    if world.image(signed) is None:
        world.client("pull", signed)
    before = world.snapshot()
    body = create_body(
        signed,
        HostConfig={
            "Mounts": [{"Type": "image", "Source": f"{world.unsigned_repo}:1.0", "Target": "/opt"}]
        },
    )
    response = send(world, req("POST", f"{V}/containers/create", JSON, body))
    assert status_of(response) == 403, response
    unchanged(world, before)


def test_X22b_a_volume_mount_binding_the_engine_socket(world: World) -> None:
    """A `volume` mount with local driver options `type=none,o=bind,device=DIR` is a bind
    mount of DIR: behind the proxy the container sees the engine socket (measured here);
    through the proxy it is refused like a `bind` of DIR."""
    signed = f"{world.repo}:1.0"
    if world.image(signed) is None:
        world.client("pull", signed)
    directory = os.path.dirname(world.engine_socket)
    options = {"type": "none", "o": "bind", "device": directory}
    mount = {
        "Type": "volume",
        "Target": "/e",
        "VolumeOptions": {"DriverConfig": {"Options": options}},
    }
    body = create_body(signed, Cmd=["ls", "/e"], HostConfig={"Mounts": [mount]})
    _engine_lists_its_socket(world, body)
    before = world.snapshot()
    response = send(world, req("POST", f"{V}/containers/create", JSON, body))
    assert status_of(response) == 403 and b"EngineSocket" in response, response
    unchanged(world, before)


def test_X22c_top_level_host_config_fields(world: World) -> None:
    """The 20.10 create body embeds a second, deprecated HostConfig at the top level
    (runconfig `ContainerConfigWrapper`): with no `HostConfig` key, top-level `Binds` and
    `Mounts` are the container's (measured here: the container lists the engine socket's
    directory). Through the proxy they are checked like `HostConfig`'s, or refused."""
    signed = f"{world.repo}:1.0"
    if world.image(signed) is None:
        world.client("pull", signed)
    directory = os.path.dirname(world.engine_socket)
    body = create_body(signed, Cmd=["ls", "/e"], Binds=[f"{directory}:/e"])
    _engine_lists_its_socket(world, body)
    before = world.snapshot()
    bind = {"Type": "bind", "Source": directory, "Target": "/e"}
    for body in (
        create_body(signed, Binds=[f"{directory}:/e"]),
        create_body(signed, binds=[f"{directory}:/e"]),
        create_body(signed, Mounts=[bind]),
        create_body(signed, HostConfig={}, Binds=[f"{directory}:/e"]),
    ):
        response = send(world, req("POST", f"{V}/containers/create", JSON, body))
        assert status_of(response) in (400, 403), (body, response)
    unchanged(world, before)


def test_X44c_start_with_a_host_config_body(world: World) -> None:
    """Before API 1.24 `POST /containers/{id}/start` takes a HostConfig body and dockerd 20.10
    still applies it (`setHostConfig`: its binds become the container's): a container created
    through the proxy from a signed image, started through it with a bind of the engine
    socket's directory, would list the engine socket. Refused; the container never started."""
    signed = f"{world.repo}:1.0"
    if world.image(signed) is None:
        world.client("pull", signed)
    directory = os.path.dirname(world.engine_socket)
    proc = world.client("create", "--network", "none", signed, "ls", "/e")
    assert proc.returncode == 0, proc
    cid = proc.stdout.strip().splitlines()[-1]
    try:
        host_config = json.dumps({"Binds": [f"{directory}:/e"]}).encode()
        for version in ("/v1.23", "/v1.12"):
            response = send(
                world, req("POST", f"{version}/containers/{cid}/start", JSON, host_config)
            )
            assert status_of(response) in (400, 403), (version, response)
        info = json.loads(world.engine("inspect", cid).stdout)[0]
        assert info["State"]["StartedAt"].startswith("0001-"), info["State"]
        assert not info["HostConfig"]["Binds"] and not info["Mounts"], info
        # an empty body (what clients send) still starts it
        response = send(world, req("POST", f"/v1.23/containers/{cid}/start", JSON, b""))
        assert status_of(response) == 204, response
    finally:
        world.engine("rm", "-f", cid, check=False)


def test_X22d_volumes_from_and_named_volumes_made_behind_the_proxy(world: World) -> None:
    """A container or a local volume made directly on the engine (before the proxy, say a
    monitoring agent binding `/run`) can carry a bind of the engine socket's directory; a
    create through the proxy that takes it over (`VolumesFrom`, or the volume by name in
    `Binds` or a `volume` mount) would see the engine socket. Refused like a bind of it."""
    signed = f"{world.repo}:1.0"
    if world.image(signed) is None:
        world.client("pull", signed)
    directory = os.path.dirname(world.engine_socket)
    holder = f"holder{time.monotonic_ns()}"
    volume = f"enginedir{time.monotonic_ns()}"
    world.engine("create", "--name", holder, "--network", "none", "-v", f"{directory}:/e", signed)
    options = ("-o", "type=none", "-o", "o=bind", "-o", f"device={directory}")
    world.engine("volume", "create", "-d", "local", *options, volume)
    try:
        _engine_lists_its_socket(
            world, create_body(signed, Cmd=["ls", "/e"], HostConfig={"VolumesFrom": [holder]})
        )
        before = world.snapshot()
        for host_config in (
            {"VolumesFrom": [holder]},
            {"VolumesFrom": [f"{holder}:ro"]},
            {"Binds": [f"{volume}:/e"]},
            {"Mounts": [{"Type": "volume", "Source": volume, "Target": "/e"}]},
        ):
            body = create_body(signed, Cmd=["ls", "/e"], HostConfig=host_config)
            response = send(world, req("POST", f"{V}/containers/create", JSON, body))
            assert status_of(response) == 403 and b"EngineSocket" in response, (body, response)
        unchanged(world, before)
        # a container with no such mount still lends its volumes (forwarded by its ID)
        world.engine("create", "--name", f"{holder}ok", "-v", "/data", signed)
        body = create_body(signed, HostConfig={"VolumesFrom": [f"{holder}ok:ro"]})
        response = send(world, req("POST", f"{V}/containers/create", JSON, body))
        assert status_of(response) == 201, response
        created = json.loads(response.split(b"\r\n\r\n", 1)[1])["Id"]
        info = json.loads(world.engine("inspect", created).stdout)[0]
        lender = json.loads(world.engine("inspect", f"{holder}ok").stdout)[0]["Id"]
        assert info["HostConfig"]["VolumesFrom"] == [f"{lender}:ro"], info["HostConfig"]
        assert [m["Destination"] for m in info["Mounts"]] == ["/data"], info["Mounts"]
        world.engine("rm", "-f", "-v", created)
    finally:
        world.engine("rm", "-f", "-v", holder, f"{holder}ok", check=False)
        world.engine("volume", "rm", "-f", volume, check=False)


def test_X22e_pid_mode_of_a_container_made_behind_the_proxy(world: World) -> None:
    """`PidMode: container:X` shares X's processes and, through `/proc/1/root`, X's mounts:
    with X made directly on the engine binding the engine socket's directory, a container
    created through the proxy lists the engine socket (measured here). Refused; a container
    with no such mount still shares its PID namespace, forwarded by its ID."""
    signed = f"{world.repo}:1.0"
    if world.image(signed) is None:
        world.client("pull", signed)
    directory = os.path.dirname(world.engine_socket)
    holder = f"pidholder{time.monotonic_ns()}"
    run = ("run", "-d", "--network", "none", "--name")
    world.engine(*run, holder, "-v", f"{directory}:/e", signed, "sleep", "120")
    world.engine(*run, f"{holder}ok", signed, "sleep", "120")
    try:
        sharing = {"PidMode": f"container:{holder}"}
        _engine_lists_its_socket(
            world, create_body(signed, Cmd=["ls", "/proc/1/root/e"], HostConfig=sharing)
        )
        before = world.snapshot()
        body = create_body(signed, Cmd=["ls", "/proc/1/root/e"], HostConfig=sharing)
        response = send(world, req("POST", f"{V}/containers/create", JSON, body))
        assert status_of(response) == 403 and b"EngineSocket" in response, response
        unchanged(world, before)
        body = create_body(signed, HostConfig={"PidMode": f"container:{holder}ok"})
        response = send(world, req("POST", f"{V}/containers/create", JSON, body))
        assert status_of(response) == 201, response
        created = json.loads(response.split(b"\r\n\r\n", 1)[1])["Id"]
        lender = json.loads(world.engine("inspect", f"{holder}ok").stdout)[0]["Id"]
        info = json.loads(world.engine("inspect", created).stdout)[0]
        assert info["HostConfig"]["PidMode"] == f"container:{lender}", info["HostConfig"]
        world.engine("rm", "-f", created)
    finally:
        world.engine("rm", "-f", holder, f"{holder}ok", check=False)


def test_X22f_an_overlay_volume_over_the_engine_socket_directory(world: World) -> None:
    """A local volume `type=overlay,device=overlay,o=lowerdir=DIR,upperdir=…,workdir=…`
    shows DIR's files, the engine socket among them (measured here: the container lists
    it). Its `device` is no path, so only `device` being checked let it through the proxy:
    `volumes/create`, a `volume` mount creating it, and the volume made on the engine and
    used by name are refused."""
    signed = f"{world.repo}:1.0"
    if world.image(signed) is None:
        world.client("pull", signed)
    directory = os.path.dirname(world.engine_socket)
    work = Path(tempfile.mkdtemp(prefix="tpo-", dir="/tmp"))
    (work / "u").mkdir()
    (work / "w").mkdir()
    o = f"lowerdir={directory},upperdir={work}/u,workdir={work}/w"
    options = {"type": "overlay", "device": "overlay", "o": o}
    name = f"overlay{time.monotonic_ns()}"
    try:
        before = world.snapshot()
        for spec in (
            {"Name": name, "Driver": "local", "DriverOpts": options},
            {"Name": name, "DriverOpts": {**options, "o": o.replace("lowerdir=", "lowerdir=r")}},
            {"Name": name, "DriverOpts": {**options, "o": o.replace("/", "\\/", 1)}},
        ):
            body = json.dumps(spec).encode()
            response = send(world, req("POST", f"{V}/volumes/create", JSON, body))
            assert status_of(response) == 403 and b"EngineSocket" in response, (spec, response)
        assert name not in world.engine("volume", "ls", "-q").stdout.split()
        mount = {
            "Type": "volume",
            "Source": name,
            "Target": "/e",
            "VolumeOptions": {"DriverConfig": {"Name": "local", "Options": options}},
        }
        body = create_body(signed, Cmd=["ls", "/e"], HostConfig={"Mounts": [mount]})
        response = send(world, req("POST", f"{V}/containers/create", JSON, body))
        assert status_of(response) == 403 and b"EngineSocket" in response, response
        unchanged(world, before)
        flags = [arg for key, value in options.items() for arg in ("-o", f"{key}={value}")]
        world.engine("volume", "create", "-d", "local", *flags, name)
        _engine_lists_its_socket(world, create_body(signed, Cmd=["ls", "/e"], Binds=[f"{name}:/e"]))
        before = world.snapshot()
        body = create_body(signed, Cmd=["ls", "/e"], HostConfig={"Binds": [f"{name}:/e"]})
        response = send(world, req("POST", f"{V}/containers/create", JSON, body))
        assert status_of(response) == 403 and b"EngineSocket" in response, response
        unchanged(world, before)
    finally:
        world.engine("volume", "rm", "-f", name, check=False)
        shutil.rmtree(work, ignore_errors=True)


def test_X22g_a_relative_bind_device(world: World) -> None:
    """A local volume's bind `device` is handed to mount(2) as written, so a relative one
    resolves against dockerd's working directory (here the engine socket's directory: the
    container lists the socket, measured). Refused through the proxy."""
    signed = f"{world.repo}:1.0"
    if world.image(signed) is None:
        world.client("pull", signed)
    assert os.path.samefile(world.stack.dockerd.dir, os.path.dirname(world.engine_socket))
    options = {"type": "none", "o": "bind", "device": "."}
    name = f"relative{time.monotonic_ns()}"
    try:
        flags = [arg for key, value in options.items() for arg in ("-o", f"{key}={value}")]
        world.engine("volume", "create", "-d", "local", *flags, name)
        _engine_lists_its_socket(world, create_body(signed, Cmd=["ls", "/e"], Binds=[f"{name}:/e"]))
        world.engine("volume", "rm", name)
        before = world.snapshot()
        for device in (".", "./", "d", "run/x"):
            spec = {"Name": name, "DriverOpts": {**options, "device": device}}
            body = json.dumps(spec).encode()
            response = send(world, req("POST", f"{V}/volumes/create", JSON, body))
            assert status_of(response) == 403 and b"EngineSocket" in response, (spec, response)
        assert name not in world.engine("volume", "ls", "-q").stdout.split()
        unchanged(world, before)
    finally:
        world.engine("volume", "rm", "-f", name, check=False)


def test_X22h_a_bind_source_made_a_link_to_the_engine_socket_after_create(world: World) -> None:
    """A bind source is mounted at start, following symlinks then: a container created
    through the proxy with `-v DIR/link:/e` (no such path yet, or a plain directory, also a
    local volume's bind `device`) and DIR/link made a symlink to the engine socket's
    directory afterwards (by a local user, or by a container binding DIR) listed the engine
    socket when started through the proxy (measured here, 204). The start and restart
    check the container's mounts again as the create did."""
    signed = f"{world.repo}:1.0"
    if world.image(signed) is None:
        world.client("pull", signed)
    directory = os.path.dirname(world.engine_socket)
    work = Path(tempfile.mkdtemp(prefix="tpl-", dir="/tmp"))
    (work / "dir").mkdir()
    volume = f"linked{time.monotonic_ns()}"
    created: list[str] = []
    try:
        options = {"type": "none", "o": "bind", "device": f"{work}/dir"}
        spec = {"Name": volume, "DriverOpts": options}
        response = send(world, req("POST", f"{V}/volumes/create", JSON, json.dumps(spec).encode()))
        assert status_of(response) == 201, response
        for binds in ([f"{work}/link:/e"], [f"{volume}:/e"]):
            body = create_body(signed, Cmd=["ls", "/e"], HostConfig={"Binds": binds})
            response = send(world, req("POST", f"{V}/containers/create", JSON, body))
            assert status_of(response) == 201, response
            created.append(json.loads(body_of(response))["Id"])
        (work / "link").symlink_to(directory)
        (work / "dir").rmdir()
        (work / "dir").symlink_to(directory)
        _engine_lists_its_socket(
            world, create_body(signed, Cmd=["ls", "/e"], HostConfig={"Binds": [f"{work}/link:/e"]})
        )
        for cid in created:
            for action in ("start", "restart"):
                response = send(world, req("POST", f"{V}/containers/{cid}/{action}"))
                assert status_of(response) == 403 and b"EngineSocket" in response, response
            info = json.loads(world.engine("inspect", cid).stdout)[0]
            assert info["State"]["StartedAt"].startswith("0001-"), info["State"]
        # a container made directly on the engine from the signed image with a bind of the
        # engine socket's directory is not started through the proxy either
        holder = world.engine(
            "create", "--network", "none", "-v", f"{directory}:/e", signed, "ls", "/e"
        ).stdout.strip()
        created.append(holder)
        response = send(world, req("POST", f"{V}/containers/{holder}/start"))
        assert status_of(response) == 403 and b"EngineSocket" in response, response
        info = json.loads(world.engine("inspect", holder).stdout)[0]
        assert info["State"]["StartedAt"].startswith("0001-"), info["State"]
        # once the link is gone the same container starts (the check is of the path now)
        (work / "link").unlink()
        response = send(world, req("POST", f"{V}/containers/{created[0]}/start"))
        assert status_of(response) == 204, response
    finally:
        world.engine("rm", "-f", *created, check=False)
        world.engine("volume", "rm", "-f", volume, check=False)
        shutil.rmtree(work, ignore_errors=True)


def test_X22i_mount_checks_under_an_api_version_before_1_20(world: World) -> None:
    """Under API < 1.20 the engine's container inspect has no `Mounts` (20.10's
    `containerInspectPre120` answers `Volumes`/`VolumesRW` instead), and the proxy asked its
    inspects with the client's version: `/v1.19/containers/create` with `VolumesFrom` or
    `PidMode: container:X` of a container binding the engine socket's directory was created
    (201; started, it listed docker.sock, measured here), and so was a `/v1.19` start after
    a bind source became a link to it. The proxy's container inspects ask the engine's own
    version, whose answer has `Mounts`."""
    signed = f"{world.repo}:1.0"
    if world.image(signed) is None:
        world.client("pull", signed)
    directory = os.path.dirname(world.engine_socket)
    holder = f"oldholder{time.monotonic_ns()}"
    world.engine(
        "run",
        "-d",
        "--network",
        "none",
        "--name",
        holder,
        "-v",
        f"{directory}:/e",
        signed,
        "sleep",
        "120",
    )
    work = Path(tempfile.mkdtemp(prefix="tpv-", dir="/tmp"))
    created: list[str] = []
    try:
        info = api(world.engine_socket, "GET", f"/v1.19/containers/{holder}/json")[1]
        assert json.loads(info).get("Mounts") is None, info  # what the proxy was reading
        before = world.snapshot()
        for version in ("/v1.19", "/v1.12"):
            for host_config in (
                {"VolumesFrom": [holder]},
                {"PidMode": f"container:{holder}"},
            ):
                body = create_body(signed, Cmd=["ls", "/e"], HostConfig=host_config)
                response = send(world, req("POST", f"{version}/containers/create", JSON, body))
                assert status_of(response) == 403 and b"EngineSocket" in response, (
                    version,
                    host_config,
                    response,
                )
        unchanged(world, before)
        body = create_body(signed, Cmd=["ls", "/e"], HostConfig={"Binds": [f"{work}/link:/e"]})
        response = send(world, req("POST", f"{V}/containers/create", JSON, body))
        assert status_of(response) == 201, response
        created.append(json.loads(body_of(response))["Id"])
        (work / "link").symlink_to(directory)
        response = send(world, req("POST", f"/v1.19/containers/{created[0]}/start"))
        assert status_of(response) == 403 and b"EngineSocket" in response, response
        info = json.loads(world.engine("inspect", created[0]).stdout)[0]
        assert info["State"]["StartedAt"].startswith("0001-"), info["State"]
    finally:
        world.engine("rm", "-f", holder, *created, check=False)
        shutil.rmtree(work, ignore_errors=True)


def _hardlink_tar(name: str, target: str) -> bytes:
    """A tar of one hard link `name` -> `target` and one small file."""
    import io
    import tarfile

    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        link = tarfile.TarInfo(name)
        link.type = tarfile.LNKTYPE
        link.linkname = target
        tar.addfile(link)
        data = b"planted\n"
        planted = tarfile.TarInfo(f"planted{time.monotonic_ns()}")
        planted.size = len(data)
        tar.addfile(planted, io.BytesIO(data))
    return out.getvalue()


def test_X22j_docker_cp_into_a_bind_made_a_link_and_hard_links_of_the_socket(
    world: World,
) -> None:
    """`PUT /containers/{id}/archive` mounts the container's binds (as a start does) and
    extracts there: with a bind source made a symlink to the engine socket's directory after
    the create (X22h), `docker cp` through the proxy wrote into that directory (200), a
    hard link of the engine socket among what it can write; a bind of such a link
    (another name, or in a directory below the socket's) was then created and run through
    the proxy and had the engine socket (same inode, measured here). The archive upload
    checks the container's mounts as a start does; a bind source below the engine socket's
    directory, or with the engine socket's inode, is refused."""
    signed = f"{world.repo}:1.0"
    if world.image(signed) is None:
        world.client("pull", signed)
    directory = os.path.dirname(world.engine_socket)
    work = Path(tempfile.mkdtemp(prefix="tpj-", dir="/tmp"))
    unique = time.monotonic_ns()
    name = f"x{unique}.sock"
    created: list[str] = []
    made: list[Path] = []
    try:
        body = create_body(signed, Cmd=["true"], HostConfig={"Binds": [f"{work}/link:/e"]})
        response = send(world, req("POST", f"{V}/containers/create", JSON, body))
        assert status_of(response) == 201, response
        created.append(json.loads(body_of(response))["Id"])
        (work / "link").symlink_to(directory)
        listing = set(os.listdir(directory))
        tar = _hardlink_tar(name, "docker.sock")
        headers = {"Content-Type": "application/x-tar"}
        target = f"{V}/containers/{created[0]}/archive?path=/e"
        response = send(world, req("PUT", target, headers, tar))
        assert status_of(response) == 403 and b"EngineSocket" in response, response
        assert set(os.listdir(directory)) == listing
        # hard links of the engine socket, however made: in its directory, in a directory
        # below it, and elsewhere on its filesystem (this engine's socket is under /tmp)
        below = Path(directory) / f"sub{unique}"
        below.mkdir()
        made += [Path(directory) / name, below / "docker.sock", work / "docker.sock", below]
        for link in made[:3]:
            os.link(world.engine_socket, link)
        _engine_lists_its_socket(
            world, create_body(signed, Cmd=["ls", "/e"], Binds=[f"{below}:/e"])
        )
        before = world.snapshot()
        for source in (made[0], made[1], below, made[2]):
            body = create_body(
                signed, Cmd=["ls", "-i", "/e"], HostConfig={"Binds": [f"{source}:/e"]}
            )
            response = send(world, req("POST", f"{V}/containers/create", JSON, body))
            assert status_of(response) == 403 and b"EngineSocket" in response, (source, response)
        unchanged(world, before)
    finally:
        world.engine("rm", "-f", *created, check=False)
        for path in reversed(made):
            with contextlib.suppress(OSError):
                path.rmdir() if path.is_dir() else path.unlink()
        shutil.rmtree(work, ignore_errors=True)


# ------------------------------------------------------------------ framing and smuggling


def _hidden_pull(world: World) -> bytes:
    return req("POST", pull_target(world.unsigned_repo, "1.0"))


def test_X23_te_plus_cl(world: World) -> None:
    before = world.snapshot()
    hidden = _hidden_pull(world)
    data = req(
        "POST",
        f"{V}/_ping",
        {"Content-Length": "5", "Transfer-Encoding": "chunked"},
        b"0\r\n\r\n" + hidden,
        length=False,
    )
    response = send(world, data)
    assert statuses(response) == [400], response
    unchanged(world, before)


def test_X24_http10_with_te(world: World) -> None:
    before = world.snapshot()
    data = req(
        "GET",
        f"{V}/_ping",
        {"Connection": "keep-alive", "Transfer-Encoding": "chunked"},
        _hidden_pull(world),
        version="1.0",
        length=False,
    )
    response = send(world, data)
    assert statuses(response) == [400], response
    unchanged(world, before)


def test_X25_two_content_lengths(world: World) -> None:
    for values in (("5", "6"), ("5", "5"), ("+5",), ("5, 5",)):
        head = f"POST {V}/_ping HTTP/1.1\r\nHost: x\r\n" + "".join(
            f"Content-Length: {v}\r\n" for v in values
        )
        response = send(world, head.encode() + b"\r\nhello!")
        assert status_of(response) == 400, (values, response)


def test_X26_chunk_extensions_and_trailers(world: World) -> None:
    signed = f"{world.repo}:1.0"
    if world.image(signed) is None:
        world.client("pull", signed)
    body = create_body(signed)
    headers = {"Content-Type": "application/json", "Transfer-Encoding": "chunked"}
    trailer = "Content-Type: application/x-www-form-urlencoded\r\nX-Registry-Auth: e30=\r\n"
    response = send(
        world,
        req(
            "POST",
            f"{V}/containers/create",
            headers,
            _chunked(body, ";foo=bar", trailer),
            length=False,
        ),
    )
    assert status_of(response) == 201, response
    cid = json.loads(body_of(response))["Id"]
    inspect = json.loads(world.engine("inspect", cid).stdout)[0]
    assert inspect["Config"]["Image"] == f"{world.repo}@{world.signed_digest}"
    world.engine("rm", "-f", cid)


def test_X27_pipelined_request_after_a_short_body(world: World) -> None:
    signed = f"{world.repo}:1.0"
    if world.image(signed) is None:
        world.client("pull", signed)
    before = world.snapshot()
    data = req("POST", f"{V}/containers/create", JSON, create_body(signed), close=False)
    data += _hidden_pull(world)
    response = send(world, data)
    assert statuses(response) == [201, 403], response
    images, tags, containers = world.snapshot()
    assert (images, tags) == before[:2]
    for cid in containers - before[2]:
        world.engine("rm", "-f", cid)


def test_X28_expect_100_continue_on_a_refused_request(world: World) -> None:
    head = (
        f"POST {V}/images/load HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-tar\r\n"
        f"Content-Length: {2 * 1024**3}\r\nExpect: 100-continue\r\n\r\n"
    ).encode()
    response = send(world, head)
    assert statuses(response) == [403], response
    assert b"100 Continue" not in response
    response = send(world, req("GET", f"{V}/_ping", {"Expect": "foo"}, length=False))
    assert status_of(response) == 417, response


def test_X29_oversized_or_endless_headers(world: World) -> None:
    big = "X-Pad: " + "a" * (2 * 1024 * 1024)
    response = send(world, f"GET {V}/_ping HTTP/1.1\r\nHost: x\r\n{big}\r\n\r\n".encode())
    assert status_of(response) == 431, response[:200]
    many = "".join(f"X-H{i}: v\r\n" for i in range(10_000))
    response = send(world, f"GET {V}/_ping HTTP/1.1\r\nHost: x\r\n{many}\r\n".encode())
    assert status_of(response) == 431, response[:200]
    config = base64.urlsafe_b64encode(b"{" + b" " * (675 * 1024) + b"}").decode()
    assert 899 * 1024 < len(config) < 901 * 1024
    response = send(
        world,
        req(
            "GET", f"{V}/_ping", {"X-Registry-Config": config, "Connection": "close"}, length=False
        ),
    )
    assert status_of(response) == 200, response[:200]


def test_X30_connection_naming_end_to_end_headers(world: World) -> None:
    before = world.snapshot()
    for value in ("close, X-Registry-Auth", "Content-Type"):
        body = create_body(f"{world.repo}:1.0")
        response = send(
            world, req("POST", f"{V}/containers/create", {**JSON, "Connection": value}, body)
        )
        assert status_of(response) == 400, response
    unchanged(world, before)


def test_X31_h2c_and_http2_requests(world: World) -> None:
    before = world.snapshot()
    upgrade = {
        "Connection": "Upgrade",
        "Upgrade": "h2c",
        "HTTP2-Settings": "AAMAAABkAAQAoAAAAAIAAAAA",
    }
    for path in (pull_target(world.unsigned_repo, "1.0"), f"{V}/grpc", f"{V}/session"):
        response = raw_request(world.proxy.socket, req("POST", path, upgrade), answers=1)
        assert status_of(response) == 403, (path, response)
        assert b"101" not in response.split(b"\r\n", 1)[0]
    unchanged(world, before)


def test_X32_attach_without_upgrade_then_a_hidden_request(world: World) -> None:
    signed = f"{world.repo}:1.0"
    if world.image(signed) is None:
        world.client("pull", signed)
    cid = world.engine("run", "-d", "-i", "--network", "none", signed, "cat").stdout.strip()
    before = world.snapshot()
    try:
        hidden = _hidden_pull(world)
        attach = req("POST", f"{V}/containers/{cid}/attach?stream=1&stdin=1&stdout=1", length=False)
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(5)
            sock.connect(world.proxy.socket)
            sock.sendall(attach + hidden)
            out = b""
            deadline = time.monotonic() + 5
            while hidden[:30] not in out and time.monotonic() < deadline:
                try:
                    chunk = sock.recv(65536)
                except TimeoutError:
                    break
                if not chunk:
                    break
                out += chunk
        assert out.startswith(b"HTTP/1.1 200"), out
        assert hidden[:30] in out  # echoed by cat: it went to the container's stdin
        unchanged(world, before)
    finally:
        world.engine("rm", "-f", cid)


# -------------------------------------------------------------------------------- endpoints


def test_X34_unsigned_digest(world: World) -> None:
    before = world.snapshot()
    proc = world.client("pull", f"{world.repo}@{world.evil_digest}")
    assert proc.returncode == 1, proc
    assert "NoSuchTag" in proc.stderr or "not signed" in proc.stderr, proc.stderr
    unchanged(world, before)


def test_X35_import(world: World, tmp_path: Path) -> None:
    tar_path = tmp_path / "evil.tar"
    tar_path.write_bytes(busybox_tar("imported"))
    before = world.snapshot()
    proc = world.client("import", str(tar_path), f"{world.repo}:1.0")
    assert proc.returncode == 1 and "allow_import" in proc.stderr, proc
    response = send(
        world, req("POST", f"{V}/images/create?fromSrc=http://127.0.0.1:1/evil.tar&repo=x")
    )
    # X35b: a URL import names both settings it needs, not only the first
    assert status_of(response) == 403 and b"allow_import_url" in response, response
    unchanged(world, before)
    importing = world.start_proxy("[proxy]\nallow_import = true\n")
    response = send(
        world,
        req("POST", f"{V}/images/create?fromSrc=http://127.0.0.1:1/evil.tar&repo=x"),
        importing,
    )
    assert status_of(response) == 403 and b"allow_import_url" in response, response
    name = f"imported{time.monotonic_ns()}:1"
    proc = world.client("import", str(tar_path), name, proxy=importing)
    assert proc.returncode == 0, proc
    assert world.image(name) is not None
    importing.stop()
    world.rmi(name)


def test_X37_tag_planted_before_the_proxy_started(world: World, evil_id: str) -> None:
    signed = f"{world.repo}:1.0"
    world.rmi(signed)
    world.engine("tag", evil_id, signed)  # behind the proxy's back
    try:
        proc = world.client("run", "--rm", "--network", "none", signed, "cat", "/marker")
        assert proc.returncode == 0, proc
        assert "signed-1.0" in proc.stdout and "evil" not in proc.stdout
        before = world.snapshot()
        proc = world.client("run", "--rm", "--network", "none", evil_id, "true")
        assert proc.returncode == 125 and "not verified" in proc.stderr, proc
        unchanged(world, before)
    finally:
        world.rmi(signed)


def test_X38_retag_between_verify_and_create(world: World, evil_id: str) -> None:
    signed = f"{world.repo}:1.0"
    world.rmi(signed)
    results: list[int] = []

    def pull() -> None:
        results.append(world.client("pull", signed).returncode)

    threads = [threading.Thread(target=pull) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [0, 0, 0]
    image = world.image(signed)
    assert image is not None and f"{world.repo}@{world.signed_digest}" in image["RepoDigests"]
    world.engine("tag", evil_id, signed)  # a retag after verification
    proc = world.client("create", "--network", "none", signed, "true")
    assert proc.returncode == 0, proc
    cid = proc.stdout.strip()
    inspect = json.loads(world.engine("inspect", cid).stdout)[0]
    assert inspect["Image"] != evil_id
    assert inspect["Config"]["Image"] == f"{world.repo}@{world.signed_digest}"
    world.engine("rm", "-f", cid)
    world.rmi(signed)


def test_X39_retag_an_unverified_image_onto_a_signed_name(world: World, evil_id: str) -> None:
    before = world.snapshot()
    proc = world.client("tag", evil_id, f"{world.repo}:1.0")
    assert proc.returncode == 1 and "not verified" in proc.stderr, proc
    response = send(world, req("POST", f"{V}/images/{evil_id}/tag?repo={world.repo}:1.0"))
    assert status_of(response) == 403, response
    unchanged(world, before)
    signed = f"{world.repo}:1.0"
    world.client("pull", signed)
    proc = world.client("tag", signed, "myalpine:latest")
    assert proc.returncode == 0, proc
    world.rmi("myalpine:latest")
    # an admitted (verified) image is not tagged as a signed name whose digest it is not
    other = f"{world.repo}:2.0"
    world.client("pull", other)
    before = world.snapshot()
    proc = world.client("tag", other, signed)
    assert proc.returncode == 1 and "as a signed name" in proc.stderr, proc
    unchanged(world, before)
    world.rmi(other)


def test_X39b_tag_with_a_digest_in_repo(world: World) -> None:
    """`repo=N@sha256:X&tag=1.0`: dockerd 20.10 trims the repository's digest before it adds
    the tag (`TagImage`: `WithTag(TrimNamed(repo), tag)`), so the target is `N:1.0`, whatever
    `X` is. A verified image that is not 1.0's signed one is not tagged so."""
    signed = f"{world.repo}:1.0"
    other = f"{world.repo}:2.0"
    assert world.client("pull", signed).returncode == 0
    assert world.client("pull", other).returncode == 0
    signed_id = (world.image(signed) or {}).get("Id")
    try:
        before = world.snapshot()
        for digest in (world.evil_digest, world.signed2_digest, world.signed_digest):
            repo = urllib.parse.quote(f"{world.repo}@{digest}", safe="")
            response = send(world, req("POST", f"{V}/images/{other}/tag?repo={repo}&tag=1.0"))
            assert status_of(response) == 403 and b"trustpull" in response, (digest, response)
            assert (world.image(signed) or {}).get("Id") == signed_id
        # without `tag` the digest would be the tag's: the engine refuses that, so does the proxy
        repo = urllib.parse.quote(f"{world.repo}:1.0@{world.signed_digest}", safe="")
        response = send(world, req("POST", f"{V}/images/{other}/tag?repo={repo}"))
        assert status_of(response) == 400, response
        unchanged(world, before)
    finally:
        world.rmi(other)
        if (world.image(signed) or {}).get("Id") != signed_id:
            world.engine("rmi", signed, check=False)
            world.client("pull", signed)


def test_X39a_a_hex_source_untagged_between_check_and_tag(world: World, evil_id: str) -> None:
    """`POST /images/<hex>/tag?repo=N&tag=1.0` with `<hex>` a name of the signed image: if the
    tag were forwarded by the source's name, a second client untagging `<hex>` in between
    would make the engine resolve it as an ID prefix and put an unverified image under the
    signed name. It is forwarded by the image ID checked."""
    prefix = evil_id[7:19]
    signed = f"{world.repo}:1.0"
    short = Path(tempfile.mkdtemp(prefix="tph-", dir="/tmp"))
    hooked = EngineProxy(world.engine_socket, short / "engine.sock").start()
    proxy = world.start_proxy(engine=str(hooked.socket_path))
    removed: list[subprocess.CompletedProcess[str]] = []
    try:
        assert world.client("pull", signed, proxy=proxy).returncode == 0
        signed_image = world.image(signed)
        assert signed_image is not None
        assert world.client("tag", signed, prefix, proxy=proxy).returncode == 0

        def untag(request: EngineRequest) -> None:
            removed.append(world.client("rmi", prefix, proxy=proxy))

        hooked.before[("POST", r"/images/.*/tag")] = untag
        target = f"{V}/images/{prefix}/tag?repo={world.repo}&tag=1.0"
        response = send(world, req("POST", target), proxy)
        assert len(removed) == 1 and removed[0].returncode == 0, removed
        after = world.image(signed)
        assert after is not None and after["Id"] == signed_image["Id"] != evil_id, (
            response,
            after and after["Id"],
        )
    finally:
        proxy.stop()
        hooked.stop()
        current = world.image(signed)
        if current is None or current["Id"] == evil_id:
            world.engine("rmi", signed, check=False)  # untag only; evil_id keeps its own name
            world.client("pull", signed)
        world.engine("rmi", f"{prefix}:latest", check=False)


def _build(
    world: World, tmp_path: Path, dockerfile: str, *args: str
) -> subprocess.CompletedProcess[str]:
    (tmp_path / "Dockerfile").write_text(dockerfile)
    return world.client("build", *args, str(tmp_path), DOCKER_BUILDKIT="0")


def test_X40_classic_build_references(world: World, tmp_path: Path) -> None:
    signed = f"{world.repo}:1.0"
    before = world.snapshot()
    proc = _build(world, tmp_path, f"FROM {world.unsigned_repo}:1.0\n")
    assert proc.returncode != 0 and "NoTrustData" in proc.stderr, proc
    proc = _build(
        world,
        tmp_path,
        f"ARG BASE={signed}\nFROM ${{BASE}}\nRUN true\n",
        "--build-arg",
        f"BASE={world.unsigned_repo}:1.0",
    )
    assert proc.returncode != 0 and "NoTrustData" in proc.stderr, proc
    unchanged(world, before)
    name = f"stagebuild{time.monotonic_ns()}:1"
    proc = _build(
        world,
        tmp_path,
        f"FROM {signed} AS alpine\nRUN echo one > /one\nFROM alpine\nRUN cat /one\n",
        "-t",
        name,
        "--pull",
    )
    assert proc.returncode == 0, proc
    assert f"{world.repo}@{world.signed_digest}" in proc.stdout
    proc = world.client("run", "--rm", "--network", "none", name, "cat", "/one")
    assert proc.returncode == 0 and proc.stdout == "one\n", proc
    world.rmi(name)


def test_X40t_a_cachefrom_that_is_no_list_of_names_is_400(world: World) -> None:
    """`cachefrom` is checked name by name (§2.4 step 6): a value that is not a JSON list of
    strings cannot be, so it is 400 before any context is read, and nothing is built."""
    before = world.snapshot()
    for value in ('{"a":"b"}', "[1]", '["ok", null]', '"name"'):
        target = f"{V}/build?cachefrom={urllib.parse.quote(value)}"
        response = send(world, req("POST", target, {"Content-Type": "application/x-tar"}))
        assert status_of(response) == 400, (value, response)
        assert b"cachefrom must be a JSON list of image names" in response, response
    unchanged(world, before)


def test_X41_remote_build_contexts(world: World) -> None:
    import docker

    before = world.snapshot()
    client = docker.APIClient(base_url=world.proxy.docker_host, version="auto")
    try:
        with pytest.raises(docker.errors.APIError) as refused:
            list(client.build(path="https://127.0.0.1:1/ctx.tar", tag="remote:1"))
        assert "build from a local directory" in str(refused.value)
    finally:
        client.close()
    for remote in ("git://127.0.0.1:1/x.git", "http://127.0.0.1:1/ctx.tar"):
        response = send(world, req("POST", f"{V}/build?remote={remote}", body=b"x" * 10))
        assert status_of(response) == 403, response
    unchanged(world, before)


def test_X42_buildkit(world: World) -> None:
    before = world.snapshot()
    response = send(world, req("POST", f"{V}/build?remote=client-session&session=x&version=2"))
    assert status_of(response) == 403 and b"DOCKER_BUILDKIT=0" in response, response
    response = raw_request(
        world.proxy.socket,
        req("POST", f"{V}/grpc", {"Connection": "Upgrade", "Upgrade": "h2c"}),
        answers=1,
    )
    assert status_of(response) == 403, response
    status, _, headers = api(world.proxy.socket, "GET", "/_ping")
    assert status == 200 and headers.get("builder-version") == "1", headers
    unchanged(world, before)


def test_X43_create_by_id_or_prefix(world: World, evil_id: str, tmp_path: Path) -> None:
    before = world.snapshot()
    for image in (evil_id, evil_id[7:19], evil_id[7:]):
        response = send(world, req("POST", f"{V}/containers/create", JSON, create_body(image)))
        assert status_of(response) == 403, (image, response)
    unchanged(world, before)
    name = f"ledgerbuild{time.monotonic_ns()}:1"
    proc = _build(world, tmp_path, f"FROM {world.repo}:1.0\nRUN echo l > /l\n", "-t", name)
    assert proc.returncode == 0, proc
    built = world.image(name)
    assert built is not None
    response = send(
        world, req("POST", f"{V}/containers/create", JSON, create_body(built["Id"][7:19]))
    )
    assert status_of(response) == 201, response
    cid = json.loads(body_of(response))["Id"]
    assert json.loads(world.engine("inspect", cid).stdout)[0]["Config"]["Image"] == built["Id"]
    world.engine("rm", "-f", cid)
    world.rmi(name)


def test_X43b_an_id_prefix_under_a_rule_accepting_unsigned(
    world: World, evil_id: str, tmp_path: Path
) -> None:
    """`abcdef123456` is also the name `docker.io/library/abcdef123456`: when a rule accepts
    that repository unsigned and the name has no local tag, the engine falls back to the ID
    prefix and creates from whatever image has that ID. Through the proxy the image the
    engine resolves must be the accepted name's (or admitted); an unverified one is 403."""
    policy = tmp_path / "policy.toml"
    policy.write_text(
        '[[rules]]\nname = "hub-unsigned"\nregistry = "docker.io"\nallow_unsigned = true\n'
    )
    os.chmod(policy, 0o600)
    proxy = world.start_proxy(policy=policy)
    before = world.snapshot()
    for image in (evil_id[7:19], evil_id[7:]):
        response = send(
            world, req("POST", f"{V}/containers/create", JSON, create_body(image)), proxy
        )
        assert status_of(response) in (403, 404), (image, response)
    unchanged(world, before)


def test_X38d_a_hex_ledger_name_untagged_between_check_and_create(
    world: World, evil_id: str, tmp_path: Path
) -> None:
    """A proxy build tagged `<hex>` (a prefix of an unverified image's ID) runs by its name.
    If the create were forwarded by that name, a second client removing the tag between the
    check and the engine's create would make the engine fall back to the ID prefix and create
    from the unverified image; the create is pinned to the ID checked, so it cannot."""
    prefix = evil_id[7:19]
    short = Path(tempfile.mkdtemp(prefix="tph-", dir="/tmp"))
    hooked = EngineProxy(world.engine_socket, short / "engine.sock").start()
    proxy = world.start_proxy(engine=str(hooked.socket_path))
    removed: list[subprocess.CompletedProcess[str]] = []
    cid = ""
    built: dict[str, object] | None = None
    try:
        (tmp_path / "Dockerfile").write_text(f"FROM {world.repo}:1.0\nRUN echo l > /l\n")
        proc = world.client("build", "-t", prefix, str(tmp_path), proxy=proxy, DOCKER_BUILDKIT="0")
        assert proc.returncode == 0, proc
        built = world.image(prefix)
        assert built is not None and built["Id"] != evil_id

        def untag(request: EngineRequest) -> None:
            removed.append(world.client("rmi", prefix, proxy=proxy))

        hooked.before[("POST", r"/containers/create")] = untag
        response = send(
            world, req("POST", f"{V}/containers/create", JSON, create_body(prefix)), proxy
        )
        assert len(removed) == 1 and removed[0].returncode == 0, removed
        if status_of(response) == 201:
            cid = json.loads(body_of(response))["Id"]
            image = json.loads(world.engine("inspect", cid).stdout)[0]["Image"]
            assert image != evil_id and image == built["Id"], image
        else:
            assert status_of(response) == 404, response
    finally:
        if cid:
            world.engine("rm", "-f", cid)
        proxy.stop()
        hooked.stop()
        if built is not None:  # by ID: `rmi <hex>` without the tag would delete evil_id
            world.engine("rmi", "-f", str(built["Id"]), check=False)


def test_X44_start_a_container_created_behind_the_proxy(world: World, evil_id: str) -> None:
    cid = world.engine("create", "--network", "none", evil_id, "sleep", "30").stdout.strip()
    try:
        for action in ("start", "restart"):
            proc = world.client(action, cid)
            assert proc.returncode == 1 and "not verified" in proc.stderr, (action, proc)
        state = json.loads(world.engine("inspect", cid).stdout)[0]["State"]
        assert not state["Running"]
        world.engine("start", cid)
        world.engine("pause", cid)
        proc = world.client("unpause", cid)
        assert proc.returncode == 1 and "not verified" in proc.stderr, proc
        assert json.loads(world.engine("inspect", cid).stdout)[0]["State"]["Paused"]
    finally:
        world.engine("rm", "-f", cid, check=False)


def test_X45_services(world: World) -> None:
    spec = {
        "Name": "svc",
        "TaskTemplate": {"ContainerSpec": {"Image": f"{world.unsigned_repo}:1.0"}},
    }
    response = send(world, req("POST", f"{V}/services/create", JSON, json.dumps(spec).encode()))
    assert status_of(response) == 403, response
    spec["TaskTemplate"]["ContainerSpec"]["Image"] = f"{world.repo}:1.0@{world.evil_digest}"
    response = send(world, req("POST", f"{V}/services/create", JSON, json.dumps(spec).encode()))
    assert status_of(response) == 403, response
    plugin = {"Name": "p", "TaskTemplate": {"Runtime": "plugin", "PluginSpec": {"Remote": "x/y:1"}}}
    response = send(world, req("POST", f"{V}/services/create", JSON, json.dumps(plugin).encode()))
    assert status_of(response) == 403, response
    # a signed tag is pinned and forwarded: this engine is no swarm manager, so it says so
    spec["TaskTemplate"]["ContainerSpec"]["Image"] = f"{world.repo}:1.0"
    response = send(world, req("POST", f"{V}/services/create", JSON, json.dumps(spec).encode()))
    assert status_of(response) == 503 and b"swarm" in response, response


def test_X46_plugins(world: World, tmp_path: Path) -> None:
    # `docker plugin install` asks GET /plugins/privileges first (read-only, passed through);
    # the engine fails there for a non-plugin image, so the pull itself is sent raw here.
    proc = world.client(
        "plugin", "install", "--grant-all-permissions", f"{world.unsigned_repo}:1.0"
    )
    assert proc.returncode != 0, proc
    for remote in (f"{world.unsigned_repo}:1.0", f"{world.repo}:1.0@{world.evil_digest}"):
        target = f"{V}/plugins/pull?remote={remote}&name=p"
        response = send(world, req("POST", target, JSON, b"[]"))
        assert status_of(response) == 403 and b"trustpull" in response, response
    (tmp_path / "rootfs").mkdir()
    (tmp_path / "config.json").write_text("{}")
    proc = world.client("plugin", "create", "evilplugin", str(tmp_path))
    assert proc.returncode != 0 and "allow_plugin_create" in proc.stderr, proc
    assert world.engine("plugin", "ls", "-q").stdout.strip() == ""


def _plugin_dir(tmp_path: Path, marker: str) -> Path:
    """A plugin directory for `docker plugin create`: a busybox rootfs, a volume driver
    config (it never listens on its socket, so an enable that reaches the engine fails late)."""
    import io
    import tarfile

    directory = tmp_path / f"plugin-{marker}"
    (directory / "rootfs").mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(busybox_tar(marker))) as tar:
        tar.extractall(directory / "rootfs", filter="tar")
    config = {
        "Description": "evil",
        "Documentation": "",
        "Entrypoint": ["/bin/sh", "-c", "sleep 60"],
        "Interface": {"Types": ["docker.volumedriver/1.0"], "Socket": "evil.sock"},
        "Network": {"Type": "host"},
    }
    (directory / "config.json").write_text(json.dumps(config))
    return directory


def test_X46b_enable_a_plugin_installed_behind_the_proxy(world: World, tmp_path: Path) -> None:
    # Created directly on the engine: its PluginReference is its local name, no signed digest.
    name = f"evilplugin{time.monotonic_ns()}"
    world.engine("plugin", "create", name, str(_plugin_dir(tmp_path, name)))
    try:
        # (an engine that tries it answers 500 after some 12 s of dialling the socket)
        request = req("POST", f"{V}/plugins/{name}:latest/enable?timeout=0")
        response = raw_request(world.proxy.socket, request, read_timeout=40, answers=1)
        assert status_of(response) == 403 and b"not verified" in response, response
        proc = world.client("plugin", "enable", name)
        assert proc.returncode == 1 and "not verified" in proc.stderr, proc
        info = json.loads(world.engine("plugin", "inspect", name).stdout)[0]
        assert info["Enabled"] is False
        # allow_plugin_create admits local plugin code: the enable reaches the engine, by ID
        local = world.start_proxy("[proxy]\nallow_plugin_create = true\n")
        try:
            response = raw_request(local.socket, request, read_timeout=40, answers=1)
        finally:
            local.stop()
        assert status_of(response) == 500 and b"evil.sock" in response, response
    finally:
        world.engine("plugin", "rm", "-f", name, check=False)


def test_X46c_a_signed_plugin_on_an_engine_that_crashes_on_digest_pulls(
    world: World, tmp_path: Path
) -> None:
    """dockerd 20.10 dies (a goroutine panic, moby/moby#47299) when it pulls a plugin by digest,
    and the proxy installs signed plugins only by digest: refused 501, the engine still up."""
    remote = f"{world.registry}/proxy/plugin{time.monotonic_ns()}:1.0"
    world.engine("plugin", "create", remote, str(_plugin_dir(tmp_path, remote)))
    try:
        pushed = world.engine("plugin", "push", remote, trust=True)
    finally:
        world.engine("plugin", "rm", "-f", remote, check=False)
    assert "Signing and pushing trust metadata" in pushed.stdout, pushed
    host, _, path = remote.rsplit(":", 1)[0].partition("/")
    manifest = urllib.request.Request(
        f"http://{host}/v2/{path}/manifests/1.0",
        method="HEAD",
        headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"},
    )
    with urllib.request.urlopen(manifest, timeout=10) as answer:
        digest = answer.headers["Docker-Content-Digest"]
    name = f"signedplugin{time.monotonic_ns()}:latest"
    pinned = remote.rsplit(":", 1)[0] + "@" + digest
    try:
        for form in (remote, pinned, f"{remote}@{digest}"):
            quoted = urllib.parse.quote(form, safe="")
            target = f"{V}/plugins/pull?remote={quoted}&name={name}"
            response = raw_request(
                world.proxy.socket, req("POST", target, JSON, b"[]"), read_timeout=30
            )
            assert status_of(response) == 501 and b"EngineTooOld" in response, (form, response)
            assert world.engine("version", check=False).returncode == 0
            # the CLI asks for the privileges first: a read, but one that pulls the manifest
            privileges = f"{V}/plugins/privileges?remote={quoted}"
            response = raw_request(world.proxy.socket, req("GET", privileges), read_timeout=30)
            if "@" in form:
                assert status_of(response) == 501 and b"EngineTooOld" in response, response
            else:
                assert status_of(response) == 200 and b"network" in response, response
            assert world.engine("version", check=False).returncode == 0
        proc = world.client("plugin", "install", "--grant-all-permissions", remote)
        assert proc.returncode != 0 and "EngineTooOld" in proc.stderr, proc
        assert world.engine("version", check=False).returncode == 0
        assert world.engine("plugin", "ls", "-q").stdout.strip() == ""
    finally:
        world.engine("plugin", "rm", "-f", name, check=False)


def test_X47_swarm_membership(world: World) -> None:
    proc = world.client("swarm", "init")
    assert proc.returncode == 1 and "allow_swarm" in proc.stderr, proc
    proc = world.client("swarm", "join", "--token", "SWMTKN-1-x", "127.0.0.1:1")
    assert proc.returncode == 1 and "allow_swarm" in proc.stderr, proc
    assert "inactive" in world.engine("info", "--format", "{{.Swarm.LocalNodeState}}").stdout


def test_X48_commit(world: World) -> None:
    signed = f"{world.repo}:1.0"
    world.client("pull", signed)
    cid = world.engine("create", "--network", "none", signed, "true").stdout.strip()
    try:
        before = world.snapshot()
        proc = world.client("commit", cid, f"{world.repo}:1.0")
        assert proc.returncode == 1 and "allow_commit" in proc.stderr, proc
        unchanged(world, before)
    finally:
        world.engine("rm", "-f", cid)


def test_X49_credentials_are_never_logged(world: World) -> None:
    secret = f"s3cr3t-{time.monotonic_ns()}"
    auth = base64.urlsafe_b64encode(
        json.dumps({"username": "u", "password": secret}).encode()
    ).decode()
    response = send(
        world, req("POST", pull_target(world.unsigned_repo, "1.0"), {"X-Registry-Auth": auth})
    )
    assert status_of(response) == 403
    assert secret.encode() not in response
    assert secret not in world.proxy.logs()
    assert auth not in world.proxy.logs()


# ------------------------------------------------------------------------------ operations


def test_X50_socket_permissions(world: World, tmp_path: Path) -> None:
    engine = world.stack.dockerd.socket_path if world.stack.dockerd else ""
    engine_mode = os.stat(engine).st_mode & 0o777

    def refused(config: str, listen: str | None = None) -> subprocess.CompletedProcess[str]:
        cfg = tmp_path / f"c{time.monotonic_ns()}.toml"
        cfg.write_text(config)
        os.chmod(cfg, 0o600)
        argv = [
            "python3",
            "-m",
            "cli.main",
            "proxy",
            "--listen",
            listen or f"unix://{tmp_path}/p{time.monotonic_ns()}.sock",
            "--engine",
            f"unix://{engine}",
            "--config",
            str(cfg),
        ]
        return subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=30,
            env=world.env(world.proxy_config),
            cwd=Path(__file__).resolve().parents[2],
            check=False,
        )

    wider = engine_mode | 0o006
    proc = refused(f"[proxy]\nsocket_mode = {wider}\n")
    assert proc.returncode == 3 and "wider" in proc.stderr, proc
    target = tmp_path / "elsewhere"
    target.write_text("")
    link = tmp_path / "link.sock"
    link.symlink_to(target)
    proc = refused("", f"unix://{link}")
    assert proc.returncode == 3 and "symbolic link" in proc.stderr, proc
    plain = tmp_path / "file.sock"
    plain.write_text("")
    proc = refused("", f"unix://{plain}")
    assert proc.returncode == 3 and "not a socket" in proc.stderr, proc
    proc = refused("", "unix://@trustpull")
    assert proc.returncode == 3 and "abstract" in proc.stderr, proc
    cfg = tmp_path / "open.toml"
    cfg.write_text("")
    os.chmod(cfg, 0o666)  # noqa: S103 (the case under test)
    proc = subprocess.run(
        [
            "python3",
            "-m",
            "cli.main",
            "proxy",
            "--listen",
            f"unix://{tmp_path}/q.sock",
            "--engine",
            f"unix://{engine}",
            "--config",
            str(cfg),
            "--check-config",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        env=world.env(world.proxy_config),
        cwd=Path(__file__).resolve().parents[2],
        check=False,
    )
    assert proc.returncode == 3 and "writable by group or others" in proc.stderr, proc
    # the default: the same mode as the engine's socket
    mode = os.stat(world.proxy.socket).st_mode & 0o777
    assert mode == engine_mode


def test_X51_engine_down(world: World) -> None:
    directory = world.tmp / f"down{time.monotonic_ns()}"
    proxy = TrustProxy(
        directory,
        str(directory / "missing.sock"),
        world.env(world.proxy_config),
        config="[proxy]\nsocket_mode = 0o600\n",
    )
    proxy.start()
    try:
        proc = world.client("pull", f"{world.repo}:1.0", proxy=proxy)
        assert proc.returncode == 1, proc
        assert "trustpull: cannot reach the Docker engine" in proc.stderr, proc
        response = send(world, req("GET", f"{V}/containers/json", length=False), proxy)
        assert status_of(response) == 503, response
    finally:
        proxy.stop()


def test_X52_trust_server_down(world: World, tmp_path: Path) -> None:
    config = tmp_path / "cold"
    world.stack.docker_env(config)
    directory = world.tmp / f"nots{time.monotonic_ns()}"
    engine = str(world.stack.dockerd.socket_path) if world.stack.dockerd else ""
    env = world.env(config, DOCKER_CONTENT_TRUST_SERVER="https://127.0.0.1:1")
    proxy = TrustProxy(directory, engine, env).start()
    try:
        world.rmi(f"{world.repo}:1.0")
        before = world.snapshot()
        proc = world.client("pull", f"{world.repo}:1.0", proxy=proxy)
        assert proc.returncode == 1 and "[Network]" in proc.stderr, proc
        response = send(world, req("POST", pull_target(world.repo, "1.0")), proxy)
        assert status_of(response) == 503, response
        response = send(
            world,
            req("POST", f"{V}/containers/create", JSON, create_body(f"{world.repo}:1.0")),
            proxy,
        )
        assert status_of(response) == 503, response
        unchanged(world, before)
    finally:
        proxy.stop()


def test_X53_proxy_crash(world: World) -> None:
    """Killing the proxy during an attach tunnel: the client sees a broken connection, the
    engine and the container are untouched, and the socket path never leads to the engine."""
    signed = f"{world.repo}:1.0"
    world.client("pull", signed)
    directory = world.tmp / f"crash{time.monotonic_ns()}"
    engine = str(world.stack.dockerd.socket_path) if world.stack.dockerd else ""
    proxy = TrustProxy(directory, engine, world.env(world.proxy_config)).start()
    cid = world.engine("run", "-d", "--network", "none", signed, "sleep", "60").stdout.strip()
    try:
        attach = subprocess.Popen(
            [DOCKER_CLI, "attach", cid],
            env=world.env(world.client_config, DOCKER_HOST=proxy.docker_host),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(1.5)
        assert attach.poll() is None  # attached, tunnelled
        proxy.kill()
        _, err = attach.communicate(timeout=30)
        assert attach.returncode != 0, err
        state = json.loads(world.engine("inspect", cid).stdout)[0]["State"]
        assert state["Running"]
        proc = world.client("ps", proxy=proxy)
        assert proc.returncode != 0 and "Cannot connect" in proc.stderr, proc
        if os.path.exists(proxy.socket):
            assert not os.path.samefile(proxy.socket, engine)
    finally:
        world.engine("rm", "-f", cid, check=False)


def test_X54_slowloris(world: World) -> None:
    proxy = world.start_proxy("[proxy]\nheader_timeout = 1.0\nidle_timeout = 2.0\n")
    slow = [socket.socket(socket.AF_UNIX) for _ in range(20)]
    try:
        for sock in slow:
            sock.connect(proxy.socket)
            sock.sendall(b"GET /_ping HTTP/1.1\r\nHost")
        status, _, _ = api(proxy.socket, "GET", "/_ping")
        assert status == 200  # others are served meanwhile
        time.sleep(1.5)
        for sock in slow:
            sock.settimeout(5)
            assert sock.recv(100).startswith(b"HTTP/1.1 408"), "no 408"
        idle = socket.socket(socket.AF_UNIX)
        idle.connect(proxy.socket)
        idle.settimeout(5)
        started = time.monotonic()
        assert idle.recv(10) == b""
        assert time.monotonic() - started < 4.5
        idle.close()
    finally:
        for sock in slow:
            sock.close()
        proxy.stop()


def test_X55_connection_limit(world: World) -> None:
    proxy = world.start_proxy("[proxy]\nmax_connections = 5\n")
    held = [socket.socket(socket.AF_UNIX) for _ in range(5)]
    try:
        for sock in held:  # each one answered, so surely accepted and counted (kept alive)
            sock.connect(proxy.socket)
            sock.settimeout(10)
            sock.sendall(b"GET /_ping HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = b""
            while not answer.endswith(b"OK"):
                data = sock.recv(65536)
                assert data, answer
                answer += data
        extra = raw_request(proxy.socket, b"GET /_ping HTTP/1.1\r\nHost: x\r\n\r\n", read_timeout=5)
        assert status_of(extra) == 503, extra
    finally:
        for sock in held:
            sock.close()
    time.sleep(0.3)
    status, _, _ = api(proxy.socket, "GET", "/_ping")
    assert status == 200
    proxy.stop()


def test_X56_large_streams_are_not_buffered(world: World, tmp_path: Path) -> None:
    signed = f"{world.repo}:1.0"
    world.client("pull", signed)
    cid = world.engine("run", "-d", "--network", "none", signed, "sleep", "60").stdout.strip()
    try:
        big = tmp_path / "big.bin"
        with open(big, "wb") as handle:
            for _ in range(64):
                handle.write(os.urandom(1024 * 1024))
        proc = world.client("cp", str(big), f"{cid}:/big.bin")
        assert proc.returncode == 0, proc
        proc = world.client("cp", f"{cid}:/big.bin", str(tmp_path / "back.bin"))
        assert proc.returncode == 0, proc
        assert (tmp_path / "back.bin").read_bytes() == big.read_bytes()
        assert world.proxy.proc is not None
        status = Path(f"/proc/{world.proxy.proc.pid}/status").read_text().splitlines()
        rss_kib = int(next(line for line in status if line.startswith("VmHWM:")).split()[1])
        assert rss_kib < 100 * 1024, f"proxy peak RSS {rss_kib} KiB"
    finally:
        world.engine("rm", "-f", cid)


def test_X57_http2_prior_knowledge(world: World) -> None:
    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
    response = send(world, preface)
    assert status_of(response) == 400, response


def test_X58_clients_cannot_switch_enforcement_off(world: World) -> None:
    before = world.snapshot()
    proc = world.client("pull", f"{world.unsigned_repo}:1.0", DOCKER_CONTENT_TRUST="0")
    assert proc.returncode == 1 and "trustpull" in proc.stderr, proc
    proc = world.client("pull", "--disable-content-trust", f"{world.unsigned_repo}:1.0")
    assert proc.returncode != 0, proc
    headers = {"X-Trustpull-Mode": "audit", "X-Trustpull-Disable": "1"}
    response = send(world, req("POST", pull_target(world.unsigned_repo, "1.0"), headers))
    assert status_of(response) == 403, response
    unchanged(world, before)


def test_X59_mixed_case_names(world: World) -> None:
    before = world.snapshot()
    upper = world.registry.replace("127.0.0.1", "LOCALHOST")
    name = world.repo.replace(world.registry, upper)
    response = send(world, req("POST", pull_target(name, "1.0")))
    assert status_of(response) == 400 and b"lower case" in response, response
    response = send(world, req("POST", pull_target(world.repo.replace("proxy/", "Proxy/"), "1.0")))
    assert status_of(response) == 400, response
    response = send(world, req("POST", f"{V}/containers/create", JSON, create_body(f"{name}:1.0")))
    assert status_of(response) == 400, response
    unchanged(world, before)


# ------------------------------------------------------------------------------ audit mode


def test_audit_mode_forwards_and_logs_would_refuse(world: World) -> None:
    audit = world.start_proxy(mode="audit")
    try:
        assert "AUDIT MODE" in audit.logs()
        proc = world.client("pull", f"{world.unsigned_repo}:1.0", proxy=audit)
        assert proc.returncode == 0, proc
        assert world.image(f"{world.unsigned_repo}:1.0") is not None
        would = [d for d in audit.decisions() if d.get("verdict") == "would-refuse"]
        assert would and all(d.get("mode") == "audit" for d in would), audit.logs()
    finally:
        audit.stop()
        world.rmi(f"{world.unsigned_repo}:1.0")


def test_audit_mode_builds_as_asked_and_logs_would_refuse(world: World, tmp_path: Path) -> None:
    """A build whose base would be refused is built as the client asked (audit), logged; a
    context the proxy cannot forward as sent (a second Dockerfile) is refused even here."""
    audit = world.start_proxy(mode="audit")
    name = f"auditbuild{time.monotonic_ns()}:1"
    try:
        (tmp_path / "Dockerfile").write_text(f"FROM {world.unsigned_repo}:1.0\nRUN true\n")
        proc = world.client("build", "-t", name, str(tmp_path), proxy=audit, DOCKER_BUILDKIT="0")
        assert proc.returncode == 0, proc
        assert world.image(name) is not None
        would = [d for d in audit.decisions() if d.get("verdict") == "would-refuse"]
        assert any(d.get("path", "").endswith("/build") for d in would), audit.logs()
        before = world.snapshot()
        twice = _context_tar(("Dockerfile", "FROM scratch\n"), ("./Dockerfile", "FROM x\n"))
        response = send(
            world,
            req("POST", f"{V}/build", {"Content-Type": "application/x-tar"}, twice),
            proxy=audit,
        )
        assert status_of(response) == 400 and b"twice" in response, response
        unchanged(world, before)
    finally:
        audit.stop()
        world.rmi(name, f"{world.unsigned_repo}:1.0")


def test_check_config(world: World, tmp_path: Path) -> None:
    cfg = tmp_path / "ok.toml"
    cfg.write_text('[proxy]\nmode = "audit"\nallow_load = true\n')
    os.chmod(cfg, 0o600)
    root = Path(__file__).resolve().parents[2]
    argv = [
        "python3",
        "-m",
        "cli.main",
        "proxy",
        "--listen",
        f"unix://{tmp_path}/x.sock",
        "--config",
        str(cfg),
        "--check-config",
    ]
    proc = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        env=world.env(world.proxy_config),
        cwd=root,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 0 and "configuration OK" in proc.stdout, proc
    cfg.write_text("[proxy]\nallow_lod = true\n")
    proc = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        env=world.env(world.proxy_config),
        cwd=root,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 3 and "proxy.allow_lod: unknown key" in proc.stderr, proc


def test_X48_commit_allowed_is_a_ledger_entry_without_names(world: World) -> None:
    signed = f"{world.repo}:1.0"
    world.client("pull", signed)
    committing = world.start_proxy("[proxy]\nallow_commit = true\n")
    cid = world.engine("create", "--network", "none", signed, "true").stdout.strip()
    before = world.engine("image", "inspect", "-f", "{{.Id}}", signed).stdout.strip()
    elsewhere = f"{world.unsigned_repo}-commit:1"
    try:
        # X48b (stricter than §2.8): not onto the signed tag, which would then name the commit
        # for a `docker push` or any tool reading local tags; nor onto it by `tag` alone.
        proc = world.client("commit", cid, signed, proxy=committing)
        assert proc.returncode == 1 and "signed for" in proc.stderr, proc
        target = f"/v1.41/commit?container={cid}&repo={world.repo}:2.0&tag=1.0"
        response = send(world, req("POST", target), proxy=committing)
        assert status_of(response) == 403 and b"signed for" in response, response
        assert world.engine("image", "inspect", "-f", "{{.Id}}", signed).stdout.strip() == before
        proc = world.client("commit", cid, elsewhere, proxy=committing)
        assert proc.returncode == 0, proc
        committed = proc.stdout.strip()
        # the signed name still runs the signed content, not the commit
        proc = world.client("create", "--network", "none", signed, "true", proxy=committing)
        assert proc.returncode == 0, proc
        inspect = json.loads(world.engine("inspect", proc.stdout.strip()).stdout)[0]
        assert inspect["Config"]["Image"] == f"{world.repo}@{world.signed_digest}"
        assert inspect["Image"] != committed
        world.engine("rm", "-f", proc.stdout.strip())
        # the commit itself runs by ID, pinned to it
        proc = world.client("create", "--network", "none", committed, "true", proxy=committing)
        assert proc.returncode == 0, proc
        inspect = json.loads(world.engine("inspect", proc.stdout.strip()).stdout)[0]
        assert inspect["Image"] == committed
        world.engine("rm", "-f", proc.stdout.strip())
    finally:
        world.engine("rm", "-f", cid, check=False)
        world.engine("rmi", "-f", elsewhere, check=False)
        committing.stop()
        world.rmi(signed)


def test_X52a_trust_server_down_with_a_verified_cache(world: World, tmp_path: Path) -> None:
    """(a): an unexpired verified cache serves pulls and creates, with the CLI's warning."""
    config = tmp_path / "warm"
    world.stack.docker_env(config)
    engine = str(world.stack.dockerd.socket_path) if world.stack.dockerd else ""
    warm = TrustProxy(world.tmp / f"warm{time.monotonic_ns()}", engine, world.env(config)).start()
    try:
        world.rmi(f"{world.repo}:1.0")
        proc = world.client("pull", f"{world.repo}:1.0", proxy=warm)
        assert proc.returncode == 0, proc
    finally:
        warm.stop()
    world.rmi(f"{world.repo}:1.0")
    env = world.env(config, DOCKER_CONTENT_TRUST_SERVER="https://127.0.0.1:1")
    down = TrustProxy(world.tmp / f"cold{time.monotonic_ns()}", engine, env).start()
    try:
        proc = world.client("pull", f"{world.repo}:1.0", proxy=down)
        assert proc.returncode == 0, proc
        assert f"{world.repo}@{world.signed_digest}" in proc.stdout, proc
        assert "trustpull: WARNING:" in proc.stdout, proc
        print("X52a warning:", [x for x in proc.stdout.splitlines() if "WARNING" in x])
    finally:
        down.stop()


def test_X40b_copy_from_an_image_is_never_pulled_unverified(world: World, tmp_path: Path) -> None:
    signed = f"{world.repo}:1.0"
    world.client("pull", signed)
    before = world.snapshot()
    for dockerfile in (
        f"FROM {signed}\nCOPY --from={world.unsigned_repo}:1.0 /marker /m\n",
        f"FROM {signed}\nRUN --mount=type=bind,from={world.unsigned_repo}:1.0,target=/x true\n",
    ):
        proc = _build(world, tmp_path, dockerfile, "-t", "nocopy:1")
        assert proc.returncode != 0 and "trustpull" in proc.stderr, proc
        assert world.image(f"{world.unsigned_repo}:1.0") is None
    unchanged(world, before)
    # stage names and indexes stay allowed
    name = f"copystage{time.monotonic_ns()}:1"
    proc = _build(
        world,
        tmp_path,
        f"FROM {signed} AS first\nRUN echo s > /s\nFROM {signed}\nCOPY --from=first /s /s\n"
        "COPY --from=0 /marker /m\n",
        "-t",
        name,
    )
    assert proc.returncode == 0, proc
    world.rmi(name)


def test_X45b_distribution_descriptor_is_checked_against_the_signed_digest(world: World) -> None:
    status, body, _ = api(world.proxy.socket, "GET", f"{V}/distribution/{world.repo}:1.0/json")
    assert status == 200, body
    assert json.loads(body)["Descriptor"]["digest"] == world.signed_digest
    # a tag that is not signed is passed through (a service create is refused later anyway)
    status, body, _ = api(world.proxy.socket, "GET", f"{V}/distribution/{world.repo}:evil/json")
    assert status == 200 and json.loads(body)["Descriptor"]["digest"] == world.evil_digest


# ---------------------------------------------------- a second client between two proxy steps


@contextlib.contextmanager
def hooked_engine(world: World) -> Iterator[tuple[EngineProxy, TrustProxy]]:
    """A proxy whose engine is reached through an EngineProxy (recording, with hooks), so a
    test can act on the engine between two of the proxy's steps or kill it mid-stream."""
    short = Path(tempfile.mkdtemp(prefix="tph-", dir="/tmp"))
    hooked = EngineProxy(world.engine_socket, short / "engine.sock").start()
    try:
        proxy = world.start_proxy(engine=str(hooked.socket_path))
        try:
            yield hooked, proxy
        finally:
            proxy.stop()
    finally:
        hooked.stop()
        shutil.rmtree(short, ignore_errors=True)


def test_X38a_retag_between_the_digest_pull_and_the_tag_step(world: World, evil_id: str) -> None:
    signed = f"{world.repo}:1.0"
    pinned = f"{world.repo}@{world.signed_digest}"
    world.rmi(signed)
    retagged: list[str] = []

    def retag(request: EngineRequest) -> None:
        world.engine("tag", evil_id, signed)  # a second client, straight at the engine
        retagged.append(urllib.parse.unquote(request.target))

    with hooked_engine(world) as (hooked, proxy):
        hooked.before[("POST", r"/images/.+/tag")] = retag
        proc = world.client("pull", signed, proxy=proxy)
    assert proc.returncode == 0, proc
    assert len(retagged) == 1 and f"/images/{pinned}/tag?" in retagged[0], retagged
    image, source = world.image(signed), world.image(pinned)
    assert image is not None and source is not None
    assert image["Id"] == source["Id"] != evil_id  # the tag step's source was the digest
    world.rmi(signed)


def test_X38b_concurrent_pulls_while_the_tag_is_re_signed(world: World) -> None:
    """A verifies T→D1; before its pull reaches the engine, T is re-signed to D2 and B pulls
    it through the proxy to the end; A then finishes: T must stay on D2."""
    ref = f"{world.repo}:rs{time.monotonic_ns()}"
    first_digest = world.push(ref, "first", sign=True)
    world.rmi(ref)
    second: list[subprocess.CompletedProcess[str]] = []
    second_digest: list[str] = []

    with hooked_engine(world) as (hooked, proxy):

        def resign_and_pull(request: EngineRequest) -> None:
            if request.query.get("tag") != [first_digest] or second:
                return
            second_digest.append(world.push(ref, "second", sign=True))  # T: D1 → D2
            world.rmi(ref)  # the publisher's local tag, not the proxy's doing
            second.append(world.client("pull", ref, proxy=proxy))

        hooked.before[("POST", "/images/create")] = resign_and_pull
        first = world.client("pull", ref, proxy=proxy)
    assert second and second[0].returncode == 0, second
    assert second_digest[0] in second[0].stdout
    assert first.returncode == 0, first
    assert first_digest in first.stdout and "verified again" in first.stdout, first.stdout
    image = world.image(ref)
    assert image is not None and f"{world.repo}@{second_digest[0]}" in image["RepoDigests"]
    world.rmi(ref, f"{world.repo}@{first_digest}", f"{world.repo}@{second_digest[0]}")


def test_X38c_retag_between_the_create_check_and_the_create(world: World, evil_id: str) -> None:
    signed = f"{world.repo}:1.0"
    world.client("pull", signed)
    before_containers = world.container_ids()

    def retag(request: EngineRequest) -> None:
        world.engine("tag", evil_id, signed)

    with hooked_engine(world) as (hooked, proxy):
        hooked.before[("POST", "/containers/create")] = retag
        proc = world.client("create", "--network", "none", signed, "true", proxy=proxy)
    assert proc.returncode == 0, proc
    cid = proc.stdout.strip()
    try:
        assert world.container_ids() - before_containers == {cid}
        tagged = world.image(signed)
        assert tagged is not None and tagged["Id"] == evil_id  # the retag happened
        inspect = json.loads(world.engine("inspect", cid).stdout)[0]
        assert inspect["Image"] != evil_id
        assert inspect["Config"]["Image"] == f"{world.repo}@{world.signed_digest}"
    finally:
        world.engine("rm", "-f", cid)
        world.rmi(signed)


# ------------------------------------------------------------ builds: ONBUILD, BuildKit allowed


def test_X44b_rename_between_the_start_check_and_the_start(world: World, evil_id: str) -> None:
    """`start NAME` is checked by inspecting NAME; a second client then renames the checked
    container away and a container of an unverified image (created behind the proxy) to NAME,
    both through the proxy: the engine must start the container that was checked."""
    signed = f"{world.repo}:1.0"
    world.client("pull", signed)
    stamp = time.monotonic_ns()
    good, evil, away = f"good{stamp}", f"evil{stamp}", f"away{stamp}"
    assert world.client("create", "--name", good, signed, "true").returncode == 0
    evil_cid = world.engine("create", "--name", evil, evil_id, "true").stdout.strip()
    renamed: list[subprocess.CompletedProcess[str]] = []
    try:
        with hooked_engine(world) as (hooked, proxy):

            def swap(request: EngineRequest) -> None:
                if not renamed:
                    renamed.append(world.client("rename", good, away, proxy=proxy))
                    renamed.append(world.client("rename", evil, good, proxy=proxy))

            hooked.before[("POST", r"/containers/.+/start")] = swap
            world.client("start", good, proxy=proxy)
        assert [r.returncode for r in renamed] == [0, 0], renamed
        state = json.loads(world.engine("inspect", evil_cid).stdout)[0]["State"]
        assert state["Status"] == "created", state
        started = json.loads(world.engine("inspect", away).stdout)[0]["State"]
        assert started["Status"] != "created", started  # the checked one ran
    finally:
        world.engine("rm", "-f", good, evil, away, evil_cid, check=False)


def test_X40c_onbuild_triggers_copying_from_images(world: World, tmp_path: Path) -> None:
    base = f"{world.repo}:onbuild{time.monotonic_ns()}"
    trigger = f"ONBUILD COPY --from={world.unsigned_repo}:1.0 /marker /m"
    digest = world.push(base, "onbuild", sign=True, changes=(trigger,))
    world.rmi(base, f"{world.unsigned_repo}:1.0")
    name = f"onbuildchild{time.monotonic_ns()}:1"
    before = world.snapshot()
    proc = _build(world, tmp_path, f"FROM {base}\nRUN true\n", "-t", name)
    assert proc.returncode != 0, proc
    assert "ONBUILD triggers that copy from other images" in proc.stderr, proc
    assert "[OnBuild]" in proc.stderr, proc
    ids, tags, containers = world.snapshot()
    assert tags - before[1] <= {f"{world.repo}:<none>"} and containers == before[2]
    source = world.image(f"{world.repo}@{digest}")  # pulled by digest to read its triggers
    assert source is not None and ids - before[0] <= {source["Id"]}
    assert world.image(f"{world.unsigned_repo}:1.0") is None
    assert world.image(name) is None and world.image(base) is None
    world.rmi(f"{world.repo}@{digest}")


def test_X40d_onbuild_triggers_of_a_base_accepted_unsigned(world: World, tmp_path: Path) -> None:
    """A base an allow_unsigned rule accepts runs its triggers too: one copying from an
    unsigned tag of a signed repository would pull it unverified; it is read first, 403."""
    plain = world.unsigned_repo
    base = f"{plain}:onbuild{time.monotonic_ns()}"
    world.push(
        base, "onbuild", sign=False, changes=(f"ONBUILD COPY --from={world.repo}:evil /marker /m",)
    )
    world.rmi(base, f"{world.repo}:evil", f"{plain}:1.0")
    policy = tmp_path / "policy.toml"
    policy.write_text(
        f'[[rules]]\nname = "legacy"\nregistry = "{world.registry}"\n'
        f'repository = "{plain.split("/", 1)[1]}"\nallow_unsigned = true\n'
    )
    os.chmod(policy, 0o600)
    proxy = world.start_proxy(policy=policy)
    context = tmp_path / "ctx"
    context.mkdir()
    try:
        name = f"onbuildplain{time.monotonic_ns()}:1"
        before = world.snapshot()
        (context / "Dockerfile").write_text(f"FROM {base}\nRUN true\n")
        proc = world.client("build", "-t", name, str(context), proxy=proxy, DOCKER_BUILDKIT="0")
        assert proc.returncode != 0 and "[OnBuild]" in proc.stderr, proc
        _, tags, containers = world.snapshot()
        assert tags - before[1] <= {base} and containers == before[2]  # the accepted base only
        assert world.image(f"{world.repo}:evil") is None and world.image(name) is None
        assert world.image(f"{world.repo}@{world.evil_digest}") is None
        # a base accepted unsigned without such triggers builds (pulled by its tag first)
        (context / "Dockerfile").write_text(f"FROM {plain}:1.0\nRUN cat /marker\n")
        proc = world.client("build", "-t", name, str(context), proxy=proxy, DOCKER_BUILDKIT="0")
        assert proc.returncode == 0, proc
        assert world.image(name) is not None
        # under a policy too, a proxy build runs by its name (the ledger), not "not signed"
        proc = world.client("run", "--rm", "--network", "none", name, "cat", "/marker", proxy=proxy)
        assert proc.returncode == 0 and "unsigned" in proc.stdout, proc
    finally:
        proxy.stop()
        world.rmi(name, base, f"{plain}:1.0")


def test_X40e_a_base_accepted_unsigned_retagged_after_its_triggers_were_read(
    world: World, tmp_path: Path
) -> None:
    """The triggers of a base accepted unsigned are read; then, before the engine reads the
    Dockerfile, a second client tags a SIGNED image whose ONBUILD copies from an unsigned tag
    onto that name through the proxy (allowed: the image is admitted, the name accepted
    unsigned). The build must use the image that was read, never pull the trigger's image."""
    plain = world.unsigned_repo
    base = f"{plain}:1.0"
    with_trigger = f"{world.repo}:onbuild{time.monotonic_ns()}"
    trigger = f"ONBUILD COPY --from={world.repo}:evil /marker /m"
    world.push(with_trigger, "onbuild", sign=True, changes=(trigger,))
    world.rmi(with_trigger, f"{world.repo}:evil", base)
    policy = tmp_path / "policy.toml"
    policy.write_text(
        f'[[rules]]\nname = "legacy"\nregistry = "{world.registry}"\n'
        f'repository = "{plain.split("/", 1)[1]}"\nallow_unsigned = true\n'
    )
    os.chmod(policy, 0o600)
    short = Path(tempfile.mkdtemp(prefix="tph-", dir="/tmp"))
    hooked = EngineProxy(world.engine_socket, short / "engine.sock").start()
    proxy = world.start_proxy(policy=policy, engine=str(hooked.socket_path))
    context = tmp_path / "ctx"
    context.mkdir()
    name = f"retaggedbase{time.monotonic_ns()}:1"
    tagged: list[subprocess.CompletedProcess[str]] = []
    try:
        assert world.client("pull", with_trigger, proxy=proxy).returncode == 0

        def retag(request: EngineRequest) -> None:
            tagged.append(world.client("tag", with_trigger, base, proxy=proxy))

        hooked.before[("POST", r"/build")] = retag
        (context / "Dockerfile").write_text(f"FROM {base}\nRUN cat /marker\n")
        proc = world.client("build", "-t", name, str(context), proxy=proxy, DOCKER_BUILDKIT="0")
        assert len(tagged) == 1 and tagged[0].returncode == 0, tagged
        assert world.image(f"{world.repo}:evil") is None
        assert world.image(f"{world.repo}@{world.evil_digest}") is None
        assert proc.returncode == 0, proc  # built from the base whose triggers were read
        built, read = world.image(name), world.image(f"{plain}@{world.unsigned_digest}")
        assert built is not None and read is not None
    finally:
        proxy.stop()
        hooked.stop()
        shutil.rmtree(short, ignore_errors=True)
        world.rmi(name, base, with_trigger, f"{world.repo}:evil")


def test_X42b_allow_buildkit_passes_session_and_build_with_a_warning(world: World) -> None:
    proxy = world.start_proxy("[proxy]\nallow_buildkit = true\n")
    try:
        before = world.snapshot()
        session = {
            "Connection": "Upgrade",
            "Upgrade": "h2c",
            "X-Docker-Expose-Session-Uuid": f"tp{time.monotonic_ns()}",
            "X-Docker-Expose-Session-Name": "trustpull-test",
            "X-Docker-Expose-Session-Sharedkey": "k",
        }
        # one session ID each: the engine forgets a session only once it sees its socket close
        direct = raw_request(world.engine_socket, req("POST", f"{V}/session", session), answers=1)
        session["X-Docker-Expose-Session-Uuid"] += "p"
        proxied = raw_request(proxy.socket, req("POST", f"{V}/session", session), answers=1)
        assert status_of(proxied) == status_of(direct) == 101, (direct, proxied)
        build = f"{V}/build?version=2&remote=client-session&session=nosuch&buildid=b1"
        direct = raw_request(world.engine_socket, req("POST", build), read_timeout=5)
        proxied = raw_request(proxy.socket, req("POST", build), read_timeout=5)
        assert b"BuildKit builds are refused" not in proxied
        assert status_of(proxied) == status_of(direct), (direct, proxied)
        status, _, headers = api(world.engine_socket, "GET", "/_ping")
        engine_builder = headers.get("builder-version")
        status, _, headers = api(proxy.socket, "GET", "/_ping")
        assert status == 200 and headers.get("builder-version") == engine_builder, headers
        warned = [d for d in proxy.decisions() if d.get("level") == "warning"]
        paths = {str(d.get("path")) for d in warned}
        assert {"/session", "/build"} <= paths, warned
        assert all("not verified" in str(d.get("reason")) for d in warned), warned
        unchanged(world, before)
    finally:
        proxy.stop()


# ---------------------------------------------------------------- services: a lying registry


def test_X45c_a_registry_lying_at_distribution_is_refused(world: World) -> None:
    """The registry (a loopback stand-in in front of the real one) answers tag 1.0 with the
    evil tag's manifest: the descriptor `/distribution` returns is refused with both digests."""
    path = world.repo.split("/", 1)[1]
    length = world.manifest_length(world.repo, world.signed_digest)
    with RegistryShim(world.registry) as shim:
        gun = f"{shim.host}/{path}"
        builder, config = world.fixture_trust(gun, "1.0", world.signed_digest, length)
        with FixtureServer({gun: builder.publish()}) as trust:
            proxy = world.start_proxy(env=world.trust_env(config, trust))
            try:
                target = f"{V}/distribution/{gun}:1.0/json"
                status, body, _ = api(proxy.socket, "GET", target)
                assert status == 200, body
                assert json.loads(body)["Descriptor"]["digest"] == world.signed_digest
                shim.remap = lambda p: p.replace("/manifests/1.0", "/manifests/evil")
                status, body, _ = api(world.engine_socket, "GET", target)
                assert status == 200 and world.evil_digest in body.decode()  # it lies
                before = world.snapshot()
                status, body, _ = api(proxy.socket, "GET", target)
                assert status == 403, body
                message = json.loads(body)["message"]
                assert world.evil_digest in message and world.signed_digest in message
                assert "[HashMismatch]" in message
                unchanged(world, before)
            finally:
                proxy.stop()


def test_X45d_rollback_previous_requires_an_admitted_previous_image(world: World) -> None:
    """`rollback=previous` runs the service's PreviousSpec: its image must be pinned to a
    digest that verifies, read at the version the update names. The engine here is no swarm
    manager, so the service inspect is a canned answer (EngineProxy) and a forwarded update
    gets the engine's 503."""
    spec = {"Name": "svc1", "TaskTemplate": {"ContainerSpec": {"Image": f"{world.repo}:2.0"}}}
    body = json.dumps(spec).encode()
    target = f"{V}/services/svc1/update?version=7&rollback=previous"

    def previous(image: str | None, index: int = 7, plugin: bool = False) -> tuple[int, object]:
        template: dict[str, object] = {"ContainerSpec": {"Image": image}} if image else {}
        if plugin:
            template = {"Runtime": "plugin", "PluginSpec": {"Remote": "x/y:1"}}
        return 200, {
            "ID": "svc1",
            "Version": {"Index": index},
            "Spec": spec,
            "PreviousSpec": {"Name": "svc1", "TaskTemplate": template},
        }

    refused = [
        previous(f"{world.repo}:1.0@{world.evil_digest}"),  # pinned, not the signed digest
        previous(f"{world.repo}@{world.evil_digest}"),
        previous(f"{world.repo}:1.0"),  # a tag alone: the workers would pull it by tag
        previous(f"{world.unsigned_repo}:1.0@{world.unsigned_digest}"),
        previous(None, plugin=True),
        previous(f"{world.repo}:1.0@{world.signed_digest}", index=8),  # another version
    ]
    with hooked_engine(world) as (hooked, proxy):
        for answer in refused:
            hooked.replies[("GET", "/services/svc1")] = answer
            response = send(world, req("POST", target, JSON, body), proxy)
            assert status_of(response) == 403, (answer, response)
            assert b"trustpull" in response
        assert not [r for r in hooked.requests if r.path.endswith("/update")]
        hooked.replies[("GET", "/services/svc1")] = previous(
            f"{world.repo}:1.0@{world.signed_digest}"
        )
        response = send(world, req("POST", target, JSON, body), proxy)
        assert status_of(response) == 503 and b"swarm" in response, response
        updates = [r for r in hooked.requests if r.path.endswith("/update")]
        assert len(updates) == 1 and updates[0].query["rollback"] == ["previous"]


def test_X45e_rollback_previous_on_a_real_swarm(world: World) -> None:
    """The engine made a one-node swarm manager for this test (left afterwards): `docker
    service rollback` through the proxy rolls back to a verified previous image, and is
    refused when the previous spec (set behind the proxy's back) names the evil digest."""
    signed1 = f"{world.repo}:1.0@{world.signed_digest}"
    signed2 = f"{world.repo}:2.0@{world.signed2_digest}"
    evil = f"{world.repo}:1.0@{world.evil_digest}"
    name = f"rb{time.monotonic_ns()}"

    def image_of(spec: str = "Spec", service: str = "") -> str:
        proc = world.engine("service", "inspect", service or name)
        return str(json.loads(proc.stdout)[0][spec]["TaskTemplate"]["ContainerSpec"]["Image"])

    def direct_update(image: str) -> None:
        world.engine("service", "update", "-d", "--no-resolve-image", "--image", image, name)

    world.engine("swarm", "init", "--advertise-addr", "127.0.0.1")
    try:
        before_containers = world.container_ids()
        proc = world.client(
            "service", "create", "-d", "--name", name, "--replicas", "0", f"{world.repo}:1.0"
        )
        assert proc.returncode == 0, proc
        assert image_of() == signed1  # pinned by the proxy
        proc = world.client("service", "update", "-d", "--image", f"{world.repo}:2.0", name)
        assert proc.returncode == 0, proc
        assert image_of() == signed2 and image_of("PreviousSpec") == signed1
        proc = world.client("service", "rollback", "-d", name)
        assert proc.returncode == 0, proc
        assert image_of() == signed1
        direct_update(evil)  # behind the proxy's back
        direct_update(signed2)
        assert image_of("PreviousSpec") == evil
        proc = world.client("service", "rollback", "-d", name)
        assert proc.returncode != 0 and "rollback=previous" in proc.stderr, proc
        assert world.evil_digest in proc.stderr, proc
        assert image_of() == signed2 and image_of("PreviousSpec") == evil
        # a raw client's tag-only spec (the CLI pins through /distribution, a raw client does
        # not) is pinned by the proxy; a repeated TaskTemplate (Go merges it) is refused
        raw = {
            "Name": f"{name}raw",
            "Mode": {"Replicated": {"Replicas": 0}},
            "TaskTemplate": {"ContainerSpec": {"Image": f"{world.repo}:1.0"}},
        }
        status, body, _ = api(
            world.proxy.socket, "POST", f"{V}/services/create", json.dumps(raw).encode(), JSON
        )
        assert status == 201, body
        assert image_of(service=f"{name}raw") == signed1
        merged = json.dumps({**raw, "Name": f"{name}merged"})[:-1]
        merged += ',"taskTemplate":{"Resources":{}}}'
        merged = merged.replace(f"{world.repo}:1.0", f"{world.repo}:evil")
        status, body, _ = api(
            world.proxy.socket, "POST", f"{V}/services/create", merged.encode(), JSON
        )
        assert status == 400, body
        listed = world.engine("service", "ls", "-q", "--filter", f"name={name}merged").stdout
        assert listed.strip() == ""
        # a service's tasks run here too: a bind of the engine socket is refused
        socket_mount = {"Type": "bind", "Source": world.engine_socket, "Target": "/s"}
        bound = {**raw, "Name": f"{name}sock"}
        bound["TaskTemplate"] = {
            "ContainerSpec": {"Image": f"{world.repo}:1.0", "Mounts": [socket_mount]}
        }
        status, body, _ = api(
            world.proxy.socket, "POST", f"{V}/services/create", json.dumps(bound).encode(), JSON
        )
        assert status == 403 and b"EngineSocket" in body, body
        listed = world.engine("service", "ls", "-q", "--filter", f"name={name}sock").stdout
        assert listed.strip() == ""
        assert world.container_ids() == before_containers
    finally:
        world.engine("service", "rm", f"{name}raw", check=False)
        world.engine("service", "rm", name, check=False)
        world.engine("swarm", "leave", "--force", check=False)


def test_X45f_a_service_image_given_as_an_image_id(
    world: World, evil_id: str, tmp_path: Path
) -> None:
    """`sha256:<hex>` is also the name `docker.io/library/sha256` with that tag. A worker
    runs such a service image as a local image ID (the full form skips the pull; a short one
    falls back to the ID prefix once the pull of the name fails), so a rule accepting that
    name unsigned must not admit it: the image the engine resolves must be admitted, and the
    spec is pinned to its full ID. The same holds for a `PreviousSpec` rolled back to."""
    policy = tmp_path / "policy.toml"
    policy.write_text(
        '[[rules]]\nname = "hub-unsigned"\nregistry = "docker.io"\nallow_unsigned = true\n'
    )
    os.chmod(policy, 0o600)
    proxy = world.start_proxy(policy=policy)
    name = f"id{time.monotonic_ns()}"
    signed1 = f"{world.repo}:1.0@{world.signed_digest}"

    def create(service: str, image: str, replicas: int = 1) -> tuple[int, bytes]:
        spec = {
            "Name": service,
            "Mode": {"Replicated": {"Replicas": replicas}},
            "TaskTemplate": {"ContainerSpec": {"Image": image, "Command": ["sleep", "30"]}},
        }
        status, body, _ = api(
            proxy.socket, "POST", f"{V}/services/create", json.dumps(spec).encode(), JSON
        )
        return status, body

    def image_of(service: str, spec: str = "Spec") -> str:
        proc = world.engine("service", "inspect", service)
        return str(json.loads(proc.stdout)[0][spec]["TaskTemplate"]["ContainerSpec"]["Image"])

    def listed(service: str) -> str:
        return world.engine("service", "ls", "-q", "--filter", f"name={service}").stdout.strip()

    world.engine("swarm", "init", "--advertise-addr", "127.0.0.1")
    try:
        before_containers = world.container_ids()
        hexid = evil_id.removeprefix("sha256:")
        for image in (evil_id, f"sha256:{hexid[:12]}", f"docker.io/library/sha256:{hexid[:12]}"):
            status, body = create(f"{name}evil", image)
            assert status == 403 and b"NotVerified" in body, (image, body)
            assert listed(f"{name}evil") == "", image
        status, body = create(f"{name}gone", "sha256:" + "0" * 64)
        assert status == 404, body
        assert listed(f"{name}gone") == ""
        assert world.container_ids() == before_containers
        # an admitted image (pulled signed through the proxy) by ID prefix: pinned to its ID
        proc = world.client("pull", f"{world.repo}:1.0", proxy=proxy)
        assert proc.returncode == 0, proc
        good = world.image(f"{world.repo}:1.0")
        assert good is not None
        status, body = create(f"{name}good", str(good["Id"])[:19], replicas=0)
        assert status == 201, body
        assert image_of(f"{name}good") == good["Id"]
        # a previous spec naming an unverified image by ID (set behind the proxy's back)
        _service_behind_the_proxy(world, name, "--replicas", "0", evil_id)
        world.engine("service", "update", "-d", "--no-resolve-image", "--image", signed1, name)
        assert image_of(name, "PreviousSpec") == evil_id
        proc = world.client("service", "rollback", "-d", name, proxy=proxy)
        assert proc.returncode != 0 and "NotVerified" in proc.stderr, proc
        assert image_of(name) == signed1
        # an admitted image's ID prefix is resolved again for each task: not pinned
        world.engine("service", "update", "-d", "--image", str(good["Id"])[:19], name)
        world.engine("service", "update", "-d", "--no-resolve-image", "--image", signed1, name)
        proc = world.client("service", "rollback", "-d", name, proxy=proxy)
        assert proc.returncode != 0 and "ID prefix" in proc.stderr, proc
        assert image_of(name) == signed1
    finally:
        for service in (name, f"{name}good", f"{name}evil", f"{name}gone"):
            world.engine("service", "rm", service, check=False)
        world.engine("swarm", "leave", "--force", check=False)
        world.rmi(f"{world.repo}:1.0")
        proxy.stop()


def _service_behind_the_proxy(world: World, name: str, *args: str) -> None:
    """A service created straight on the engine, its image name left as given."""
    world.engine("service", "create", "-d", "--name", name, "--no-resolve-image", *args)


def test_X45g_an_update_that_rolls_back_by_itself(world: World, evil_id: str) -> None:
    """`UpdateConfig.FailureAction: rollback` makes swarm put back the spec the update
    replaces when the update fails, with no second request: that spec (set behind the
    proxy's back here, its one task run and completed) is what a failing update through the
    proxy would start again, so it must be admitted like a `PreviousSpec` for
    `rollback=previous`. The update is refused and no task of the unverified image starts."""
    name = f"ar{time.monotonic_ns()}"
    signed1 = f"{world.repo}:1.0@{world.signed_digest}"

    def inspect() -> dict[str, Any]:
        value: dict[str, Any] = json.loads(world.engine("service", "inspect", name).stdout)[0]
        return value

    def evil_containers() -> list[str]:
        out = world.engine("ps", "-a", "-q", "--no-trunc", "--filter", f"ancestor={evil_id}")
        return out.stdout.split()

    world.engine("swarm", "init", "--advertise-addr", "127.0.0.1")
    try:
        _service_behind_the_proxy(world, name, "--restart-condition", "none", evil_id, "true")
        deadline = time.monotonic() + 60
        while (
            len(evil_containers()) != 1
            or not world.engine(
                "service", "ps", "-q", "--filter", "desired-state=shutdown", name
            ).stdout.strip()
        ):
            assert time.monotonic() < deadline, world.engine("service", "ps", name).stdout
            time.sleep(0.5)
        world.pull_direct(signed1)
        service = inspect()
        spec = service["Spec"]
        spec["TaskTemplate"]["ContainerSpec"].update(Image=signed1, Command=["false"])
        spec["TaskTemplate"]["ForceUpdate"] = 1
        spec["UpdateConfig"] = {"FailureAction": "rollback", "Monitor": 5_000_000_000}
        target = f"{V}/services/{service['ID']}/update?version={service['Version']['Index']}"
        status, body, _ = api(world.proxy.socket, "POST", target, json.dumps(spec).encode(), JSON)
        assert status == 403 and b"FailureAction" in body, body
        time.sleep(5)  # a failing update would have rolled back by now
        assert inspect()["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"] == evil_id
        assert len(evil_containers()) == 1, world.engine("service", "ps", name).stdout
        # once the spec replaced is admitted, such an update passes (and is pinned)
        world.engine("service", "update", "-d", "--no-resolve-image", "--image", signed1, name)
        service = inspect()
        spec = service["Spec"]
        spec["TaskTemplate"]["ContainerSpec"]["Image"] = f"{world.repo}:2.0"
        spec["UpdateConfig"] = {"FailureAction": "rollback"}
        target = f"{V}/services/{service['ID']}/update?version={service['Version']['Index']}"
        status, body, _ = api(world.proxy.socket, "POST", target, json.dumps(spec).encode(), JSON)
        assert status == 200, body
        image = inspect()["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"]
        assert image == f"{world.repo}:2.0@{world.signed2_digest}"
    finally:
        world.engine("service", "rm", name, check=False)
        world.engine("swarm", "leave", "--force", check=False)
        world.rmi(signed1)


def test_X45h_a_rollback_to_a_spec_that_mounts_the_engine_socket(world: World) -> None:
    """A spec rolled back to (the `PreviousSpec` of `rollback=previous`, set behind the
    proxy's back here) is refused when it binds the engine socket, as a create or an update
    naming that mount is: its task would reach the engine without the proxy."""
    name = f"rm{time.monotonic_ns()}"
    signed1 = f"{world.repo}:1.0@{world.signed_digest}"

    def socket_containers() -> list[str]:
        found = []
        for cid in world.container_ids():
            info = json.loads(world.engine("inspect", cid).stdout)[0]
            sources = {m.get("Source") for m in info.get("Mounts") or []}
            if world.engine_socket in sources:
                found.append(cid)
        return found

    def wait_for(what: Any) -> None:
        deadline = time.monotonic() + 60
        while not what():
            assert time.monotonic() < deadline, world.engine("service", "ps", name).stdout
            time.sleep(0.5)

    world.engine("swarm", "init", "--advertise-addr", "127.0.0.1")
    try:
        _service_behind_the_proxy(
            world,
            name,
            "--restart-condition",
            "none",
            "--mount",
            f"type=bind,source={world.engine_socket},target=/s",
            signed1,
            "true",
        )
        wait_for(lambda: len(socket_containers()) == 1)
        world.engine("service", "update", "-d", "--mount-rm", "/s", name)
        proc = world.client("service", "rollback", "-d", name)
        assert proc.returncode != 0 and "EngineSocket" in proc.stderr, proc
        # before API 1.28 the CLI rolls back itself: the previous spec is the update's body
        proc = world.client("service", "update", "--rollback", name, DOCKER_API_VERSION="1.27")
        assert proc.returncode != 0 and "EngineSocket" in proc.stderr, proc
        time.sleep(3)
        assert len(socket_containers()) == 1
    finally:
        world.engine("service", "rm", name, check=False)
        world.engine("swarm", "leave", "--force", check=False)


def test_X45i_a_service_mount_source_given_as_a_swarm_template(world: World) -> None:
    """A worker expands Go templates in a service's mount sources and volume driver options
    before it creates the task (swarmkit's `ExpandContainerSpec`): `/{{/* */}}run/docker.sock`
    or a volume's `device` `{{"/run"}}` is no path for the proxy's check but the engine
    socket (or its directory) for the task. A templated host path is refused in a spec."""
    name = f"tm{time.monotonic_ns()}"
    templated = "/{{/* the engine socket */}}" + world.engine_socket.removeprefix("/")
    templated_dir = '{{"' + os.path.dirname(world.engine_socket) + '"}}'
    device = {
        "Type": "volume",
        "Target": "/s",
        "Source": f"{name}vol",
        "VolumeOptions": {
            "DriverConfig": {"Name": "local", "Options": {"type": "none", "o": "bind"}}
        },
    }
    device["VolumeOptions"]["DriverConfig"]["Options"]["device"] = templated_dir  # type: ignore[index]
    _service_mounts_refused(
        world, name, [{"Type": "bind", "Source": templated, "Target": "/s"}, device], b"template"
    )


def test_X45j_a_service_mount_whose_type_swarm_reads_as_bind(world: World) -> None:
    """moby converts a service mount's `Type` with `strings.ToUpper` and keeps the enum's zero,
    BIND, for an empty or missing one: `bınd` (dotless i) and no `Type` at all are bind
    mounts of `Source` on the worker, and a bind of the engine socket is refused."""
    name = f"mt{time.monotonic_ns()}"
    mounts = [
        {"Source": world.engine_socket, "Target": "/s", **extra}
        for extra in ({}, {"Type": ""}, {"Type": "b\u0131nd"})
    ]
    _service_mounts_refused(world, name, mounts, b"EngineSocket")


def _service_mounts_refused(
    world: World, name: str, mounts: list[dict[str, Any]], reason: bytes
) -> None:
    """Each mount in a service create through the proxy is refused (403, `reason`): no
    service, no task container."""
    world.engine("swarm", "init", "--advertise-addr", "127.0.0.1")
    try:
        before = world.container_ids()
        for mount in mounts:
            spec = {
                "Name": name,
                "TaskTemplate": {
                    "ContainerSpec": {
                        "Image": f"{world.repo}:1.0",
                        "Command": ["sleep", "30"],
                        "Mounts": [mount],
                    }
                },
            }
            body = json.dumps(spec).encode()
            status, answer, _ = api(world.proxy.socket, "POST", f"{V}/services/create", body, JSON)
            assert status == 403 and reason in answer, (mount, answer)
            listed = world.engine("service", "ls", "-q", "--filter", f"name={name}").stdout
            assert listed.strip() == ""
        assert world.container_ids() == before
    finally:
        world.engine("service", "rm", name, check=False)
        world.engine("swarm", "leave", "--force", check=False)


# --------------------------------------------------------------------- trust server, crashes


def test_X52b_trust_server_down_with_an_expired_cache(world: World) -> None:
    """(b): the cache verified a minute ago has expired when the trust server goes down:
    pulls and creates 503 (Network), never a pass-through pull by tag."""
    signed = f"{world.repo}:1.0"
    length = world.manifest_length(world.repo, world.signed_digest)
    builder, config = world.fixture_trust(world.repo, "1.0", world.signed_digest, length)
    expires = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(seconds=8)
    builder.set_expiry("timestamp", expires)
    trust = FixtureServer({world.repo: builder.publish()}).start()
    proxy: TrustProxy | None = None
    try:
        proxy = world.start_proxy(env=world.trust_env(config, trust))
        world.rmi(signed)
        proc = world.client("pull", signed, proxy=proxy)  # verified and cached
        assert proc.returncode == 0, proc
        assert dt.datetime.now(dt.UTC) < expires, "the warm pull took too long"
        trust.stop()
        world.rmi(signed)
        time.sleep(max(0.0, (expires - dt.datetime.now(dt.UTC)).total_seconds()) + 1.5)
        before = world.snapshot()
        proc = world.client("pull", signed, proxy=proxy)
        assert proc.returncode == 1 and "[Network]" in proc.stderr, proc
        assert "has expired" in proc.stderr, proc
        response = send(world, req("POST", pull_target(world.repo, "1.0")), proxy)
        assert status_of(response) == 503, response
        response = send(
            world, req("POST", f"{V}/containers/create", JSON, create_body(signed)), proxy
        )
        assert status_of(response) == 503, response
        unchanged(world, before)
        assert world.image(signed) is None
    finally:
        if proxy is not None:
            proxy.stop()
        trust.stop()


def _never_the_engine(world: World, proxy: TrustProxy, hooked: EngineProxy) -> None:
    proc = world.client("ps", proxy=proxy)
    assert proc.returncode != 0 and "Cannot connect" in proc.stderr, proc
    if os.path.exists(proxy.socket):
        assert not os.path.samefile(proxy.socket, world.engine_socket)
        assert not os.path.samefile(proxy.socket, hooked.socket_path)


def test_X53b_proxy_killed_during_a_pull_stream(world: World) -> None:
    signed = f"{world.repo}:2.0"
    world.rmi(signed, f"{world.repo}@{world.signed2_digest}")  # a real pull: a long stream
    before_tags = world.tags()
    with hooked_engine(world) as (hooked, proxy):
        hooked.during[("POST", "/images/create")] = lambda request: proxy.kill()
        proc = world.client("pull", signed, proxy=proxy)
        assert proc.returncode != 0, proc
        creates = [r for r in hooked.requests if r.path == "/images/create"]
        assert len(creates) == 1 and creates[0].query["tag"] == [world.signed2_digest]
        assert not [r for r in hooked.requests if r.path.endswith("/tag")]  # no tag step ran
        _never_the_engine(world, proxy, hooked)
    assert world.image(signed) is None and world.tags() == before_tags
    world.rmi(f"{world.repo}@{world.signed2_digest}")


def test_X53c_proxy_killed_during_a_build_upload(world: World) -> None:
    size = 64 * 1024 * 1024
    piece = b"\0" * (1024 * 1024)
    before = world.snapshot()
    with hooked_engine(world) as (hooked, proxy):
        head = req(
            "POST",
            f"{V}/build?t=killed{time.monotonic_ns()}:1",
            {"Content-Type": "application/x-tar", "Content-Length": str(size)},
            length=False,
        )
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(10)
            sock.connect(proxy.socket)
            sock.sendall(head + piece * 4)
            time.sleep(0.5)
            proxy.kill()
            broken = False
            try:
                for _ in range(size // len(piece)):
                    sock.sendall(piece)
                broken = sock.recv(65536) == b""
            except (BrokenPipeError, ConnectionResetError):
                broken = True
            assert broken
        assert not [r for r in hooked.requests if r.path == "/build"]
        _never_the_engine(world, proxy, hooked)
    unchanged(world, before)


def _context_tar(*members: tuple[str, str]) -> bytes:
    """A build context as raw tar bytes, members in the order given (duplicates kept); a text
    `-> TARGET` makes a symbolic link."""
    import io
    import tarfile

    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, text in members:
            info = tarfile.TarInfo(name)
            info.mode = 0o644
            if text.startswith("-> "):
                info.type, info.linkname = tarfile.SYMTYPE, text[3:]
                tar.addfile(info)
                continue
            data = text.encode()
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def test_X40f_the_dockerfile_read_is_the_one_the_engine_builds(world: World) -> None:
    """The proxy must read the very member the engine will build from. Names that differ only
    in leading dots (`.Dockerfile`, `..Dockerfile`) are other files to the engine; a duplicate
    entry is extracted last-wins; `./Dockerfile` and `a/../Dockerfile` are the Dockerfile."""
    unsigned = f"FROM {world.unsigned_repo}:1.0\nRUN true\n"
    signed = f"FROM {world.repo}:1.0\nRUN true\n"
    before = world.snapshot()
    cases: list[tuple[str, tuple[tuple[str, str], ...]]] = [
        ("", (("Dockerfile", unsigned), (".Dockerfile", signed))),
        ("", (("Dockerfile", unsigned), ("..Dockerfile", signed))),
        (".Dockerfile", (("Dockerfile", signed), (".Dockerfile", unsigned))),
        ("..Dockerfile", (("Dockerfile", signed), ("..Dockerfile", unsigned))),
        (".Dockerfile", ((".Dockerfile", unsigned), ("Dockerfile", signed))),
        ("..Dockerfile", (("..Dockerfile", unsigned), ("Dockerfile", signed))),
        ("", (("Dockerfile", signed), ("./Dockerfile", unsigned))),
        ("", (("Dockerfile", signed), ("a/../Dockerfile", unsigned))),
        ("sub/Dockerfile", (("sub/Dockerfile", signed), ("sub/./Dockerfile", unsigned))),
        # written through a symbolic link: `sub/Dockerfile` lands on `other/Dockerfile`
        (
            "other/Dockerfile",
            (("sub", "-> other"), ("other/Dockerfile", signed), ("sub/Dockerfile", unsigned)),
        ),
        ("", (("sub", "-> ."), ("Dockerfile", signed), ("sub/Dockerfile", unsigned))),
        ("", (("Dockerfile", signed), ("../Dockerfile", unsigned))),
    ]
    for dockerfile, members in cases:
        query = f"?dockerfile={urllib.parse.quote(dockerfile)}" if dockerfile else ""
        target = f"{V}/build{query}"
        response = send(
            world,
            req("POST", target, {"Content-Type": "application/x-tar"}, _context_tar(*members)),
        )
        assert status_of(response) in (400, 403), (dockerfile, members, response)
        assert b"NoTrustData" in response or b"[Context]" in response, (members, response)
        unchanged(world, before)
    # A member of an unknown type whose header claims data: re-written without that data, the
    # engine would read the next header as its data and a crafted file's content as headers.
    import io
    import tarfile

    inner = _context_tar(("Dockerfile", unsigned))
    inner = inner[: inner.index(b"\0" * 1024, 1024)] + b"\0" * 1024
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        odd = tarfile.TarInfo("odd")
        odd.type, odd.size = b"Z", 512
        tar.addfile(odd, io.BytesIO(b"x" * 512))
        pad = tarfile.TarInfo("pad")
        pad.size = len(inner)
        tar.addfile(pad, io.BytesIO(inner))
        real = tarfile.TarInfo("Dockerfile")
        real.size = len(signed)
        tar.addfile(real, io.BytesIO(signed.encode()))
    response = send(
        world, req("POST", f"{V}/build", {"Content-Type": "application/x-tar"}, out.getvalue())
    )
    assert status_of(response) == 400 and b"[Context]" in response, response
    unchanged(world, before)


def _refused_build(world: World, body: bytes, query: str = "") -> None:
    """A raw classic build through the proxy that must be refused before the engine pulls or
    builds anything (the unsigned tag stays absent)."""
    response = send(
        world, req("POST", f"{V}/build{query}", {"Content-Type": "application/x-tar"}, body)
    )
    assert status_of(response) in (400, 403), (body[:2048], response)
    assert b"[Context]" in response or b"NoTrustData" in response, response
    assert world.image(f"{world.unsigned_repo}:1.0") is None


def test_X40g_pax_records_the_engine_reads_otherwise(world: World) -> None:
    """Python's tarfile takes `GNU.sparse.name` for a member's name even when the member is not
    sparse; Go's reader honours it only for sparse members and takes `path`. A member Python
    calls `notes.txt` was the engine's Dockerfile, extracted over the pinned one."""
    import io
    import tarfile

    signed = f"FROM {world.repo}:1.0\nRUN true\n".encode()
    unsigned = f"FROM {world.unsigned_repo}:1.0\nRUN true\n".encode()
    before = world.snapshot()
    for records in (
        {"path": "Dockerfile", "GNU.sparse.name": "notes.txt"},
        {"GNU.sparse.name": "notes.txt", "path": "Dockerfile"},
        {"GNU.sparse.name": "Dockerfile"},
        {"GNU.sparse.realsize": "0"},
    ):
        out = io.BytesIO()
        with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
            info = tarfile.TarInfo("Dockerfile")
            info.size = len(signed)
            tar.addfile(info, io.BytesIO(signed))
            info = tarfile.TarInfo("notes.txt" if "path" not in records else "Dockerfile")
            info.size = len(unsigned)
            info.pax_headers = dict(records)
            tar.addfile(info, io.BytesIO(unsigned))
        _refused_build(world, out.getvalue())
        unchanged(world, before)


def test_X40h_lines_the_classic_builder_splits_otherwise(world: World) -> None:
    """The engine's Dockerfile parser (20.10: BuildKit's v0.8 parser) is not the proxy's
    reader: a line ending in an escaped escape is no continuation; a directive after leading
    blanks, or after a `# check=` line (unknown to it), or with a non-ASCII blank differs; a
    heredoc's body is instructions to it. Each hid a `FROM unsigned` from the proxy."""
    signed = f"{world.repo}:1.0"
    unsigned = f"{world.unsigned_repo}:1.0"
    before = world.snapshot()
    for text in (
        f"FROM {signed}\nRUN echo \\\\\nFROM {unsigned}\nRUN true\n",
        f" # escape=`\nFROM {signed}\nRUN echo \\\nFROM {unsigned}\nRUN true\n",
        f"\t# escape=`\nFROM {signed}\nRUN echo \\\nFROM {unsigned}\nRUN true\n",
        f"# check=skip=all\n# escape=`\nFROM {signed}\nRUN true #`\nFROM {unsigned}\nRUN true\n",
        f"#\u00a0escape=`\nFROM {signed}\nRUN true #`\nFROM {unsigned}\nRUN true\n",
        f"# escape=`\u000b\nFROM {signed}\nRUN true #`\nFROM {unsigned}\nRUN true\n",
        f"FROM {signed}\nRUN true <<EOF\nFROM {unsigned}\nRUN true \\\nEOF\n",
        f"FROM {signed}\nRUN true \\\n\u00a0# c\nFROM {unsigned}\n",
        f"FROM {signed}\r\nRUN echo \\\\\r\nFROM {unsigned}\r\n",
    ):
        _refused_build(world, _context_tar(("Dockerfile", text)))
        unchanged(world, before)


def test_X40i_builder_flags_with_quotes_and_escapes(world: World) -> None:
    """The engine unquotes builder flags (`--fr"om"=X` is `--from=X`, `--fr\\om=X` too) and
    takes only leading `--` words as flags, a quoted flag value spanning blanks: the proxy
    saw no `--from`, or pinned a word inside FROM's --platform value instead of the base."""
    signed = f"{world.repo}:1.0"
    unsigned = f"{world.unsigned_repo}:1.0"
    before = world.snapshot()
    for text in (
        f'FROM {signed}\nCOPY --fr"om"={unsigned} /marker /m\n',
        f"FROM {signed}\nCOPY --fr\\om={unsigned} /marker /m\n",
        f'FROM {signed}\nCOPY --chown=0 --"from={unsigned}" /marker /m\n',
        f'FROM --platform="${{X:+ {signed} AS --platform=}}linux" {unsigned}\nRUN true\n',
        f"FROM --platform=${{X:+\x1c{signed}\x1cAS\x1c--platform=}}linux {unsigned}\nRUN true\n",
        f'FROM {signed}\nONBUILD COPY --fr"om"={unsigned} /marker /m\n',
    ):
        _refused_build(world, _context_tar(("Dockerfile", text)))
        unchanged(world, before)


def test_X40j_variables_in_from_the_engine_evaluates_otherwise(world: World) -> None:
    """FROM's variables as the engine evaluates them: the proxy-variable build args
    (HTTP_PROXY …) are set without an ARG, ARG names are expanded, quoted defaults are
    unquoted, an ARG redeclared without a default is unset. The proxy read `scratch` or a
    stage where the engine read an unsigned image; now the proxy writes what it read."""
    import json as _json

    signed = f"{world.repo}:1.0"
    unsigned = f"{world.unsigned_repo}:1.0"
    quoted = unsigned.replace("/proxy/", '/pr"ox"y/')
    args = urllib.parse.quote(_json.dumps({"HTTP_PROXY": unsigned}))
    name = f"fromvars{time.monotonic_ns()}:1"
    for text, query, base in (
        ("FROM ${HTTP_PROXY:-scratch}\nCOPY Dockerfile /d\n", f"&buildargs={args}", "scratch"),
        (
            f"FROM {signed} AS first\nFROM ${{HTTP_PROXY:-first}}\nRUN true\n",
            f"&buildargs={args}",
            "first",
        ),
        (
            f"ARG A=BASE\nARG $A={unsigned}\nFROM ${{BASE:-scratch}}\nCOPY Dockerfile /d\n",
            "",
            "scratch",
        ),
        (f"ARG BASE={quoted}\nFROM ${{BASE:-scratch}}\nCOPY Dockerfile /d\n", "", "scratch"),
        (f"ARG B=scratch\nARG B\nFROM ${{B:-{unsigned}}}\nCOPY Dockerfile /d\n", "", "scratch"),
    ):
        target = f"{V}/build?t={name}{query}"
        body = _context_tar(("Dockerfile", text))
        response = send(world, req("POST", target, {"Content-Type": "application/x-tar"}, body))
        assert world.image(unsigned) is None, (text, response)
        assert status_of(response) == 200 and f"FROM {base}".encode() in response, response
        assert b"Successfully built" in response, response
        world.rmi(name)
    # written out, a FROM $X that names scratch or a stage builds as before
    text = f"ARG S=first\nARG E=scratch\nFROM $E\nCOPY Dockerfile /d\nFROM {signed} AS first\n"
    text += "FROM ${S}\nRUN cat /marker\n"
    response = send(
        world,
        req(
            "POST",
            f"{V}/build?t={name}",
            {"Content-Type": "application/x-tar"},
            _context_tar(("Dockerfile", text)),
        ),
    )
    assert status_of(response) == 200 and b"signed-1.0" in response, response
    assert b"Successfully built" in response, response
    world.rmi(name)


def test_X40k_onbuild_triggers_with_quoted_flags(world: World, tmp_path: Path) -> None:
    """A base's trigger `COPY --fr"om"=X` is `COPY --from=X` when the engine parses it in the
    child build: the proxy's `from=` search missed it and the engine pulled X unverified."""
    base = f"{world.repo}:onbuildq{time.monotonic_ns()}"
    unsigned = f"{world.unsigned_repo}:1.0"
    digest = world.push(
        base, "onbuildq", sign=True, changes=(f'ONBUILD COPY --fr"om"={unsigned} /marker /m',)
    )
    world.rmi(base, unsigned)
    name = f"onbuildqchild{time.monotonic_ns()}:1"
    before = world.snapshot()
    proc = _build(world, tmp_path, f"FROM {base}\nRUN cat /m\n", "-t", name)
    assert proc.returncode != 0 and "[OnBuild]" in proc.stderr, proc
    assert world.image(unsigned) is None and world.image(name) is None
    _, tags, containers = world.snapshot()
    assert tags - before[1] <= {f"{world.repo}:<none>"} and containers == before[2]
    world.rmi(f"{world.repo}@{digest}")


def test_X40l_a_context_the_engine_would_decompress_again(world: World) -> None:
    """The engine sniffs the (re-written, plain) context for compression before untarring it:
    a first member named `BZh…` made the forwarded tar a bzip2 stream to it (an engine 500
    after the proxy said yes). The proxy refuses such a context itself."""
    before = world.snapshot()
    body = _context_tar(("BZh91AY&SY", "x"), ("Dockerfile", f"FROM {world.repo}:1.0\nRUN true\n"))
    response = send(world, req("POST", f"{V}/build", {"Content-Type": "application/x-tar"}, body))
    assert status_of(response) == 400 and b"[Context]" in response, response
    unchanged(world, before)


def _pax_context(*members: tuple[str, dict[str, str], str]) -> bytes:
    """A build context whose members carry the given pax records; `-> T` text makes a
    symbolic link to T."""
    import io
    import tarfile

    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, records, text in members:
            info = tarfile.TarInfo(name)
            info.mode, info.pax_headers = 0o644, dict(records)
            if text.startswith("-> "):
                info.type, info.linkname = tarfile.SYMTYPE, text[3:]
                tar.addfile(info)
                continue
            info.size = len(text.encode())
            tar.addfile(info, io.BytesIO(text.encode()))
    return out.getvalue()


def test_X40m_a_name_the_engine_cuts_at_a_nul(world: World) -> None:
    """A pax `path` of `Dockerfile<NUL>` is another name than `Dockerfile` to Python, which
    forwarded the member at once; re-written in the header's name field it is `Dockerfile` to
    Go's reader (a field ends at its first NUL). With only a lowercase `dockerfile` held and
    pinned, the engine found a `Dockerfile` and built the unpinned one."""
    signed = f"FROM {world.repo}:1.0\nRUN true\n"
    unsigned = f"FROM {world.unsigned_repo}:1.0\nRUN true\n"
    before = world.snapshot()
    for members in (
        (("x", {"path": "Dockerfile\0"}, unsigned), ("dockerfile", {}, signed)),
        (("x", {"path": "Dockerfile\0.txt"}, unsigned), ("dockerfile", {}, signed)),
        (
            ("evil", {}, unsigned),
            ("x", {"path": "Dockerfile\0"}, "-> evil"),
            ("dockerfile", {}, signed),
        ),
        (
            ("evil", {}, unsigned),
            ("dockerfile", {}, signed),
            ("x", {"path": "Dockerfile\0"}, "-> evil"),
        ),
    ):
        _refused_build(world, _pax_context(*members))
        unchanged(world, before)


def test_X40n_a_first_name_the_engine_rewrites_as_a_bzip2_magic(world: World) -> None:
    """The engine re-writes the forwarded tar (tarsum, Go's writer) before its untar sniffs it
    for compression again: a first member `BZh…/<long or non-ASCII name>` is a pax header
    named `BZh…/PaxHeaders.0/…` there, a bzip2 stream to it, while the proxy's own first
    header (`././@PaxHeader`) passed the X40l check (an engine 500 after the proxy said yes)."""
    before = world.snapshot()
    signed = f"FROM {world.repo}:1.0\nRUN true\n"
    for first in (
        "BZh91AY&SY/" + "x" * 120,
        "BZh91AY&SY/\u00e9",
        "BZh/a/\u00e9",
        "./q/../BZh91AY&SY/\u00e9",
        "B\u00e9Zh91AY&SY/\u00e9",
    ):
        body = _context_tar((first, "x"), ("Dockerfile", signed))
        response = send(
            world, req("POST", f"{V}/build", {"Content-Type": "application/x-tar"}, body)
        )
        assert status_of(response) == 400 and b"[Context]" in response, (first, response)
        unchanged(world, before)


def test_X40o_a_context_the_proxy_cannot_read_or_write_again(world: World) -> None:
    """A device member whose major or minor number does not fit a ustar field (GNU base-256 in
    the client's header) made Python's writer raise part-way, and an archive (plain, gzip or
    xz) that ends inside a member's data made the data read raise: the client got its
    connection closed without an answer. The proxy must answer 400 and keep serving, with
    nothing built."""
    import gzip
    import io
    import lzma
    import tarfile

    before = world.snapshot()
    text = f"FROM {world.repo}:1.0\nRUN true\n".encode()
    bodies = []
    for field, value in (("devmajor", 8**8), ("devminor", -5)):
        out = io.BytesIO()
        with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as tar:
            dev = tarfile.TarInfo("dev")
            dev.type = tarfile.CHRTYPE
            setattr(dev, field, value)
            tar.addfile(dev)
            info = tarfile.TarInfo("Dockerfile")
            info.size = len(text)
            tar.addfile(info, io.BytesIO(text))
        bodies.append(out.getvalue())
    whole = _context_tar(("a.bin", os.urandom(300_000).hex()), ("Dockerfile", text.decode()))
    bodies += [whole[:400_000], gzip.compress(whole)[:200_000], lzma.compress(whole)[:200_000]]
    for body in bodies:
        response = send(
            world, req("POST", f"{V}/build", {"Content-Type": "application/x-tar"}, body)
        )
        assert status_of(response) == 400 and b"[Context]" in response, (body[:600], response)
        assert status_of(send(world, req("GET", f"{V}/_ping"))) == 200
        unchanged(world, before)


def test_X53d_proxy_killed_while_a_build_context_streams(world: World) -> None:
    """Members are on their way to the engine (it is extracting them) when the proxy is
    killed: the engine is left a truncated request, which builds nothing and leaves no
    context behind. (hooked_engine's EngineProxy reads whole bodies before relaying them,
    so this runs against the engine itself.)"""
    name = f"killedstream{time.monotonic_ns()}:1"
    root = world.engine("info", "--format", "{{.DockerRootDir}}").stdout.strip()
    tmp = Path(root, "tmp")
    present = set(tmp.glob("docker-builder*"))
    before = world.snapshot()
    proxy = world.start_proxy()
    body = _context_tar(
        ("a.bin", "x" * 3_000_000),
        ("b.bin", "y" * 3_000_000),
        ("Dockerfile", f"FROM {world.repo}:1.0\nRUN true\n"),
    )
    head = req("POST", f"{V}/build?t={name}", {"Content-Type": "application/x-tar"}, body)
    head, body = head[: -len(body)], body
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(proxy.socket)
        sock.sendall(head + body[:4_000_000])
        deadline = time.monotonic() + 10
        while not set(tmp.glob("docker-builder*")) - present and time.monotonic() < deadline:
            time.sleep(0.05)
        assert set(tmp.glob("docker-builder*")) - present, "the engine got no streamed context"
        proxy.kill()
        with contextlib.suppress(OSError):
            sock.sendall(body[4_000_000:])
    deadline = time.monotonic() + 10
    while set(tmp.glob("docker-builder*")) - present and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not set(tmp.glob("docker-builder*")) - present
    assert world.image(name) is None
    unchanged(world, before)


def test_X40p_pax_records_python_reads_and_go_refuses(world: World) -> None:
    """Python reads a pax `uid=abc` or `mtime=1e5` (as 0, or as a float); re-sent as they came,
    Go's reader refused the member part-way through the streamed context, after the proxy had
    said yes (the client got a 5xx). The proxy writes those fields from what it read."""
    name = f"paxnum{time.monotonic_ns()}:1"
    signed = f"FROM {world.repo}:1.0\nCOPY a /a\n"
    for records in (
        {"uid": "abc"},
        {"gid": "-1x"},
        {"mtime": "1e5"},
        {"atime": "x"},
        {"ctime": "1.2.3"},
        {"uname": "a\0b", "gname": "\u00e9\0"},
        {"SCHILY.xattr.user.a\0b": "x"},
    ):
        body = _pax_context(("a", records, "x"), ("Dockerfile", {}, signed))
        response = send(
            world,
            req("POST", f"{V}/build?t={name}", {"Content-Type": "application/x-tar"}, body),
        )
        assert status_of(response) == 200 and b"Successfully built" in response, (
            records,
            response[-400:],
        )
        world.rmi(name)


def test_X56b_a_long_name_or_pax_header_keeps_the_proxy_small(world: World) -> None:
    """Python's tarfile reads a GNU long-name or pax header's whole data into memory (and
    copies it several times): a 48 MiB long name, well under build_spool_max, grew the proxy
    by some 600 MiB. Go's reader refuses such headers over 1 MiB; so does the proxy now."""
    import tarfile

    proxy = world.start_proxy()
    before = world.snapshot()
    size = 48 * 1024 * 1024
    signed = f"FROM {world.repo}:1.0\nRUN true\n"
    for kind in (tarfile.GNUTYPE_LONGNAME, tarfile.XHDTYPE):
        special = tarfile.TarInfo("././@LongLink")
        special.type, special.size = kind, size
        data = b"a" * size
        if kind == tarfile.XHDTYPE:  # one record, `LENGTH comment=aaa…\n`
            record = b" comment=" + b"a" * (size - 18) + b"\n"
            data = b"%d" % (len(record) + 8) + record
            assert int(data.split(b" ")[0]) == len(data)
            special.size = len(data)
        body = special.tobuf(tarfile.USTAR_FORMAT) + data + b"\0" * (-len(data) % 512)
        body += _context_tar(("x", "y"), ("Dockerfile", signed))
        response = send(
            world, req("POST", f"{V}/build", {"Content-Type": "application/x-tar"}, body), proxy
        )
        assert status_of(response) == 400 and b"[Context]" in response, response[-300:]
        unchanged(world, before)
    assert proxy.proc is not None
    status = Path(f"/proc/{proxy.proc.pid}/status").read_text().splitlines()
    rss_kib = int(next(line for line in status if line.startswith("VmHWM:")).split()[1])
    assert rss_kib < 100 * 1024, f"proxy peak RSS {rss_kib} KiB"
