"""Shared setup of the proxy tests: signed, unsigned and re-signed images and a running proxy.

A *publisher* DOCKER_CONFIG signs with the real docker CLI (`DOCKER_CONTENT_TRUST=1 docker push`)
on the session stack; the proxy has its own DOCKER_CONFIG (its trust cache); clients have a third
one and talk only to the proxy's socket. Every helper that inspects the engine goes to the engine
directly, never through the proxy, so a test can assert what the engine holds afterwards.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from fixtures.stack import DOCKER_CLI, Stack, StackError
from fixtures.trustproxy import TrustProxy, busybox_tar

_DIGEST_PREFIX = "digest: "
_ACCEPT = ", ".join(
    [
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.index.v1+json",
    ]
)


def _show(proc: subprocess.CompletedProcess[str]) -> str:
    argv = " ".join(str(a) for a in proc.args)
    return f"$ {argv}\n[exit {proc.returncode}]\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"


class World:
    def __init__(self, stack: Stack) -> None:
        assert stack.registry is not None and stack.notary is not None
        self.stack = stack
        self.tmp = Path(tempfile.mkdtemp(prefix="tpw-", dir="/tmp"))
        self.publisher = self.tmp / "pub"
        self.client_config = self.tmp / "client"
        self.proxy_config = self.tmp / "proxycfg"
        for path in (self.publisher, self.client_config, self.proxy_config):
            stack.docker_env(path)
        unique = time.monotonic_ns()
        self.registry = stack.registry.host
        self.repo = f"{self.registry}/proxy/app{unique}"
        self.unsigned_repo = f"{self.registry}/proxy/plain{unique}"
        self.signed_digest = self.push(f"{self.repo}:1.0", "signed-1.0", sign=True)
        # A second signed tag, and an unsigned tag in the signed repository.
        self.signed2_digest = self.push(f"{self.repo}:2.0", "signed-2.0", sign=True)
        self.evil_digest = self.push(f"{self.repo}:evil", "evil", sign=False)
        self.unsigned_digest = self.push(f"{self.unsigned_repo}:1.0", "unsigned", sign=False)
        # Nothing of these is left in the engine: tests start from a clean image store.
        for ref in (f"{self.repo}:1.0", f"{self.repo}:2.0", f"{self.repo}:evil"):
            self.engine("rmi", "-f", ref, check=False)
        self.engine("rmi", "-f", f"{self.unsigned_repo}:1.0", check=False)
        self.proxies: list[TrustProxy] = []
        self.proxy = self.start_proxy()

    # -- processes

    def env(self, config: Path, **extra: str) -> dict[str, str]:
        env = {**os.environ, **self.stack.docker_env(config)}
        env.pop("DOCKER_CONTENT_TRUST", None)
        env.update(extra)
        return env

    def engine(
        self, *args: str, check: bool = True, input: str | None = None, trust: bool = False
    ) -> subprocess.CompletedProcess[str]:
        """The docker CLI straight at the engine (the publisher's config)."""
        env = self.env(self.publisher, DOCKER_CONTENT_TRUST="1" if trust else "0")
        proc = subprocess.run(
            [DOCKER_CLI, *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
            input=input,
            check=False,
        )
        if check and proc.returncode != 0:
            raise StackError(_show(proc))
        return proc

    def client(
        self,
        *args: str,
        proxy: TrustProxy | None = None,
        input: str | None = None,
        timeout: float = 120,
        **extra: str,
    ) -> subprocess.CompletedProcess[str]:
        """The docker CLI 28 as a user runs it, with DOCKER_HOST at the proxy."""
        target = proxy or self.proxy
        env = self.env(self.client_config, DOCKER_HOST=target.docker_host, **extra)
        return subprocess.run(
            [DOCKER_CLI, *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
            check=False,
            cwd=self.tmp,
        )

    def push(self, ref: str, marker: str, *, sign: bool, changes: tuple[str, ...] = ()) -> str:
        """Import a busybox image as `ref` (with `docker import --change` lines), push it,
        signed with the publisher's keys when `sign`; returns the manifest digest."""
        tar_path = self.tmp / f"img-{time.monotonic_ns()}.tar"
        tar_path.write_bytes(busybox_tar(f"{ref} {marker}"))
        extra = [arg for change in changes for arg in ("--change", change)]
        try:
            self.engine("import", "--change", 'CMD ["/bin/sh"]', *extra, str(tar_path), ref)
        finally:
            tar_path.unlink(missing_ok=True)
        pushed = self.engine("push", ref, trust=sign)
        for line in pushed.stdout.splitlines():
            if _DIGEST_PREFIX in line:
                return line.split(_DIGEST_PREFIX, 1)[1].split()[0]
        raise StackError(_show(pushed))

    def start_proxy(
        self,
        config: str = "",
        *,
        mode: str | None = None,
        policy: Path | None = None,
        engine: str | None = None,
        env: dict[str, str] | None = None,
    ) -> TrustProxy:
        """A proxy in front of the engine (or of `engine`, e.g. an EngineProxy's socket),
        with the proxy's own DOCKER_CONFIG unless `env` is given."""
        directory = Path(tempfile.mkdtemp(prefix="tpx-", dir="/tmp"))
        proxy = TrustProxy(
            directory,
            engine or self.engine_socket,
            env or self.env(self.proxy_config),
            config=config,
            mode=mode,
            policy=policy,
        )
        proxy.start()
        self.proxies.append(proxy)
        return proxy

    @property
    def engine_socket(self) -> str:
        return str(self.stack.dockerd.socket_path) if self.stack.dockerd else ""

    def manifest_length(self, repo: str, digest: str) -> int:
        """The size of the manifest the registry serves for `repo@digest` (what a signature
        records), checked against the digest."""
        path = repo.split("/", 1)[1]
        request = urllib.request.Request(
            f"http://{self.registry}/v2/{path}/manifests/{digest}", headers={"Accept": _ACCEPT}
        )
        with urllib.request.urlopen(request, timeout=30) as answer:
            body: bytes = answer.read()
        assert "sha256:" + hashlib.sha256(body).hexdigest() == digest
        return len(body)

    def fixture_trust(self, gun: str, tag: str, digest: str, length: int) -> tuple[Any, Path]:
        """A generated trust server (FixtureServer) signing `gun:tag` → `digest`, and a
        DOCKER_CONFIG that trusts its CA; returns (the builder, the config). Start the server
        with `FixtureServer({gun: builder.publish()})`."""
        from fixtures.notarygen import RepoBuilder

        builder = RepoBuilder(gun)
        builder.add_target(tag, digest.removeprefix("sha256:"), length)
        config = Path(tempfile.mkdtemp(prefix="tpf-", dir=self.tmp))
        self.stack.docker_env(config)
        return builder, config

    def trust_env(self, config: Path, server: Any) -> dict[str, str]:
        """The env of a proxy whose trust server is `server` (a FixtureServer)."""
        tls = config / "tls" / f"127.0.0.1:{server.port}"
        tls.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(server.ca_path, tls / "ca.crt")
        return self.env(config, DOCKER_CONTENT_TRUST_SERVER=server.url)

    def close(self) -> None:
        for proxy in self.proxies:
            proxy.stop()

    # -- engine state (asked of the engine directly)

    def image(self, ref: str) -> dict[str, Any] | None:
        proc = self.engine("image", "inspect", "--", ref, check=False)
        if proc.returncode != 0:
            return None
        value = json.loads(proc.stdout)
        return value[0] if value else None

    def image_ids(self) -> set[str]:
        proc = self.engine("images", "-a", "-q", "--no-trunc")
        return set(proc.stdout.split())

    def container_ids(self) -> set[str]:
        proc = self.engine("ps", "-a", "-q", "--no-trunc")
        return set(proc.stdout.split())

    def tags(self) -> set[str]:
        proc = self.engine("images", "--format", "{{.Repository}}:{{.Tag}}")
        return set(proc.stdout.split())

    def snapshot(self) -> tuple[set[str], set[str], set[str]]:
        return self.image_ids(), self.tags(), self.container_ids()

    def pull_direct(self, ref: str) -> None:
        self.engine("pull", ref)

    def rmi(self, *refs: str) -> None:
        for ref in refs:
            self.engine("rmi", "-f", ref, check=False)


def raw_request(
    sock_path: str, data: bytes, *, read_timeout: float = 10.0, answers: int | None = None
) -> bytes:
    """Send raw bytes to a unix socket and read until the peer closes or goes quiet, or, with
    `answers`, until that many whole Content-Length-framed answers arrived (a kept-alive
    connection otherwise costs the whole `read_timeout` of silence)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(read_timeout)
        sock.connect(sock_path)
        try:
            sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the proxy answered and closed before reading everything (refusals do)
        out = bytearray()
        try:
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                out += chunk
                if answers is not None and _whole_answers(bytes(out)) >= answers:
                    break
        except (TimeoutError, ConnectionResetError):
            pass
        return bytes(out)


def _whole_answers(stream: bytes) -> int:
    """How many answers at the start of `stream` are complete (each framed by Content-Length,
    or a 101 head, after which the connection is a tunnel; counting stops at the first that is
    neither)."""
    count, rest = 0, stream
    while b"\r\n\r\n" in rest:
        head, rest = rest.split(b"\r\n\r\n", 1)
        if head.startswith((b"HTTP/1.1 101 ", b"HTTP/1.0 101 ")):
            return count + 1
        lengths = [
            line.split(b":", 1)[1].strip()
            for line in head.split(b"\r\n")[1:]
            if line.lower().startswith(b"content-length:")
        ]
        if len(lengths) != 1 or not lengths[0].isdigit() or len(rest) < int(lengths[0]):
            break
        rest = rest[int(lengths[0]) :]
        count += 1
    return count


def status_of(response: bytes) -> int:
    line = response.split(b"\r\n", 1)[0]
    parts = line.split(b" ")
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else -1


def statuses(response: bytes) -> list[int]:
    """Status codes of every response in a byte stream (a JSON body may end without CRLF)."""
    import re

    return [int(m) for m in re.findall(rb"(?:^|\n)HTTP/1\.[01] (\d{3}) ", response)]


class UnixHTTP(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float = 60) -> None:
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.path)
        self.sock = sock


def api(
    sock_path: str,
    method: str,
    target: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, bytes, dict[str, str]]:
    conn = UnixHTTP(sock_path)
    try:
        conn.request(method, target, body=body, headers=headers or {})
        response = conn.getresponse()
        data = response.read()
        return response.status, data, {k.lower(): v for k, v in response.getheaders()}
    finally:
        conn.close()
