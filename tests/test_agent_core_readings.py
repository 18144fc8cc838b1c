"""decode_payload policies and the bad-input counter."""

from __future__ import annotations

import json
import logging
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.readings import (
    BAD_KINDS,
    BadInputCounter,
    BadReading,
    Decoded,
    decode_counted,
    decode_payload,
    input_channels,
    parse_timestamp,
)

NOW = 1_700_000_000.0
CHANNELS = ["a", "b", "c"]


def decode(payload: bytes | str | dict[str, object], **kw: object) -> Decoded:
    raw = payload if isinstance(payload, bytes) else (
        payload.encode() if isinstance(payload, str) else json.dumps(payload).encode())
    return decode_payload(raw, "dev", now=NOW, channels=CHANNELS, **kw)  # type: ignore[arg-type]


def rejected(payload: bytes | str | dict[str, object], **kw: object) -> str:
    with pytest.raises(BadReading) as info:
        decode(payload, **kw)
    assert info.value.kind in BAD_KINDS
    return info.value.kind


def test_nested_and_flat_forms_decode_the_same() -> None:
    nested = decode({"ts": NOW, "values": {"a": 1, "b": 2.5, "c": -3}})
    flat = decode({"ts": NOW, "a": 1, "b": 2.5, "c": -3, "device": "x"})
    assert nested.reading == flat.reading
    assert nested.reading.values == {"a": 1.0, "b": 2.5, "c": -3.0}
    assert nested.issues == [] and flat.issues == []
    assert nested.reading.device == "dev" and nested.reading.ts == NOW


@pytest.mark.parametrize(("ts", "expected"), [
    (NOW, NOW),
    (int(NOW), NOW),
    (NOW * 1000, NOW),  # epoch milliseconds
    (str(NOW), NOW),
    ("2023-11-14T22:13:20Z", NOW),
    ("2023-11-14T22:13:20+00:00", NOW),
    ("2023-11-14T23:13:20+01:00", NOW),
    ("2023-11-14T22:13:20", NOW),  # no offset: UTC
])
def test_timestamp_forms(ts: object, expected: float) -> None:
    assert decode({"ts": ts, "a": 1}).reading.ts == pytest.approx(expected)
    assert parse_timestamp(ts) == pytest.approx(expected)


def test_missing_timestamp_is_now_and_other_keys_work() -> None:
    assert decode({"a": 1}).reading.ts == NOW
    assert decode({"timestamp": NOW - 5, "a": 1}).reading.ts == NOW - 5
    assert decode({"time": NOW - 6, "a": 1}).reading.ts == NOW - 6


@pytest.mark.parametrize(("payload", "kind"), [
    (b"{not json", "invalid_json"),
    (b"\xff\xfe\x00", "invalid_json"),
    (b"[" * 5000 + b"]" * 5000, "too_deep"),  # refused before the parser recurses
    (b'{"a": 1, "v": ' + b"[" * 17 + b"]" * 17 + b"}", "too_deep"),
    (("{" + ",".join(f'"k{i}": 1' for i in range(1025)) + "}").encode(), "too_many_keys"),
    (b"", "invalid_json"),
    (b"[1, 2]", "not_object"),
    (b"42", "not_object"),
    (b'"text"', "not_object"),
    ({"ts": "yesterday", "a": 1}, "bad_timestamp"),
    ({"ts": True, "a": 1}, "bad_timestamp"),
    ({"ts": None, "a": 1}, "bad_timestamp"),
    ({"ts": [1], "a": 1}, "bad_timestamp"),
    (b'{"ts": NaN, "a": 1}', "bad_timestamp"),
    ({"ts": NOW + 2 * 365 * 86400, "a": 1}, "timestamp_far_off"),
    ({"ts": 0, "a": 1}, "timestamp_far_off"),
    ({"ts": 10**400, "a": 1}, "bad_timestamp"),  # an int beyond the float range
    ({"ts": NOW, "values": [1, 2, 3]}, "wrong_type"),
    ({"ts": NOW, "values": {}}, "missing_channels"),
    ({"ts": NOW, "x": 1, "y": 2}, "missing_channels"),
    ({"ts": NOW, "a": None, "b": "NaN"}, "missing_channels"),
])
def test_rejected_payloads(payload: bytes | dict[str, object], kind: str) -> None:
    assert rejected(payload) == kind


def test_too_large_is_checked_before_parsing() -> None:
    big = json.dumps({"ts": NOW, "a": 1, "pad": "x" * 200}).encode()
    assert rejected(big, max_bytes=100) == "too_large"
    assert decode(big, max_bytes=1000).reading.values["a"] == 1.0


