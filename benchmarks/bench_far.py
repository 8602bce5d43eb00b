"""Issue 13's table in one run: trustpull vs the docker CLI 28, local and with a far trust server.

Starts `fixtures.stack.Stack`, publishes `bench/app:1.0` with a trusted `docker push`, and puts
`benchmarks.delayproxy.DelayProxy` (loopback, `--delay-ms` each way, default 25 ms: a 50 ms round
trip) in front of notary-server. "local" talks to notary-server directly, "far" through the
proxy; the registry and dockerd are local either way (only the trust server is far). Each tool and
each distance has its own DOCKER_CONFIG, warmed by one untimed run of every command, so every
case is a *warm* trust cache. Cases, interleaved run by run (the side that goes first alternates),
median of --runs:

* `trustpull --version` / `--help` vs `docker --version` / `--help` (and `python -c pass`);
* `trustpull resolve IMG` vs `docker trust inspect IMG`;
* `trustpull inspect IMG` vs `docker trust inspect IMG`;
* trusted pull of a present image: `trustpull IMG` vs `DOCKER_CONTENT_TRUST=1 docker pull IMG`;
* `trustpull check -q -o json` of `--tags` tags in each of `--repos` repositories vs as many
  sequential `docker trust inspect` (default 20 images in 10 repositories), and `--big-repos`
  repositories (default 50, so 100 images) — warm, local and far.

Wall time is the whole command; CPU is user+system of the command (the docker CLI only, never
dockerd). Per-image CPU is given for the batch cases.

    python -m benchmarks.bench_far [--runs 5] [--delay-ms 25] [--repos 10] [--big-repos 50]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence

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
from benchmarks.delayproxy import DelayProxy

Case = tuple[list[str], dict[str, str], list[str], dict[str, str]]


def _sequential(argvs: Sequence[list[str]], env: dict[str, str]) -> tuple[float, float]:
    wall = cpu = 0.0
    for argv in argvs:
        w, c, _ = run_timed(argv, env)
        wall, cpu = wall + w, cpu + c
    return wall, cpu


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_far", description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--delay-ms", type=float, default=25.0)
    parser.add_argument("--repos", type=int, default=10)
    parser.add_argument("--big-repos", type=int, default=50)
    parser.add_argument("--tags", type=int, default=2)
    parser.add_argument("--batch-runs", type=int, default=3)
    args = parser.parse_args(argv)

    from fixtures.stack import (
        DOCKER_CLI,
        Stack,
        docker,
        ensure_installed,
        make_image,
    )

    ensure_installed()
    print(f"# bench_far — {machine_line()}")
    with Stack() as stack:
        assert stack.registry is not None and stack.notary is not None
        notary = stack.notary
        work = stack.dir / "bench"
        publisher_dir = work / "publisher"
        publisher = stack.docker_env(publisher_dir)
        signing = {**publisher, "DOCKER_CONTENT_TRUST": "1"}
        host = stack.registry.host
        image = f"{host}/bench/app:1.0"
        make_image(stack, image, b"trustpull far benchmark\n", env=publisher)
        docker("push", "--", image, env=signing)

        # Batch repositories: one tag by a trusted docker push, the others by notary add+publish.
        began = time.perf_counter()
        repos = [f"{host}/batch/app{i:03d}" for i in range(max(args.repos, args.big_repos))]
        publish(stack, repos, args.tags, publisher_dir)
        print(
            f"setup: {image} and {len(repos)} repositories × {args.tags} signed tags in "
            f"{time.perf_counter() - began:.1f} s"
        )

        with DelayProxy(("127.0.0.1", notary.port), delay=args.delay_ms / 1000) as proxy:
            print(f"far: notary-server through {proxy.address}, {args.delay_ms:g} ms each way")

            def env_for(name: str, far: bool) -> dict[str, str]:
                env = stack.docker_env(work / name)
                if far:
                    tls = work / name / "tls" / f"127.0.0.1:{proxy.port}"
                    tls.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(notary.ca_path, tls / "ca.crt")
                    env["DOCKER_CONTENT_TRUST_SERVER"] = f"https://127.0.0.1:{proxy.port}"
                return env

            tp, dk = TRUSTPULL, [DOCKER_CLI]
            on = {"DOCKER_CONTENT_TRUST": "1"}
            cases: dict[str, Case] = {}
            base_env = env_for("plain", False)
            cases["interpreter floor: `python -c pass` (vs `docker --version`)"] = (
                [sys.executable, "-c", "pass"],
                base_env,
                [*dk, "--version"],
                base_env,
            )
            cases["`--version`"] = ([*tp, "--version"], base_env, [*dk, "--version"], base_env)
            cases["`--help`"] = ([*tp, "--help"], base_env, [*dk, "--help"], base_env)
            for where in ("local", "far"):
                far = where == "far"
                tpe, dke = env_for(f"tp-{where}", far), env_for(f"dk-{where}", far)
                inspect = [*dk, "trust", "inspect", image]
                cases[f"`resolve` vs `docker trust inspect`, {where}"] = (
                    [*tp, "resolve", image],
                    tpe,
                    inspect,
                    dke,
                )
                cases[f"`inspect` vs `docker trust inspect`, {where}"] = (
                    [*tp, "inspect", image],
                    tpe,
                    inspect,
                    dke,
                )
                cases[f"trusted pull, present, vs trusted `docker pull`, {where}"] = (
                    [*tp, image],
                    {**tpe, **on},
                    [*dk, "pull", image],
                    {**dke, **on},
                )
            for _name, (tpa, tpe_, dka, dke_) in cases.items():  # warm caches, pull the image
                run_timed(tpa, tpe_)
                run_timed(dka, dke_)

            walls: dict[str, tuple[list[float], list[float]]] = {n: ([], []) for n in cases}
            cpus: dict[str, tuple[list[float], list[float]]] = {n: ([], []) for n in cases}
            for run in range(args.runs):
                for name, (tpa, tpe_, dka, dke_) in cases.items():
                    order = [(0, tpa, tpe_), (1, dka, dke_)]
                    if run % 2:
                        order.reverse()
                    for side, argv_, env_ in order:
                        wall, cpu, _ = run_timed(argv_, env_)
                        walls[name][side].append(wall)
                        cpus[name][side].append(cpu)
                print(f"run {run + 1}/{args.runs} done", file=sys.stderr, flush=True)

            rows = []
            for name in cases:
                a, b = median(walls[name][0]), median(walls[name][1])
                rows.append(
                    [
                        name,
                        fmt_ms(a),
                        fmt_ms(b),
                        fmt_ratio(a, b),
                        fmt_ms(median(cpus[name][0])),
                        fmt_ms(median(cpus[name][1])),
                        f"{min(walls[name][0]) * 1000:.0f}–{max(walls[name][0]) * 1000:.0f}",
                    ]
                )
            print(f"\nWarm trust caches, median of {args.runs} runs:\n")
            print_table(
                [
                    "case",
                    "trustpull wall",
                    "docker wall",
                    "ratio",
                    "trustpull CPU",
                    "docker CPU",
                    "trustpull range ms",
                ],
                rows,
            )

            batch_rows = []
            for count in (args.repos, args.big_repos):
                refs = [f"{r}:t{t}" for r in repos[:count] for t in range(args.tags)]
                for where in ("local", "far"):
                    far = where == "far"
                    tpe, dke = env_for(f"tpb-{where}", far), env_for(f"dkb-{where}", far)
                    check_argv = [*tp, "check", "-q", "-o", "json", *refs]
                    inspects = [[DOCKER_CLI, "trust", "inspect", ref] for ref in refs]

                    def tp_run(
                        env: dict[str, str] = tpe, argv_: list[str] = check_argv
                    ) -> tuple[float, float]:
                        wall, cpu, proc = run_timed(argv_, env)
                        items = json.loads(proc.stdout)
                        assert all(i["verdict"] == "pass" for i in items), proc.stdout[:2000]
                        return wall, cpu

                    def dk_run(
                        env: dict[str, str] = dke, argvs: list[list[str]] = inspects
                    ) -> tuple[float, float]:
                        return _sequential(argvs, env)

                    runners: list[tuple[str, Callable[[], tuple[float, float]]]] = [
                        ("trustpull check", tp_run),
                        ("docker trust inspect ×N", dk_run),
                    ]
                    for _label, fn in runners:
                        fn()  # warm
                    got: dict[str, list[tuple[float, float]]] = {}
                    for _ in range(args.batch_runs):
                        for label, fn in runners:
                            got.setdefault(label, []).append(fn())
                    tp_wall = median([w for w, _ in got["trustpull check"]])
                    dk_wall = median([w for w, _ in got["docker trust inspect ×N"]])
                    for label, values in got.items():
                        wall = median([w for w, _ in values])
                        cpu = median([c for _, c in values])
                        batch_rows.append(
                            [
                                f"{len(refs)} images in {count} repositories, {where}",
                                label,
                                fmt_ms(wall),
                                fmt_ratio(tp_wall, dk_wall) if label == "trustpull check" else "",
                                fmt_ms(cpu),
                                fmt_ms(cpu / len(refs)),
                            ]
                        )
                    print(f"batch {len(refs)} {where} done", file=sys.stderr, flush=True)
            print(f"\n`check` (warm), median of {args.batch_runs} runs:\n")
            print_table(
                ["case", "command", "wall", "ratio", "CPU", "CPU per image"],
                batch_rows,
            )
            print(f"\nconnections through the proxy: {proxy.connections}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("DOCKER_CLI_HINTS", "false")
    sys.exit(main())
