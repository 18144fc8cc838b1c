"""Fuzz of every decoder a source feeds (issue 20): MQTT payloads (`decode_payload`,
`decode_counted`), stdin lines (`LineSplitter`, `line_device`, then the same decoder) and
PMS5003 bytes. No exception escapes, and every input ends as a reading or as a counted kind
of `BAD_KINDS`; nesting depth and key count are bounded before the JSON parser runs."""

from __future__ import annotations

import json
import logging
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.pms5003 import FRAME_SIZE, Pms5003Decoder, Pms5003Frame
from edge.readings import (
    BAD_KINDS,
    MAX_DEPTH,
    MAX_KEYS,
    BadInputCounter,
    BadReading,
    Reading,
    check_bounds,
    decode_counted,
    decode_payload,
    load_json,
)
from edge.sources.stdin import LineSplitter, line_device

NOW = 1_700_000_000.0
CHANNELS = ["a", "b", "c"]
QUIET = logging.getLogger("test.quiet")
QUIET.propagate = False


def nested(depth: int, kinds: list[bool]) -> str:
    """`depth` levels of arrays and objects (`kinds[i % len]`: object), innermost a value."""
    opens, closes = [], []
    for i in range(depth):
        is_object = kinds[i % len(kinds)]
        opens.append('{"k":' if is_object else "[")
        closes.append("}" if is_object else "]")
    return "".join(opens) + "1" + "".join(reversed(closes))


# text that looks like JSON structure inside strings: the bounds must ignore it
tricky_text = st.text(alphabet=st.sampled_from(list('[]{}:,"\\ab\n\u00e9')), max_size=12)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | tricky_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(tricky_text, inner, max_size=4),
    max_leaves=40,
)
deep_lines = st.builds(
    lambda depth, kinds, device: (
        '{' + ('"device": "pump-1", ' if device else "") + '"a": 1, "values": '
        + nested(depth, kinds) + "}").encode(),
    st.integers(0, 3000), st.lists(st.booleans(), min_size=1, max_size=3), st.booleans())
wide_lines = st.builds(
    lambda n, flat: ("{" + ", ".join(f'"k{i}": {i}' for i in range(n))
                     + (', "a": 1' if flat else "") + "}").encode(),
    st.integers(0, 3000), st.booleans())
payloads = st.one_of(
    st.binary(max_size=300),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.dictionaries(st.sampled_from(["ts", "values", "device", *CHANNELS]) | tricky_text,
                    json_values, max_size=6).map(lambda d: json.dumps(d).encode()),
    deep_lines,
    wide_lines,
    st.sampled_from([b"[" * 100_000, b'{"a":' * 50_000, b"\xff\xfe", b"1" * 5000,
                     b'{"a": 1' + b" " * 70_000 + b"}"]),
)


