"""`trustpull proxy`: pass-through overhead, stream throughput and memory, concurrency, warm pulls.

Starts one fixtures.stack.Stack and the proxy in front of its engine (the same setup as the
integration tests, tests/integration/proxy_world.py), then prints markdown tables:

1. per-request overhead: `GET /_ping`, `GET /containers/json`, `GET /images/<id>/json` over a
   keep-alive connection and `GET /_ping` on a new connection each time (median of N, direct
   socket vs proxy), and the docker CLI's
   `docker version` / `docker ps` / `docker inspect` (median wall time, direct vs proxy);
2. `docker save` and `docker load` of a ~200 MB image through the proxy vs direct (MB/s, the
   median of `--rounds` alternating runs, and the ratio), the proxy's CPU time per operation
   and its peak RSS (VmHWM) before and after;
3. 200 concurrent clients, each with its own connection, 5 requests each: all answered?, wall;
4. a pull of an already verified, present tag (`docker pull` through the proxy; in a whole run
   on the fresh proxy and again after sections 1-3): trust-server
   requests counted at the server (notary-server's own request log) and proxy CPU time
   (utime+stime of the proxy process from /proc, whose 10 ms ticks are why the steady state is
   the mean over `--warm-runs` pulls), for the 1st pull (cold cache), the 2nd and the rest;
5. with `--big-mb N` (spec X56 asks for 5 GiB: `--big-mb 5120`; off by default, it takes
   minutes and ~6×N of disk): `docker load` of an N MiB image archive, `docker save` of it to
   /dev/null, `docker cp` of an N MiB file into a container and back out to /dev/null, and a
   classic `docker build` whose context is that file (`FROM` a signed image, no RUN or COPY),
   direct vs proxy (medians of `--rounds`, alternated), with the proxy's peak RSS.

    python -m benchmarks.bench_proxy [--runs 50] [--size-mb 200] [--rounds 3] [--big-mb 5120]
                                     [--warm-runs 30] [--only warm|passthrough]
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
    return sum(_cpu_split(pid))


def _cpu_split(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of process `pid`, from /proc (clock ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / ticks, int(fields[12]) / ticks


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


def _fresh_connection_times(sock: str, runs: int) -> list[float]:
    """`GET /_ping` on a new connection each time (what each docker CLI command pays)."""
    times = []
    for _ in range(runs + 5):
        began = time.perf_counter()
        conn = UnixHTTP(sock)
        conn.request("GET", "/_ping")
        conn.getresponse().read()
        conn.close()
        times.append(time.perf_counter() - began)
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
    parser.add_argument(
        "--only",
        choices=["warm", "passthrough"],
        default=None,
        help="only the warm pulls, or only the pass-through overhead (section 1)",
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--big-mb", type=int, default=0)
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
    if args.only is None:  # on a fresh proxy, and again at the end, after sections 1-3
        _warm(world, stack, args)
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
    direct = statistics.median(_fresh_connection_times(engine_sock, args.runs))
    via = statistics.median(_fresh_connection_times(proxy.socket, args.runs))
    rows.append(
        [
            "GET /_ping, new connection each",
            f"{direct * 1000:.2f}",
            f"{via * 1000:.2f}",
            f"{(via - direct) * 1000:+.2f}",
        ]
    )
    direct_env = world.env(world.client_config, DOCKER_HOST=f"unix://{engine_sock}")
    proxy_env = world.env(world.client_config, DOCKER_HOST=proxy.docker_host)
    for label, cli in (
        ("docker version", ["version"]),
        ("docker ps", ["ps"]),
        ("docker inspect", ["inspect", image_id]),
    ):
        direct_times, via_times = [], []
        for run in range(args.cli_runs):  # interleaved, so that a change of load hits both
            order = [(direct_env, direct_times), (proxy_env, via_times)]
            for env, times in order if run % 2 else order[::-1]:
                times += _cli_times(env, cli, 1)
        added = statistics.median(v - d for d, v in zip(direct_times, via_times, strict=True))
        rows.append(
            [
                label,
                f"{statistics.median(direct_times) * 1000:.1f}",
                f"{statistics.median(via_times) * 1000:.1f}",
                f"{added * 1000:+.1f}",
            ]
        )
    print(
        "\n### Pass-through overhead (median ms; for the docker CLI, runs interleaved and "
        "'added' the median of the paired differences)\n"
    )
    print_table(["request", "direct", "via proxy", "added"], rows)
    if args.only == "passthrough":
        return 0

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
    rss_before = _rss_kib(loader.proc.pid)
    envs = {
        "direct": direct_env,
        "via proxy": world.env(world.client_config, DOCKER_HOST=loader.docker_host),
    }
    speeds: dict[tuple[str, str], list[float]] = {}
    proxy_cpu: dict[str, list[float]] = {"save": [], "load": []}
    size_mb = 0.0
    for _ in range(args.rounds):  # alternating, so that the machine's load hits both alike
        for label, env in envs.items():
            for op, cli in (
                ("save", ["save", "-o", str(archive), big]),
                ("load", ["load", "-i", str(archive)]),
            ):
                if op == "load":
                    world.engine("rmi", big)
                before = _cpu_seconds(loader.proc.pid)
                began = time.perf_counter()
                subprocess.run([DOCKER_CLI, *cli], env=env, check=True, capture_output=True)
                took = time.perf_counter() - began
                if label == "via proxy":
                    proxy_cpu[op].append(_cpu_seconds(loader.proc.pid) - before)
                size_mb = archive.stat().st_size / 1e6
                speeds.setdefault((label, op), []).append(size_mb / took)
    rss_after = _rss_kib(loader.proc.pid)
    archive.unlink()
    world.engine("rmi", big, check=False)

    def med(label: str, op: str) -> float:
        return statistics.median(speeds[(label, op)])

    rows = [
        [label, f"{size_mb:.0f}", f"{med(label, 'save'):.0f}", f"{med(label, 'load'):.0f}"]
        for label in envs
    ]
    rows.append(
        [
            "proxy / direct",
            "",
            f"{med('via proxy', 'save') / med('direct', 'save'):.2f}×",
            f"{med('via proxy', 'load') / med('direct', 'load'):.2f}×",
        ]
    )
    print(f"\n### docker save / docker load (MB/s, median of {args.rounds})\n")
    print_table(["path", "archive MB", "save MB/s", "load MB/s"], rows)
    print(
        "\nall runs (MB/s): "
        + "; ".join(
            f"{label} {op} " + " ".join(f"{v:.0f}" for v in values)
            for (label, op), values in speeds.items()
        )
    )
    print(
        f"proxy CPU per operation (utime+stime): save "
        f"{statistics.median(proxy_cpu['save']):.2f} s, "
        f"load {statistics.median(proxy_cpu['load']):.2f} s"
    )
    print(
        f"proxy memory: RSS {rss_before[0] / 1024:.1f} MiB before, {rss_after[0] / 1024:.1f} MiB "
        f"after; peak (VmHWM) {rss_after[1] / 1024:.1f} MiB"
    )
    if args.big_mb:
        _big_streams(world, args.big_mb, envs, loader.proc.pid, args.rounds)
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

    return _warm(world, stack, args, after=True)


def _pull_cost(
    world: World, stack: Stack, env: dict[str, str], signed: str
) -> tuple[int, float, float]:
    """One `docker pull` through the proxy: (notary-server requests, proxy CPU seconds, of
    which system time)."""
    proxy = world.proxy
    assert stack.notary is not None and proxy.proc is not None
    before_log = len(stack.notary.request_log())
    before_user, before_sys = _cpu_split(proxy.proc.pid)
    subprocess.run([DOCKER_CLI, "pull", signed], env=env, check=True, capture_output=True)
    deadline = time.monotonic() + 2.0
    count = len(stack.notary.request_log())
    while time.monotonic() < deadline:  # notary-server logs after answering
        time.sleep(0.1)
        again = len(stack.notary.request_log())
        if again == count:
            break
        count = again
    user, system = _cpu_split(proxy.proc.pid)
    return count - before_log, user - before_user + system - before_sys, system - before_sys


def _warm(world: World, stack: Stack, args: argparse.Namespace, after: bool = False) -> int:
    """4. a pull of an already verified, present tag: requests and proxy CPU per pull; in a
    whole run once on the fresh proxy and once `after` sections 1-3 have used it."""
    proxy = world.proxy
    proxy_env = world.env(world.client_config, DOCKER_HOST=proxy.docker_host)
    signed = f"{world.repo}:2.0"  # not pulled by the other sections: the 1st pull is cold
    rows = []
    for label in () if after else ("1st (cold trust cache)", "2nd"):
        requests, cpu, system = _pull_cost(world, stack, proxy_env, signed)
        rows.append([label, str(requests), f"{cpu * 1000:.0f}", f"{system * 1000:.0f}"])
    counts = []
    cpu_total = sys_total = 0.0
    for _ in range(args.warm_runs):
        requests, cpu, system = _pull_cost(world, stack, proxy_env, signed)
        counts.append(requests)
        cpu_total += cpu
        sys_total += system
    rows.append(
        [
            "next pulls (mean)" if after else f"3rd..{args.warm_runs + 2}th (mean)",
            f"{statistics.mean(counts):.2f} (min {min(counts)}, max {max(counts)})",
            f"{cpu_total / args.warm_runs * 1000:.1f}",
            f"{sys_total / args.warm_runs * 1000:.1f}",
        ]
    )
    when = " after sections 1-3 on the same proxy" if after else ""
    print(f"\n### Warm verified pull of a present tag (docker pull via the proxy){when}\n")
    print_table(["pull", "trust-server requests", "proxy CPU ms", "of which system"], rows)
    return 0


def _import_streamed(env: dict[str, str], name: str, size_mb: int) -> None:
    """`docker import -` of one N MiB file, the tar written on the fly (no copy on disk)."""
    info = tarfile.TarInfo("payload.bin")
    info.size = size_mb * 1024 * 1024
    block = os.urandom(1024 * 1024)
    proc = subprocess.Popen(
        [DOCKER_CLI, "import", "-", name], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert proc.stdin is not None
    proc.stdin.write(info.tobuf())
    for _ in range(size_mb):
        proc.stdin.write(block)
    proc.stdin.write(b"\0" * 1024)
    proc.stdin.close()
    if proc.wait() != 0:
        raise RuntimeError("docker import failed")


def _big_streams(
    world: World, size_mb: int, envs: dict[str, dict[str, str]], loader_pid: int, rounds: int
) -> None:
    """X56: save, load, cp in, cp out and a classic build context of N MiB, direct vs proxy
    (the median of `rounds` runs each, the two paths alternated), and the proxy's peak RSS."""
    direct = envs["direct"]
    name = f"bench-huge{time.monotonic_ns()}:1"
    _import_streamed(direct, name, size_mb)
    context = world.tmp / "huge-context"
    context.mkdir()
    host_file = context / "huge.bin"
    block = os.urandom(1024 * 1024)
    with open(host_file, "wb") as handle:
        for _ in range(size_mb):
            handle.write(block)
    signed = f"{world.repo}:1.0"
    # No RUN and no COPY: the whole context is still sent, read and re-written by the proxy.
    (context / "Dockerfile").write_text(f"FROM {signed}\nLABEL bench=x56\n")
    archive = world.tmp / "huge.tar"
    subprocess.run(
        [DOCKER_CLI, "save", "-o", str(archive), name], env=direct, check=True, capture_output=True
    )
    world.engine("rmi", name)
    cid = world.engine("run", "-d", "--network", "none", signed, "sleep", "3600").stdout.strip()
    mb = size_mb * 1024 * 1024 / 1e6
    ops: tuple[tuple[str, list[str]], ...] = (
        ("load", ["load", "-i", str(archive)]),
        ("save", ["save", name]),
        ("cp in", ["cp", str(host_file), f"{cid}:/huge.bin"]),
        ("cp out", ["cp", f"{cid}:/huge.bin", "-"]),
        ("build context", ["build", "-q", "-t", f"bench-built{time.monotonic_ns()}", str(context)]),
    )
    speeds: dict[tuple[str, str], list[float]] = {}
    try:
        for run in range(rounds):
            order = list(envs.items())
            for label, env in order if run % 2 == 0 else order[::-1]:
                for op, cli in ops:
                    if op == "load":
                        world.engine("rmi", name, check=False)
                    began = time.perf_counter()
                    subprocess.run(
                        [DOCKER_CLI, *cli],
                        env={**env, "DOCKER_BUILDKIT": "0"},
                        check=True,
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.PIPE,
                    )
                    speeds.setdefault((label, op), []).append(mb / (time.perf_counter() - began))
    finally:
        world.engine("rm", "-f", cid, check=False)
        world.engine("rmi", name, check=False)
        host_file.unlink()
        archive.unlink()
    names = [op for op, _ in ops]
    rows = [
        [label, *(f"{statistics.median(speeds[(label, op)]):.0f}" for op in names)]
        for label in envs
    ]
    first, second = list(envs)

    def ratio(op: str) -> str:
        via = statistics.median(speeds[(second, op)])
        return f"{via / statistics.median(speeds[(first, op)]):.2f}×"

    rows.append(["proxy / direct", *(ratio(op) for op in names)])
    print(f"\n### Very large streams (X56): {size_mb} MiB, MB/s (median of {rounds})\n")
    print_table(["path", *(f"docker {op}" for op in names)], rows)
    print(f"\nproxy peak RSS (VmHWM) after all of it: {_rss_kib(loader_pid)[1] / 1024:.1f} MiB")


if __name__ == "__main__":
    sys.exit(main())
