"""A bundle whose one ensemble member has a memory, and an agent built in-process around it,
for the closed-loop tests (feedback, snooze, capture).

The fixture bundle's `euclidean` scorer (||last 2 scaled rows||) with a lag-vector memory of
200 windows (gap 20, k 2) is the only member: a burst of +12 sd on one channel alerts, and
bursts 330 rows apart alert each time without feedback (the memory has forgotten the last
one), which is what a daily event does to a memory of a few hours.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from edge.agent import Agent
from edge.bundle import Ensemble, MemorySpec, load_bundle
from edge.config import parse_config
from edge.readings import Reading
from tests.agent_fixtures import bundle_variant, channel_names, normal_rows, scales

EVENT_CHANNEL = 3  # the recurring harmless event
FAULT_CHANNEL = 5  # a sensor fault
MEMORY = MemorySpec(lags=2, size=200, gap=20, k=2)


def memory_bundle(base: Path, target: Path, **update: Any) -> Path:
    if (target / "manifest.json").exists():
        return target
    manifest = load_bundle(base).manifest
    scorers = [s.model_copy(update={"memory": MEMORY}) for s in manifest.scorers
               if s.name == "euclidean"]
    return bundle_variant(base, target, scorers=scorers,
                          ensemble=Ensemble(rule="max", members=["euclidean"]), **update)


class Replies:
    """Stands in for the agent's event publisher."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []

    def __call__(self, event: str, **fields: Any) -> None:
        self.seen.append({"event": event, **fields})

    def last(self, event: str) -> dict[str, Any]:
        found = [e for e in self.seen if e["event"] == event]
        assert found, f"no {event} event in {self.seen}"
        return found[-1]


def make_agent(bundle: Path, tmp: Path, extra: dict[str, Any] | None = None,
               clock: list[float] | None = None) -> tuple[Agent, Replies]:
    """An agent built and opened in-process (no broker: nothing is sent), its events and
    command refusals recorded in the returned `Replies`."""
    data: dict[str, Any] = {
        "bundle": {"path": str(bundle), "watch_interval_s": 0},
        "sources": [{"type": "stdin", "device": "pod"}],
        "outbox": {"path": str(tmp / "outbox.sqlite3")},
        "capture": {"path": str(tmp / "capture.sqlite3")},
        "state": {"path": str(tmp / "state.npz")},
    }
    for key, value in (extra or {}).items():
        data[key] = {**data.get(key, {}), **value}
    config = parse_config(data, environ={})
    agent = Agent(config, load_bundle(config.bundle.path))
    replies = Replies()
    agent.events.publish = replies  # type: ignore[method-assign]
    agent.loop.reply = replies
    if clock is not None:
        agent.loop._clock = lambda: clock[0]
    agent.outbox.open()
    agent.loop.open()
    return agent, replies


class Stream:
    """Readings for one device at 1 s steps, fed straight into `agent.handle`."""

    def __init__(self, agent: Agent, device: str = "pod", ts0: float | None = None) -> None:
        self.agent = agent
        self.device = device
        self.ts = ts0 if ts0 is not None else time.time() - 100_000
        self.seed = 0

    def feed(self, n: int, channel: int | None = None, size: float = 12.0) -> list[str]:
        """n readings (a burst of `size` sd on `channel`); the ids of alerts started."""
        self.seed += 1
        rows = normal_rows(n, seed=self.seed)
        if channel is not None:
            rows[:, channel] += size * scales()[channel]
        names = channel_names()
        started = []
        for row in rows:
            known = self._open_ids()
            self.agent.handle(Reading(self.device, self.ts, dict(zip(names, row.tolist(),
                                                                     strict=True))))
            self.ts += 1.0
            started += [a for a in self._open_ids() if a not in known]
        return started

    def _open_ids(self) -> list[str]:
        pipeline = self.agent.gateway.pipelines.get(self.device)
        alert = pipeline.decider.alert if pipeline is not None else None
        return [alert.id] if alert is not None else []

    def bursts(self, channels: list[int | None], quiet: int = 300, length: int = 30
               ) -> list[list[str]]:
        """For each channel: `quiet` normal rows then a burst of `length` rows on it."""
        return [self.feed(quiet) + self.feed(length, channel) for channel in channels]


def published_starts(agent: Agent) -> list[str]:
    """Alert ids whose `start` went to the outbox (published)."""
    return [i.alert_id for i in agent.outbox.pending(limit=1_000_000) if i.state == "start"]


def warm(stream: Stream) -> None:
    stream.feed(300)
    assert not stream.agent.alert_counts["start"], "alerted on normal data"
