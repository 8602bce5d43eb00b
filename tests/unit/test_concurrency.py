"""Several trustpull processes on one trust cache while the repository changes (attacks.md H04).

Ten `python -m cli.main resolve` processes share one DOCKER_CONFIG and one FixtureServer (real
HTTPS on loopback); half start before and half after a new version is published, and a delay on
the timestamp keeps their updates overlapping. Afterwards every process either printed a
verified digest (the old or the new one) or failed cleanly (a typed error, an exit code from the
table, no traceback); no temporary file is left; the cache verifies offline, and its versions
are those of the newest publish when any process saw it (no version went backwards).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from fixtures.server import FixtureServer
from tests.unit._trust_env import D1, GUN, REF, baseline_builder, install_ca
from trust.errors import EXIT_CODES

ROOT = Path(__file__).resolve().parents[2]
D_NEW = "e0" * 32
PROCESSES = 10


def _spawn(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "cli.main", "resolve", "-o", "json", *args, REF],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_H04_concurrent_processes_while_a_version_is_published(isolated_home: Path) -> None:
    builder = baseline_builder()
    docker_config = Path(os.environ["DOCKER_CONFIG"])
    with FixtureServer() as server:
        server.publish(GUN, builder.publish())
        install_ca(server, docker_config)
        env = {
            **os.environ,
            "DOCKER_CONTENT_TRUST_SERVER": server.url,
            "PYTHONPATH": str(ROOT),
        }
        server.add_fault("*/timestamp.json", delay=0.15)
        procs = [_spawn(env) for _ in range(PROCESSES // 2)]
        time.sleep(0.5)
        builder.add_target("1.0", D_NEW, 777, role="targets/releases")
        server.publish(GUN, builder.publish())
        procs += [_spawn(env) for _ in range(PROCESSES - PROCESSES // 2)]
        outcomes: list[tuple[int, str, str]] = []
        for proc in procs:
            out, err = proc.communicate(timeout=120)
            outcomes.append((proc.returncode, out, err))
        server.clear_faults()

        digests: list[str] = []
        for code, out, err in outcomes:
            why = f"exit {code}\n--- stdout\n{out}\n--- stderr\n{err}"
            assert "Traceback" not in err, why
            if code == 0:
                (item,) = json.loads(out)
                assert item["digest"] in ("sha256:" + D1, "sha256:" + D_NEW), why
                digests.append(item["digest"])
            else:
                assert code in EXIT_CODES and code not in (0, 1), why
                assert err.startswith("Error: "), why
        assert digests, "no process succeeded"
        # At least the processes started after the publish cannot all have missed it.
        assert "sha256:" + D_NEW in digests, outcomes

        trust_dir = docker_config / "trust"
        assert [p for p in trust_dir.rglob("*") if p.name.startswith(".tmp-")] == []
        metadata = trust_dir / "tuf" / GUN / "metadata"
        newest = builder.repo
        for role in ("root", "timestamp", "snapshot", "targets", "targets/releases"):
            assert (metadata / f"{role}.json").read_bytes() == newest.role_bytes(role), role

        # The cache verifies on its own, with no server at all.
        server.stop()
        final = subprocess.run(
            [sys.executable, "-m", "cli.main", "resolve", "--offline", REF],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert final.returncode == 0, final.stderr
        assert final.stdout.strip() == f"{REF}@sha256:{D_NEW}"
