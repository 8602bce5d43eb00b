"""The one verification path: every front end (pull, resolve, inspect, check, the manifest pinner,
the engine proxy and the Python API) asks `TrustService`, and nothing else decides.

For one reference (first mapped to its origin when it lies under a `[mirrors]` prefix: the
origin's rules, trust source, trust server and pins apply, and the mirror's name is kept for the
pull and the output; `trust.route.mirror_origin` is the one place that mapping is made) it
1. picks the rule (`Policy.match`; without a policy the built-in default, an ordinary rule),
2. picks the trust source (the repository rule's `trust_source`, else the longest
   `[[trust_sources]]` scope, else Notary) before any I/O, so a TUF-scoped reference never falls
   back to Notary; the trust source, server, pins and TOFU are always the repository rule's (the
   best rule without `tag`, `trust.route.repository_rule`), whichever rule decides the tag,
3. gets verified data from that source (memoised per repository and rule, thread-safe, for
   one run's length at most and never past the data's first expiry or certificate boundary;
   an unsigned acceptance is not memoised),
4. chooses the signed target for tag, tag@digest, digest-only and all-tags references, each tag
   under its own rule (a digest reference is accepted only through a tag whose rule accepts it),
5. runs the rule's requirements over the verified facts (`trust.policy.Evidence`),
6. and only when the verdict is accepted lets the Notary cache keep what this run fetched.

It returns one result type, `Verification`. Errors are raised as made (never mutated): a
memoised failure is raised again as a fresh copy.

Longer than 500 lines because it is the one place every reference shape meets every rule and
both trust sources: split, the decision would again live in several copies, which is where the
last round's fail-open bugs were.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from trust.errors import (
    NoSuchTagError,
    NoTrustDataError,
    NotSignedAsRequiredError,
    NotSignedError,
    PolicyError,
    TrustPinError,
    TrustpullError,
    combined_exit_code,
)
from trust.evidence import NotaryEvidence, TufEvidence
from trust.lookup import (
    Resolution,
    inspect_repository,
    list_signed_tags,
    lookup_tag,
    natural_key,
    pinned_reference,
    resolution_for,
    root_key_id,
)
from trust.notary.cache import has_cached_trust
from trust.notary.client import MetadataSource, NotaryClient, trust_server_for
from trust.notary.trusted_set import LOOKUP_ROLES, TrustData, stable_until
from trust.notary.x509root import PIN_NO_TOFU
from trust.policy import Context, Policy, Refuse, Rule, UnsignedAccepted, precedence
from trust.prefetch import Prefetch
from trust.reference import Reference, parse, refuse_all_tags_with
from trust.route import mirror_origin, repository_rule, rule_for, select_source, settings_for
from trust.settings import Settings, TrustSourceConfig
from trust.targets import SignedTarget

if TYPE_CHECKING:
    from trust.credentials import CredentialSource
    from trust.notary.pool import Kept
    from trust.tufsource import TufSource

__all__ = [
    "TrustService",
    "Verification",
    "mirror_origin",
    "refuse_all_tags_with",
    "select_source",
    "settings_for",
    "tofu_notice",
]

Notice = Callable[[str], None]


@dataclass(frozen=True)
class Verification:
    """What the service found for one reference: the one result type of every front end.

    Exactly one of three: `resolutions` (verified digests), `unsigned` (a rule explicitly
    accepted a repository without trust data; the only unverified outcome with trust on), or
    `error`. `TrustService.verify` raises the error instead; `check` returns it here.
    """

    input: str
    reference: Reference | None = None
    rule: Rule | None = None
    resolutions: tuple[Resolution, ...] = ()
    unsigned: str | None = None
    error: TrustpullError | None = None
    #: The origin reference that was verified when `reference` lies under a `[mirrors]`
    #: prefix; `reference` (and each resolution's `reference`/`name`) stay the mirror's.
    origin: Reference | None = None

    @property
    def accepted(self) -> bool:
        return self.error is None

    @property
    def verdict(self) -> str:
        if self.error is not None:
            return "fail"
        return "unsigned" if self.unsigned is not None else "pass"

    @property
    def exit_code(self) -> int:
        return 0 if self.error is None else self.error.exit_code

    @property
    def reason(self) -> str:
        if self.error is not None:
            return self.error.message
        if self.unsigned is not None:
            return self.unsigned
        return self.rule.requirement.describe() if self.rule is not None else ""

    def to_json(self) -> dict[str, object]:
        """`check`'s JSON object: the resolve keys plus input, verdict, rule and reason."""
        item: dict[str, object] = {}
        if self.resolutions:
            item.update(self.resolutions[0].to_json())
        elif self.reference is not None:
            item.update({"reference": str(self.reference), "name": self.reference.name})
        if self.origin is not None:
            item["origin"] = self.origin.name
        item["input"] = self.input
        item["verdict"] = self.verdict
        item["rule"] = self.rule.label if self.rule is not None else None
        item["reason"] = self.reason
        if self.error is not None:
            item["error"] = self.error.to_json()
        return item


