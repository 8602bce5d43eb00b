"""Fixtures for every test: no test may read or write the real ~/.docker or trustpull config.

Also the hypothesis profiles of the property-based fuzzers (tests/unit/test_fuzz.py and every
other `@given` test that sets no profile of its own):

- `ci` (the default, and what CI runs): derandomised, 300 examples, inputs of at most 512 bytes;
  the same inputs on every run, the fuzz module in well under a minute.
- `long`: random, 20,000 examples, inputs up to 8 KiB, failures kept in `.hypothesis/` so they
  replay. Select it with `python -m pytest tests/unit/test_fuzz.py --hypothesis-profile=long`
  or `TRUSTPULL_HYPOTHESIS_PROFILE=long`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

#: The environment variable that selects a hypothesis profile (the option wins over it).
PROFILE_ENV = "TRUSTPULL_HYPOTHESIS_PROFILE"
#: Largest generated binary input per profile (test_fuzz.py scales its strategies by it).
MAX_BYTES = {"ci": 512, "long": 8192}

_SLOW_OK = [HealthCheck.too_slow, HealthCheck.data_too_large]
settings.register_profile(
    "ci",
    derandomize=True,
    max_examples=300,
    deadline=2000,  # ms per example: a hang or a regex blow-up fails the test
    database=None,
    suppress_health_check=_SLOW_OK,
)
settings.register_profile(
    "long",
    derandomize=False,
    max_examples=20_000,
    deadline=2000,
    print_blob=True,
    suppress_health_check=_SLOW_OK,
)
settings.load_profile(os.environ.get(PROFILE_ENV) or "ci")


def pytest_configure(config: pytest.Config) -> None:
    """`--hypothesis-profile=NAME` first, then $TRUSTPULL_HYPOTHESIS_PROFILE, else `ci`."""
    name = config.getoption("hypothesis_profile", None) or os.environ.get(PROFILE_ENV) or "ci"
    settings.load_profile(name)


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
