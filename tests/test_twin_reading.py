"""`twin_reading` fitted by the trainer on twin sensors made as their makers describe them (an
offset, a gain, noise with an absolute and a relative part): the fit finds the noise law, and
with the trainer's own threshold a spike on one sensor is caught at a low level and not at a
high one, where the same size is the sensor's usual noise."""

from __future__ import annotations

import numpy as np

from edge.scorers.base import ScoringBatch
from edge.scorers.twin_reading import TwinReadingScorer, TwinReadingScorerSpec
from edge.units import Units
from export.config import FitConfig
from export.scorers.base import TrainingData
from export.scorers.twin_reading import TwinReadingTrainer
from tests.scorers.harness import ArrayInputs

CHANNELS = ["pm25_a_1", "pm25_a_2", "pm25_a_3"]
LENGTH = 16
OFFSET, GAIN = np.array([1.0, -0.5, 0.3]), np.array([1.0, 1.15, 0.9])
NOISE_ABS, NOISE_REL = 1.0, 0.1


def pod(level: np.ndarray, seed: int) -> np.ndarray:
    """(n, 3) readings of three twins seeing `level`."""
    rng = np.random.default_rng(seed)
    noise = rng.normal(size=(level.size, 3)) * (NOISE_ABS + NOISE_REL * level[:, None])
    return OFFSET + GAIN * level[:, None] + noise


def windows_of(rows: np.ndarray) -> np.ndarray:
    view = np.lib.stride_tricks.sliding_window_view(rows, LENGTH, axis=0)
    return np.ascontiguousarray(view.transpose(0, 2, 1))


def scaling(rows: np.ndarray) -> list[object]:
    """A sqrt transform and a robust scale per channel, as the trainer would choose."""
    out = []
    for j in range(rows.shape[1]):
        t = np.sqrt(np.maximum(rows[:, j], 0.0))
        q1, med, q3 = np.percentile(t, [25, 50, 75])
        out.append(type("C", (), {"transform": "sqrt", "offset": 0.0, "center": float(med),
                                  "scale": float((q3 - q1) / 1.349)})())
    return out


def to_scaled(rows: np.ndarray, channels: list[object]) -> np.ndarray:
    return np.column_stack([(np.sqrt(np.maximum(rows[:, j], 0.0)) - c.center) / c.scale
                            for j, c in enumerate(channels)])


def test_the_fit_finds_the_noise_law_and_the_threshold_follows_the_level() -> None:
    t = np.arange(6000)
    level = 60 + 55 * np.sin(t / 500.0)  # 5 to 115 ug/m3 and back, several times
    rows = pod(level, seed=1)
    channels = scaling(rows)
    scaled = to_scaled(rows, channels)
    assert np.allclose(Units(channels)(scaled), rows)  # the way back to units is exact
    train, heldout = scaled[:4500], scaled[4500:]
    data = TrainingData(CHANNELS, train, t[:4500] * 60.0, FitConfig(), windows_of(train),
                        None, channels)  # type: ignore[arg-type]
    (fitted,) = TwinReadingTrainer.fit(data, {})
    # each member's departure from its twins' line has both noise parts of its own and its
    # twins': a level-free part near 1 unit and a relative one near 0.1 per unit of level
    assert all(0.3 < a < 3.0 for a in fitted["noise_abs"]), fitted["noise_abs"]
    assert all(0.04 < r < 0.25 for r in fitted["noise_rel"]), fitted["noise_rel"]
    assert 1.05 < fitted["gain"][1] / fitted["gain"][2] < 1.5  # 1.15 / 0.9 = 1.28

    manifest = type("M", (), {"channels": CHANNELS,
                              "preprocess": type("P", (), {"channels": channels})()})()
    provisional = {**fitted, "threshold": {"value": 1.0, "method": "provisional"}}
    scorer = TwinReadingScorer(TwinReadingScorerSpec.model_validate(provisional),
                               manifest)  # type: ignore[arg-type]

    def scores(values: np.ndarray) -> np.ndarray:
        w = windows_of(values)
        return scorer.score(ScoringBatch(w, np.full(len(w), np.nan),
                                         ArrayInputs(w)), {})  # type: ignore[arg-type]

    threshold = TwinReadingTrainer.threshold("twin_reading", scores(heldout), data, {}).value
    for at, caught in ((8.0, True), (110.0, False)):
        calm = pod(np.full(200, at), seed=7)
        spiked = calm.copy()
        spiked[100, 1] += 15.0  # one reading 15 units off its twins
        quiet, spike = scores(to_scaled(calm, channels)), scores(to_scaled(spiked, channels))
        holding = slice(100 - LENGTH + 1, 101)
        assert (spike[holding].min() > threshold) == caught, (at, spike[holding], threshold)
        assert quiet.max() < threshold


def test_a_sensor_silent_for_days_fits_quietly() -> None:
    """A member missing from most training windows (its values filled, not read) still fits,
    without numpy's empty-slice warnings, on the windows it was read in."""
    import warnings

    t = np.arange(3000)
    rows = pod(60 + 55 * np.sin(t / 500.0), seed=2)
    windows = windows_of(rows)
    missing = np.zeros(windows.shape, dtype=bool)
    missing[: 2 * len(windows) // 3, :, 2] = True  # silent for the first two thirds
    data = TrainingData(CHANNELS, rows, t * 60.0, FitConfig(), windows, missing)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        (fitted,) = TwinReadingTrainer.fit(data, {})
    assert all(np.isfinite(fitted[k]).all() for k in ("offset", "gain", "noise_abs", "center"))
    assert 0.04 < fitted["noise_rel"][2] < 0.25  # learnt from the third it was read in
