"""A classic build's context, streamed to the engine as it arrives (engine-proxy.md §2.4).

The context is read as a tar archive member by member and written out again by the proxy, so
the engine parses the proxy's serialisation of what the proxy read, never the client's bytes
(no parser differential on member boundaries, PAX or GNU headers, or what follows the end of
the archive). The Dockerfile is held back: the builds route verifies and pins its bases while
the engine waits for the rest of the body, and only then are the pinned Dockerfile and the end
of the archive sent. The classic builder extracts the whole context before it reads the
Dockerfile, so a build refused half way (the engine's request cut off) builds nothing.

Each member is named by the path the engine's untar writes it to, and a context is refused
(400 [Context]) where the engine could extract another file than the one the proxy read: a
member escaping the root, a sparse member, a member below a path that a member makes a link or
a file (the engine's untar writes through a symlinked parent), a Dockerfile that is not one
regular file. The docker CLI never sends any of these: it archives a directory walk and does
not descend into symlinks.
"""

from __future__ import annotations

import copy
import hashlib
import io
import os
import posixpath
import tarfile
from collections.abc import Iterator
from typing import IO

from trust.proxy.decide import Refused
from trust.proxy.framing import HTTPRefusal

__all__ = ["ContextStream", "norm_path"]

_READ = 1024 * 1024  # one read of a member's data
_BATCH = 256 * 1024  # headers and small members are sent in batches of about this much
#: The most members a context may have (the docker CLI sends one per file and directory):
#: the proxy remembers each path's digest for the checks, so this bounds its memory.
_MAX_MEMBERS = 1_000_000
#: Go's reader refuses a pax or GNU long-name header with more data than this
#: (archive/tar `maxSpecialFileSize`); Python would read any size into memory.
_MAX_SPECIAL = 1024 * 1024
_SPECIAL_TYPES = frozenset(
    (
        tarfile.XHDTYPE,
        tarfile.XGLTYPE,
        tarfile.SOLARIS_XHDTYPE,
        tarfile.GNUTYPE_LONGNAME,
        tarfile.GNUTYPE_LONGLINK,
    )
)
_END = b"\0" * (2 * tarfile.BLOCKSIZE)
#: The engine looks for compression in the plain context the proxy forwards
#: (moby/moby@5d6db842238e: builder/remotecontext/archive.go `FromArchive` and pkg/archive
#: `DecompressStream`, by magic bytes; it decompresses twice, the untar sniffing again): of
#: the magics, only bzip2's is ASCII, so only it can begin a tar Python writes (a non-ASCII
#: first name makes Python write a pax header named ././@PaxHeader first).
_BZIP2_MAGIC = b"BZh"
_TYPES = frozenset(
    (
        tarfile.REGTYPE,
        tarfile.AREGTYPE,
        tarfile.CONTTYPE,
        tarfile.DIRTYPE,
        tarfile.SYMTYPE,
        tarfile.LNKTYPE,
        tarfile.CHRTYPE,
        tarfile.BLKTYPE,
        tarfile.FIFOTYPE,
    )
)


def norm_path(name: str) -> str | None:
    """The path, relative to the context root, that the engine extracts a member named `name`
    to (its untar cleans the name and joins it under the root: `./a`, `/a`, `b/../a` are all
    `a`, while `.a` and `..a` are other files); '' for the root itself, None when it escapes."""
    cleaned = posixpath.normpath(name) if name else "."
    if cleaned == ".." or cleaned.startswith("../"):
        return None
    cleaned = cleaned.lstrip("/")
    return "" if cleaned == "." else cleaned


def _context_error(message: str) -> Refused:
    return Refused(400, f"trustpull: {message} [Context]", kind="Context")


class _BoundedTarInfo(tarfile.TarInfo):
    """A member header whose pax or long-name data Python reads only up to Go's limit, and
    an old-GNU sparse member refused before Python reads its extension blocks."""

    def _proc_member(self, archive: tarfile.TarFile) -> tarfile.TarInfo:
        if self.type in _SPECIAL_TYPES and self.size > _MAX_SPECIAL:
            raise _context_error(
                f"build context has a {self.type!r} header of {self.size} bytes "
                f"(the engine reads at most {_MAX_SPECIAL})"
            )
        if self.type == tarfile.GNUTYPE_SPARSE:
            raise _context_error(f"build context member {self.name!r} is sparse")
        member: tarfile.TarInfo = super()._proc_member(archive)  # type: ignore[misc]
        return member


