"""trust.pin without docker: the config text edit, precedence, and the CA form end to end.

The CA form needs a root certificate issued by a CA, which the docker CLI never makes, so it is
proved here against the fixture server (fixtures/notarygen.py); the certs and rule forms run on
the real stack in tests/integration/test_pin.py.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from fixtures.notarygen import generate_key
from tests.unit._trust_env import GUN, REF, Env, baseline_builder, env_factory
from trust.errors import ConfigError, InputError, TrustPinError
from trust.pin import EditRefused, Pin, add_pin, pin_in_force, pin_repository, toml_string
from trust.reference import parse
from trust.settings import TrustPinning

MakeEnv = Callable[..., Env]
ID_A = "a" * 64
ID_B = "b" * 64
CERTS = Pin("certs", "reg.test/ns/app", (ID_A,))
FILE = Path("/x/config.toml")


def test_added_to_an_empty_file_and_after_other_settings() -> None:
    assert add_pin("", CERTS, FILE) == f'[trust_pinning.certs]\n"reg.test/ns/app" = ["{ID_A}"]\n'
    text = "[limits]\nretries = 1  # no newline at the end"
    edited = add_pin(text, CERTS, FILE)
    assert edited == text + f'\n\n[trust_pinning.certs]\n"reg.test/ns/app" = ["{ID_A}"]\n'


def test_existing_table_gets_the_line_after_its_header_and_nothing_else_moves() -> None:
    text = (
        "# pins\r\n[trust_pinning]\r\ndisable_tofu = true\r\n\r\n"
        '[ trust_pinning . certs ]   # ours\r\n"other/x" = ["' + ID_B + '"]\r\n[limits]\r\n'
    )
    edited = add_pin(text, CERTS, FILE)
    assert edited is not None
    assert edited == text.replace("# ours\r\n", f'# ours\r\n"reg.test/ns/app" = ["{ID_A}"]\r\n')
    doc = tomllib.loads(edited)
    assert doc["trust_pinning"]["certs"] == {"other/x": [ID_B], "reg.test/ns/app": [ID_A]}


def test_same_entry_is_a_no_op_and_a_different_one_is_refused() -> None:
    text = f'[trust_pinning.certs]\n"reg.test/ns/app" = ["{ID_A}"]\n'
    assert add_pin(text, CERTS, FILE) is None
    with pytest.raises(EditRefused, match=r"has an entry for 'reg\.test/ns/app' already"):
        add_pin(text.replace(ID_A, ID_B), CERTS, FILE)


@pytest.mark.parametrize(
    "text",
    [
        f'[trust_pinning]\ncerts = {{ "other/x" = ["{ID_B}"] }}\n',  # inline table
        f'[trust_pinning]\ncerts."other/x" = ["{ID_B}"]\n',  # dotted keys
        "trust_pinning = { disable_tofu = true }\n",  # inline parent: appending is invalid
        'x = """\n[trust_pinning.certs]\n"""\n',  # a header inside a string is not a header
    ],
)
def test_forms_that_cannot_be_edited_safely_are_refused(text: str) -> None:
    with pytest.raises(EditRefused) as caught:
        add_pin(text, CERTS, FILE)
    assert caught.value.hint is not None and CERTS.toml().strip() in caught.value.hint


def test_rule_and_ca_entries() -> None:
    rule = Pin(
        "rule", "reg.test/ns/app", (ID_A,), rule_name="app", registry="reg.test",
        repository="ns/app",
    )  # fmt: skip
    text = '[[rules]]\nname = "other"\nregistry = "reg.test"\n'
    edited = add_pin(text, rule, FILE)
    assert edited is not None
    assert tomllib.loads(edited)["rules"][1] == {
        "name": "app", "registry": "reg.test", "repository": "ns/app", "root_keys": [ID_A],
    }  # fmt: skip
    with pytest.raises(EditRefused, match="exists already"):
        add_pin(edited.replace('"other"', '"app"', 1), rule, FILE)
    with pytest.raises(EditRefused, match="not an array of tables"):
        add_pin('rules = "no"\n', rule, FILE)
    ca = Pin("ca", "reg.test/ns/app", ca_file=Path('/odd "dir"/ca.pem'), prefix="reg.test/")
    edited = add_pin("", ca, FILE)
    assert edited is not None
    assert tomllib.loads(edited) == {"trust_pinning": {"ca": {"reg.test/": '/odd "dir"/ca.pem'}}}


def test_toml_string_escapes() -> None:
    text = 'a"b\\c\n\x7f\té'
    assert tomllib.loads(f"k = {toml_string(text)}") == {"k": text}


def test_pin_in_force_follows_notary_precedence() -> None:
    pinning = TrustPinning(
        certs={"reg.test/*": (ID_A,), "reg.test/ns/*": (ID_B,)},
        ca={"reg.test/": "/a", "reg.test/ns/": "/b"},
    )
    assert pin_in_force(pinning, "reg.test/ns/app") == ("certs", "reg.test/ns/*")
    assert pin_in_force(TrustPinning(ca=pinning.ca), "reg.test/ns/app") == ("ca", "reg.test/ns/")
    exact = TrustPinning(certs={"reg.test/ns/app": (ID_A,), **pinning.certs})
    assert pin_in_force(exact, "reg.test/ns/app") == ("certs", "reg.test/ns/app")
    assert pin_in_force(pinning, "other.test/x") is None


# ------------------------------------------------------------------------------ end to end


@pytest.fixture
def make_env(isolated_home: Path) -> Iterator[MakeEnv]:
    yield from env_factory()


def _ca_env(make_env: MakeEnv, tmp_path: Path) -> tuple[Env, Path]:
    """The baseline repository with a root certificate issued by a CA (written to ca.pem)."""
    builder = baseline_builder()
    ca = generate_key("ecdsa-x509", cn="Pinning Test CA", is_ca=True)
    builder.rotate_key("root", [builder.new_key("ecdsa-x509", issuer=ca)], sign_with="new")
    env = make_env(builder)
    assert ca.cert is not None
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(ca.cert.public_bytes(serialization.Encoding.PEM))
    return env, ca_file


def _environ(env: Env) -> dict[str, str]:
    return {**os.environ, "DOCKER_CONTENT_TRUST_SERVER": env.server.url}


def test_ca_form_end_to_end(make_env: MakeEnv, tmp_path: Path) -> None:
    env, ca_file = _ca_env(make_env, tmp_path)
    config = tmp_path / "config.toml"
    config.write_text("[limits]\nretries = 1\n")
    notices: list[str] = []
    result = pin_repository(
        parse(GUN), config=config, write=True, environ=_environ(env),
        ca=(ca_file, "127.0.0.1:5000/"), notice=notices.append,
    )  # fmt: skip
    assert result.written and result.verified.first_use
    assert any(n.startswith("trust on first use") for n in notices)
    assert result.certificates[0].issuer == "CN=Pinning Test CA"
    assert not result.certificates[0].self_signed
    assert config.read_text() == (
        f'[limits]\nretries = 1\n\n[trust_pinning.ca]\n"127.0.0.1:5000/" = "{ca_file}"\n'
    )
    # Another CA is refused before anything is written.
    other = tmp_path / "other.pem"
    other_ca = generate_key("ecdsa-x509", cn="Other CA", is_ca=True)
    assert other_ca.cert is not None
    other.write_bytes(other_ca.cert.public_bytes(serialization.Encoding.PEM))
    fresh = tmp_path / "fresh.toml"
    with pytest.raises(TrustPinError, match="does not accept the verified root"):
        pin_repository(
            parse(GUN), config=fresh, write=True, environ=_environ(env),
            ca=(other, "127.0.0.1:5000/"),
        )  # fmt: skip
    assert not fresh.exists()


def test_shadowed_ca_pin_is_refused(make_env: MakeEnv, tmp_path: Path) -> None:
    env, ca_file = _ca_env(make_env, tmp_path)
    first = pin_repository(parse(REF), config=None, write=False, environ=_environ(env))
    config = tmp_path / "config.toml"
    config.write_text(first.pin.toml())  # a certs pin for the GUN: it beats any CA prefix
    before = config.read_text()
    with pytest.raises(TrustPinError, match="takes precedence"):
        pin_repository(
            parse(GUN), config=config, write=True, environ=_environ(env),
            ca=(ca_file, "127.0.0.1:5000/"),
        )  # fmt: skip
    assert config.read_text() == before
    with pytest.raises(InputError, match="does not cover"):
        pin_repository(
            parse(GUN), config=config, write=True, environ=_environ(env),
            ca=(ca_file, "other.test/"),
        )  # fmt: skip


def test_print_only_writes_nothing_and_pinned_first_use_is_not_tofu(
    make_env: MakeEnv, tmp_path: Path
) -> None:
    env = make_env()
    result = pin_repository(parse(REF), config=None, write=False, environ=_environ(env))
    assert not result.written and result.config is None
    assert result.pin.kind == "certs" and len(result.pin.key_ids) == 1
    assert [r.tag for r in result.verified.resolutions] == ["1.0"]
    # A cold cache with the pin in a file: no trust-on-first-use notice (a pinned first use).
    config = tmp_path / "pinned.toml"
    config.write_text(result.pin.toml())
    for path in env.trust_dir.rglob("*"):
        if path.is_file():
            path.unlink()
    notices: list[str] = []
    again = pin_repository(
        parse(REF), config=config, write=True, environ=_environ(env), notice=notices.append
    )
    assert again.already and not again.written and not again.verified.first_use
    assert not any(n.startswith("trust on first use") for n in notices)


def test_a_rule_name_the_loader_refuses_names_the_users_file(
    make_env: MakeEnv, tmp_path: Path
) -> None:
    env = make_env()
    config = tmp_path / "config.toml"
    with pytest.raises(ConfigError, match=r"config\.toml \(with the pin\):\d+: rules\[0\]\.name"):
        pin_repository(
            parse(REF), config=config, write=True, environ=_environ(env), rule="bad name!"
        )
    assert not config.exists()
    assert not list(tmp_path.glob(".trustpull-pin-*"))


def test_a_rule_that_would_replace_another_rules_requirements_is_refused(
    make_env: MakeEnv, tmp_path: Path
) -> None:
    env = make_env()
    config = tmp_path / "config.toml"
    text = '[[rules]]\nname = "team"\nregistry = "127.0.0.1:5000"\nsigners = ["releases"]\n'
    config.write_text(text)
    with pytest.raises(EditRefused, match=r"rule team .* applies to") as caught:
        pin_repository(parse(REF), config=config, write=True, environ=_environ(env), rule="app")
    assert caught.value.hint is not None and "root_keys = [" in caught.value.hint
    assert config.read_text() == text


def test_a_rule_pin_beside_a_tag_rule_pins_the_repository(
    make_env: MakeEnv, tmp_path: Path
) -> None:
    """`pin --rule` for `NAME:TAG` whose tag a tag-scoped rule decides: the new rule pins the
    repository, whose root a tag rule cannot set (it was refused as replacing the tag rule's
    requirements, and as "does not apply": the tag rule was taken for the repository's)."""
    env = make_env()
    config = tmp_path / "config.toml"
    text = (
        '[[rules]]\nname = "one"\nregistry = "127.0.0.1:5000"\nrepository = "ns/app"\n'
        'tag = "1.0"\nsigners = ["releases"]\n'
    )
    config.write_text(text)
    result = pin_repository(
        parse(REF), config=config, write=True, environ=_environ(env), rule="app"
    )
    assert result.written and [r.tag for r in result.verified.resolutions] == ["1.0"]
    rules = tomllib.loads(config.read_text())["rules"]
    assert [r["name"] for r in rules] == ["one", "app"]
    assert rules[1]["root_keys"] == list(result.pin.key_ids)
