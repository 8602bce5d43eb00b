"""Docker image references, parsed and normalised exactly as distribution/reference does.

The Notary GUN that trustpull verifies and the repository the Engine pulls are both derived
from one `Reference`, so this module must agree with docker byte for byte: a different
normalisation would verify one repository and pull another (attacks.md I07). The grammar is
spelled with `re.ASCII` and matched with `fullmatch`, because Python's `\\w` is Unicode and
its `$` also matches before a trailing newline, neither of which Go's RE2 does (dct.md §6.23).

Error messages are docker's own, so a user sees the same text from `trustpull` and
`docker pull`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Final

from trust.errors import InvalidReferenceError, UsageError

__all__ = [
    "ANCHORED_IDENTIFIER_RE",
    "ANCHORED_NAME_RE",
    "DEFAULT_DOMAIN",
    "DEFAULT_TAG",
    "DIGEST_ALGORITHMS",
    "DIGEST_RE",
    "DOMAIN_AND_PORT",
    "DOMAIN_AND_PORT_RE",
    "ERR_DIGEST_INVALID_FORMAT",
    "ERR_DIGEST_INVALID_LENGTH",
    "ERR_DIGEST_SYNTAX",
    "ERR_DIGEST_UNSUPPORTED",
    "ERR_NAME_CONTAINS_UPPERCASE",
    "ERR_NAME_EMPTY",
    "ERR_NAME_NOT_CANONICAL",
    "ERR_NAME_TOO_LONG",
    "ERR_REFERENCE_INVALID_FORMAT",
    "ERR_TAG_INVALID_FORMAT",
    "LEGACY_DEFAULT_DOMAIN",
    "NAME_TOTAL_LENGTH_MAX",
    "OFFICIAL_REPO_PREFIX",
    "REFERENCE_RE",
    "REMOTE_NAME",
    "TAG_RE",
    "DigestReference",
    "Reference",
    "familiar_match",
    "go_glob_to_regex",
    "parse",
    "parse_any_reference",
    "parse_digest",
    "parse_docker_ref",
    "parse_named",
    "parse_normalized_named",
    "parse_reference",
    "parse_tag",
    "refuse_all_tags_with",
    "split_docker_domain",
    "with_name",
]

# --- constants (distribution/reference normalize.go, reference.go) ---------------------------

NAME_TOTAL_LENGTH_MAX: Final = 255
DEFAULT_DOMAIN: Final = "docker.io"
LEGACY_DEFAULT_DOMAIN: Final = "index.docker.io"
OFFICIAL_REPO_PREFIX: Final = "library/"
DEFAULT_TAG: Final = "latest"
_LOCALHOST: Final = "localhost"

#: Registered go-digest algorithms (docker links all three) → hex length of the encoded part.
DIGEST_ALGORITHMS: Final[dict[str, int]] = {"sha256": 64, "sha384": 96, "sha512": 128}

# --- error texts (docker's, verbatim) ---------------------------------------------------------

ERR_REFERENCE_INVALID_FORMAT: Final = "invalid reference format"
ERR_TAG_INVALID_FORMAT: Final = "invalid tag format"
ERR_DIGEST_SYNTAX: Final = "invalid digest format"
ERR_NAME_CONTAINS_UPPERCASE: Final = "repository name must be lowercase"
ERR_NAME_EMPTY: Final = "repository name must have at least one component"
ERR_NAME_TOO_LONG: Final = (
    f"repository name must not be more than {NAME_TOTAL_LENGTH_MAX} characters"
)
ERR_NAME_NOT_CANONICAL: Final = "repository name must be canonical"
ERR_DIGEST_INVALID_FORMAT: Final = "invalid checksum digest format"
ERR_DIGEST_INVALID_LENGTH: Final = "invalid checksum digest length"
ERR_DIGEST_UNSUPPORTED: Final = "unsupported digest algorithm"

# --- grammar (regexp.go), composed the same way so the submatches agree with RE2 ----------------

_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|[-]+)"
_PATH_COMPONENT = rf"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*"
REMOTE_NAME = rf"{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
_DOMAIN_NAME_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN_NAME = rf"{_DOMAIN_NAME_COMPONENT}(?:\.{_DOMAIN_NAME_COMPONENT})*"
_IPV6_ADDRESS = r"\[(?:[a-fA-F0-9:]+)\]"
_HOST = rf"(?:{_DOMAIN_NAME}|{_IPV6_ADDRESS})"
DOMAIN_AND_PORT = rf"{_HOST}(?::[0-9]+)?"
_NAME = rf"(?:{DOMAIN_AND_PORT}/)?{REMOTE_NAME}"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*[:][0-9a-fA-F]{32,}"
_IDENTIFIER = r"[a-f0-9]{64}"

#: Whole reference: groups (name, tag, digest). Use with `fullmatch` only.
REFERENCE_RE: Final = re.compile(rf"({_NAME})(?::({_TAG}))?(?:@({_DIGEST}))?", re.ASCII)
#: A name split into groups (domain, path). Use with `fullmatch` only.
ANCHORED_NAME_RE: Final = re.compile(rf"(?:({DOMAIN_AND_PORT})/)?({REMOTE_NAME})", re.ASCII)
DOMAIN_AND_PORT_RE: Final = re.compile(DOMAIN_AND_PORT, re.ASCII)
TAG_RE: Final = re.compile(_TAG, re.ASCII)
#: The reference grammar's digest syntax (hex of any case, at least 32 characters).
DIGEST_RE: Final = re.compile(_DIGEST, re.ASCII)
ANCHORED_IDENTIFIER_RE: Final = re.compile(_IDENTIFIER, re.ASCII)

# go-digest's own, looser syntax: decides "unsupported algorithm" versus "invalid format".
_GO_DIGEST_RE: Final = re.compile(r"[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+", re.ASCII)
_ENCODED_RE: Final = re.compile(r"[a-f0-9]+", re.ASCII)


def _fail(message: str) -> InvalidReferenceError:
    return InvalidReferenceError(message)


@dataclass(frozen=True)
class Reference:
    """A named reference: docker's repository, tagged, canonical or tagged+canonical kinds.

    `domain` is empty only for references built by the non-normalising `parse_reference` or
    `with_name` from a string without a domain; `parse()` always fills it in.
    """

    domain: str
    path: str
    tag: str | None = None
    digest: str | None = None
    tag_given: bool = False

    @property
    def name(self) -> str:
        """`domain/path`: the Notary GUN and the repository the Engine pulls."""
        return f"{self.domain}/{self.path}" if self.domain else self.path

    def familiar_name(self) -> str:
        """Docker's short display name (`alpine`, `user/app`); never use it as an identity."""
        if self.domain != DEFAULT_DOMAIN:
            return self.name
        path = self.path
        if path.startswith(OFFICIAL_REPO_PREFIX):
            rest = path[len(OFFICIAL_REPO_PREFIX) :]
            if "/" not in rest:
                return rest
        return path

    def _suffix(self) -> str:
        tag = f":{self.tag}" if self.tag is not None else ""
        digest = f"@{self.digest}" if self.digest is not None else ""
        return tag + digest

    def familiar(self) -> str:
        """FamiliarString: the familiar name plus `:tag` and `@digest`, for messages."""
        return self.familiar_name() + self._suffix()

    def __str__(self) -> str:
        return self.name + self._suffix()

    def with_tag(self, tag: str) -> Reference:
        """WithTag: a validated tag, keeping any digest (a tag+digest pair stays both)."""
        return replace(self, tag=parse_tag(tag), tag_given=True)

    def with_digest(self, digest: str, *, strict: bool = True) -> Reference:
        """WithDigest, keeping any tag.

        strict (the default) applies the full go-digest check, so a `Reference` never carries
        a digest the Engine would refuse; `strict=False` is docker's syntax-only check.
        """
        if strict:
            digest = parse_digest(digest)
        elif DIGEST_RE.fullmatch(digest) is None:
            raise _fail(ERR_DIGEST_SYNTAX)
        return replace(self, digest=digest)

    def trimmed(self) -> Reference:
        """TrimNamed: the repository alone, as used for the GUN."""
        return Reference(self.domain, self.path)


