"""`podman system service` for a test module: the one set-up test_podman.py and test_auth.py
share (each marks its own registries insecure).

The service runs on a unix socket in a fresh directory under /tmp, with its own registries.conf,
and is stopped by its pid; when it cannot start, the module's tests fail on CI and are skipped
elsewhere (tests.ci).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from fixtures.stack import PodmanService, StackError, ensure_installed
from tests.ci import skip_or_fail

__all__ = ["running_podman"]


def running_podman(insecure_registries: Sequence[str]) -> Iterator[PodmanService]:
    """Yield a started service; a module fixture's body is `yield from running_podman(...)`."""
    directory = Path(tempfile.mkdtemp(prefix="tpp-", dir="/tmp"))
    service = PodmanService(directory, insecure_registries=insecure_registries)
    try:
        ensure_installed(["podman"], ["podman"])
        service.start()
    except (StackError, OSError) as exc:
        shutil.rmtree(directory, ignore_errors=True)
        skip_or_fail(f"podman system service did not start: {exc}")
    try:
        yield service
    finally:
        service.stop()
        shutil.rmtree(directory, ignore_errors=True)
