"""Tests for trust.reference: docker's own test tables, the attack catalogue's group I, and
properties that must hold for any input.

The vector tables are read from the shared directory (never copied here) so that the tests
follow the upstream extraction. Without the file the vector tests skip locally and fail on CI.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tests.ci import skip_or_fail
from trust.errors import InvalidReferenceError
from trust.reference import (
    ANCHORED_IDENTIFIER_RE,
    ANCHORED_NAME_RE,
    DOMAIN_AND_PORT_RE,
    REFERENCE_RE,
    DigestReference,
    Reference,
    familiar_match,
    parse,
    parse_any_reference,
    parse_digest,
    parse_docker_ref,
    parse_named,
    parse_normalized_named,
    parse_reference,
    parse_tag,
    split_docker_domain,
    with_name,
)

VECTORS_PATH = (
    Path(__file__).resolve().parents[2].parent / "shared" / "realworld" / "reference-vectors.json"
)

Case = dict[str, Any]


def _load_cases() -> list[Case]:
    try:
        data = json.loads(VECTORS_PATH.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    cases: list[Case] = data["cases"]
    return cases


CASES = _load_cases()

#: Upstream count per suite (reference-vectors.md); guards against a silently shrunken file.
SUITE_COUNTS = {
    "TestFullNameRegexp": 63,
    "TestReferenceParse": 48,
    "TestParseRepositoryInfo": 48,
    "TestValidateReferenceName": 41,
    "TestDomainRegexp": 30,
    "TestValidateRemoteName": 21,
    "TestParseAnyReference": 14,
    "TestReferenceRegexp": 12,
    "TestNormalizedSplitHostname": 11,
    "TestParseDockerRef": 11,
    "TestMatch": 9,
    "TestParseNamed": 8,
    "TestWithNameFailure": 7,
    "TestDomainAndPath": 6,
    "TestWithTag": 5,
    "TestIdentifierRegexp": 5,
    "TestSerialization": 4,
    "TestWithDigest": 4,
    "TestInvalidReferenceComponents": 3,
    "TestParseReferenceWithTagAndDigest": 1,
    "TestMatchError": 1,
}


def _missing() -> None:
    message = f"reference vectors not found at {VECTORS_PATH}"
    skip_or_fail(message)


def suite(name: str) -> list[Any]:
    """pytest params for one upstream suite, with the vector id as the test id."""
    cases = [case for case in CASES if case["suite"] == name]
    if not cases:
        return [pytest.param(None, id=f"{name}-vectors-missing")]
    return [pytest.param(case, id=case["id"]) for case in cases]


def need(case: Case | None) -> Case:
    if case is None:
        _missing()
    assert case is not None
    return case


def assert_refused(func: Any, *args: Any, message: str | None = None) -> None:
    with pytest.raises(InvalidReferenceError) as info:
        func(*args)
    if message is not None:
        assert str(info.value) == message


HEX64 = "86e0e091d0da6bde2456dbb48306f3956bbeb2eae1b5b9a43045843f69fe4aaa"
DIGEST = f"sha256:{HEX64}"


# --- the vector file itself ------------------------------------------------------------------


def test_vectors_present_and_complete() -> None:
    if not CASES:
        _missing()
    counts: dict[str, int] = {}
    for case in CASES:
        counts[case["suite"]] = counts.get(case["suite"], 0) + 1
    assert counts == SUITE_COUNTS


# --- reference_test.go -----------------------------------------------------------------------


@pytest.mark.parametrize("case", suite("TestReferenceParse"))
def test_reference_parse(case: Case | None) -> None:
    case = need(case)
    expected = case["expected"]
    if "crypto/sha512" in case.get("note", ""):
        # Upstream fails only because its test binary lacks sha512; docker links it (§4.5).
        assert expected["error"]["kind"] == "digest.ErrDigestUnsupported"
        ref = parse_reference(case["input"])
        assert ref.digest is not None and ref.digest.startswith("sha512:")
        return
    if "error" in expected:
        assert_refused(parse_reference, case["input"], message=expected["error"]["message"])
        return
    ref = parse_reference(case["input"])
    assert str(ref) == expected["string"] == case["input"]
    assert ref.name == expected["name"]
    assert ref.domain == expected["domain"]
    assert ref.path == expected["derived_path"]
    assert ref.tag == expected["tag"]
    assert ref.digest == expected["digest"]
    assert ref.tag_given is (expected["tag"] is not None)


@pytest.mark.parametrize("case", suite("TestWithNameFailure"))
def test_with_name_failure(case: Case | None) -> None:
    case = need(case)
    assert_refused(with_name, case["input"], message=case["expected"]["error"]["message"])


@pytest.mark.parametrize("case", suite("TestDomainAndPath"))
def test_domain_and_path(case: Case | None) -> None:
    case = need(case)
    ref = with_name(case["input"])
    assert (ref.domain, ref.path) == (case["expected"]["domain"], case["expected"]["path"])
    assert ref.name == case["input"]
    assert ref.tag is None and ref.digest is None


@pytest.mark.parametrize("case", suite("TestSerialization"))
def test_serialization(case: Case | None) -> None:
    case = need(case)
    expected = case["expected"]
    if "error" in expected:
        assert_refused(parse_reference, case["input"], message=expected["error"]["message"])
        return
    ref = parse_reference(case["input"])
    assert (ref.name, ref.tag, ref.digest) == (
        expected["name"],
        expected["tag"],
        expected["digest"],
    )
    assert json.loads(expected["json_roundtrip"])["Field"] == str(ref)


@pytest.mark.parametrize("case", suite("TestWithTag"))
def test_with_tag(case: Case | None) -> None:
    case = need(case)
    inp = case["input"]
    ref = with_name(inp["name"])
    if inp["digest"] is not None:
        # Upstream's digests here are short; docker's WithDigest checks syntax only.
        ref = ref.with_digest(inp["digest"], strict=False)
    ref = ref.with_tag(inp["tag"])
    assert str(ref) == case["expected"]["string"]
    assert ref.tag == inp["tag"] and ref.tag_given


@pytest.mark.parametrize("case", suite("TestWithDigest"))
def test_with_digest(case: Case | None) -> None:
    case = need(case)
    inp = case["input"]
    ref = with_name(inp["name"])
    if inp["tag"] is not None:
        ref = ref.with_tag(inp["tag"])
    result = ref.with_digest(inp["digest"], strict=False)
    assert str(result) == case["expected"]["string"]
    # trustpull's default is the full go-digest check, which these short digests fail.
    assert_refused(ref.with_digest, inp["digest"], message="invalid checksum digest length")


@pytest.mark.parametrize("case", suite("TestParseNamed"))
def test_parse_named(case: Case | None) -> None:
    case = need(case)
    expected = case["expected"]
    if "error" in expected:
        assert_refused(parse_named, case["input"], message=expected["error"]["message"])
        return
    ref = parse_named(case["input"])
    assert (ref.domain, ref.path) == (expected["domain"], expected["path"])


# --- normalize_test.go -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "case", suite("TestValidateReferenceName") + suite("TestValidateRemoteName")
)
def test_validate_name(case: Case | None) -> None:
    case = need(case)
    if case["expected"]["valid"]:
        ref = parse_normalized_named(case["input"])
        assert ref.domain and ref.path
    else:
        assert_refused(parse_normalized_named, case["input"])


@pytest.mark.parametrize("case", suite("TestParseRepositoryInfo"))
def test_parse_repository_info(case: Case | None) -> None:
    case = need(case)
    expected = case["expected"]
    ref = parse_normalized_named(case["input"])
    assert ref.familiar_name() == expected["familiar_name"]
    assert str(ref) == expected["string"]
    assert ref.name == expected["name"]
    assert (ref.domain, ref.path) == (expected["domain"], expected["path"])


@pytest.mark.parametrize("case", suite("TestNormalizedSplitHostname"))
def test_normalized_split_hostname(case: Case | None) -> None:
    case = need(case)
    expected = (case["expected"]["domain"], case["expected"]["path"])
    ref = parse_normalized_named(case["input"])
    assert (ref.domain, ref.path) == expected
    assert split_docker_domain(case["input"]) == expected


@pytest.mark.parametrize("case", suite("TestInvalidReferenceComponents"))
def test_invalid_reference_components(case: Case | None) -> None:
    case = need(case)
    inp = case["input"]
    if isinstance(inp, str):
        assert_refused(parse_normalized_named, inp)
        return
    ref = parse_normalized_named(inp["name"])
    if "tag" in inp:
        assert_refused(ref.with_tag, inp["tag"], message="invalid tag format")
    else:
        assert_refused(ref.with_digest, inp["digest"])
        with pytest.raises(InvalidReferenceError, match=r"^invalid digest format$"):
            ref.with_digest(inp["digest"], strict=False)


@pytest.mark.parametrize("case", suite("TestParseReferenceWithTagAndDigest"))
def test_parse_reference_with_tag_and_digest(case: Case | None) -> None:
    case = need(case)
    expected = case["expected"]
    ref = parse(case["input"])
    assert str(ref) == expected["string"]
    assert ref.familiar() == expected["familiar_string"]
    assert ref.name == expected["name"]
    assert ref.tag == expected["tag"] and ref.tag_given
    assert ref.digest == expected["digest"]


@pytest.mark.parametrize("case", suite("TestParseAnyReference"))
def test_parse_any_reference(case: Case | None) -> None:
    case = need(case)
    expected = case["expected"]
    ref = parse_any_reference(case["input"])
    assert str(ref) == expected["string"]
    if expected["kind"] == "digestReference":
        assert isinstance(ref, DigestReference)
        assert ref.digest == expected["digest"]
    else:
        assert isinstance(ref, Reference)
        assert ref == parse_normalized_named(case["input"])


@pytest.mark.parametrize("case", suite("TestMatch"))
def test_familiar_match(case: Case | None) -> None:
    case = need(case)
    ref = parse_any_reference(case["input"]["reference"])
    assert familiar_match(case["input"]["pattern"], ref) is case["expected"]["match"]


@pytest.mark.parametrize("case", suite("TestMatchError"))
def test_familiar_match_bad_pattern(case: Case | None) -> None:
    case = need(case)
    ref = parse_any_reference(case["input"]["reference"])
    with pytest.raises(ValueError, match="syntax error in pattern"):
        familiar_match(case["input"]["pattern"], ref)


@pytest.mark.parametrize(
    ("pattern", "reference", "matched"),
    [
        ("example.com/*", "example.com/team/app:1", False),  # `*` never crosses `/`
        ("example.com/*/app", "example.com/team/app:1", True),
        ("example.com/*/app:?", "example.com/team/app:1", True),
        ("example.com/team/app?1", "example.com/team/app:1", True),
        ("alpine", "alpine:3", True),  # falls back to the familiar name
        ("alpine??", "alpine", False),
        ("[a-c]lpine", "alpine", True),
        ("[^a]lpine", "alpine", False),
        ("[z-a]lpine", "alpine", False),
        ("\\alpine", "alpine", True),
        ("sha256:*", HEX64, True),
        ("*", HEX64, True),
        ("library/*", "docker.io/library/a/b", False),
    ],
)
def test_familiar_match_glob_semantics(pattern: str, reference: str, matched: bool) -> None:
    assert familiar_match(pattern, parse_any_reference(reference)) is matched


@pytest.mark.parametrize("pattern", ["[", "[]", "[^]", "alpine\\", "[a-]", "[-a]", "[a"])
def test_familiar_match_rejects_bad_patterns(pattern: str) -> None:
    with pytest.raises(ValueError, match="syntax error in pattern"):
        familiar_match(pattern, parse("alpine"))


@pytest.mark.parametrize("case", suite("TestParseDockerRef"))
def test_parse_docker_ref(case: Case | None) -> None:
    case = need(case)
    assert str(parse_docker_ref(case["input"])) == case["expected"]["string"]
    ref = parse(case["input"])
    if ref.digest is not None and ref.tag is not None:
        # trustpull's parse() keeps the typed tag beside the digest (attacks.md I05).
        assert str(ref) != case["expected"]["string"]
        assert str(ref.with_digest(ref.digest)) == str(ref)
    else:
        assert str(ref) == case["expected"]["string"]


# --- regexp_test.go --------------------------------------------------------------------------


@pytest.mark.parametrize("case", suite("TestDomainRegexp"))
def test_domain_regexp(case: Case | None) -> None:
    case = need(case)
    assert (DOMAIN_AND_PORT_RE.fullmatch(case["input"]) is not None) is case["expected"]["match"]


def _check_submatches(regexp: re.Pattern[str], case: Case) -> None:
    match = regexp.fullmatch(case["input"])
    assert (match is not None) is case["expected"]["match"]
    if match is not None and "subs" in case["expected"]:
        assert [group or "" for group in match.groups()] == case["expected"]["subs"]


@pytest.mark.parametrize("case", suite("TestFullNameRegexp"))
def test_full_name_regexp(case: Case | None) -> None:
    _check_submatches(ANCHORED_NAME_RE, need(case))


@pytest.mark.parametrize("case", suite("TestReferenceRegexp"))
def test_reference_regexp(case: Case | None) -> None:
    _check_submatches(REFERENCE_RE, need(case))


@pytest.mark.parametrize("case", suite("TestIdentifierRegexp"))
def test_identifier_regexp(case: Case | None) -> None:
    case = need(case)
    matched = ANCHORED_IDENTIFIER_RE.fullmatch(case["input"]) is not None
    assert matched is case["expected"]["match"]


# --- attacks.md group I ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("Alpine", "invalid reference format: repository name (library/Alpine) must be lowercase"),
        (
            "docker.io/Library/alpine",
            "invalid reference format: repository name (Library/alpine) must be lowercase",
        ),
        ("ALPINE", "invalid reference format: repository name (library/ALPINE) must be lowercase"),
        (
            "localhost:5000/App:v1",
            "invalid reference format: repository name (App) must be lowercase",
        ),
    ],
)
def test_i01_upper_case_path_refused(text: str, message: str) -> None:
    assert_refused(parse, text, message=message)


def test_i01_upper_case_domain_is_kept_not_lowered() -> None:
    ref = parse("Registry.Test/app")
    assert ref.domain == "Registry.Test" and ref.name == "Registry.Test/app"


def test_i02_length_limits() -> None:
    too_long = "repository name must not be more than 255 characters"
    # The limit applies to the normalised path, so `library/` counts against it.
    assert parse("a" * 247, default_tag=False).path == "library/" + "a" * 247
    assert_refused(parse, "a" * 248, message=too_long)
    assert parse("example.com/" + "b" * 255).path == "b" * 255
    assert_refused(parse, "example.com/" + "b" * 256, message=too_long)
    assert parse("alpine:" + "t" * 128).tag == "t" * 128
    assert_refused(parse, "alpine:" + "t" * 129, message="invalid reference format")
    assert_refused(parse_tag, "t" * 129, message="invalid tag format")
    assert_refused(parse("alpine").with_tag, "t" * 129, message="invalid tag format")


def test_i04_digest_only_gets_no_default_tag() -> None:
    ref = parse(f"alpine@{DIGEST}")
    assert ref.digest == DIGEST
    assert ref.tag is None and ref.tag_given is False
    assert str(ref) == f"docker.io/library/alpine@{DIGEST}"
    assert ref.familiar() == f"alpine@{DIGEST}"
    assert ref.name == "docker.io/library/alpine"


def test_i05_tag_and_digest_both_kept() -> None:
    ref = parse(f"alpine:3.19@{DIGEST}")
    assert (ref.tag, ref.digest, ref.tag_given) == ("3.19", DIGEST, True)
    assert str(ref) == f"docker.io/library/alpine:3.19@{DIGEST}"
    assert ref.familiar() == f"alpine:3.19@{DIGEST}"
    assert ref.trimmed() == Reference("docker.io", "library/alpine", None, None, False)


@pytest.mark.parametrize(
    ("digest", "message"),
    [
        ("sha256:" + HEX64.upper(), "invalid checksum digest format"),
        ("sha256:" + HEX64[:63], "invalid checksum digest length"),
        ("sha256:" + HEX64 + "a", "invalid checksum digest length"),
        ("md5:" + HEX64[:32], "unsupported digest algorithm"),
        ("sha512:" + HEX64, "invalid checksum digest length"),
        ("sha384:" + HEX64, "invalid checksum digest length"),
        ("sha256:" + "g" * 64, "invalid checksum digest format"),
        ("sha256:", "invalid checksum digest format"),
        (":" + HEX64, "invalid checksum digest format"),
        ("SHA256:" + HEX64, "invalid checksum digest format"),
        (HEX64, "invalid checksum digest format"),
    ],
)
def test_i06_malformed_digests(digest: str, message: str) -> None:
    assert_refused(parse_digest, digest, message=message)
    assert_refused(parse("alpine").with_digest, digest, message=message)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (f"alpine@sha256:{HEX64.upper()}", "invalid checksum digest format"),
        (f"alpine@sha256:{HEX64[:63]}", "invalid checksum digest length"),
        (f"alpine@md5:{HEX64[:32]}", "unsupported digest algorithm"),
        (f"alpine@sha512:{HEX64}", "invalid checksum digest length"),
        ("alpine@sha256:" + "g" * 64, "invalid reference format"),
        (
            HEX64,
            f"invalid repository name ({HEX64}), cannot specify 64-byte hexadecimal strings",
        ),
    ],
)
def test_i06_malformed_digest_in_reference(text: str, message: str) -> None:
    assert_refused(parse, text, message=message)


def test_i06_registered_algorithms_accepted() -> None:
    for algorithm, size in (("sha256", 64), ("sha384", 96), ("sha512", 128)):
        digest = f"{algorithm}:" + "0a" * (size // 2)
        assert parse_digest(digest) == digest
        assert parse(f"alpine@{digest}").digest == digest


@pytest.mark.parametrize(
    ("text", "gun", "pulled"),
    [
        ("alpine", "docker.io/library/alpine", "docker.io/library/alpine:latest"),
        ("library/alpine", "docker.io/library/alpine", "docker.io/library/alpine:latest"),
        ("docker.io/alpine", "docker.io/library/alpine", "docker.io/library/alpine:latest"),
        (
            "index.docker.io/library/alpine",
            "docker.io/library/alpine",
            "docker.io/library/alpine:latest",
        ),
        ("registry.test:5000/app", "registry.test:5000/app", "registry.test:5000/app:latest"),
        ("localhost/app", "localhost/app", "localhost/app:latest"),
        ("[::1]:5000/app", "[::1]:5000/app", "[::1]:5000/app:latest"),
        ("Registry.Test/app", "Registry.Test/app", "Registry.Test/app:latest"),
        ("localhost:5000", "docker.io/library/localhost", "docker.io/library/localhost:5000"),
        ("docker.io/library/a/b", "docker.io/library/a/b", "docker.io/library/a/b:latest"),
    ],
)
def test_i07_normalising_to_the_gun(text: str, gun: str, pulled: str) -> None:
    ref = parse(text)
    assert ref.name == gun
    assert ref.trimmed().name == gun
    assert str(ref) == pulled
    assert str(ref.with_digest(DIGEST)).startswith(gun + ":")
    assert ref.with_digest(DIGEST).name == gun


@pytest.mark.parametrize(
    "text",
    [
        "--help",
        "-v=/:/host",
        "https://docker.io/library/alpine",
        "docker.io//alpine",
        "alpine/",
        ":tag",
        f"@{DIGEST}",
        "",
        "[fc00::1]",
        "alpine:",
        "alpine@",
        "alpine:tag:tag",
        "alpine@@" + DIGEST,
        "alpine latest",
        " alpine",
    ],
)
def test_i08_injection_schemes_empty_components(text: str) -> None:
    assert_refused(parse, text, message="invalid reference format")


@pytest.mark.parametrize(
    "text",
    [
        "alpine\n",
        "alpine:latest\n",
        f"alpine@{DIGEST}\n",
        "docker.io/library/alpine\r",
        "alp\u0131ne",  # dotless i
        "alpine:\u0661\u0662",  # Arabic-Indic digits: Unicode \w would accept them
        "alpine:t\u00e9st",
        "localhost:\uff15000/app",  # fullwidth digit in the port
        "\uff41lpine",  # fullwidth a
        "alpine\x00",
    ],
)
def test_trailing_newline_and_non_ascii_refused(text: str) -> None:
    assert_refused(parse, text)


# --- dct.md §4.4 worked examples -------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "full", "familiar", "gun"),
    [
        ("alpine", "docker.io/library/alpine:latest", "alpine:latest", "docker.io/library/alpine"),
        ("user/app:1.0", "docker.io/user/app:1.0", "user/app:1.0", "docker.io/user/app"),
        ("index.docker.io/user/app", "docker.io/user/app:latest", "user/app:latest", None),
        ("docker.io/alpine", "docker.io/library/alpine:latest", "alpine:latest", None),
        ("localhost:5000/app:v1", "localhost:5000/app:v1", "localhost:5000/app:v1", None),
        (
            "registry.example.com/team/app",
            "registry.example.com/team/app:latest",
            "registry.example.com/team/app:latest",
            None,
        ),
        (
            "Registry.Example.com/app",
            "Registry.Example.com/app:latest",
            "Registry.Example.com/app:latest",
            "Registry.Example.com/app",
        ),
        (f"alpine@{DIGEST}", f"docker.io/library/alpine@{DIGEST}", f"alpine@{DIGEST}", None),
        (
            "docker.io/library/a/b",
            "docker.io/library/a/b:latest",
            "library/a/b:latest",
            "docker.io/library/a/b",
        ),
        ("docker.io/user/app:1", "docker.io/user/app:1", "user/app:1", "docker.io/user/app"),
    ],
)
def test_worked_examples(text: str, full: str, familiar: str, gun: str | None) -> None:
    ref = parse(text)
    assert str(ref) == full
    assert ref.familiar() == familiar
    if gun is not None:
        assert ref.name == gun


def test_default_tag_is_marked_as_not_given() -> None:
    ref = parse("alpine")
    assert (ref.tag, ref.tag_given) == ("latest", False)
    assert parse("alpine:latest").tag_given is True
    bare = parse("alpine", default_tag=False)
    assert (bare.tag, bare.digest, bare.tag_given) == (None, None, False)
    assert str(bare) == "docker.io/library/alpine"


def test_with_tag_and_with_digest_and_trimmed() -> None:
    ref = parse("alpine").with_tag("3.19")
    assert (ref.tag, ref.tag_given) == ("3.19", True)
    pinned = ref.with_digest(DIGEST)
    assert str(pinned) == f"docker.io/library/alpine:3.19@{DIGEST}"
    assert str(pinned.with_tag("edge")) == f"docker.io/library/alpine:edge@{DIGEST}"
    assert str(pinned.trimmed()) == "docker.io/library/alpine"
    assert pinned.trimmed().tag_given is False
    for bad in ("-foo", ".foo", "a b", "", "a:b", "a@b"):
        assert_refused(ref.with_tag, bad, message="invalid tag format")


def test_parse_named_requires_canonical_form() -> None:
    assert parse_named("docker.io/library/alpine").name == "docker.io/library/alpine"
    assert_refused(parse_named, "alpine", message="repository name must be canonical")


def test_familiar_form_is_ambiguous_for_domain_like_hub_paths() -> None:
    # Docker Hub paths whose first component looks like a domain do not survive the
    # familiar round trip: only `name`/`str()` may identify what is verified and pulled.
    ref = parse("docker.io/localhost/app")
    assert ref.name == "docker.io/localhost/app"
    assert ref.familiar_name() == "localhost/app"
    assert parse(ref.familiar()).name == "localhost/app"
    assert parse(str(ref)).name == ref.name


# --- properties ------------------------------------------------------------------------------

_REFERENCE_ALPHABET = st.sampled_from(list("aAbz09._-:/@[]\n \u0131\uff10"))
_TEXT = st.text(_REFERENCE_ALPHABET, max_size=60) | st.text(max_size=40)

_COMPONENT = st.from_regex(r"[a-z0-9]{1,6}(?:(?:[._]|__|-{1,3})[a-z0-9]{1,6}){0,2}", fullmatch=True)
_DOMAIN = st.sampled_from(
    [
        "",
        "docker.io/",
        "index.docker.io/",
        "localhost/",
        "localhost:5000/",
        "registry.test/",
        "Registry.Test:443/",
        "[::1]:5000/",
        "127.0.0.1/",
        "a-b.c/",
    ]
)
_TAG = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}", fullmatch=True)
_HEX_DIGEST = st.binary(min_size=32, max_size=32).map(lambda raw: "sha256:" + raw.hex())


@st.composite
def valid_references(draw: st.DrawFn) -> str:
    """Strings built from the grammar, so parse() must accept every one of them."""
    path = "/".join(draw(st.lists(_COMPONENT, min_size=1, max_size=3)))
    text = draw(_DOMAIN) + path
    assume(len(path) <= 200 and not ANCHORED_IDENTIFIER_RE.fullmatch(text))
    if draw(st.booleans()):
        text += ":" + draw(_TAG)
    if draw(st.booleans()):
        text += "@" + draw(_HEX_DIGEST)
    return text


_PROPERTY_SETTINGS = settings(
    max_examples=200, database=None, suppress_health_check=[HealthCheck.too_slow]
)


def _reparses_to_same(ref: Reference) -> None:
    again = parse(str(ref))
    # A defaulted `latest` is explicit once printed, so only tag_given may differ.
    assert again == Reference(ref.domain, ref.path, ref.tag, ref.digest, ref.tag is not None)
    assert parse(ref.name, default_tag=False) == ref.trimmed()


@_PROPERTY_SETTINGS
@given(_TEXT)
def test_parse_refuses_only_with_invalid_reference_error(text: str) -> None:
    try:
        ref = parse(text)
    except InvalidReferenceError as error:
        assert isinstance(error, ValueError) and error.exit_code == 3
        assert str(error)
        return
    assert ref.domain and ref.path
    assert ref.tag is not None or ref.digest is not None
    assert text.isascii() and "\n" not in text
    _reparses_to_same(ref)


@_PROPERTY_SETTINGS
@given(valid_references())
def test_valid_references_round_trip(text: str) -> None:
    ref = parse(text)
    _reparses_to_same(ref)
    assert ref.tag_given is (":" in text.split("/")[-1].split("@")[0])
    familiar_name = ref.familiar_name()
    first, slash, _ = familiar_name.partition("/")
    domain_like = ref.domain == "docker.io" and slash and ("." in first or first == "localhost")
    if domain_like:
        assert parse(ref.familiar()).name != ref.name  # the ambiguity docker has, too
    else:
        assert parse(ref.familiar()) == parse(str(ref))
        assert parse(familiar_name, default_tag=False) == ref.trimmed()


@_PROPERTY_SETTINGS
@given(_TEXT)
def test_non_normalised_parse_round_trips(text: str) -> None:
    try:
        ref = parse_reference(text)
    except InvalidReferenceError:
        return
    assert str(ref) == text
    assert REFERENCE_RE.fullmatch(text) is not None


@pytest.mark.parametrize(
    "text",
    [
        "a" * 100_000 + "!",
        "a." * 50_000 + "!",
        "a-" * 50_000,
        "a" * 50_000 + "/" + "a" * 50_000 + ":",
        "[" + ":" * 100_000,
        "a/" * 50_000 + "A",
        "a" + "-" * 100_000 + "!",
        "a@sha256:" + "f" * 100_000 + "g",
        "a__" * 30_000 + "_",
        "A" * 100_000,
    ],
    ids=lambda text: f"{text[:6]!r}...x{len(text)}",
)
def test_no_catastrophic_backtracking(text: str) -> None:
    start = time.monotonic()
    with pytest.raises(InvalidReferenceError):
        parse(text)
    assert time.monotonic() - start < 2.0
