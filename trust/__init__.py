"""trustpull as a library: verified docker pulls (Docker Content Trust / Notary v1, TUF).

    import trust

    config = trust.load_settings()                      # as the `trustpull` command loads it
    pinned = trust.resolve("registry.example.com/team/app:1.4", config=config)
    result = trust.pull("registry.example.com/team/app:1.4", config=config)

Only the names in `__all__` are the API; every other module and name is private. Names are
imported on first use, so `import trust` (or `trust.errors`) costs nearly nothing.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from trust import errors as _errors
from trust.version import __version__

if TYPE_CHECKING:
    from trust.api import check, inspect, list_signed_tags, load_settings, pull, resolve, verify
    from trust.batch import CheckReport
    from trust.config import Configuration
    from trust.errors import (
        EXIT_CODES,
        AuthError,
        CacheError,
        CertificateError,
        ConfigError,
        DelegationError,
        EngineError,
        ExpiredError,
        HashMismatchError,
        InputError,
        InternalError,
        InvalidReferenceError,
        LengthError,
        MalformedError,
        NetworkError,
        NoSuchTagError,
        NoTrustDataError,
        NotSignedAsRequiredError,
        NotSignedError,
        PolicyError,
        RollbackError,
        RootRotationError,
        SignatureError,
        ThresholdError,
        TrustPinError,
        TrustpullError,
        UsageError,
        VerificationError,
    )
    from trust.lookup import Resolution
    from trust.policy import Policy
    from trust.service import TrustService, Verification
    from trust.settings import Limits, Settings, TrustPinning
    from trust.trusted_pull import PullResult

#: The error hierarchy and its exit codes, as `trust.errors` declares them.
_ERRORS = tuple(
    name for name in _errors.__all__ if name not in ("SEVERITY_ORDER", "combined_exit_code")
)

#: public name → the module that defines it.
_HOME: dict[str, str] = {
    **dict.fromkeys(
        ("check", "inspect", "list_signed_tags", "load_settings", "pull", "resolve", "verify"),
        "trust.api",
    ),
    **dict.fromkeys(_ERRORS, "trust.errors"),
    "CheckReport": "trust.batch",
    "Configuration": "trust.config",
    "Limits": "trust.settings",
    "Policy": "trust.policy",
    "PullResult": "trust.trusted_pull",
    "Resolution": "trust.lookup",
    "Settings": "trust.settings",
    "TrustPinning": "trust.settings",
    "TrustService": "trust.service",
    "Verification": "trust.service",
}

__all__ = [
    "EXIT_CODES",
    "AuthError",
    "CacheError",
    "CertificateError",
    "CheckReport",
    "ConfigError",
    "Configuration",
    "DelegationError",
    "EngineError",
    "ExpiredError",
    "HashMismatchError",
    "InputError",
    "InternalError",
    "InvalidReferenceError",
    "LengthError",
    "Limits",
    "MalformedError",
    "NetworkError",
    "NoSuchTagError",
    "NoTrustDataError",
    "NotSignedAsRequiredError",
    "NotSignedError",
    "Policy",
    "PolicyError",
    "PullResult",
    "Resolution",
    "RollbackError",
    "RootRotationError",
    "Settings",
    "SignatureError",
    "ThresholdError",
    "TrustPinError",
    "TrustPinning",
    "TrustService",
    "TrustpullError",
    "UsageError",
    "Verification",
    "VerificationError",
    "__version__",
    "check",
    "inspect",
    "list_signed_tags",
    "load_settings",
    "pull",
    "resolve",
    "verify",
]


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module 'trust' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
