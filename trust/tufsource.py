"""Standard TUF repositories as a trust source, verified by python-tuf's `ngclient.Updater`.

Naming convention: a tag is the target path `<GUN>:<tag>` (GUN = the fully qualified
repository name, e.g. `registry.example.com/team/app:1.4`), `hashes.sha256` is the manifest
digest in hex and `length` the manifest size. Delegations (glob paths, terminating, hash bins)
are python-tuf's business: the digest of a tag is always what `Updater.get_targetinfo` returns
after the full TUF client workflow. trustpull adds only the transport (its own bounded HTTPS
session, so TLS, caps, deadlines, proxies and credentials are the same as for Notary), the error
mapping onto its exit codes, and read-only listings (all tags, signers) over metadata that the
Updater has verified.

Nothing here falls back: a reference whose scope names a TUF repository is verified by that
repository or refused.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

from tuf.api import exceptions as tuf_errors
from tuf.api.metadata import Root, TargetFile, Targets
from tuf.api.serialization import DeserializationError
from tuf.ngclient.config import UpdaterConfig
from tuf.ngclient.fetcher import FetcherInterface
from tuf.ngclient.updater import Updater

from trust.errors import (
    AuthError,
    ConfigError,
    DelegationError,
    ExpiredError,
    HashMismatchError,
    InputError,
    LengthError,
    MalformedError,
    NetworkError,
    NoSuchTagError,
    NoTrustDataError,
    RollbackError,
    SignatureError,
    ThresholdError,
    TrustpullError,
    VerificationError,
)
from trust.lookup import REPO_ADMIN, Resolution, natural_key, pinned_reference
from trust.reference import Reference
from trust.settings import Settings, TrustSourceConfig
from trust.transport import TrustServerSession, parse_challenges
from trust.version import __version__

__all__ = ["TrustpullFetcher", "TufSource", "map_tuf_error", "target_path"]

SOURCE_NAME = "tuf"
_TAG_RE = re.compile(r"[\w][\w.-]{0,127}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_UNSIGNED_THRESHOLD = re.compile(r"signed by \d+/\d+ keys")


def target_path(gun: str, tag: str) -> str:
    """The TUF target path that signs `tag` of repository `gun`."""
    return f"{gun}:{tag}"


# ------------------------------------------------------------------------------ errors


def map_tuf_error(exc: BaseException, where: str) -> TrustpullError | None:
    """python-tuf's exception (or one of ours raised through it) as a trustpull error.

    Returns None for anything that is neither, so that bugs stay bugs (exit 1).
    """
    if isinstance(exc, TrustpullError):
        return exc
    if isinstance(exc, tuf_errors.DownloadError):
        if isinstance(exc.__cause__, TrustpullError):
            return exc.__cause__  # raised by our transport, wrapped by FetcherInterface.fetch
        if isinstance(exc, tuf_errors.DownloadHTTPError):
            if exc.status_code in (401, 403):
                return AuthError(
                    f"{where}: you are not authorized to read the TUF repository: "
                    f"server returned {exc.status_code}"
                )
            return NetworkError(f"{where}: unexpected answer {exc.status_code}: {exc}")
        if isinstance(exc, tuf_errors.DownloadLengthMismatchError):
            return LengthError(f"{where}: {exc}")
        if isinstance(exc, tuf_errors.SlowRetrievalError):
            return NetworkError(f"{where}: slow retrieval: {exc}")
        return NetworkError(f"{where}: download failed: {exc}")
    if isinstance(exc, tuf_errors.RepositoryError):
        message = f"{where}: {exc}"
        if isinstance(exc, tuf_errors.BadVersionNumberError):
            return RollbackError(message)
        if isinstance(exc, tuf_errors.ExpiredMetadataError):
            return ExpiredError(message)
        if isinstance(exc, tuf_errors.UnsignedMetadataError):
            if _UNSIGNED_THRESHOLD.search(str(exc)):
                return ThresholdError(message)
            return SignatureError(message)
        if isinstance(exc, tuf_errors.LengthOrHashMismatchError):
            return HashMismatchError(message)
        if isinstance(exc, DeserializationError):
            return MalformedError(message)
        return VerificationError(message)
    return None


@contextlib.contextmanager
def _mapped(where: str) -> Iterator[None]:
    """Run python-tuf code, re-raising its failures as trustpull errors."""
    try:
        yield
    except (TrustpullError, tuf_errors.DownloadError, tuf_errors.RepositoryError) as exc:
        mapped = map_tuf_error(exc, where)
        assert mapped is not None
        if mapped is exc:
            raise
        raise mapped from exc
    except OSError as exc:
        raise InputError(f"{where}: cannot use the local metadata cache: {exc}") from exc


# --------------------------------------------------------------------------- transport


class _RepositorySession(TrustServerSession):
    """trustpull's bounded HTTPS session (TLS from `<DOCKER_CONFIG>/tls/<host:port>/`, caps,
    deadlines, retries, https-only redirects, no cookies, environment proxies) aimed at a
    static TUF repository instead of a Notary server's `/v2/` API.

    Credentials: docker's credentials for exactly the metadata host, sent as Basic auth only
    after that host asks for them with a Basic challenge.
    """

    _basic_auth: str | None = None

    def get_url(self, url: str, max_bytes: int) -> tuple[int, bytes]:
        """GET `url` (under the metadata URL) capped at `max_bytes`: (status, body)."""
        if not url.startswith(self._server + "/"):
            raise InputError(f"refusing to fetch {url!r}: outside {self._server}")
        what = url[len(self._server) + 1 :]
        reply = self._get(url, what, max_bytes, self._basic_auth)
        if reply[0] == 401 and self._basic_auth is None:
            challenges = parse_challenges(reply[2])
            creds = self._creds()
            if (
                any(c.scheme == "basic" for c in challenges)
                and creds is not None
                and creds.username
                and creds.password
            ):
                pair = f"{creds.username}:{creds.password}".encode()
                self._basic_auth = f"Basic {base64.b64encode(pair).decode('ascii')}"
                reply = self._get(url, what, max_bytes, self._basic_auth)
        return reply[0], reply[1]

    def _get(
        self, url: str, what: str, max_bytes: int, auth: str | None
    ) -> tuple[int, bytes, list[str]]:
        deadline = min(self._clock() + self._limits.file_timeout, self._session_deadline())
        reply = self._fetch(
            "GET",
            url,
            label="TUF repository",
            what=what,
            deadline=deadline,
            auth=auth,
            max_bytes=max_bytes,
            retries=self._limits.retries,
        )
        return reply.status, reply.body, reply.challenges


class TrustpullFetcher(FetcherInterface):
    """python-tuf's network layer over trustpull's HTTPS session.

    `download_bytes`/`download_file` are overridden so that python-tuf's length bound becomes
    the transport's read cap (the body is never read past it), and every non-200 answer is a
    `DownloadHTTPError` carrying the status, which is what ngclient expects (a 403/404 on the next
    `N.root.json` ends the root rotation).
    """

    def __init__(
        self,
        get: Callable[[str, int], tuple[int, bytes]] | None,
        *,
        ceiling: int,
        offline_reason: str | None = None,
    ) -> None:
        self._get_url = get
        self._ceiling = ceiling
        self._offline_reason = offline_reason

    def _download(self, url: str, max_length: int) -> bytes:
        if self._get_url is None:
            raise NetworkError(self._offline_reason or f"no network access for {url}")
        status, body = self._get_url(url, min(max_length, self._ceiling))
        if status != 200:
            raise tuf_errors.DownloadHTTPError(f"{url} answered {status}", status)
        return body

    def _fetch(self, url: str) -> Iterator[bytes]:
        return iter([self._download(url, self._ceiling)])

    def download_bytes(self, url: str, max_length: int) -> bytes:
        return self._download(url, max_length)

    @contextlib.contextmanager
    def download_file(self, url: str, max_length: int) -> Iterator[IO[Any]]:
        body = self._download(url, max_length)
        with tempfile.TemporaryFile() as temp:
            temp.write(body)
            temp.seek(0)
            yield temp


# ----------------------------------------------------------------------------- updater


class _Updater(Updater):
    """ngclient's Updater, plus read access to what it verified.

    `last_role` is the role whose metadata was loaded last: ngclient's target search loads a
    role right before looking the target up in it and returns on the first hit, so after a
    successful `get_targetinfo` it names the role that signed the target.
    """

    last_role: str | None = None

    def _load_targets(self, role: str, parent_role: str) -> Targets:
        self.last_role = role
        return super()._load_targets(role, parent_role)

    def verified_targets(self, role: str, parent_role: str) -> Targets:
        """`role`'s targets metadata, loaded and verified by ngclient against `parent_role`."""
        return self._load_targets(role, parent_role)

    @property
    def trusted_root(self) -> Root:
        return self._trusted_set.root


