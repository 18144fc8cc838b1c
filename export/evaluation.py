"""What `edge-train evaluate` measured (`Evaluation`), its figures as JSON and its summary lines.

Built by `export.evaluate.evaluate`, drawn by `export.evaluate_report.write_report`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edge.bundle import Manifest
from edge.decide import AlertEvent
from edge.replay import ReplayResult
from export.metrics import EventMetrics, PointMetrics
from export.nab import FileScore, normalized_score

BoolArray = npt.NDArray[np.bool_]
DECISION = "decision"  # the agent's output: an alert is open (trigger, hysteresis, cooldown)
OVER = "score>=1"  # the smoothed ensemble score over threshold, without the alert policy


@dataclass(frozen=True)
class AlertSpan:
    """One alert: the rows where it started and ended (`end_row` = n if open at the end)."""

    id: str
    start_row: int
    end_row: int
    start: AlertEvent
    end: AlertEvent | None


@dataclass(frozen=True)
class Evaluation:
    """Everything `evaluate` measured; `rows` marks the scored rows."""

    data: Path
    manifest: Manifest
    replay: ReplayResult
    labels: BoolArray
    rows: BoolArray
    rows_text: str
    point: dict[str, PointMetrics]  # DECISION, OVER and each scorer alone
    events: EventMetrics
    nab: dict[str, FileScore]  # profile -> score of the alert starts ({} without events)
    ap: dict[str, float]  # OVER (the ensemble score) and each scorer
    alerts: list[AlertSpan]

    @property
    def nab_normalized(self) -> dict[str, float]:
        return {name: normalized_score([s]) for name, s in self.nab.items()}

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready figures (no per-row arrays)."""
        r = self.replay
        figures: dict[str, Any] = _finite({
            "data": str(self.data),
            "bundle": {"name": self.manifest.name, "version": self.manifest.version},
            "rows": self.rows_text,
            "scored_rows": int(self.rows.sum()),
            "labelled_rows": int(self.labels[self.rows].sum()),
            "replay": {"rows": len(r.timestamps), "seconds": r.elapsed_s,
                       "rows_per_s": r.rows_per_s, "windows_scored": r.stats["windows_scored"],
                       "alerts": len(self.alerts)},
            "point": {k: v.as_dict() for k, v in self.point.items()},
            "events": self.events.as_dict(),
            "nab": {k: {"score": self.nab_normalized[k], "raw": v.raw, "tp": v.tp, "fp": v.fp,
                        "fn": v.fn} for k, v in self.nab.items()},
            "average_precision": self.ap,
            "alerts": [{"id": a.id, "start_row": a.start_row, "end_row": a.end_row,
                        "ts_start": a.start.ts_start, "peak": (a.end or a.start).peak_score,
                        "channels": {c.name: c.contribution for c in a.start.channels}}
                       for a in self.alerts],
        })
        return figures


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def summary_lines(ev: Evaluation) -> list[str]:
    r, m = ev.replay, ev.manifest
    truth = ev.labels[ev.rows]
    lines = [
        f"bundle {m.name} {m.version}: replayed {len(r.timestamps)} rows in {r.elapsed_s:.2f} s "
        f"({r.rows_per_s:,.0f} rows/s), {r.stats['windows_scored']} windows scored, "
        f"{len(ev.alerts)} alerts",
        f"scored rows {ev.rows_text}: {int(ev.rows.sum())} rows, {int(truth.sum())} labelled "
        f"anomalous in {ev.events.n_events} events",
    ]
    d = ev.point[DECISION]
    lines.append(f"point (agent decision): precision {d.precision:.3f}  recall {d.recall:.3f}  "
                 f"F1 {d.f1:.3f}  FAR {d.far_pct:.1f}%  MAR {d.mar_pct:.1f}%  "
                 f"(TP {d.tp} FP {d.fp} FN {d.fn} TN {d.tn})")
    e = ev.events
    delay = (f"median {e.median_delay_s:.0f} s, mean {e.mean_delay_s:.0f} s"
             if e.median_delay_s is not None else "none caught")
    lines.append(f"events: {e.caught}/{e.n_events} caught, detection delay {delay}; "
                 f"{e.false_alarm_events} false alarms ({e.false_alarms_per_day:.2f} per day "
                 f"over {e.duration_days:.2f} days)")
    if ev.nab:
        nab = ev.nab_normalized
        std = ev.nab["standard"]
        lines.append("NAB-style (labelled runs = windows, alert starts = detections): "
                     + ", ".join(f"{k} {v:.1f}" for k, v in nab.items())
                     + f"; {std.tp} windows detected, {std.fn} missed, {std.fp} starts outside")
    else:
        lines.append("NAB-style: no labelled anomaly in the scored rows, score undefined")
    lines.append(f"{'scorer (alone, >= 1)':<22} {'precision':>9} {'recall':>7} {'F1':>6} "
                 f"{'FAR%':>6} {'MAR%':>6} {'AP':>6}")
    for name, p in ev.point.items():
        ap = f"{ev.ap[name]:>6.3f}" if name in ev.ap else f"{'':>6}"
        lines.append(f"{name:<22} {p.precision:>9.3f} {p.recall:>7.3f} {p.f1:>6.3f} "
                     f"{p.far_pct:>6.1f} {p.mar_pct:>6.1f} {ap}")
    return lines
