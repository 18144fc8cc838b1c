"""Feedback and snooze on the device, in-process (the MQTT path: tests/test_closed_loop_mqtt.py):
taught vectors in the memory, `feedback normal` stopping a recurring event while faults still
alert, what is kept for it, the refusals, the record, and snoozes."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from edge.bundle import MemorySpec, Threshold
from edge.commands import CommandError, Request, parse_fields
from edge.decide import AlertEvent
from edge.feedback import AlertKeeper, Retention, memories
from edge.memory import LagMemory
from edge.pipeline import Gateway
from tests.agent_fixtures import bundle_variant
from tests.batch_splits import assert_any_split_gives_the_same_bits
from tests.closed_loop_fixtures import (
    EVENT_CHANNEL,
    FAULT_CHANNEL,
    Stream,
    make_agent,
    memory_bundle,
    published_starts,
    warm,
)


@pytest.fixture(scope="module")
def mem_bundle(agent_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return memory_bundle(agent_bundle, tmp_path_factory.mktemp("mem") / "bundle")


def feedback(alert_id: str, label: str = "normal", device: str | None = None,
             note: str = "") -> Request:
    return Request("feedback", alert_id, "edge-anomaly/agent/cmd", "agent", device, alert_id,
                   label, note)


# -- the memory ------------------------------------------------------------------------------
def test_taught_vectors_are_near_for_good_and_saved() -> None:
    spec = MemorySpec(lags=1, size=50, gap=5, k=2)
    memory = LagMemory(spec)
    quiet = np.zeros((60, 2))
    burst = np.array([[4.0, -4.0]])
    assert memory.distances(np.vstack([quiet, burst]))[-1] > 5  # never seen: far
    memory.teach(burst + 0.1)
    assert memory.distances(burst)[0] == pytest.approx(np.sqrt(0.02))  # taught: near at once
    memory.distances(np.zeros((500, 2)))  # the stream rolls the recent vectors out...
    assert memory.distances(burst)[0] == pytest.approx(np.sqrt(0.02))  # ...not the taught
    saved = memory.snapshot()
    back = LagMemory(spec)
    back.restore(saved)
    assert np.array_equal(back.taught, memory.taught)
    assert back.distances(burst)[0] == pytest.approx(np.sqrt(0.02))
    old = {k: v for k, v in saved.items() if k != "taught"}  # a state file from before
    older = LagMemory(spec)
    older.restore(old)
    assert older.taught.size == 0 and older.distances(burst)[0] > 3
    with pytest.raises(ValueError, match="taught"):
        LagMemory(spec).restore({**saved, "taught": np.zeros((3, 7))})
    with pytest.raises(ValueError, match="features"):
        memory.teach(np.zeros((2, 3)))


def test_teaching_beyond_the_size_forgets_the_oldest_taught() -> None:
    memory = LagMemory(MemorySpec(lags=1, size=10, gap=2, k=1))
    assert memory.teach(np.arange(8.0)[:, None]) == 0
    assert memory.teach(np.arange(100.0, 106.0)[:, None]) == 4
    assert memory.taught[:, 0].tolist() == [4, 5, 6, 7, 100, 101, 102, 103, 104, 105]
    assert memory.teach(np.array([[np.nan]])) == 0 and len(memory.taught) == 10


def test_taught_memory_gives_the_same_bits_whatever_the_batch_split() -> None:
    spec = MemorySpec(lags=1, size=40, gap=5, k=2)
    stream = np.cumsum(np.random.default_rng(4).normal(size=(400, 3)), axis=0) * 0.1
    taught = np.random.default_rng(5).normal(size=(30, 3))

    def make() -> LagMemory:
        memory = LagMemory(spec)
        memory.teach(taught)
        return memory

    assert_any_split_gives_the_same_bits(make, LagMemory.distances, stream)


# -- what is kept ----------------------------------------------------------------------------
def test_an_alerts_vectors_are_kept_with_a_lead_and_thinned_when_long(
        mem_bundle: Path, tmp_path: Path) -> None:
    agent, _ = make_agent(mem_bundle, tmp_path, {"feedback": {"lead_windows": 10,
                                                              "max_windows": 16}})
    stream = Stream(agent)
    warm(stream)
    started = stream.feed(60, EVENT_CHANNEL)
    stream.feed(100)
    recording = agent.loop.keeper.find(started[0])
    assert recording is not None and recording.ts_end is not None
    vectors = recording.arrays()["memory.euclidean"]
    assert vectors.shape[1] == 16  # 2 lags x 8 channels
    assert 8 <= len(vectors) <= 16 and recording.stride >= 2  # thinned, evenly
    # the lead: the vectors of the windows before the start, from the memory itself
    assert recording.channels[0] == f"ch{EVENT_CHANNEL}"
    agent.outbox.close()


def test_kept_alerts_are_bounded_by_count_age_and_bytes() -> None:
    clock = [0.0]
    keeper = AlertKeeper(Retention(lead=2, max_windows=8, keep_alerts=2, keep_s=100,
                                   max_bytes=10_000), clock=lambda: clock[0])
    for i in range(4):
        ended_recording(keeper, f"a{i}", "pod", vectors=3)
    assert list(keeper.ended) == ["a2", "a3"]  # the last 2 of the device
    ended_recording(keeper, "b0", "other", vectors=3)
    assert "b0" in keeper.ended and len(keeper.ended) == 3
    clock[0] = 101.0
    keeper.expire()
    assert not keeper.ended  # all older than keep_s
    ended_recording(keeper, "big", "pod", vectors=200)  # 200 x 16 float64 > 10 kB
    assert "big" not in keeper.ended


def ended_recording(keeper: AlertKeeper, alert_id: str, device: str, vectors: int) -> None:
    start = AlertEvent(alert_id, device, "start", 0.0, 0.0, 2.0, 1.0, "warning", {}, [], 2.0, 1)
    keeper.events([start])
    tap = keeper.tap(device)
    assert tap.open is not None
    tap.open.vectors = {"memory.x": [np.zeros(16) for _ in range(vectors)]}
    keeper.events([dataclasses.replace(start, state="end", ts=1.0)])


# -- feedback normal -------------------------------------------------------------------------
def test_feedback_normal_stops_a_recurring_event_and_faults_still_alert(
        mem_bundle: Path, tmp_path: Path) -> None:
    """Events 330 rows apart alert each time; after one `feedback normal` on the first, none
    of the later ones does, while a fault on another channel still alerts; the same stream
    without the feedback alerts on every event."""
    schedule = [EVENT_CHANNEL, EVENT_CHANNEL, FAULT_CHANNEL, EVENT_CHANNEL, FAULT_CHANNEL]
    results = {}
    for mode in ("without", "with"):
        agent, replies = make_agent(mem_bundle, tmp_path / mode)
        stream = Stream(agent)
        warm(stream)
        first = stream.bursts([EVENT_CHANNEL])[0]
        assert len(first) == 1
        if mode == "with":
            agent.loop.submit(feedback(first[0], note="cooking"))
            agent.publish(agent.loop.tick())
            reply = replies.last("feedback")
            assert reply["label"] == "normal" and reply["taught"]["memory.euclidean"] > 30
            assert reply["learned"] is True and reply["channels"][0] == f"ch{EVENT_CHANNEL}"
        later = stream.bursts(schedule)
        results[mode] = [len(ids) for ids in later]
        agent.outbox.close()
    events = [i for i, c in enumerate(schedule) if c == EVENT_CHANNEL]
    faults = [i for i, c in enumerate(schedule) if c == FAULT_CHANNEL]
    assert [results["without"][i] for i in events] == [1, 1, 1]
    assert [results["with"][i] for i in events] == [0, 0, 0]
    assert [results["with"][i] for i in faults] == [results["without"][i] for i in faults] == [
        1, 1]


def test_what_was_taught_survives_a_restart_and_a_reload_of_other_models(
        mem_bundle: Path, tmp_path: Path) -> None:
    agent, replies = make_agent(mem_bundle, tmp_path)
    stream = Stream(agent)
    warm(stream)
    first = stream.bursts([EVENT_CHANNEL])[0]
    agent.loop.submit(feedback(first[0]))
    agent.publish(agent.loop.tick())
    assert replies.last("feedback")["learned"]
    assert agent.state is not None
    agent.state.wait()  # the state was saved at once, in the background
    agent.outbox.close()
    agent.loop.close()
    # a restart (the state file): the event does not alert
    again, _ = make_agent(mem_bundle, tmp_path)
    follow = Stream(again, ts0=stream.ts)
    assert follow.bursts([EVENT_CHANNEL]) == [[]]
    # a reload to other models of the same shape: the taught vectors are carried over
    gateway: Gateway = again.gateway
    manifest = gateway.engine.manifest
    other = bundle_variant(mem_bundle, tmp_path / "v2", version="2", scorers=[
        s.model_copy(update={"threshold": Threshold(value=s.threshold.value * 1.01,
                                                    method="quantile")})
        for s in manifest.scorers])
    from edge.bundle import load_bundle
    from edge.engine import ScoringEngine

    before = memories(gateway.pipelines["pod"].state)["memory.euclidean"].taught
    again.publish(gateway.swap_engine(ScoringEngine(load_bundle(other))))
    after = memories(gateway.pipelines["pod"].state)["memory.euclidean"]
    assert np.array_equal(after.taught, before) and after.count == 0  # recent ones reset
    assert follow.bursts([EVENT_CHANNEL]) == [[]]
    assert len(follow.bursts([FAULT_CHANNEL])[0]) == 1
    again.outbox.close()


def test_feedback_normal_on_an_open_alert_teaches_its_windows_as_they_come(
        mem_bundle: Path, tmp_path: Path) -> None:
    agent, replies = make_agent(mem_bundle, tmp_path)
    stream = Stream(agent)
    warm(stream)
    started = stream.feed(300) + stream.feed(8, EVENT_CHANNEL)
    assert len(started) == 1
    agent.loop.submit(feedback(started[0]))
    agent.publish(agent.loop.tick())
    reply = replies.last("feedback")
    assert reply["open"] is True and reply["ts_end"] is None
    taught_then = len(memories(agent.gateway.pipelines["pod"].state)["memory.euclidean"].taught)
    recording = agent.loop.keeper.find(started[0])
    assert recording is not None
    windows_then = recording.windows
    stream.feed(40, EVENT_CHANNEL)  # the event goes on: its new windows are taught too...
    taught_now = len(memories(agent.gateway.pipelines["pod"].state)["memory.euclidean"].taught)
    assert recording.ts_end is not None and recording.reason == "released"  # ...until its end
    assert taught_now == taught_then + recording.windows - windows_then > taught_then
    assert stream.bursts([EVENT_CHANNEL]) == [[]]
    agent.outbox.close()


# -- feedback anomaly, refusals, the record ---------------------------------------------------
def test_feedback_refusals_say_why_and_record_nothing(mem_bundle: Path, tmp_path: Path) -> None:
    agent, replies = make_agent(mem_bundle, tmp_path, {"feedback": {"keep_alerts": 1}})
    refused: list[tuple[str, str]] = []
    agent._reject = lambda topic, reason, rid: refused.append((str(rid), reason))  # type: ignore[method-assign]
    agent.loop.reject = agent._reject
    stream = Stream(agent)
    warm(stream)
    first, second = (ids[0] for ids in stream.bursts([EVENT_CHANNEL, FAULT_CHANNEL]))
    store = agent.loop.store
    for request in (feedback("pod-123-nope"), feedback(second, device="pod-2"),
                    feedback(first)):  # the first is no longer kept (keep_alerts 1)
        agent.loop.submit(request)
    agent.publish(agent.loop.tick())
    assert [r[0] for r in refused] == ["pod-123-nope", second, first]
    assert "unknown alert id 'pod-123-nope'" in refused[0][1]
    assert f"alert {second} is of device 'pod', not 'pod-2'" in refused[1][1]
    assert "can no longer be taught" in refused[2][1] and "last 1 alerts" in refused[2][1]
    assert store.feedback() == []  # nothing recorded
    # `anomaly` needs only the alert's record: the first one can still be confirmed
    agent.loop.submit(feedback(first, "anomaly", note="real leak"))
    agent.publish(agent.loop.tick())
    rows = store.feedback()
    assert [(r["alert_id"], r["label"], r["note"]) for r in rows] == [
        (first, "anomaly", "real leak")]
    record = store.alert(first)
    assert record is not None and record.label == "anomaly"
    assert rows[0]["ts_start"] == record.ts_start and rows[0]["ts_end"] == record.ts_end
    assert rows[0]["channels"][0] == f"ch{EVENT_CHANNEL}"
    assert replies.last("feedback")["taught"] == {}
    agent.outbox.close()


def test_feedback_without_a_memory_is_recorded_and_says_nothing_was_learned(
        agent_bundle: Path, tmp_path: Path) -> None:
    agent, replies = make_agent(agent_bundle, tmp_path)
    stream = Stream(agent)
    stream.feed(60)
    started = stream.feed(30, EVENT_CHANNEL)
    stream.feed(30)
    agent.loop.submit(feedback(started[0]))
    agent.publish(agent.loop.tick())
    reply = replies.last("feedback")
    assert reply["learned"] is False and "no memory" in reply["why"] and reply["taught"] == {}
    assert agent.loop.store.alert(started[0]).label == "normal"  # type: ignore[union-attr]
    agent.outbox.close()


@pytest.mark.parametrize(("payload", "reason"), [
    (b'{"action": "feedback", "label": "normal"}', "`id` must be a non-empty string"),
    (b'{"action": "feedback", "id": "a", "label": "fine"}',
     "`label` must be one of normal, anomaly (got 'fine')"),
    (b'{"action": "feedback", "id": "a"}', "`label` must be one of normal, anomaly (got missing)"),
    (b'{"action": "feedback", "id": "a", "label": "normal", "note": 5}', "`note` must be a string"),
    (b'{"action": "snooze", "device": "pod", "for_s": 0}', "`for_s` must be a number"),
    (b'{"action": "snooze", "device": "pod", "for_s": 1e9}', "at most 604800"),
    (b'{"action": "snooze", "device": "pod", "for_s": true}', "`for_s` must be a number"),
    (b'{"action": "snooze", "device": "pod"}', "`for_s` must be a number"),
    (b'{"action": "unsnooze", "device": 3}', "`device` must be a non-empty string"),
])
def test_bad_feedback_and_snooze_commands_say_why(payload: bytes, reason: str) -> None:
    with pytest.raises(CommandError) as info:
        parse_fields(payload)
    assert reason in str(info.value)


def test_good_commands_parse() -> None:
    assert parse_fields(b'{"action": "feedback", "id": "x-1", "label": "anomaly", "note": "ok"}'
                        ) == ("feedback", "x-1", {"alert_id": "x-1", "label": "anomaly",
                                                  "note": "ok", "device": None})
    assert parse_fields(b'{"action": "snooze", "device": "pod", "for_s": 60}')[2] == {
        "device": "pod", "for_s": 60.0}


# -- snooze ----------------------------------------------------------------------------------
def test_snooze_ends_the_open_alert_records_without_publishing_and_runs_out(
        mem_bundle: Path, tmp_path: Path) -> None:
    clock = [1_000_000.0]
    agent, replies = make_agent(mem_bundle, tmp_path, clock=clock)
    stream = Stream(agent)
    warm(stream)
    open_id = (stream.feed(300) + stream.feed(8, EVENT_CHANNEL))[0]
    agent.loop.submit(Request("snooze", None, "p/pod/cmd", "pod", "pod", for_s=600))
    agent.publish(agent.loop.tick())
    assert replies.last("snoozed")["ended"] == open_id
    assert replies.last("snoozed")["until"] == clock[0] + 600
    ends = [json.loads(i.payload) for i in agent.outbox.pending(limit=10_000)
            if i.state == "end"]
    assert [(e["id"], e["reason"]) for e in ends] == [(open_id, "snoozed")]
    snap = agent.status_snapshot()
    assert snap.devices["pod"].snoozed_until == clock[0] + 600
    published = published_starts(agent)
    quiet = stream.feed(300) + stream.feed(30, FAULT_CHANNEL)  # alerts while snoozed...
    assert len(quiet) == 1 and published_starts(agent) == published  # ...not published
    record = agent.loop.store.alert(quiet[0])
    assert record is not None and not record.published and record.ts_end is not None
    # a snoozed alert still open when the snooze runs out is published then, start to end
    held = stream.feed(300) + stream.feed(8, FAULT_CHANNEL)
    clock[0] += 601
    agent.publish(agent.loop.tick())
    assert replies.last("unsnoozed")["reason"] == "expired"
    assert replies.last("unsnoozed")["published"] == held
    assert published_starts(agent) == [*published, *held]
    stream.feed(60)
    states = [(i.alert_id, i.state) for i in agent.outbox.pending(limit=10_000)
              if i.alert_id == held[0]]
    assert states[0] == (held[0], "start") and states[-1] == (held[0], "end")
    assert agent.status_snapshot().devices["pod"].snoozed_until is None
    agent.outbox.close()


def test_a_snooze_survives_a_restart(mem_bundle: Path, tmp_path: Path) -> None:
    agent, _ = make_agent(mem_bundle, tmp_path)
    agent.loop.submit(Request("snooze", 7, "p/agent/cmd", "agent", "pod", for_s=3600))
    agent.publish(agent.loop.tick())
    agent.outbox.close()
    agent.loop.close()
    again, _ = make_agent(mem_bundle, tmp_path)
    assert "pod" in again.loop.snoozed
    assert again.status_snapshot().devices["pod"].snoozed_until == again.loop.snoozed["pod"]
    again.loop.submit(Request("unsnooze", None, "p/pod/cmd", "pod", "pod"))
    again.publish(again.loop.tick())
    assert again.loop.snoozed == {} and again.loop.store.snoozes() == {}
    again.outbox.close()
