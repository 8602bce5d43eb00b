"""Pure verification cost of big repositories: `targets` with N tags + `targets/releases` with N.

For each size (default 1,000 and 10,000 tags per role, so the scaling is visible):

* `TrustedSet`: root (first use) → timestamp → snapshot → targets → targets/releases, bytes in
  memory, no I/O (median of --runs);
* `NotaryClient.update` against `fixtures.server.FixtureServer` over HTTPS, cold cache (a fresh
  DOCKER_CONFIG per run) and warm cache (the cache the cold run wrote);
* `lookup_tag` for a tag in `targets/releases`, one only in `targets`, and a missing one;
  `list_signed_tags` (what `-a` does) and `inspect_repository`;
* peak memory of one `TrustedSet` verification in a fresh subprocess: peak RSS (VmHWM) before/after,
  and tracemalloc's peak in a second subprocess (tracemalloc slows the run, so it is not timed);
* a cProfile of one cold TrustedSet run at the largest size, top functions by own time.

    python -m benchmarks.bench_verify [--tags 1000,10000] [--runs 5] [--no-profile]
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import hashlib
import io
import json
import os
import pstats
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from benchmarks._common import fmt_ms, machine_line, median, print_table

if TYPE_CHECKING:
    from fixtures.notarygen import Repo
    from trust.notary.trusted_set import TrustData

GUN = "registry.bench/org/big"
RELEASES = "targets/releases"
ROLE_FILES = ("root", "timestamp", "snapshot", "targets", RELEASES)


def _digest(tag: str) -> str:
    return hashlib.sha256(tag.encode()).hexdigest()


def build_repo(tags: int) -> Repo:
    """A RepoBuilder repo: `v<i>` in targets, `1.<i>` in targets/releases."""
    from fixtures.notarygen import RepoBuilder

    builder = RepoBuilder(GUN)
    for i in range(tags):
        builder.add_target(f"v{i}", _digest(f"v{i}"), 500 + i)
    builder.add_delegation(RELEASES)
    for i in range(tags):
        builder.add_target(f"1.{i}", _digest(f"1.{i}"), 700 + i, role=RELEASES)
    return builder.publish()


def role_bytes(repo: Repo) -> dict[str, bytes]:
    return {role: repo.role_bytes(role) for role in ROLE_FILES}


def verify_trusted_set(
    files: dict[str, bytes], now: dt.datetime, *, warm: bool = False
) -> TrustData:
    """One full verification through the pure TrustedSet; returns the TrustData.

    `warm` hands the same bytes in as the cache (what a warm NotaryClient run does): the
    cached root is the pin and every role's cached copy is checked for the rollback floor.
    """
    from trust.notary.trusted_set import TrustedSet

    cached = files if warm else {}
    ts = TrustedSet(GUN, files["root"], now=now, first_use=not warm)
    ts.update_timestamp(files["timestamp"], previous=cached.get("timestamp"))
    ts.update_snapshot(files["snapshot"], previous=cached.get("snapshot"))
    ts.update_targets(files["targets"], previous=cached.get("targets"))
    ts.update_delegation(RELEASES, files[RELEASES], previous=cached.get(RELEASES), required=True)
    return ts.result()


def _time_runs(func: Callable[[], object], runs: int) -> list[float]:
    return _time_runs_cpu(func, runs)[0]


def _time_runs_cpu(func: Callable[[], object], runs: int) -> tuple[list[float], list[float]]:
    """Wall and CPU (process_time: this process, all threads) seconds of each run."""
    walls, cpus = [], []
    for _ in range(runs):
        began, cpu = time.perf_counter(), time.process_time()
        func()
        walls.append(time.perf_counter() - began)
        cpus.append(time.process_time() - cpu)
    return walls, cpus


def _time_per_call(func: Callable[[], object], calls: int) -> float:
    """Per-call time of `calls` calls: the best of 7 batches (microseconds are at the mercy
    of other load on the machine; the minimum is the stable figure)."""
    batches = []
    for _ in range(7):
        began = time.perf_counter()
        for _ in range(calls):
            func()
        batches.append((time.perf_counter() - began) / calls)
    return min(batches)


# ------------------------------------------------------------------------ client over HTTPS


def _client_env(server_url: str, ca: Path, config: Path) -> dict[str, str]:
    port = server_url.rsplit(":", 1)[1]
    tls = config / "tls" / f"127.0.0.1:{port}"
    tls.mkdir(parents=True, exist_ok=True)
    (tls / "ca.crt").write_bytes(Path(ca).read_bytes())
    return {
        "DOCKER_CONFIG": str(config),
        "DOCKER_CONTENT_TRUST_SERVER": server_url,
        "HOME": str(config),
        "XDG_CONFIG_HOME": str(config / "xdg"),
    }


def client_times(repo: Repo, runs: int) -> tuple[list[float], list[float], list[int], list[int]]:
    """Cold and warm `NotaryClient.update` times and request counts against FixtureServer."""
    from fixtures.server import FixtureServer
    from trust.config import load_config
    from trust.notary.client import NotaryClient
    from trust.reference import parse

    ref = parse(f"{GUN}:1.0")
    cold, warm, cold_req, warm_req = [], [], [], []
    with FixtureServer({GUN: repo}) as server, tempfile.TemporaryDirectory() as tmp:
        for run in range(runs):
            config = Path(tmp) / f"cfg{run}"
            settings = load_config(_client_env(server.url, server.ca_path, config)).settings
            client = NotaryClient(settings, warn=lambda _text: None)
            server.clear_requests()
            began = time.perf_counter()
            client.update(ref)
            cold.append(time.perf_counter() - began)
            cold_req.append(len(server.requests))
            client = NotaryClient(settings, warn=lambda _text: None)
            server.clear_requests()
            began = time.perf_counter()
            client.update(ref)
            warm.append(time.perf_counter() - began)
            warm_req.append(len(server.requests))
    return cold, warm, cold_req, warm_req


# ------------------------------------------------------------------------ memory (subprocess)


def _hwm_kib() -> int:
    """Peak RSS of this process so far, KiB: VmHWM (reset at exec, unlike ru_maxrss, which
    Linux carries over from the parent through fork + exec); ru_maxrss where /proc is missing."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _child(directory: Path, use_tracemalloc: bool) -> None:
    """Run in a fresh interpreter: one verification and a lookup; print memory figures (JSON)."""
    from trust.lookup import list_signed_tags, lookup_tag
    from trust.notary import trusted_set  # noqa: F401  (imports before the baseline)

    files = {role: (directory / role.replace("/", "_")).read_bytes() for role in ROLE_FILES}
    now = dt.datetime.now(dt.UTC)
    before = _hwm_kib()
    if use_tracemalloc:
        tracemalloc.start()
    data = verify_trusted_set(files, now)
    lookup_tag(data, "1.0")
    list_signed_tags(data)
    result: dict[str, float] = {}
    if use_tracemalloc:
        current, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        result.update(tracemalloc_peak=peak, tracemalloc_retained=current)
    after = _hwm_kib()
    result.update(hwm_before_kib=before, hwm_after_kib=after)
    print(json.dumps(result))


