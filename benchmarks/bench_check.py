"""`trustpull check` over 20 and 100 signed images vs as many sequential `docker trust inspect`.

Starts `fixtures.stack.Stack` and publishes `--repos` repositories (default 20): each gets one
tag by a trusted `docker push` (which creates its trust data) and `--tags - 1` more signed with
the notary client (`notary add` + one `notary publish`, so setup stays short). Cases:

* 20 images: the first tag of each of the 20 repositories (20 trust updates either way);
* 100 images: every tag of every repository (20 repositories × 5 tags): `check` verifies each
  repository once and looks up its 5 tags in that data; docker runs 100 inspects.

For each case: `trustpull check -o json REF...` (one process, 8 workers) vs a loop of
`docker trust inspect REF` (one process per image, as a script would do it), cold (fresh
DOCKER_CONFIG, empty trust cache) and warm (the same again), and the requests notary-server
logged per image. Median of --runs.

    python -m benchmarks.bench_check [--runs 3] [--repos 20] [--tags 5]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from benchmarks._common import (
    TRUSTPULL,
    fmt_ms,
    fmt_ratio,
    machine_line,
    median,
    print_table,
    run_timed,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_check", description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--repos", type=int, default=20)
    parser.add_argument("--tags", type=int, default=5)
    args = parser.parse_args(argv)

    from fixtures.stack import (
        DOCKER_CLI,
        REPOSITORY_PASSPHRASE,
        ROOT_PASSPHRASE,
        Stack,
        docker,
        ensure_installed,
        make_image,
    )

    ensure_installed()
    print(f"# bench_check — {machine_line()}")
    with Stack() as stack:
        assert stack.registry is not None and stack.notary is not None
        notary = stack.notary
        work = stack.dir / "bench"
        publisher_dir = work / "publisher"
        publisher = stack.docker_env(publisher_dir)
        signing = {**publisher, "DOCKER_CONTENT_TRUST": "1"}
        notary_env = {
            **os.environ,
            "NOTARY_ROOT_PASSPHRASE": ROOT_PASSPHRASE,
            "NOTARY_TARGETS_PASSPHRASE": REPOSITORY_PASSPHRASE,
            "NOTARY_SNAPSHOT_PASSPHRASE": REPOSITORY_PASSPHRASE,
        }
        began = time.perf_counter()
        repos = [f"{stack.registry.host}/bench/app{i:03d}" for i in range(args.repos)]
        payload = work / "manifest.bin"
        for repo in repos:
            make_image(stack, f"{repo}:t0", f"{repo} t0\n".encode(), env=publisher)
            docker("push", "--", f"{repo}:t0", env=signing)
            docker("rmi", "-f", f"{repo}:t0", env=publisher)
            for tag in range(1, args.tags):
                payload.write_bytes(f"{repo} t{tag}\n".encode())
                base = ["notary", "-s", notary.url, "-d", str(publisher_dir / "trust")]
                base += ["--tlscacert", str(notary.ca_path)]
                import subprocess

                subprocess.run(
                    [*base, "add", repo, f"t{tag}", str(payload)],
                    env=notary_env,
                    check=True,
                    capture_output=True,
                )
            if args.tags > 1:
                subprocess.run(
                    [*base, "publish", repo], env=notary_env, check=True, capture_output=True
                )
        print(
            f"\nsetup: {len(repos)} repositories × {args.tags} signed tags in "
            f"{time.perf_counter() - began:.1f} s\n"
        )

        cases = {
            f"{len(repos)} images": [f"{r}:t0" for r in repos],
            f"{len(repos) * args.tags} images": [
                f"{r}:t{t}" for r in repos for t in range(args.tags)
            ],
        }
        counter = [0]

        def fresh() -> dict[str, str]:
            counter[0] += 1
            return stack.docker_env(work / f"consumer-{counter[0]}")

        def settle() -> int:
            """Request count once notary-server's log stops growing."""
            last = -1
            while True:
                now = len(notary.request_log())
                if now == last:
                    return now
                last = now
                time.sleep(0.2)

        rows = []
        requests_rows = []
        for label, refs in cases.items():
            results: dict[tuple[str, str], list[tuple[float, float]]] = {}
            reqs: dict[tuple[str, str], int] = {}

            def tp(env: dict[str, str], refs: list[str] = refs) -> tuple[float, float]:
                wall, cpu, proc = run_timed([*TRUSTPULL, "check", "-q", "-o", "json", *refs], env)
                items = json.loads(proc.stdout)
                assert all(i["verdict"] == "pass" for i in items), proc.stdout[:2000]
                return wall, cpu

            def dk(env: dict[str, str], refs: list[str] = refs) -> tuple[float, float]:
                wall = cpu = 0.0
                for ref in refs:
                    w, c, _ = run_timed([DOCKER_CLI, "trust", "inspect", ref], env)
                    wall, cpu = wall + w, cpu + c
                return wall, cpu

            for run in range(args.runs):
                for name, fn in (("trustpull check", tp), ("docker trust inspect ×N", dk)):
                    env = fresh()
                    for state in ("cold", "warm"):
                        before = settle()
                        results.setdefault((name, state), []).append(fn(env))
                        if run == 0:
                            reqs[(name, state)] = settle() - before
            for (name, state), values in results.items():
                wall = median([v[0] for v in values])
                cpu = median([v[1] for v in values])
                rows.append(
                    [label, name, state, fmt_ms(wall), fmt_ms(wall / len(refs)), fmt_ms(cpu)]
                )
            for (name, state), count in reqs.items():
                requests_rows.append([label, name, state, str(count), f"{count / len(refs):.2f}"])
            for state in ("cold", "warm"):
                tp_wall = median([v[0] for v in results[("trustpull check", state)]])
                dk_wall = median([v[0] for v in results[("docker trust inspect ×N", state)]])
                rows.append(
                    [label, "ratio trustpull/docker", state, fmt_ratio(tp_wall, dk_wall), "", ""]
                )

        print(f"Wall and CPU time, median of {args.runs} runs:\n")
        print_table(["case", "command", "cache", "wall", "wall per image", "CPU"], rows)
        print("\nRequests to notary-server (first run):\n")
        print_table(["case", "command", "cache", "requests", "per image"], requests_rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
