"""kind `channel_kmeans`: each channel's recent shape against the shapes it had in training,
each channel in its own spread; the largest over channels.

Per judged channel, the last `rows` scaled values of the window are a subsequence; its
Euclidean distance to the nearest of that channel's KMeans centroids (fitted on the training
windows' subsequences of that channel alone) is divided by the channel's `spread`, the largest
such distance on the held-out normal windows. One channel is thus judged by its own normal
shapes and its own calibration, so a quiet channel's unusual stretch counts as much as a busy
one's, and a channel with many command steps (0/1) does not drown the others as it does in a
joint distance over all channels. A `centred` channel (slow: its level wanders, a temperature)
is judged by its shape alone, the subsequence's mean taken off. Per channel
(`channel_scores`), so the alert names the channel.

With a `memory` (its `lags` are the `rows`), each channel also remembers the device's own last
subsequences (`edge.memory.LagMemory`, one per channel) and a distance beyond the channel's
spread becomes the smaller of the two: a shape the device keeps seeing after training (a plant
settled into a new state after a repair, a command sequence used only later) stops counting as
new once seen about k times, while a one-off shape keeps its distance. Shapes a person taught
as normal (`feedback`, `edge.feedback`) excuse themselves at any size from 1/`taught_scale` to
`taught_scale` times theirs (`edge.memory.nearest_scaled_distances`): a daily event recurs at
another height each day, and a shape distance in a quiet channel's spread would take each new
height for a new shape. Without a memory the kind is stateless.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np
from pydantic import Field, model_validator

from edge.memory import LagMemory, nearest_scaled_distances
from edge.scorers.base import FloatArray, ManifestView, Scorer, ScoringBatch, Stateful
from edge.scorers.spec import ScorerSpec

# Two noisy copies of one shape lie sqrt(2) times as far apart as one copy from the shape
# itself (a centroid, the mean of many): a taught subsequence is one noisy copy, so its
# distances are scaled to the centroids'. Not the rolling memory's: there the scaling excused
# faults that recur within their own span (SKAB F1 even 0.855 -> 0.844, odd 0.867 -> 0.860;
# MSL VUS-PR 0.420 -> 0.414 and 0.374 -> 0.359), and its k = 2 asks a shape to recur anyway.
NOISY_PAIR = 1.0 / np.sqrt(2.0)


class ChannelKmeansScorerSpec(ScorerSpec):
    kind: Literal["channel_kmeans"]
    channels: list[str] = Field(min_length=1, description="the channels judged, each once")
    rows: int = Field(ge=1, description="the window's last rows: one subsequence a channel")
    centroids: list[list[list[float]]] = Field(
        min_length=1, description="per judged channel: its centroids, each `rows` values")
    spread: list[float] = Field(
        min_length=1, description="per judged channel: its held-out distance scale, > 0")
    taught_scale: float = Field(
        2.0, ge=1.0, description="a taught shape excuses itself from 1/this to this many "
        "times its size (1: only as taught)")
    centred: list[bool] = Field(
        default_factory=list, description="per judged channel: judged by its shape alone (the "
        "subsequence's mean taken off: a slow channel whose level wanders); [] none")

    @model_validator(mode="after")
    def _shapes(self) -> ChannelKmeansScorerSpec:
        n = len(self.channels)
        if len(set(self.channels)) != n:
            raise ValueError("channels must each be named once")
        if len(self.centroids) != n or len(self.spread) != n:
            raise ValueError(f"centroids and spread need one entry per channel ({n})")
        if any(len(c) < 1 or any(len(v) != self.rows for v in c) for c in self.centroids):
            raise ValueError(f"each channel needs one or more centroids of {self.rows} values")
        if not all(s > 0 for s in self.spread):
            raise ValueError("spread values must be positive")
        if self.centred and len(self.centred) != n:
            raise ValueError(f"centred needs one entry per channel ({n}) or none")
        return self


class ChannelKmeansScorer(Scorer):
    kind: ClassVar[str] = "channel_kmeans"
    spec_type = ChannelKmeansScorerSpec
    memory_role = "own"

    def __init__(self, spec: ScorerSpec, manifest: ManifestView) -> None:
        super().__init__(spec, manifest)
        assert isinstance(spec, ChannelKmeansScorerSpec)
        self.index = np.array([manifest.channels.index(c) for c in spec.channels], dtype=int)
        self.rows = spec.rows
        self.centroids = [np.asarray(c, dtype=np.float64) for c in spec.centroids]
        self.spread = np.asarray(spec.spread, dtype=np.float64)
        self.centred = list(spec.centred) or [False] * len(spec.channels)
        self.taught_scale = spec.taught_scale

    @classmethod
    def check(cls, spec: ScorerSpec, manifest: ManifestView) -> None:
        assert isinstance(spec, ChannelKmeansScorerSpec)
        cls.check_channels(spec.name, spec.channels, manifest)
        length = manifest.window.length
        if spec.rows > length:
            raise ValueError(f"scorer {spec.name!r}: rows {spec.rows} exceed the window's "
                             f"{length}")
        if spec.memory is not None and spec.memory.lags != spec.rows:
            raise ValueError(f"scorer {spec.name!r}: memory.lags {spec.memory.lags} must be "
                             f"the rows of a subsequence, {spec.rows}")

    def _memory_key(self, j: int) -> str:
        return f"memory.{self.name}.{j}"

    def new_state(self) -> dict[str, Stateful]:
        if self.spec.memory is None:
            return {}
        return {self._memory_key(j): LagMemory(self.spec.memory) for j in range(self.index.size)}

    def channel_scores(self, windows: FloatArray,
                       state: dict[str, Stateful] | None = None) -> FloatArray:
        """(B, judged channels) each channel's nearest-centroid distance (or, with a memory in
        `state`, the distance to its k-th nearest recent subsequence if smaller) in its
        spreads. The memories take in the batch's subsequences."""
        state = state or {}
        recent = windows[:, -self.rows:, :]
        out = np.empty((windows.shape[0], self.index.size))
        for j, (c, cent) in enumerate(zip(self.index, self.centroids, strict=True)):
            x = recent[:, :, c]  # (B, rows)
            if self.centred[j]:
                x = x - x.mean(axis=1, keepdims=True)
            d2 = (x * x).sum(axis=1)[:, None] - 2.0 * x @ cent.T + (cent * cent).sum(axis=1)
            distance = np.sqrt(np.maximum(d2.min(axis=1), 0.0))
            memory = state.get(self._memory_key(j))
            if memory is not None:
                assert isinstance(memory, LagMemory)
                # only a subsequence beyond the channel's spread is looked up: below it the
                # memory could lower no score that matters, and the search is most of the cost
                beyond = distance > self.spread[j]
                distance = np.minimum(distance, memory.distances(x, beyond))
                if memory.taught.size and beyond.any():
                    distance[beyond] = np.minimum(distance[beyond], NOISY_PAIR * (
                        nearest_scaled_distances(x[beyond], memory.taught, self.taught_scale)))
            out[:, j] = distance / self.spread[j]
        return out

    def score(self, batch: ScoringBatch, state: dict[str, Stateful]) -> FloatArray:
        per = self.channel_scores(batch.windows, state)
        self.leave_channel_scores(batch, self.index, per)
        return np.asarray(per.max(axis=1))
