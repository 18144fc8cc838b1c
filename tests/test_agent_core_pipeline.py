"""DevicePipeline and Gateway with a real bundle (TFLite int8 + ONNX runtimes)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge.bundle import Bundle, Decision, load_bundle
from edge.decide import AlertEvent, BundleInfo
from edge.engine import ScoringEngine
from edge.pipeline import DevicePipeline, Gateway, Outcome
from edge.readings import BadInputCounter, Reading
from tests.agent_fixtures import (
    START_TS,
    WINDOW,
    centers,
    channel_names,
    normal_rows,
    scales,
)

NAMES = channel_names()


@pytest.fixture(scope="session")
def bundle(agent_bundle: Path) -> Bundle:
    return load_bundle(agent_bundle)


@pytest.fixture(scope="session")
def engine(bundle: Bundle) -> ScoringEngine:
    return ScoringEngine(bundle)


def readings(rows: np.ndarray, device: str = "pod", t0: float = START_TS) -> list[Reading]:
    return [Reading(device, t0 + i, dict(zip(NAMES, map(float, row), strict=True)))
            for i, row in enumerate(rows)]


def faulty(n: int, start: int, stop: int, channel: int, size: float = 12.0) -> np.ndarray:
    rows = normal_rows(n, seed=3)
    rows[start:stop, channel] += size * scales()[channel]
    return rows


def events_of(outcomes: list[Outcome | None]) -> list[AlertEvent]:
    return [e for o in outcomes if o is not None for e in o.events]


def test_normal_data_raises_no_alert(engine: ScoringEngine) -> None:
    gateway = Gateway(engine)
    outcomes = [gateway.process(r) for r in readings(normal_rows(600, seed=11))]
    assert all(o is not None for o in outcomes)
    scored = [o for o in outcomes if o is not None and o.scored]
    assert len(scored) == 600 - WINDOW + 1
    assert not events_of(outcomes)
    assert max(o.score for o in scored) < 1.0
    assert set(scored[0].scores) == {"lstm", "euclidean", "mahalanobis", "iqr"}


@pytest.mark.parametrize("channel", [1, 5])
def test_fault_raises_an_alert_that_names_the_channel(engine: ScoringEngine, channel: int
                                                      ) -> None:
    gateway = Gateway(engine)
    outcomes = [gateway.process(r) for r in readings(faulty(300, 100, 160, channel))]
    events = events_of(outcomes)
    states = [e.state for e in events]
    assert states[0] == "start" and states[-1] == "end"
    start = events[0]
    assert START_TS + 100 <= start.ts_start <= START_TS + 105
    assert start.channels[0].name == NAMES[channel]
    assert start.channels[0].contribution > 0.5 and start.channels[0].fence == "high"
    # the raw value in sensor units (not scaled): about centre + 12 standard deviations
    assert start.channels[0].value > centers()[channel] + 8 * scales()[channel]
    assert start.severity == "critical" and start.score >= 2
    assert all(e.id == start.id for e in events)
    payload = start.to_payload(bundle=BundleInfo.from_bundle(engine.bundle), agent_version="t")
    json.dumps(payload, allow_nan=False)
    assert gateway.stats["pod"].alerts == 1


def test_process_batch_equals_process(engine: ScoringEngine) -> None:
    """The replay path (batches) and the live path (one at a time) decide the same."""
    rows = faulty(200, 60, 90, 2)
    items = readings(rows)
    items.insert(50, items[49])  # a duplicate
    items.insert(80, Reading("pod", START_TS + 10, {"ch0": 1.0}))  # out of order
    later = [Reading("pod", r.ts + 30, r.values) for r in items[150:]]  # a gap
    items = items[:150] + later
    counter_a, counter_b = BadInputCounter(), BadInputCounter()
    live = DevicePipeline(engine, "pod", engine.manifest.decision, counter_a)
    one = [live.process(r) for r in items]
    batch = DevicePipeline(engine, "pod", engine.manifest.decision, counter_b)
    many: list[Outcome | None] = []
    for lo in range(0, len(items), 37):
        many += batch.process_batch(items[lo:lo + 37])

    def view(o: Outcome | None) -> Any:
        if o is None:
            return None
        return (o.ts, o.scored, round(o.score, 9) if o.scored else None, o.is_anomaly,
                o.alert_id, [(e.state, e.id) for e in o.events])

    assert [view(o) for o in one] == [view(o) for o in many]
    assert counter_a.totals() == counter_b.totals() == {
        "duplicate_ts": 1, "gap": 1, "out_of_order": 1}
    assert live.stats.snapshot() == batch.stats.snapshot()
    assert one[50] is None and one[80] is None


def test_gap_ends_an_open_alert(engine: ScoringEngine) -> None:
    pipeline = DevicePipeline(engine, "pod", Decision(trigger=1), BadInputCounter())
    rows = faulty(60, 30, 60, 4)
    outcomes = [pipeline.process(r) for r in readings(rows)]
    assert pipeline.decider.active
    after = pipeline.process(Reading("pod", START_TS + 500, dict.fromkeys(NAMES, 10.0)))
    assert after is not None and not after.scored and not after.is_anomaly
    assert after.alert is not None and after.alert.state == "end" and after.alert.reason == "gap"
    assert after.alert.id == events_of(outcomes)[0].id


def test_gateway_devices_stats_and_limits(engine: ScoringEngine) -> None:
    clock = iter(np.arange(0, 1e6, 0.5).tolist())
    gateway = Gateway(engine, max_devices=2, clock=lambda: next(clock))
    for r in readings(normal_rows(30, seed=1), device="a"):
        gateway.process(Reading(r.device, r.ts, r.values, received=0.25))
    gateway.process(readings(normal_rows(1), device="b")[0])
    assert gateway.process(readings(normal_rows(1), device="c")[0]) is None
    assert set(gateway.pipelines) == {"a", "b"}
    metrics = gateway.metrics()
    json.dumps(metrics, allow_nan=False)
    a = metrics["devices"]["a"]
    assert a["readings"] == 30 and a["windows_scored"] == 30 - WINDOW + 1
    assert a["latency_p50_ms"] is not None and a["latency_p50_ms"] >= 0
    assert metrics["bad_total"] == {"too_many_devices": 1}


def test_missing_channels_are_forward_filled(engine: ScoringEngine) -> None:
    pipeline = DevicePipeline(engine, "pod", engine.manifest.decision, BadInputCounter())
    rows = normal_rows(40, seed=5)
    items = readings(rows)
    items[20] = Reading("pod", items[20].ts, {"ch0": 10.0})
    outcome = pipeline.process_batch(items)[20]
    assert outcome is not None and outcome.scored and outcome.score < 1.0
    assert pipeline.stats.filled == 1


def test_swap_engine_keeps_windows_when_compatible(bundle: Bundle, tmp_path: Path) -> None:
    gateway = Gateway(ScoringEngine(bundle))
    for r in readings(normal_rows(WINDOW + 2)):
        gateway.process(r)
    assert gateway.swap_engine(ScoringEngine(bundle)) == []
    nxt = gateway.process(readings(normal_rows(1), t0=START_TS + WINDOW + 2)[0])
    assert nxt is not None and nxt.scored  # no new warm-up
    # a bundle with other channels: the devices start over
    other = _bundle_with_window(bundle, tmp_path, WINDOW // 2)
    gateway.swap_engine(ScoringEngine(other))
    nxt = gateway.process(readings(normal_rows(1), t0=START_TS + WINDOW + 3)[0])
    assert nxt is not None and not nxt.scored
    assert gateway.pipelines["pod"].stats.readings == WINDOW + 4


def _bundle_with_window(bundle: Bundle, target: Path, length: int) -> Bundle:
    """The same models with a different window length (the ONNX model does not care; the
    TFLite model is never called because the manifest drops the lstm scorer)."""
    import shutil

    from edge.bundle import WindowSpec, checksums, write_manifest

    shutil.copy(bundle.file("distance.onnx"), target / "distance.onnx")
    m = bundle.manifest
    scorers = [s for s in m.scorers if s.kind != "lstm_ae"]
    manifest = m.model_copy(update={
        "window": WindowSpec(length=length),
        "models": {"distance": m.models["distance"]},
        "lstm_ae": None,
        "scorers": scorers,
        "ensemble": m.ensemble.model_copy(update={"members": [s.name for s in scorers]}),
        "files": checksums(target, ["distance.onnx"]),
    })
    write_manifest(target, type(m).model_validate(manifest.model_dump()))
    return load_bundle(target)


def test_close_and_expire(engine: ScoringEngine) -> None:
    gateway = Gateway(engine, decision=Decision(trigger=1))
    for r in readings(faulty(40, 20, 40, 0)):
        gateway.process(r)
    assert gateway.expire(START_TS + 41) == []  # still fresh
    ended = gateway.expire(START_TS + 39 + 60)
    assert [e.reason for e in ended] == ["stale"]
    assert gateway.close() == []
    for r in readings(faulty(40, 20, 40, 0), t0=START_TS + 1000):
        gateway.process(r)
    assert [e.reason for e in gateway.close()] == ["shutdown"]
