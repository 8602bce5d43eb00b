"""A loopback TCP proxy that delays every byte by a fixed time each way: a "far" trust server.

Used by the benchmarks' `--delay-ms` option (issue 13: "far" = every byte to the trust server
delayed 25 ms each way, a 50 ms round trip). It forwards bytes unchanged, so TLS runs end to end
between the client and the real server (the proxy sees only ciphertext). Latency, not bandwidth:
each chunk is held until `delay` after it was read and then written, so chunks in flight overlap,
as on a long link. A TCP handshake over a real link costs one round trip before the client can
send; the kernel completes `connect()` to this proxy at once, so the proxy holds the client's
first bytes until a round trip (2 × `delay`) after it accepted the connection, then `delay` more,
like every byte. Only a client that computes between `connect()` and its first send (a TLS
client sends its ClientHello at once) gains by this: its computing overlaps the "handshake".

Loopback only: both the listening address and the target must be loopback addresses.

    python -m benchmarks.delayproxy --target 127.0.0.1:4443 [--listen 127.0.0.1:0] [--delay-ms 25]

In code: `with DelayProxy(("127.0.0.1", port), delay=0.025) as proxy: ... proxy.port ...`.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import ipaddress
import socket
import sys
import threading
import time

__all__ = ["DelayProxy"]

_CHUNK = 65536


def _loopback(host: str) -> None:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"not an IP address: {host!r} (loopback addresses only)") from None
    if not address.is_loopback:
        raise ValueError(f"{host} is not a loopback address: this proxy stays on loopback")


class _Pipe:
    """One direction of one connection: read → hold `delay` → write, in order."""

    def __init__(
        self, source: socket.socket, sink: socket.socket, delay: float, not_before: float = 0.0
    ) -> None:
        self.source, self.sink, self.delay = source, sink, delay
        self.not_before = not_before  # monotonic time: no byte is read as sent before it
        self.queue: collections.deque[tuple[float, bytes]] = collections.deque()
        self.ready = threading.Condition()
        self.done = False

    def start(self) -> list[threading.Thread]:
        threads = [
            threading.Thread(target=self._read, daemon=True, name="delay-read"),
            threading.Thread(target=self._write, daemon=True, name="delay-write"),
        ]
        for thread in threads:
            thread.start()
        return threads

    def _read(self) -> None:
        try:
            while True:
                data = self.source.recv(_CHUNK)
                if not data:
                    break
                with self.ready:
                    sent = max(time.monotonic(), self.not_before)
                    self.queue.append((sent + self.delay, data))
                    self.ready.notify()
        except OSError:
            pass
        with self.ready:
            self.queue.append((time.monotonic() + self.delay, b""))  # EOF, delayed like data
            self.ready.notify()

    def _write(self) -> None:
        try:
            while True:
                with self.ready:
                    while not self.queue:
                        self.ready.wait()
                    due, data = self.queue.popleft()
                wait = due - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                if not data:
                    with contextlib.suppress(OSError):
                        self.sink.shutdown(socket.SHUT_WR)
                    return
                self.sink.sendall(data)
        except OSError:
            with contextlib.suppress(OSError):
                self.source.shutdown(socket.SHUT_RD)


class DelayProxy:
    """Listen on loopback, forward each connection to `target` with `delay` seconds each way."""

    def __init__(
        self,
        target: tuple[str, int],
        *,
        delay: float = 0.025,
        listen: tuple[str, int] = ("127.0.0.1", 0),
    ) -> None:
        _loopback(target[0])
        _loopback(listen[0])
        self.target, self.delay = target, delay
        self._server = socket.create_server(listen)
        self.host, self.port = self._server.getsockname()[:2]
        self.connections = 0
        self._closed = False
        self._thread = threading.Thread(target=self._accept, daemon=True, name="delay-accept")

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> DelayProxy:
        self._thread.start()
        return self

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self._server.close()

    def __enter__(self) -> DelayProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(
                target=self._serve, args=(client,), daemon=True, name="delay-conn"
            ).start()

    def _serve(self, client: socket.socket) -> None:
        handshake_done = time.monotonic() + 2 * self.delay  # the TCP handshake's round trip
        try:
            upstream = socket.create_connection(self.target)
        except OSError:
            client.close()
            return
        for sock in (client, upstream):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threads = [
            *_Pipe(client, upstream, self.delay, handshake_done).start(),
            *_Pipe(upstream, client, self.delay).start(),
        ]
        for thread in threads:
            thread.join()
        client.close()
        upstream.close()


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.delayproxy", description=__doc__)
    parser.add_argument("--target", required=True, help="HOST:PORT of the real server (loopback)")
    parser.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT to listen on")
    parser.add_argument("--delay-ms", type=float, default=25.0, help="delay each way (ms)")
    args = parser.parse_args(argv)
    proxy = DelayProxy(
        _address(args.target), delay=args.delay_ms / 1000, listen=_address(args.listen)
    )
    print(
        f"listening on {proxy.address} → {args.target}, {args.delay_ms:g} ms each way", flush=True
    )
    proxy.start()
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        proxy.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