def test_far_off_limit_is_configurable() -> None:
    assert rejected({"ts": NOW - 120, "a": 1}, max_skew_s=60) == "timestamp_far_off"


def test_bad_values_become_missing_and_are_counted() -> None:
    out = decode(b'{"a": NaN, "b": -Infinity, "c": 4}')
    assert out.reading.values == {"a": None, "b": None, "c": 4.0}
    assert out.issues == ["non_finite", "non_finite"]
    out = decode({"a": 10**400, "b": 1})
    assert out.reading.values["a"] is None and out.issues[0] == "non_finite"
    out = decode({"a": "12", "b": True, "c": 1, "d": 5})
    assert out.reading.values == {"a": None, "b": None, "c": 1.0}
    assert out.issues == ["wrong_type", "wrong_type", "unknown_channel"]
    out = decode({"a": None, "b": [1], "c": 2, "z": 1, "y": 2})
    assert out.issues == ["null_value", "wrong_type", "unknown_channel"]
    assert "missing_channels" not in out.issues  # present but unusable is not missing
    assert out.issues.count("unknown_channel") == 1  # once per reading, not per key


def test_all_null_row_is_rejected() -> None:
    assert rejected(b'{"ts": 1700000000, "a": NaN, "b": Infinity, "c": null}') == \
        "missing_channels"


def test_missing_channels_are_none_and_counted_once() -> None:
    out = decode({"a": 1.5})
    assert out.reading.values == {"a": 1.5, "b": None, "c": None}
    assert out.issues == ["missing_channels"]
    assert out.missing == ["b", "c"]


def test_received_is_carried() -> None:
    assert decode({"a": 1}, received=12.5).reading.received == 12.5


def test_input_channels_expands_forecast_residual() -> None:
    from tests.agent_fixtures import make_manifest

    manifest = make_manifest({"distance.onnx": "0", "lstm_ae.tflite": "0"},
                             {"lstm": 1.0, "euclidean": 1.0, "mahalanobis": 1.0}, 3, 4)
    assert input_channels(manifest) == ["ch0", "ch1", "ch2"]
    from edge.bundle import ForecastResidual, Preprocess

    pre = manifest.preprocess.model_dump()
    pre["forecast"] = ForecastResidual(name="ch1", measured="load", forecast="load_fc")
    with_residual = manifest.model_copy(update={"preprocess": Preprocess(**pre)})
    assert input_channels(with_residual) == ["ch0", "load", "load_fc", "ch2"]


def test_counter_logs_once_then_rate_limited(caplog: pytest.LogCaptureFixture) -> None:
    clock = [0.0]
    counter = BadInputCounter(log_every_s=10.0, clock=lambda: clock[0])
    with caplog.at_level(logging.WARNING, logger="edge.readings"):
        for _ in range(100):
            counter.add("invalid_json", "boom", device="d1")
        counter.add("too_large", "big", device="d2")
        clock[0] = 11.0
        counter.add("invalid_json", "boom again", device="d1")
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 3
    assert "invalid_json" in messages[0] and "too_large" in messages[1]
    assert "100 more" in messages[2] and "101 in all" in messages[2]
    assert counter.totals() == {"invalid_json": 101, "too_large": 1}
    assert counter.totals("d2") == {"too_large": 1}
    assert counter.total() == 102


def test_decode_counted_records_everything() -> None:
    counter = BadInputCounter()
    assert decode_counted(b"nope", "d", counter, now=NOW, channels=CHANNELS) is None
    reading = decode_counted(b'{"a": NaN, "b": 2, "zz": 1}', "d", counter, now=NOW,
                             channels=CHANNELS)
    assert reading is not None and reading.values["b"] == 2.0
    assert counter.totals("d") == {"invalid_json": 1, "missing_channels": 1, "non_finite": 1,
                                   "unknown_channel": 1}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.integers(10**300, 10**320)
    | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                  max_size=3),
    max_leaves=8,
)
payload_objects = st.dictionaries(
    st.sampled_from(["ts", "values", "a", "b", "c", "d", "device", "time"]) | st.text(max_size=4),
    json_values, max_size=6)


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.binary(max_size=200), payload_objects.map(
    lambda d: json.dumps(d).encode())))
def test_decode_never_escapes_and_counts_add_up(payload: bytes) -> None:
    try:
        out = decode_payload(payload, "dev", now=NOW, channels=CHANNELS, max_skew_s=math.inf)
    except BadReading as error:
        assert error.kind in BAD_KINDS
        return
    values = out.reading.values
    assert set(values) == set(CHANNELS)
    assert all(v is None or math.isfinite(v) for v in values.values())
    assert any(v is not None for v in values.values())
    assert math.isfinite(out.reading.ts)
    assert set(out.issues) <= set(BAD_KINDS)
    assert len(out.issues) == len(out.details)
    per_value = sum(out.issues.count(k) for k in ("null_value", "non_finite", "wrong_type"))
    # every None is either a counted bad value or a missing channel
    assert sum(v is None for v in values.values()) == per_value + len(out.missing)
    assert ("missing_channels" in out.issues) == bool(out.missing)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(BAD_KINDS), max_size=50), st.floats(0, 100))
