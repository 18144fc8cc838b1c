"""The decider's alert lifecycle on hand-made scores."""

from __future__ import annotations

import json
import math

import numpy as np

from edge.bundle import Decision
from edge.decide import (
    AlertEvent,
    AlertOptions,
    BundleInfo,
    Decider,
    Evidence,
    alert_id,
)
from edge.engine import Scores

CHANNELS = ["temp", "pressure", "flow"]


def evidence(score: float, error: tuple[float, ...] = (0.1, 0.1, 0.1),
             excess: tuple[float, ...] = (0.0, 0.0, 0.0),
             scaled: tuple[float, ...] = (0.0, 0.0, 0.0)) -> Evidence:
    ens = np.array([score])
    scores = Scores({"a": ens * 2}, {"a": ens, "b": ens / 2}, ens, np.array([error]),
                    np.array([excess]))
    return Evidence(scores, 0, np.array([20.0, 1.5, 7.0]), np.array(scaled))


def run(decider: Decider, scores: list[float], t0: float = 1000.0
        ) -> tuple[list[AlertEvent], list[bool]]:
    events, flags = [], []
    for i, s in enumerate(scores):
        step = decider.step(t0 + i, evidence(s))
        flags.append(step.is_anomaly)
        if step.event is not None:
            events.append(step.event)
    return events, flags


def make(**kw: float) -> Decider:
    options = AlertOptions(update_every_s=kw.pop("update_every_s", 0.0))
    return Decider("pump1", Decision(**kw), CHANNELS, options)  # type: ignore[arg-type]


def test_start_after_trigger_and_end_after_release() -> None:
    decider = make(trigger=3, release=2, release_level=0.9)
    events, flags = run(decider, [0.5, 1.5, 1.5, 0.5, 1.5, 1.5, 1.5, 1.2, 0.95, 0.5, 0.95,
                                  0.5, 0.5, 0.5])
    assert [e.state for e in events] == ["start", "end"]
    start, end = events
    assert start.ts == 1006.0 and start.ts_start == 1006.0  # the third consecutive window over
    # hysteresis: 0.95 keeps it open and resets the release count; two windows in a row
    # under 0.9 end it
    assert end.ts == 1012.0 and end.reason == "released" and end.id == start.id
    assert flags == [False] * 6 + [True] * 6 + [False] * 2
    assert end.windows == 7 and end.peak_score == 1.5 and end.severity == "info"


def test_update_on_escalation_and_periodically() -> None:
    decider = make(trigger=1, release=1, update_every_s=5)
    events, _ = run(decider, [1.2, 1.2, 2.5, 2.5, 1.1, 1.1, 1.1, 1.1, 1.1, 0.1])
    assert [(e.state, e.severity) for e in events] == [
        ("start", "warning"), ("update", "critical"), ("update", "warning"), ("end", "info")]
    assert events[1].ts == 1002.0  # escalation at once
    assert events[2].ts == 1007.0  # 5 s after the last event
    assert len({e.id for e in events}) == 1


def test_cooldown_delays_a_new_alert() -> None:
    decider = make(trigger=1, release=1, cooldown_s=5)
    events, _ = run(decider, [2, 0, 2, 2, 2, 2, 2, 2, 0])
    assert [(e.state, e.ts) for e in events] == [
        ("start", 1000.0), ("end", 1001.0), ("start", 1006.0), ("end", 1008.0)]
    assert events[0].id != events[2].id


def test_the_cooldown_holds_back_the_same_trouble_only() -> None:
    """After a process alert (a burst), a window whose top member judges a sensor (a stuck
    reading) starts an alert within the cooldown; another process window waits it out, and
    a window of unknown trouble too. The alert's trouble is that of its windows over the
    threshold: the top member of the window that ends it is noise."""

    def window(score: float, trouble: str) -> Evidence:
        ens = np.array([score])
        scores = Scores({"a": ens}, {"a": ens}, ens, np.zeros((1, 3)), np.zeros((1, 3)),
                        (trouble,) if trouble else ())
        return Evidence(scores, 0, np.zeros(3), np.zeros(3))

    def starts(windows: list[tuple[float, str]]) -> list[tuple[float, str]]:
        decider = make(trigger=1, release=1, cooldown_windows=5)
        out = []
        for i, (score, trouble) in enumerate(windows):
            event = decider.step(1000.0 + i, window(score, trouble)).event
            if event is not None and event.state == "start":
                out.append((event.ts, event.trouble))
        return out

    burst = [(2.0, "process"), (0.0, "sensor")]
    assert starts([*burst, (2.0, "sensor")]) == [(1000.0, "process"), (1002.0, "sensor")]
    assert starts(burst + [(2.0, "process")] * 6) == [(1000.0, "process"), (1006.0, "process")]
    assert starts(burst + [(2.0, "")] * 6) == [(1000.0, "process"), (1006.0, "")]


