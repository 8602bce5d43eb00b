"""The public Python API against the real stack, through `trust`'s public names only.

The README's example is taken from the README itself (so it cannot drift) and run as a user
would run it, with the example's repository replaced by one the docker CLI 28 signed.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import trust
from fixtures.stack import Stack
from tests.integration.test_trusted_pull_docker import Peers, _why

README = Path(__file__).resolve().parents[2] / "README.md"
EXAMPLE_REPO = "registry.example.com/team/app"


def _readme_example() -> str:
    text = README.read_text()
    section = text[text.index("## Python API") :]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match, "the README's Python API section has no python example"
    return match.group(1)


@pytest.fixture
def peers(stack: Stack, tmp_path: Path) -> Peers:
    return Peers(stack, tmp_path, "api")


def test_readme_example_runs(peers: Peers) -> None:
    digest = peers.push_signed("1.4", "api example")
    consumer = peers.config("consumer")
    script = peers.tmp / "example.py"
    script.write_text(_readme_example().replace(EXAMPLE_REPO, peers.repo))
    proc = subprocess.run(
        [sys.executable, str(script)],
        env=peers.env(consumer, trust=False),  # the library verifies whatever the variable says
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert proc.returncode == 0, _why(proc)
    assert f"verified: {peers.repo}:1.4@{digest}" in proc.stdout, _why(proc)
    assert f"1.4 {digest}" in proc.stdout, _why(proc)
    assert f"{peers.repo}@{digest}" in (peers.repo_digests(f"{peers.repo}:1.4") or []), _why(proc)


def test_public_names_verify_list_inspect_check_and_refuse(peers: Peers) -> None:
    digest = peers.push_signed("1.0", "api one")
    consumer = peers.config("consumer")
    config = trust.load_settings(peers.env(consumer))
    verification = trust.verify(f"{peers.repo}:1.0", config=config)
    assert isinstance(verification, trust.Verification)
    assert [(r.tag, r.digest) for r in verification.resolutions] == [("1.0", digest)]
    assert verification.rule is not None and verification.unsigned is None
    assert trust.resolve(f"{peers.repo}:1.0", config=config) == f"{peers.repo}:1.0@{digest}"
    assert [t.digest for t in trust.list_signed_tags(peers.repo, config=config)] == [digest]
    document = trust.inspect(peers.repo, config=config)
    assert document["SignedTags"] == [
        {"SignedTag": "1.0", "Digest": digest.removeprefix("sha256:"), "Signers": ["Repo Admin"]}
    ]
    report = trust.check([f"{peers.repo}:1.0", f"{peers.repo}:9.9"], config=config)
    assert [o.verdict for o in report.outcomes] == ["pass", "fail"]
    assert report.exit_code == 4
    with pytest.raises(trust.NotSignedError) as refused:
        trust.verify(f"{peers.repo}:9.9", config=config)
    assert refused.value.exit_code == 4 and trust.EXIT_CODES[4].startswith("not signed")
    with pytest.raises(trust.UsageError):
        trust.list_signed_tags(f"{peers.repo}:1.0", config=config)


def test_pull_by_verified_digest_and_a_refusal_pulls_nothing(peers: Peers) -> None:
    digest = peers.push_signed("2.0", "api pull")
    peers.untag(f"{peers.repo}:2.0")
    consumer = peers.config("consumer")
    environ = peers.env(consumer)
    config = trust.load_settings(environ)
    result = trust.pull(f"{peers.repo}:2.0", config=config, environ=environ)
    assert isinstance(result, trust.PullResult) and result.pulled
    assert f"{peers.repo}@{digest}" in (peers.repo_digests(f"{peers.repo}:2.0") or [])
    with pytest.raises(trust.NotSignedError):
        trust.pull(f"{peers.repo}:3.0", config=config, environ=environ)
    assert peers.repo_digests(f"{peers.repo}:3.0") is None
