"""Small shared helpers for the benchmarks: timing, medians, tables, the trustpull command."""

from __future__ import annotations

import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "ROOT",
    "TRUSTPULL",
    "checkout_environ",
    "fmt_ms",
    "fmt_ratio",
    "machine_line",
    "median",
    "print_table",
    "run_timed",
]


def _console_script() -> list[str]:
    """A console script for this checkout's `[project.scripts] trustpull` entry point, written
    the way pip writes it (this interpreter, `from MODULE import FUNC; sys.exit(FUNC())`).

    Not the installed `trustpull`: under pyenv that is a bash shim that re-executes pyenv
    (about 0.2 s per run), and an installed script follows the entry point of the checkout it
    was installed from, which need not be this one.
    """
    import re
    import tempfile

    text = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    found = re.search(r'^trustpull\s*=\s*"([\w.]+):(\w+)"', text, re.MULTILINE)
    module, func = found.groups() if found else ("cli.main", "main")
    import atexit
    import shutil

    directory = tempfile.mkdtemp(prefix="trustpull-bench-")
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    script = Path(directory) / "trustpull"
    script.write_text(
        f"#!{sys.executable}\n# -*- coding: utf-8 -*-\nimport re\nimport sys\n"
        f"from {module} import {func}\n"
        "if __name__ == '__main__':\n"
        "    sys.argv[0] = re.sub(r'(-script\\.pyw|\\.exe)?$', '', sys.argv[0])\n"
        f"    sys.exit({func}())\n"
    )
    script.chmod(0o755)
    return [str(script)]


TRUSTPULL: list[str] = _console_script()
ROOT = Path(__file__).resolve().parents[1]


def _checkout_environ() -> dict[str, str]:
    """os.environ for the measured commands: this checkout's `trust`/`cli` first on the path.

    The console script imports whatever `cli` the interpreter finds first; with an editable
    install of another checkout that is not this one, so PYTHONPATH points at this checkout.
    PYTHONDONTWRITEBYTECODE is dropped and the packages are byte-compiled once: a user's
    install has its .pyc files, and compiling every module on every run costs ~25 ms.
    """
    import compileall

    for package in ("trust", "cli"):
        compileall.compile_dir(str(ROOT / package), quiet=1)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    )
    return env


_ENVIRON: dict[str, str] | None = None


def checkout_environ() -> dict[str, str]:
    global _ENVIRON
    if _ENVIRON is None:
        _ENVIRON = _checkout_environ()
    return _ENVIRON


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
    """Run a command with `env` on top of os.environ (see `checkout_environ`).

    Returns wall seconds, CPU seconds (user + system of the command and the children it waited
    for: less sensitive than wall time to other load on the machine) and the completed process.
    """
    full_env = {**checkout_environ(), **(env or {})}
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
    root = ROOT
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


def publish(stack: Any, repos: list[str], tags: int, publisher_dir: Path) -> None:
    """Sign `tags` tags in each repository: t0 by a trusted docker push, the rest by notary."""
    from fixtures.stack import REPOSITORY_PASSPHRASE, ROOT_PASSPHRASE, docker, make_image

    notary = stack.notary
    publisher = stack.docker_env(publisher_dir)
    signing = {**publisher, "DOCKER_CONTENT_TRUST": "1"}
    notary_env = {
        **os.environ,
        "NOTARY_ROOT_PASSPHRASE": ROOT_PASSPHRASE,
        "NOTARY_TARGETS_PASSPHRASE": REPOSITORY_PASSPHRASE,
        "NOTARY_SNAPSHOT_PASSPHRASE": REPOSITORY_PASSPHRASE,
    }
    base = ["notary", "-s", notary.url, "-d", str(publisher_dir / "trust")]
    base += ["--tlscacert", str(notary.ca_path)]
    payload = publisher_dir / "manifest.bin"
    for repo in repos:
        make_image(stack, f"{repo}:t0", f"{repo} t0\n".encode(), env=publisher)
        docker("push", "--", f"{repo}:t0", env=signing)
        docker("rmi", "-f", f"{repo}:t0", env=publisher)
        for tag in range(1, tags):
            payload.write_bytes(f"{repo} t{tag}\n".encode())
            subprocess.run(
                [*base, "add", repo, f"t{tag}", str(payload)],
                env=notary_env,
                check=True,
                capture_output=True,
            )
        if tags > 1:
            subprocess.run(
                [*base, "publish", repo], env=notary_env, check=True, capture_output=True
            )
