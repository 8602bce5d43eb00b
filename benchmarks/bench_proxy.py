"""`trustpull proxy`: pass-through overhead, stream throughput and memory, concurrency, warm pulls.

Starts one fixtures.stack.Stack and the proxy in front of its engine (the same setup as the
integration tests, tests/integration/proxy_world.py), then prints markdown tables:

1. per-request overhead: `GET /_ping`, `GET /containers/json`, `GET /images/<id>/json` over a
   keep-alive connection (median of N, direct socket vs proxy), and the docker CLI's
   `docker version` / `docker ps` / `docker inspect` (median wall time, direct vs proxy);
2. `docker save` and `docker load` of a ~200 MB image through the proxy vs direct (MB/s), with
   the proxy's peak RSS (VmHWM) before and after;
3. 200 concurrent clients, each with its own connection, 5 requests each: all answered?, wall;
4. a pull of an already verified, present tag (`docker pull` through the proxy): trust-server
   requests counted at the server (notary-server's own request log) and proxy CPU time
   (utime+stime of the proxy process from /proc, whose 10 ms ticks are why the steady state is
   the mean over `--warm-runs` pulls), for the 1st pull (cold cache), the 2nd and the rest.

    python -m benchmarks.bench_proxy [--runs 50] [--size-mb 200] [--warm-runs 30] [--only warm]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

from benchmarks._common import machine_line, print_table
from fixtures.stack import DOCKER_CLI, Stack, ensure_installed
from tests.integration.proxy_world import UnixHTTP, World


def _rss_kib(pid: int) -> tuple[int, int]:
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    values = {line.split(":")[0]: int(line.split()[1]) for line in status if line.startswith("Vm")}
    return values.get("VmRSS", 0), values.get("VmHWM", 0)


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def _request_times(sock: str, path: str, runs: int) -> list[float]:
    conn = UnixHTTP(sock)
    times = []
    try:
        for _ in range(runs + 5):
            began = time.perf_counter()
            conn.request("GET", path)
            response = conn.getresponse()
            response.read()
            times.append(time.perf_counter() - began)
    finally:
        conn.close()
    return times[5:]


def _cli_times(env: dict[str, str], args: list[str], runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        subprocess.run([DOCKER_CLI, *args], env=env, capture_output=True, check=True)
        times.append(time.perf_counter() - began)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--cli-runs", type=int, default=9)
    parser.add_argument("--size-mb", type=int, default=200)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--warm-runs", type=int, default=30)
    parser.add_argument("--only", choices=["warm"], default=None, help="only the warm pulls")
    args = parser.parse_args(argv)
    ensure_installed()
    with Stack() as stack:
        world = World(stack)
        try:
            return _run(world, stack, args)
        finally:
            world.close()


def _run(world: World, stack: Stack, args: argparse.Namespace) -> int:
    print(machine_line())
    proxy = world.proxy
    assert proxy.proc is not None and stack.dockerd is not None
    if args.only == "warm":
        return _warm(world, stack, args)
    engine_sock = str(stack.dockerd.socket_path)
    signed = f"{world.repo}:1.0"
    world.client("pull", signed)
    image_id = str((world.image(signed) or {})["Id"])

    # 1. per-request overhead
    rows = []
    for label, path in (
        ("GET /_ping", "/_ping"),
        ("GET /v1.41/containers/json", "/v1.41/containers/json"),
        ("GET /v1.41/images/<id>/json", f"/v1.41/images/{image_id}/json"),
    ):
        direct = statistics.median(_request_times(engine_sock, path, args.runs))
        via = statistics.median(_request_times(proxy.socket, path, args.runs))
        rows.append(
            [label, f"{direct * 1000:.2f}", f"{via * 1000:.2f}", f"{(via - direct) * 1000:+.2f}"]
        )
    direct_env = world.env(world.client_config, DOCKER_HOST=f"unix://{engine_sock}")
    proxy_env = world.env(world.client_config, DOCKER_HOST=proxy.docker_host)
    for label, cli in (
        ("docker version", ["version"]),
        ("docker ps", ["ps"]),
        ("docker inspect", ["inspect", image_id]),
    ):
        direct = statistics.median(_cli_times(direct_env, cli, args.cli_runs))
        via = statistics.median(_cli_times(proxy_env, cli, args.cli_runs))
        rows.append(
            [label, f"{direct * 1000:.1f}", f"{via * 1000:.1f}", f"{(via - direct) * 1000:+.1f}"]
        )
    print("\n### Pass-through overhead (median ms)\n")
    print_table(["request", "direct", "via proxy", "added"], rows)

    # 2. save / load of a ~200 MB image
    big_tar = world.tmp / "big-rootfs.tar"
    payload = world.tmp / "payload.bin"
    with open(payload, "wb") as handle:
        for _ in range(args.size_mb):
            handle.write(os.urandom(1024 * 1024))
    with tarfile.open(big_tar, "w") as tar:
        tar.add(payload, arcname="payload.bin")
    payload.unlink()
    big = f"bench-big{time.monotonic_ns()}:1"
    world.engine("import", str(big_tar), big)
    big_tar.unlink()
    loader = world.start_proxy("[proxy]\nallow_load = true\n")
    assert loader.proc is not None
    archive = world.tmp / "big.tar"
    rows = []
    rss_before = _rss_kib(loader.proc.pid)
    for label, env in (
        ("direct", direct_env),
        ("via proxy", world.env(world.client_config, DOCKER_HOST=loader.docker_host)),
    ):
        began = time.perf_counter()
        subprocess.run(
            [DOCKER_CLI, "save", "-o", str(archive), big], env=env, check=True, capture_output=True
        )
        save_s = time.perf_counter() - began
        size_mb = archive.stat().st_size / 1e6
        world.engine("rmi", big)
        began = time.perf_counter()
        subprocess.run(
            [DOCKER_CLI, "load", "-i", str(archive)], env=env, check=True, capture_output=True
        )
        load_s = time.perf_counter() - began
        rows.append([label, f"{size_mb:.0f}", f"{size_mb / save_s:.0f}", f"{size_mb / load_s:.0f}"])
    rss_after = _rss_kib(loader.proc.pid)
    archive.unlink()
    world.engine("rmi", big, check=False)
    print("\n### docker save / docker load (MB/s)\n")
    print_table(["path", "archive MB", "save MB/s", "load MB/s"], rows)
    print(
        f"\nproxy memory: RSS {rss_before[0] / 1024:.1f} MiB before, {rss_after[0] / 1024:.1f} MiB "
        f"after; peak (VmHWM) {rss_after[1] / 1024:.1f} MiB"
    )
    loader.stop()

    # 3. concurrent clients
    ok = []
    errors: list[str] = []
    barrier = threading.Barrier(args.clients)

    def client() -> None:
        try:
            conn = UnixHTTP(proxy.socket, timeout=60)
            conn.connect()
            barrier.wait(30)
            for _ in range(5):
                conn.request("GET", "/v1.41/containers/json")
                response = conn.getresponse()
                response.read()
                ok.append(response.status == 200)
            conn.close()
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=client) for _ in range(args.clients)]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - began
    print("\n### Concurrent clients\n")
    print_table(
        ["clients", "requests answered 200", "errors", "wall s", "proxy peak RSS MiB"],
        [
            [
                str(args.clients),
                f"{sum(ok)} / {args.clients * 5}",
                str(len(errors)),
                f"{wall:.2f}",
                f"{_rss_kib(proxy.proc.pid)[1] / 1024:.1f}",
            ]
        ],
    )
    if errors:
        print(f"\nfirst error: {errors[0]}")

    return _warm(world, stack, args)


def _pull_cost(world: World, stack: Stack, env: dict[str, str], signed: str) -> tuple[int, float]:
    """One `docker pull` through the proxy: (notary-server requests, proxy CPU seconds)."""
    proxy = world.proxy
    assert stack.notary is not None and proxy.proc is not None
    before_log = len(stack.notary.request_log())
    before_cpu = _cpu_seconds(proxy.proc.pid)
    subprocess.run([DOCKER_CLI, "pull", signed], env=env, check=True, capture_output=True)
    deadline = time.monotonic() + 2.0
    count = len(stack.notary.request_log())
    while time.monotonic() < deadline:  # notary-server logs after answering
        time.sleep(0.1)
        again = len(stack.notary.request_log())
        if again == count:
            break
        count = again
    return count - before_log, _cpu_seconds(proxy.proc.pid) - before_cpu


def _warm(world: World, stack: Stack, args: argparse.Namespace) -> int:
    """4. a pull of an already verified, present tag: requests and proxy CPU per pull."""
    proxy = world.proxy
    proxy_env = world.env(world.client_config, DOCKER_HOST=proxy.docker_host)
    signed = f"{world.repo}:2.0"  # not pulled by the other sections: the 1st pull is cold
    rows = []
    for label in ("1st (cold trust cache)", "2nd"):
        requests, cpu = _pull_cost(world, stack, proxy_env, signed)
        rows.append([label, str(requests), f"{cpu * 1000:.0f}"])
    counts = []
    cpu_total = 0.0
    for _ in range(args.warm_runs):
        requests, cpu = _pull_cost(world, stack, proxy_env, signed)
        counts.append(requests)
        cpu_total += cpu
    rows.append(
        [
            f"3rd..{args.warm_runs + 2}th (mean)",
            f"{statistics.mean(counts):.2f} (min {min(counts)}, max {max(counts)})",
            f"{cpu_total / args.warm_runs * 1000:.1f}",
        ]
    )
    print("\n### Warm verified pull of a present tag (docker pull via the proxy)\n")
    print_table(["pull", "trust-server requests", "proxy CPU ms"], rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
