"""PMS5003 frame decoder: valid frames, bad checksums, garbage, truncation, any chunking."""

from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from edge.pms5003 import FRAME_SIZE, PMS5003_CHANNELS, Pms5003Decoder, Pms5003Frame
from edge.readings import BadInputCounter


def frame(k: int = 0) -> Pms5003Frame:
    return Pms5003Frame(*(10 * k + j for j in range(12)))


def accounted(decoder: Pms5003Decoder) -> bool:
    s = decoder.stats
    return s["bytes_in"] == (FRAME_SIZE * s["frames"] + s["garbage_bytes"]
                             + s["bad_frame_bytes"] + decoder.pending)


def test_encode_layout_matches_the_datasheet() -> None:
    raw = Pms5003Frame(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12).encode()
    assert len(raw) == 32 and raw[:4] == b"\x42\x4d\x00\x1c"
    words = struct.unpack(">16H", raw)
    assert words[2:14] == tuple(range(1, 13)) and words[14] == 0
    assert words[15] == sum(raw[:30])


def test_valid_frames_and_channel_names() -> None:
    decoder = Pms5003Decoder()
    frames = decoder.feed(frame(1).encode() + frame(2).encode())
    assert frames == [frame(1), frame(2)]
    values = frames[0].values()
    assert tuple(values) == PMS5003_CHANNELS
    assert values["pm2_5"] == frames[0].pm25_atm and values["pm2_5_cf1"] == frames[0].pm25_cf1
    assert values["n10"] == frames[0].n10
    reading = frames[0].to_reading("pms", 5.0)
    assert reading.values["pm10"] == float(frames[0].pm10_atm) and reading.ts == 5.0
    assert decoder.stats["frames"] == 2 and accounted(decoder)


def test_bad_checksum_is_dropped_and_counted() -> None:
    counter = BadInputCounter()
    decoder = Pms5003Decoder(counter, device="uart0")
    bad = bytearray(frame(1).encode())
    bad[10] ^= 0xFF
    assert decoder.feed(bytes(bad) + frame(2).encode()) == [frame(2)]
    assert decoder.stats["bad_frame_checksum"] == 1
    assert counter.totals("uart0") == {"bad_frame_checksum": 1}
    assert accounted(decoder)


def test_garbage_between_frames_resynchronises() -> None:
    counter = BadInputCounter()
    decoder = Pms5003Decoder(counter)
    noise = b"\x00\xff\x42\x13garbage\x4d"
    frames = decoder.feed(noise + frame(1).encode() + noise + frame(2).encode() + b"\x42")
    assert frames == [frame(1), frame(2)]
    assert decoder.stats["garbage_bytes"] == 2 * len(noise)
    assert decoder.pending == 1  # a trailing 0x42 may start the next header
    assert counter.totals()["garbage_bytes"] == 2 * len(noise)
    assert accounted(decoder)


def test_bad_length_word() -> None:
    decoder = Pms5003Decoder()
    bogus = b"\x42\x4d\x00\x14" + b"\x00" * 20
    assert decoder.feed(bogus + frame(3).encode()) == [frame(3)]
    assert decoder.stats["bad_frame_length"] == 1 and accounted(decoder)


def test_truncated_frame_followed_by_a_good_one() -> None:
    counter = BadInputCounter()
    decoder = Pms5003Decoder(counter)
    cut = frame(1).encode()[:20]
    assert decoder.feed(cut + frame(2).encode()) == [frame(2)]
    assert decoder.stats["truncated_frame"] == 1
    assert counter.totals() == {"truncated_frame": 1}
    assert accounted(decoder)


def test_flush_counts_an_incomplete_frame() -> None:
    decoder = Pms5003Decoder()
    assert decoder.feed(frame(1).encode()[:25]) == []
    assert decoder.pending == 25
    decoder.flush()
    assert decoder.stats["truncated_frame"] == 1 and decoder.pending == 0 and accounted(decoder)


