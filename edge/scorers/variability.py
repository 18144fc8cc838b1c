"""kind `variability`: each twin sensor's variability against its twins' (stuck or noisy).

Per member of a twin group: the log of its standard deviation over the window minus the mean of
its twins' log deviations; that difference's distance from its training centre, in its training
spread, is the member's score, the largest over members the scorer's. A stuck sensor (its
variance collapses while its twins move) and a noisy one (its variance explodes) stand out; a
windy hour that makes every twin noisier does not. `floor` (scaled units, from the training
rows) keeps a perfectly flat window finite. Per channel; its state is only what was taught as
normal (`edge.memory.TaughtScores`). Forward-filled values are left out (a dropout's held value
is flat, not stuck): a member is judged on its read rows when at least half the window was read
(`edge.scorers.twin`).
"""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np
from pydantic import Field

from edge.scorers.base import FloatArray, ManifestView
from edge.scorers.spec import ScorerSpec
from edge.scorers.twin import (
    TwinGroupScorer,
    TwinGroupsSpec,
    combine_members,
    min_read_rows,
    read_sd,
)


class VariabilityScorerSpec(TwinGroupsSpec):
    kind: Literal["variability"]
    floor: float = Field(gt=0, description="standard deviations are floored at this")


class VariabilityScorer(TwinGroupScorer):
    kind: ClassVar[str] = "variability"
    spec_type = VariabilityScorerSpec

    def __init__(self, spec: ScorerSpec, manifest: ManifestView) -> None:
        super().__init__(spec, manifest)
        assert isinstance(spec, VariabilityScorerSpec)
        self.floor = spec.floor

    def member_values(self, readings: FloatArray) -> FloatArray:
        """Each member's log deviation over the window minus its twins' mean one."""
        sd = read_sd(readings, min_read_rows(readings.shape[1]))
        return combine_members(np.log(np.maximum(sd, self.floor)), self.matrix)
