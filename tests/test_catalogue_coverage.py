"""Every case of shared/spec/attacks.md has at least one test named by its id.

The catalogue's case ids (`**A01 – …**`) are parsed from the spec; test function names are
collected from the tests/ tree with `ast` (nothing is imported or run). A test covers an id when
its name contains `_<ID>_` or ends with `_<ID>`; a lower-case sub-case letter is allowed after the
id (`test_B07a_…`, `test_B13b_…`), as the catalogue itself splits cases into (a) and (b).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from tests.ci import skip_or_fail

TESTS = Path(__file__).resolve().parent
ATTACKS = Path(__file__).resolve().parents[1].parent / "shared" / "spec" / "attacks.md"
ENGINE_PROXY = ATTACKS.with_name("engine-proxy.md")

#: A case heading: `**A01 – Unsigned metadata.**` at the start of a line.
_CASE_RE = re.compile(r"^\*\*([A-J]\d{2}) [–-] ", re.MULTILINE)


def catalogue_ids() -> list[str]:
    """The case ids of attacks.md, in catalogue order; fail on CI, skip elsewhere, if missing."""
    if not ATTACKS.is_file():
        message = f"attack catalogue missing: {ATTACKS}"
        skip_or_fail(message)
    return _CASE_RE.findall(ATTACKS.read_text(encoding="utf-8"))


def collect_test_names(root: Path = TESTS) -> dict[str, list[str]]:
    """Every `test_*` function (module level or in a class) → the files defining it."""
    names: dict[str, list[str]] = {}
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith(
                "test_"
            ):
                names.setdefault(node.name, []).append(str(path.relative_to(root.parent)))
    return names


def covering(case_id: str, names: list[str]) -> list[str]:
    pattern = re.compile(rf"_{case_id}[a-z]?(?:_|$)")
    return [name for name in names if pattern.search(name)]


def test_catalogue_parses_to_its_stated_count() -> None:
    ids = catalogue_ids()
    text = ATTACKS.read_text(encoding="utf-8")
    stated = re.search(r"It lists (\d+) cases", text)
    assert stated is not None, "attacks.md no longer states its case count"
    assert len(ids) == int(stated.group(1)), ids
    assert len(set(ids)) == len(ids), "duplicate case ids"


def test_every_catalogue_id_has_a_test() -> None:
    ids = catalogue_ids()
    names = list(collect_test_names())
    missing = [case_id for case_id in ids if not covering(case_id, names)]
    assert missing == [], f"catalogue ids without a test named by them: {missing}"


#: A case heading of the engine proxy's catalogue (engine-proxy.md §4): `**X01 – …**`.
_PROXY_CASE_RE = re.compile(r"^\*\*(X\d{2}) [–-] ", re.MULTILINE)


def proxy_catalogue_ids() -> list[str]:
    if not ENGINE_PROXY.is_file():
        message = f"engine proxy catalogue missing: {ENGINE_PROXY}"
        skip_or_fail(message)
    return _PROXY_CASE_RE.findall(ENGINE_PROXY.read_text(encoding="utf-8"))


def test_proxy_catalogue_is_x01_to_x59() -> None:
    ids = proxy_catalogue_ids()
    assert ids == [f"X{n:02d}" for n in range(1, 60)], ids


def test_every_proxy_catalogue_id_has_a_test() -> None:
    names = list(collect_test_names())
    missing = [case_id for case_id in proxy_catalogue_ids() if not covering(case_id, names)]
    assert missing == [], f"engine-proxy.md ids without a test named by them: {missing}"


def test_matching_rule_is_exact() -> None:
    """The rule itself can fail: neighbours and longer ids do not count."""
    assert covering("A01", ["test_A01_unsigned", "test_x_A01"]) == [
        "test_A01_unsigned",
        "test_x_A01",
    ]
    assert covering("B07", ["test_B07a_final_root"]) == ["test_B07a_final_root"]
    assert covering("A01", ["test_A011_x", "test_A01xy_z", "test_xA01_y", "test_a01_x"]) == []


def test_security_md_table_is_up_to_date() -> None:
    """SECURITY.md's case table is generated from the catalogue and these tests: regenerate it
    with `python scripts/security_table.py` when either changes."""
    import subprocess
    import sys

    catalogue_ids()  # skip (or fail on CI) like the other checks when the catalogue is missing
    root = TESTS.parent
    proc = subprocess.run(
        [sys.executable, str(root / "scripts" / "security_table.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
