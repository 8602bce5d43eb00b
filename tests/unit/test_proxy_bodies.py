"""The proxy's body reader (`trust.proxy.framing.BodyReader`): strict framing, any split.

The reader is fed from a stand-in socket that hands out the bytes in the pieces a test chooses,
so every boundary (inside a size line, a chunk, its CRLF, a trailer) is exercised; a malformed
body must fail before any byte after the malformation is handed out.
"""

from __future__ import annotations

import random
import socket
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trust.proxy.framing import BodyError, BodyReader


class _Pieces:
    """`recv_into` over fixed pieces (a piece larger than the room is split), then EOF."""

    def __init__(self, pieces: list[bytes]) -> None:
        self.pieces = [p for p in pieces if p]

    def recv_into(self, view: memoryview, size: int = 0, flags: int = 0) -> int:
        room = min(size or len(view), len(view))
        done = 0
        while self.pieces and done < room:
            piece = self.pieces[0]
            n = min(room - done, len(piece))
            view[done : done + n] = piece[:n]
            if n == len(piece):
                self.pieces.pop(0)
            else:
                self.pieces[0] = piece[n:]
            done += n
            if not flags & socket.MSG_WAITALL:
                break  # one piece per receive, as a stream socket may hand them out
        return done


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    out, last = [], 0
    for point in points:
        out.append(data[last:point])
        last = point
    out.append(data[last:])
    return out


def _read(
    wire: bytes, cuts: list[int], initial: int = 0, **framing: Any
) -> tuple[bytes, bytes, BodyReader]:
    sock: Any = _Pieces(_split(wire[initial:], cuts))
    reader = BodyReader(sock, wire[:initial], **framing)
    body = b"".join(bytes(piece) for batch in reader.batches() for piece in batch)
    return body, reader.rest(), reader


def _chunked(chunks: list[bytes], trailer: bytes = b"") -> bytes:
    return (
        b"".join(b"%x\r\n" % len(c) + c + b"\r\n" for c in chunks if c)
        + b"0\r\n"
        + trailer
        + b"\r\n"
    )


NEXT = b"GET /_ping HTTP/1.1\r\nHost: x\r\n\r\n"


@given(
    chunks=st.lists(st.binary(min_size=1, max_size=300), max_size=12),
    cuts=st.lists(st.integers(min_value=0), max_size=20),
    initial=st.integers(min_value=0, max_value=50),
)
def test_chunked_body_is_decoded_at_any_split_and_the_rest_is_kept(
    chunks: list[bytes], cuts: list[int], initial: int
) -> None:
    wire = _chunked(chunks, b"X-T: 1\r\n") + NEXT
    body, rest, reader = _read(wire, cuts, min(initial, len(wire)), length=None, chunked=True)
    assert body == b"".join(chunks)
    assert reader.done
    # everything after the body is either still unread in the socket or in rest()
    assert NEXT.startswith(rest)


@given(
    data=st.binary(max_size=2000),
    cuts=st.lists(st.integers(min_value=0), max_size=20),
    initial=st.integers(min_value=0, max_value=50),
)
def test_content_length_body_is_exact(data: bytes, cuts: list[int], initial: int) -> None:
    wire = data + NEXT
    body, rest, _ = _read(wire, cuts, min(initial, len(wire)), length=len(data))
    assert body == data
    assert NEXT.startswith(rest)  # never read past the body from the socket
    if initial <= len(data):
        assert rest == b""


def test_a_big_body_goes_through_a_bounded_buffer() -> None:
    rng = random.Random(7)
    chunks = [rng.randbytes(rng.randint(1, 200_000)) for _ in range(60)]
    wire = _chunked(chunks)
    sock: Any = _Pieces(_split(wire, [rng.randint(0, len(wire)) for _ in range(300)]))
    reader = BodyReader(sock, b"", length=None, chunked=True)
    seen = bytearray()
    biggest = 0
    for batch in reader.batches():
        for piece in batch:
            seen += piece
            biggest = max(biggest, piece.nbytes)
    assert bytes(seen) == b"".join(chunks)
    assert biggest <= 1024 * 1024


def test_to_eof_without_framing() -> None:
    body, rest, reader = _read(b"all of it", [3, 5], length=None)
    assert (body, rest, reader.done) == (b"all of it", b"", True)


@pytest.mark.parametrize(
    "wire",
    [
        b"5 \r\nhello\r\n0\r\n\r\n",  # whitespace after the size
        b" 5\r\nhello\r\n0\r\n\r\n",
        b"0x5\r\nhello\r\n0\r\n\r\n",
        b"+5\r\nhello\r\n0\r\n\r\n",
        b"-5\r\nhello\r\n0\r\n\r\n",
        b"\r\nhello\r\n0\r\n\r\n",  # no size
        b"00000000000000005\r\nhello\r\n0\r\n\r\n",  # 17 digits (Go stops at 16)
        b"5\nhello\r\n0\r\n\r\n",  # bare LF
        b"5\rx\r\nhello\r\n0\r\n\r\n",  # bare CR
        b"5;a\x00b\r\nhello\r\n0\r\n\r\n",  # control byte in an extension
        b"5\r\nhelloXX0\r\n\r\n",  # chunk longer than its size
        b"5\r\nhello\n0\r\n\r\n",
        b"5\r\nhel",  # ends inside a chunk
        b"5\r\nhello\r\n",  # no last chunk
        b"5\r\nhello\r\n0\r\n",  # no end of trailers
        b"5\r\nhello\r\n0\r\n X: folded\r\n\r\n",  # obs-fold in a trailer
        b"5\r\nhello\r\n0\r\nX : y\r\n\r\n",
        b"5\r\nhello\r\n0\r\nX: a\x01\r\n\r\n",
        b"5\r\nhello\r\n0\r\nX: y\n\r\n",
        b"1" * 5000 + b"\r\n",  # endless size line
    ],
)
def test_malformed_chunked_bodies_fail(wire: bytes) -> None:
    for cuts in ([], [1], [len(wire) // 2], list(range(len(wire)))[:64]):
        with pytest.raises(BodyError):
            _read(wire, cuts, length=None, chunked=True)


def test_nothing_after_a_malformation_is_handed_out() -> None:
    wire = b"5\r\nhello\r\n5 \r\nEVIL!\r\n0\r\n\r\n"
    sock: Any = _Pieces([wire])
    reader = BodyReader(sock, b"", length=None, chunked=True)
    seen = b""
    with pytest.raises(BodyError):
        for batch in reader.batches():
            seen += b"".join(bytes(p) for p in batch)
    assert seen in (b"", b"hello")  # what came before the bad size line, at most


def test_content_length_short_body_fails() -> None:
    with pytest.raises(BodyError, match="before its Content-Length"):
        _read(b"abc", [1], length=10)


def test_trailers_are_bounded() -> None:
    wire = b"0\r\n" + b"X-A: " + b"a" * 2000 + b"\r\n" + b"X-B: b\r\n" * 100 + b"\r\n"
    with pytest.raises(BodyError):
        _read(wire, [], length=None, chunked=True, max_trailer=1024)
    body, _, reader = _read(wire, [], length=None, chunked=True, max_trailer=64 * 1024)
    assert body == b"" and reader.done
