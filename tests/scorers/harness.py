"""Drive a device's scorers without models: shared inputs given as arrays."""

from __future__ import annotations

import numpy as np

from edge.score_state import ScoreState
from edge.scorers.base import FloatArray, ScoringBatch


class ArrayInputs:
    """`SharedInputs` from arrays; what is not given is zeros (a model that sees nothing)."""

    def __init__(self, windows: FloatArray, *, lag_vectors: FloatArray | None = None,
                 distances: dict[str, FloatArray] | None = None,
                 lstm_errors: FloatArray | None = None,
                 iqr_excess: FloatArray | None = None) -> None:
        b, _, c = windows.shape
        self._lstm = lstm_errors if lstm_errors is not None else np.zeros((b, c))
        self._vectors = lag_vectors if lag_vectors is not None else windows[:, -1, :]
        self._distances = distances or {}
        self._iqr = iqr_excess if iqr_excess is not None else np.zeros((b, c))
        self.b = b

    def lstm_errors(self) -> FloatArray:
        return self._lstm

    def lag_vectors(self) -> FloatArray:
        return self._vectors

    def distances(self) -> dict[str, FloatArray]:
        return {**{k: np.zeros(self.b) for k in ("euclidean", "mahalanobis")},
                **self._distances}

    def iqr_excess(self) -> FloatArray:
        return self._iqr


def rows_batch(rows: FloatArray, timestamps: FloatArray | None = None,
               **inputs: object) -> ScoringBatch:
    """A batch of one-row windows holding `rows` (B, C)."""
    windows = np.asarray(rows, dtype=np.float64)[:, None, :]
    times = timestamps if timestamps is not None else np.full(len(windows), np.nan)
    return ScoringBatch(windows, np.asarray(times, dtype=np.float64),
                        ArrayInputs(windows, **inputs))  # type: ignore[arg-type]


def stepped(state: ScoreState, batch: ScoringBatch) -> dict[str, FloatArray]:
    """The value each scorer's threshold applies to, this batch being the device's next."""
    return state.score(batch)[1]
