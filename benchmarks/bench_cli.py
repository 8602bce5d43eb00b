"""Wall time of trustpull's commands against the docker CLI 28, on one real stack in one run.

Starts `fixtures.stack.Stack` (dockerd + docker-registry + notary-server on loopback), publishes
one tiny image signed with the docker CLI (`DOCKER_CONTENT_TRUST=1 docker push`), then times,
median of --runs (default 7), the cases interleaved run by run so drift hits both sides alike:

* `trustpull --version`, `trustpull --help` (and `docker --version` for scale);
* plain pull, `DOCKER_CONTENT_TRUST=0 trustpull IMG` vs `docker pull IMG`: "fresh" (the image is
  removed with `docker rmi` before each run, untimed) and "present" (already pulled);
* trusted pull with a warm trust cache, `trustpull IMG` vs `DOCKER_CONTENT_TRUST=1 docker pull
  IMG`, fresh and present. trustpull and docker each have their own DOCKER_CONFIG (so their own
  trust cache), warmed by one untimed pull.

Then start-up weight: `python -X importtime -c "import cli.main"` (top cumulative imports) and
which heavy modules (docker SDK, cryptography, requests/urllib3, the Notary client) are loaded
after `trustpull --help` and `--version`.

    python -m benchmarks.bench_cli [--runs 7]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Callable

from benchmarks._common import (
    TRUSTPULL,
    checkout_environ,
    fmt_ms,
    fmt_ratio,
    machine_line,
    median,
    print_table,
    run_timed,
)

HEAVY_MODULES = (
    "docker",
    "cryptography",
    "requests",
    "urllib3",
    "certifi",
    "ssl",
    "trust.config",
    "trust.notary.client",
    "trust.notary.trusted_set",
    "trust.http.session",
    "trust.engine",
    "trust.trusted_pull",
)


def modules_after(args: list[str] | None) -> list[str]:
    """Which HEAVY_MODULES are in sys.modules after `trustpull ARGS` (run in a subprocess);
    `None`: after a bare interpreter start (what site-packages' .pth files import anyway)."""
    run = (
        ""
        if args is None
        else (
            f"sys.argv = ['trustpull', *{args!r}]\n"
            "from cli.main import main\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
        )
    )
    code = (
        "import sys, json\n"
        f"{run}"
        f"heavy = [m for m in {HEAVY_MODULES!r} if m in sys.modules]\n"
        "print('MODULES=' + json.dumps(heavy))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env=checkout_environ(),
    )
    line = next(x for x in proc.stdout.splitlines() if x.startswith("MODULES="))
    loaded: list[str] = json.loads(line.removeprefix("MODULES="))
    return loaded


def importtime(module: str, top: int = 10) -> list[tuple[int, int, str]]:
    """`python -X importtime -c "import MODULE"`: the `top` entries by cumulative µs."""
    runs = []
    for _ in range(3):  # first run may pay for .pyc writes; keep the last
        proc = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", f"import {module}"],
            capture_output=True,
            text=True,
            check=True,
            env=checkout_environ(),
        )
        runs.append(proc.stderr)
    entries = []
    for line in runs[-1].splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        self_us, cumulative, name = line.split(":", 1)[1].split("|")
        entries.append((int(self_us), int(cumulative), name.strip()))
    total = max((c for _, c, n in entries if n == module), default=0)
    print(f'\n`python -X importtime -c "import {module}"`: {total / 1000:.1f} ms cumulative')
    best = sorted(entries, key=lambda e: -e[1])[:top]
    print_table(
        ["module", "self", "cumulative"],
        [[n, f"{s / 1000:.1f} ms", f"{c / 1000:.1f} ms"] for s, c, n in best],
    )
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_cli", description=__doc__)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args(argv)

    from fixtures.stack import DOCKER_CLI, Stack, docker, ensure_installed, make_image

    ensure_installed()
    print(f"# bench_cli — {machine_line()}")
    print(f"trustpull: {' '.join(TRUSTPULL)}; docker CLI: {DOCKER_CLI}")
    with Stack() as stack:
        assert stack.registry is not None
        print(f"stack up in {stack.startup_seconds:.1f}s")
        work = stack.dir / "bench"
        publisher = stack.docker_env(work / "publisher")
        repo = f"{stack.registry.host}/bench/app"
        image = f"{repo}:1.0"
        digest = make_image(stack, image, b"trustpull benchmark image\n", env=publisher)
        docker("push", "--", image, env={**publisher, "DOCKER_CONTENT_TRUST": "1"})
        docker("rmi", "-f", "--", image, env=publisher)
        print(f"image {image} ({digest}), signed with the docker CLI")

        tp_env = stack.docker_env(work / "trustpull")
        dk_env = stack.docker_env(work / "docker")
        plain = {"DOCKER_CONTENT_TRUST": "0"}
        trusted = {"DOCKER_CONTENT_TRUST": "1"}

        def rmi() -> None:
            docker("rmi", "-f", "--", image, env=publisher, check=False)
            left = docker("image", "ls", "-q", "--", repo, env=publisher).stdout.strip()
            if left:
                docker("rmi", "-f", *left.split(), env=publisher)

        def nothing() -> None:
            return None

        tp = TRUSTPULL
        dk = [DOCKER_CLI]
        # name → (setup, trustpull argv, trustpull env, docker argv, docker env)
        cases: dict[
            str, tuple[Callable[[], None], list[str], dict[str, str], list[str], dict[str, str]]
        ] = {
            "interpreter floor: `python -c pass`": (
                nothing,
                [sys.executable, "-c", "pass"],
                tp_env,
                [*dk, "--version"],
                dk_env,
            ),
            "--version": (nothing, [*tp, "--version"], tp_env, [*dk, "--version"], dk_env),
            "--help": (nothing, [*tp, "--help"], tp_env, [*dk, "--help"], dk_env),
            "plain pull, fresh": (
                rmi,
                [*tp, image],
                {**tp_env, **plain},
                [*dk, "pull", image],
                {**dk_env, **plain},
            ),
            "plain pull, present": (
                nothing,
                [*tp, image],
                {**tp_env, **plain},
                [*dk, "pull", image],
                {**dk_env, **plain},
            ),
            "trusted pull (warm cache), fresh": (
                rmi,
                [*tp, image],
                {**tp_env, **trusted},
                [*dk, "pull", image],
                {**dk_env, **trusted},
            ),
            "trusted pull (warm cache), present": (
                nothing,
                [*tp, image],
                {**tp_env, **trusted},
                [*dk, "pull", image],
                {**dk_env, **trusted},
            ),
        }
        # Warm both trust caches (and check that both pulls work at all).
        for _, tp_argv, tp_e, dk_argv, dk_e in (cases["trusted pull (warm cache), fresh"],):
            run_timed(tp_argv, tp_e)
            run_timed(dk_argv, dk_e)
        times: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in cases}
        cpus: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in cases}
        for run in range(args.runs):
            for name, (setup, tp_argv, tp_e, dk_argv, dk_e) in cases.items():
                # Alternate who goes first so neither side always gets the warmer daemon.
                order = [(0, tp_argv, tp_e), (1, dk_argv, dk_e)]
                if run % 2:
                    order.reverse()
                for side, argv_, env_ in order:
                    setup()
                    elapsed, cpu, _proc = run_timed(argv_, env_)
                    times[name][side].append(elapsed)
                    cpus[name][side].append(cpu)
            print(f"run {run + 1}/{args.runs} done", file=sys.stderr, flush=True)
        rmi()

        print(f"\nMedian of {args.runs} runs; wall time of the whole command, and its CPU time:")
        rows = []
        for name, (tp_times, dk_times) in times.items():
            a, b = median(tp_times), median(dk_times)
            ca, cb = median(cpus[name][0]), median(cpus[name][1])
            rows.append(
                [
                    name,
                    fmt_ms(a),
                    fmt_ms(b),
                    fmt_ratio(a, b),
                    fmt_ms(ca),
                    fmt_ms(cb),
                    f"{min(tp_times) * 1000:.0f}–{max(tp_times) * 1000:.0f}",
                    f"{min(dk_times) * 1000:.0f}–{max(dk_times) * 1000:.0f}",
                ]
            )
        print_table(
            [
                "case",
                "trustpull wall",
                "docker wall",
                "ratio",
                "trustpull CPU",
                "docker CPU",
                "trustpull range ms",
                "docker range ms",
            ],
            rows,
        )
        print(
            "(docker side: `docker --version`, `docker --help`, `docker pull IMG` with the same "
            "DOCKER_CONTENT_TRUST; CPU includes the client only, not dockerd)"
        )

    importtime("cli.main")
    importtime("trust.trusted_pull", top=12)
    bare = modules_after(None)
    print(
        f"\nheavy modules a bare `python -c pass` already has (site .pth files): {bare or 'none'}"
    )
    for args_ in (["--help"], ["--version"]):
        loaded = [m for m in modules_after(args_) if m not in bare]
        print(f"after `trustpull {' '.join(args_)}`, heavy modules it added: {loaded or 'none'}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("DOCKER_CLI_HINTS", "false")
    sys.exit(main())
