# Tests of the Content-Encoding decoder: codings named, gzip/deflate decoded in bounded pieces.
from __future__ import annotations

import gzip
import itertools
import zlib

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

import holysheep_trio as hs
from holysheep_trio._content_encoding import ContentDecoder, decoder_for

# A realistic body: what a compressing proxy in front of an OpenAI-compatible server sends.
SSE_BODY = (
    b"".join(
        b'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1753357673,'
        b'"model":"gpt-4.1","choices":[{"index":0,"delta":{"content":"token %d "},'
        b'"finish_reason":null}]}\n\n' % n
        for n in range(200)
    )
    + b"data: [DONE]\n\n"
)


def _deflate(data: bytes, *, raw: bool) -> bytes:
    compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS if raw else zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


def _decode_all(decoder: ContentDecoder, pieces: list[bytes]) -> bytes:
    out = [piece for data in pieces for piece in decoder.decode(data)]
    out += list(decoder.finish())
    return b"".join(out)


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(cut, len(data)) for cut in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


@pytest.mark.parametrize("value", [None, "", "identity", "IDENTITY", "none", " identity , "])
def test_no_decoder_for_an_unencoded_body(value: str | None) -> None:
    assert decoder_for(value) is None


@pytest.mark.parametrize(
    ("value", "coding"),
    [
        ("gzip", "gzip"),
        ("x-gzip", "gzip"),
        ("GZip", "gzip"),
        ("deflate", "deflate"),
        ("identity, gzip", "gzip"),
    ],
)
def test_decoder_for_gzip_and_deflate(value: str, coding: str) -> None:
    decoder = decoder_for(value)
    assert decoder is not None
    assert decoder.coding == coding


@pytest.mark.parametrize(
    "value", ["br", "zstd", "compress", "gzip, br", "gzip, gzip", "deflate, gzip"]
)
def test_other_codings_are_a_clear_protocol_error(value: str) -> None:
    with pytest.raises(hs.StreamProtocolError) as info:
        decoder_for(value)
    error = info.value
    assert repr(value) in error.message
    assert error.kind == "parse"
    assert not hs.RetryPolicy().is_retryable(error)  # a retry gets the same encoding


@given(cuts=st.lists(st.integers(0, 20_000), max_size=12), max_piece=st.integers(1, 5000))
@example(cuts=[1], max_piece=1)
@example(cuts=[], max_piece=65536)
def test_any_chunking_and_piece_size_decode_gzip(cuts: list[int], max_piece: int) -> None:
    decoder = decoder_for("gzip", max_piece=max_piece)
    assert decoder is not None
    assert _decode_all(decoder, _split(gzip.compress(SSE_BODY), cuts)) == SSE_BODY
    assert decoder.eof


@given(
    raw=st.booleans(),
    cuts=st.lists(st.integers(0, 20_000), max_size=12),
    max_piece=st.integers(1, 5000),
)
@example(raw=False, cuts=[1], max_piece=10)  # the zlib header split across reads
@example(raw=True, cuts=[1, 2], max_piece=10)
def test_any_chunking_decodes_both_kinds_of_deflate(
    raw: bool, cuts: list[int], max_piece: int
) -> None:
    decoder = decoder_for("deflate", max_piece=max_piece)
    assert decoder is not None
    assert _decode_all(decoder, _split(_deflate(SSE_BODY, raw=raw), cuts)) == SSE_BODY


@given(cuts=st.lists(st.integers(0, 20_000), max_size=8), max_piece=st.integers(1, 300))
def test_output_is_never_held_back(cuts: list[int], max_piece: int) -> None:
    # After each read, everything zlib can decode from the bytes so far has been yielded: an
    # event that arrived is delivered now, not when the next read comes (maybe much later).
    compressed = gzip.compress(SSE_BODY)
    reference = zlib.decompressobj(zlib.MAX_WBITS | 16)
    decoder = ContentDecoder("gzip", max_piece=max_piece)
    expected = b""
    got = b""
    for data in _split(compressed, cuts):
        expected += reference.decompress(data)
        got += b"".join(decoder.decode(data))
        assert got == expected


def test_a_decompression_bomb_is_inflated_piece_by_piece() -> None:
    bomb = gzip.compress(b"\0" * (64 * 1024 * 1024))  # 64 MiB of zeros in ~64 KiB
    assert len(bomb) < 100_000
    decoder = ContentDecoder("gzip", max_piece=16 * 1024)
    pieces = decoder.decode(bomb)
    first = list(itertools.islice(pieces, 3))  # only what was asked for is inflated
    assert [len(piece) for piece in first] == [16 * 1024] * 3
    total = sum(len(piece) for piece in first)
    for piece in pieces:
        assert len(piece) <= 16 * 1024
        total += len(piece)
    assert total == 64 * 1024 * 1024


def test_concatenated_gzip_members_and_zero_padding() -> None:
    body = gzip.compress(b"data: one\n\n") + gzip.compress(b"data: two\n\n") + b"\0\0\0"
    decoder = ContentDecoder("gzip", max_piece=4)
    assert _decode_all(decoder, [body[:15], body[15:]]) == b"data: one\n\ndata: two\n\n"


@pytest.mark.parametrize(
    ("coding", "body"),
    [
        ("gzip", b"\x1f\x8b\x08\x00garbage-not-deflate-at-all"),
        ("gzip", b"this is not gzip at all"),
        ("deflate", b"\x78\x9c" + b"\xff" * 20),
        ("gzip", gzip.compress(b"data: x\n\n") + b"more bytes that are no gzip member"),
    ],
)
def test_corrupt_data_is_a_protocol_error(coding: str, body: bytes) -> None:
    decoder = decoder_for(coding)
    assert decoder is not None
    with pytest.raises(hs.StreamProtocolError, match=f"corrupt {coding} body") as info:
        _decode_all(decoder, [body])
    assert info.value.data


def test_data_after_the_end_of_a_deflate_body() -> None:
    decoder = ContentDecoder("deflate")
    with pytest.raises(hs.StreamProtocolError, match="after the end"):
        _decode_all(decoder, [_deflate(b"data: x\n\n", raw=False) + b"extra"])


@pytest.mark.parametrize(
    ("coding", "body"),
    [
        ("gzip", gzip.compress(SSE_BODY)[:-20]),
        ("deflate", _deflate(SSE_BODY, raw=True)[:50]),
        ("deflate", b"\x78"),
    ],
)
def test_a_truncated_body_fails_at_finish(coding: str, body: bytes) -> None:
    decoder = decoder_for(coding)
    assert decoder is not None
    decoded = b"".join(decoder.decode(body))
    assert SSE_BODY.startswith(decoded)
    with pytest.raises(hs.StreamProtocolError, match="ended"):
        list(decoder.finish())


def test_an_empty_body_is_fine() -> None:
    for coding in ("gzip", "deflate"):
        decoder = decoder_for(coding)
        assert decoder is not None
        assert _decode_all(decoder, [b""]) == b""


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="coding"):
        ContentDecoder("br")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_piece"):
        ContentDecoder("gzip", max_piece=0)