def test_one_byte_at_a_time() -> None:
    decoder = Pms5003Decoder()
    stream = b"\x13\x37" + b"".join(frame(k).encode() for k in range(5)) + b"\x00"
    out = []
    for byte in stream:
        out.extend(decoder.feed(bytes([byte])))
    assert out == [frame(k) for k in range(5)]
    assert decoder.stats["garbage_bytes"] == 3 and accounted(decoder)


def corrupt(k: int, i: int) -> bytes:
    raw = bytearray(frame(k).encode())
    raw[i] ^= 0x01
    return bytes(raw)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(
    st.integers(0, 5).map(lambda k: frame(k).encode()),
    st.binary(max_size=40),
    st.integers(0, 5).map(lambda k: frame(k).encode()[: k * 5 + 3]),
    st.builds(corrupt, st.integers(0, 5), st.integers(4, 31)),
), max_size=12), st.lists(st.integers(1, 40), min_size=1, max_size=8))
def test_any_stream_any_chunking(pieces: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(pieces)
    whole = Pms5003Decoder()
    expected = whole.feed(stream)
    chunked = Pms5003Decoder()
    got: list[Pms5003Frame] = []
    pos, i = 0, 0
    while pos < len(stream):
        size = cuts[i % len(cuts)]
        got.extend(chunked.feed(stream[pos : pos + size]))
        pos, i = pos + size, i + 1
        assert accounted(chunked)
    assert got == expected  # chunking never changes the result
    assert whole.stats == chunked.stats
    # every intact frame in the stream that is not preceded by a partial header is found
    assert len(expected) <= stream.count(b"\x42\x4d")
    for f in expected:
        assert f.encode() in stream
    whole.flush()
    assert whole.pending == 0 and accounted(whole)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.binary(max_size=40).map(lambda b: b.replace(b"\x42", b"")),
                          st.integers(0, 9)), max_size=10), st.integers(1, 33))
def test_every_frame_between_garbage_is_found(parts: list[tuple[bytes, int]], size: int) -> None:
    stream = b"".join(noise + frame(k).encode() for noise, k in parts)
    decoder = Pms5003Decoder()
    got = [f for pos in range(0, len(stream), size) for f in decoder.feed(stream[pos:pos + size])]
    assert got == [frame(k) for _, k in parts]
    assert decoder.stats["garbage_bytes"] == sum(len(noise) for noise, _ in parts)
    assert decoder.pending == 0 and accounted(decoder)


def test_frame_cut_to_31_bytes_keeps_the_next_frame() -> None:
    from edge.pms5003 import Pms5003Decoder, Pms5003Frame

    good = Pms5003Frame(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12).encode()
    decoder = Pms5003Decoder()
    frames = decoder.feed(good[:31] + good + good)
    assert len(frames) == 2
    assert decoder.stats["truncated_frame"] == 1


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(
    st.integers(0, 5).map(lambda k: frame(k).encode()),
    st.binary(max_size=40),
    st.integers(0, 31).map(lambda n: frame(1).encode()[:n]),
    st.builds(corrupt, st.integers(0, 5), st.integers(2, 31)),
    st.just(b"\x42\x4d\x00\x1d"),  # a header with a bad length word
), max_size=12), st.integers(1, 40))
def test_counter_matches_the_decoder_stats(pieces: list[bytes], size: int) -> None:
    """What reaches the agent's bad-input counter (and so its metrics) is what was found."""
    import logging

    counter = BadInputCounter(logger=logging.getLogger("test.quiet"))
    decoder = Pms5003Decoder(counter, device="pms")
    stream = b"".join(pieces)
    frames = [f for pos in range(0, len(stream), size)
              for f in decoder.feed(stream[pos:pos + size])]
    decoder.flush()
    stats = decoder.stats
    assert len(frames) == stats["frames"] and decoder.pending == 0 and accounted(decoder)
    kinds = ("garbage_bytes", "bad_frame_checksum", "bad_frame_length", "truncated_frame")
    assert counter.totals("pms") == {k: stats[k] for k in sorted(kinds) if stats[k]}
    assert counter.total() == sum(stats[k] for k in kinds)
