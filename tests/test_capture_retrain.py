"""The whole loop at reduced size: a bundle trained without a daily event alerts on it; the
agent captures three days of what the device saw while the user answers each alert
(`feedback normal` on the event, which teaches the device at once, `anomaly` on a fault);
`edge-agent capture export` and `edge-train fit` on the export give a bundle that no longer
alerts on the event and still catches a fault (a day replayed through both bundles)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge.cli import main as agent_main
from edge.commands import Request
from edge.readings import Reading
from edge.replay import replay_table
from edge.table import Table, read_table
from export.cli import main as train_main
from tests.closed_loop_fixtures import make_agent

pytestmark = pytest.mark.slow
CHANNELS = ["pm_a", "pm_b", "temp", "no2"]
PERIOD = 60.0
DAY = 86400.0
T0 = 1_767_571_200.0  # 2026-01-05T00:00Z
FIT = ["--epochs", "1", "--units", "8", "--no-report", "--force", "--seed", "0"]


def rows(ts: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    day = 2 * np.pi * ts / DAY
    base = np.column_stack([10 + 3 * np.sin(day), 12 + 3 * np.sin(day + 0.3),
                            20 + 2 * np.cos(day), np.full(len(ts), 50.0)])
    return base + rng.normal(size=base.shape) * np.array([0.5, 0.5, 0.4, 1.0])


def cook(ts: np.ndarray, values: np.ndarray, seed: int) -> list[tuple[float, float]]:
    """A daily 45-minute rise on both PM channels at noon (+/- 10 min)."""
    rng = np.random.default_rng(seed)
    spans = []
    for day in range(int((ts[-1] - ts[0]) // DAY) + 1):
        start = ts[0] - ts[0] % DAY + day * DAY + 12 * 3600 + rng.uniform(-600, 600)
        minutes = (ts - start) / 60
        inside = (minutes >= 0) & (minutes < 45)
        shape = np.where(minutes < 25, np.minimum(minutes / 5, 1), 1 - (minutes - 25) / 20)
        values[inside, :2] += 15 * rng.uniform(0.8, 1.2) * shape[inside, None]
        if inside.any():
            spans.append((float(start), float(start + 45 * 60)))
    return spans


def fault(ts: np.ndarray, values: np.ndarray, start: float, channel: int
          ) -> tuple[float, float]:
    inside = (ts >= start) & (ts < start + 7200)
    values[inside, channel] += 8 * (0.5 if channel == 0 else 1.0)
    return start, start + 7200


def csv(path: Path, ts: np.ndarray, values: np.ndarray) -> Path:
    lines = ["timestamp," + ",".join(CHANNELS)]
    lines += [f"{t:.0f}," + ",".join(f"{v:.4f}" for v in row) for t, row in zip(ts, values,
                                                                               strict=True)]
    path.write_text("\n".join(lines) + "\n")
    return path


def overlapping(bundle: Path, ts: np.ndarray, values: np.ndarray,
                spans: list[tuple[float, float]]) -> list[int]:
    """For each span, the number of alerts of the replay that overlap it."""
    table = Table(Path("day"), ts, values, CHANNELS, None, "timestamp", None, ",", [])
    ends = [e for e in replay_table(bundle, table).events if e.state == "end"]
    return [sum(1 for e in ends if e.ts_start <= b + 900 and e.ts >= a) for a, b in spans]


def test_retraining_on_the_capture_export_learns_the_event_and_keeps_the_fault(
        tmp_path: Path) -> None:
    train_ts = T0 + PERIOD * np.arange(int(3 * DAY / PERIOD))
    v1 = tmp_path / "v1"
    assert train_main(["fit", str(csv(tmp_path / "train.csv", train_ts, rows(train_ts, 1))),
                       "--out", str(v1), *FIT]) == 0

    # three days on the device: the event every day, a fault on no2 on the second
    live_ts = train_ts[-1] + PERIOD * np.arange(1, int(3 * DAY / PERIOD) + 1)
    live = rows(live_ts, 2)
    events = cook(live_ts, live, 3)
    leak = fault(live_ts, live, live_ts[0] + 1.3 * DAY, 3)
    agent, replies = make_agent(v1, tmp_path / "device", {"state": {"path": ""}})
    answered: set[str] = set()
    for t, row in zip(live_ts, live, strict=True):
        agent.handle(Reading("pod", float(t), dict(zip(CHANNELS, row.tolist(), strict=True))))
        for alert in agent.loop.store.alerts("pod"):
            if alert.ts_end is None or alert.id in answered:
                continue
            answered.add(alert.id)
            cooking = any(alert.ts_start <= b and alert.ts_end >= a for a, b in events)
            label = "normal" if cooking else "anomaly"
            agent.loop.submit(Request("feedback", alert.id, "p/agent/cmd", "agent", None,
                                      alert.id, label))
            agent.publish(agent.loop.tick())
    agent.loop.store.flush()
    labels = [r["label"] for r in replies.seen if r["event"] == "feedback"]
    assert labels.count("normal") >= 1 and labels.count("anomaly") >= 1, labels  # v1 alerts
    # one `feedback normal` taught the device (window_mahalanobis' taught memory): the later
    # days' events no longer alert on it
    first = next(r for r in replies.seen if r["event"] == "feedback" and r["label"] == "normal")
    assert first["learned"] is True
    later = [(a, b) for a, b in events if a > first["ts_end"]]
    assert len(later) >= 2 and not any(
        a.ts_start <= end and a.ts_end and a.ts_end >= start
        for a in agent.loop.store.alerts("pod") for start, end in later)
    assert any(a.ts_start <= leak[1] and a.ts_end and a.ts_end >= leak[0]  # on both
               for a in agent.loop.store.alerts("pod"))

    export = tmp_path / "capture.csv"
    assert agent_main(["capture", "export", "--db", str(tmp_path / "device" / "capture.sqlite3"),
                       "--device", "pod", "--out", str(export)]) == 0
    table = read_table(export)
    assert table.labels is not None and len(table) == len(live_ts)
    in_fault = (table.timestamps >= leak[0]) & (table.timestamps < leak[1])
    assert table.labels[in_fault].mean() > 0.9  # the fault is left out of training...
    in_event = np.zeros(len(table), dtype=bool)
    for a, b in events:
        in_event |= (table.timestamps >= a) & (table.timestamps < b)
    assert not table.labels[in_event].any()  # ...the events are kept
    v2 = tmp_path / "v2"
    assert train_main(["fit", str(export), "--out", str(v2), *FIT]) == 0

    # a new day: the event, and a fault on another channel
    day_ts = live_ts[-1] + PERIOD * np.arange(1, int(DAY / PERIOD) + 1)
    day = rows(day_ts, 4)
    spans = cook(day_ts, day, 5)
    broken = fault(day_ts, day, day_ts[0] + 0.2 * DAY, 2)
    assert overlapping(v1, day_ts, day, spans)[0] >= 1  # the old bundle still alerts on it
    assert overlapping(v2, day_ts, day, spans) == [0]  # learned from the capture
    assert overlapping(v2, day_ts, day, [broken])[0] >= 1  # still caught