def depth_of(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max((depth_of(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((depth_of(v) for v in value.values()), default=0)
    return 0


def keys_of(value: Any) -> int:
    if isinstance(value, list):
        return sum(keys_of(v) for v in value)
    if isinstance(value, dict):
        return len(value) + sum(keys_of(v) for v in value.values())
    return 0


@settings(max_examples=400, deadline=None)
@given(json_values, st.integers(0, 6), st.integers(0, 12), st.booleans())
def test_bounds_match_the_parsed_structure(value: Any, max_depth: int, max_keys: int,
                                           ascii_only: bool) -> None:
    """Brackets, colons and quotes inside strings do not count; structure does, exactly."""
    raw = json.dumps(value, ensure_ascii=ascii_only).encode()
    expected = ("too_many_keys" if keys_of(value) > max_keys
                else "too_deep" if depth_of(value) > max_depth else None)
    try:
        check_bounds(raw, max_depth, max_keys)
    except BadReading as error:
        assert error.kind == expected
    else:
        assert expected is None
        assert load_json(raw, max_depth, max_keys) == json.loads(raw)


@settings(max_examples=300, deadline=None)
@given(payloads, st.sampled_from([64, 4096, 1 << 20]))
def test_decode_payload_returns_a_reading_or_raises_a_known_kind(payload: bytes,
                                                                 max_bytes: int) -> None:
    try:
        decoded = decode_payload(payload, "dev", now=NOW, channels=CHANNELS,
                                 max_bytes=max_bytes, max_skew_s=math.inf)
    except BadReading as error:
        assert error.kind in BAD_KINDS
        return
    assert isinstance(decoded.reading, Reading)
    assert set(decoded.issues) <= set(BAD_KINDS)


def counted(payload: bytes, device: str, counter: BadInputCounter) -> Reading | None:
    """What the agent does with an MQTT or stdin payload; checks the accounting."""
    before = counter.total()
    reading = decode_counted(payload, device, counter, now=NOW, channels=CHANNELS,
                             max_bytes=4096, max_skew_s=math.inf)
    if reading is None:
        assert counter.total() > before  # rejected, so counted
    assert set(counter.totals()) <= set(BAD_KINDS)
    return reading


@settings(max_examples=300, deadline=None)
@given(st.lists(payloads, max_size=8))
def test_mqtt_payloads_never_escape_decode_counted(batch: list[bytes]) -> None:
    counter = BadInputCounter(logger=QUIET)
    for payload in batch:
        counted(payload, "dev", counter)


def test_the_issue_line_is_too_deep_and_the_next_one_decodes() -> None:
    deep = ('{"device":"pump-1","values":' + "[" * 1990 + "]" * 1990 + "}").encode()
    counter = BadInputCounter(logger=QUIET)
    assert line_device(deep, "d") == "d"
    assert counted(deep, "pump-1", counter) is None
    assert counted(b'{"a": 1, "b": 2, "c": 3}', "pump-1", counter) is not None
    assert counter.totals() == {"too_deep": 1}


@pytest.mark.parametrize("payload, kind", [
    (b'{"a": 1, "values": ' + b"[" * (MAX_DEPTH + 5) + b"]" * (MAX_DEPTH + 5) + b"}",
     "too_deep"),
    (json.dumps({f"k{i}": 1 for i in range(MAX_KEYS + 1)}).encode(), "too_many_keys"),
])
def test_bounds_hold_whatever_the_size_limit(payload: bytes, kind: str) -> None:
    with pytest.raises(BadReading) as info:
        decode_payload(payload, "d", now=NOW, channels=CHANNELS, max_bytes=1 << 20)
    assert info.value.kind == kind


def test_a_bundle_with_many_channels_still_decodes_flat_readings() -> None:
    channels = [f"c{i}" for i in range(MAX_KEYS + 200)]
    payload = json.dumps({"ts": NOW, **dict.fromkeys(channels, 1.0)}).encode()
    decoded = decode_payload(payload, "d", now=NOW, channels=channels, max_bytes=1 << 20)
    assert len(decoded.reading.values) == len(channels)


stdin_streams = st.lists(st.one_of(
    payloads.map(lambda p: p.replace(b"\n", b" ")),
    st.binary(max_size=80),  # newlines anywhere
    st.just(b"\n"),
), max_size=10)


@settings(max_examples=300, deadline=None)
@given(stdin_streams, st.lists(st.integers(1, 5000), min_size=1, max_size=6),
       st.sampled_from([64, 4096]))
def test_stdin_lines_any_chunking_never_escape(parts: list[bytes], cuts: list[int],
                                               max_bytes: int) -> None:
    """Bytes -> LineSplitter -> line_device -> decode: as the stdin source does it."""
    stream = b"\n".join(parts)
    splitter = LineSplitter(max_bytes)
    lines: list[bytes] = []
    pos, i = 0, 0
    while pos < len(stream):
        size = cuts[i % len(cuts)]
        lines.extend(splitter.feed(stream[pos:pos + size]))
        pos, i = pos + size, i + 1
    lines.extend(splitter.flush())
    if all(len(line) <= max_bytes for line in stream.split(b"\n")):
        assert lines == [line for line in stream.split(b"\n") if line.strip()]
    counter = BadInputCounter(logger=QUIET)
    for line in lines:
        assert len(line) <= max_bytes + 1
        line = line.strip()
        device = line_device(line, "pod")
        assert isinstance(device, str) and device and "/" not in device
        counted(line, device, counter)


def corrupt(k: int, i: int) -> bytes:
    raw = bytearray(Pms5003Frame(*(10 * k + j for j in range(12))).encode())
    raw[i] ^= 0xFF
    return bytes(raw)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(
    st.binary(max_size=100),
    st.integers(0, 9).map(lambda k: Pms5003Frame(*(10 * k + j for j in range(12))).encode()),
    st.builds(corrupt, st.integers(0, 9), st.integers(0, 31)),
    st.sampled_from([b"\x42", b"\x42\x4d", b"\x42\x4d\x00\x1c", b"\x42\x4d\xff\xff"]),
), max_size=20), st.lists(st.integers(1, 100), min_size=1, max_size=6))
def test_pms5003_bytes_never_escape_and_are_accounted(pieces: list[bytes],
                                                      cuts: list[int]) -> None:
    counter = BadInputCounter(logger=QUIET)
    decoder = Pms5003Decoder(counter, device="pms")
    stream = b"".join(pieces)
    readings: list[Reading] = []
    pos, i = 0, 0
    while pos < len(stream):
        size = cuts[i % len(cuts)]
        for frame in decoder.feed(stream[pos:pos + size]):
            readings.append(frame.to_reading("pms", NOW))
        pos, i = pos + size, i + 1
        assert decoder.pending <= FRAME_SIZE  # bounded between reads
    decoder.flush()
    stats = decoder.stats
    # every byte is in a frame (a reading) or counted as bad input
    assert stats["bytes_in"] == len(stream) == (
        FRAME_SIZE * len(readings) + stats["garbage_bytes"] + stats["bad_frame_bytes"])
    assert set(counter.totals()) <= set(BAD_KINDS)
    assert counter.totals().get("garbage_bytes", 0) == stats["garbage_bytes"]
    assert all(math.isfinite(v) for r in readings for v in r.values.values()
               if v is not None)
