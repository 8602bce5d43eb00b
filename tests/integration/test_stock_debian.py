"""The README's first command as a new user on a stock Debian 12 runs it (issue 14).

A clean `git clone` of this checkout's HEAD (so: commit first; nothing outside the clone, such as
../shared, is reachable), Debian's own `/usr/bin/python3` (externally managed, PEP 668) and a
`PATH` without pyenv or /usr/local (so also Debian's docker CLI 20.10, not the 28 in
/usr/local/bin): `scripts/sandbox.sh` must create the project venv, install trustpull into it
and end with the verified pull and the refused tampered one. A second run must install nothing.

pip's cache (`$HOME/.cache/pip`) is kept, so the install takes seconds, not minutes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.ci import skip_or_fail

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DEBIAN_PYTHON = "/usr/bin/python3"
DEBIAN_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
DEBIAN_DOCKER_CLI = "/usr/bin/docker"
#: What the README promises the output ends with.
EXPECTED_END = ["verified pull: ok", "tampered trust data: refused, nothing pulled"]
#: Kept from the caller's environment: where pip finds packages (index, proxies), nothing else.
_PASSED_ON = ("HOME", "TMPDIR", "http_proxy", "https_proxy", "no_proxy")


def _env() -> dict[str, str]:
    env = {"PATH": DEBIAN_PATH, "LANG": "C.UTF-8"}
    for name, value in os.environ.items():
        if name in _PASSED_ON or name.upper() in _PASSED_ON or name.startswith("PIP_"):
            env[name] = value
    if os.access(DEBIAN_DOCKER_CLI, os.X_OK):
        env["TRUSTPULL_DOCKER_CLI"] = DEBIAN_DOCKER_CLI
    return env


def _sandbox(clone: Path, env: dict[str, str]) -> tuple[subprocess.CompletedProcess[str], float]:
    began = time.monotonic()
    proc = subprocess.run(
        ["bash", "scripts/sandbox.sh"],
        cwd=clone,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=600,
        check=False,
    )
    return proc, time.monotonic() - began


def _ending(output: str) -> list[str]:
    return [line.strip() for line in output.splitlines() if line.strip()][-len(EXPECTED_END) :]


def test_sandbox_in_a_clean_clone_with_debians_python(tmp_path: Path) -> None:
    if not os.access(DEBIAN_PYTHON, os.X_OK):
        skip_or_fail(f"{DEBIAN_PYTHON} (Debian's python3) is not installed")
    git = shutil.which("git")
    if git is None or not (ROOT / ".git").exists():
        skip_or_fail("needs git and a git checkout to clone")
    clone = tmp_path / "trustpull"
    subprocess.run([git, "clone", "--quiet", str(ROOT), str(clone)], check=True, timeout=120)
    env = _env()
    found = subprocess.run(
        ["bash", "-c", "command -v python3"], env=env, capture_output=True, text=True, check=False
    )
    assert found.stdout.strip() == DEBIAN_PYTHON, found

    first, first_seconds = _sandbox(clone, env)
    print(f"\nfirst run {first_seconds:.1f}s:\n{first.stdout}", file=sys.stderr)
    assert first.returncode == 0, first.stdout
    assert _ending(first.stdout) == EXPECTED_END, first.stdout
    config = (clone / ".venv" / "pyvenv.cfg").read_text()
    assert "home = /usr/bin\n" in config, config  # the venv is Debian's Python's
    assert (clone / ".venv" / "bin" / "trustpull").is_file()

    second, second_seconds = _sandbox(clone, env)
    print(f"second run {second_seconds:.1f}s:\n{second.stdout}", file=sys.stderr)
    assert second.returncode == 0, second.stdout
    assert _ending(second.stdout) == EXPECTED_END, second.stdout
    assert "install-deps:" not in second.stdout, second.stdout  # nothing installed again
