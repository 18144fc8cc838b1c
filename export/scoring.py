"""Score windows of a file with the device's `ScoringEngine` and measure them against labels."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from edge.engine import ScoringEngine
from export.metrics import point_metrics
from export.prepare import windows_at

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
ENSEMBLE = "ensemble"


@dataclass(frozen=True)
class WindowScores:
    """Scores of the windows ending at rows `ends`."""

    ends: IntArray
    raw: dict[str, FloatArray]
    normalized: dict[str, FloatArray]
    ensemble: FloatArray
    channel_error: FloatArray

    def decisions(self) -> dict[str, BoolArray]:
        """Each scorer and the ensemble over threshold (normalised score >= 1)."""
        out = {name: values >= 1.0 for name, values in self.normalized.items()}
        out[ENSEMBLE] = self.ensemble >= 1.0
        return out


def score_file(
    engine: ScoringEngine, scaled: FloatArray, ends: IntArray, batch: int = 1024,
    timestamps: FloatArray | None = None, missing: BoolArray | None = None,
) -> WindowScores:
    """Run the engine over the windows of `scaled` (rows already filled and scaled), as one
    device would in that order (one likelihood state across the batches). `timestamps` (one
    per row of `scaled`, epoch seconds) reach the scorers that need the time of day;
    `missing` (n, C) marks the values that were filled, not read, as the device marks them."""
    length = engine.manifest.window.length
    state = engine.new_state()
    parts = []
    for start in range(0, len(ends), batch):
        picked = ends[start : start + batch]
        windows = windows_at(scaled, picked, length)
        times = timestamps[picked] if timestamps is not None else None
        gaps = windows_at(missing, picked, length) if missing is not None else None
        parts.append(engine.score_windows(windows, state, times, gaps))
    names = [s.name for s in engine.manifest.scorers]

    def cat(values: list[FloatArray], width: int | None = None) -> FloatArray:
        if values:
            return np.concatenate(values)
        return np.zeros((0, width) if width else 0)

    channels = len(engine.manifest.channels)
    return WindowScores(
        ends=ends,
        raw={n: cat([p.raw[n] for p in parts]) for n in names},
        normalized={n: cat([p.normalized[n] for p in parts]) for n in names},
        ensemble=cat([p.ensemble for p in parts]),
        channel_error=cat([p.channel_error for p in parts], channels),
    )


def labelled_metrics(
    scores: WindowScores, labels: BoolArray, rows: BoolArray | None = None
) -> dict[str, dict[str, float]]:
    """Point metrics per scorer and for the ensemble; a window's label is its last row's.

    `rows` (per file row) restricts the count to windows whose last row it marks.
    """
    keep = np.ones(len(scores.ends), dtype=bool) if rows is None else rows[scores.ends]
    truth = labels[scores.ends][keep]
    return {
        name: point_metrics(truth, decided[keep]).as_dict()
        for name, decided in scores.decisions().items()
    }
