"""kind `variability`: each twin sensor's variability against its twins' (stuck or noisy).

Per member of a twin group: the log of its standard deviation over the window minus the mean
of its twins' log deviations; that difference's distance from its training centre, in its
training spread, is the member's score, the largest over members the scorer's. A stuck sensor
(its variance collapses while its twins move) and a noisy one (its variance explodes) stand
out; a windy hour that makes every twin noisier does not. `floor` (scaled units, from the
training rows) keeps a perfectly flat window finite. Per channel; stateless.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np
from pydantic import Field

from edge.scorers.base import FloatArray, ManifestView
from edge.scorers.spec import ScorerSpec
from edge.scorers.twin import TwinGroupScorer, TwinGroupsSpec


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

    def member_values(self, windows: FloatArray) -> FloatArray:
        """Each member's log deviation over the window minus its twins' mean one."""
        log_sd = np.log(np.maximum(windows.std(axis=1), self.floor))
        return np.asarray(log_sd @ self.matrix)
