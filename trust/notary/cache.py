"""The on-disk trust cache, in docker's own layout so the docker CLI can share it (dct.md §5).

`<trust_dir>/tuf/<GUN>/metadata/<role>.json` holds the exact server bytes. trustpull only ever
reads and writes those files (never `private/` or `changelist/`), and is careful where notary is
not (attacks.md H03–H07):

- every write is a temporary file in the same directory plus `os.replace`, so a concurrent
  reader (the docker CLI included) sees the old file or the new one, never half of one;
- trustpull's writers hold `tuf/<GUN>/.trustpull.lock` (a leading dot is never a valid GUN
  component) around read, verify and write; a lock that cannot be taken is a `CacheError`,
  except on a cache that cannot be written at all, where the run is read-only (H05);
- files are opened with `O_NOFOLLOW` and must be regular files: a planted link is refused;
- directories are 0700 and files 0600; every path is checked to stay inside the cache.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

from trust.errors import CacheError, InputError
from trust.reference import Reference

__all__ = ["FileIdentity", "TrustCache", "check_gun_for_trust", "has_cached_trust"]

#: (device, inode, size, mtime ns, ctime ns) of a cache file: see `TrustCache.identity`.
FileIdentity = tuple[int, int, int, int, int]

_DIR_MODE = 0o700
_FILE_MODE = 0o600


class TrustCache:
    """Read and write one GUN's cached metadata."""

    def __init__(self, trust_dir: Path, gun: str) -> None:
        parts = gun.split("/")
        if any(part in ("", ".", "..") or part.startswith(".") for part in parts):
            raise InputError(f"repository name {gun!r} cannot be used as a cache path")
        self.trust_dir = trust_dir
        self.gun = gun
        self.repo_dir = trust_dir.joinpath("tuf", *parts)
        self.metadata_dir = self.repo_dir / "metadata"

    # ------------------------------------------------------------------ paths

    def _path(self, role: str) -> Path:
        parts = role.split("/")
        if any(part in ("", ".", "..") or "\\" in part for part in parts):
            raise InputError(f"role name {role!r} cannot be used as a cache path")
        path = self.metadata_dir.joinpath(*parts[:-1], parts[-1] + ".json")
        base = os.path.abspath(self.metadata_dir)
        if os.path.commonpath([base, os.path.abspath(path)]) != base:
            raise InputError(f"role name {role!r} leaves the cache directory")
        return path

    def _check_no_links(self, path: Path) -> None:
        """Refuse a symlink anywhere between the trust directory and `path` (H06)."""
        current = self.trust_dir
        for part in path.relative_to(self.trust_dir).parts:
            current = current / part
            try:
                info = os.lstat(current)
            except FileNotFoundError:
                return
            except OSError as exc:
                raise CacheError(f"cannot inspect {current}: {exc.strerror}") from None
            if stat.S_ISLNK(info.st_mode):
                raise CacheError(
                    f"{current} is a symbolic link: refusing to use the trust cache",
                    hint=f"remove {self.metadata_dir} to forget the cached trust data",
                )

    # ------------------------------------------------------------------ reading

    def identity(self, role: str) -> FileIdentity | None:
        """Which file the cache holds for `role` (device, inode, size, mtime and ctime in ns;
        None when absent): a long-running process compares it to tell whether another writer
        changed the file since it was read (trust.notary.pool). ctime too: an in-place rewrite
        can put the size and mtime back (`os.utime`), never the ctime."""
        try:
            info = os.lstat(self._path(role))
        except OSError:
            return None
        return info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns

    def read(self, role: str, max_bytes: int) -> bytes | None:
        """The cached bytes, or None if absent or larger than `max_bytes` (treated as absent)."""
        path = self._path(role)
        self._check_no_links(path)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except FileNotFoundError:
            return None
        except NotADirectoryError:
            return None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise CacheError(f"{path} is a symbolic link: refusing it") from None
            raise CacheError(f"cannot read {path}: {exc.strerror}") from None
        with os.fdopen(fd, "rb") as handle:
            info = os.fstat(handle.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise CacheError(f"{path} is not a regular file: refusing the trust cache")
            if info.st_size > max_bytes:
                return None
            data = handle.read(max_bytes + 1)
        if len(data) > max_bytes:
            return None
        return data

    # ------------------------------------------------------------------ writing

    def _make_dirs(self, directory: Path) -> None:
        self._check_no_links(directory)
        # mkdir(parents=True) gives the *intermediate* directories the default mode (0755
        # under a 022 umask), so `trust/`, `tuf/` and the GUN components would be readable by
        # everyone; notary's MkdirAll(…, 0700) makes all of them private (dct.md §5). Create
        # each missing component with 0700 instead.
        missing: list[Path] = []
        for each in (directory, *directory.parents):
            if each.exists():
                break  # and so do all above it
            missing.append(each)
        for component in reversed(missing):
            component.mkdir(mode=_DIR_MODE, exist_ok=True)
        self._check_no_links(directory)

    def write(self, role: str, data: bytes) -> None:
        """Atomically replace the cached file for `role` (temp file + rename, 0600)."""
        path = self._path(role)
        self._make_dirs(path.parent)
        fd, temp_name = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                os.fchmod(handle.fileno(), _FILE_MODE)
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp_name, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp_name)
            raise

    def delete(self, role: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._path(role))

    @property
    def lock_path(self) -> Path:
        return self.repo_dir / ".trustpull.lock"

    @contextlib.contextmanager
    def lock(self) -> Iterator[bool]:
        """Exclusive per-GUN lock around read, verify and write (attacks.md H04).

        Yields True once the lock is held. A lock that exists but cannot be taken is a
        `CacheError` naming its path, never a silent unlocked run: a symbolic link or any other
        non-regular file planted at it (opened with `O_NOFOLLOW`), a lock file this process may
        not open, a failing `flock`. Only when the cache location itself cannot be written (a
        read-only file system, or no permission to create the directory or the lock file: the
        read-only home of attacks.md H05) does it yield False: the caller then runs read-only,
        writes nothing, and says so.
        """
        path = self.lock_path
        try:
            self._make_dirs(self.repo_dir)
        except OSError as exc:
            if _read_only(exc):
                yield False
                return
            raise CacheError(
                f"cannot create the trust cache directory for {path}: {exc.strerror or exc}"
            ) from None
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        try:
            fd = os.open(path, flags, _FILE_MODE)
        except OSError as exc:
            if exc.errno == errno.EROFS or (_read_only(exc) and not os.path.lexists(path)):
                yield False
                return
            if exc.errno == errno.ELOOP:
                raise CacheError(
                    f"{path} is a symbolic link: refusing to use the trust cache",
                    hint=f"remove {path} (trustpull creates it as a regular file)",
                ) from None
            raise CacheError(f"cannot open the trust cache lock {path}: {exc.strerror}") from None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise CacheError(f"{path} is not a regular file: refusing to use the trust cache")
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
            except OSError as exc:
                raise CacheError(
                    f"cannot lock the trust cache lock {path}: {exc.strerror}"
                ) from None
            yield True
        finally:
            os.close(fd)


def check_gun_for_trust(ref: Reference) -> None:
    """Refuse names whose cache path could collide with another repository's (attacks.md H07)."""
    if ref.domain != ref.domain.lower():
        raise InputError(
            f"registry host {ref.domain!r} has upper-case letters: with content trust on, the "
            "trust cache path would depend on the file system's case rules; write it in lower case"
        )
    if "metadata" in ref.path.split("/"):
        raise InputError(
            f"repository {ref.name!r} has a path component 'metadata', which collides with the "
            "trust cache layout: refused with content trust on"
        )


def has_cached_trust(trust_dir: Path, gun: str) -> bool:
    """Whether anything is cached for the GUN: then "no trust data" is never "unsigned"."""
    directory = TrustCache(trust_dir, gun).metadata_dir
    try:
        return directory.exists() and any(directory.rglob("*.json"))
    except OSError:
        return True  # cannot tell: assume something is there, so nothing is accepted unsigned


def _read_only(exc: OSError) -> bool:
    """The cache location cannot be written at all (H05), as opposed to something planted."""
    return exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM)
