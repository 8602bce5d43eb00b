"""A real TUF repository for tests, built with python-tuf's Metadata API and served over HTTPS.

`TufRepo` keeps root/targets/snapshot/timestamp (and delegated roles) in memory, signs them with
fresh ECDSA keys and publishes them as a consistent-snapshot repository into a directory:
`N.root.json`, `N.<role>.json`, `timestamp.json` (plus unversioned copies). `StaticHttps` serves
that directory on loopback with a throw-away CA, which trustpull verifies like any other CA from
`<DOCKER_CONFIG>/tls/<host:port>/`. Attacks are made by editing the published files directly.
"""

from __future__ import annotations

import datetime as dt
import functools
import shutil
import ssl
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote

from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import (
    DelegatedRole,
    Delegations,
    Metadata,
    MetaFile,
    Root,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)

from fixtures.tlsgen import make_ca

__all__ = ["StaticHttps", "TufRepo"]

TOP_LEVEL = ("root", "targets", "snapshot", "timestamp")


def _in(days: float) -> dt.datetime:
    return (dt.datetime.now(dt.UTC) + dt.timedelta(days=days)).replace(microsecond=0)


class TufRepo:
    """A TUF repository under construction; `publish()` writes the current state."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.signers: dict[str, list[CryptoSigner]] = {}
        self.root: Metadata[Root] = Metadata(Root(expires=_in(365), consistent_snapshot=True))
        for role in TOP_LEVEL:
            signer = CryptoSigner.generate_ecdsa()
            self.root.signed.add_key(signer.public_key, role)
            self.signers[role] = [signer]
        self.roles: dict[str, Metadata[Targets]] = {"targets": Metadata(Targets(expires=_in(30)))}
        self.snapshot: Metadata[Snapshot] = Metadata(Snapshot(expires=_in(7)))
        self.timestamp: Metadata[Timestamp] = Metadata(Timestamp(expires=_in(1)))
        self._dirty: set[str] = {"targets"}
        self._written: set[str] = set()
        self._write_root()

    # ------------------------------------------------------------------ building

    @property
    def initial_root(self) -> bytes:
        """`1.root.json`: what a user saves as the trusted root of the source."""
        return (self.dir / "1.root.json").read_bytes()

    def add_tag(
        self,
        gun: str,
        tag: str,
        digest: str,
        length: int = 525,
        *,
        role: str = "targets",
        custom: dict[str, Any] | None = None,
    ) -> None:
        path = f"{gun}:{tag}"
        extra = {"custom": custom} if custom is not None else None
        hashes = {"sha256": digest.removeprefix("sha256:")}
        self.roles[role].signed.targets[path] = TargetFile(length, hashes, path, extra)
        self._dirty.add(role)

    def remove_tag(self, gun: str, tag: str, *, role: str = "targets") -> None:
        del self.roles[role].signed.targets[f"{gun}:{tag}"]
        self._dirty.add(role)

    def delegate(
        self,
        parent: str,
        name: str,
        *,
        paths: list[str] | None = None,
        hash_prefixes: list[str] | None = None,
        terminating: bool = False,
        threshold: int = 1,
        keys: int = 1,
    ) -> list[CryptoSigner]:
        """Delegate from `parent` to a new role `name` with fresh keys; returns its signers."""
        signed = self.roles[parent].signed
        if signed.delegations is None:
            signed.delegations = Delegations(keys={}, roles={})
        assert signed.delegations.roles is not None
        signed.delegations.roles[name] = DelegatedRole(
            name, [], threshold, terminating, paths, hash_prefixes
        )
        signers = [CryptoSigner.generate_ecdsa() for _ in range(keys)]
        for signer in signers:
            signed.add_key(signer.public_key, name)
        self.signers[name] = signers
        self.roles[name] = Metadata(Targets(expires=_in(30)))
        self._dirty.update({parent, name})
        return signers

    # ---------------------------------------------------------------- publishing

    def _sign(self, metadata: Metadata[Any], signers: list[CryptoSigner]) -> None:
        metadata.signatures.clear()
        for signer in signers:
            metadata.sign(signer, append=True)

    def _write(self, name: str, data: bytes) -> None:
        (self.dir / name).write_bytes(data)

    def _write_root(self, extra_signers: list[CryptoSigner] | None = None) -> None:
        self._sign(self.root, self.signers["root"] + (extra_signers or []))
        data = self.root.to_bytes()
        self._write(f"{self.root.signed.version}.root.json", data)
        self._write("root.json", data)

    def publish(
        self,
        *,
        timestamp_expires: dt.datetime | None = None,
        sign_targets_with: dict[str, list[CryptoSigner]] | None = None,
    ) -> None:
        """Write changed targets roles, then a new snapshot and timestamp (versions + 1)."""
        for role in sorted(self._dirty):
            metadata = self.roles[role]
            if role in self._written:
                metadata.signed.version += 1
            signers = (sign_targets_with or {}).get(role, self.signers[role])
            self._sign(metadata, signers)
            data = metadata.to_bytes()
            name = quote(role, "")
            self._write(f"{metadata.signed.version}.{name}.json", data)
            self._write(f"{name}.json", data)
            self.snapshot.signed.meta[f"{role}.json"] = MetaFile(version=metadata.signed.version)
            self._written.add(role)
        self._dirty.clear()
        if "snapshot" in self._written:
            self.snapshot.signed.version += 1
        self._sign(self.snapshot, self.signers["snapshot"])
        data = self.snapshot.to_bytes()
        self._write(f"{self.snapshot.signed.version}.snapshot.json", data)
        self._write("snapshot.json", data)
        self._written.add("snapshot")
        if "timestamp" in self._written:
            self.timestamp.signed.version += 1
        self.timestamp.signed.snapshot_meta = MetaFile(version=self.snapshot.signed.version)
        self.timestamp.signed.expires = timestamp_expires or _in(1)
        self._sign(self.timestamp, self.signers["timestamp"])
        self._write("timestamp.json", self.timestamp.to_bytes())
        self._written.add("timestamp")

    def rotate(self, *roles: str, signed_by_old_root: bool = True) -> None:
        """A new root version where each of `roles` has a fresh key (the old one revoked).

        The new root is signed by the new root keys and, unless `signed_by_old_root` is False,
        by the previous root keys too, as the TUF spec requires for the client to accept it.
        Rotated targets/snapshot/timestamp are re-signed at the next `publish()`.
        """
        old_root_signers = list(self.signers["root"])
        for role in roles:
            for keyid in list(self.root.signed.roles[role].keyids):
                self.root.signed.revoke_key(keyid, role)
            signer = CryptoSigner.generate_ecdsa()
            self.root.signed.add_key(signer.public_key, role)
            self.signers[role] = [signer]
            if role == "targets":
                self._dirty.add("targets")
        self.root.signed.version += 1
        if "root" in roles and signed_by_old_root:
            self._write_root(extra_signers=old_root_signers)
        else:
            self._write_root()

    def files(self) -> dict[str, bytes]:
        """Every published file, to replay later (rollback, freeze)."""
        return {p.name: p.read_bytes() for p in self.dir.iterdir() if p.is_file()}

    def restore(self, files: dict[str, bytes]) -> None:
        for name, data in files.items():
            self._write(name, data)


class _Handler(SimpleHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        forced = self.server.forced.get(self.path)
        if forced is not None:
            self.send_response(forced)
            if forced == 401:
                self.send_header("WWW-Authenticate", 'Basic realm="tuf"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        super().do_GET()

    def log_message(self, format: str, *args: Any) -> None:
        self.server.paths.append(self.path)


class _Server(ThreadingHTTPServer):
    paths: list[str]
    forced: dict[str, int]


class StaticHttps:
    """Serves a directory over HTTPS on 127.0.0.1 (a fresh CA per server); a context manager."""

    def __init__(self, directory: Path, tls_dir: Path) -> None:
        ca = make_ca(tls_dir)
        cert = ca.issue_server(tls_dir)
        self.ca_path = ca.cert_path
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(cert.cert_path), str(cert.key_path))
        handler = functools.partial(_Handler, directory=str(directory))
        self._server = _Server(("127.0.0.1", 0), handler)
        self._server.paths = []
        self._server.forced = {}
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self.port: int = self._server.server_address[1]
        self.url = f"https://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def paths(self) -> list[str]:
        """Request paths served so far (any status)."""
        return self._server.paths

    def force(self, path: str, status: int) -> None:
        """Answer `status` (empty body) for `path`, e.g. "/timestamp.json" → 403."""
        self._server.forced[path] = status

    def install_ca(self, docker_config: Path) -> None:
        """Trust this server's CA the docker way: `<DOCKER_CONFIG>/tls/127.0.0.1:PORT/ca.crt`."""
        directory = docker_config / "tls" / f"127.0.0.1:{self.port}"
        directory.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.ca_path, directory / "ca.crt")

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def __enter__(self) -> StaticHttps:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
