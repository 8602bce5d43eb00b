"""The one rule for missing prerequisites: skip on a developer's machine, fail in CI."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def skip_or_fail(message: str) -> NoReturn:
    """In CI (`CI=true`) a test that cannot reach what it needs must fail, never skip."""
    if in_ci():
        pytest.fail(message)
    pytest.skip(message)