@dataclass(frozen=True)
class DigestReference:
    """A bare digest with no name: what ParseAnyReference returns for an image ID."""

    digest: str

    def __str__(self) -> str:
        return self.digest


def parse_tag(tag: str) -> str:
    """Validate a tag against `[\\w][\\w.-]{0,127}` (ASCII `\\w`); returns it unchanged."""
    if TAG_RE.fullmatch(tag) is None:
        raise _fail(ERR_TAG_INVALID_FORMAT)
    return tag


def parse_digest(text: str) -> str:
    """go-digest `Parse`: registered algorithm, exact hex length, lower-case hex only.

    Upper-case hex passes the reference grammar but not this, exactly as in docker.
    """
    colon = text.find(":")
    if colon <= 0 or colon + 1 == len(text):
        raise _fail(ERR_DIGEST_INVALID_FORMAT)
    algorithm, encoded = text[:colon], text[colon + 1 :]
    size = DIGEST_ALGORITHMS.get(algorithm)
    if size is None:
        if _GO_DIGEST_RE.fullmatch(text) is None:
            raise _fail(ERR_DIGEST_INVALID_FORMAT)
        raise _fail(ERR_DIGEST_UNSUPPORTED)
    if len(encoded) != size:
        raise _fail(ERR_DIGEST_INVALID_LENGTH)
    if _ENCODED_RE.fullmatch(encoded) is None:
        raise _fail(ERR_DIGEST_INVALID_FORMAT)
    return text


