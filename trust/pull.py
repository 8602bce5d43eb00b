"""The trusted-pull path: reference → verified trust data → signed digest → pinned pull → tag.

With trust on, the only request this module ever sends to the engine's pull endpoint carries a
`sha256:` digest that came out of `trust.resolve` over verified trust data; the tag step uses
that digest reference as its source. With trust off it is a plain pull of the reference as given.
Printing is not done here: progress and notices go to a `PullReporter` the caller supplies.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from trust.config import Settings
from trust.credentials import RegistryAuth, credential_key, resolve_registry_auth
from trust.errors import AuthError, EngineError, InputError, TrustpullError
from trust.notary.client import NotaryClient, trust_server_for
from trust.notary.trusted_set import TrustData
from trust.reference import Reference, parse
from trust.resolve import (
    Resolution,
    find_by_digest,
    list_signed_tags,
    lookup_tag,
    resolution_for,
    root_key_id,
)

__all__ = [
    "NullReporter",
    "PrivilegeFunc",
    "PullReporter",
    "PullResult",
    "pull",
    "resolve_reference",
    "tofu_notice",
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


def tofu_notice(data: TrustData, gun: str) -> str:
    """One line naming the root key trusted on first use, and how to pin it."""
    root_ids = list(data.root.roles["root"].keyids)
    canonical = root_key_id(data)
    return (
        f"trust on first use: trusting root key {root_ids[0] if root_ids else '?'} "
        f"(canonical ID {canonical}) for {gun}; to pin it, add "
        f'"{gun}" = ["{canonical}"] under [trust_pinning.certs] in the config file'
    )


def resolve_reference(
    ref: Reference,
    settings: Settings,
    *,
    client: NotaryClient | None = None,
    all_tags: bool = False,
    notice: Callable[[str], None] | None = None,
) -> list[Resolution]:
    """Verify `ref`'s trust data and return the signed digest(s) it stands for.

    - `NAME:TAG`: the tag's signed digest (docker's lookup);
    - `NAME:TAG@sha256:X`: only if the tag's signed digest is X (attacks.md I05);
    - `NAME@sha256:X`: only if X is signed for some tag (attacks.md I04);
    - all tags (`-a`, or a name given without a tag for `resolve`): every signed tag.
    """
    from trust.sources import resolve_with_source, select_source

    if settings.policy is not None:  # the configured rules decide (trust.policy)
        from trust.policy import resolve_with_policy

        return resolve_with_policy(ref, settings, all_tags=all_tags, notice=notice)
    source = select_source(ref, settings)
    if source is not None:  # a configured TUF repository answers, never Notary as a fallback
        return resolve_with_source(source, ref, settings, all_tags=all_tags, notice=notice)
    client = client or NotaryClient(settings, warn=notice)
    # The cache is written only once the answer is accepted (issue 11 item 6): a first
    # contact that ends in "not signed" leaves no root behind as the pin.
    data = client.update(ref, commit=False)
    server = trust_server_for(ref.domain, settings)
    if all_tags:
        resolutions = [resolution_for(data, ref, t, server) for t in list_signed_tags(data)]
    elif ref.digest is not None and not ref.tag_given:
        resolutions = [resolution_for(data, ref, find_by_digest(data, ref.digest), server)]
    else:
        assert ref.tag is not None
        target = lookup_tag(data, ref.tag)
        if ref.digest is not None and target.digest != ref.digest:
            from trust.errors import NoSuchTagError

            raise NoSuchTagError(
                f"tag {ref.tag} of {ref.name} is signed for {target.digest}, not {ref.digest}"
            )
        resolutions = [resolution_for(data, ref, target, server)]
    client.commit(data)
    if data.first_use and notice is not None:
        notice(tofu_notice(data, ref.name))
    return resolutions


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
    client: NotaryClient | None = None,
    privilege: PrivilegeFunc | None = None,
) -> PullResult:
    """Pull one reference: trusted (verified, by digest) unless trust is off. Never raises a
    TrustpullError: the failure is in the result, with its exit code."""
    env = os.environ if environ is None else environ
    report = reporter or NullReporter()
    result = PullResult(input=text, trusted=settings.content_trust)
    try:
        ref = parse(text, default_tag=not all_tags)
        result.reference = ref
        if all_tags and ref.tag_given:
            raise InputError("tag can't be used with --all-tags/-a")
        if all_tags and ref.digest is not None:
            raise InputError("a digest can't be used with --all-tags/-a")
        if not all_tags and not ref.tag_given and ref.digest is None:
            report.default_tag()
        if settings.content_trust:
            from trust.policy import UnsignedAccepted

            try:
                result.resolutions = resolve_reference(
                    ref, settings, client=client, all_tags=all_tags, notice=report.notice
                )
            except UnsignedAccepted as accepted:
                # The one unverified pull with trust on: a policy rule accepts a repository
                # that has no trust data at all. Said on every such pull, never quietly.
                result.unsigned = accepted.message
                result.trusted = False
                report.notice(accepted.message)
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
    from trust.engine import Engine

    try:
        if engine_factory is not None:
            return engine_factory()
        return Engine.connect(environ, timeout=settings.limits.engine_timeout)
    except EngineError as error:
        if result.resolutions:
            pinned = ", ".join(r.reference for r in result.resolutions)
            error.hint = f"verification succeeded: the signed reference is {pinned}"
        raise


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
            error.hint = (
                f"verification succeeded ({resolution.reference}) but the content could not be "
                "pulled"
            )
            raise
        result.pulled = True
        if ref.digest is not None or resolution.tag is None:
            continue  # a digest reference is pulled by digest only, as docker does
        target = ref.trimmed().with_tag(resolution.tag)
        report.tagging(digest_ref.familiar(), target.familiar())
        # The tag source is the fully qualified digest reference. docker sends the familiar
        # form, but that can name another repository (`docker.io/localhost/app` becomes
        # `localhost/app`, which re-parses with registry `localhost`): stricter here.
        engine.tag(str(digest_ref), target.name, resolution.tag)