def _through_mirror(
    mirrored: Reference, origin: Reference | None, resolutions: Sequence[Resolution]
) -> tuple[Resolution, ...]:
    """The origin's verified answers, named as the user gave them: the pull goes to the mirror
    by the verified digest, and `origin` says whose trust data vouched for it."""
    if origin is None:
        return tuple(resolutions)
    results = []
    for found in resolutions:
        pinned = (
            pinned_reference(mirrored, found.tag, found.digest)
            if found.tag
            else mirrored.trimmed().with_digest(found.digest)
        )
        results.append(
            dataclasses.replace(found, reference=str(pinned), name=mirrored.name, origin=found.name)
        )
    return tuple(results)


def tofu_notice(data: TrustData, gun: str) -> str:
    """What a first contact says: the root trusted on first use (and how to pin it), or that
    the root matched the configured pin."""
    canonical = root_key_id(data)
    if not data.root_check.tofu:
        return f"first use of {gun}: its root key {canonical} matched the configured pin"
    root_ids = list(data.root.roles["root"].keyids)
    return (
        f"trust on first use: trusting root key {root_ids[0] if root_ids else '?'} "
        f"(canonical ID {canonical}) for {gun}; to pin it, add "
        f'"{gun}" = ["{canonical}"] under [trust_pinning.certs] in the config file'
    )


# ------------------------------------------------------------------------------ the service