def parse_reference(text: str) -> Reference:
    """`reference.Parse`: the grammar alone, no normalisation (`ubuntu` keeps an empty domain)."""
    match = REFERENCE_RE.fullmatch(text)
    if match is None:
        if text == "":
            raise _fail(ERR_NAME_EMPTY)
        if REFERENCE_RE.fullmatch(text.lower()) is not None:
            raise _fail(ERR_NAME_CONTAINS_UPPERCASE)
        raise _fail(ERR_REFERENCE_INVALID_FORMAT)
    name, tag, digest = match.group(1, 2, 3)
    name_match = ANCHORED_NAME_RE.fullmatch(name)
    if name_match is None:  # unreachable: the reference grammar embeds the name grammar
        raise _fail(ERR_REFERENCE_INVALID_FORMAT)
    domain, path = name_match.group(1) or "", name_match.group(2)
    if len(path) > NAME_TOTAL_LENGTH_MAX:
        raise _fail(ERR_NAME_TOO_LONG)
    if digest is not None:
        digest = parse_digest(digest)
    return Reference(domain, path, tag, digest, tag is not None)


def with_name(name: str) -> Reference:
    """`reference.WithName`: a repository name only (no tag, no digest), not normalised."""
    match = ANCHORED_NAME_RE.fullmatch(name)
    if match is None:
        raise _fail(ERR_REFERENCE_INVALID_FORMAT)
    domain, path = match.group(1) or "", match.group(2)
    if len(path) > NAME_TOTAL_LENGTH_MAX:
        raise _fail(ERR_NAME_TOO_LONG)
    return Reference(domain, path)


def split_docker_domain(name: str) -> tuple[str, str]:
    """`splitDockerDomain`: (domain, remainder), applying docker.io and `library/` defaults.

    The first component is a domain only if it is `localhost`, contains `.` or `:`, or has an
    upper-case letter; so a lone `localhost:5000` is the repository `library/localhost`.
    """
    slash = name.find("/")
    first = name[:slash]
    if slash == -1 or (
        "." not in first and ":" not in first and first != _LOCALHOST and first.lower() == first
    ):
        domain, remainder = DEFAULT_DOMAIN, name
    else:
        domain, remainder = first, name[slash + 1 :]
    if domain == LEGACY_DEFAULT_DOMAIN:
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in remainder:
        remainder = OFFICIAL_REPO_PREFIX + remainder
    return domain, remainder


def parse_normalized_named(text: str) -> Reference:
    """`ParseNormalizedNamed`: normalise to the full name, never adding a default tag."""
    if ANCHORED_IDENTIFIER_RE.fullmatch(text) is not None:
        raise _fail(f"invalid repository name ({text}), cannot specify 64-byte hexadecimal strings")
    domain, remainder = split_docker_domain(text)
    remote_name = remainder.split(":", 1)[0]
    if remote_name.lower() != remote_name:
        raise _fail(
            f"{ERR_REFERENCE_INVALID_FORMAT}: repository name ({remote_name}) must be lowercase"
        )
    return parse_reference(f"{domain}/{remainder}")


