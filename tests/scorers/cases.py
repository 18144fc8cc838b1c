"""One case per registered scorer kind, for the shared checks of `test_contract.py`.

Registering a kind here is what a new kind's test needs: a valid spec (with the steps it
takes), what else of the manifest it needs, a plain reference of its raw score over a whole
stream, and spec values it must refuse (naming the field). `test_every_kind_has_a_case`
fails for a kind found by the registry and missing here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edge.scorers.base import FloatArray

CHANNELS, LENGTH = 3, 4
Stream = dict[str, Any]  # windows (N, LENGTH, C), timestamps (N,), the shared inputs
THRESHOLD = {"value": 1.0, "method": "quantile"}
LIKELIHOOD = {"short": 3, "history": 60, "min_history": 10}


@dataclass(frozen=True)
class Case:
    spec: dict[str, Any]
    reference: Callable[[Stream], FloatArray]  # raw scores of a whole stream, fresh state
    refused: tuple[tuple[str, Any], ...]  # (dotted spec field, value it must refuse)
    manifest: dict[str, Any] = field(default_factory=dict)  # other manifest fields it needs
    behaviour: Callable[[], None] | None = None  # what users expect of the kind, asserted


def _range_reference(stream: Stream) -> FloatArray:
    low, high = np.full(CHANNELS, -1.0), np.full(CHANNELS, 1.0)
    out = []
    for row in stream["windows"][:, -1, :]:
        width = np.maximum(high - low, 1e-9)
        beyond = np.maximum(np.maximum(row - high, low - row), 0.0) / width
        out.append(float(np.nan_to_num(beyond, nan=0.0).max()))
        high, low = np.fmax(high, row), np.fmin(low, row)
    return np.array(out)


SHAPE = {"block": 2, "blocks": 3}
SHAPE_MEMORY = {"lags": 3, "size": 40, "gap": 6, "k": 2}


def _long_shape_reference(stream: Stream) -> FloatArray:
    rows = stream["windows"][:, -1, :]
    block, blocks = SHAPE["block"], SHAPE["blocks"]
    span, size, gap, k = block * blocks, SHAPE_MEMORY["size"], SHAPE_MEMORY["gap"], \
        SHAPE_MEMORY["k"]
    shapes, out = [], []
    for i in range(len(rows)):
        if i + 1 < span:
            out.append(np.nan)
            continue
        recent = rows[i + 1 - span : i + 1]
        shapes.append(recent.reshape(blocks, block, CHANNELS).mean(axis=1).ravel())
        g = len(shapes) - 1
        near = sorted(float(np.sqrt(np.sum((shapes[g] - shapes[p]) ** 2)))
                      for p in range(max(0, g - size), g - gap + 1))
        out.append(near[k - 1] if len(near) >= k else np.nan)
    return np.array(out)


SEASONS = {"period_s": 86_400.0, "offset_s": 3_600.0,
           "level": [[float(c + b / 4) for b in range(24)] for c in range(CHANNELS)],
           "spread": [[1.0 + b / 10 for b in range(24)] for _ in range(CHANNELS)]}


def _seasonal_reference(stream: Stream) -> FloatArray:
    level, spread = np.array(SEASONS["level"]), np.array(SEASONS["spread"])
    out = []
    for row, t in zip(stream["windows"][:, -1, :], stream["timestamps"], strict=True):
        if np.isnan(t):
            out.append(np.nan)
            continue
        b = int(((t + SEASONS["offset_s"]) % 86_400.0) // 3_600.0)
        out.append(float(np.max(np.abs(row - level[:, b]) / spread[:, b])))
    return np.array(out)


def _seasonal_behaviour() -> None:
    """Loud at 6 am every day is normal at 6 am; the same reading at 3 am is not (trained on
    three weeks of a quiet channel that jumps every morning)."""
    from edge.bundle import Threshold
    from edge.scorers.seasonal import SeasonalScorer
    from export.config import FitConfig
    from export.errors import InputError
    from export.scorers.base import TrainingData
    from export.scorers.seasonal import SeasonalTrainer

    rng = np.random.default_rng(4)
    ts = 1_767_225_600.0 + 600.0 * np.arange(21 * 144)  # 3 weeks, every 10 min, from 00:00
    hour = (ts % 86_400) // 3_600
    rows = (rng.normal(scale=0.2, size=(ts.size, 1)) + np.where(hour == 6, 5.0, 0.0)[:, None])
    data = TrainingData(["noise"], rows, ts, FitConfig())
    (spec,) = SeasonalTrainer.fit(data, {"offset_s": 0.0, "prior": 10.0})
    assert spec["period_s"] == 604_800.0 and len(spec["level"][0]) == 168  # two weeks: weekly
    spec_model = SeasonalScorer.spec_type.model_validate(
        {**spec, "threshold": Threshold(value=1.0, method="quantile").model_dump()})
    scorer = SeasonalScorer(spec_model, type("M", (), {"channels": ["noise"]})())
    loud = np.array([[[5.0]], [[5.0]]])
    day = 1_767_225_600.0 + 22 * 86_400
    at = np.array([day + 6.5 * 3_600, day + 3.5 * 3_600])
    from edge.scorers.base import ScoringBatch
    from tests.scorers.harness import ArrayInputs
    z = scorer.score(ScoringBatch(loud, at, ArrayInputs(loud)), {})  # type: ignore[arg-type]
    assert z[0] < 3.0 < 10.0 < z[1], z
    short = TrainingData(["noise"], rows[:200], ts[:200], FitConfig())
    try:
        SeasonalTrainer.fit(short, {"offset_s": 0.0, "prior": 10.0})
    except InputError as exc:
        assert "two days" in str(exc)
    else:
        raise AssertionError("a day and a half of training rows was accepted")


TWINS = [["ch0", "ch1", "ch2"]]


def _twin_reference(stream: Stream) -> FloatArray:
    center, spread = np.array([0.1, -0.1, 0.0]), np.array([1.0, 2.0, 0.5])
    out = []
    for window in stream["windows"]:
        mean = window[-2:].mean(axis=0)
        residual = np.array([mean[i] - np.mean(np.delete(mean, i)) for i in range(3)])
        out.append(float(np.max(np.abs(residual - center) / spread)))
    return np.array(out)


def _variability_reference(stream: Stream) -> FloatArray:
    center, spread = np.array([0.0, 0.2, -0.2]), np.array([0.5, 0.5, 1.0])
    out = []
    for window in stream["windows"]:
        log_sd = np.log(np.maximum(window.std(axis=0), 0.01))
        diff = np.array([log_sd[i] - np.mean(np.delete(log_sd, i)) for i in range(3)])
        out.append(float(np.max(np.abs(diff - center) / spread)))
    return np.array(out)


def _twin_spike_reference(stream: Stream) -> FloatArray:
    center, spread = np.array([0.0, 0.1, -0.1]), np.array([0.5, 1.0, 2.0])
    out = []
    for window in stream["windows"]:
        z = [abs(row[i] - np.mean(np.delete(row, i)) - center[i]) / spread[i]
             for row in window for i in range(3)]
        out.append(float(np.max(z)))
    return np.array(out)


def _twin_long_reference(stream: Stream) -> FloatArray:
    center, spread, rows = np.array([0.0, 0.1, -0.1]), np.array([0.5, 1.0, 2.0]), 3
    residuals = [np.array([w[-1, i] - np.mean(np.delete(w[-1], i)) for i in range(3)])
                 for w in stream["windows"]]
    out = []
    for k in range(len(residuals)):
        recent = residuals[max(0, k - rows + 1): k + 1]
        if len(recent) < rows // 2:
            out.append(np.nan)
            continue
        out.append(float(np.max(np.abs(np.mean(recent, axis=0) - center) / spread)))
    return np.array(out)


def _twin_long_behaviour() -> None:
    """A sensor reading 3 units off its twins for a while is seen at full size once the
    history holds it, though each reading is buried in noise larger than that; filled values
    are left out of the history (nothing left to judge: not scored)."""
    from edge.scorers.base import ScoringBatch
    from edge.scorers.twin_long import TwinLongScorer, TwinLongScorerSpec
    from tests.scorers.harness import ArrayInputs

    spec = TwinLongScorerSpec.model_validate(
        {"name": "l", "kind": "twin_long", "groups": TWINS, "center": [0.0] * 3,
         "spread": [0.5] * 3, "rows": 200, "threshold": THRESHOLD})
    scorer = TwinLongScorer(spec, type("M", (), {"channels": ["ch0", "ch1", "ch2"]})())
    rng = np.random.default_rng(2)
    rows = rng.normal(0.0, 5.0, (800, 3)) + rng.normal(0.0, 1.0, (800, 1))
    rows[400:, 2] += 3.0
    windows = rows[:, None, :]
    state = scorer.new_state()
    scores = scorer.score(ScoringBatch(windows, np.full(800, np.nan),
                                       ArrayInputs(windows)), state)  # type: ignore[arg-type]
    assert np.isnan(scores[:99]).all() and not np.isnan(scores[99:]).any()
    # ch2's residual mean becomes 3 (z 6 in spread 0.5); each reading's residual has sd 6
    assert scores[650:].min() > 3.0 and np.median(scores[120:400]) < 2.0, scores
    again = scorer.new_state()
    missing = np.zeros(windows.shape, dtype=bool)
    missing[400:, :, 2] = True  # the shifted readings were never sent: nothing to judge
    quiet = scorer.score(ScoringBatch(windows, np.full(800, np.nan), ArrayInputs(windows),
                                      missing), again)  # type: ignore[arg-type]
    assert not (quiet[400:] >= 3.0).any() and np.isnan(quiet[650:]).all()


def _twin_spike_behaviour() -> None:
    """One reading's spike on one sensor scores at full height for as long as it is in the
    window (a window mean would divide it by the window's length), names that sensor, and a
    value the device filled is not judged."""
    from edge.scorers.base import ScoringBatch
    from edge.scorers.twin_spike import TwinSpikeScorer, TwinSpikeScorerSpec
    from tests.scorers.harness import ArrayInputs

    spec = TwinSpikeScorerSpec.model_validate(
        {"name": "s", "kind": "twin_spike", "groups": TWINS, "center": [0.0] * 3,
         "spread": [0.1] * 3, "threshold": THRESHOLD})
    scorer = TwinSpikeScorer(spec, type("M", (), {"channels": ["ch0", "ch1", "ch2"]})())
    rows = np.zeros((12, 3))
    rows[5, 1] = 3.0  # residual 3 against the twins' 0: z = 30
    windows = np.lib.stride_tricks.sliding_window_view(rows, LENGTH, axis=0).transpose(0, 2, 1)
    windows = np.ascontiguousarray(windows)
    batch = ScoringBatch(windows, np.full(len(windows), np.nan),
                         ArrayInputs(windows))  # type: ignore[arg-type]
    scores = scorer.score(batch, {})
    holding = [k for k in range(len(windows)) if k <= 5 < k + LENGTH]
    assert np.allclose(scores[holding], 30.0), scores
    assert np.allclose(np.delete(scores, holding), 0.0)
    assert (batch.channel_scores["s"][holding].argmax(axis=1) == 1).all()
    missing = np.zeros(windows.shape, dtype=bool)
    missing[:, :, 1] = np.isclose(windows[:, :, 1], 3.0)
    filled = ScoringBatch(windows, np.full(len(windows), np.nan), ArrayInputs(windows),
                          missing)  # type: ignore[arg-type]
    assert np.allclose(scorer.score(filled, {}), 0.0)


def _stuck_reference(stream: Stream) -> FloatArray:
    """Per window, on ch0 (limit 2) and ch2 (limit 3): how many of the last rows equal the
    newest, over the limit; the larger."""
    out = []
    for window in stream["windows"]:
        per = []
        for c, limit in ((0, 2), (2, 3)):
            run = 0
            for v in window[::-1, c]:
                if v != window[-1, c]:
                    break
                run += 1
            per.append(run / limit)
        out.append(max(per))
    return np.array(out)


def _stuck_behaviour() -> None:
    """A sensor that repeats its reading scores the run over its limit (1.0 at the limit)
    and names that sensor; a live one scores a run of one; a value the device filled (a
    dropout held) ends the run, and a filled newest value is not judged."""
    from edge.scorers.base import ScoringBatch
    from edge.scorers.stuck import StuckScorer, StuckScorerSpec
    from tests.scorers.harness import ArrayInputs

    spec = StuckScorerSpec.model_validate(
        {"name": "s", "kind": "stuck", "channels": ["ch0", "ch1"], "limits": [4, 4],
         "threshold": {"value": 1.0, "method": "run"}})
    scorer = StuckScorer(spec, type("M", (), {"channels": ["ch0", "ch1", "ch2"]})())
    rows = np.random.default_rng(1).normal(size=(14, 3))
    rows[6:, 1] = rows[5, 1]  # ch1 stuck from row 5 on
    windows = np.ascontiguousarray(
        np.lib.stride_tricks.sliding_window_view(rows, LENGTH, axis=0).transpose(0, 2, 1))
    batch = ScoringBatch(windows, np.full(len(windows), np.nan),
                         ArrayInputs(windows))  # type: ignore[arg-type]
    scores = scorer.score(batch, {})
    newest = np.arange(len(windows)) + LENGTH - 1  # each window's newest row
    run = np.where(newest >= 5, np.minimum(newest - 4, LENGTH), 1)
    assert np.allclose(scores, np.maximum(run, 1) / 4.0), scores
    assert (batch.channel_scores["s"][newest >= 8].argmax(axis=1) == 1).all()
    missing = np.zeros(windows.shape, dtype=bool)
    missing[:, :, 1] = np.arange(LENGTH)[None, :] + np.arange(len(windows))[:, None] >= 6
    filled = ScoringBatch(windows, np.full(len(windows), np.nan), ArrayInputs(windows),
                          missing)  # type: ignore[arg-type]
    held = scorer.score(filled, {})
    assert held.max() <= 0.25 + 1e-12, held  # ch1 filled: runs of one on ch0 only


# a window-features model of the 2 lag rows: each channel's mean, then its log sd
TAUGHT = {"lags": 2, "keep": list(range(CHANNELS)), "eps": 0.3, "center": [0.0] * 2 * CHANNELS,
          "factor": np.eye(2 * CHANNELS).tolist(), "size": 20}


def _taught_behaviour() -> None:
    """Nothing taught: the model's distance, bit for bit; taught windows (`feedback normal`)
    and their neighbours score their distance to the taught ones where that is smaller; a
    window unlike them keeps the model's distance."""
    from edge.memory import TaughtMemory
    from edge.scorers.base import ScoringBatch
    from edge.scorers.distance import DistanceScorer, DistanceScorerSpec
    from tests.scorers.harness import ArrayInputs

    spec = DistanceScorerSpec.model_validate(
        {"name": "d", "kind": "distance", "output": "d", "threshold": THRESHOLD,
         "taught": TAUGHT})
    scorer = DistanceScorer(spec, type("M", (), {"channels": ["a", "b", "c"]})())
    rng = np.random.default_rng(8)
    lags = rng.normal(size=(6, 2 * CHANNELS))
    lags[:3] += 9.0  # an event on every channel
    model = np.full(6, 9.0)

    def score(state: dict[str, Any]) -> FloatArray:
        windows = np.zeros((6, LENGTH, CHANNELS))
        inputs = ArrayInputs(windows, lag_vectors=lags, distances={"d": model})
        return scorer.score(ScoringBatch(windows, np.full(6, np.nan), inputs),  # type: ignore[arg-type]
                            state)

    state = scorer.new_state()
    assert np.array_equal(score(state), model)
    memory = state["taught.d"]
    assert isinstance(memory, TaughtMemory)
    memory.teach(lags[:1] + 0.1)
    taught = score(state)
    assert (taught[:3] < 4.5).all() and np.array_equal(taught[3:], model[3:]), taught


def _flat_reference(stream: Stream) -> FloatArray:
    """The farthest row of the window on ch0 and ch2, in tolerances; beyond 1 the rest in
    the channel's scale (the tolerance 0.01 of it)."""
    out = np.zeros(len(stream["windows"]))
    for b, window in enumerate(stream["windows"]):
        farthest = max(abs(float(v)) for row in window for v in (row[0], row[2]))
        out[b] = farthest if farthest <= 1.0 else 1.0 + (farthest - 1.0) * 0.01
    return out


CHANNEL_SHAPES = {"centroids": [[[0.0, 0.0, 0.0], [1.0, -1.0, 0.5]], [[0.5, 0.5, 0.5]]],
                  "spread": [2.0, 0.5]}


CHANNEL_MEMORY = {"lags": 3, "size": 30, "gap": 3, "k": 2}


def _channel_kmeans_reference(stream: Stream) -> FloatArray:
    """Per channel: the nearest centroid, or, when that is beyond the spread, the k-th
    nearest of the channel's subsequences of windows t-size .. t-gap if nearer; in the
    channel's spread; the largest channel."""
    size, gap, k = (CHANNEL_MEMORY[key] for key in ("size", "gap", "k"))
    windows = stream["windows"]
    out = []
    for t, window in enumerate(windows):
        per = []
        for c, cents, spread in zip((0, 2), CHANNEL_SHAPES["centroids"],
                                    CHANNEL_SHAPES["spread"], strict=True):
            x = window[-3:, c]
            best = min(float(np.sqrt(np.sum((x - np.array(v)) ** 2))) for v in cents)
            seen = sorted(float(np.sqrt(np.sum((x - windows[i, -3:, c]) ** 2)))
                          for i in range(max(0, t - size), t - gap + 1))
            if len(seen) >= k and best > spread:  # only beyond the spread is memory asked
                best = min(best, seen[k - 1])
            per.append(best / spread)
        out.append(max(per))
    return np.array(out)


def _channel_kmeans_behaviour() -> None:
    """A quiet channel's unusual stretch counts in its own spread, and the alert names it;
    a channel left out (a state channel) is not judged whatever it does."""
    from edge.scorers.channel_kmeans import ChannelKmeansScorer, ChannelKmeansScorerSpec
    from tests.scorers.harness import ArrayInputs

    spec = ChannelKmeansScorerSpec.model_validate(
        {"name": "ck", "kind": "channel_kmeans", "channels": ["busy", "quiet"], "rows": 2,
         "centroids": [[[0.0, 0.0]], [[0.0, 0.0]]], "spread": [10.0, 0.1],
         "threshold": THRESHOLD})
    manifest = type("M", (), {"channels": ["busy", "quiet", "state"]})()
    scorer = ChannelKmeansScorer(spec, manifest)  # type: ignore[arg-type]
    windows = np.zeros((3, 2, 3))
    windows[0, :, 0] = 5.0  # the busy channel within its spread
    windows[1, -1, 1] = 0.5  # the quiet channel five spreads off
    windows[2, :, 2] = 1.0  # the state channel switched: not judged
    from edge.scorers.base import ScoringBatch

    batch = ScoringBatch(windows, np.full(3, np.nan), ArrayInputs(windows))  # type: ignore[arg-type]
    scores = scorer.score(batch, {})
    assert scores[1] > 1.0 > scores[0] and scores[2] == 0.0
    assert batch.channel_scores["ck"][1].argmax() == 1


READING = {"offset": [0.5, -0.2, 0.0], "gain": [1.0, 0.9, 1.1], "noise_abs": [0.5, 1.0, 0.2],
           "noise_rel": [0.0, 0.1, 0.05]}
READING_UNITS = [  # one channel per transform, so the reference checks the way back to units
    {"name": "ch0", "transform": "none", "offset": 0.0, "center": 1.0, "scale": 2.0, "fill": 1.0},
    {"name": "ch1", "transform": "sqrt", "offset": 0.0, "center": 3.0, "scale": 0.5, "fill": 9.0},
    {"name": "ch2", "transform": "log1p", "offset": 1.0, "center": 2.0, "scale": 0.3,
     "fill": 5.0},
]


def _in_units(value: float, channel: dict[str, Any]) -> float:
    t = value * channel["scale"] + channel["center"]
    t = {"none": t, "sqrt": t * t, "log1p": float(np.expm1(t))}[channel["transform"]]
    return float(t - channel["offset"])


def _twin_reading_reference(stream: Stream) -> FloatArray:
    center, spread = [1.0, 1.5, 2.0], [0.5, 1.0, 0.8]
    out = []
    for window in stream["windows"]:
        units = [[_in_units(v, READING_UNITS[j]) for j, v in enumerate(row)] for row in window]
        scores = []
        for i in range(3):
            expected = [READING["offset"][i] + READING["gain"][i]
                        * np.mean([row[j] for j in range(3) if j != i]) for row in units]
            departure = [row[i] - e for row, e in zip(units, expected, strict=True)]
            mean = np.mean(departure)
            largest = max(abs(d - mean) / (READING["noise_abs"][i]
                                            + READING["noise_rel"][i] * abs(e))
                          for d, e in zip(departure, expected, strict=True))
            scores.append(max(largest - center[i], 0.0) / spread[i])
        out.append(max(scores))
    return np.array(out)


def _twin_reading_behaviour() -> None:
    """A reading 5 units off its twins is a fault at a level of 5 and noise at a level of 200
    (a sensor's noise grows with its level); it scores for as long as it is in the window,
    names that sensor, and a value the device filled is not judged."""
    from edge.scorers.base import ScoringBatch
    from edge.scorers.twin_reading import TwinReadingScorer, TwinReadingScorerSpec
    from tests.scorers.harness import ArrayInputs

    spec = TwinReadingScorerSpec.model_validate(
        {"name": "r", "kind": "twin_reading", "groups": TWINS, "center": [2.0] * 3,
         "spread": [1.0] * 3, "offset": [0.0] * 3, "gain": [1.0] * 3, "noise_abs": [0.5] * 3,
         "noise_rel": [0.05] * 3, "threshold": THRESHOLD})
    identity = [type("P", (), {"transform": "none", "offset": 0.0, "center": 0.0,
                               "scale": 1.0})() for _ in range(3)]
    manifest = type("M", (), {"channels": ["ch0", "ch1", "ch2"],
                              "preprocess": type("Pre", (), {"channels": identity})()})()
    scorer = TwinReadingScorer(spec, manifest)  # type: ignore[arg-type]
    holding = [k for k in range(9) if k <= 5 < k + LENGTH]
    for level, fault in ((5.0, True), (200.0, False)):
        rows = np.full((12, 3), level)
        rows[5, 1] += 5.0  # its departure from the window's mean departure: 3.75
        windows = np.ascontiguousarray(
            np.lib.stride_tricks.sliding_window_view(rows, LENGTH, axis=0).transpose(0, 2, 1))
        batch = ScoringBatch(windows, np.full(len(windows), np.nan),
                             ArrayInputs(windows))  # type: ignore[arg-type]
        scores = scorer.score(batch, {})
        allowed = 0.5 + 0.05 * level  # the noise the level allows
        expected = max(3.75 / allowed - 2.0, 0.0)
        assert np.allclose(scores[holding], expected), (level, scores)
        assert (scores[holding] > 1.0).all() == fault
        assert np.allclose(np.delete(scores, holding), 0.0)
        if fault:
            assert (batch.channel_scores["r"][holding].argmax(axis=1) == 1).all()
            missing = np.zeros(windows.shape, dtype=bool)
            missing[:, :, 1] = windows[:, :, 1] > level
            filled = ScoringBatch(windows, np.full(len(windows), np.nan), ArrayInputs(windows),
                                  missing)  # type: ignore[arg-type]
            assert np.allclose(scorer.score(filled, {}), 0.0)


CASES: dict[str, Case] = {
    "lstm_ae": Case(
        {"name": "lstm", "kind": "lstm_ae", "threshold": THRESHOLD},
        lambda s: s["lstm_errors"].mean(axis=1),
        (("threshold.value", 0.0),)),
    "distance": Case(
        {"name": "euclidean", "kind": "distance", "output": "euclidean",
         "threshold": {"value": 2.0, "method": "likelihood"}, "likelihood": LIKELIHOOD,
         "memory": {"lags": 1, "size": 30, "gap": 3, "k": 2}, "taught": TAUGHT},
        lambda s: s["distances"]["euclidean"],
        (("memory.gap", 30), ("likelihood.short", 0), ("taught.level", -1.0),
         ("taught.factor", [[1.0]])),
        behaviour=_taught_behaviour),
    "iqr": Case(
        {"name": "iqr", "kind": "iqr", "threshold": {"value": 1.0, "method": "fence"}},
        lambda s: s["iqr_excess"].max(axis=1),
        (("threshold.value", -1.0),)),
    "range": Case(
        {"name": "range", "kind": "range", "threshold": {"value": 0.1, "method": "tolerance"}},
        _range_reference, (("threshold.value", 0.0),),
        {"range": {"low": [-1.0] * CHANNELS, "high": [1.0] * CHANNELS}}),
    "long_shape": Case(
        {"name": "long_shape_2", "kind": "long_shape", "long_shape": SHAPE,
         "memory": SHAPE_MEMORY, "likelihood": LIKELIHOOD,
         "threshold": {"value": 3.0, "method": "likelihood"}},
        _long_shape_reference, (("long_shape.block", 0), ("memory.size", 1))),
    "seasonal": Case(
        {"name": "seasonal", "kind": "seasonal", "threshold": THRESHOLD, **SEASONS},
        _seasonal_reference,
        (("period_s", 0.0), ("offset_s", 10**6), ("spread", [[0.0] * 24] * CHANNELS)),
        behaviour=_seasonal_behaviour),
    "twin": Case(
        {"name": "twin", "kind": "twin", "groups": TWINS, "center": [0.1, -0.1, 0.0],
         "spread": [1.0, 2.0, 0.5], "rows": 2, "threshold": THRESHOLD},
        _twin_reference,
        (("rows", 0), ("spread", [0.0, 1.0, 1.0]), ("groups", [["ch0"]]))),
    "variability": Case(
        {"name": "variability", "kind": "variability", "groups": TWINS,
         "center": [0.0, 0.2, -0.2], "spread": [0.5, 0.5, 1.0], "floor": 0.01,
         "threshold": THRESHOLD},
        _variability_reference,
        (("floor", 0.0), ("center", [0.0]))),
    "twin_long": Case(
        {"name": "twin_long", "kind": "twin_long", "groups": TWINS, "rows": 3,
         "center": [0.0, 0.1, -0.1], "spread": [0.5, 1.0, 2.0], "threshold": THRESHOLD},
        _twin_long_reference,
        (("rows", 1), ("spread", [1.0, 0.0, 1.0])),
        behaviour=_twin_long_behaviour),
    "twin_spike": Case(
        {"name": "twin_spike", "kind": "twin_spike", "groups": TWINS,
         "center": [0.0, 0.1, -0.1], "spread": [0.5, 1.0, 2.0], "threshold": THRESHOLD},
        _twin_spike_reference,
        (("spread", [1.0, -1.0, 1.0]), ("groups", [["ch0", "ch0"]])),
        behaviour=_twin_spike_behaviour),
    "twin_reading": Case(
        {"name": "twin_reading", "kind": "twin_reading", "groups": TWINS,
         "center": [1.0, 1.5, 2.0], "spread": [0.5, 1.0, 0.8], "threshold": THRESHOLD,
         **READING},
        _twin_reading_reference,
        (("noise_abs", [0.5, 0.0, 0.2]), ("noise_rel", [0.0, -0.1, 0.05]), ("gain", [1.0])),
        manifest={"preprocess": {"channels": READING_UNITS, "clip": 8.0, "max_gap_s": 5.0}},
        behaviour=_twin_reading_behaviour),
    "flat": Case(
        {"name": "flat", "kind": "flat", "channels": ["ch0", "ch2"], "tolerance": 0.01,
         "threshold": {"value": 1.0, "method": "tolerance"}},
        _flat_reference,
        (("channels", []), ("tolerance", 0.0))),
    "stuck": Case(
        {"name": "stuck", "kind": "stuck", "channels": ["ch0", "ch2"], "limits": [2, 3],
         "threshold": {"value": 1.0, "method": "run"}},
        _stuck_reference,
        (("limits", [2]), ("limits", [1, 3]), ("channels", ["ch0", "ch0"]),
         ("limits", [2, 5])),
        behaviour=_stuck_behaviour),
    "channel_kmeans": Case(
        {"name": "channel_kmeans", "kind": "channel_kmeans", "channels": ["ch0", "ch2"],
         "rows": 3, "threshold": THRESHOLD, "memory": CHANNEL_MEMORY, **CHANNEL_SHAPES},
        _channel_kmeans_reference,
        (("rows", 0), ("spread", [1.0, 0.0]), ("centroids", [[[0.0, 0.0]], [[1.0, 1.0]]]),
         ("channels", ["ch0", "ch0"]), ("memory.lags", 2)),
        behaviour=_channel_kmeans_behaviour),
}


def stream(n: int = 300, seed: int = 0, *, unknown_times: bool = True) -> Stream:
    """A random-walk stream with shared inputs; a few windows without a known time."""
    rng = np.random.default_rng(seed)
    rows = np.cumsum(rng.normal(size=(n + LENGTH, CHANNELS)), axis=0) * 0.3
    windows = np.stack([rows[i : i + LENGTH] for i in range(n)])
    timestamps = 1_767_225_600.0 + 1_500.0 * np.arange(n)  # 25 min apart: every hour bin
    if unknown_times:
        timestamps[[5, 77]] = np.nan
    return {"windows": windows, "timestamps": timestamps,
            "lstm_errors": rng.gamma(2.0, size=(n, CHANNELS)),
            "lag_vectors": rng.normal(size=(n, 2 * CHANNELS)),
            "distances": {"euclidean": rng.gamma(2.0, size=n),
                          "mahalanobis": rng.gamma(2.0, size=n)},
            "iqr_excess": rng.gamma(1.0, size=(n, CHANNELS))}


def part(s: Stream, index: np.ndarray) -> Stream:
    """The windows `index` of a stream, with their shared inputs."""
    return {k: ({n: v[index] for n, v in value.items()} if isinstance(value, dict)
                else value[index]) for k, value in s.items()}
