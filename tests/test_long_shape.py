"""The device's long-shape memory against a plain reference, its batch invariance, its saved
state, and its place in the manifest and in the per-device state (NaN: not scored yet)."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from edge.bundle import LikelihoodSpec, LongShapeSpec, Manifest, MemorySpec
from edge.long_shape import LongShape
from tests.batch_splits import assert_any_split_gives_the_same_bits

SHAPE = LongShapeSpec(block=4, blocks=3)
MEMORY = MemorySpec(lags=3, size=60, gap=12, k=2)


def reference(rows: np.ndarray, shape: LongShapeSpec, memory: MemorySpec) -> np.ndarray:
    """The definition, row by row: the block means of the last block x blocks rows, and the
    distance to the k-th nearest such shape ending `gap` to `size` shapes earlier."""
    span = shape.block * shape.blocks
    shapes = [rows[t - span + 1 : t + 1].reshape(shape.blocks, shape.block, -1).mean(axis=1)
              .ravel() for t in range(span - 1, len(rows))]
    out = np.full(len(rows), np.nan)
    for g, current in enumerate(shapes):
        past = shapes[max(0, g - memory.size) : max(0, g - memory.gap + 1)]
        if len(past) >= memory.k:
            distances = sorted(float(np.linalg.norm(current - p)) for p in past)
            out[span - 1 + g] = distances[memory.k - 1]
    return out


def cycles(n: int, channels: int = 2, seed: int = 0) -> np.ndarray:
    t = np.arange(n)[:, None]
    rng = np.random.default_rng(seed)
    return np.sin(2 * np.pi * t / 24 + np.arange(channels)) + rng.normal(0, 0.1, (n, channels))


def test_matches_the_reference() -> None:
    rows = cycles(300)
    got = LongShape(SHAPE, MEMORY, channels=2).scores(rows)
    want = reference(rows, SHAPE, MEMORY)
    np.testing.assert_allclose(got, want, rtol=1e-12)
    # shapes from row 11 on; scored from the 14th shape, which has 2 at least 12 earlier
    assert np.isnan(got[:24]).all() and np.isfinite(got[24:]).all()


def test_any_batch_split_gives_the_same_bits() -> None:
    rows = cycles(400, seed=1)
    assert_any_split_gives_the_same_bits(
        lambda: LongShape(SHAPE, MEMORY, channels=2), LongShape.scores, rows)


def test_a_missing_cycle_is_far_and_a_repeated_one_is_not() -> None:
    """Single rows of a stretch with a missing cycle all look familiar (the trough's level);
    its long shape is new. Its repeats are nearer each time (neighbouring offsets of the first
    one are remembered too) and the third is known."""
    rows = np.sin(2 * np.pi * np.arange(600) / 24)[:, None]
    for start in (300, 420, 540):  # the trough held through a whole cycle, three times
        rows[start : start + 24, 0] = -1.0
    shape = LongShape(LongShapeSpec(block=4, blocks=6), MemorySpec(lags=6, size=500, gap=24,
                                                                     k=2), channels=1)
    got = shape.scores(rows)
    usual = got[100:300]
    assert usual.max() < 1e-9  # a pure cycle: every shape seen before
    first, second, third = (got[s : s + 48].max() for s in (300, 420, 540))
    assert first > 2.0 and first > 5 * second > 0  # new, then seen once
    assert third < 1e-9  # seen twice: known


def test_a_snapshot_continues_to_the_bit() -> None:
    rows = cycles(200, seed=3)
    whole = LongShape(SHAPE, MEMORY, channels=2).scores(rows)
    first = LongShape(SHAPE, MEMORY, channels=2)
    first.scores(rows[:90])
    later = LongShape(SHAPE, MEMORY, channels=2)
    later.restore(first.snapshot())
    assert np.array_equal(later.scores(rows[90:]), whole[90:], equal_nan=True)
    other = LongShape(SHAPE, MEMORY, channels=3)
    with pytest.raises(ValueError, match="expected fewer than 12 rows of 3 channels"):
        other.restore(first.snapshot())


def test_an_unscored_window_leaves_the_likelihood_alone() -> None:
    """NaN (a long shape not scored yet) gives 0 and is no part of the likelihood history:
    the z values after it are those of the finite scores alone."""
    from edge.likelihood import Likelihood
    from edge.score_state import ScoreState
    from tests.agent_fixtures import make_manifest

    files = {"lstm_ae.tflite": "0" * 64, "distance.onnx": "0" * 64}
    base = make_manifest(files, {"lstm": 1.0, "euclidean": 1.0, "mahalanobis": 1.0}, n=1,
                         window=8)
    spec = LikelihoodSpec(short=3, history=50, min_history=5)
    manifest = base.model_copy(update={"scorers": [*base.scorers, long_shape_scorer(spec)]})
    state = ScoreState(manifest)
    raw = np.array([np.nan, np.nan, 1.0, 2.0, 1.5, 1.0, 9.0, 1.2, 1.1, 1.3])
    from edge.scorers.steps import stepped

    got = stepped(manifest.scorers[-1], raw, state.of("long_shape_12"))
    alone = Likelihood(spec).update(raw[2:])
    assert got[:2].tolist() == [0.0, 0.0]
    assert np.array_equal(got[2:], alone) and np.abs(alone).max() > 0.1
    fed_nan = Likelihood(spec).update(raw)  # a NaN taken in would weigh on every later z
    assert not np.array_equal(fed_nan[2:], alone)
    assert state.of("long_shape_12")["likelihood.long_shape_12"].count == 8


def long_shape_scorer(likelihood: LikelihoodSpec | None = None) -> object:
    from edge.bundle import ScorerSpec, Threshold

    return ScorerSpec(name="long_shape_12", kind="long_shape", long_shape=SHAPE, memory=MEMORY,
                      likelihood=likelihood or LikelihoodSpec(),
                      threshold=Threshold(value=3.0, method="likelihood"))


def test_the_manifest_pairs_the_kind_with_its_shape_and_memory() -> None:
    from tests.agent_fixtures import make_manifest

    files = {"lstm_ae.tflite": "0" * 64, "distance.onnx": "0" * 64}
    base = make_manifest(files, {"lstm": 1.0, "euclidean": 1.0, "mahalanobis": 1.0}, n=2,
                         window=8).model_dump()
    scorer = long_shape_scorer().model_dump()
    assert Manifest.model_validate({**base, "scorers": [*base["scorers"], scorer]})
    for change, message in (({"memory": None}, "a long_shape scorer needs `memory`"),
                            ({"long_shape": None}, "`long_shape` goes with kind long_shape"),
                            ({"kind": "iqr"}, "`long_shape` goes with kind long_shape")):
        broken = {**scorer, **change}
        with pytest.raises(ValidationError, match=message):
            Manifest.model_validate({**base, "scorers": [*base["scorers"], broken]})
