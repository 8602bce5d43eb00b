"""The real-server stack, started once per session for tests marked `integration`.

If the servers cannot start, integration tests fail on CI (`CI=true`) and are skipped elsewhere,
so a developer without the Debian packages can still run the unit tests.
"""

from __future__ import annotations

import sys
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from fixtures.stack import Stack, StackError, ensure_installed
from tests.ci import skip_or_fail


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Everything under tests/integration carries the marker, even if a module forgets it."""
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    """dockerd + docker-registry + notary-server, up for the whole session."""
    try:
        ensure_installed()
        started = Stack().start()
    except (StackError, OSError) as exc:
        message = f"test stack did not start: {exc}"
        skip_or_fail(message)
    print(f"\ntest stack up in {started.startup_seconds:.2f}s at {started.dir}", file=sys.stderr)
    try:
        yield started
    finally:
        started.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, Any, None]:
    """Attach the servers' log tails to the report of a failed test that used the stack."""
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    running = getattr(item, "funcargs", {}).get("stack")
    if report.failed and isinstance(running, Stack):
        report.sections.append(("test stack logs", running.logs()))