@dataclass(frozen=True)
class _Signed:
    """One signed tag of a TUF repository, as ngclient's target search answers it."""

    tag: str
    digest: str  # sha256:<hex>
    size: int
    role: str


def _nothing() -> None:
    return None


def _default_cache_dir(metadata_url: str) -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    key = hashlib.sha256(metadata_url.encode()).hexdigest()[:32]
    return Path(base) / "trustpull" / "tuf" / key


class TufSource:
    """One configured TUF repository: resolve tags to signed digests and inspect them."""

    def __init__(
        self,
        config: TrustSourceConfig,
        settings: Settings,
        *,
        warn: Callable[[str], None] | None = None,
        fetcher: FetcherInterface | None = None,
    ) -> None:
        self.config = config
        self.settings = settings
        self.limits = settings.limits
        self._warn = warn
        self._fetcher = fetcher
        self.where = f"TUF repository {config.metadata_url}"

    # --------------------------------------------------------------------- public

    def resolve(self, ref: Reference, all_tags: bool = False) -> list[Resolution]:
        """Every signed digest `ref` stands for, answered by the TUF repository."""
        gun = ref.name
        with self._updater(gun) as updater, _mapped(self.where):
            if all_tags:
                signed = self._all_signed(updater, gun)
                if not signed:
                    raise NoTrustDataError(f"No trusted tags for {gun} in {self.where}")
                return [self._resolution(updater, ref, s) for s in signed]
            if ref.digest is not None and not ref.tag_given:
                for candidate in self._all_signed(updater, gun):
                    if candidate.digest == ref.digest:
                        return [self._resolution(updater, ref, candidate)]
                raise NoSuchTagError(
                    f"digest {ref.digest} is not signed for any tag of {gun}",
                    hint="trustpull pulls a digest only when it is a signed tag's digest",
                )
            assert ref.tag is not None
            found = self._lookup(updater, gun, ref.tag)
            if found is None:
                raise NoSuchTagError(
                    f"No valid trust data for {ref.tag}",
                    hint=f"{target_path(gun, ref.tag)} is not a target of {self.where}",
                )
            if ref.digest is not None and found.digest != ref.digest:
                raise NoSuchTagError(
                    f"tag {ref.tag} of {gun} is signed for {found.digest}, not {ref.digest}"
                )
            return [self._resolution(updater, ref, found)]

    def inspect(self, ref: Reference, name_as_typed: str, tag: str | None) -> dict[str, object]:
        """`docker trust inspect`'s object: signed tags with the delegated roles that list them,
        every delegated role with its keys, and the root and targets keys."""
        gun = ref.name
        with self._updater(gun) as updater, _mapped(self.where):
            if tag is not None:
                found = self._lookup(updater, gun, tag)
                signed = [found] if found is not None else []
            else:
                signed = self._all_signed(updater, gun)
            signed_tags = [
                {
                    "SignedTag": s.tag,
                    "Digest": s.digest.removeprefix("sha256:"),
                    "Signers": list(self._signers(updater, gun, s)),
                }
                for s in signed
            ]
            role_keys: dict[str, list[str]] = {}
            for _name, targets in self._every_role(updater):
                delegations = targets.delegations
                if delegations is None:
                    continue
                if delegations.roles is not None:
                    for role in delegations.roles.values():
                        role_keys[role.name] = sorted(role.keyids)
                elif delegations.succinct_roles is not None:
                    ids = sorted(delegations.succinct_roles.keyids)
                    for bin_name in delegations.succinct_roles.get_roles():
                        role_keys[bin_name] = ids
            root = updater.trusted_root
        return {
            "Name": name_as_typed,
            "SignedTags": signed_tags,
            "Signers": [
                {"Name": name, "Keys": [{"ID": key} for key in keys]}
                for name, keys in sorted(role_keys.items(), reverse=True)
            ],
            "AdministrativeKeys": [
                {"Name": "Root", "Keys": [{"ID": k} for k in sorted(root.roles["root"].keyids)]},
                {
                    "Name": "Repository",
                    "Keys": [{"ID": k} for k in sorted(root.roles["targets"].keyids)],
                },
            ],
        }

    # ------------------------------------------------------------------- plumbing

    def cache_dir(self) -> Path:
        return self.config.cache_dir or _default_cache_dir(self.config.metadata_url)

    def _make_fetcher(self, gun: str) -> tuple[FetcherInterface, Callable[[], None]]:
        if self._fetcher is not None:
            return self._fetcher, lambda: None
        ceiling = self.limits.metadata_max_bytes
        if self.settings.offline:
            reason = (
                f"--offline: {self.where} cannot be verified without the network "
                "(its timestamp must be fresh)"
            )
            return TrustpullFetcher(None, ceiling=ceiling, offline_reason=reason), lambda: None
        from trust.credentials import resolve_registry_auth

        host = urlsplit(self.config.metadata_url).netloc
        settings = self.settings

        def credentials() -> Any:
            return resolve_registry_auth(host, settings.docker_config, os.environ)

        session = _RepositorySession(
            self.config.metadata_url,
            gun,
            limits=self.limits,
            docker_config=self.settings.docker_config,
            credentials=credentials,
            user_agent=f"trustpull/{__version__}",
        )
        return TrustpullFetcher(session.get_url, ceiling=ceiling), session.close

    def _read_root(self) -> bytes:
        path = self.config.root
        try:
            with path.open("rb") as handle:
                data = handle.read(self.limits.root_max_bytes + 1)
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read the trusted root: {exc.strerror}") from None
        if len(data) > self.limits.root_max_bytes:
            raise ConfigError(
                f"{path}: trusted root is larger than {self.limits.root_max_bytes} bytes"
            )
        return data

    @contextlib.contextmanager
    def _updater(self, gun: str) -> Iterator[_Updater]:
        """A refreshed Updater (root, timestamp, snapshot, targets verified), under the cache
        lock so concurrent runs never interleave their writes."""
        root = self._read_root()
        metadata_dir = self.cache_dir() / "metadata"
        try:
            metadata_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            lock = (self.cache_dir() / ".trustpull.lock").open("a")
        except OSError as exc:
            raise InputError(
                f"{self.cache_dir()}: cannot create the TUF metadata cache: {exc.strerror}"
            ) from None
        close = _nothing
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            fetcher, close = self._make_fetcher(gun)
            config = UpdaterConfig(
                max_root_rotations=self.limits.max_root_rotations,
                max_delegations=self.limits.max_delegations,
                root_max_length=self.limits.root_max_bytes,
                timestamp_max_length=self.limits.timestamp_max_bytes,
                snapshot_max_length=self.limits.metadata_max_bytes,
                targets_max_length=self.limits.metadata_max_bytes,
            )
            try:
                updater = _Updater(
                    str(metadata_dir),
                    self.config.metadata_url + "/",
                    fetcher=fetcher,
                    config=config,
                    bootstrap=root,
                )
            except tuf_errors.RepositoryError as exc:
                raise ConfigError(
                    f"{self.config.root}: not a usable trusted TUF root: {exc}"
                ) from exc
            except OSError as exc:
                raise InputError(f"{metadata_dir}: cannot write the metadata cache: {exc}") from exc
            with _mapped(self.where):
                updater.refresh()
            yield updater
        finally:
            close()
            lock.close()  # releases the lock

    def _lookup(self, updater: _Updater, gun: str, tag: str) -> _Signed | None:
        """ngclient's target search for `<gun>:<tag>`; the role is the one it found it in."""
        if not _TAG_RE.fullmatch(tag):
            return None
        updater.last_role = None
        info = updater.get_targetinfo(target_path(gun, tag))
        if info is None:
            return None
        assert updater.last_role is not None
        return self._convert(tag, info, updater.last_role)

    def _convert(self, tag: str, info: TargetFile, role: str) -> _Signed:
        digest = info.hashes.get("sha256")
        if not isinstance(digest, str) or not _HEX64.fullmatch(digest):
            raise MalformedError(
                f"{self.where}: no valid hash, expecting sha256 (target {info.path!r} in {role})"
            )
        if info.length < 1:
            raise MalformedError(
                f"{self.where}: target {info.path!r} in {role} has an invalid length"
            )
        return _Signed(tag=tag, digest="sha256:" + digest, size=info.length, role=role)

    def _every_role(self, updater: _Updater) -> Iterator[tuple[str, Targets]]:
        """Every targets role reachable from `targets`, verified by ngclient, pre-order."""
        stack: list[tuple[str, str]] = [(Targets.type, Root.type)]
        visited: set[str] = set()
        while stack:
            role, parent = stack.pop()
            if role in visited:
                continue
            if len(visited) > self.limits.max_delegations:
                raise DelegationError(
                    f"{self.where}: more than {self.limits.max_delegations} delegated roles"
                )
            targets = updater.verified_targets(role, parent)
            visited.add(role)
            yield role, targets
            delegations = targets.delegations
            if delegations is None:
                continue
            if delegations.roles is not None:
                names = list(delegations.roles)
            elif delegations.succinct_roles is not None:
                names = list(delegations.succinct_roles.get_roles())
            else:
                names = []
            stack.extend((name, role) for name in reversed(names))

    def _all_signed(self, updater: _Updater, gun: str) -> list[_Signed]:
        """Every tag of `gun` that ngclient's target search accepts, in natural tag order.

        Candidates come from every role; each one is then looked up the TUF way, so a tag
        listed only by a role that is not allowed to sign it is left out (or answered by the
        role that is).
        """
        prefix = gun + ":"
        candidates: set[str] = set()
        for _name, targets in self._every_role(updater):
            for path in targets.targets:
                if path.startswith(prefix) and _TAG_RE.fullmatch(path[len(prefix) :]):
                    candidates.add(path[len(prefix) :])
        found = []
        for tag in sorted(candidates, key=natural_key):
            signed = self._lookup(updater, gun, tag)
            if signed is not None:
                found.append(signed)
        return found

    def _signers(self, updater: _Updater, gun: str, signed: _Signed) -> tuple[str, ...]:
        """Delegated roles that list the tag with the signed digest, on the TUF search path.

        The role that answered comes first in the search; the walk then goes on (same order,
        same terminating rule) to name the others. Roles after the answer that fail to verify
        are not named: this list is informational, the digest never depends on it.
        """
        path = target_path(gun, signed.tag)
        names: list[str] = []
        stack: list[tuple[str, str]] = [(Targets.type, Root.type)]
        visited: set[str] = set()
        while stack and len(visited) <= self.limits.max_delegations:
            role, parent = stack.pop()
            if role in visited:
                continue
            try:
                targets = updater.verified_targets(role, parent)
            except (tuf_errors.RepositoryError, tuf_errors.DownloadError, TrustpullError):
                if signed.role in names or signed.role == Targets.type:
                    continue
                raise
            visited.add(role)
            info = targets.targets.get(path)
            if (
                info is not None
                and role != Targets.type
                and info.hashes.get("sha256") == signed.digest.removeprefix("sha256:")
            ):
                names.append(role)
            if targets.delegations is None:
                continue
            children: list[tuple[str, str]] = []
            for child, terminating in targets.delegations.get_roles_for_target(path):
                children.append((child, role))
                if terminating:
                    stack = []
                    break
            stack.extend(reversed(children))
        return tuple(sorted(set(names))) or (REPO_ADMIN,)

    def _resolution(self, updater: _Updater, ref: Reference, signed: _Signed) -> Resolution:
        pinned = pinned_reference(ref, signed.tag, signed.digest)
        root_ids = sorted(updater.trusted_root.roles["root"].keyids)
        return Resolution(
            reference=str(pinned),
            name=ref.name,
            tag=signed.tag,
            digest=signed.digest,
            size=signed.size,
            role=signed.role,
            signers=self._signers(updater, ref.name, signed),
            trust_server=self.config.metadata_url,
            root_key_id=root_ids[0] if root_ids else "",
            source=SOURCE_NAME,
        )
