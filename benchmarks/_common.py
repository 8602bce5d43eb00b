"""Small shared helpers for the benchmarks: timing, medians, tables, the trustpull command."""

from __future__ import annotations

import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = [
    "TRUSTPULL",
    "fmt_ms",
    "fmt_ratio",
    "machine_line",
    "median",
    "print_table",
    "run_timed",
]


def _console_script() -> list[str]:
    """The console script pip installed next to this interpreter (what users run).

    Not a `trustpull` found first on PATH: under pyenv that is a bash shim that re-executes
    pyenv and adds about 0.2 s to every run. `python -m cli.main` as a fallback.
    """
    beside = Path(sys.executable).parent / "trustpull"
    if beside.is_file() and os.access(beside, os.X_OK):
        return [str(beside)]
    found = shutil.which("trustpull")
    return [found] if found else [sys.executable, "-m", "cli.main"]


TRUSTPULL: list[str] = _console_script()


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_timed(
    argv: Sequence[str],
    env: Mapping[str, str] | None = None,
    *,
    check: bool = True,
) -> tuple[float, float, subprocess.CompletedProcess[bytes]]:
    """Run a command with `env` on top of os.environ.

    Returns wall seconds, CPU seconds (user + system of the command and the children it waited
    for: less sensitive than wall time to other load on the machine) and the completed process.
    """
    full_env = {**os.environ, **(env or {})}
    cpu_before = _children_cpu()
    began = time.perf_counter()
    proc = subprocess.run(list(argv), env=full_env, capture_output=True, check=False)
    elapsed = time.perf_counter() - began
    cpu = _children_cpu() - cpu_before
    if check and proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv)} exited {proc.returncode}:\n"
            f"{proc.stdout.decode(errors='replace')}\n{proc.stderr.decode(errors='replace')}"
        )
    return elapsed, cpu, proc


def fmt_ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def fmt_ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b > 0 else "n/a"


def print_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """A GitHub-style markdown table (pastes straight into README.md)."""
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) for i, h in enumerate(headers)]
    line = "| " + " | ".join(str(h).ljust(w) for h, w in zip(headers, widths, strict=True)) + " |"
    print(line)
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        cells = (str(c).ljust(w) for c, w in zip(row, widths, strict=True))
        print("| " + " | ".join(cells) + " |")
    sys.stdout.flush()


def machine_line() -> str:
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    root = Path(__file__).resolve().parents[1]
    git = subprocess.run(
        ["git", "-C", str(root), "log", "-1", "--format=%h"], capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "-C", str(root), "status", "--porcelain", "--", "trust", "cli"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    return (
        f"{time.strftime('%Y-%m-%d %H:%M %Z')}, {platform.node() or 'host'}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}, {platform.machine()}, "
        f"load average {load}; trustpull at {git or '?'}"
        f"{' + uncommitted changes in trust/ or cli/' if dirty else ''}"
    )