def test_cooldown_windows_counts_scored_windows_whatever_the_clock() -> None:
    """cooldown_windows: a new alert waits that many scored windows after an end (the NAB
    recipe's policy, independent of the sampling period), also after an interrupt."""
    decider = make(trigger=1, release=1, cooldown_windows=3)
    events, _ = run(decider, [2, 0, 2, 2, 2, 2, 0, 2, 2, 2])
    # ends at windows 2 and 7: windows 3-4 and 8-9 wait, windows 5 and 10 start
    assert [(e.state, e.ts) for e in events] == [
        ("start", 1000.0), ("end", 1001.0), ("start", 1004.0), ("end", 1006.0),
        ("start", 1009.0)]
    slow = make(trigger=1, release=1, cooldown_windows=3)
    events, _ = run(slow, [2, 0], t0=0.0)
    events += run(slow, [2, 2], t0=10_000.0)[0]  # hours later: still windows 3 and 4
    events += run(slow, [2], t0=10_002.0)[0]
    assert [(e.state, e.ts) for e in events] == [
        ("start", 0.0), ("end", 1.0), ("start", 10_002.0)]
    cut = make(trigger=1, release=1, cooldown_windows=2)
    run(cut, [2])
    assert cut.interrupt("gap") is not None
    events, _ = run(cut, [2, 2, 2], t0=2000.0)
    assert [(e.state, e.ts) for e in events] == [("start", 2001.0)]


def test_warm_up_windows_are_ignored() -> None:
    decider = make(trigger=1, warmup_windows=3)
    steps = [decider.step(1000.0 + i, evidence(5.0)) for i in range(5)]
    assert all(math.isnan(s.score) for s in steps[:3])
    assert [s.event.state if s.event else None for s in steps] == [None] * 3 + ["start", None]


def test_smoothing_is_a_moving_average() -> None:
    decider = make(trigger=1, smoothing=3)
    scores = [decider.step(float(i), evidence(s)).score for i, s in enumerate([3, 0, 0, 0, 6])]
    assert scores == [3.0, 1.5, 1.0, 0.0, 2.0]


def test_interrupt_ends_and_resets() -> None:
    decider = make(trigger=2, warmup_windows=1)
    run(decider, [5, 5, 5])
    assert decider.active
    event = decider.interrupt("gap")
    assert event is not None and event.state == "end" and event.reason == "gap"
    assert event.ts == 1002.0 and not decider.active
    assert decider.interrupt("gap") is None
    # warm-up and trigger count start over
    events, _ = run(decider, [5, 5, 5], t0=2000.0)
    assert [e.ts for e in events] == [2002.0]


def test_ids_are_stable_and_distinct() -> None:
    a = run(make(trigger=1), [2.0])[0][0].id
    b = run(make(trigger=1), [2.0])[0][0].id
    assert a == b == alert_id("pump1", 1000.0)
    assert a.startswith("pump1-1000-")
    assert alert_id("pump2", 1000.0) != a and alert_id("pump1", 1000.5) != a


def test_attribution_and_fence_side() -> None:
    decider = make(trigger=1)
    step = decider.step(5.0, evidence(3.0, error=(0.1, 8.0, 1.9), excess=(0.2, 4.0, 1.5),
                                      scaled=(0.1, 6.0, -3.0)))
    assert step.event is not None
    channels = step.event.channels
    assert [c.name for c in channels] == ["pressure", "flow", "temp"]
    assert math.isclose(sum(c.contribution for c in channels), 1.0)
    assert channels[0].contribution == 0.8 and channels[0].value == 1.5
    assert [c.fence for c in channels] == ["high", "low", None]
    assert step.event.scorers == {"a": 3.0, "b": 1.5}


def test_payload_is_json_with_iso_and_epoch_times() -> None:
    event = run(make(trigger=1), [2.5])[0][0]
    payload = event.to_payload(bundle=BundleInfo("b", "1.0", "ab" * 32), agent_version="0.1.0")
    text = json.dumps(payload, allow_nan=False)
    assert json.loads(text)["ts"] == "1970-01-01T00:16:40.000+00:00"
    assert payload["ts_epoch"] == 1000.0 and payload["ts_start_epoch"] == 1000.0
    assert payload["severity"] == "critical" and payload["threshold"] == 1.0
    assert payload["bundle"] == {"name": "b", "version": "1.0", "sha256": "ab" * 32}
    assert {"id", "device", "state", "score", "scorers", "channels", "agent_version"} <= set(
        payload)
    ended = make(trigger=1)
    run(ended, [2.5])
    gap_end = ended.interrupt("gap")
    assert gap_end is not None
    assert gap_end.to_payload(bundle=BundleInfo("b", "1", "x"), agent_version="v")["score"] is None
