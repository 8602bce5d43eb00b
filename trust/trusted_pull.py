"""The trusted-pull path: reference → verified trust data → signed digest → pinned pull → tag.

With trust on, the only request this module ever sends to the engine's pull endpoint carries a
`sha256:` digest that came out of `trust.lookup` over verified trust data; the tag step uses
that digest reference as its source. With trust off it is a plain pull of the reference as given.
Printing is not done here: progress and notices go to a `PullReporter` the caller supplies.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from trust.credentials import RegistryAuth, credential_key, resolve_registry_auth
from trust.engine import Engine
from trust.errors import AuthError, EngineError, TrustpullError
from trust.reference import Reference, parse, refuse_all_tags_with
from trust.settings import Settings

if TYPE_CHECKING:  # a trust-off pull never imports the verifier (tests/unit/test_startup.py)
    from trust.lookup import Resolution
    from trust.policy import Policy
    from trust.service import TrustService

__all__ = [
    "NullReporter",
    "PrivilegeFunc",
    "PullReporter",
    "PullResult",
    "pull",
]


class PullReporter(Protocol):
    """Where the pull path reports what it does (the CLI renders; tests record)."""

    def default_tag(self) -> None: ...

    def pulling(self, index: int, total: int, pinned_familiar: str) -> None: ...

    def event(self, message: dict[str, Any]) -> None: ...

    def tagging(self, source_familiar: str, target_familiar: str) -> None: ...

    def notice(self, text: str) -> None: ...


class NullReporter:
    """Reports nothing (JSON output, library use)."""

    def default_tag(self) -> None:
        return None

    def pulling(self, index: int, total: int, pinned_familiar: str) -> None:
        return None

    def event(self, message: dict[str, Any]) -> None:
        return None

    def tagging(self, source_familiar: str, target_familiar: str) -> None:
        return None

    def notice(self, text: str) -> None:
        return None


#: docker's privilege function: called at most once per reference when the engine refuses the
#: pull as unauthorized, with the credential key (`host[:port]`, Docker Hub's legacy URL) and the
#: refusal; returns credentials to retry once with, or None to give up. The library never
#: prompts by itself: only an interactive caller passes one (dct.md §1.8, CLI-20's behaviour).
PrivilegeFunc = Callable[[str, AuthError], RegistryAuth | None]


@dataclass
class PullResult:
    """What happened to one reference; rendered as text or JSON by the CLI."""

    input: str
    reference: Reference | None = None
    trusted: bool = True
    pulled: bool = False
    resolutions: list[Resolution] = field(default_factory=list)
    error: TrustpullError | None = None
    #: Credentials from the privilege function that the engine accepted (the caller may store
    #: them when the user asked to); None when none were asked for or they were refused.
    prompted_auth: RegistryAuth | None = field(default=None, repr=False)
    #: Set only when a policy rule explicitly accepts this repository UNSIGNED (no trust data):
    #: the one message every such pull prints (trust.policy.UnsignedAccepted).
    unsigned: str | None = None

    @property
    def exit_code(self) -> int:
        return 0 if self.error is None else self.error.exit_code

    def to_json(self) -> list[dict[str, object]]:
        base: dict[str, object] = {"input": self.input, "trusted": self.trusted}
        if self.reference is not None:
            base["name"] = self.reference.name
        if self.unsigned is not None:
            base["unsigned"] = self.unsigned
        if self.error is not None:
            base["pulled"] = self.pulled
            base["error"] = self.error.to_json()
            return [base]
        if not self.resolutions:
            assert self.reference is not None
            item = dict(base)
            item.update(
                {
                    "reference": str(self.reference),
                    "tag": self.reference.tag,
                    "digest": self.reference.digest,
                    "pulled": self.pulled,
                }
            )
            return [item]
        items = []
        for resolution in self.resolutions:
            item = resolution.to_json()
            item.update({"input": self.input, "trusted": True, "pulled": self.pulled})
            items.append(item)
        return items


def _engine_auth(ref: Reference, settings: Settings, environ: Mapping[str, str]) -> RegistryAuth:
    return resolve_registry_auth(ref.domain, settings.docker_config, environ) or RegistryAuth()


def pull(
    text: str,
    settings: Settings,
    *,
    reporter: PullReporter | None = None,
    all_tags: bool = False,
    platform: str | None = None,
    environ: Mapping[str, str] | None = None,
    engine_factory: Callable[[], Any] | None = None,
    policy: Policy | None = None,
    service: TrustService | None = None,
    privilege: PrivilegeFunc | None = None,
) -> PullResult:
    """Pull one reference: trusted (verified by `service`, pulled by digest) unless trust is
    off. Never raises a TrustpullError: the failure is in the result, with its exit code.

    `service` is the verification service to ask (one is made from `settings` and `policy`
    when not given); with trust on, nothing reaches the engine's pull endpoint but the digests
    it verified, except a repository a policy rule explicitly accepts unsigned.
    """
    env = os.environ if environ is None else environ
    report = reporter or NullReporter()
    result = PullResult(input=text, trusted=settings.content_trust)
    try:
        ref = parse(text, default_tag=not all_tags)
        result.reference = ref
        if not all_tags and not ref.tag_given and ref.digest is None:
            report.default_tag()
        if settings.content_trust:
            if service is None:
                from trust.service import TrustService

                service = TrustService(settings, policy, notice=report.notice)
            verification = service.verify(ref, all_tags=all_tags)
            result.resolutions = list(verification.resolutions)
            if verification.origin is not None:
                # The resolutions carry the mirror's name: the pull below asks the mirror for
                # the origin's verified digest, and the engine checks the content against it.
                report.notice(
                    f"mirror: {ref.name} is verified as {verification.origin.name} (the "
                    "origin's trust data) and pulled from the mirror by that digest"
                )
            if verification.unsigned is not None:
                # The one unverified pull with trust on: a policy rule accepts a repository
                # that has no trust data at all. Said on every such pull, never quietly.
                result.unsigned = verification.unsigned
                result.trusted = False
                report.notice(verification.unsigned)
        else:
            refuse_all_tags_with(ref, all_tags=all_tags)  # the service's refusal, trust off
        engine = _connect(engine_factory, env, settings, result)
        try:
            auth = _engine_auth(ref, settings, env)
            if settings.content_trust and result.unsigned is None:
                _pull_pinned(engine, ref, result, auth, report, platform, privilege)
            else:
                tag_or_digest = ref.digest or ref.tag
                _privileged_pull(
                    lambda a: engine.pull(
                        ref.name,
                        tag_or_digest,
                        auth=a,
                        on_event=report.event,
                        all_tags=all_tags,
                        platform=platform,
                    ),
                    auth,
                    ref,
                    result,
                    privilege,
                )
                result.pulled = True
        finally:
            engine.close()
    except TrustpullError as error:
        result.error = error
    return result


def _connect(
    engine_factory: Callable[[], Any] | None,
    environ: Mapping[str, str],
    settings: Settings,
    result: PullResult,
) -> Any:
    try:
        if engine_factory is not None:
            return engine_factory()
        if settings.engine_host is not None:
            environ = {**environ, "DOCKER_HOST": settings.engine_host}
        return Engine.connect(environ, timeout=settings.limits.engine_timeout)
    except EngineError as error:
        if not result.resolutions:
            raise
        pinned = ", ".join(r.reference for r in result.resolutions)
        hint = f"verification succeeded: the signed reference is {pinned}"
        raise error.derive(hint=hint) from error


def _privileged_pull(
    do_pull: Callable[[RegistryAuth], None],
    auth: RegistryAuth,
    ref: Reference,
    result: PullResult,
    privilege: PrivilegeFunc | None,
) -> RegistryAuth:
    """One engine pull; on an auth refusal, ask `privilege` once per reference and retry once.

    Returns the credentials that worked, so the next pull of an `-a` run reuses them. Without a
    privilege function (non-interactive runs) the refusal is raised at once.
    """
    try:
        do_pull(auth)
        return auth
    except AuthError as refusal:
        if privilege is None or result.prompted_auth is not None:
            raise
        typed = privilege(credential_key(ref.domain), refusal)
        if typed is None or typed.is_anonymous:
            raise
    do_pull(typed)
    result.prompted_auth = typed
    return typed


def _pull_pinned(
    engine: Any,
    ref: Reference,
    result: PullResult,
    auth: RegistryAuth,
    report: PullReporter,
    platform: str | None,
    privilege: PrivilegeFunc | None = None,
) -> None:
    """docker's trustedPull loop: each pull is by verified digest, then tagged from it."""
    total = len(result.resolutions)
    for index, resolution in enumerate(result.resolutions, start=1):
        digest_ref = ref.trimmed().with_digest(resolution.digest)
        shown = (
            ref.trimmed().with_tag(resolution.tag).familiar()
            if resolution.tag
            else ref.familiar_name()
        )
        report.pulling(index, total, f"{shown}@{resolution.digest}")

        def pull_one(credentials: RegistryAuth, digest: str = resolution.digest) -> None:
            engine.pull(
                ref.name, digest, auth=credentials, on_event=report.event, platform=platform
            )

        try:
            auth = _privileged_pull(pull_one, auth, ref, result, privilege)
        except TrustpullError as error:
            raise error.derive(
                hint=f"verification succeeded ({resolution.reference}) but the content could "
                "not be pulled"
            ) from error
        result.pulled = True
        if ref.digest is not None or resolution.tag is None:
            continue  # a digest reference is pulled by digest only, as docker does
        target = ref.trimmed().with_tag(resolution.tag)
        report.tagging(digest_ref.familiar(), target.familiar())
        # The tag source is the fully qualified digest reference. docker sends the familiar
        # form, but that can name another repository (`docker.io/localhost/app` becomes
        # `localhost/app`, which re-parses with registry `localhost`): stricter here.
        engine.tag(str(digest_ref), target.name, resolution.tag)
