"""kind `twin_long`: each twin sensor's residual against its twins over the last `rows`
readings, longer than a window (a slope change, a slow drift or a shift that `twin`'s window
mean sees through its reading noise only at a larger size).

Per member: its newest reading minus its twins' mean (read values only, as `twin`), averaged
over the device's last `rows` scored windows (a per-device history), its distance from its
training centre in its training spread; the largest over members is the scorer's score. Not
scored (NaN) until half the history holds read residuals. Per channel; stateful: the history
is saved with the device's scoring state.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
import numpy.typing as npt
from pydantic import Field

from edge.scorers.base import FloatArray, ManifestView, ScoringBatch, Stateful
from edge.scorers.spec import ScorerSpec
from edge.scorers.twin import TwinGroupScorer, TwinGroupsSpec, combine_members


class TwinLongScorerSpec(TwinGroupsSpec):
    kind: Literal["twin_long"]
    rows: int = Field(ge=2, le=100_000, description="scored windows the residual is averaged over")


class ResidualHistory:
    """The newest-row residuals of one device's last `rows` - 1 windows, per member."""

    def __init__(self, rows: int, members: int) -> None:
        self.rows = rows
        self.recent = np.full((rows - 1, members), np.nan)

    def snapshot(self) -> dict[str, npt.NDArray[Any]]:
        return {"recent": self.recent.copy()}

    def restore(self, saved: dict[str, npt.NDArray[Any]]) -> None:
        recent = np.asarray(saved["recent"], dtype=np.float64)
        if recent.shape != self.recent.shape:
            raise ValueError(f"residual history of shape {recent.shape}, expected "
                             f"{self.recent.shape}")
        self.recent = recent.copy()

    def means(self, residuals: FloatArray, min_rows: int) -> FloatArray:
        """(B, members) residuals in stream order -> (B, members) each one's mean with the
        `rows` - 1 before it (NaN: fewer than `min_rows` known); the history then moves on.
        Every mean sums the same values in the same order whatever the batch split."""
        stacked = np.vstack([self.recent, residuals])
        spans = np.ascontiguousarray(
            np.lib.stride_tricks.sliding_window_view(stacked, self.rows, axis=0))  # (B, M, rows)
        known = np.isfinite(spans)
        count = known.sum(axis=2)
        total = np.where(known, spans, 0.0).sum(axis=2)
        self.recent = stacked[len(stacked) - (self.rows - 1):].copy()
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.asarray(np.where(count >= min_rows, total / count, np.nan))


def min_history(rows: int) -> int:
    return max(1, rows // 2)


class TwinLongScorer(TwinGroupScorer):
    kind: ClassVar[str] = "twin_long"
    spec_type = TwinLongScorerSpec

    def __init__(self, spec: ScorerSpec, manifest: ManifestView) -> None:
        super().__init__(spec, manifest)
        assert isinstance(spec, TwinLongScorerSpec)
        self.rows = spec.rows

    def new_state(self) -> dict[str, Stateful]:
        return {f"twin_long.{self.name}": ResidualHistory(self.rows, len(self.members))}

    def score(self, batch: ScoringBatch, state: dict[str, Stateful]) -> FloatArray:
        history = state[f"twin_long.{self.name}"]
        assert isinstance(history, ResidualHistory)
        newest = combine_members(batch.readings()[:, -1, :], self.matrix)
        z = np.abs(history.means(newest, min_history(self.rows)) - self.center) / self.spread
        largest = self.report(batch, np.nan_to_num(z, nan=0.0))
        return np.asarray(np.where(np.isnan(z).all(axis=1), np.nan, largest))  # not scored yet
