"""`trustpull check` vs as many sequential `docker trust inspect`: issue 13's batch shapes.

Starts `fixtures.stack.Stack` and publishes `--big-repos` repositories (default 50), each with
`--tags` signed tags (default 2): the first by a trusted `docker push` (which creates the trust
data), the others with the notary client (`notary add` + one `notary publish`, so setup stays
short). Two shapes, as issue 13 states them:

* `--repos` × `--tags` images (default 20 images in 10 repositories: the first 10);
* `--big-repos` × `--tags` images (default 100 images over 50 repositories).

For each shape: `trustpull check -q -o json REF...` (one process, `--workers`) vs a loop of
`docker trust inspect REF` (one process per image, as a script would do it), cold (a fresh
DOCKER_CONFIG: empty trust cache) and warm (the same command again), the two tools alternating
which goes first run by run; median of `--runs`; wall, CPU (user+system of the command) and CPU
per image; and the requests notary-server logged (first run; far: also the TCP connections
opened through the delay proxy). Every check result must pass.

"far" repeats this with every byte to notary-server delayed `--delay-ms` each way by
`benchmarks.delayproxy.DelayProxy` (loopback; median of `--far-runs`); `--no-far` measures only
"local".

    python -m benchmarks.bench_check [--runs 3] [--repos 10] [--big-repos 50] [--tags 2]
                                     [--far-runs 1] [--delay-ms 25] [--no-far]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

from benchmarks._common import (
    TRUSTPULL,
    fmt_ms,
    fmt_ratio,
    machine_line,
    median,
    print_table,
    publish,
    run_timed,
)

Timing = tuple[float, float]


@contextlib.contextmanager
def far_proxy(port: int, delay_ms: float, wanted: bool) -> Iterator[Any | None]:
    """`benchmarks.delayproxy.DelayProxy` in front of notary-server, or None when not wanted."""
    if not wanted:
        yield None
        return
    from benchmarks.delayproxy import DelayProxy

    with DelayProxy(("127.0.0.1", port), delay=delay_ms / 1000) as proxy:
        print(f"far: notary-server through {proxy.address}, {delay_ms:g} ms each way\n")
        yield proxy


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_check", description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--far-runs", type=int, default=1)
    parser.add_argument("--repos", type=int, default=10)
    parser.add_argument("--big-repos", type=int, default=50)
    parser.add_argument("--tags", type=int, default=2)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--delay-ms", type=float, default=25.0)
    parser.add_argument("--no-far", action="store_true")
    args = parser.parse_args(argv)

    from fixtures.stack import DOCKER_CLI, Stack, ensure_installed

    ensure_installed()
    print(f"# bench_check — {machine_line()}")
    with Stack() as stack:
        assert stack.registry is not None and stack.notary is not None
        notary = stack.notary
        work = stack.dir / "bench"
        began = time.perf_counter()
        host = stack.registry.host
        repos = [f"{host}/bench/app{i:03d}" for i in range(max(args.repos, args.big_repos))]
        publish(stack, repos, args.tags, work / "publisher")
        print(
            f"\nsetup: {len(repos)} repositories × {args.tags} signed tags in "
            f"{time.perf_counter() - began:.1f} s\n"
        )
        counter = [0]

        def settle() -> int:
            """Request count once notary-server's log stops growing."""
            last = -1
            while True:
                now = len(notary.request_log())
                if now == last:
                    return now
                last = now
                time.sleep(0.2)

        rows: list[list[str]] = []
        request_rows: list[list[str]] = []
        with far_proxy(notary.port, args.delay_ms, not args.no_far) as proxy:
            places = [("local", None, args.runs)]
            if proxy is not None:
                places.append(("far", proxy, args.far_runs))

            def fresh(proxy: Any | None) -> dict[str, str]:
                counter[0] += 1
                directory = work / f"consumer-{counter[0]}"
                env: dict[str, str] = stack.docker_env(directory)
                if proxy is not None:
                    tls = directory / "tls" / f"127.0.0.1:{proxy.port}"
                    tls.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(notary.ca_path, tls / "ca.crt")
                    env["DOCKER_CONTENT_TRUST_SERVER"] = f"https://127.0.0.1:{proxy.port}"
                return env

            for count in dict.fromkeys((args.repos, args.big_repos)):
                refs = [f"{r}:t{t}" for r in repos[:count] for t in range(args.tags)]
                label = f"{len(refs)} images in {count} repositories"

                def tp(env: dict[str, str], refs: list[str] = refs) -> Timing:
                    argv_ = [*TRUSTPULL, "check", "-q", "-o", "json", "-j", str(args.workers)]
                    wall, cpu, proc = run_timed([*argv_, *refs], env)
                    items = json.loads(proc.stdout)
                    assert len(items) == len(refs), proc.stdout[:2000]
                    assert all(i["verdict"] == "pass" for i in items), proc.stdout[:2000]
                    return wall, cpu

                def dk(env: dict[str, str], refs: list[str] = refs) -> Timing:
                    wall = cpu = 0.0
                    for ref in refs:
                        w, c, _ = run_timed([DOCKER_CLI, "trust", "inspect", ref], env)
                        wall, cpu = wall + w, cpu + c
                    return wall, cpu

                tools: list[tuple[str, Callable[[dict[str, str]], Timing]]] = [
                    ("trustpull check", tp),
                    (f"docker trust inspect ×{len(refs)}", dk),
                ]
                for where, place_proxy, runs in places:
                    results: dict[tuple[str, str], list[Timing]] = {}
                    for run in range(runs):
                        order = tools if run % 2 == 0 else tools[::-1]
                        for name, fn in order:
                            env = fresh(place_proxy)
                            for state in ("cold", "warm"):
                                before = settle() if run == 0 else 0
                                opened = place_proxy.connections if place_proxy else 0
                                results.setdefault((name, state), []).append(fn(env))
                                if run == 0:
                                    count_ = settle() - before
                                    request_rows.append(
                                        [
                                            f"{label}, {where}",
                                            name,
                                            state,
                                            str(count_),
                                            f"{count_ / len(refs):.2f}",
                                            str(place_proxy.connections - opened)
                                            if place_proxy
                                            else "",
                                        ]
                                    )
                        print(f"{label}, {where}: run {run + 1}/{runs}", file=sys.stderr)
                    for state in ("cold", "warm"):
                        walls = {n: median([v[0] for v in results[(n, state)]]) for n, _ in tools}
                        for name, _ in tools:
                            values = results[(name, state)]
                            wall = walls[name]
                            cpu = median([v[1] for v in values])
                            ratio = (
                                fmt_ratio(wall, walls[tools[1][0]])
                                if name == "trustpull check"
                                else ""
                            )
                            rows.append(
                                [
                                    f"{label}, {where}",
                                    name,
                                    state,
                                    fmt_ms(wall),
                                    ratio,
                                    fmt_ms(cpu),
                                    fmt_ms(cpu / len(refs)),
                                    f"{min(v[0] for v in values) * 1000:.0f}–"
                                    f"{max(v[0] for v in values) * 1000:.0f}",
                                ]
                            )

        far_note = f", {args.far_runs} far" if len(places) > 1 else " (local only)"
        print(f"\nWall and CPU, median of {args.runs} runs{far_note}:\n")
        print_table(
            ["case", "command", "cache", "wall", "ratio", "CPU", "CPU per image", "wall range ms"],
            rows,
        )
        print("\nRequests to notary-server (first run):\n")
        print_table(
            ["case", "command", "cache", "requests", "per image", "connections (far)"],
            request_rows,
        )
        print(f"\n{machine_line()}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("DOCKER_CLI_HINTS", "false")
    sys.exit(main())
