"""Signed repositories on the session stack for the plugin and pin tests.

`Peers` (test_trusted_pull_docker) publishes with the real docker CLI 28 and notary; this
subclass runs *this checkout's* trustpull (PYTHONPATH = the repository root, so a subprocess
never picks up another installation of the `cli`/`trust` packages) and the docker CLI with
extra variables.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from fixtures.stack import DOCKER_CLI
from tests.integration.test_trusted_pull_docker import Peers, _why

__all__ = ["ROOT", "Signed", "_why"]

ROOT = Path(__file__).resolve().parents[2]


class Signed(Peers):
    def run_env(
        self, config: Path, extra: Mapping[str, str | None] | None = None
    ) -> dict[str, str]:
        env = self.env(config)
        env["PYTHONPATH"] = str(ROOT)
        for key, value in (extra or {}).items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = value
        return env

    def tp(self, *args: str, config: Path, trust: bool = True) -> subprocess.CompletedProcess[str]:
        env = self.run_env(config, {"DOCKER_CONTENT_TRUST": "1" if trust else "0"})
        return self._run([sys.executable, "-m", "cli.main", *args], env)

    def docker(
        self, *args: str, config: Path, extra: Mapping[str, str | None] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """The docker CLI 28 with `extra` variables on top (None removes one)."""
        return self._run([DOCKER_CLI, *args], self.run_env(config, extra))
