"""TLS for trustpull's HTTPS session: system roots plus `$DOCKER_CONFIG/tls/<host:port>/`.

Verification is never off and TLS 1.2 is the floor (dct.md §1.5; docker turns verification off for
loopback registries, trustpull does not). The directory is read the way docker's
`ReadCertsDirectory` reads it.
"""

from __future__ import annotations

import functools
import ssl
import threading
from pathlib import Path

import certifi

from trust.errors import ConfigError, InputError

__all__ = ["ca_directory", "tls_context"]


def ca_directory(docker_config: Path, netloc: str) -> Path:
    """Where the CA (`*.crt`) and client certificate of `netloc` (host[:port]) are looked for."""
    return docker_config / "tls" / netloc


def tls_context(docker_config: Path, netloc: str) -> ssl.SSLContext:
    """The TLS context for a trust server, built once per process for the same certificate files.

    Building one costs ~40 ms of CPU (the system store); `trustpull check` opens a session per
    repository. The key includes each file's name, inode, size, mtime and ctime, so a changed CA
    is reloaded (also one rewritten with its size and mtime put back: its ctime moves).
    One build at a time: the sessions `check` and trust.prefetch open at once in several threads
    would otherwise all miss the cache together and each build the same context.
    """
    if not netloc or netloc in (".", "..") or "/" in netloc or "\\" in netloc:
        raise InputError(f"invalid trust server host {netloc!r}")
    directory = docker_config / "tls" / netloc
    try:
        stamp = tuple(
            sorted(
                (e.name, i.st_ino, i.st_size, i.st_mtime_ns, i.st_ctime_ns)
                for e, i in ((e, e.stat()) for e in directory.iterdir())
            )
        )
    except OSError:
        stamp = ()
    with _build_lock:
        return _cached_tls_context(str(docker_config), netloc, stamp)


_build_lock = threading.Lock()


@functools.lru_cache(maxsize=64)
def _cached_tls_context(
    docker_config: str, netloc: str, stamp: tuple[tuple[str, int, int, int, int], ...]
) -> ssl.SSLContext:
    return _build_tls_context(Path(docker_config), netloc)


def _build_tls_context(docker_config: Path, netloc: str) -> ssl.SSLContext:
    """System and certifi roots plus `<docker_config>/tls/<host[:port]>/` (dct.md §1.5).

    Mirrors docker's `ReadCertsDirectory`: `*.crt` are extra CAs (added, not replacing), each
    `*.cert` needs its `*.key` and vice versa. TLS 1.2 is the floor; verification is never off.
    """
    if not netloc or netloc in (".", "..") or "/" in netloc or "\\" in netloc:
        raise InputError(f"invalid trust server host {netloc!r}")
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    if not context.cert_store_stats().get("x509_ca"):
        # Docker trusts the system roots; certifi only stands in where the system has none
        # (loading both cost ~0.1 s of CPU per run for nothing).
        context.load_verify_locations(cafile=certifi.where())
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    directory = docker_config / "tls" / netloc
    try:
        names = sorted(entry.name for entry in directory.iterdir())
    except FileNotFoundError:
        return context
    except OSError as exc:
        raise ConfigError(
            f"{directory}: cannot read certificate directory: {exc.strerror}"
        ) from None
    present = set(names)
    for name in names:
        path = directory / name
        if name.endswith(".crt"):
            try:
                context.load_verify_locations(cafile=str(path))
            except (ssl.SSLError, OSError, ValueError) as exc:
                raise ConfigError(f"{path}: not a usable CA certificate: {exc}") from None
        elif name.endswith(".cert"):
            key_name = name[: -len(".cert")] + ".key"
            if key_name not in present:
                raise ConfigError(
                    f"missing key {key_name} for client certificate {name}. "
                    "CA certificates must use the extension .crt"
                )
            try:
                # The password callback stops OpenSSL from prompting on a terminal.
                context.load_cert_chain(str(path), str(directory / key_name), password=lambda: b"")
            except (ssl.SSLError, OSError, ValueError) as exc:
                raise ConfigError(
                    f"{path}: not a usable client certificate and key: {exc}"
                ) from None
        elif name.endswith(".key"):
            cert_name = name[: -len(".key")] + ".cert"
            if cert_name not in present:
                raise ConfigError(f"missing client certificate {cert_name} for key {name}")
    return context
