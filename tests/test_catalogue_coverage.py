"""Every case of shared/spec/attacks.md has at least one test named by its id, and every test
named by an id asserts an outcome.

The catalogue's case ids (`**A01 – …**`) are parsed from the spec; test functions are collected
from the tests/ tree with `ast` (nothing is imported or run). A test covers an id when its name
contains `_<ID>_` or ends with `_<ID>`; a lower-case sub-case letter is allowed after the id
(`test_B07a_…`, `test_B13b_…`), as the catalogue itself splits cases into (a) and (b).

A name alone is not a test: each test named by an id must assert the catalogue's outcome, an
error kind with its exit code or an accepted digest (`asserts_outcome`). It counts when its body
(nested functions included) holds at least one of:

- a call of a shared assertion helper listed in `OUTCOME_HELPERS`;
- `pytest.raises(<a trust.errors class>)`: the exact kind, whose exit code trust/errors.py fixes
  (and the README's exit-code table is tested against);
- an `assert` that names `exit_code`, `returncode`, `.kind` or a trust.errors class (an error
  kind or exit code: `assert error.exit_code == 7`, `assert type(error) is MalformedError`);
- an `assert` comparison that names a digest (`digest`, `sha256`: `assert digest_of(env) ==
  "sha256:" + D1`, `assert engine.calls[0] == ("pull", GUN, "sha256:" + D1)`).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import trust.errors
from tests.ci import skip_or_fail

TESTS = Path(__file__).resolve().parent
ATTACKS = Path(__file__).resolve().parents[1].parent / "shared" / "spec" / "attacks.md"
ENGINE_PROXY = ATTACKS.with_name("engine-proxy.md")

#: A case heading: `**A01 – Unsigned metadata.**` at the start of a line.
_CASE_RE = re.compile(r"^\*\*([A-J]\d{2}) [–-] ", re.MULTILINE)


#: Shared assertion helpers that assert an outcome themselves: name → what they check.
OUTCOME_HELPERS = {
    "refuse": "tests/unit/_trust_env.py `Env.refuse`: the exact error class, its exit code, the "
    "trust cache unchanged, no temporary file, nothing pulled or tagged (REFUSE + KEEP + NOPULL)",
}

#: Error kinds: the classes of trust.errors.
ERROR_KINDS = frozenset(name for name in trust.errors.__all__ if name.endswith("Error"))

_KIND_WORDS = re.compile(
    r"\b(?:exit_code|returncode|" + "|".join(sorted(ERROR_KINDS)) + r")\b|\.kind\b"
)
_DIGEST_WORDS = re.compile(r"digest|sha256", re.IGNORECASE)


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


def collect_tests(root: Path = TESTS) -> dict[str, list[tuple[str, ast.FunctionDef, str]]]:
    """Every `test_*` function → (file, its node, the file's source) for each definition."""
    found: dict[str, list[tuple[str, ast.FunctionDef, str]]] = {}
    for path in sorted(root.rglob("*.py")):
        source = path.read_text(encoding="utf-8")
        for node in ast.walk(ast.parse(source, filename=str(path))):
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
                where = str(path.relative_to(root.parent))
                found.setdefault(node.name, []).append((where, node, source))
    return found


def _called_name(call: ast.Call) -> str | None:
    func = call.func
    if isinstance(func, ast.Attribute):
        return func.attr
    return func.id if isinstance(func, ast.Name) else None


def outcome_assertions(node: ast.FunctionDef, source: str) -> list[str]:
    """What in the test asserts an outcome (see the module docstring); empty when nothing."""
    found: list[str] = []
    for child in ast.walk(node):
        if isinstance(child, ast.Call):
            name = _called_name(child)
            if name in OUTCOME_HELPERS:
                found.append(f"{name}()")
            elif name == "raises" and child.args:
                kind = ast.get_source_segment(source, child.args[0]) or ""
                if set(re.findall(r"\w+", kind)) & ERROR_KINDS:
                    found.append(f"raises({kind})")
        elif isinstance(child, ast.Assert):
            text = ast.get_source_segment(source, child.test) or ""
            if _KIND_WORDS.search(text):
                found.append(f"assert {text}")
            elif isinstance(child.test, ast.Compare) and _DIGEST_WORDS.search(text):
                found.append(f"assert {text}")
    return found


def asserts_outcome(node: ast.FunctionDef, source: str) -> bool:
    return bool(outcome_assertions(node, source))


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


def test_every_catalogue_test_asserts_an_outcome() -> None:
    """A test named by an id asserts an error kind and exit code, or an accepted digest."""
    ids = catalogue_ids()
    tests = collect_tests()
    empty = [
        f"{where}:{node.lineno} {name}"
        for case_id in ids
        for name in covering(case_id, list(tests))
        for where, node, source in tests[name]
        if not asserts_outcome(node, source)
    ]
    assert empty == [], "catalogue tests that assert no error kind, exit code or digest: " + (
        ", ".join(sorted(set(empty)))
    )


def _first_test(source: str) -> tuple[ast.FunctionDef, str]:
    tree = ast.parse(source)
    node = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef))
    return node, source


@pytest.mark.parametrize(
    ("body", "counts"),
    [
        ("assert key.verify(m, s, b) in (True, False)", False),  # cannot fail
        ("assert result.error is None", False),
        ("env.update()", False),
        ("with pytest.raises(ValueError):\n        f()", False),  # not a trustpull kind
        ("assert 'digest' in text or x", False),  # mentions a digest, compares none
        ("env.refuse(MalformedError)", True),
        ("first_use_variant(make_env, edit).refuse(TrustPinError)", True),
        ("with pytest.raises(RollbackError):\n        f()", True),
        ("assert error.exit_code == 7", True),
        ("assert type(error) is CertificateError", True),
        ("assert proc.returncode == 4", True),
        ('assert digest_of(env) == "sha256:" + D1', True),
        ("assert lookup_tag(data, '1.0').digest == want", True),
        ("def inner() -> None:\n        env.refuse(AuthError)\n    inner()", True),
    ],
)
def test_outcome_rule_can_fail(body: str, counts: bool) -> None:
    """The outcome rule itself: what cannot fail, or asserts no outcome, does not count."""
    node, source = _first_test(f"def test_A01_case() -> None:\n    {body}\n")
    assert asserts_outcome(node, source) is counts, outcome_assertions(node, source)


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
