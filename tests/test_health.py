"""A channel that stops reporting is reported silent once, and back when it returns."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from edge.health import ChannelHealth
from edge.sources import Payload
from tests.agent_fixtures import channel_names, normal_rows
from tests.test_agent_loop import make_agent


def test_silent_after_the_limit_once_then_back() -> None:
    health = ChannelHealth(["a", "b"], sample_period_s=60.0, silent_periods=5)
    events = []
    for i in range(12):
        b = None if 2 <= i < 10 else 1.0
        events += health.observe("pod", 1000.0 + 60 * i, {"a": 1.0, "b": b})
    assert [(e.event, e.channel, e.ts) for e in events] == [
        ("channel_silent", "b", 1000.0 + 60 * 7), ("channel_back", "b", 1000.0 + 60 * 10)]
    assert events[0].since == 1060.0 and health.silent("pod") == []


def test_a_channel_never_seen_counts_from_the_device_first_reading() -> None:
    health = ChannelHealth(["a", "b"], sample_period_s=1.0, silent_periods=3)
    events = [e for i in range(6) for e in health.observe("pod", float(i), {"a": 1.0})]
    assert [(e.event, e.ts) for e in events] == [("channel_silent", 4.0)]
    assert math.isnan(events[0].since) and health.silent("pod") == ["b"]
    assert health.observe("pod", 7.0, {"a": 1.0, "b": math.inf}) == []  # still no value


def test_the_agent_publishes_the_events(agent_bundle: Path, tmp_path: Path) -> None:
    agent = make_agent(agent_bundle, tmp_path, alerts={"silent_channel_periods": 5})
    published: list[tuple[str, dict[str, Any]]] = []
    agent.events.publish = lambda event, **fields: published.append((event, fields))  # type: ignore[method-assign]
    names = channel_names()
    now = time.time() - 100
    for i, row in enumerate(normal_rows(20, seed=3)):
        values = dict(zip(names, row.tolist(), strict=True))
        if 5 <= i < 15:
            values.pop(names[2])
        agent.handle(Payload("pod", json.dumps({"ts": now + i, **values}).encode(),
                             time.monotonic()))
    period = agent.bundle.manifest.sample_period_s
    assert [(e, f["channel"]) for e, f in published] == [
        ("channel_silent", names[2]), ("channel_back", names[2])]
    assert published[0][1]["reading_ts"] > published[0][1]["since"] + 5 * period
