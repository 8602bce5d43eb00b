"""One error hierarchy for the whole of trustpull, with stable exit codes.

Every failure that a user can meet is a `TrustpullError` subclass. The CLI catches that one base
class, prints `diagnostics()` and exits with `exit_code`; anything else is a bug (exit 1).
The exit code is an API: the README's table is generated from `EXIT_CODES` and a test checks
that they agree.

The families follow shared/spec/attacks.md's outcome vocabulary: every error kind named there
(`Signature`, `Rollback`, `Network`, ...) is one class here, and its exit code is the one the
catalogue gives.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar, Self

__all__ = [
    "EXIT_CODES",
    "SEVERITY_ORDER",
    "AuthError",
    "CacheError",
    "CertificateError",
    "ConfigError",
    "DelegationError",
    "EngineError",
    "ExpiredError",
    "HashMismatchError",
    "InputError",
    "InternalError",
    "InvalidReferenceError",
    "LengthError",
    "MalformedError",
    "NetworkError",
    "NoSuchTagError",
    "NoTrustDataError",
    "NotSignedAsRequiredError",
    "NotSignedError",
    "PolicyError",
    "RollbackError",
    "RootRotationError",
    "SignatureError",
    "ThresholdError",
    "TrustPinError",
    "TrustpullError",
    "UsageError",
    "VerificationError",
    "combined_exit_code",
]


class TrustpullError(Exception):
    """Base class: a failure with a human message, an error kind and an exit code.

    Errors are values: once made, `message` and `hint` cannot be changed, so an error that is
    memoised, shared between threads or re-raised always says what it said when it was raised.
    Context (a file and line, a hint) is added by `derive`, which makes a new error.
    """

    exit_code: ClassVar[int] = 1
    kind: ClassVar[str] = "Internal"
    _FROZEN: ClassVar[frozenset[str]] = frozenset({"message", "hint", "detail"})

    def __init__(self, message: str, *, hint: str | None = None, detail: str | None = None) -> None:
        super().__init__(message)
        object.__setattr__(self, "message", message)
        object.__setattr__(self, "hint", hint)
        #: The raw low-level cause (a library's own wording), for `-v` only; never the message.
        object.__setattr__(self, "detail", detail)

    message: str
    hint: str | None
    detail: str | None

    def __setattr__(self, name: str, value: object) -> None:
        if name in self._FROZEN:
            raise AttributeError(f"{type(self).__name__}.{name} cannot change after it is made")
        object.__setattr__(self, name, value)

    def derive(self, *, prefix: str = "", hint: str | None = None) -> Self:
        """A new error of the same kind: the message after `prefix`, and `hint` when given.

        The new error's cause is this one, so `-v` still shows where it came from.
        """
        new = type(self).__new__(type(self))
        Exception.__init__(new, prefix + self.message)
        for key, value in self.__dict__.items():
            object.__setattr__(new, key, value)
        object.__setattr__(new, "message", prefix + self.message)
        if hint is not None:
            object.__setattr__(new, "hint", hint)
        new.__cause__ = self
        return new

    def fresh(self) -> Self:
        """An equal error as a new object: how a memoised failure is raised again."""
        new = self.derive()
        new.__cause__ = self.__cause__
        return new

    def diagnostics(self) -> str:
        """The text shown to a person: the message, then a hint on what to do, if any."""
        if self.hint:
            return f"{self.message}\n{self.hint}"
        return self.message

    def to_json(self) -> dict[str, object]:
        return {"kind": self.kind, "exit_code": self.exit_code, "message": self.message}


class InternalError(TrustpullError):
    """An unexpected condition inside trustpull itself (a bug)."""

    exit_code = 1
    kind = "Internal"


class UsageError(TrustpullError):
    """The command line was wrong (unknown option, missing argument, bad combination)."""

    exit_code = 2
    kind = "Usage"


class InputError(TrustpullError):
    """Input that trustpull refuses before any network I/O: references, config, names."""

    exit_code = 3
    kind = "Input"


class InvalidReferenceError(InputError, ValueError):
    """An image reference that does not parse; the message matches docker's."""


