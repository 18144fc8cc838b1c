"""The device-side capture (edge/capture.py, `edge-agent capture export|info`): its bounds,
the labels the export gives each row, and a CSV `edge-train fit` reads as it is."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest

from edge.capture import CaptureStore
from edge.capture_cli import parse_time
from edge.cli import main
from edge.decide import AlertEvent, ChannelContribution
from edge.table import read_table
from tests.agent_fixtures import channel_names
from tests.closed_loop_fixtures import EVENT_CHANNEL, Stream, make_agent, memory_bundle

T0 = 1_767_600_000.0


def event(alert_id: str, state: str, ts_start: float, ts: float, device: str = "pod"
          ) -> AlertEvent:
    channels = [ChannelContribution("a", 0.8, 1.0, "high")]
    return AlertEvent(alert_id, device, state, ts_start, ts, 2.0, 1.0, "warning",  # type: ignore[arg-type]
                      {}, channels, 2.0, 1, "released" if state == "end" else "")


def alert(store: CaptureStore, alert_id: str, start: float, end: float, lead_s: float = 0.0,
          label: str = "") -> None:
    store.record_alert(event(alert_id, "start", start, start), published=True, lead_s=lead_s)
    store.record_alert(event(alert_id, "end", start, end), published=True, lead_s=lead_s)
    if label:
        store.add_feedback(alert_id=alert_id, device="pod", label=label, note="", ts_start=start,
                           ts_end=end, channels=["a"], taught={})


def test_readings_stay_within_the_byte_bound_and_the_days(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite3"
    store = CaptureStore(path, max_bytes=1_000_000, max_days=365.0, flush_rows=10_000).open()
    channels = store.channel_set([f"c{j}" for j in range(17)])
    rng = np.random.default_rng(0)
    for i in range(30_000):  # about 200 bytes a row: 6 MB unbounded
        store.add_reading("pod", T0 + 60.0 * i, channels, rng.normal(size=17))
        if i % 5000 == 4999:
            store.flush()
            store.prune()
    store.flush()
    store.prune()
    assert store.used_bytes() <= 1_000_000
    assert path.stat().st_size <= 1_200_000  # freed pages went back to the file system
    kept = store.db.execute("SELECT COUNT(*), MIN(ts), MAX(ts) FROM readings").fetchone()
    assert 2000 < kept[0] < 30_000 and kept[2] == T0 + 60.0 * 29_999
    assert store.pruned == 30_000 - kept[0]
    # the days bound: a reading 2 days newer leaves nothing older than 1 day before it
    store.max_days = 1.0
    store.add_reading("pod", kept[2] + 2 * 86400, channels, np.zeros(17))
    store.flush()
    store.prune()
    left = store.db.execute("SELECT MIN(ts) FROM readings").fetchone()[0]
    assert left >= kept[2] + 86400
    store.close()


def test_the_export_labels_rows_by_the_alerts_and_their_feedback(tmp_path: Path) -> None:
    with CaptureStore(tmp_path / "c.sqlite3") as store:
        channels = store.channel_set(["a", "b"])
        for i in range(100):
            store.add_reading("pod", T0 + i, channels, np.array([i, math.nan if i == 5 else -i]))
        alert(store, "normal-1", T0 + 10, T0 + 19, lead_s=2.0, label="normal")
        alert(store, "anomaly-1", T0 + 30, T0 + 39, label="anomaly")
        alert(store, "open-2", T0 + 50, T0 + 59, label="anomaly")
        store.add_feedback(alert_id="open-2", device="pod", label="normal", note="no, fine",
                           ts_start=T0 + 50, ts_end=T0 + 59, channels=[], taught={})
        alert(store, "none-1", T0 + 70, T0 + 79)
        rows = store.export_rows("pod")
        assert rows.channels == ["a", "b"] and len(rows.ts) == 100
        assert np.isnan(rows.values[5, 1]) and rows.values[7].tolist() == [7.0, -7.0]
        flagged = np.flatnonzero(rows.anomaly).tolist()
        assert flagged == [*range(30, 40), *range(70, 80)]  # anomaly and unlabelled
        assert rows.alert_ids[8] == "normal-1" and rows.labels[8] == "normal"  # 2 s lead
        assert rows.labels[55] == "normal"  # the latest label counts
        kept = store.export_rows("pod", keep_unlabelled=True)
        assert np.flatnonzero(kept.anomaly).tolist() == list(range(30, 40))
        part = store.export_rows("pod", since=T0 + 35, until=T0 + 72)
        assert len(part.ts) == 38 and part.anomaly[:5].all() and part.anomaly[-3:].all()


def test_capture_export_writes_what_edge_train_reads(mem_bundle: Path, tmp_path: Path) -> None:
    agent, _ = make_agent(mem_bundle, tmp_path)
    stream = Stream(agent, ts0=T0)
    stream.feed(300)
    started = stream.feed(30, EVENT_CHANNEL)
    stream.feed(100)
    agent.loop.store.flush()
    out = tmp_path / "pod.csv"
    config = ["--db", str(tmp_path / "capture.sqlite3")]
    assert main(["capture", "export", *config, "--device", "pod", "--out", str(out)]) == 0
    table = read_table(out)
    assert table.channels == channel_names() and table.label_column == "anomaly"
    assert len(table) == 430 and table.timestamps[0] == T0
    assert table.labels is not None
    record = agent.loop.store.alert(started[0])
    assert record is not None and record.ts_end is not None
    inside = (table.timestamps >= record.ts_start) & (table.timestamps <= record.ts_end)
    assert table.labels[inside].all() and not table.labels[:250].any()
    with out.open() as handle:
        header = next(csv.reader(handle))
    assert header[-3:] == ["anomaly", "alert_id", "feedback"]
    # the values are the readings as they came, to the bit
    first = next(iter(agent.loop.store.readings("pod")))
    assert table.values[0].tolist() == np.frombuffer(first[2], dtype="<f8").tolist()
    agent.outbox.close()


@pytest.fixture(scope="module")
def mem_bundle(agent_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return memory_bundle(agent_bundle, tmp_path_factory.mktemp("mem") / "bundle")


def test_capture_export_refuses_an_unknown_device_and_an_empty_range(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "c.sqlite3"
    with CaptureStore(db) as store:
        channels = store.channel_set(["a"])
        store.add_reading("pod", T0, channels, np.array([1.0]))
    base = ["capture", "export", "--db", str(db), "--out", str(tmp_path / "x.csv")]
    assert main([*base, "--device", "pump"]) == 2
    err = capsys.readouterr().err
    assert "no device 'pump'" in err and "(devices: pod)" in err
    assert main([*base, "--device", "pod", "--since", str(T0 + 10)]) == 2
    assert "no readings of pod between" in capsys.readouterr().err
    assert main([*base, "--device", "pod", "--since", "yesterday-ish"]) == 2
    assert "cannot read 'yesterday-ish' as a time" in capsys.readouterr().err
    assert main(["capture", "export", "--db", str(tmp_path / "none.sqlite3"), "--device", "pod",
                 "--out", str(tmp_path / "x.csv")]) == 2
    assert "no capture file" in capsys.readouterr().err
    assert not (tmp_path / "x.csv").exists()
    assert main(["capture", "info", "--db", str(db)]) == 0
    assert "pod: 1 readings" in capsys.readouterr().out


def test_times_are_read_as_dates_epochs_or_spans_ago() -> None:
    assert parse_time("2026-01-05T08:00:00") == 1767600000.0
    assert parse_time("2026-01-05T09:00:00+01:00") == 1767600000.0
    assert parse_time("1767600000") == 1767600000.0
    assert parse_time("36h", now=T0) == T0 - 36 * 3600
    assert parse_time("7d", now=T0) == T0 - 7 * 86400
