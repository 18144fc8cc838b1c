"""Per-device state of a bundle's stateful scoring steps.

`ScoringEngine` is shared by the devices of a gateway; each device holds one `ScoreState`
and passes it with every batch of its windows, in stream order. For a scorer with a
`memory`, its raw score becomes min(raw, distance to the device's recent lag vectors)
(`edge.memory`); for one with a `likelihood`, the threshold then applies to its likelihood z
(`edge.likelihood`), else to the raw score itself. A `range` scorer's raw score comes from the
device's running range (`edge.running_range`).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from edge.bundle import Manifest
from edge.likelihood import Likelihood
from edge.memory import LagMemory
from edge.running_range import RunningRange

FloatArray = npt.NDArray[np.float64]


class ScoreState:
    """The memories, likelihoods and running range of one device."""

    def __init__(self, manifest: Manifest) -> None:
        self.memories = {s.name: (s.memory.lags, LagMemory(s.memory)) for s in manifest.scorers
                         if s.memory is not None}
        self.steps = {s.name: Likelihood(s.likelihood) for s in manifest.scorers
                      if s.likelihood is not None}
        self.channels = len(manifest.channels)
        ranged = manifest.range is not None and any(s.kind == "range" for s in manifest.scorers)
        self.range = RunningRange(manifest.range) if ranged and manifest.range else None

    def __bool__(self) -> bool:
        return bool(self.steps or self.memories or self.range)

    def range_excess(self, rows: FloatArray) -> FloatArray:
        """The `range` scorer's raw score of the newest rows (B, C), in stream order."""
        if self.range is None:
            raise ValueError("this bundle has no range scorer")
        return self.range.excess(rows)

    def apply(self, raw: dict[str, FloatArray], lag_vectors: FloatArray | None = None
              ) -> dict[str, FloatArray]:
        """The value each scorer's threshold applies to. `lag_vectors` (B, lags * channels) are
        the distance model's inputs, needed by scorers with a memory."""
        out = dict(raw)
        for name, (lags, memory) in self.memories.items():
            if lag_vectors is None:
                raise ValueError(f"scorer {name!r} has a memory: pass the lag vectors")
            tail = lag_vectors[:, lag_vectors.shape[1] - lags * self.channels:]
            out[name] = np.minimum(out[name], memory.distances(tail))
        return {name: self.steps[name].update(v) if name in self.steps else v
                for name, v in out.items()}
