"""Requests to the Notary server per resolve, and resolve wall time, trustpull vs the docker CLI.

Starts `fixtures.stack.Stack` and publishes, with the docker CLI, two signed repositories:

* `bench/plain`: one tag signed at the first trusted push (root, targets, snapshot, timestamp;
  no delegation), the case /work/shared/stack.md describes;
* `bench/deleg`: the same plus `docker trust signer add` and `docker trust sign` of a second tag,
  so `targets/releases` and `targets/alice` exist.

Request counts come from notary-server's own request log (`stack.notary.request_log()`), read
before and after each command. For each repository and client, "cold" is a fresh DOCKER_CONFIG
(empty trust cache), "warm" the same command again on the cache the cold run left. Clients:
`trustpull resolve`, `trustpull` (trusted pull), `docker trust inspect`, trusted `docker pull`.

Then wall time, median of --runs: `trustpull resolve IMG` vs `docker trust inspect IMG`, warm
and cold (a cold run gets a new DOCKER_CONFIG, made before the clock starts).

    python -m benchmarks.bench_notary [--runs 7]
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections.abc import Callable

from benchmarks._common import (
    TRUSTPULL,
    fmt_ms,
    fmt_ratio,
    machine_line,
    median,
    print_table,
    run_timed,
)

_HEX = re.compile(r"\.([0-9a-f]{64})\.json$")


def _short(uri: str) -> str:
    """`/v2/<gun>/_trust/tuf/snapshot.<hex>.json` → `snapshot.<hex8>…json`."""
    name = uri.split("/_trust/tuf/", 1)[1] if "/_trust/tuf/" in uri else uri
    return _HEX.sub(lambda m: f".{m.group(1)[:8]}….json", name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_notary", description=__doc__)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args(argv)

    from fixtures.stack import DOCKER_CLI, Stack, docker, ensure_installed, make_image

    ensure_installed()
    print(f"# bench_notary — {machine_line()}")
    with Stack() as stack:
        assert stack.registry is not None and stack.notary is not None
        notary = stack.notary
        work = stack.dir / "bench"
        publisher = stack.docker_env(work / "publisher")
        signing = {**publisher, "DOCKER_CONTENT_TRUST": "1"}
        host = stack.registry.host

        plain = f"{host}/bench/plain"
        make_image(stack, f"{plain}:1.0", b"plain 1.0\n", env=publisher)
        docker("push", "--", f"{plain}:1.0", env=signing)

        deleg = f"{host}/bench/deleg"
        make_image(stack, f"{deleg}:1.0", b"deleg 1.0\n", env=publisher)
        docker("push", "--", f"{deleg}:1.0", env=signing)
        keys = work / "keys"
        keys.mkdir(parents=True, exist_ok=True)
        docker("trust", "key", "generate", "alice", "--dir", str(keys), env=signing)
        docker(
            "trust", "signer", "add", "--key", str(keys / "alice.pub"), "alice", deleg, env=signing
        )
        make_image(stack, f"{deleg}:2.0", b"deleg 2.0\n", env=publisher)
        docker("trust", "sign", f"{deleg}:2.0", env=signing)
        docker("rmi", "-f", f"{plain}:1.0", f"{deleg}:1.0", f"{deleg}:2.0", env=publisher)

        counter = [0]

        def fresh_config(label: str) -> dict[str, str]:
            counter[0] += 1
            return stack.docker_env(work / f"{label}-{counter[0]}")

        def settle() -> int:
            """The request log length once it stopped growing (the server logs after answering)."""
            count = len(notary.request_log())
            deadline = time.monotonic() + 2.0
            while time.monotonic() < deadline:
                time.sleep(0.15)
                again = len(notary.request_log())
                if again == count:
                    break
                count = again
            return count

        def requests_of(run: Callable[[], object]) -> list[str]:
            before = settle()
            run()
            settle()
            return [f"{e.uri}" for e in notary.request_log()[before:]]

        def rmi() -> None:
            docker("rmi", "-f", f"{plain}:1.0", f"{deleg}:2.0", env=publisher, check=False)

        trusted = {"DOCKER_CONTENT_TRUST": "1"}
        clients: dict[str, Callable[[str, dict[str, str]], list[str]]] = {
            "trustpull resolve": lambda img, env: [*TRUSTPULL, "resolve", img],
            "trustpull (trusted pull)": lambda img, env: [*TRUSTPULL, img],
            "docker trust inspect": lambda img, env: [DOCKER_CLI, "trust", "inspect", img],
            "docker pull (trust on)": lambda img, env: [DOCKER_CLI, "pull", img],
        }
        print("\nRequests to notary-server per command (from its request log):")
        rows = []
        sequences: dict[str, list[str]] = {}
        for image in (f"{plain}:1.0", f"{deleg}:2.0"):
            label = "bench/plain:1.0" if image.startswith(plain) else "bench/deleg:2.0"
            for client, argv_of in clients.items():
                env = {**fresh_config("count"), **trusted}
                counts = []
                for phase in ("cold", "warm"):
                    rmi()
                    argv = argv_of(image, env)

                    def command(argv: list[str] = argv, e: dict[str, str] = env) -> None:
                        run_timed(argv, e)

                    uris = requests_of(command)
                    counts.append(len(uris))
                    sequences[f"{label} {client} {phase}"] = uris
                rows.append([label, client, str(counts[0]), str(counts[1])])
        print_table(["repository", "command", "cold cache", "warm cache"], rows)
        print("\nThe requests themselves, in order:")
        for key, uris in sequences.items():
            print(f"- {key}: {', '.join(_short(u) for u in uris)}")

        print(f"\nWall time, median of {args.runs} runs (interleaved):")
        rows = []
        for image in (f"{plain}:1.0", f"{deleg}:2.0"):
            label = "bench/plain:1.0" if image.startswith(plain) else "bench/deleg:2.0"
            tp_warm_env = {**fresh_config("tw"), **trusted}
            dk_warm_env = {**fresh_config("dw"), **trusted}
            tp_argv = [*TRUSTPULL, "resolve", image]
            dk_argv = [DOCKER_CLI, "trust", "inspect", image]
            run_timed(tp_argv, tp_warm_env)
            run_timed(dk_argv, dk_warm_env)
            samples: dict[str, list[float]] = {k: [] for k in ("tw", "dw", "tc", "dc")}
            cpu: dict[str, list[float]] = {k: [] for k in samples}
            for run in range(args.runs):
                plan: list[tuple[str, list[str], dict[str, str]]] = [
                    ("tw", tp_argv, tp_warm_env),
                    ("dw", dk_argv, dk_warm_env),
                    ("tc", tp_argv, {**fresh_config("tc"), **trusted}),
                    ("dc", dk_argv, {**fresh_config("dc"), **trusted}),
                ]
                if run % 2:
                    plan.reverse()
                for key, argv_, env_ in plan:
                    wall, cpu_s, _ = run_timed(argv_, env_)
                    samples[key].append(wall)
                    cpu[key].append(cpu_s)
            for phase, tp_key, dk_key in (("warm", "tw", "dw"), ("cold", "tc", "dc")):
                a, b = median(samples[tp_key]), median(samples[dk_key])
                rows.append(
                    [
                        label,
                        phase,
                        fmt_ms(a),
                        fmt_ms(b),
                        fmt_ratio(a, b),
                        fmt_ms(median(cpu[tp_key])),
                        fmt_ms(median(cpu[dk_key])),
                    ]
                )
        print_table(
            [
                "repository",
                "cache",
                "trustpull resolve",
                "docker trust inspect",
                "ratio",
                "trustpull CPU",
                "docker CPU",
            ],
            rows,
        )
        rmi()
    return 0


if __name__ == "__main__":
    sys.exit(main())
