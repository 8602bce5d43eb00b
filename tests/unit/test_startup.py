"""What a command imports (issue 13): a trust-off pull loads the engine client, not the verifier.

Each case runs the console script in a fresh interpreter and reports, at exit, which modules were
loaded; the pull goes to an engine socket that does not exist, so it gets as far as connecting
(its error proves the path ran) without a daemon.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from trust import reference, service

ROOT = Path(__file__).resolve().parents[2]

#: Modules a trust-off pull never uses: the verifier, the Notary client, python-tuf, the service,
#: and (with no policy in the configuration) the policy model and its file parser.
NOT_FOR_TRUST_OFF = (
    "cryptography",
    "tuf",
    "trust.notary",
    "trust.service",
    "trust.lookup",
    "trust.policy",
    "trust.targets",
)


def _loaded_modules(
    tmp_path: Path, args: list[str], env: dict[str, str]
) -> tuple[int, str, set[str]]:
    code = (
        "import atexit, json, sys\n"
        "atexit.register(lambda: print('MODULES=' + json.dumps(sorted(sys.modules)),"
        " file=sys.stderr))\n"
        f"sys.argv = ['trustpull', *{args!r}]\n"
        "from cli.entry import main\n"
        "main()\n"
    )
    environ = {
        **{k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")},
        "HOME": str(tmp_path),
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "DOCKER_CONFIG": str(tmp_path / "docker"),
        "DOCKER_HOST": f"unix://{tmp_path / 'no-engine.sock'}",
        "PYTHONPATH": str(ROOT),
        **env,
    }
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=environ,
        check=False,
    )
    text, _, listed = proc.stderr.rpartition("MODULES=")
    return proc.returncode, text, set(json.loads(listed))


@pytest.mark.parametrize(
    ("args", "env"),
    [
        (["pull", "--disable-content-trust", "alpine:3.19"], {}),
        (["pull", "alpine:3.19"], {"DOCKER_CONTENT_TRUST": "0"}),
    ],
)
def test_trust_off_pull_imports_no_verifier(
    tmp_path: Path, args: list[str], env: dict[str, str]
) -> None:
    status, stderr, modules = _loaded_modules(tmp_path, args, env)
    assert "Cannot connect to the Docker daemon" in stderr, stderr  # the pull path ran
    assert status != 0
    assert {"trust.engine", "trust.trusted_pull", "trust.reference"} <= modules
    heavy = sorted(m for m in modules if m.startswith(NOT_FOR_TRUST_OFF))
    assert heavy == []


def test_trust_on_pull_still_imports_the_verifier(tmp_path: Path) -> None:
    """The other side of the test above: with trust on, the same run loads the verifier (so the
    module names it checks are the real ones)."""
    status, stderr, modules = _loaded_modules(tmp_path, ["pull", "--offline", "alpine:3.19"], {})
    assert status != 0, stderr
    assert {"trust.service", "trust.notary.client", "cryptography.x509"} <= modules


def test_the_trust_off_refusal_is_the_service_refusal() -> None:
    """One refusal for all front ends: trust.service's name still answers, moved or not."""
    assert service.refuse_all_tags_with is reference.refuse_all_tags_with


def test_importing_the_config_and_policy_modules_compiles_no_regex_of_ours() -> None:
    """Their regular expressions are compiled on first use (a command without a policy file
    needs none); trust.reference's grammar is compiled at import, as every command parses a
    reference. Counts `re.compile` calls made from trust/ while the modules are imported."""
    code = (
        "import re, sys\n"
        "import trust.reference\n"
        "calls = []\n"
        "compile = re.compile\n"
        "def spy(pattern, flags=0):\n"
        "    caller = sys._getframe(1).f_code.co_filename\n"
        "    if '/trust/' in caller:\n"
        "        calls.append(caller)\n"
        "    return compile(pattern, flags)\n"
        "re.compile = spy\n"
        "import trust.settings, trust.policy, trust.policy_file, trust.config\n"
        "import trust.notary.metadata\n"
        "print(calls)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=True,
    )
    assert proc.stdout.strip() == "[]"


def test_the_first_use_patterns_still_refuse_and_accept() -> None:
    """The accessors give the patterns the module-level names gave (their tests: test_policy)."""
    from trust import policy, policy_file

    assert policy.parse_duration("1d12h") == 129600.0
    with pytest.raises(ValueError, match="duration"):
        policy.parse_duration("12x")
    assert policy_file._key_id_re().fullmatch("a" * 64) is not None
    assert policy_file._key_id_re().fullmatch("A" * 64) is None
    assert policy_file._signer_re().fullmatch("targets/releases") is not None
    assert policy_file._remote_name_re().fullmatch("library/alpine") is not None
    assert policy_file._rule_name_re().fullmatch("-bad") is None
