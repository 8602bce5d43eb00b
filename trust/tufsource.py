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

import contextlib
import fcntl
import hashlib
import os
import re
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import urlsplit

from tuf.api import exceptions as tuf_errors
from tuf.api.serialization import DeserializationError
from tuf.ngclient.config import UpdaterConfig
from tuf.ngclient.fetcher import FetcherInterface
from tuf.ngclient.updater import Updater

from trust.errors import (
    AuthError,
    CacheError,
    ConfigError,
    ExpiredError,
    HashMismatchError,
    InputError,
    LengthError,
    MalformedError,
    NetworkError,
    RollbackError,
    SignatureError,
    ThresholdError,
    TrustpullError,
    VerificationError,
)
from trust.http import Auth, HttpsSession, RealmPolicy
from trust.reference import Reference
from trust.settings import Settings, TrustSourceConfig
from trust.tufview import SOURCE_NAME, TufView, target_path
from trust.version import __version__

if TYPE_CHECKING:
    from trust.credentials import CredentialSource

__all__ = [
    "SOURCE_NAME",
    "TrustpullFetcher",
    "TufSource",
    "TufView",
    "map_tuf_error",
    "target_path",
]

_UNSIGNED_THRESHOLD = re.compile(r"signed by \d+/\d+ keys")


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
        credentials: CredentialSource | None = None,
    ) -> None:
        self.config = config
        self.settings = settings
        self.limits = settings.limits
        self._warn = warn
        self._fetcher = fetcher
        #: As for Notary: None is the docker configuration; the proxy passes the request's.
        self._credentials = credentials
        self.where = f"TUF repository {config.metadata_url}"

    # --------------------------------------------------------------------- public

    @contextlib.contextmanager
    def view(self, gun: str) -> Iterator[TufView]:
        """The verified view of `gun` (see `trust.tufview`), under the cache lock, with the
        repository refreshed (root, timestamp, snapshot, targets). python-tuf's failures come
        out as trustpull errors, inside the block too (delegations load lazily)."""
        with self._updater() as (updater, metadata_dir), _mapped(self.where):
            yield TufView(
                updater,
                metadata_dir,
                gun,
                limits=self.limits,
                where=self.where,
                metadata_url=self.config.metadata_url,
            )

    def inspect(self, ref: Reference, name_as_typed: str, tag: str | None) -> dict[str, object]:
        """`docker trust inspect`'s object for `ref`'s repository (see `TufView.inspect`)."""
        with self.view(ref.name) as view:
            return view.inspect(name_as_typed, tag)

    # ------------------------------------------------------------------- plumbing

    def cache_dir(self) -> Path:
        return self.config.cache_dir or _default_cache_dir(self.config.metadata_url)

    def _make_fetcher(self) -> tuple[FetcherInterface, Callable[[], None]]:
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
        source = self._credentials

        def credentials() -> Any:
            if source is not None:
                return source(host)
            return resolve_registry_auth(host, settings.docker_config, os.environ)

        # Credentials: docker's for exactly the metadata host, sent as Basic auth only after
        # that host asks for them with a Basic challenge (no bearer flow for a file server).
        session = HttpsSession(
            self.config.metadata_url,
            limits=self.limits,
            docker_config=self.settings.docker_config,
            auth=Auth(
                credentials=credentials,
                realms=RealmPolicy.for_server(self.config.metadata_url, None),
            ),
            label="TUF repository",
            user_agent=f"trustpull/{__version__}",
        )

        def get(url: str, max_bytes: int) -> tuple[int, bytes]:
            reply = session.get(url, max_bytes=max_bytes)
            return reply.status, reply.body

        return TrustpullFetcher(get, ceiling=ceiling), session.close

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
    def _updater(self) -> Iterator[tuple[Updater, Path]]:
        """A refreshed Updater (root, timestamp, snapshot, targets verified), under the cache
        lock so concurrent runs never interleave their writes."""
        root = self._read_root()
        metadata_dir = self.cache_dir() / "metadata"
        try:
            metadata_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise InputError(
                f"{self.cache_dir()}: cannot create the TUF metadata cache: {exc.strerror}"
            ) from None
        lock_path = self.cache_dir() / ".trustpull.lock"
        try:
            # No link followed and nothing but a regular file: a lock that cannot be taken is
            # refused, never a silent unlocked run (issue 11 #7, as the Notary cache's lock).
            fd = os.open(lock_path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise CacheError(f"{lock_path}: cannot take the cache lock: {exc.strerror}") from None
        lock = os.fdopen(fd, "a")
        close = _nothing
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise CacheError(f"{lock_path}: the cache lock is not a regular file")
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
            except OSError as exc:
                raise CacheError(
                    f"{lock_path}: cannot take the cache lock: {exc.strerror}"
                ) from None
            fetcher, close = self._make_fetcher()
            config = UpdaterConfig(
                max_root_rotations=self.limits.max_root_rotations,
                max_delegations=self.limits.max_delegations,
                root_max_length=self.limits.root_max_bytes,
                timestamp_max_length=self.limits.timestamp_max_bytes,
                snapshot_max_length=self.limits.metadata_max_bytes,
                targets_max_length=self.limits.metadata_max_bytes,
            )
            try:
                updater = Updater(
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
            yield updater, metadata_dir
        finally:
            close()
            lock.close()  # releases the lock
