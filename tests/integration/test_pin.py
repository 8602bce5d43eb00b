"""`trustpull pin` on repositories signed by the real docker CLI 28 on the stack's notary-server.

Pin on one machine (trust on first use), then pull on a cold one with the pin in force; a pin
that does not match refuses (exit 5); pin refuses to write anything for data that does not
verify, and a CA that does not anchor the root is refused before anything is written.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fixtures.stack import Stack
from tests.integration._signed import Signed, _why

pytestmark = pytest.mark.integration


@pytest.fixture()
def signed(stack: Stack, tmp_path: Path, request: pytest.FixtureRequest) -> Signed:
    name = request.node.name.removeprefix("test_").replace("_", "-")[:24]
    return Signed(stack, tmp_path, name)


def _root_key_id(signed: Signed, ref: str) -> str:
    proc = signed.ok(signed.tp("resolve", "-o", "json", ref, config=signed.config("probe")))
    key_id: str = json.loads(proc.stdout)[0]["root_key_id"]
    return key_id


def test_pin_then_pull_with_the_pin(signed: Signed) -> None:
    digest = signed.push_signed("1.0", "one")
    ref = f"{signed.repo}:1.0"
    canonical = _root_key_id(signed, ref)
    config = signed.tmp / "config.toml"
    original = (
        "# my settings\n[limits]  # keep this comment\n"
        "retries = 3\n\n[trust_servers]\n"
        '"example.test" = "https://notary.example.test"\n'
    )
    config.write_text(original)

    pinner = signed.config("pinner")
    proc = signed.tp("pin", "--write", str(config), signed.repo, config=pinner)
    assert proc.returncode == 0, _why(proc)
    assert f"Verified {signed.repo} (trust on first use" in proc.stdout, _why(proc)
    assert "trust on first use: trusting root key" in proc.stderr, _why(proc)
    assert f"canonical ID: {canonical}" in proc.stdout, _why(proc)
    assert f"subject:      CN={signed.repo}" in proc.stdout, _why(proc)
    assert "key type:     ECDSA P-256 (ecdsa-x509)" in proc.stdout, _why(proc)
    assert "signed tags:  1.0" in proc.stdout, _why(proc)
    assert f"Added to {config}" in proc.stdout, _why(proc)
    assert "Verified again with the pin in force" in proc.stdout, _why(proc)
    entry = f'[trust_pinning.certs]\n"{signed.repo}" = ["{canonical}"]\n'
    assert config.read_text() == original + "\n" + entry, _why(proc)

    again = signed.tp("pin", "--write", str(config), signed.repo, config=pinner)
    assert again.returncode == 0 and "has this pin already" in again.stdout, _why(again)
    assert "trust on first use" not in again.stdout + again.stderr, _why(again)
    assert config.read_text() == original + "\n" + entry

    # A cold machine with the pin: a pinned first use (no TOFU), the signed digest pulled.
    cold = signed.config("cold")
    pulled = signed.tp("pull", "--config", str(config), ref, config=cold)
    assert pulled.returncode == 0, _why(pulled)
    assert f"Pull (1 of 1): {ref}@{digest}" in pulled.stdout, _why(pulled)
    assert "trust on first use" not in pulled.stderr, _why(pulled)

    # JSON: the same facts for machines.
    shown = signed.ok(signed.tp("pin", "-o", "json", "--config", str(config), ref, config=cold))
    document = json.loads(shown.stdout)
    assert document["root_certificates"][0]["canonical_id"] == canonical
    assert document["pin"]["toml"] == entry and document["already_present"] is True
    assert document["first_use"] is False and document["signed"][0]["digest"] == digest


def test_pin_that_does_not_match_refuses_and_pin_writes_nothing(signed: Signed) -> None:
    signed.push_signed("1.0", "one")
    ref = f"{signed.repo}:1.0"
    config = signed.tmp / "wrong.toml"
    wrong = f'[trust_pinning.certs]\n"{signed.repo}" = ["{"a" * 64}"]\n'
    config.write_text(wrong)

    pulled = signed.tp("pull", "--config", str(config), ref, config=signed.config("cold"))
    assert pulled.returncode == 5, _why(pulled)
    assert "unable to match any certificates to trust_pinning config" in pulled.stderr
    assert "Pull (1 of 1)" not in pulled.stdout, _why(pulled)

    proc = signed.tp("pin", "--write", str(config), signed.repo, config=signed.config("pinner"))
    assert proc.returncode == 5, _why(proc)
    assert "canonical ID" not in proc.stdout and config.read_text() == wrong, _why(proc)

    # Not signed at all: exit 4, and no file appears.
    fresh = signed.tmp / "fresh.toml"
    assert signed.stack.registry is not None
    unsigned = f"{signed.stack.registry.host}/dct/none-{id(fresh)}"
    proc = signed.tp("pin", "--write", str(fresh), unsigned, config=signed.config("pinner"))
    assert proc.returncode == 4, _why(proc)
    assert not fresh.exists(), _why(proc)


def test_pin_rule_form(signed: Signed) -> None:
    signed.push_signed("2.0", "two")
    ref = f"{signed.repo}:2.0"
    canonical = _root_key_id(signed, ref)
    config = signed.tmp / "policy.toml"
    proc = signed.tp(
        "pin", "--rule", "pinned-app", "--write", str(config), ref, config=signed.config("pinner")
    )
    assert proc.returncode == 0, _why(proc)
    assert "first [[rules]] entry" in proc.stdout, _why(proc)
    registry, path = signed.repo.split("/", 1)
    assert config.read_text() == (
        f'[[rules]]\nname = "pinned-app"\nregistry = "{registry}"\n'
        f'repository = "{path}"\nroot_keys = ["{canonical}"]\n'
    ), _why(proc)
    shown = signed.ok(
        signed.tp("policy", "show", "--config", str(config), ref, config=signed.config("cold"))
    )
    assert "pinned-app" in shown.stdout, _why(shown)
    resolved = signed.tp("resolve", "--config", str(config), ref, config=signed.config("cold"))
    assert resolved.returncode == 0, _why(resolved)
    assert "trust on first use" not in resolved.stderr, _why(resolved)


def test_pin_ca_that_does_not_anchor_the_root_is_refused(signed: Signed) -> None:
    """docker-made roots are self-signed: no CA anchors them, so `pin --ca` must refuse."""
    signed.push_signed("1.0", "one")
    assert signed.stack.notary is not None
    ca_file = signed.stack.notary.ca_path  # a real CA, just not this root's issuer
    config = signed.tmp / "config.toml"
    prefix = signed.repo.rsplit("/", 1)[0] + "/"
    proc = signed.tp(
        "pin", "--ca", str(ca_file), prefix, "--write", str(config), signed.repo,
        config=signed.config("pinner"),
    )  # fmt: skip
    assert proc.returncode == 5, _why(proc)
    assert "does not accept the verified root" in proc.stderr, _why(proc)
    assert not config.exists(), _why(proc)
    other = signed.tp(
        "pin", "--ca", str(ca_file), "other.test/", signed.repo, config=signed.config("p2")
    )
    assert other.returncode == 3 and "does not cover" in other.stderr, _why(other)