class _PathSet:
    """A set of paths held as keyed 64-bit digests (about 70 bytes a path, whatever its
    length): a collision can only make the proxy refuse a context, never pass one."""

    def __init__(self) -> None:
        self._key = os.urandom(16)
        self._digests: set[int] = set()

    def _digest(self, path: str) -> int:
        data = path.encode("utf-8", "surrogateescape")
        return int.from_bytes(hashlib.blake2b(data, digest_size=8, key=self._key).digest())

    def add(self, path: str) -> None:
        self._digests.add(self._digest(path))

    def update(self, paths: list[str]) -> None:
        self._digests.update(self._digest(path) for path in paths)

    def __contains__(self, path: str) -> bool:
        return self._digest(path) in self._digests


class _BodyFile(io.RawIOBase):
    """The request body's pieces as a file for tarfile's stream mode, bounded by `limit`."""

    def __init__(self, pieces: Iterator[bytes], limit: int) -> None:
        self._pieces = pieces
        self._limit = limit
        self._left = memoryview(b"")
        self.total = 0

    def readable(self) -> bool:
        return True

    def _next(self) -> bool:
        piece = next(self._pieces, None)
        if piece is None:
            return False
        self.total += len(piece)
        if self.total > self._limit:
            raise HTTPRefusal(413, "trustpull: build context over build_spool_max", close=True)
        self._left = memoryview(piece)
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        while not self._left:
            if not self._next():
                return 0
        count = min(len(buffer), len(self._left))
        buffer[:count] = self._left[:count]
        self._left = self._left[count:]
        return count

    def drain(self) -> None:
        """Read the rest of the body (what follows the archive's end is never forwarded)."""
        self._left = memoryview(b"")
        while self._next():
            pass


