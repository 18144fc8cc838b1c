"""kind `twin_spike`: each twin sensor's largest single-row departure from its twins.

Per member of a twin group and per row of the window that it and its twins were all read
in: its value minus its twins' mean, that residual's distance from its training centre in
its training spread (both over single rows); the largest over the window's rows is the
member's score, the largest over members the scorer's. A spike of one to three readings is
diluted in `twin`'s window mean and gone from a smoothed score after a window or two; here
it stays at full height for as long as it is in the window, so the smoothed ensemble sees it.
Per channel; stateless.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np

from edge.scorers.base import FloatArray, ScoringBatch, Stateful
from edge.scorers.twin import TwinGroupScorer, TwinGroupsSpec, combine_members


class TwinSpikeScorerSpec(TwinGroupsSpec):
    kind: Literal["twin_spike"]


def row_residuals(readings: FloatArray, matrix: FloatArray) -> FloatArray:
    """(B, rows, C) -> (B, rows, members): each row's residual against the twins (NaN where
    the member or a twin was not read)."""
    b, rows, c = readings.shape
    return combine_members(readings.reshape(b * rows, c), matrix).reshape(b, rows, -1)


class TwinSpikeScorer(TwinGroupScorer):
    kind: ClassVar[str] = "twin_spike"
    spec_type = TwinSpikeScorerSpec

    def new_state(self) -> dict[str, Stateful]:
        return {}  # stateless: no taught scores (it is no default member)

    def score(self, batch: ScoringBatch, state: dict[str, Stateful]) -> FloatArray:
        residuals = row_residuals(batch.readings(), self.matrix)
        z = np.abs(residuals - self.center) / self.spread
        return self.report(batch, np.fmax.reduce(z, axis=1))  # NaN only where no row was read


