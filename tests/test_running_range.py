"""The device's running range against a plain reference, its batch invariance, and its place
in the manifest (validated per channel) and in the engine (per device state)."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from edge.bundle import Manifest, RangeSpec
from edge.running_range import RunningRange
from tests.batch_splits import assert_any_split_gives_the_same_bits


def reference(rows: np.ndarray, spec: RangeSpec) -> np.ndarray:
    """The definition, row by row: the excess over the range of the training rows and every
    row before this one, in widths of that range, the largest over channels."""
    low, high = np.array(spec.low), np.array(spec.high)
    out = np.zeros(len(rows))
    for i, row in enumerate(rows):
        width = high - low
        out[i] = max(0.0, float(np.max(np.maximum(row - high, low - row) / width)))
        low, high = np.minimum(low, row), np.maximum(high, row)
    return out


def walk(n: int, width: int = 3, seed: int = 0) -> np.ndarray:
    return np.cumsum(np.random.default_rng(seed).normal(size=(n, width)), axis=0) * 0.3


SPEC = RangeSpec(low=[-1.0, -2.0, -0.5], high=[1.0, 2.0, 0.5])


def test_matches_the_reference() -> None:
    rows = walk(800)
    got = RunningRange(SPEC).excess(rows)
    np.testing.assert_allclose(got, reference(rows, SPEC), rtol=1e-12)
    assert (got > 0).sum() > 10 and (got == 0).sum() > 10  # records and ordinary rows both


def test_any_batch_split_gives_the_same_bits() -> None:
    rows = walk(700, seed=1)
    parts = assert_any_split_gives_the_same_bits(
        lambda: RunningRange(SPEC), RunningRange.excess, rows)
    assert np.array_equal(parts.high, rows.max(axis=0).clip(min=SPEC.high))


def test_a_record_alerts_once_then_belongs_to_the_range() -> None:
    seen = RunningRange(RangeSpec(low=[0.0], high=[10.0]))
    rows = np.array([[5.0], [13.0], [13.0], [12.0], [14.0], [-1.0], [-3.0]])
    got = seen.excess(rows)
    # 13 is 30% of 0..10 beyond it; again, nothing; 14 is 1/13 beyond 0..13; -1 a 14th under
    np.testing.assert_allclose(got, [0.0, 0.3, 0.0, 0.0, 1 / 13, 1 / 14, 2 / 15])


def test_missing_cells_neither_score_nor_move_the_range() -> None:
    seen = RunningRange(RangeSpec(low=[0.0, 0.0], high=[1.0, 1.0]))
    got = seen.excess(np.array([[np.nan, 0.5], [2.0, np.nan], [np.nan, np.nan]]))
    np.testing.assert_allclose(got, [0.0, 1.0, 0.0])
    assert seen.high.tolist() == [2.0, 1.0] and seen.low.tolist() == [0.0, 0.0]


def test_a_range_scorer_needs_a_range_for_every_channel() -> None:
    from tests.agent_fixtures import make_manifest

    files = {"lstm_ae.tflite": "0" * 64, "distance.onnx": "0" * 64}
    thresholds = {"lstm": 1.0, "euclidean": 1.0, "mahalanobis": 1.0}
    base = make_manifest(files, thresholds, n=3, window=8).model_dump()
    scorer = {"name": "range", "kind": "range", "threshold": {"value": 0.1,
                                                                "method": "tolerance"}}
    base["scorers"].append(scorer)
    with pytest.raises(ValidationError, match="a range scorer needs `range`"):
        Manifest.model_validate(base)
    channels = len(base["channels"])
    base["range"] = {"low": [0.0] * (channels - 1), "high": [1.0] * (channels - 1)}
    with pytest.raises(ValidationError, match="a low and a high per channel"):
        Manifest.model_validate(base)
    base["range"] = {"low": [0.0] * channels, "high": [1.0] * channels}
    assert Manifest.model_validate(base).range is not None
