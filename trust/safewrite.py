"""Reading and replacing a user's file safely (`resolve --write`, `resolve --override`).

`read_bytes` reads a regular file as bytes, capped, refusing symlinks when asked.
`replace_bytes` replaces a file atomically:

1. the target must not be a symlink (refused: replacing the link with a regular file would
   silently detach it, and following it writes somewhere the user did not name);
2. a temporary file with an unpredictable name is created exclusively in the target's own
   directory (`tempfile.mkstemp`: `O_CREAT | O_EXCL | O_NOFOLLOW`, mode 0600), so a name
   planted by another user of a shared directory can never be followed or reused;
3. the target's mode (and, where permitted, owner and group) are applied to the temporary file
   before any byte is written;
4. the bytes are written, the file is fsync'ed, `os.replace` swaps it in atomically, and the
   directory is fsync'ed so the rename itself survives a crash.

On any error the temporary file is removed and the target is left as it was.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path

from trust.errors import InputError

__all__ = ["read_bytes", "replace_bytes"]


def read_bytes(path: str | Path, *, max_bytes: int | None = None, follow: bool = True) -> bytes:
    """The file's bytes; InputError if missing, not a regular file, a symlink (`follow=False`)
    or larger than `max_bytes`."""
    flags = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0)
    if not follow:
        flags |= os.O_NOFOLLOW
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except OSError as exc:
        if not follow and os.path.islink(path):
            raise InputError(f"{path}: is a symbolic link; name the file it points to") from None
        raise InputError(f"{path}: cannot read: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise InputError(f"{path}: not a regular file")
        if max_bytes is not None and info.st_size > max_bytes:
            raise InputError(
                f"{path}: {info.st_size} bytes, over the limit of {max_bytes} "
                "(limits.manifest_max_bytes)"
            )
        data = handle.read() if max_bytes is None else handle.read(max_bytes + 1)
    if max_bytes is not None and len(data) > max_bytes:
        raise InputError(f"{path}: over the limit of {max_bytes} bytes (limits.manifest_max_bytes)")
    return data


def _fsync_dir(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):  # some file systems refuse fsync on a directory
            os.fsync(fd)
    finally:
        os.close(fd)


def replace_bytes(path: str | Path, data: bytes, *, create: bool = False) -> None:
    """Atomically replace `path` with `data`, keeping its mode and ownership.

    `create=True` allows a target that does not exist yet (then mode 0644 less the umask);
    a symlink is refused in either case."""
    target = os.fspath(path)
    try:
        info: os.stat_result | None = os.lstat(target)
    except FileNotFoundError:
        if not create:
            raise InputError(f"{target}: file not found") from None
        info = None
    except OSError as exc:
        raise InputError(f"{target}: cannot write: {exc.strerror}") from None
    if info is not None and stat.S_ISLNK(info.st_mode):
        raise InputError(
            f"{target}: is a symbolic link; trustpull does not replace a link with a file: "
            "name the file it points to"
        )
    if info is not None and not stat.S_ISREG(info.st_mode):
        raise InputError(f"{target}: not a regular file")
    directory = os.path.dirname(os.path.abspath(target))
    try:
        fd, temp = tempfile.mkstemp(
            prefix=f".{os.path.basename(target)}.", suffix=".trustpull-tmp", dir=directory
        )
    except OSError as exc:
        raise InputError(f"{target}: cannot create a temporary file: {exc.strerror}") from None
    try:
        if info is not None:
            os.fchmod(fd, stat.S_IMODE(info.st_mode))
            if hasattr(os, "fchown"):
                with contextlib.suppress(PermissionError):  # not root: the group may still do
                    try:
                        os.fchown(fd, info.st_uid, info.st_gid)
                    except PermissionError:
                        os.fchown(fd, -1, info.st_gid)
        else:
            umask = os.umask(0)
            os.umask(umask)
            os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as handle:
            fd = -1
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, target)
    except BaseException as exc:
        if fd != -1:
            os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(temp)
        if isinstance(exc, OSError):
            raise InputError(f"{target}: cannot write: {exc.strerror}") from None
        raise
    _fsync_dir(directory)
