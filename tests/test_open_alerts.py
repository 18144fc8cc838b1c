"""Open alerts kept beside the outbox, and ended at the next start after a crash (in-process).

The SIGKILL test with a real broker and the agent as a subprocess is in
tests/test_alert_lifecycle_crash.py.
"""

from __future__ import annotations

import json
import logging
import math
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from edge.agent import Agent
from edge.bundle import load_bundle
from edge.config import parse_config
from edge.decide import BundleInfo
from edge.engine import ScoringEngine
from edge.open_alerts import restart_end, restart_ends
from edge.outbox import OpenAlert, Outbox
from edge.sources import Payload
from tests.agent_fixtures import bundle_variant, channel_names, normal_rows, scales


def event(state: str, alert_id: str = "d-1-abc", ts: float = 1_700_000_010.0,
          **extra: Any) -> bytes:
    payload = {"id": alert_id, "device": "d", "state": state, "ts_start_epoch": 1_700_000_000.0,
               "ts_epoch": ts, "peak_score": 2.5, "windows": 7, **extra}
    return json.dumps(payload).encode()


def put(box: Outbox, state: str, alert_id: str = "d-1-abc", ts: float = 1_700_000_010.0) -> int:
    return box.put("p/d/alert", event(state, alert_id, ts), device="d", state=state,
                   alert_id=alert_id)


