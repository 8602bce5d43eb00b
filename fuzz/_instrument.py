"""`instrumented()`: atheris coverage instrumentation of the `trust` package when fuzzing.

A target imports trustpull inside `with instrumented():`. Run as a fuzzer (atheris present and
the target is `__main__`) that instruments every `trust.*` module for coverage feedback; when
fuzz/run.py only imports a target to build its seed corpus, it is a plain import.
"""

from __future__ import annotations

import contextlib
import sys
from typing import Any


def instrumented() -> Any:
    main = sys.modules.get("__main__")
    if main is None or not getattr(main, "__file__", "").endswith(".py"):
        return contextlib.nullcontext()
    if not main.__file__.split("/")[-1].startswith("fuzz_"):
        return contextlib.nullcontext()
    try:
        import atheris
    except ImportError:
        return contextlib.nullcontext()
    return atheris.instrument_imports(include=["trust"])