def memory(files: dict[str, bytes]) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        for role, data in files.items():
            (Path(tmp) / role.replace("/", "_")).write_bytes(data)
        out: dict[str, float] = {}
        for flag in ([], ["--tracemalloc"]):
            proc = subprocess.run(
                [sys.executable, "-m", "benchmarks.bench_verify", "--child", tmp, *flag],
                capture_output=True,
                check=True,
                text=True,
                cwd=Path(__file__).resolve().parents[1],
            )
            result = json.loads(proc.stdout.strip().splitlines()[-1])
            if flag:  # tracemalloc's own bookkeeping inflates that run's RSS: keep its peak only
                result = {k: v for k, v in result.items() if k.startswith("tracemalloc")}
            out.update(result)
    return out


# ------------------------------------------------------------------------ main


def bench_size(tags: int, runs: int, profile: bool) -> list[list[str]]:
    from trust.errors import NoSuchTagError
    from trust.lookup import inspect_repository, list_signed_tags, lookup_tag

    began = time.perf_counter()
    repo = build_repo(tags)
    files = role_bytes(repo)
    built = time.perf_counter() - began
    sizes = ", ".join(f"{r} {len(b) / 1024:.0f} KiB" for r, b in files.items() if len(b) > 10_000)
    print(f"\n## {tags} tags in targets + {tags} in {RELEASES} (built in {built:.1f}s; {sizes})")
    now = dt.datetime.now(dt.UTC)

    ts_times, ts_cpu = _time_runs_cpu(lambda: verify_trusted_set(files, now), runs)
    warm_times, warm_cpu = _time_runs_cpu(lambda: verify_trusted_set(files, now, warm=True), runs)
    data = verify_trusted_set(files, now)
    cold, warm, cold_req, warm_req = client_times(repo, runs)

    def missing() -> None:
        try:
            lookup_tag(data, "no-such-tag")
        except NoSuchTagError:
            pass

    last = tags - 1
    lookups = {
        f"lookup_tag 1.{last} (in releases)": lambda: lookup_tag(data, f"1.{last}"),
        f"lookup_tag v{last} (targets only)": lambda: lookup_tag(data, f"v{last}"),
        "lookup_tag missing tag": missing,
    }
    rows = [
        [
            "TrustedSet verify, first use (pure, in memory)",
            fmt_ms(median(ts_times)),
            f"CPU {fmt_ms(median(ts_cpu))}, min wall {fmt_ms(min(ts_times))}",
        ],
        [
            "TrustedSet verify, same bytes as cache (warm)",
            fmt_ms(median(warm_times)),
            f"CPU {fmt_ms(median(warm_cpu))}, min wall {fmt_ms(min(warm_times))}",
        ],
        [
            "NotaryClient.update, cold cache, HTTPS",
            fmt_ms(median(cold)),
            f"{median(cold_req):.0f} requests",
        ],
        [
            "NotaryClient.update, warm cache, HTTPS",
            fmt_ms(median(warm)),
            f"{median(warm_req):.0f} requests",
        ],
    ]
    for label, func in lookups.items():
        rows.append(
            [label, f"{_time_per_call(func, 1000) * 1e6:.1f} µs", "per call, best of 7×1000"]
        )
    rows.append(
        [
            "list_signed_tags (-a)",
            fmt_ms(median(_time_runs(lambda: list_signed_tags(data), runs))),
            f"{2 * tags} tags",
        ]
    )
    rows.append(
        [
            "inspect_repository (all tags)",
            fmt_ms(median(_time_runs(lambda: inspect_repository(data, GUN, None), runs))),
            "",
        ]
    )

    mem = memory(files)
    rss = (mem["hwm_after_kib"] - mem["hwm_before_kib"]) / 1024
    rows.append(
        [
            "peak RSS growth during verify (VmHWM)",
            f"{rss:.1f} MiB",
            f"{mem['hwm_before_kib'] / 1024:.0f} → {mem['hwm_after_kib'] / 1024:.0f} MiB peak RSS",
        ]
    )
    rows.append(
        [
            "tracemalloc peak during verify",
            f"{mem['tracemalloc_peak'] / 2**20:.1f} MiB",
            f"retained {mem['tracemalloc_retained'] / 2**20:.1f} MiB",
        ]
    )
    print_table(["measure", "median", "note"], rows)

    if profile:
        prof = cProfile.Profile()
        prof.enable()
        verify_trusted_set(files, now)
        prof.disable()
        stream = io.StringIO()
        pstats.Stats(prof, stream=stream).sort_stats("tottime").print_stats(10)
        print(f"\ncProfile of one TrustedSet verification ({tags} + {tags} tags), by own time:")
        lines = stream.getvalue().splitlines()
        start = next(i for i, line in enumerate(lines) if "ncalls" in line)
        print("\n".join(lines[start : start + 11]))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_verify", description=__doc__)
    parser.add_argument("--tags", default="1000,10000", help="tags per role, comma-separated")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--tracemalloc", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        _child(args.child, args.tracemalloc)
        return 0
    os.environ.setdefault("PYTHONHASHSEED", "0")
    print(f"# bench_verify — {machine_line()}")
    sizes = [int(s) for s in args.tags.split(",") if s]
    for index, tags in enumerate(sizes):
        bench_size(tags, args.runs, profile=not args.no_profile and index == len(sizes) - 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
