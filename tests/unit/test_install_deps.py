"""scripts/install-deps.sh, the install step of both README commands, against stub commands.

The script runs on a copy of the checkout with a PATH holding only stubs (apt-get, python3, the
server binaries that are "installed") and the few coreutils it uses, so every apt-get, venv and
pip call it makes is recorded and nothing is installed: apt-get only for what is missing,
python3-venv when ensurepip is missing, the venv made once, pip only when pyproject.toml or the
wanted extras changed, and a failing step's log shown.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BASH = shutil.which("bash") or "/bin/bash"
_COREUTILS = ("cat", "cut", "dirname", "mkdir", "mktemp", "rm", "sha256sum", "cp", "grep")

_PYTHON3 = """#!{bash}
# python3 without ensurepip until apt-get installed python3-venv
case "$*" in
    "-c import ensurepip") [ -e "{stub}/python3-venv" ] ;;
    -c*) echo "/usr/bin/python3 3.11.2" ;;
    "-m venv "*) mkdir -p "$3/bin" && cp "{stub}/venv-python" "$3/bin/python" ;;
    *) exit 9 ;;
esac
"""
_VENV_PYTHON = """#!{bash}
case "$1" in
    -c) exit 0 ;;
    -m) echo "$*" >>"{stub}/pip.log"; echo "pip says: $*"; exit "$(cat "{stub}/pip-status")" ;;
esac
exit 9
"""
_APT_GET = """#!{bash}
echo "$*" >>"{stub}/apt.log"
case " $* " in *" python3-venv "*) : >"{stub}/python3-venv" ;; esac
case " $* " in *" busybox-static "*) : >"{stub}/busybox-static" ;; esac
"""
#: dpkg's status query, for the one package found by status rather than by a command.
_DPKG_QUERY = """#!{bash}
[ -e "{stub}/$3" ] && echo "install ok installed"
"""


@dataclass
class Sandbox:
    checkout: Path
    stub: Path

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [BASH, str(self.checkout / "scripts" / "install-deps.sh"), *args],
            env={"PATH": str(self.stub / "bin"), "TMPDIR": str(self.stub)},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def log(self, name: str) -> list[str]:
        path = self.stub / name
        return path.read_text().splitlines() if path.exists() else []

    def clear(self) -> None:
        for name in ("apt.log", "pip.log"):
            (self.stub / name).unlink(missing_ok=True)

    def install(self, *names: str) -> None:
        for name in names:
            if name == "busybox-static":  # a package, known to dpkg-query
                (self.stub / name).touch()
            else:
                self.write(f"bin/{name}", "exit 0\n")

    def write(self, name: str, text: str) -> None:
        path = self.stub / name
        path.write_text(text if text.startswith("#!") else f"#!{BASH}\n{text}")
        path.chmod(0o755)


@pytest.fixture()
def sandbox(tmp_path: Path) -> Sandbox:
    checkout = tmp_path / "checkout"
    (checkout / "scripts").mkdir(parents=True)
    shutil.copy(ROOT / "scripts" / "install-deps.sh", checkout / "scripts")
    (checkout / "pyproject.toml").write_text('[project]\nname = "x"\n')
    stub = tmp_path / "stub"
    (stub / "bin").mkdir(parents=True)
    for name in _COREUTILS:
        found = shutil.which(name)
        assert found is not None, name
        os.symlink(found, stub / "bin" / name)
    box = Sandbox(checkout, stub)
    box.write("bin/python3", _PYTHON3.format(bash=BASH, stub=stub))
    box.write("venv-python", _VENV_PYTHON.format(bash=BASH, stub=stub))
    box.write("bin/apt-get", _APT_GET.format(bash=BASH, stub=stub))
    box.write("bin/dpkg-query", _DPKG_QUERY.format(bash=BASH, stub=stub))
    box.write("bin/id", "echo 0\n")  # root: apt-get without sudo
    (stub / "pip-status").write_text("0\n")
    box.install("dockerd", "docker-registry", "notary-server")
    return box


def test_fresh_machine_then_nothing_to_do(sandbox: Sandbox) -> None:
    first = sandbox.run()
    assert first.returncode == 0, first.stderr
    assert sandbox.log("apt.log") == [
        "update",
        "install -y --no-install-recommends apache2-utils tinyproxy podman docker-compose "
        "busybox-static python3-venv",
    ]
    assert sandbox.log("pip.log") == [
        f"-m pip install --disable-pip-version-check -e {sandbox.checkout}[test]"
    ]
    assert "pip says" not in first.stdout + first.stderr  # install output kept in the log
    assert (sandbox.checkout / ".venv" / "bin" / "python").exists()

    sandbox.clear()
    sandbox.install("htpasswd", "tinyproxy", "podman", "docker-compose", "busybox-static")
    second = sandbox.run()
    assert second.returncode == 0, second.stderr
    assert (second.stdout, second.stderr) == ("", "")
    assert sandbox.log("apt.log") == [] and sandbox.log("pip.log") == []


def test_sandbox_mode_installs_less_and_test_mode_adds_the_extras(sandbox: Sandbox) -> None:
    assert sandbox.run("sandbox").returncode == 0
    assert sandbox.log("apt.log")[1:] == ["install -y --no-install-recommends python3-venv"]
    assert sandbox.log("pip.log")[0].endswith(f"-e {sandbox.checkout}")
    sandbox.clear()
    sandbox.install("htpasswd", "tinyproxy", "podman", "docker-compose", "busybox-static")
    assert sandbox.run("test").returncode == 0
    assert sandbox.log("pip.log")[0].endswith(f"-e {sandbox.checkout}[test]")
    sandbox.clear()
    assert sandbox.run("sandbox").returncode == 0  # the test install is a superset
    assert sandbox.log("pip.log") == [] and sandbox.log("apt.log") == []


def test_changed_pyproject_reinstalls(sandbox: Sandbox) -> None:
    sandbox.install("htpasswd", "tinyproxy", "podman", "docker-compose", "busybox-static")
    assert sandbox.run().returncode == 0
    sandbox.clear()
    (sandbox.checkout / "pyproject.toml").write_text('[project]\nname = "y"\n')
    assert sandbox.run().returncode == 0
    assert len(sandbox.log("pip.log")) == 1 and sandbox.log("apt.log") == []


def test_failed_step_prints_its_log_and_is_retried(sandbox: Sandbox) -> None:
    sandbox.install("htpasswd", "tinyproxy", "podman", "docker-compose", "busybox-static")
    (sandbox.stub / "pip-status").write_text("1\n")
    failed = sandbox.run()
    assert failed.returncode == 1
    assert "FAILED: pip install" in failed.stderr and "pip says: -m pip install" in failed.stderr
    (sandbox.stub / "pip-status").write_text("0\n")
    sandbox.clear()
    assert sandbox.run().returncode == 0
    assert len(sandbox.log("pip.log")) == 1  # no stamp was written for the failed install


def test_unknown_mode_is_a_usage_error(sandbox: Sandbox) -> None:
    assert sandbox.run("everything").returncode == 2
