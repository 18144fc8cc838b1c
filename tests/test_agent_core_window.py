"""DeviceWindow policies: warm-up, duplicates, out-of-order, gaps, forward fill, stride."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.bundle import Manifest
from edge.preprocess import scale_rows
from edge.readings import Reading
from edge.window import (
    BAD_TIMESTAMP,
    DUPLICATE,
    NO_VALUES,
    OUT_OF_ORDER,
    STRIDE_SKIP,
    WARMING_UP,
    WINDOW,
    DeviceWindow,
)
from tests.agent_fixtures import centers, make_manifest

N, W = 3, 4


@pytest.fixture(scope="module")
def manifest() -> Manifest:
    return make_manifest({"distance.onnx": "0", "lstm_ae.tflite": "0"},
                         {"lstm": 1.0, "euclidean": 1.0, "mahalanobis": 1.0}, N, W)


def reading(ts: float, *values: float | None) -> Reading:
    vals = values if values else (float(ts),) * N
    return Reading("d", ts, {f"ch{j}": v for j, v in enumerate(vals)})


def scaled(manifest: Manifest, *rows: list[float]) -> np.ndarray:
    return scale_rows(np.array(rows, dtype=float), manifest.preprocess)


def test_warm_up_then_a_window_per_reading(manifest: Manifest) -> None:
    window = DeviceWindow(manifest)
    results = [window.push(reading(float(t))) for t in range(10)]
    assert [r.status for r in results] == [WARMING_UP] * (W - 1) + [WINDOW] * (10 - W + 1)
    last = results[-1].window
    assert last is not None and last.shape == (W, N)
    np.testing.assert_allclose(last, scaled(manifest, *[[float(t)] * N for t in range(6, 10)]))


def test_duplicate_and_out_of_order_are_dropped(manifest: Manifest) -> None:
    window = DeviceWindow(manifest)
    for t in range(5):
        window.push(reading(float(t)))
    assert window.push(reading(4.0, 99, 99, 99)).status == DUPLICATE
    assert window.push(reading(2.5, 99, 99, 99)).status == OUT_OF_ORDER
    assert window.last_ts == 4.0
    result = window.push(reading(5.0))
    assert result.status == WINDOW and result.window is not None
    assert not np.any(result.window == scaled(manifest, [99.0] * N)[0])  # dropped rows unused
    assert window.push(reading(float("nan"))).status == BAD_TIMESTAMP
    assert window.push(reading(9.0, None, None, float("nan"))).status == NO_VALUES
    assert window.last_ts == 5.0


def test_gap_restarts_the_window(manifest: Manifest) -> None:
    window = DeviceWindow(manifest)
    for t in range(6):
        window.push(reading(float(t)))
    gap = manifest.preprocess.max_gap_s
    first = window.push(reading(5.0 + gap + 0.5))
    assert first.restarted and first.status == WARMING_UP
    statuses = [window.push(reading(5.0 + gap + 0.5 + k)).status for k in range(1, W)]
    assert statuses == [WARMING_UP] * (W - 2) + [WINDOW]
    # exactly max_gap_s is not a gap
    assert not window.push(reading(window.last_ts + gap)).restarted  # type: ignore[operator]


def test_forward_fill_from_last_value_then_training_fill(manifest: Manifest) -> None:
    window = DeviceWindow(manifest)
    first = window.push(reading(0.0, None, 5.0, None))
    assert first.filled == 2
    for t in range(1, W):
        window.push(reading(float(t), 1.0, None, float("nan")))
    rows = window.last_rows()
    expected = scaled(manifest, [centers(N)[0], 5.0, centers(N)[2]],
                      *[[1.0, 5.0, centers(N)[2]]] * (W - 1))
    np.testing.assert_allclose(rows, expected)


def test_stride(manifest: Manifest) -> None:
    window = DeviceWindow(manifest, stride=3)
    statuses = [window.push(reading(float(t))).status for t in range(W + 6)]
    full = statuses[W - 1:]
    assert full == [WINDOW, STRIDE_SKIP, STRIDE_SKIP] * 2 + [WINDOW]
    with pytest.raises(ValueError):
        DeviceWindow(manifest, stride=0)


events = st.lists(st.tuples(
    st.sampled_from([0.0, 0.0, 1.0, 1.0, 1.0, 2.0, -1.0, 7.0, float("nan")]),  # ts step
    st.lists(st.one_of(st.none(), st.floats(-50, 50)), min_size=N, max_size=N),
), max_size=40)


@settings(max_examples=150, deadline=None)
@given(events, st.integers(1, 3), st.integers(1, 9))
def test_batch_equals_one_by_one(manifest: Manifest, steps: list[tuple[float, list[float | None]]],
                                 stride: int, block: int) -> None:
    """Replay's batches and live single readings go through the same policy."""
    ts, t = [], 100.0
    for step, _ in steps:
        t = t + step if np.isfinite(step) else t
        ts.append(t if np.isfinite(step) else float("nan"))
    readings = [Reading("d", when, {f"ch{j}": v for j, v in enumerate(vals)})
                for when, (_, vals) in zip(ts, steps, strict=True)]
    single = DeviceWindow(manifest, stride)
    one = [single.push(r) for r in readings]
    batched = DeviceWindow(manifest, stride)
    status: list[str] = []
    windows: list[np.ndarray] = []
    for lo in range(0, len(readings), block):
        part = readings[lo:lo + block]
        raw = np.array([[np.nan if v is None else v for v in r.values.values()] for r in part])
        out = batched.push_rows(np.array([r.ts for r in part]), raw.reshape(len(part), N))
        status += out.status
        windows += list(out.windows)
    assert status == [r.status for r in one]
    expected = [r.window for r in one if r.window is not None]
    assert len(windows) == len(expected)
    for got, want in zip(windows, expected, strict=True):
        np.testing.assert_allclose(got, want)
    np.testing.assert_allclose(batched.last_rows(), single.last_rows())
    assert batched.count == single.count
    by_row = DeviceWindow(manifest, stride)
    masks = [by_row.push_rows(np.array([r.ts]), np.array(
        [[np.nan if v is None else v for v in r.values.values()]])).missing for r in readings]
    one_mask = np.concatenate(masks) if masks else np.zeros((0, W, N), dtype=bool)
    batched_masks = []
    again = DeviceWindow(manifest, stride)
    for lo in range(0, len(readings), block):
        part = readings[lo:lo + block]
        raw = np.array([[np.nan if v is None else v for v in r.values.values()] for r in part])
        batched_masks.append(again.push_rows(np.array([r.ts for r in part]),
                                             raw.reshape(len(part), N)).missing)
    got_mask = (np.concatenate(batched_masks) if batched_masks
                else np.zeros((0, W, N), dtype=bool))
    assert np.array_equal(got_mask, one_mask.reshape(-1, W, N))


def test_the_mask_marks_each_filled_value_in_every_window_that_holds_it(
        manifest: Manifest) -> None:
    """A value the sensor did not send is forward-filled and marked where it sits."""
    window = DeviceWindow(manifest)
    raw = np.array([[float(t), float(t), float(t)] for t in range(W + 3)])
    raw[W, 1] = np.nan  # row W: channel 1 missing
    out = window.push_rows(np.arange(len(raw), dtype=float), raw)
    assert out.windows.shape == out.missing.shape == (4, W, N)
    for k, end in enumerate(out.window_rows.tolist()):
        rows = np.arange(end - W + 1, end + 1)
        expected = np.zeros((W, N), dtype=bool)
        expected[rows == W, 1] = True
        assert np.array_equal(out.missing[k], expected), (k, end)
    assert out.filled[W] == 1 and out.filled.sum() == 1