class ContextStream:
    """One build context: `members()` yields the re-written archive without its Dockerfile;
    then `dockerfile` holds the Dockerfile's bytes and `finish()` yields the rest.

    `dockerfile_name` is the build's `dockerfile` parameter ("Dockerfile" when absent: the
    engine then falls back to `dockerfile` when no `Dockerfile` exists, and so does this).
    """

    def __init__(
        self, pieces: Iterator[bytes], dockerfile_name: str, max_dockerfile: int, max_context: int
    ) -> None:
        wanted = norm_path(dockerfile_name)
        if wanted is None or wanted == "":
            raise _context_error(f"Dockerfile path {dockerfile_name} escapes the context")
        self.name = dockerfile_name
        self._wanted = wanted
        # the engine's fallback name, held back too, but only as a regular file it could read
        self._fallback = "dockerfile" if dockerfile_name == "Dockerfile" else None
        self._max_dockerfile = max_dockerfile
        self._body = _BodyFile(pieces, max_context)
        self._held: dict[str, tuple[tarfile.TarInfo, bytes]] = {}
        self._seen_as_other: set[str] = set()  # a Dockerfile name seen and not held
        self._not_dirs = _PathSet()
        self._parents = _PathSet()  # every proper ancestor of a member's path
        self._count = 0
        self._encoding = "utf-8"
        self._errors = "surrogateescape"
        self._chosen: str | None = None
        self._emitted = False  # whether members() forwarded any member
        self.dockerfile = b""

    # -- reading

    def members(self) -> Iterator[bytes]:
        try:
            tar = tarfile.open(
                fileobj=self._body, mode="r|*", bufsize=_READ, tarinfo=_BoundedTarInfo
            )
        except (tarfile.TarError, EOFError, OSError) as exc:
            self._body.drain()
            raise _context_error(f"build context is not a readable tar archive ({exc})") from None
        except HTTPRefusal:  # the first member's header refused (it is read by open)
            self._body.drain()
            raise
        self._encoding, self._errors = tar.encoding, tar.errors or "surrogateescape"
        batch: list[bytes] = []
        size = 0
        member: tarfile.TarInfo | None = None
        try:
            while True:
                try:
                    member = tar.next()
                except (tarfile.TarError, EOFError, OSError) as exc:
                    if _ends_in_padding(tar, member):
                        break
                    raise _context_error(
                        f"build context is not a readable tar archive ({exc})"
                    ) from None
                if member is None:
                    break
                # stream mode keeps every member read: a context of tiny members would cost
                # the proxy more memory than its size (X56)
                tar.members.clear()  # type: ignore[attr-defined]  # (not in typeshed)
                self._count += 1
                if self._count > _MAX_MEMBERS:
                    raise HTTPRefusal(
                        413, f"trustpull: build context over {_MAX_MEMBERS} members", close=True
                    )
                path = self._check(member)
                if self._hold(tar, member, path):
                    continue
                batch.append(self._header(member))
                size += len(batch[-1])
                if not self._emitted:  # the first member forwarded
                    self._emitted = True
                    _refuse_bzip2_look(batch[0], member.name)
                if member.isreg() and member.size:
                    handle = tar.extractfile(member)
                    assert handle is not None
                    if member.size >= _BATCH:
                        yield b"".join(batch)
                        batch, size = [], 0
                    left = member.size
                    while left:
                        data = _read_member(handle, min(left, _READ))
                        left -= len(data)
                        if len(data) >= _BATCH:
                            if batch:
                                yield b"".join(batch)
                                batch, size = [], 0
                            yield data
                        else:
                            batch.append(data)
                            size += len(data)
                    pad = -member.size % tarfile.BLOCKSIZE
                    batch.append(b"\0" * pad)
                    size += pad
                if size >= _BATCH:
                    yield b"".join(batch)
                    batch, size = [], 0
            self._body.drain()
        except HTTPRefusal:
            self._body.drain()  # so that the client reads the answer, not a reset
            raise
        if batch:
            yield b"".join(batch)
        self._choose()

    def _header(self, member: tarfile.TarInfo) -> bytes:
        """`member`'s header with the name, link and size Python read, not the pax records
        they came from: Python's writer gives a record priority over the field, and Python and
        Go do not read every record alike (Python takes `GNU.sparse.name` for the name of any
        member, Go only of a sparse one), so a re-sent record could make the engine extract
        the member elsewhere. The only records re-sent are extended attributes (the docker
        CLI sends `security.capability`): the numeric and name records are written from what
        Python read (it takes `uid=abc` as 0, Go refuses it part-way), and Go ignores the rest.
        """
        out = copy.copy(member)
        out.pax_headers = {
            key: value
            for key, value in member.pax_headers.items()
            if key.startswith("SCHILY.xattr.") and "\0" not in key
        }
        # the engine's untar owns files by number: a NUL in a name record is refused by Go
        out.uname, out.gname = member.uname.replace("\0", ""), member.gname.replace("\0", "")
        try:
            return out.tobuf(tarfile.PAX_FORMAT, self._encoding, self._errors)
        except ValueError as exc:  # a number Python's writer cannot put in its field
            raise _context_error(
                f"build context member {member.name!r} cannot be written out again ({exc})"
            ) from None

    def _check(self, member: tarfile.TarInfo) -> str:
        if "\0" in member.name or "\0" in member.linkname:
            # Written in the header's name or link field (an ASCII name of up to 100 bytes), a
            # NUL ends the name for Go's reader: `Dockerfile<NUL>x` is `Dockerfile` to the engine.
            raise _context_error(f"build context member {member.name!r} has a NUL in its name")
        path = norm_path(member.name)
        if path is None:
            raise _context_error(f"build context member {member.name!r} escapes the context")
        sparse = any(key.startswith("GNU.sparse.") for key in member.pax_headers)
        if (
            sparse
            or member.issparse()
            or member.type not in _TYPES
            or (member.size and not member.isreg())
        ):
            # Written out with no data, a member whose header claims some would make the
            # engine read the next members' bytes as its data, and what follows as headers.
            raise _context_error(
                f"build context member {member.name!r} is sparse or of a type "
                f"({member.type!r}, {member.size} bytes) the proxy does not forward"
            )
        parts = path.split("/") if path else []
        ancestors = ["/".join(parts[:i]) for i in range(len(parts))]
        for parent in ancestors:
            if parent in self._not_dirs:
                raise _context_error(
                    f"build context member {path!r} is below {parent or '/'!r}, which the "
                    "context makes a link or file"
                )
        if not member.isdir():
            if path in self._parents:
                raise _context_error(
                    f"build context member {path!r} is a link or file where the context "
                    "has a directory"
                )
            self._not_dirs.add(path)
        self._parents.update(ancestors)
        return path

    def _hold(self, tar: tarfile.TarFile, member: tarfile.TarInfo, path: str) -> bool:
        """Keep a Dockerfile candidate out of the stream; False to forward the member."""
        if path != self._wanted and path != self._fallback:
            return False
        if path in self._held or path in self._seen_as_other:
            # the engine would take the last copy: only one may be there to read
            raise _context_error(f"the build context holds {path} twice")
        regular = member.isreg() and member.size <= self._max_dockerfile
        if path == self._wanted and not regular:
            if member.isreg():
                raise HTTPRefusal(413, "trustpull: Dockerfile over max_dockerfile")
            raise _context_error(f"the Dockerfile {self.name} is a link or not a regular file")
        if not regular:  # a `dockerfile` the engine will not fall back to: plain content
            self._seen_as_other.add(path)
            return False
        handle = tar.extractfile(member)
        assert handle is not None
        self._held[path] = (member, _read_member(handle, member.size))
        return True

    def _choose(self) -> None:
        if self._wanted in self._parents:
            raise _context_error(f"the Dockerfile {self.name} is a directory")
        chosen = self._wanted if self._wanted in self._held else None
        if chosen is None and self._fallback is not None and self._wanted not in self._not_dirs:
            chosen = self._fallback if self._fallback in self._held else None
        if chosen is None:
            raise _context_error(f"the Dockerfile {self.name} is not in the build context")
        self._chosen = chosen
        self.dockerfile = self._held[chosen][1]

    # -- the end

    def finish(self, text: bytes) -> Iterator[bytes]:
        """The held members, the Dockerfile with `text` (pinned; or as read, in audit mode)
        and the end of the archive."""
        assert self._chosen is not None, "members() first"
        out: list[bytes] = []
        held = sorted(self._held.items(), key=lambda item: item[0] == self._chosen)
        first_name = ""
        for path, (member, data) in held:  # the Dockerfile last
            if path == self._chosen:
                pinned = tarfile.TarInfo(path)
                pinned.size = len(text)
                pinned.mode, pinned.mtime = member.mode, member.mtime
                pinned.uid, pinned.gid = member.uid, member.gid
                pinned.uname, pinned.gname = member.uname, member.gname
                member, data = pinned, text
            first_name = first_name or member.name
            out.append(self._header(member))
            out.append(data + b"\0" * (-len(data) % tarfile.BLOCKSIZE))
        out.append(_END)
        if not self._emitted:
            _refuse_bzip2_look(out[0], first_name)
        yield b"".join(out)


