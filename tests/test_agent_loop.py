"""The agent's loop pieces in-process, without a broker: decode -> gateway -> outbox, silence."""

from __future__ import annotations

import json
import time
from pathlib import Path

from edge.agent import Agent
from edge.bundle import load_bundle
from edge.config import parse_config
from edge.sources import Payload, SourceDone
from tests.agent_fixtures import channel_names, normal_rows, scales


def make_agent(bundle: Path, tmp_path: Path, **sections: object) -> Agent:
    config = parse_config({"bundle": {"path": str(bundle)},
                           "sources": [{"type": "stdin", "device": "pod"}],
                           "outbox": {"path": str(tmp_path / "o.sqlite3")}, **sections},
                          environ={})
    agent = Agent(config, load_bundle(config.bundle.path))
    agent.outbox.open()
    return agent


def lines(n_normal: int, n_fault: int, ts0: float) -> list[bytes]:
    rows = normal_rows(n_normal + n_fault, seed=9)
    rows[n_normal:, 6] += 12 * scales()[6]
    names = channel_names()
    return [json.dumps({"ts": ts0 + i, **dict(zip(names, r.tolist(), strict=True))}).encode()
            for i, r in enumerate(rows)]


def test_readings_become_alerts_in_the_outbox(agent_bundle: Path, tmp_path: Path) -> None:
    agent = make_agent(agent_bundle, tmp_path)
    now = time.time()
    for line in lines(30, 10, now - 100):
        agent.handle(Payload("pod", line, time.monotonic()))
    agent.handle(Payload("pod", b"{broken", time.monotonic()))
    items = agent.outbox.pending()
    assert [i.state for i in items] == ["start"]
    assert items[0].topic == "edge-anomaly/pod/alert"
    alert = json.loads(items[0].payload)
    assert alert["channels"][0]["name"] == "ch6"
    assert agent.counter.totals() == {"invalid_json": 1}
    metrics = agent.collect_metrics()
    assert metrics["pod"]["readings"] == 40 and metrics["pod"]["outbox_depth"] == 1
    assert metrics[agent.config.mqtt.client_id]["bad"] == {"invalid_json": 1}
    json.dumps(metrics, allow_nan=False)  # publishable
    agent.handle(SourceDone("stdin"))
    assert agent.input_ended
    agent.outbox.close()


def test_silence_ends_an_alert_whatever_the_sensor_clock(agent_bundle: Path,
                                                        tmp_path: Path) -> None:
    """A sensor clock 200 s behind the agent (within max_skew_s) must not look silent; a
    device silent for longer than max_gap_s (5 s in the fixture) on the agent clock ends its
    alert with reason `stale`."""
    agent = make_agent(agent_bundle, tmp_path)
    for line in lines(30, 10, time.time() - 200):
        agent.handle(Payload("pod", line, time.monotonic()))
    assert agent.gateway.pipelines["pod"].decider.active
    now = time.monotonic()
    assert agent.expire_silent(now + 1.0) == []
    ended = agent.expire_silent(now + 6.0)
    assert [(e.state, e.reason) for e in ended] == [("end", "stale")]
    agent.outbox.close()


def test_decision_overrides_reach_the_gateway(agent_bundle: Path, tmp_path: Path) -> None:
    agent = make_agent(agent_bundle, tmp_path, decision={"trigger": 50, "stride": 2},
                       alerts={"top_channels": 1})
    assert agent.gateway.decision.trigger == 50 and agent.gateway.stride == 2
    for line in lines(30, 10, time.time() - 100):
        agent.handle(Payload("pod", line, time.monotonic()))
    assert agent.outbox.depth() == 0  # 50 windows over threshold are needed now
    agent.outbox.close()
