"""kind `twin_reading`: each reading of a twin sensor against what its twins say it should
read, in the sensor's own units, judged against the noise its level allows.

Sensor makers quote a sensor's error as an offset, a gain and a noise that has an absolute
and a relative part; this kind models each member of a twin group that way, from the
training rows: its reading is `offset + gain * (its twins' mean)`, and a reading's departure
from that, once the window's own mean departure is taken off (slow gain wander and drifts are
`twin`'s business), has a spread of `noise_abs + noise_rel * |expected reading|`. The largest
such standardised departure over the window's rows is the member's statistic; its excess
over its training centre, in its training spread, the member's score, the largest over
members the scorer's. A spike of one to three readings or a burst of noise on one sensor
stands out at full height for as long as it is in the window, whatever the level: a reading
5 ug/m3 off its twins is noise at 200 ug/m3 and a fault at 5.

Only values the sensors sent count (`edge.scorers.twin`); a member is judged on the rows
where it and its twins were read, and not at all when fewer than half the window's rows were.
Per channel; its state is only what a person taught as normal (`edge.memory.TaughtScores`).
"""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np
from pydantic import Field, model_validator

from edge.scorers.base import FloatArray, ManifestView, ScoringBatch, Stateful
from edge.scorers.spec import ScorerSpec
from edge.scorers.twin import TwinGroupScorer, TwinGroupsSpec, combine_members, min_read_rows
from edge.units import Units


class TwinReadingScorerSpec(TwinGroupsSpec):
    kind: Literal["twin_reading"]
    offset: list[float] = Field(description="per member: its reading when its twins read 0")
    gain: list[float] = Field(description="per member: its reading per unit of its twins' mean")
    noise_abs: list[float] = Field(description="per member: the level-free part of the "
                                               "noise, in the sensor's units, > 0")
    noise_rel: list[float] = Field(description="per member: the noise per unit of level, >= 0")

    @model_validator(mode="after")
    def _per_member(self) -> TwinReadingScorerSpec:
        members = len(self.center)
        for name in ("offset", "gain", "noise_abs", "noise_rel"):
            if len(getattr(self, name)) != members:
                raise ValueError(f"{name} needs one value per member ({members})")
        if not all(a > 0 for a in self.noise_abs):
            raise ValueError("noise_abs values must be positive")
        if not all(r >= 0 for r in self.noise_rel):
            raise ValueError("noise_rel values must be at least 0")
        return self


def twins_mean_matrix(matrix: FloatArray) -> FloatArray:
    """(C, members) from a twin residual matrix (`twin_matrix`): each member's twins' mean."""
    return np.asarray(np.where(matrix < 0, -matrix, 0.0))


def reading_departures(units: FloatArray, members: np.ndarray, twins: FloatArray,
                       offset: FloatArray, gain: FloatArray
                       ) -> tuple[FloatArray, FloatArray]:
    """(B, rows, C) readings in units -> (departure, expected), each (B, rows, members): the
    reading minus `offset + gain * twins' mean`, and that expected reading (NaN where the
    member or a twin was not read)."""
    b, rows, c = units.shape
    expected = offset + gain * combine_members(units.reshape(b * rows, c), twins)
    own = units.reshape(b * rows, c)[:, members]
    return ((own - expected).reshape(b, rows, -1), expected.reshape(b, rows, -1))


def largest_departure(departure: FloatArray, expected: FloatArray, noise_abs: FloatArray,
                      noise_rel: FloatArray) -> FloatArray:
    """(B, rows, members) -> (B, members): the largest departure from the window's mean
    departure, in the noise the expected level allows (NaN: under half the rows read)."""
    known = np.isfinite(departure)
    count = known.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(known, departure, 0.0).sum(axis=1) / count
        z = np.abs(departure - mean[:, None, :]) / (noise_abs + noise_rel * np.abs(expected))
    largest = np.where(known, z, -np.inf).max(axis=1)
    return np.asarray(np.where(count >= min_read_rows(departure.shape[1]), largest, np.nan))


class TwinReadingScorer(TwinGroupScorer):
    kind: ClassVar[str] = "twin_reading"
    spec_type = TwinReadingScorerSpec

    def __init__(self, spec: ScorerSpec, manifest: ManifestView) -> None:
        super().__init__(spec, manifest)
        assert isinstance(spec, TwinReadingScorerSpec)
        self.units = Units(manifest.preprocess.channels)
        self.twins = twins_mean_matrix(self.matrix)
        self.offset, self.gain = np.array(spec.offset), np.array(spec.gain)
        self.noise_abs, self.noise_rel = np.array(spec.noise_abs), np.array(spec.noise_rel)

    def member_values(self, readings: FloatArray) -> FloatArray:
        departure, expected = reading_departures(self.units(readings), self.members,
                                                 self.twins, self.offset, self.gain)
        return largest_departure(departure, expected, self.noise_abs, self.noise_rel)

    def score(self, batch: ScoringBatch, state: dict[str, Stateful]) -> FloatArray:
        # one-sided: a window quieter than usual is no fault of this kind (stuck is
        # `variability`'s)
        excess = np.maximum(self.member_values(batch.readings()) - self.center, 0.0)
        return self.report(batch, self.taught_scores(excess / self.spread, state))
