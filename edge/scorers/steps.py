"""The steps between a scorer's raw score and its threshold, declared in its spec.

- memory (`MemorySpec`, kinds whose `memory_role` is "step"): raw = min(raw, distance of the
  window's lag vector to the device's own recent ones) (`edge.memory`);
- likelihood (`LikelihoodSpec`): the threshold applies to the likelihood z of the raw score
  against the device's history of it (`edge.likelihood`).

A raw score of NaN means "not scored yet": the likelihood skips it and the value is 0.
"""

from __future__ import annotations

import numpy as np

from edge.likelihood import Likelihood
from edge.memory import LagMemory
from edge.scorers.base import FloatArray, ScoringBatch, Stateful
from edge.scorers.spec import ScorerSpec


def new_step_state(spec: ScorerSpec, memory_step: bool) -> dict[str, Stateful]:
    """The device's step parts of scorer `spec`, by snapshot prefix."""
    parts: dict[str, Stateful] = {}
    if spec.memory is not None and memory_step:
        parts[f"memory.{spec.name}"] = LagMemory(spec.memory)
    if spec.likelihood is not None:
        parts[f"likelihood.{spec.name}"] = Likelihood(spec.likelihood)
    return parts


def remembered(spec: ScorerSpec, raw: FloatArray, batch: ScoringBatch,
               parts: dict[str, Stateful], channels: int) -> FloatArray:
    """The memory step: `raw` lowered to the distance to the device's recent lag vectors."""
    memory = parts.get(f"memory.{spec.name}")
    if memory is None:
        return raw
    assert isinstance(memory, LagMemory) and spec.memory is not None
    vectors = batch.shared.lag_vectors()
    tail = vectors[:, vectors.shape[1] - spec.memory.lags * channels:]
    return np.minimum(raw, memory.distances(tail))


def stepped(spec: ScorerSpec, raw: FloatArray, parts: dict[str, Stateful]) -> FloatArray:
    """The likelihood step (if any), NaN meaning not scored: skipped, and 0."""
    scored = ~np.isnan(raw)
    step = parts.get(f"likelihood.{spec.name}")
    if step is None:
        return raw if scored.all() else np.where(scored, raw, 0.0)
    assert isinstance(step, Likelihood)
    if scored.all():
        return step.update(raw)
    out = np.zeros(raw.shape)
    out[scored] = step.update(raw[scored])
    return out
