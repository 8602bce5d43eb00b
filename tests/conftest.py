"""Fixtures for every test: no test may read or write the real ~/.docker or trustpull config."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

#: Variables that would point a test at the developer's docker setup or change trust behaviour.
_CLEARED = (
    "TRUSTPULL_CONFIG",
    "DOCKER_AUTH_CONFIG",
    "DOCKER_HOST",
    "DOCKER_CONTEXT",
    "DOCKER_TLS_VERIFY",
    "DOCKER_CERT_PATH",
    "DOCKER_CONTENT_TRUST",
    "DOCKER_CONTENT_TRUST_SERVER",
)


@pytest.fixture(autouse=True)
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """HOME, DOCKER_CONFIG and XDG_CONFIG_HOME inside tmp_path; TRUSTPULL_CONFIG unset.

    TRUSTPULL_CONFIG is removed rather than pointed at tmp_path: when set it names a file that
    must exist, and its default then lies under the isolated XDG_CONFIG_HOME anyway.
    """
    home = tmp_path / "home"
    (home / ".docker").mkdir(parents=True)
    (home / ".config").mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("DOCKER_CONFIG", str(home / ".docker"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    for name in _CLEARED:
        monkeypatch.delenv(name, raising=False)
    yield home