class ConfigError(InputError):
    """A configuration file or setting that is malformed (file, line and key named)."""

    kind = "Config"


class NotSignedError(TrustpullError):
    """The image is not signed: no trust data, or the tag/digest is not signed."""

    exit_code = 4
    kind = "NotSigned"


class NoTrustDataError(NotSignedError):
    """The trust server has no trust data for the repository (404 on root.json, empty cache)."""

    kind = "NoTrustData"


class NoSuchTagError(NotSignedError):
    """The repository is signed but the tag (or digest) is not signed by the roles docker reads."""

    kind = "NoSuchTag"


class VerificationError(TrustpullError):
    """Trust data failed verification: a possible attack. Never fall back from this."""

    exit_code = 5
    kind = "Verification"


class SignatureError(VerificationError):
    kind = "Signature"


class ThresholdError(VerificationError):
    kind = "Threshold"


class RollbackError(VerificationError):
    kind = "Rollback"


class ExpiredError(VerificationError):
    kind = "Expired"


class HashMismatchError(VerificationError):
    kind = "HashMismatch"


class LengthError(VerificationError):
    kind = "Length"


class RootRotationError(VerificationError):
    kind = "RootRotation"


class TrustPinError(VerificationError):
    kind = "TrustPin"


class CertificateError(VerificationError):
    kind = "Certificate"


class DelegationError(VerificationError):
    kind = "Delegation"


class MalformedError(VerificationError):
    """Data from a server (or the cache) that does not parse or violates the schema."""

    kind = "Malformed"


class CacheError(VerificationError):
    """The local trust cache is unusable in a way that could be tampering (links, bad root)."""

    kind = "Cache"


class NetworkError(TrustpullError):
    """The trust server could not be reached or answered incompletely (TLS included)."""

    exit_code = 6
    kind = "Network"


class AuthError(TrustpullError):
    """Authentication was refused (401/403, token endpoint failure). Never "unsigned"."""

    exit_code = 7
    kind = "Auth"


class EngineError(TrustpullError):
    """The Docker engine could not be reached, or refused the pull or the tag."""

    exit_code = 8
    kind = "Engine"


class PolicyError(TrustpullError):
    """A configured policy rule was not met."""

    exit_code = 9
    kind = "Policy"


class NotSignedAsRequiredError(PolicyError):
    """Under a configured policy, a name that is merely not signed (exit 9, kind Policy).

    A type of its own so that callers (the engine proxy's ledger of local builds) can tell
    "no signature" from a requirement that signed data failed, without reading `__cause__`.
    """


#: Exit code → one-line meaning; the README table and `--help` are rendered from this.
EXIT_CODES: dict[int, str] = {
    0: "success",
    1: "unexpected internal error",
    2: "usage error (bad option or argument)",
    3: "invalid reference or input (including a bad configuration file)",
    4: "not signed (no trust data, tag or digest not signed)",
    5: "verification failed: signature, threshold, rollback, expiry, hash, root, "
    "certificate (possible attack)",
    6: "trust server unreachable (network and TLS failures)",
    7: "authentication refused",
    8: "engine error",
    9: "policy violation (a configured rule not met)",
}

#: With several references in one run, the most severe code met wins, in this order.
SEVERITY_ORDER: tuple[int, ...] = (5, 9, 7, 6, 4, 8, 3, 2, 1)


def combined_exit_code(codes: Iterable[int]) -> int:
    """0 if every code is 0, else the most severe code met (SEVERITY_ORDER)."""
    failed = {code for code in codes if code != 0}
    if not failed:
        return 0
    for code in SEVERITY_ORDER:
        if code in failed:
            return code
    return max(failed)
