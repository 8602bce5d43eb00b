"""Build the seed corpora and run the coverage-guided fuzz targets (atheris/libFuzzer).

    python fuzz/run.py smoke [--seconds 4]          # every target briefly: the CI step
    python fuzz/run.py long --seconds 900 [TARGET]  # the long run, one target after another
    python fuzz/run.py seeds                        # only (re)build the seed corpora

Seeds are built at run time from ../shared/realworld (never copied into the project) into the
work directory (`--workdir`, default `$TMPDIR/trustpull-fuzz`), which also keeps the corpus that
libFuzzer grows and any crash input (`<workdir>/artifacts/<target>-crash-…`). One process at a
time, one core. Exit 0 when no target crashed; 1 otherwise. Without atheris the step fails under
CI=true and is skipped elsewhere (tests/ci.py's rule).
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from hashlib import sha1
from pathlib import Path

HERE = Path(__file__).resolve().parent
TARGETS = ("metadata", "cjson", "keys", "reference", "policy", "manifests")
#: Per-input time bound (seconds) and memory bound (MiB) for every target.
TIMEOUT = 10
RSS_LIMIT_MB = 2048
#: A long run stops restarting a target after this many crash inputs.
MAX_CRASHES = 5
#: libFuzzer's -seed for smoke runs (0, a long run's, means a random one).
SMOKE_SEED = 1


@dataclass
class Result:
    target: str
    seconds: float
    runs: int
    coverage: str
    crashed: bool
    artifacts: list[str]


def build_seeds(target: str, workdir: Path) -> Path:
    """Write the target's seeds (one file per input, named by content hash) and return the dir."""
    sys.path.insert(0, str(HERE))
    module = importlib.import_module(f"fuzz_{target}")
    seeds_dir = workdir / "seeds" / target
    if seeds_dir.exists():
        shutil.rmtree(seeds_dir)
    seeds_dir.mkdir(parents=True)
    count = 0
    for data in module.seeds():
        data = data[: module.MAX_LEN]
        (seeds_dir / sha1(data).hexdigest()).write_bytes(data)  # noqa: S324 - a file name
        count += 1
    if count == 0:
        raise SystemExit(f"{target}: no seeds built (is ../shared/realworld there?)")
    return seeds_dir


def _libfuzzer(
    target: str, workdir: Path, seconds: int, corpus: Path, seeds_dir: Path, seed: int
) -> tuple[int, str]:
    module = importlib.import_module(f"fuzz_{target}")
    artifacts = workdir / "artifacts"
    command = [
        sys.executable,
        str(HERE / f"fuzz_{target}.py"),
        f"-max_total_time={seconds}",
        f"-timeout={TIMEOUT}",
        f"-rss_limit_mb={RSS_LIMIT_MB}",
        f"-max_len={module.MAX_LEN}",
        f"-artifact_prefix={artifacts}/{target}-",
        "-print_final_stats=1",
        f"-seed={seed}",
        str(corpus),
        str(seeds_dir),
    ]
    with (workdir / f"{target}.log").open("ab") as out:
        proc = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, check=False)
    return proc.returncode, (workdir / f"{target}.log").read_text(errors="replace")


def run_target(target: str, workdir: Path, seconds: int, *, long: bool) -> Result:
    """Fuzz `target` for `seconds`. A long run starts libFuzzer again after a crash (it stops at
    the first one) until the time is used or `MAX_CRASHES` crash inputs are saved."""
    seeds_dir = build_seeds(target, workdir)
    corpus = workdir / "corpus" / target
    if corpus.exists() and not long:
        shutil.rmtree(corpus)
    corpus.mkdir(parents=True, exist_ok=True)
    artifacts = workdir / "artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    (workdir / f"{target}.log").write_bytes(b"")
    before = set(artifacts.glob(f"{target}-*"))
    started = time.monotonic()
    runs = 0
    failed = False
    while True:
        left = seconds - int(time.monotonic() - started)
        # Smoke: one fixed libFuzzer seed, so CI mutates the same way each run; long: random.
        seed = 0 if long else SMOKE_SEED
        code, text = _libfuzzer(target, workdir, max(left, 1), corpus, seeds_dir, seed)
        runs = sum(int(n) for n in re.findall(r"stat::number_of_executed_units:\s+(\d+)", text))
        failed = failed or code != 0
        new = set(artifacts.glob(f"{target}-*")) - before
        if code == 0 or not long or len(new) >= MAX_CRASHES or left < 10:
            break
    elapsed = time.monotonic() - started
    cov = re.findall(r"#\d+\s+\w+\s+(cov: \d+ ft: \d+ corp: \d+/\S+)", text)
    new_list = sorted(str(p) for p in set(artifacts.glob(f"{target}-*")) - before)
    crashed = failed or bool(new_list)
    if crashed:
        print(text[-4000:], file=sys.stderr)
    return Result(target, elapsed, runs, cov[-1] if cov else "", crashed, new_list)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=("smoke", "long", "seeds"))
    parser.add_argument("targets", nargs="*", default=list(TARGETS))
    parser.add_argument("--seconds", type=int, default=None)
    parser.add_argument(
        "--workdir", type=Path, default=Path(tempfile.gettempdir()) / "trustpull-fuzz"
    )
    args = parser.parse_intermixed_args()
    unknown = sorted(set(args.targets) - set(TARGETS))
    if unknown:
        parser.error(f"unknown targets {unknown}; known: {', '.join(TARGETS)}")
    args.workdir.mkdir(parents=True, exist_ok=True)
    if args.mode == "seeds":
        for target in args.targets:
            print(f"{target}: {len(list(build_seeds(target, args.workdir).iterdir()))} seeds")
        return 0
    missing = None
    try:
        import atheris  # noqa: F401
    except ImportError:
        missing = "atheris is not installed (pip install -e '.[test]')"
    sys.path.insert(0, str(HERE))
    from _common import TRUSTDATA

    if not TRUSTDATA.is_dir():
        missing = f"the real-world seed data is missing: {TRUSTDATA} (set TRUSTPULL_REALWORLD)"
    if missing is not None:  # tests/ci.py's rule: fail in CI, skip elsewhere
        if os.environ.get("CI", "").lower() == "true":
            print(f"fuzz: {missing}", file=sys.stderr)
            return 1
        print(f"fuzz: {missing}; skipped")
        return 0
    seconds = args.seconds or (4 if args.mode == "smoke" else 900)
    print(f"== fuzz {args.mode}: {len(args.targets)} targets, {seconds}s each ({args.workdir})")
    results = []
    for target in args.targets:
        result = run_target(target, args.workdir, seconds, long=args.mode == "long")
        results.append(result)
        status = "CRASH " + " ".join(result.artifacts) if result.crashed else "ok"
        print(
            f"  {target:<10} {result.seconds:6.0f}s {result.runs:>9} execs  "
            f"{result.coverage}  {status}",
            flush=True,
        )
    failed = sum(r.crashed for r in results)
    print(f"fuzz: {len(results) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
