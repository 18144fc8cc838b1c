"""Deciding, separate from scoring: smoothed ensemble score -> alert lifecycle start/update/end.

Per device, for each scored window (`Decider.step`):

1. warm-up: the first `warmup_windows` windows (after start-up and after every restart of the
   window) are ignored: no score, no decision.
2. smoothing: the ensemble score (normalised: >= 1 is over threshold) is averaged over the last
   `smoothing` windows (fewer right after warm-up).
3. trigger: an alert starts after `trigger` consecutive windows with a smoothed score >= 1, and
   not before `cooldown_s` seconds and `cooldown_windows` scored windows have passed since the
   previous alert ended, unless the window's trouble (`sensor` or `process`, the kind of its
   top ensemble member) differs from that alert's: the cooldown keeps one event from alerting
   again, and a stuck sensor after a process alert is another event.
4. hysteresis: an open alert ends after `release` consecutive windows under `release_level`;
   scores between `release_level` and 1 keep it open.
5. updates: while open, an `update` is sent when the severity escalates, and every
   `update_every_s` seconds (0 = never) with the current state.

Severity from the smoothed score s (threshold 1.0): ``s >= critical_level`` (default 2, i.e.
twice the calibrated threshold) -> critical; ``1 <= s < critical_level`` -> warning; ``s < 1``
(an alert held open by hysteresis, or ending) -> info.

Alert ids are stable: ``f"{device}-{int(ts_start)}-{sha1(device|ts_start)[:8]}"``, so replaying
a file gives the same ids every time. Channel attribution uses the engine's per-channel
reconstruction error as shares of the total (0..1, top `top_channels`), with the raw value in
sensor units and, when the value is outside its Tukey fence, the side (`high` / `low`).
"""

from __future__ import annotations

import hashlib
import math
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from edge.bundle import Bundle, Decision
from edge.engine import Scores

FloatArray = npt.NDArray[np.float64]
Severity = Literal["info", "warning", "critical"]
State = Literal["start", "update", "end"]
_RANK = {"info": 0, "warning": 1, "critical": 2}


@dataclass(frozen=True)
class AlertOptions:
    """Decider settings that are not part of the bundle's `Decision`."""

    update_every_s: float = 60.0
    critical_level: float = 2.0
    top_channels: int = 3


@dataclass(frozen=True)
class BundleInfo:
    name: str
    version: str
    sha256: str

    @classmethod
    def from_bundle(cls, bundle: Bundle) -> BundleInfo:
        return cls(bundle.manifest.name, bundle.manifest.version, bundle.manifest_sha256)


@dataclass(frozen=True)
class ChannelContribution:
    name: str
    contribution: float  # share of the window's reconstruction error, 0..1
    value: float  # raw value in sensor units
    fence: Literal["high", "low"] | None  # outside its Tukey fence, and on which side


@dataclass(frozen=True)
class AlertEvent:
    id: str
    device: str
    state: State
    ts_start: float
    ts: float
    score: float
    threshold: float
    severity: Severity
    scorers: dict[str, float]
    channels: list[ChannelContribution]
    peak_score: float
    windows: int
    # for `end`: released | gap | stale | end_of_input | shutdown | reload | restart
    reason: str = ""
    trouble: str = ""  # "sensor" or "process": what the ensemble member driving it watches

    def to_payload(self, *, bundle: BundleInfo, agent_version: str) -> dict[str, Any]:
        """The alert as JSON-ready data (the MQTT alert message and the JSONL line)."""
        payload: dict[str, Any] = {
            "id": self.id,
            "device": self.device,
            "state": self.state,
            "ts_start": iso_time(self.ts_start),
            "ts_start_epoch": self.ts_start,
            "ts": iso_time(self.ts),
            "ts_epoch": self.ts,
            "score": _finite(self.score),
            "threshold": self.threshold,
            "severity": self.severity,
            "peak_score": _finite(self.peak_score),
            "windows": self.windows,
            "scorers": {k: _finite(v) for k, v in self.scorers.items()},
            "channels": [
                {"name": c.name, "contribution": _finite(c.contribution),
                 "value": _finite(c.value), "fence": c.fence}
                for c in self.channels
            ],
            "bundle": {"name": bundle.name, "version": bundle.version, "sha256": bundle.sha256},
            "agent_version": agent_version,
        }
        if self.reason:
            payload["reason"] = self.reason
        if self.trouble:
            payload["trouble"] = self.trouble
        return payload


