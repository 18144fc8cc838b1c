"""Per-device state of a bundle's scorers and their steps.

`ScoringEngine` is shared by the devices of a gateway; each device holds one `ScoreState`
and passes it with every batch of its windows, in stream order. It is the parts each scorer
asks for (`Scorer.new_state()`: a running range, long shapes, ...) and the parts of the steps
its spec declares (`edge.scorers.steps`: lag-vector memories, likelihood histories), each
under its snapshot prefix (`range`, `long_shape.<name>`, `memory.<name>`,
`likelihood.<name>`), so a state file written before the scorer registry still restores.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy.typing as npt

from edge.bundle import Manifest
from edge.memory import TaughtScores
from edge.scorers.base import FloatArray, Scorer, ScoringBatch, Stateful
from edge.scorers.registry import build
from edge.scorers.steps import new_step_state, remembered, stepped


def depends_on(manifest: Manifest) -> str:
    """What a device's state is valid for, as a digest: the same raw scores (scorers and their
    steps, model files) from the same scaled rows (preprocessing, training range). A state
    carries over a reload, or a restart through `edge.state_store`, only when this matches."""
    parts = {"scorers": [s.model_dump() for s in manifest.scorers], "files": manifest.files,
             "preprocess": manifest.preprocess.model_dump(),
             "range": manifest.range.model_dump() if manifest.range else None}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def scorers_of(manifest: Manifest) -> list[Scorer]:
    """The device-side scorers of a bundle, in manifest order."""
    return [build(spec, manifest) for spec in manifest.scorers]


class ScoreState:
    """The stateful parts of one device's scorers, by scorer name."""

    def __init__(self, manifest: Manifest, scorers: list[Scorer] | None = None) -> None:
        self._manifest = manifest
        self._scorers = scorers if scorers is not None else scorers_of(manifest)
        self.parts: dict[str, dict[str, Stateful]] = {
            s.name: {**s.new_state(), **new_step_state(s.spec, s.memory_role == "step")}
            for s in self._scorers}

    def __bool__(self) -> bool:
        return any(self.parts.values())

    def of(self, scorer: str) -> dict[str, Stateful]:
        return self.parts[scorer]

    def score(self, batch: ScoringBatch) -> tuple[dict[str, FloatArray], dict[str, FloatArray]]:
        """Each scorer's raw scores of the batch (this device's next windows) and the values
        its threshold applies to (after its steps)."""
        raw: dict[str, FloatArray] = {}
        out: dict[str, FloatArray] = {}
        for scorer in self._scorers:
            parts = self.parts[scorer.name]
            raw[scorer.name] = score = scorer.score(batch, parts)
            lowered = remembered(scorer.spec, score, batch, parts, scorer.channels)
            out[scorer.name] = stepped(scorer.spec, lowered, parts)
        return raw, out

    def _flat(self) -> dict[str, Stateful]:
        return {key: part for parts in self.parts.values() for key, part in parts.items()}

    def snapshot(self) -> dict[str, npt.NDArray[Any]]:
        """Every part's state as named arrays (`edge.state_store` writes them to disk)."""
        return {f"{name}.{key}": value for name, part in self._flat().items()
                for key, value in part.snapshot().items()}

    def restore(self, saved: dict[str, npt.NDArray[Any]]) -> None:
        """Take back a `snapshot` of a state of the same scorers. ValueError when it does not
        fit, and the state is left as it was (nothing half-restored)."""
        grouped: dict[str, dict[str, npt.NDArray[Any]]] = {}
        for key, value in saved.items():
            name, _, field = key.rpartition(".")
            grouped.setdefault(name, {})[field] = value
        fresh = ScoreState(self._manifest, self._scorers)
        parts = fresh._flat()
        # a state saved before the per-sensor kinds kept taught scores has none: they start empty
        absent = {name for name, part in parts.items()
                  if name not in grouped and isinstance(part, TaughtScores)}
        try:
            if set(grouped) != set(parts) - absent:
                raise ValueError(f"parts {sorted(grouped)}, expected {sorted(parts)}")
            for name, part in parts.items():
                if name not in absent:
                    part.restore(grouped[name])
        except (KeyError, ValueError) as exc:
            raise ValueError(f"the saved state does not fit this bundle: {exc}") from exc
        self.parts = fresh.parts