@dataclass
class _Memo:
    """One (repository, rule) verification, shared by every reference that needs it."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    data: TrustData | None = None
    error: TrustpullError | None = None
    done: bool = False
    #: The client that verified `data`: it writes the cache once a verdict accepts it.
    client: NotaryClient | None = None
    committed: bool = False
    #: `trusted_set.stable_until` of `data`: from then on (an expiry, a certificate boundary)
    #: the same bytes may verify otherwise, so a service kept for many references verifies
    #: again instead of answering from this one.
    until: dt.datetime | None = None
    #: `time.monotonic()` when made, and how long it may serve: one run's length
    #: (`limits.total_timeout`, the bound of one run's trust update). A service kept for many
    #: references then sees a re-signed or revoked tag as a new run does.
    made: float = field(default_factory=time.monotonic)
    lifetime: float = float("inf")

    def stale(self, now: dt.datetime) -> bool:
        """Not to be answered from any more: `data` past `until` or older than `lifetime`, or
        an unsigned acceptance (never answered from memory: the repository may be signed, or
        cached as signed, by now, and then "no trust data" is not believed, G02)."""
        if not self.done:
            return False
        if isinstance(self.error, UnsignedAccepted):
            return True
        if time.monotonic() - self.made >= self.lifetime:
            return True
        return self.until is not None and now >= self.until


class TrustService:
    """Verifies references under the settings and the policy. Thread-safe; reuse one instance
    for many references (`check`, the proxy) so each repository is verified once.

    `policy=None` means no configured policy: only the built-in default rule, and trustpull's
    usual exit codes (a missing signature is 4, not 9).

    A long-running front end (the proxy) makes one service per request, so freshness is the
    CLI's, and passes what outlives the request: `kept` (connections, tokens and verified
    results kept for the next update, trust.notary.pool) and `credentials` (the request's own
    registry credentials for the trust server's token flow instead of the docker
    configuration's).
    """

    def __init__(
        self,
        settings: Settings,
        policy: Policy | None = None,
        *,
        notice: Notice | None = None,
        now: dt.datetime | None = None,
        client_factory: Callable[[Settings, frozenset[str]], NotaryClient] | None = None,
        credentials: CredentialSource | None = None,
        kept: Kept | None = None,
        prefetch: Prefetch | None = None,
    ) -> None:
        self.settings = settings
        #: Requests a front end started early (trust.prefetch): only when bytes are fetched moves.
        self.prefetch = prefetch
        self.policy = policy
        self._notice = notice
        self._now = now
        self._client_factory = client_factory
        self._credentials = credentials
        self._kept = kept
        self._lock = threading.Lock()
        self._memo: dict[tuple[str, Rule], _Memo] = {}
        #: Per thread: the verifications the current `verify` call rests on (committed when
        #: its verdict is accepted, never when it is refused: issue 11 #6).
        self._local = threading.local()
        self._requests = 0

    @property
    def requests(self) -> int:
        """Requests sent to Notary servers so far (benchmarks, `check`'s summary)."""
        with self._lock:
            return self._requests

    def now(self) -> dt.datetime:
        return self._now or dt.datetime.now(dt.UTC)

    def rule_for(self, ref: Reference) -> Rule:
        return rule_for(self.policy, ref)

    # -------------------------------------------------------------- front-end entry points

    def verify(self, ref: Reference | str, *, all_tags: bool = False) -> Verification:
        """Verify one reference; raises the TrustpullError that refuses it.

        - `NAME:TAG`: the tag's signed digest under its rule;
        - `NAME:TAG@sha256:X`: only if that digest is X (attacks.md I05);
        - `NAME@sha256:X`: only if X is the signed digest of some tag whose own rule accepts it
          (attacks.md I04; a digest never escapes a tag-scoped rule);
        - `all_tags`: every signed tag, each under its own rule; one failure refuses all.

        `UnsignedAccepted` is never raised: it comes back as `Verification.unsigned`.
        """
        if isinstance(ref, str):
            text = ref
            ref = parse(ref, default_tag=not all_tags)
        else:
            text = str(ref)
        refuse_all_tags_with(ref, all_tags=all_tags)
        mirrored = ref
        origin = mirror_origin(ref, self.settings)
        if origin is not None:
            ref = origin  # rules, source, trust server and pins: the origin's
        rule = self.rule_for(ref.trimmed() if all_tags else ref)
        self._local.used = []
        try:
            if all_tags:
                resolutions = self._all_tags(ref.trimmed(), rule)
            elif ref.tag is None:
                resolutions = [self._by_digest(ref, rule)]
                if resolutions[0].tag:  # the rule that decided: the accepting tag's
                    rule = self.rule_for(ref.with_tag(resolutions[0].tag))
            else:
                resolutions = [self._under_policy(ref, rule, self._one)]
        except UnsignedAccepted as accepted:
            if all_tags:
                self._refuse_tag_rules_over(ref.trimmed(), accepted.rule)
            return Verification(
                text, mirrored, accepted.rule, unsigned=accepted.message, origin=origin
            )
        finally:
            used: list[_Memo] = self._local.used
            self._local.used = None
        self._commit(used)  # reached only when the verdict is accepted
        return Verification(
            text, mirrored, rule, _through_mirror(mirrored, origin, resolutions), origin=origin
        )

    def check(self, text: str, ref: Reference | None = None) -> Verification:
        """`verify` for batch use: never raises a TrustpullError, the error is in the result."""
        try:
            return self.verify(ref if ref is not None else text)
        except TrustpullError as error:
            reference = ref
            if reference is None:
                try:
                    reference = parse(text)
                except TrustpullError:
                    reference = None
            origin = None
            if reference is not None:
                try:
                    origin = mirror_origin(reference, self.settings)
                except TrustpullError:
                    origin = None
            rule = self.rule_for(origin or reference) if reference is not None else None
            return Verification(text, reference, rule, error=error, origin=origin)

    def inspect(self, ref: Reference, name_as_typed: str, tag: str | None) -> dict[str, object]:
        """`docker trust inspect`'s object, from the reference's trust source (the origin's,
        for a reference under a mirror)."""
        ref = mirror_origin(ref, self.settings) or ref
        # The rule's source, trust server and pins, as `verify` uses them: inspect must not
        # trust (and commit) a root that the rule would refuse, e.g. under `tofu = false`.
        rule = self.rule_for(ref)
        settings = self._settings(ref, rule)
        source = self._source(ref, rule)
        if source is not None:
            return self._tuf(source, settings).inspect(ref, name_as_typed, tag)
        fetched = self._update(ref, rule, settings)
        assert fetched.data is not None
        document = inspect_repository(fetched.data, name_as_typed, tag)
        self._commit([fetched])
        return document

    # -------------------------------------------------------------- reference shapes

    def _under_policy(
        self, ref: Reference, rule: Rule, step: Callable[[Reference, Rule], Resolution]
    ) -> Resolution:
        """With a configured policy, "not signed" is a requirement not met (exit 9)."""
        try:
            return step(ref, rule)
        except UnsignedAccepted:
            raise
        except NotSignedError as error:
            if self.policy is None:
                raise
            raise self._as_policy(ref, rule, error) from error

    def _one(self, ref: Reference, rule: Rule) -> Resolution:
        """`NAME:TAG` or `NAME:TAG@sha256:X` under `rule`."""
        assert ref.tag is not None
        if rule.refuse:
            Refuse().verify(Context(ref, rule, self.now(), None, None))
        settings = self._settings(ref, rule)
        source = self._source(ref, rule)
        if source is not None:
            return self._one_tuf(ref, rule, settings, source)
        data = self._trust_data(ref, rule, settings)
        target = self._choose(data, ref.tag, rule)
        if ref.digest is not None and target.digest != ref.digest:
            raise NoSuchTagError(
                f"tag {ref.tag} of {ref.name} is signed for {target.digest}, not {ref.digest}"
            )
        rule.requirement.verify(Context(ref, rule, self.now(), NotaryEvidence(data), target))
        return resolution_for(data, ref, target, trust_server_for(ref.domain, settings))

    def _by_digest(self, ref: Reference, repo_rule: Rule) -> Resolution:
        """`NAME@sha256:X`: accepted through the first tag (natural order) signed for X whose
        own rule accepts it; when none does, the refusal names each tag's rule and reason."""
        assert ref.digest is not None
        digest = ref.digest
        repo = ref.trimmed()
        tags = self._candidate_tags(repo, repo_rule, digest)
        refusals: list[tuple[str, TrustpullError]] = []
        for tag in tags:
            tagged = repo.with_tag(tag).with_digest(digest)
            rule = self.rule_for(tagged)
            try:
                # Not `_under_policy`: under a policy that would make "this tag is signed for
                # another digest" a refusal by the tag's rule, naming every tag of the repository.
                found = self._one(tagged, rule)
            except UnsignedAccepted as accepted:
                # The tag's own rule (another trust server) accepts it unsigned: that pins
                # nothing, so it cannot vouch for this digest (the repository rule found data).
                refusals.append((tag, _unpinnable(tagged, accepted)))
                continue
            except NoSuchTagError:
                continue  # that tag is signed for another digest
            except TrustpullError as error:
                if not isinstance(error, NotSignedError | PolicyError):
                    raise  # a verification, network or auth failure is never skipped
                if isinstance(error, NotSignedError) and self.policy is not None:
                    error = self._as_policy(tagged, rule, error)
                refusals.append((tag, error))
                continue
            return dataclasses.replace(
                found, reference=str(pinned_reference(ref, found.tag or tag, found.digest))
            )
        if refusals:
            worst = combined_exit_code(e.exit_code for _, e in refusals)
            detail = "; ".join(f"tag {t}: {e.message}" for t, e in refusals)
            first = next(e for _, e in refusals if e.exit_code == worst)
            raise type(first)(
                f"digest {digest} of {repo.name} is refused by the rules of the tags it is "
                f"signed for: {detail}",
                hint=first.hint,
            ) from first
        unsigned = NoSuchTagError(
            f"digest {digest} is not signed for any tag of {repo.name}",
            hint="trustpull pulls a digest only when it is a signed tag's digest",
        )
        if self.policy is None:
            raise unsigned
        raise self._as_policy(repo, repo_rule, unsigned) from unsigned

    def _refuse_tag_rules_over(self, repo: Reference, accepting: Rule) -> None:
        """`-a` accepted unsigned pulls every tag unverified: refused when a tag-scoped rule
        (never one that accepts unsigned) outranks `accepting` for some tag of `repo`, since
        that tag alone would be refused."""
        if self.policy is None:
            return

        for rule in self.policy.rules:
            if (
                rule.scope.tag is not None
                and dataclasses.replace(rule.scope, tag=None).matches(repo)
                and precedence(rule) < precedence(accepting)
            ):
                raise PolicyError(
                    f"rule {accepting.label} ({accepting.origin}) accepts {repo.familiar()} "
                    f"unsigned, but rule {rule.label} ({rule.origin}) applies to its tags "
                    f"{rule.scope.tag}: an all-tags pull would pull them unverified",
                    hint="pull the tags one by one",
                )

    def _as_policy(
        self, ref: Reference, rule: Rule, error: NotSignedError
    ) -> NotSignedAsRequiredError:
        """Under a configured policy, "not signed" is a requirement not met (exit 9)."""
        return NotSignedAsRequiredError(
            f"rule {rule.label}: {ref.familiar()} is not signed as required: {error.message}",
            hint=error.hint,
        )

    def _all_tags(self, repo: Reference, rule: Rule) -> list[Resolution]:
        """Every signed tag, each verified under its own rule; one failure refuses them all."""
        tags = self._candidate_tags(repo, rule)
        results: list[Resolution] = []
        errors: list[TrustpullError] = []
        for tag in tags:
            tagged = repo.with_tag(tag)
            try:
                results.append(self._under_policy(tagged, self.rule_for(tagged), self._one))
            except UnsignedAccepted as accepted:
                # One tag's rule accepting it unsigned must not make the whole `-a` run an
                # unverified pull by tag: the repository rule found trust data.
                errors.append(_unpinnable(tagged, accepted))
            except TrustpullError as error:
                errors.append(error)
        if errors:
            worst = combined_exit_code(e.exit_code for e in errors)
            raise next(e for e in errors if e.exit_code == worst)
        return results

    def _candidate_tags(self, repo: Reference, rule: Rule, digest: str | None = None) -> list[str]:
        """Every tag signed for the repository in its trust source, natural order; with
        `digest`, only those some such role signs for it (the others cannot vouch for it).

        Notary: tags in docker's lookup roles, and a named signer's tags whose own rule names
        that signer. TUF: every tag the Updater's search accepts.
        """
        if rule.refuse:
            Refuse().verify(Context(repo, rule, self.now(), None, None))
        settings = self._settings(repo, rule)
        source = self._source(repo, rule)
        if source is not None:
            found = self._tuf_targets(repo, source, settings)
            if not found:
                error = NoTrustDataError(
                    f"No trusted tags for {repo.name} in {source.metadata_url}"
                )
                if self.policy is None:
                    raise error
                raise self._as_policy(repo, rule, error) from error
            return [tag for tag, target in found.items() if digest in (None, target.digest)]
        try:
            data = self._trust_data(repo, rule, settings)
        except UnsignedAccepted:
            raise  # the rule accepts the repository without trust data: every shape of it
        except NotSignedError as error:
            if self.policy is None:
                raise
            raise self._as_policy(repo, rule, error) from error
        signers: set[str] = set()
        for candidate in self.policy.rules if self.policy is not None else ():
            if dataclasses.replace(candidate.scope, tag=None).matches(repo):
                signers |= candidate.required_roles
        tags: set[str] = set()
        signed_for: set[str] = set()
        for role in (*LOOKUP_ROLES, *sorted(signers - set(LOOKUP_ROLES))):
            loaded = data.roles.get(role)
            if loaded is None:
                continue
            for tag, meta in loaded.targets.targets.items():
                # A signer's tag only where the rule deciding that tag names the signer: the
                # others' rules read docker's lookup roles, which never list it.
                if loaded.allows(tag) and (
                    role in LOOKUP_ROLES or role in self.rule_for(repo.with_tag(tag)).required_roles
                ):
                    tags.add(tag)
                    if digest == "sha256:" + meta.hashes.get("sha256", b"").hex():
                        signed_for.add(tag)
        if not tags:
            try:
                list_signed_tags(data)  # raises "no trusted tags"
            except NotSignedError as error:
                if self.policy is None:
                    raise
                raise self._as_policy(repo, rule, error) from error
        return sorted(tags if digest is None else signed_for, key=natural_key)

    # -------------------------------------------------------------- sources

    def _repository_rule(self, ref: Reference, rule: Rule) -> Rule:
        """The rule that says how `ref`'s repository is verified (`trust.route.repository_rule`):
        `rule` itself unless it is tag-scoped, whose tags keep the repository rule's trust
        source, server, pins and TOFU (they were dropped: a pinned repository's tag was trusted
        on first use from the file's server)."""
        return rule if rule.scope.tag is None else repository_rule(self.policy, ref)

    def _settings(self, ref: Reference, rule: Rule) -> Settings:
        return settings_for(self._repository_rule(ref, rule), ref, self.settings)

    def _source(self, ref: Reference, rule: Rule) -> TrustSourceConfig | None:
        rule = self._repository_rule(ref, rule)
        if rule.trust_source == "notary":
            return None
        if rule.trust_source is not None:
            for source in self.settings.trust_sources:
                if source.scope == rule.trust_source:
                    return source
            raise PolicyError(f"rule {rule.label}: trust source {rule.trust_source} is unknown")
        return select_source(ref, self.settings)

    def _tuf_targets(
        self, repo: Reference, source: TrustSourceConfig, settings: Settings
    ) -> dict[str, SignedTarget]:
        """Every signed tag of `repo` in the TUF repository, as python-tuf verified it."""
        with self._tuf(source, settings).view(repo.name) as view:
            return {target.tag: target for target in view.signed_tags()}

    def _one_tuf(
        self, ref: Reference, rule: Rule, settings: Settings, source: TrustSourceConfig
    ) -> Resolution:
        """`NAME:TAG[@sha256:X]` from a TUF repository's verified view (python-tuf's search)."""
        assert ref.tag is not None
        pins = self._repository_rule(ref, rule)
        if pins.root_keys or pins.root_ca:
            raise PolicyError(
                f"rule {pins.label}: root pins apply to Notary; {ref.name} is verified by the "
                f"TUF repository {source.metadata_url}, whose trusted root is {source.root}"
            )
        with self._tuf(source, settings).view(ref.name) as view:
            target = view.lookup(ref.tag)
            if ref.digest is not None and target.digest != ref.digest:
                raise NoSuchTagError(
                    f"tag {ref.tag} of {ref.name} is signed for {target.digest}, not {ref.digest}"
                )
            evidence = TufEvidence(ref.name, {target.tag: target})
            rule.requirement.verify(Context(ref, rule, self.now(), evidence, target))
            return view.resolution(ref, target)

    def _tuf(self, source: TrustSourceConfig, settings: Settings) -> TufSource:
        from trust.tufsource import TufSource

        return TufSource(source, settings, warn=self._notice, credentials=self._credentials)

    def _client(self, settings: Settings, roles: frozenset[str]) -> NotaryClient:
        if self._client_factory is not None:
            return self._client_factory(settings, roles)
        return NotaryClient(
            settings,
            warn=self._notice,
            required_roles=roles,
            credentials=self._credentials,
            kept=self._kept,
            session_factory=self._early_session(settings),
        )

    def _early_session(self, settings: Settings) -> Callable[[str, str], MetadataSource] | None:
        """The client's session: the early one (trust.prefetch) when it was started for exactly
        this server, GUN and settings, else the client's own (`remote_for`, as without).

        The early request is the CLI's (the docker config's credentials, nothing kept), so it
        is never used for a caller that brings its own credentials or keeps sessions (the
        engine proxy): those go through the client's own session path."""
        prefetch = self.prefetch
        if prefetch is None or self._credentials is not None or self._kept is not None:
            return None

        def session(server: str, gun: str) -> MetadataSource:
            early = prefetch.take(server, gun, settings)
            if early is not None:
                return early
            from trust.notary.remote import remote_for

            return remote_for(server, gun, settings)

        return session

    def _count(self, client: NotaryClient) -> None:
        with self._lock:
            self._requests += client.stats.requests

    def _trust_data(self, ref: Reference, rule: Rule, settings: Settings) -> TrustData:
        """Verified Notary data for (repository, rule), fetched once per service while it may
        serve (`_Memo.stale`)."""
        # Keyed by the rule itself, not only its index: a Policy built in code may repeat an
        # index, and a rule's trust server and pins must never serve another rule's verdict.
        key = (ref.name, rule)
        with self._lock:
            memo = self._memo.get(key)
            if memo is None or memo.stale(self.now()):
                memo = self._memo[key] = _Memo(lifetime=settings.limits.total_timeout)
        with memo.lock:
            if not memo.done:
                try:
                    fetched = self._update(ref, rule, settings)
                    memo.data, memo.client = fetched.data, fetched.client
                    assert fetched.data is not None and fetched.client is not None
                    memo.until = stable_until(
                        fetched.data, settings.trust_pinning, fetched.client.now
                    )
                except TrustpullError as error:
                    memo.error = error
                memo.done = True
        if memo.error is not None:
            raise memo.error.fresh()
        assert memo.data is not None
        used: list[_Memo] | None = getattr(self._local, "used", None)
        if used is not None and memo not in used:
            used.append(memo)
        return memo.data

    def _commit(self, memos: Iterable[_Memo]) -> None:
        """Let the Notary cache keep what these verifications fetched: called only for an
        accepted verdict, so a refused first contact leaves no root behind as the pin."""
        for memo in memos:
            with memo.lock:
                if memo.committed or memo.data is None or memo.client is None:
                    continue
                memo.client.commit(memo.data)
                memo.committed = True
                data = memo.data
            if data.first_use and self._notice is not None:
                self._notice(tofu_notice(data, data.gun))

    def _update(self, ref: Reference, rule: Rule, settings: Settings) -> _Memo:
        client = self._client(settings, rule.required_roles)
        try:
            data = client.update(ref, commit=False)
        except NoTrustDataError as error:
            # Notary answered that the repository has no trust data at all: the one case a
            # rule may accept unsigned, and only when nothing was ever cached for it.
            if rule.allow_unsigned and not has_cached_trust(settings.trust_dir, ref.name):
                pinned = settings.trust_pinning.applying(ref.name)
                if pinned is not None:
                    # A pin says the repository is signed, by that root, as a cached root does:
                    # "no trust data" then is what an attacker on the trust server would say.
                    table, key = pinned
                    raise NoTrustDataError(
                        f"{ref.name} has no trust data on its trust server, but its root is "
                        f"pinned ([trust_pinning.{table}] {key!r}, or a rule's root_keys/"
                        f"root_ca): rule {rule.label} ({rule.origin}) does not accept a pinned "
                        "repository unsigned",
                        hint="a pinned repository must be signed; remove the pin if it is not",
                    ) from error
                raise UnsignedAccepted(
                    f"UNSIGNED, accepted by rule {rule.label} ({rule.origin}): {ref.name} has no "
                    "trust data on its trust server; the image is NOT verified",
                    rule,
                ) from error
            raise
        except TrustPinError as error:
            pins = self._repository_rule(ref, rule)
            if pins.tofu is False and error.message == PIN_NO_TOFU:
                raise PolicyError(
                    f"rule {pins.label} ({pins.origin}) does not allow trust on first use and "
                    f"nothing is cached or pinned for {ref.name}",
                    hint="pin its root key with root_keys (or [trust_pinning]) to trust it",
                ) from error
            raise
        finally:
            self._count(client)
        return _Memo(data=data, done=True, client=client)

    def _choose(self, data: TrustData, tag: str, rule: Rule) -> SignedTarget:
        """The digest the rule vouches for: every named signer's (they must agree), else
        docker's lookup."""
        if not rule.signers:
            return lookup_tag(data, tag)
        evidence = NotaryEvidence(data)
        votes: dict[str, list[str]] = {}
        chosen: dict[str, SignedTarget] = {}
        for signer in rule.signers:
            role = signer if signer.startswith("targets/") else f"targets/{signer}"
            signed = evidence.signed_by(role, tag)
            if signed is None:
                continue  # the requirement then reports the missing signer
            votes.setdefault(signed.digest, []).append(signer)
            chosen.setdefault(signed.digest, signed)
        if not votes:
            names = ", ".join(rule.signers)
            raise PolicyError(f"rule {rule.label}: {tag} is not signed by any of {names}")
        if len(votes) > 1:
            # A named signer's dissent refuses the tag, however many signers agree otherwise
            # (a threshold counts signatures, it does not outvote a signer: issue 11 #9).
            detail = "; ".join(f"{', '.join(who)} signed {d}" for d, who in votes.items())
            raise PolicyError(f"rule {rule.label}: the signers disagree on {tag}: {detail}")
        (digest,) = votes
        return chosen[digest]


def _unpinnable(tagged: Reference, accepted: UnsignedAccepted) -> PolicyError:
    """A tag of a signed repository whose own rule accepts it only unsigned (its trust server
    has no data): refused for a digest or `-a` reference, which must be pinned."""
    return PolicyError(
        f"rule {accepted.rule.label}: tag {tagged.tag} of {tagged.name} has no trust data on "
        f"that rule's trust server; a digest or all-tags reference needs a verified digest "
        f"({accepted.message})"
    )


def verify_many(
    service: TrustService, texts: Sequence[str], *, all_tags: bool = False
) -> list[Verification]:
    """`verify` for each text; failures come back in the results (resolve's loop)."""
    results = []
    for text in texts:
        try:
            results.append(service.verify(text, all_tags=all_tags))
        except TrustpullError as error:
            results.append(Verification(text, error=error))
    return results