def parse(text: str, *, default_tag: bool = True) -> Reference:
    """Parse a user's reference as `docker pull` does: ParseNormalizedNamed, then TagNameOnly.

    `latest` is added only when neither a tag nor a digest was given (`tag_given` stays
    False then); a tag typed beside a digest is kept, unlike ParseDockerRef, so that the
    pair can be checked against each other (attacks.md I05).
    """
    ref = parse_normalized_named(text)
    if default_tag and ref.tag is None and ref.digest is None:
        ref = replace(ref, tag=DEFAULT_TAG, tag_given=False)
    return ref


def parse_named(text: str) -> Reference:
    """`ParseNamed`: accept only a string that is already in full normalised form."""
    ref = parse_normalized_named(text)
    if str(ref) != text:
        raise _fail(ERR_NAME_NOT_CANONICAL)
    return ref


def parse_docker_ref(text: str) -> Reference:
    """`ParseDockerRef` (containerd's form): drops the tag when a digest is present.

    trustpull itself uses `parse()`, which keeps both; this exists for parity and tests.
    """
    ref = parse(text)
    if ref.digest is not None:
        return replace(ref, tag=None, tag_given=False)
    return ref


def parse_any_reference(text: str) -> Reference | DigestReference:
    """`ParseAnyReference`: an image ID or `algo:hex` digest, else a normalised name."""
    if ANCHORED_IDENTIFIER_RE.fullmatch(text) is not None:
        return DigestReference(f"sha256:{text}")
    try:
        return DigestReference(parse_digest(text))
    except InvalidReferenceError:
        pass
    return parse_normalized_named(text)


# --- FamiliarMatch: Go's path.Match over the familiar forms -----------------------------------


def _class_char(pattern: str, i: int) -> tuple[str, int]:
    """One (possibly escaped) character inside `[...]`; Go rejects a bare `-` or `]` here."""
    if i >= len(pattern) or pattern[i] in "-]":
        raise ValueError("syntax error in pattern")
    if pattern[i] == "\\":
        i += 1
        if i >= len(pattern):
            raise ValueError("syntax error in pattern")
    return pattern[i], i + 1


def go_glob_to_regex(pattern: str) -> str:
    """Translate a Go `path.Match` pattern; raises ValueError where Go gives ErrBadPattern."""
    out: list[str] = []
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "*":
            out.append("[^/]*")
            i += 1
        elif char == "?":
            out.append("[^/]")
            i += 1
        elif char == "\\":
            if i + 1 >= len(pattern):
                raise ValueError("syntax error in pattern")
            out.append(re.escape(pattern[i + 1]))
            i += 2
        elif char == "[":
            i += 1
            negated = i < len(pattern) and pattern[i] == "^"
            if negated:
                i += 1
            ranges: list[str] = []
            count = 0
            while True:
                if i < len(pattern) and pattern[i] == "]" and count > 0:
                    i += 1
                    break
                lo, i = _class_char(pattern, i)
                hi = lo
                if i < len(pattern) and pattern[i] == "-":
                    hi, i = _class_char(pattern, i + 1)
                count += 1
                if lo <= hi:
                    ranges.append(f"{re.escape(lo)}-{re.escape(hi)}")
            if ranges:
                out.append(("[^" if negated else "[") + "".join(ranges) + "]")
            else:
                out.append("(?s:.)" if negated else "(?!)")
        else:
            out.append(re.escape(char))
            i += 1
    return "".join(out)


def familiar_match(pattern: str, ref: Reference | DigestReference) -> bool:
    """`FamiliarMatch`: glob `pattern` against the familiar string, then the familiar name.

    Raises ValueError("syntax error in pattern") for a malformed pattern, as Go does.
    """
    regex = re.compile(go_glob_to_regex(pattern), re.DOTALL)
    if isinstance(ref, DigestReference):
        return regex.fullmatch(str(ref)) is not None
    if regex.fullmatch(ref.familiar()) is not None:
        return True
    return regex.fullmatch(ref.familiar_name()) is not None


def refuse_all_tags_with(ref: Reference, *, all_tags: bool) -> None:
    """Refuse a tag or a digest together with all-tags as usage (exit 2).

    One refusal, one message and one exit code whatever the front end: the service raises it
    before anything else, and the trust-off pull (which never asks the service) raises the same.
    It lives here, not in trust.service, so that a trust-off pull does not import the verifier.
    """
    if all_tags and ref.tag_given:
        raise UsageError("tag can't be used with --all-tags/-a")
    if all_tags and ref.digest is not None:
        raise UsageError("a digest can't be used with --all-tags/-a")