# -- the record in the outbox ------------------------------------------------------------------
def test_start_records_update_refreshes_end_forgets(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite3"
    with Outbox(path) as box:
        put(box, "start")
        [alert] = box.open_alerts()
        assert (alert.alert_id, alert.device, alert.topic) == ("d-1-abc", "d", "p/d/alert")
        put(box, "update", ts=1_700_000_070.0)
        [alert] = box.open_alerts()
        assert json.loads(alert.payload)["ts_epoch"] == 1_700_000_070.0
    with Outbox(path) as box:  # survives a process that never ended it
        assert [a.alert_id for a in box.open_alerts()] == ["d-1-abc"]
        put(box, "end")
        assert box.open_alerts() == []
        assert [i.state for i in box.pending()] == ["start", "update", "end"]


def test_record_and_event_are_one_transaction(tmp_path: Path) -> None:
    """Another connection (a process after a crash) never sees an end stored and its alert
    still open, nor the reverse."""
    path = tmp_path / "o.sqlite3"
    with Outbox(path) as box:
        put(box, "start", "A")
        put(box, "start", "B")
        put(box, "end", "A")
        other = sqlite3.connect(path)
        open_ids = {r[0] for r in other.execute("SELECT alert_id FROM open_alerts")}
        ended = {r[0] for r in other.execute("SELECT alert_id FROM outbox WHERE state='end'")}
        other.close()
    assert open_ids == {"B"} and ended == {"A"}


def test_a_dropped_update_still_refreshes_the_record(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.sqlite3", max_alerts=1) as box:
        put(box, "start")
        assert put(box, "update", ts=1_700_000_099.0) == 0  # full box: the update is dropped
        assert json.loads(box.open_alerts()[0].payload)["ts_epoch"] == 1_700_000_099.0


def test_an_outbox_file_from_before_gains_the_table(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite3"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, created REAL NOT "
               "NULL, device TEXT NOT NULL, topic TEXT NOT NULL, state TEXT NOT NULL, "
               "alert_id TEXT NOT NULL, payload BLOB NOT NULL)")
    db.commit()
    db.close()
    with Outbox(path) as box:
        assert box.open_alerts() == []
        put(box, "start")
        assert len(box.open_alerts()) == 1


# -- the end at restart ------------------------------------------------------------------------
def test_restart_end_carries_the_last_known_state() -> None:
    end = restart_end(OpenAlert("d-1-abc", "d", "p/d/alert", 5.0, event("update")))
    assert (end.id, end.device, end.state, end.reason) == ("d-1-abc", "d", "end", "restart")
    assert (end.ts_start, end.ts, end.peak_score, end.windows) == (
        1_700_000_000.0, 1_700_000_010.0, 2.5, 7)
    assert end.severity == "info" and math.isnan(end.score)
    assert end.scorers == {} and end.channels == []
    payload = end.to_payload(bundle=BundleInfo("b", "1", "0" * 64), agent_version="x")
    json.dumps(payload, allow_nan=False)
    assert payload["reason"] == "restart" and payload["score"] is None


@pytest.mark.parametrize("damaged", [b"\xff\xfe", b"not json", b"[1, 2]", b'{"id": "x"}',
                                     event("start", ts=float("inf")),
                                     json.dumps({"ts_start_epoch": 1e300, "ts_epoch": 1}).encode()])
def test_a_damaged_record_is_logged_and_still_ended(damaged: bytes,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="edge.open_alerts"):
        end = restart_end(OpenAlert("d-1-abc", "d", "p/d/alert", 1_700_000_500.0, damaged))
    assert "damaged" in caplog.text and "d-1-abc" in caplog.text
    assert (end.id, end.state, end.reason) == ("d-1-abc", "end", "restart")
    assert end.ts_start == end.ts == 1_700_000_500.0 and end.windows == 0
    payload = end.to_payload(bundle=BundleInfo("b", "1", "0" * 64), agent_version="x")
    json.dumps(payload, allow_nan=False)  # publishable


# -- the agent: every path that ends an alert clears its record --------------------------------
def make_agent(bundle: Path, tmp_path: Path) -> Agent:
    config = parse_config({"bundle": {"path": str(bundle), "watch_interval_s": 0},
                           "sources": [{"type": "stdin", "device": "pod"}],
                           "outbox": {"path": str(tmp_path / "o.sqlite3")},
                           "state": {"path": ""}}, environ={})
    agent = Agent(config, load_bundle(config.bundle.path))
    agent.outbox.open()
    return agent


def open_an_alert(agent: Agent, ts0: float) -> str:
    rows = normal_rows(40, seed=9)
    rows[30:, 6] += 12 * scales()[6]
    names = channel_names()
    for i, row in enumerate(rows):
        line = json.dumps({"ts": ts0 + i, **dict(zip(names, row.tolist(), strict=True))})
        agent.handle(Payload("pod", line.encode(), time.monotonic()))
    alert = agent.gateway.pipelines["pod"].decider.alert
    assert alert is not None
    assert [a.alert_id for a in agent.outbox.open_alerts()] == [alert.id]
    return alert.id


def test_after_a_crash_the_next_start_ends_the_open_alert_once(agent_bundle: Path,
                                                              tmp_path: Path) -> None:
    first = make_agent(agent_bundle, tmp_path)
    opened = open_an_alert(first, time.time() - 100)
    first.outbox.close()  # killed: no gateway.close(), no end

    second = make_agent(agent_bundle, tmp_path)
    ends = restart_ends(second.outbox)
    assert [(e.id, e.reason) for e in ends] == [(opened, "restart")]
    second.publish(ends)  # what Agent.__enter__ does before the sources start
    assert second.outbox.open_alerts() == []
    assert second.alert_counts["end"] == 1
    stored = [(i.state, i.alert_id, json.loads(i.payload).get("reason"))
              for i in second.outbox.pending()]
    assert stored == [("start", opened, None), ("end", opened, "restart")]
    second.outbox.close()

    third = make_agent(agent_bundle, tmp_path)  # another crash after that: nothing more to end
    assert restart_ends(third.outbox) == []
    third.outbox.close()


@pytest.mark.parametrize("how", ["shutdown", "stale"])
def test_shutdown_and_silence_clear_the_record(how: str, agent_bundle: Path,
                                               tmp_path: Path) -> None:
    agent = make_agent(agent_bundle, tmp_path)
    opened = open_an_alert(agent, time.time() - 100)
    if how == "shutdown":
        agent.publish(agent.gateway.close("shutdown"))
    else:
        agent.publish(agent.expire_silent(time.monotonic() + 60))
    assert agent.outbox.open_alerts() == []
    assert [(i.state, i.alert_id) for i in agent.outbox.pending()][-1] == ("end", opened)
    agent.outbox.close()


def test_reloads_keep_or_end_the_alert_and_its_record(agent_bundle: Path,
                                                      tmp_path: Path) -> None:
    agent = make_agent(agent_bundle, tmp_path)
    opened = open_an_alert(agent, time.time() - 100)
    same_shape = bundle_variant(agent_bundle, tmp_path / "v2", version="2")
    agent.publish(agent.gateway.swap_engine(ScoringEngine(load_bundle(same_shape))))
    assert [a.alert_id for a in agent.outbox.open_alerts()] == [opened]  # still open, same id

    manifest = load_bundle(agent_bundle).manifest
    other = bundle_variant(agent_bundle, tmp_path / "v3", version="3",
                           preprocess=manifest.preprocess.model_copy(update={"clip": 6.0}))
    agent.publish(agent.gateway.swap_engine(ScoringEngine(load_bundle(other))))
    assert agent.outbox.open_alerts() == []
    last = agent.outbox.pending()[-1]
    assert (last.state, last.alert_id, json.loads(last.payload)["reason"]) == (
        "end", opened, "reload")
    agent.outbox.close()
