# Incremental, bounded decoding of gzip/deflate response bodies, free of I/O.
"""Content-Encoding decoding for response bodies (sans-I/O).

The client asks for ``Accept-Encoding: identity``, yet some servers and proxies compress the
stream all the same. :func:`decoder_for` reads the ``Content-Encoding`` header value and
returns a :class:`ContentDecoder` for ``gzip`` (also ``x-gzip``) and ``deflate``, None for an
uncompressed body, and raises :class:`~holysheep_trio.StreamProtocolError` for anything else
(``br``, ``zstd``, a chain of codings): that is not a network failure, and retrying cannot fix
it.

Bounded: :meth:`ContentDecoder.decode` yields the output in pieces of at most ``max_piece``
bytes and inflates the next piece only when the caller asks for it, so a decompression bomb
(a few KiB that inflate to GiB) never makes the decoder hold more than one piece, the
caller's input chunk and zlib's 32 KiB window. What the caller does with the pieces (the SSE
parser bounds its events) bounds the rest.

Uses only the standard library's :mod:`zlib` (RFC 1950 zlib, RFC 1951 raw deflate, RFC 1952
gzip).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from typing import Final, Literal

from .errors import StreamProtocolError

__all__ = ["DEFAULT_MAX_PIECE", "ContentDecoder", "decoder_for"]

#: Default largest piece :meth:`ContentDecoder.decode` yields, in bytes.
DEFAULT_MAX_PIECE: Final = 64 * 1024

Coding = Literal["gzip", "deflate"]

# Content codings (RFC 9110 section 8.4.1) that mean "not encoded". "none" is not a registered
# coding, but servers send it for an uncompressed body.
_IDENTITY: Final = frozenset({"identity", "none"})
_CODINGS: Final[dict[str, Coding]] = {"gzip": "gzip", "x-gzip": "gzip", "deflate": "deflate"}
_GZIP_WBITS: Final = zlib.MAX_WBITS | 16
_RAW_WBITS: Final = -zlib.MAX_WBITS


def decoder_for(
    content_encoding: str | None, *, max_piece: int = DEFAULT_MAX_PIECE
) -> ContentDecoder | None:
    """The decoder for a ``Content-Encoding`` header value, or None for an unencoded body.

    Args:
        content_encoding: The header value (None or empty when absent). Codings are
            case-insensitive; ``identity`` (and ``none``) entries are ignored.
        max_piece: The largest piece the decoder yields.

    Returns:
        None for no coding, ``identity`` or ``none``; a :class:`ContentDecoder` for ``gzip``,
        ``x-gzip`` or ``deflate``.

    Raises:
        StreamProtocolError: any other coding, or more than one coding (a chain such as
            ``gzip, br``); the message names the header value.
    """
    if not content_encoding:
        return None
    codings = [part.strip().lower() for part in content_encoding.split(",")]
    codings = [coding for coding in codings if coding and coding not in _IDENTITY]
    if not codings:
        return None
    if len(codings) == 1 and codings[0] in _CODINGS:
        return ContentDecoder(_CODINGS[codings[0]], max_piece=max_piece)
    raise StreamProtocolError(
        f"the response has Content-Encoding {content_encoding!r}, which holysheep-trio does not "
        "decode (it asked for identity; gzip and deflate alone are decoded)"
    )


class ContentDecoder:
    """Inflates a ``gzip`` or ``deflate`` body incrementally, in bounded pieces.

    Feed each piece of the body to :meth:`decode` and consume what it yields before feeding
    the next; call :meth:`finish` at the end of the body.

    - ``gzip``: RFC 1952, including bodies of several concatenated members.
    - ``deflate``: RFC 9110 says zlib-wrapped (RFC 1950), but servers also send raw RFC 1951
      data, and browsers and httpx accept both; the first two bytes tell which (a zlib header
      is a multiple of 31 with compression method 8).

    Raises :class:`~holysheep_trio.StreamProtocolError` for corrupt data, data after the end
    of a deflate stream and (from :meth:`finish`) a body that ends inside the compressed data.
    """

    def __init__(self, coding: Coding, *, max_piece: int = DEFAULT_MAX_PIECE) -> None:
        if coding not in ("gzip", "deflate"):
            raise ValueError(f"unsupported coding {coding!r}")
        if max_piece < 1:
            raise ValueError("max_piece must be at least 1")
        self.coding: Coding = coding
        self.max_piece = max_piece
        self._inflater: zlib._Decompress | None = (
            zlib.decompressobj(_GZIP_WBITS) if coding == "gzip" else None
        )
        self._head = b""  # deflate: the first byte, until the second tells the format
        self._started = False  # the current stream (gzip member) has consumed input

    @property
    def eof(self) -> bool:
        """Whether the compressed data ended (the last gzip member or the deflate stream)."""
        return self._inflater is not None and self._inflater.eof

    def decode(self, data: bytes) -> Iterator[bytes]:
        """Yield the decoded bytes of ``data``, in pieces of at most :attr:`max_piece` bytes.

        Consume the iterator fully before calling :meth:`decode` again: each piece is inflated
        only when asked for.

        Raises:
            StreamProtocolError: the data is corrupt.
        """
        if self._inflater is None:  # deflate, format not known yet
            data = self._head + data
            if len(data) < 2:
                self._head = data
                return
            self._head = b""
            self._inflater = zlib.decompressobj(
                zlib.MAX_WBITS if _is_zlib_header(data) else _RAW_WBITS
            )
        # A full piece may leave output pending inside zlib even with no input left (a long
        # back-reference), so ask again until a piece comes back short: output is never held
        # back until the next read, which could be a long time away on a stream.
        full = False
        while data or full:
            inflater = self._inflater
            if inflater.eof:
                if not data:
                    return
                data = self._next_member(data)
                full = False
                continue
            try:
                piece = inflater.decompress(data, self.max_piece)
            except zlib.error as exc:
                raise self._corrupt(exc, data) from None
            self._started = True
            full = len(piece) == self.max_piece
            data = inflater.unused_data if inflater.eof else inflater.unconsumed_tail
            if piece:
                yield piece

    def finish(self) -> Iterator[bytes]:
        """Yield what is left at the end of the body.

        Raises:
            StreamProtocolError: the body ended inside the compressed data (truncated).
        """
        inflater = self._inflater
        if inflater is None:
            if self._head:
                raise StreamProtocolError("the deflate body ended after one byte", data=self._head)
            return
        if inflater.eof or not self._started:
            return
        while True:
            try:
                piece = inflater.flush(self.max_piece)
            except zlib.error as exc:  # pragma: no cover - flush does not raise in CPython
                raise self._corrupt(exc, b"") from None
            if not piece:
                break
            yield piece
        if not inflater.eof:
            raise StreamProtocolError(f"the {self.coding} body ended before its compressed data")

    def _next_member(self, data: bytes) -> bytes:
        """Start the next gzip member of ``data`` (RFC 1952 section 2.2); return what is left."""
        if self.coding != "gzip":
            raise StreamProtocolError("data after the end of the deflate body", data=data)
        if not data.strip(b"\x00"):
            return b""  # zero padding after the last member, as gzip(1) tolerates
        self._inflater = zlib.decompressobj(_GZIP_WBITS)
        self._started = False
        return data

    def _corrupt(self, exc: zlib.error, data: bytes) -> StreamProtocolError:
        return StreamProtocolError(f"corrupt {self.coding} body: {exc}", data=data)


def _is_zlib_header(head: bytes) -> bool:
    """Whether two bytes start an RFC 1950 stream: CM 8, CINFO <= 7, FCHECK (section 2.2)."""
    cmf, flg = head[0], head[1]
    return cmf & 0x0F == 8 and cmf >> 4 <= 7 and (cmf << 8 | flg) % 31 == 0