def test_counter_totals_add_up(kinds: list[str], step: float) -> None:
    clock = [0.0]
    counter = BadInputCounter(log_every_s=5.0, clock=lambda: clock[0],
                              logger=logging.getLogger("test.quiet"))
    for i, kind in enumerate(kinds):
        clock[0] += step
        counter.add(kind, device=f"d{i % 3}")
    assert counter.total() == len(kinds)
    assert counter.totals() == {k: kinds.count(k) for k in sorted(set(kinds))}
    per_device = [counter.totals(f"d{j}") for j in range(3)]
    assert sum(sum(t.values()) for t in per_device) == len(kinds)


# A stream of readings of every kind, good and bad, as a sensor (or an attacker) would send.
STREAM_CHANNELS = ["ch0", "ch1", "ch2"]
timestamps = st.one_of(
    st.floats(NOW - 100, NOW + 100),  # plausible
    st.floats(allow_nan=True, allow_infinity=True),  # anything, incl. far off and NaN
    st.integers(-(10**20), 10**20),
    st.sampled_from(["2023-11-14T22:13:20Z", "yesterday", "", str(NOW), "1e400"]),
    st.booleans() | st.none() | st.lists(st.integers(), max_size=2),
)
channel_values = st.one_of(st.floats(-1e6, 1e6), st.floats(), st.none(), st.booleans(),
                           st.sampled_from([math.nan, math.inf, -math.inf]),
                           st.text(max_size=4), st.integers(-(10**400), 10**400))
stream_payloads = st.one_of(
    st.fixed_dictionaries({"ts": timestamps}, optional={
        c: channel_values for c in [*STREAM_CHANNELS, "zz", "device"]}).map(
        lambda d: json.dumps(d).encode()),
    st.fixed_dictionaries({"ts": timestamps, "values": st.one_of(
        st.dictionaries(st.sampled_from([*STREAM_CHANNELS, "q"]), channel_values, max_size=4),
        json_values)}).map(lambda d: json.dumps(d).encode()),
    st.binary(max_size=64),
    st.sampled_from([b"[1]", b"42", b'"x"', b"null", b"{", b"\xff"]),
    st.integers(0, 300).map(lambda n: b'{"ch0": 1, "pad": "' + b"x" * n + b'"}'),  # size
)


@settings(max_examples=200, deadline=None)
@given(st.lists(stream_payloads, max_size=30))
def test_a_stream_through_decode_counter_and_window_adds_up(payloads: list[bytes]) -> None:
    """No exception escapes decode_counted or the window; every payload ends in exactly one
    place (rejected by kind, dropped by the window, or accepted) and the counter agrees."""
    from edge.window import ACCEPTED, DROPPED, DeviceWindow
    from tests.agent_fixtures import make_manifest

    manifest = make_manifest({"distance.onnx": "0", "lstm_ae.tflite": "0"},
                             {"lstm": 1.0, "euclidean": 1.0, "mahalanobis": 1.0}, 3, 4)
    counter = BadInputCounter(logger=logging.getLogger("test.quiet"))
    window = DeviceWindow(manifest)
    expected: dict[str, int] = {}
    rejected = accepted = dropped = 0
    for payload in payloads:
        try:  # the expectation, from the decoder alone
            issues = decode_payload(payload, "d", now=NOW, channels=STREAM_CHANNELS,
                                    max_bytes=200, max_skew_s=300).issues
        except BadReading as error:
            issues = [error.kind]
        for kind in issues:
            expected[kind] = expected.get(kind, 0) + 1
        reading = decode_counted(payload, "d", counter, now=NOW, channels=STREAM_CHANNELS,
                                 max_bytes=200, max_skew_s=300)
        if reading is None:
            rejected += 1
            continue
        assert math.isfinite(reading.ts) and abs(reading.ts - NOW) <= 300
        status = window.push(reading).status
        assert status in ACCEPTED | DROPPED
        if status in DROPPED:
            dropped += 1
            expected[status] = expected.get(status, 0) + 1
            counter.add(status, device="d")  # as DevicePipeline._count does
        else:
            accepted += 1
    assert rejected + dropped + accepted == len(payloads)
    assert counter.totals() == dict(sorted(expected.items()))
    assert counter.totals("d") == counter.totals()
    assert window.count <= accepted
