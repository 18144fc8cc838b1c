"""Per-device state of a bundle's stateful scoring steps.

`ScoringEngine` is shared by the devices of a gateway; each device holds one `ScoreState`
and passes it with every batch of its windows, in stream order. For a scorer with a
`memory`, its raw score becomes min(raw, distance to the device's recent lag vectors)
(`edge.memory`); for one with a `likelihood`, the threshold then applies to its likelihood z
(`edge.likelihood`), else to the raw score itself. A `range` scorer's raw score comes from the
device's running range (`edge.running_range`), a `long_shape` scorer's from its long-shape
memory (`edge.long_shape`). A raw score of NaN means "not scored yet" (a long shape before the
device has seen enough rows): the likelihood step skips it and the scorer's value is 0.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np
import numpy.typing as npt

from edge.bundle import Manifest
from edge.likelihood import Likelihood
from edge.long_shape import LongShape
from edge.memory import LagMemory
from edge.running_range import RunningRange

FloatArray = npt.NDArray[np.float64]


def depends_on(manifest: Manifest) -> str:
    """What a device's state is valid for, as a digest: the same raw scores (scorers and their
    steps, model files) from the same scaled rows (preprocessing, training range). A state
    carries over a reload, or a restart through `edge.state_store`, only when this matches."""
    parts = {"scorers": [s.model_dump() for s in manifest.scorers], "files": manifest.files,
             "preprocess": manifest.preprocess.model_dump(),
             "range": manifest.range.model_dump() if manifest.range else None}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


class ScoreState:
    """The memories, likelihoods and running range of one device."""

    def __init__(self, manifest: Manifest) -> None:
        self.memories = {s.name: (s.memory.lags, LagMemory(s.memory)) for s in manifest.scorers
                         if s.memory is not None and s.kind == "distance"}
        self.steps = {s.name: Likelihood(s.likelihood) for s in manifest.scorers
                      if s.likelihood is not None}
        self._manifest = manifest
        self.channels = len(manifest.channels)
        ranged = any(s.kind == "range" for s in manifest.scorers)
        self.range = (RunningRange(manifest.range)
                      if ranged and manifest.range is not None else None)
        self.long_shapes = {
            s.name: LongShape(s.long_shape, s.memory, self.channels) for s in manifest.scorers
            if s.long_shape is not None and s.memory is not None}

    def __bool__(self) -> bool:
        return bool(self.steps or self.memories or self.range or self.long_shapes)

    def _parts(self) -> list[tuple[str, Any]]:
        parts: list[tuple[str, Any]] = [(f"memory.{n}", m) for n, (_, m) in self.memories.items()]
        parts += [(f"likelihood.{n}", step) for n, step in self.steps.items()]
        parts += [(f"long_shape.{n}", shape) for n, shape in self.long_shapes.items()]
        return parts + ([("range", self.range)] if self.range is not None else [])

    def snapshot(self) -> dict[str, npt.NDArray[Any]]:
        """Every part's state as named arrays (`edge.state_store` writes them to disk)."""
        return {f"{name}.{key}": value for name, part in self._parts()
                for key, value in part.snapshot().items()}

    def restore(self, saved: dict[str, npt.NDArray[Any]]) -> None:
        """Take back a `snapshot` of a state of the same scorers. ValueError when it does not
        fit, and the state is left as it was (nothing half-restored)."""
        grouped: dict[str, dict[str, npt.NDArray[Any]]] = {}
        for key, value in saved.items():
            name, _, field = key.rpartition(".")
            grouped.setdefault(name, {})[field] = value
        fresh = ScoreState(self._manifest)
        parts = fresh._parts()
        try:
            if set(grouped) != {name for name, _ in parts}:
                raise ValueError(f"parts {sorted(grouped)}, expected {sorted(n for n, _ in parts)}")
            for name, part in parts:
                part.restore(grouped[name])
        except (KeyError, ValueError) as exc:
            raise ValueError(f"the saved state does not fit this bundle: {exc}") from exc
        self.memories, self.steps, self.range = fresh.memories, fresh.steps, fresh.range
        self.long_shapes = fresh.long_shapes

    def range_excess(self, rows: FloatArray) -> FloatArray:
        """The `range` scorer's raw score of the newest rows (B, C), in stream order."""
        if self.range is None:
            raise ValueError("this bundle has no range scorer")
        return self.range.excess(rows)

    def long_shape_distance(self, name: str, rows: FloatArray) -> FloatArray:
        """Scorer `name`'s raw score of the newest rows (B, C), in stream order (NaN: not
        scored yet)."""
        return self.long_shapes[name].scores(rows)

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
        return {name: self._step(name, v) for name, v in out.items()}

    def _step(self, name: str, raw: FloatArray) -> FloatArray:
        scored = ~np.isnan(raw)
        if name not in self.steps:
            return raw if scored.all() else np.where(scored, raw, 0.0)
        if scored.all():
            return self.steps[name].update(raw)
        out = np.zeros(raw.shape)
        out[scored] = self.steps[name].update(raw[scored])
        return out