def _refuse_bzip2_look(first_header: bytes, first_name: str) -> None:
    """The proxy's first header, and the first header the engine's own re-writing makes of it
    before its untar sniffs again (moby/moby@5d6db842238e: builder/remotecontext/archive.go
    `FromArchive` passes the context through pkg/tarsum, which writes it out with Go's tar
    writer): for a long or non-ASCII name that is a pax header named `DIR/PaxHeaders.0/FILE`,
    cleaned (`./a/../BZh/…` begins `BZh`), its non-ASCII characters and NULs dropped (`B\u00e9Zh`
    is `BZh`). Any first name holding `BZh` once those are dropped is refused."""
    go_name = "".join(c for c in first_name if "\x00" < c < "\x80")
    if first_header.startswith(_BZIP2_MAGIC) or _BZIP2_MAGIC.decode() in go_name:
        raise _context_error(
            "a build context whose first member's name holds BZh is refused: the "
            "engine would take the context for a bzip2 stream"
        )


def _ends_in_padding(tar: tarfile.TarFile, last: tarfile.TarInfo | None) -> bool:
    """Whether the archive ended after all of the last member's data, inside the padding
    that rounds it up to a block (Python's stream reader then raises, Go's `tryReadFull` reads
    the end of the archive). The docker CLI sends such a context for `-f` outside the
    context or `-f-`: moby's ReplaceFileTarWrapper, which adds the Dockerfile as its last
    member, closes its pipe before its tar writer, so the padding and end blocks are lost.
    Only the end is taken from this: what the engine gets is the proxy's own archive."""
    if last is None or not last.isreg() or not last.size or tar.fileobj is None:
        return False
    data_end: int = last.offset_data + last.size
    return data_end <= tar.fileobj.tell() < tar.offset <= data_end + tarfile.BLOCKSIZE


def _read_member(handle: IO[bytes], count: int) -> bytes:
    try:
        data = handle.read(count)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise _context_error(f"build context is truncated or unreadable ({exc})") from None
    if len(data) != count:
        raise _context_error("build context is truncated")
    return data
