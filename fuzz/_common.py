"""What every fuzz target shares: where the real-world data is, the one oracle, the entry point.

The oracle (attacks.md A14): on any input a parser either returns or raises a `TrustpullError`
subclass; any other exception is a crash that libFuzzer records with its input. Time is bounded
by libFuzzer's `-timeout` (seconds per input; fuzz/run.py passes it) and memory by
`-rss_limit_mb`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: ../shared/realworld beside the checkout (never copied into the project).
REALWORLD = Path(os.environ.get("TRUSTPULL_REALWORLD") or ROOT.parent / "shared" / "realworld")
TRUSTDATA = REALWORLD / "trustdata"
REFERENCE_VECTORS = REALWORLD / "reference-vectors.json"

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def realworld_files(pattern: str = "*.json") -> Iterator[Path]:
    """Every file under shared/realworld/trustdata matching `pattern`, in a stable order."""
    if not TRUSTDATA.is_dir():
        raise SystemExit(f"real-world data missing: {TRUSTDATA} (set TRUSTPULL_REALWORLD)")
    yield from sorted(p for p in TRUSTDATA.rglob(pattern) if p.is_file())


def main(test_one_input: Callable[[bytes], None]) -> None:
    """Run `test_one_input` under atheris with the command line's libFuzzer flags."""
    import atheris

    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