def iso_time(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat(timespec="milliseconds")


def _finite(value: float) -> float | None:
    return round(float(value), 6) if math.isfinite(value) else None


def alert_id(device: str, ts_start: float) -> str:
    digest = hashlib.sha1(f"{device}|{ts_start!r}".encode()).hexdigest()[:8]
    return f"{device}-{int(ts_start)}-{digest}"


@dataclass(frozen=True)
class Evidence:
    """Row `index` of a scored batch, with the raw (sensor-unit) last row of its window."""

    scores: Scores
    index: int
    values: FloatArray  # (C,) raw filled values
    scaled: FloatArray  # (C,) scaled last row (its sign gives the fence side)

    @property
    def ensemble(self) -> float:
        return float(self.scores.ensemble[self.index])


@dataclass(frozen=True)
class Step:
    """The decision for one window."""

    score: float  # smoothed ensemble score, NaN during warm-up
    is_anomaly: bool
    event: AlertEvent | None
    alert_id: str  # the open (or just ended) alert, "" when none


@dataclass
class _Open:
    id: str
    ts_start: float
    peak: float = 0.0
    windows: int = 0
    last_emit_ts: float = 0.0
    severity: Severity = "warning"
    under: int = 0
    trouble: str = ""  # of the window that last drove it


class Decider:
    """Alert policy for one device (see the module docstring)."""

    def __init__(self, device: str, decision: Decision, channels: list[str],
                 options: AlertOptions | None = None) -> None:
        self.device = device
        self.decision = decision
        self.channels = channels
        self.options = options or AlertOptions()
        self.seen = 0  # windows since start-up or the last interrupt
        self.over = 0  # consecutive windows with a smoothed score >= 1
        self.cooldown_until = -math.inf
        self.windows = 0  # windows stepped since creation (never reset: counts cooldown_windows)
        self.cooldown_until_window = 0
        self.cooled_trouble = ""  # the trouble of the alert whose end set the cooldown
        self.last_ts: float | None = None
        self.alert: _Open | None = None
        self._recent: deque[float] = deque(maxlen=decision.smoothing)

    def resize_smoothing(self, smoothing: int) -> None:
        self._recent = deque(self._recent, maxlen=smoothing)

    @property
    def active(self) -> bool:
        return self.alert is not None

    def severity(self, score: float) -> Severity:
        if score >= self.options.critical_level:
            return "critical"
        return "warning" if score >= 1.0 else "info"

    def step(self, ts: float, evidence: Evidence) -> Step:
        self.last_ts = ts
        self.seen += 1
        self.windows += 1
        if self.seen <= self.decision.warmup_windows:
            return Step(math.nan, False, None, "")  # after start-up or an interrupt: no alert
        self._recent.append(evidence.ensemble)
        score = sum(self._recent) / len(self._recent)
        self.over = self.over + 1 if score >= 1.0 else 0
        if self.alert is None:
            if self.over >= self.decision.trigger and (self._cooled(ts) or self._other(evidence)):
                self.alert = _Open(alert_id(self.device, ts), ts, last_emit_ts=ts)
                return self._emit("start", ts, score, evidence)
            return Step(score, False, None, "")
        return self._continue(ts, score, evidence)

    def _continue(self, ts: float, score: float, evidence: Evidence) -> Step:
        alert = self.alert
        assert alert is not None
        alert.under = alert.under + 1 if score < self.decision.release_level else 0
        if alert.under >= self.decision.release:
            return self._emit("end", ts, score, evidence, reason="released")
        severity = self.severity(score)
        every = self.options.update_every_s
        escalated = _RANK[severity] > _RANK[alert.severity]
        if escalated or (every > 0 and ts - alert.last_emit_ts >= every):
            return self._emit("update", ts, score, evidence)
        alert.windows += 1
        alert.peak = max(alert.peak, score)
        return Step(score, True, None, alert.id)

    def interrupt(self, reason: str) -> AlertEvent | None:
        """The stream broke (a gap, a stale device, shutdown): end any open alert at the last
        scored window and start over (warm-up, smoothing and trigger count reset)."""
        event = None
        if self.alert is not None and self.last_ts is not None:
            event = self._event("end", self.last_ts, math.nan, None, reason)
            self._cool_down(self.last_ts, self.alert.trouble)
        self.alert = None
        self.seen = 0
        self.over = 0
        self._recent.clear()
        return event

    def _cool_down(self, ts: float, trouble: str) -> None:
        self.cooldown_until = ts + self.decision.cooldown_s
        self.cooldown_until_window = self.windows + self.decision.cooldown_windows
        self.cooled_trouble = trouble

    def _cooled(self, ts: float) -> bool:
        return ts >= self.cooldown_until and self.windows >= self.cooldown_until_window

    def _other(self, evidence: Evidence) -> bool:
        """The window's trouble is known and not the one of the alert that set the cooldown."""
        trouble = evidence.scores.trouble
        now = trouble[evidence.index] if trouble else ""
        return bool(now) and bool(self.cooled_trouble) and now != self.cooled_trouble

    def _emit(self, state: State, ts: float, score: float, evidence: Evidence,
              reason: str = "") -> Step:
        alert = self.alert
        assert alert is not None
        alert.windows += 1
        alert.peak = max(alert.peak, score)
        event = self._event(state, ts, score, evidence, reason)
        alert.last_emit_ts = ts
        alert.severity = event.severity
        if state == "end":
            self.alert = None
            self._cool_down(ts, alert.trouble)
            self.over = 0
            return Step(score, False, event, alert.id)
        return Step(score, True, event, alert.id)

    def _event(self, state: State, ts: float, score: float, evidence: Evidence | None,
               reason: str) -> AlertEvent:
        alert = self.alert
        assert alert is not None
        scorers: dict[str, float] = {}
        channels: list[ChannelContribution] = []
        if evidence is not None:
            scorers = {k: float(v[evidence.index]) for k, v in evidence.scores.normalized.items()}
            channels = self.attribution(evidence)
            # the trouble of a window over the threshold: under it the top member is noise
            if evidence.scores.trouble and (state == "start" or evidence.ensemble >= 1.0):
                alert.trouble = evidence.scores.trouble[evidence.index]
        severity = "info" if state == "end" else self.severity(score)
        return AlertEvent(alert.id, self.device, state, alert.ts_start, ts, score, 1.0,
                          severity, scorers, channels, alert.peak, alert.windows, reason,
                          alert.trouble)

    def attribution(self, evidence: Evidence) -> list[ChannelContribution]:
        """The top channels by share of the reconstruction error (IQR excess if it is zero)."""
        error = np.asarray(evidence.scores.channel_error[evidence.index], dtype=np.float64)
        excess = np.asarray(evidence.scores.iqr_excess[evidence.index], dtype=np.float64)
        weight = np.where(np.isfinite(error), np.maximum(error, 0.0), 0.0)
        if weight.sum() <= 0:
            weight = np.maximum(np.nan_to_num(excess), 0.0)
        total = float(weight.sum())
        if total <= 0:
            return []
        order = np.argsort(-weight, kind="stable")[: self.options.top_channels]
        out = []
        for j in order.tolist():
            if weight[j] <= 0:
                break
            fence: Literal["high", "low"] | None = None
            if excess[j] >= 1.0:
                fence = "high" if evidence.scaled[j] > 0 else "low"
            out.append(ChannelContribution(self.channels[j], float(weight[j] / total),
                                           float(evidence.values[j]), fence))
        return out
