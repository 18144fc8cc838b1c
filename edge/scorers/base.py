"""The scorer contract: what a kind provides, what it is given.

A scorer kind is one module in this package holding a spec (a `ScorerSpec` subclass whose
`kind` is a `Literal`) and a `Scorer` subclass naming it in `spec_type`; the registry
(`edge.scorers.registry`) finds it by discovery. The engine builds one `Scorer` per scorer of
a bundle (shared by every device of a gateway) and, per batch of windows, calls
`score(batch, state)` with the device's own state parts (`new_state()`), windows in stream
order. A raw score is higher = more anomalous, one per window; NaN means "not scored yet".

Likelihood and memory are steps between the raw score and the threshold that any kind may
declare (`edge.scorers.steps`); a kind says what a memory means to it by `memory_role`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import numpy as np
import numpy.typing as npt

from edge.scorers.spec import IqrSpec, RangeSpec, ScorerSpec

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]


class Stateful(Protocol):
    """A per-device part that outlives a batch and is saved with the scoring state."""

    def snapshot(self) -> dict[str, npt.NDArray[Any]]: ...

    def restore(self, saved: dict[str, npt.NDArray[Any]]) -> None: ...


class ModelSpec(Protocol):
    @property
    def model(self) -> str: ...


class DistanceView(Protocol):
    @property
    def model(self) -> str: ...

    @property
    def lags(self) -> int: ...


class ManifestView(Protocol):
    """What scorers may read of the manifest (edge.bundle.Manifest has it all)."""

    @property
    def channels(self) -> list[str]: ...

    @property
    def window(self) -> Any: ...

    @property
    def models(self) -> dict[str, Any]: ...

    @property
    def lstm_ae(self) -> ModelSpec | None: ...

    @property
    def distance(self) -> DistanceView | None: ...

    @property
    def iqr(self) -> IqrSpec: ...

    @property
    def range(self) -> RangeSpec | None: ...

    @property
    def preprocess(self) -> Any: ...  # edge.bundle.Preprocess: its `channels` scale each one


class SharedInputs(Protocol):
    """Inputs several scorers use, computed once per batch and only when asked for."""

    def lstm_errors(self) -> FloatArray:
        """(B, C) per-channel reconstruction error of the TFLite autoencoder."""
        ...

    def lag_vectors(self) -> FloatArray:
        """(B, lags * C) the distance model's input rows."""
        ...

    def distances(self) -> dict[str, FloatArray]:
        """The ONNX distance model's outputs, (B,) each."""
        ...

    def iqr_excess(self) -> FloatArray:
        """(B, C) distance beyond the Tukey fences, in fence units."""
        ...


@dataclass
class ScoringBatch:
    """B windows of one device, in stream order, and what scorers share about them.

    `windows` (B, length, C) hold scaled, filled, unclipped rows; `timestamps` (B,) are the
    epoch seconds of each window's newest row (NaN where unknown)."""

    windows: FloatArray
    timestamps: FloatArray
    shared: SharedInputs
    # (B, length, C) True where the device forward-filled a value the sensor did not send;
    # None when nothing is known (every value counts as read)
    missing: BoolArray | None = None
    # per-channel scorers leave their (B, C) channel scores here, in their raw units: the
    # alert's attribution follows them when such a scorer drives the ensemble
    channel_scores: dict[str, FloatArray] = field(default_factory=dict)

    def readings(self) -> FloatArray:
        """`windows` with NaN where a value was filled rather than read: what a scorer that
        judges a sensor by its own readings (a filled run looks stuck) should use."""
        if self.missing is None or not self.missing.any():
            return self.windows
        return np.where(self.missing, np.nan, self.windows)

    @property
    def newest(self) -> FloatArray:
        """(B, C) the newest row of each window."""
        return np.asarray(self.windows[:, -1, :])

    def __len__(self) -> int:
        return int(self.windows.shape[0])


@dataclass
class Lazy:
    """A value computed on first use, then kept (for `SharedInputs` implementations)."""

    compute: Callable[[], Any]
    _value: Any = field(default=None, init=False)
    _done: bool = field(default=False, init=False)

    def get(self) -> Any:
        if not self._done:
            self._value, self._done = self.compute(), True
        return self._value

    @property
    def done(self) -> bool:
        return self._done


class Scorer:
    """One scorer of a bundle; subclasses set `spec_type` (whose `kind` is a Literal)."""

    kind: ClassVar[str]  # the `kind` Literal of `spec_type`
    spec_type: ClassVar[type[ScorerSpec]]
    # what a `memory` in its spec means: "none" (not allowed), "step" (the lag-vector memory
    # step lowers its raw score, `edge.scorers.steps`), "own" (the kind's score uses it)
    memory_role: ClassVar[str] = "none"
    # what an alert this scorer drives is about: "process" (what the sensors watch) or
    # "sensor" (one sensor departs from its twins or its own normal)
    trouble: ClassVar[str] = "process"

    def __init__(self, spec: ScorerSpec, manifest: ManifestView) -> None:
        self.spec = spec
        self.name = spec.name
        self.channels = len(manifest.channels)

    @classmethod
    def check(cls, spec: ScorerSpec, manifest: ManifestView) -> None:
        """Raise ValueError when `spec` does not fit the rest of `manifest`."""

    @staticmethod
    def check_channels(name: str, channels: Sequence[str], manifest: ManifestView) -> None:
        """Raise ValueError naming the channels of scorer `name` that are not the manifest's."""
        strange = [c for c in channels if c not in manifest.channels]
        if strange:
            raise ValueError(f"scorer {name!r}: channels {strange} are not channels")

    def new_state(self) -> dict[str, Stateful]:
        """The device's own parts of this scorer, by snapshot prefix (none: stateless)."""
        return {}

    def score(self, batch: ScoringBatch, state: dict[str, Stateful]) -> FloatArray:
        """(B,) raw scores of the batch's windows; `state` is `new_state()`'s, this device's."""
        raise NotImplementedError

    def leave_channel_scores(self, batch: ScoringBatch, index: npt.NDArray[np.int_] | list[int],
                             per: FloatArray) -> None:
        """Leave (B, len(index)) scores of the channels at `index` as this scorer's
        `channel_scores` (the other channels 0), for the alert's attribution."""
        full = np.zeros((len(batch), self.channels))
        full[:, index] = per
        batch.channel_scores[self.name] = full
