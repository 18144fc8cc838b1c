"""Scoring state kept across restarts: a snapshot taken back continues to the bit where the
state left off; the file belongs to one bundle; a damaged or foreign file is skipped with a
warning; and the agent takes a device's state back, so a level it accepted before a restart
does not alert again after it."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import pytest

from edge.agent import Agent
from edge.bundle import (
    LikelihoodSpec,
    LongShapeSpec,
    Manifest,
    MemorySpec,
    RangeSpec,
    ScorerSpec,
    Threshold,
    load_bundle,
)
from edge.config import parse_config
from edge.pipeline import Gateway
from edge.score_state import ScoreState
from edge.sources import Payload
from edge.state_store import StateStore
from tests.agent_fixtures import (
    CHANNELS,
    LAGS,
    bundle_variant,
    centers,
    channel_names,
    make_manifest,
    normal_rows,
    scales,
)

FILES = {"lstm_ae.tflite": "0" * 64, "distance.onnx": "0" * 64}
THRESHOLDS = {"lstm": 1.0, "euclidean": 1.0, "mahalanobis": 1.0}


def stateful(manifest: Manifest, history: int = 200) -> Manifest:
    """The fixture manifest with a memory and a likelihood on `euclidean`, a range scorer and
    a long shape."""
    scorers = [s.model_copy(update={
        "memory": MemorySpec(lags=LAGS, size=120, gap=5, k=2),
        "likelihood": LikelihoodSpec(short=5, history=history, min_history=20)})
        if s.name == "euclidean" else s for s in manifest.scorers]
    scorers.append(ScorerSpec(name="range", kind="range",
                              threshold=Threshold(value=0.1, method="tolerance")))
    scorers.append(ScorerSpec(
        name="long_shape_12", kind="long_shape", long_shape=LongShapeSpec(block=3, blocks=4),
        memory=MemorySpec(lags=4, size=100, gap=12, k=2),
        likelihood=LikelihoodSpec(short=5, history=history, min_history=20),
        threshold=Threshold(value=3.0, method="likelihood")))
    return manifest.model_copy(update={
        "scorers": scorers, "range": RangeSpec(low=[-2.0] * CHANNELS, high=[2.0] * CHANNELS)})


def step(state: ScoreState, rows: np.ndarray, vectors: np.ndarray) -> dict[str, np.ndarray]:
    from tests.scorers.harness import rows_batch, stepped

    euclidean = np.sqrt(np.square(vectors).sum(axis=1))
    return stepped(state, rows_batch(rows, lag_vectors=vectors,
                                     distances={"euclidean": euclidean}))


def stream(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    rows = np.cumsum(rng.normal(size=(n, CHANNELS)), axis=0) * 0.2
    return rows, rng.normal(size=(n, LAGS * CHANNELS))


def test_a_snapshot_taken_back_continues_to_the_bit() -> None:
    manifest = stateful(make_manifest(FILES, THRESHOLDS, CHANNELS, 16))
    rows, vectors = stream(400)
    whole = step(ScoreState(manifest), rows, vectors)
    first = ScoreState(manifest)
    step(first, rows[:250], vectors[:250])
    saved = first.snapshot()
    assert {k.split(".")[0] for k in saved} == {"memory", "likelihood", "range", "long_shape"}
    second = ScoreState(manifest)
    second.restore(saved)
    rest = step(second, rows[250:], vectors[250:])
    for name in ("euclidean", "range", "long_shape_12"):
        assert np.array_equal(rest[name], whole[name][250:])
    fresh = step(ScoreState(manifest), rows[250:], vectors[250:])
    for name in ("euclidean", "long_shape_12"):
        assert not np.array_equal(fresh[name], whole[name][250:])  # it mattered


def test_a_state_that_does_not_fit_is_refused_and_leaves_the_state_as_it_was() -> None:
    manifest = stateful(make_manifest(FILES, THRESHOLDS, CHANNELS, 16))
    rows, vectors = stream(100)
    donor = ScoreState(stateful(make_manifest(FILES, THRESHOLDS, CHANNELS, 16), history=300))
    step(donor, rows, vectors)
    state = ScoreState(manifest)
    step(state, rows[:10], vectors[:10])
    before = state.snapshot()
    with pytest.raises(ValueError, match="does not fit this bundle: likelihood history of 300"):
        state.restore(donor.snapshot())
    after = state.snapshot()
    assert after.keys() == before.keys()
    assert all(np.array_equal(after[k], before[k]) for k in before)
    with pytest.raises(ValueError, match="parts"):
        state.restore({"range.low": np.zeros(CHANNELS), "range.high": np.ones(CHANNELS)})


def test_the_file_belongs_to_one_bundle(tmp_path: Path, caplog: pytest.LogCaptureFixture
                                        ) -> None:
    manifest = stateful(make_manifest(FILES, THRESHOLDS, CHANNELS, 16))
    rows, vectors = stream(60)
    state = ScoreState(manifest)
    step(state, rows, vectors)
    store = StateStore(tmp_path / "state" / "s.npz", manifest)
    store.save({"pod-1": state, "pod-2": ScoreState(manifest)})
    loaded = store.load()
    assert sorted(loaded) == ["pod-1", "pod-2"]
    assert all(np.array_equal(loaded["pod-1"][k], v) for k, v in state.snapshot().items())
    assert not (tmp_path / "state" / "s.npz.tmp").exists()
    other = manifest.model_copy(update={"files": {k: "1" * 64 for k in FILES}})
    with caplog.at_level(logging.WARNING, logger="edge.state"):
        assert StateStore(tmp_path / "state" / "s.npz", other).load() == {}
        (tmp_path / "bad.npz").write_bytes(b"not a zip")
        assert StateStore(tmp_path / "bad.npz", manifest).load() == {}
        (tmp_path / "dir.npz").mkdir()
        StateStore(tmp_path / "dir.npz", manifest).save({"pod-1": state})  # logged only
    messages = " | ".join(r.getMessage() for r in caplog.records)
    assert "belongs to another bundle" in messages and "unreadable" in messages
    assert "not saved" in messages


def test_a_background_save_writes_the_moment_it_was_asked_for(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The snapshot is taken on the caller's thread: a device that moves on while the file is
    written is saved as it was. While a write runs, another is declined, and `save` waits
    for it."""
    import threading

    manifest = stateful(make_manifest(FILES, THRESHOLDS, CHANNELS, 16))
    rows, vectors = stream(120)
    state = ScoreState(manifest)
    step(state, rows[:60], vectors[:60])
    then = state.snapshot()
    store = StateStore(tmp_path / "s.npz", manifest)
    release, writing = threading.Event(), threading.Event()
    write = store._write

    def slow_write(arrays: dict[str, np.ndarray]) -> None:
        writing.set()
        release.wait(10)
        write(arrays)

    monkeypatch.setattr(store, "_write", slow_write)
    assert store.save_in_background({"pod": state})
    assert writing.wait(10)
    step(state, rows[60:], vectors[60:])  # the device moves on while the file is written
    assert not store.save_in_background({"pod": state})  # one write at a time
    assert not (tmp_path / "s.npz").exists()
    release.set()
    store.wait()
    loaded = store.load()["pod"]
    assert loaded.keys() == then.keys()
    assert all(np.array_equal(loaded[k], v) for k, v in then.items())
    assert not all(np.array_equal(loaded[k], v) for k, v in state.snapshot().items())
    monkeypatch.setattr(store, "_write", write)
    store.save({"pod": state})
    assert all(np.array_equal(store.load()["pod"][k], v) for k, v in state.snapshot().items())


def test_the_gateway_takes_a_device_state_back_on_first_sight(agent_bundle: Path,
                                                              tmp_path: Path) -> None:
    from edge.engine import ScoringEngine

    bundle = load_bundle(ranged_bundle(agent_bundle, tmp_path))
    engine = ScoringEngine(bundle)
    from tests.scorers.harness import rows_batch

    donor = engine.new_state()
    donor.score(rows_batch(np.full((1, CHANNELS), 9.0)))
    gateway = Gateway(engine, saved={"pod": donor.snapshot(), "gone": {"x.y": np.zeros(1)}})
    pipeline = gateway.pipeline("pod")
    assert pipeline is not None
    assert pipeline.state.of("range")["range"].high.tolist() == [9.0] * CHANNELS
    stray = gateway.pipeline("gone")  # a state that does not fit: fresh, with a warning
    assert stray is not None
    assert stray.state.of("range")["range"].high.tolist() == [2.0] * CHANNELS
    assert gateway.saved == {}


def ranged_bundle(agent_bundle: Path, tmp_path: Path) -> Path:
    """The agent fixture bundle judged by a range scorer alone (training range +-2 scaled
    units), an alert starting on the first window over."""
    m = load_bundle(agent_bundle).manifest
    scorers = [*m.scorers, ScorerSpec(name="range", kind="range",
                                      threshold=Threshold(value=0.1, method="tolerance"))]
    return bundle_variant(
        agent_bundle, tmp_path / "ranged", scorers=scorers,
        ensemble=m.ensemble.model_copy(update={"members": ["range"]}),
        decision=m.decision.model_copy(update={"trigger": 1, "release": 1, "smoothing": 1}),
        range=RangeSpec(low=[-2.0] * CHANNELS, high=[2.0] * CHANNELS))


def test_a_restarted_agent_does_not_alert_again_on_a_level_it_accepted(
        agent_bundle: Path, tmp_path: Path) -> None:
    bundle = ranged_bundle(agent_bundle, tmp_path)
    names = channel_names()

    def agent(state_path: str) -> Agent:
        config = parse_config({"bundle": {"path": str(bundle)},
                               "sources": [{"type": "stdin", "device": "pod"}],
                               "outbox": {"path": str(tmp_path / "o.sqlite3")},
                               "state": {"path": state_path}}, environ={})
        a = Agent(config, load_bundle(config.bundle.path))
        a.outbox.open()
        return a

    def feed(a: Agent, rows: np.ndarray, ts0: float) -> list[str]:
        before = {i.seq for i in a.outbox.pending()}
        for i, r in enumerate(rows):
            line = json.dumps({"ts": ts0 + i, **dict(zip(names, r.tolist(), strict=True))})
            a.handle(Payload("pod", line.encode(), time.monotonic()))
        return [i.state for i in a.outbox.pending() if i.seq not in before]

    rows = normal_rows(120, seed=3)
    rows[60:63, 2] = centers()[2] + 2.6 * scales()[2]  # a record: 30% of the range beyond it
    now = time.time() - 250  # within the agent's 300 s of clock skew
    first = agent(str(tmp_path / "state.npz"))
    assert feed(first, rows, now)[:1] == ["start"]  # the record alerts
    first.gateway.close("shutdown")
    first.save_state(background=True)  # the periodic save: written on a worker thread
    assert first.state is not None
    first.state.wait()
    first.outbox.close()
    again = rows[40:80]  # the same readings again, the record among them
    quiet = agent(str(tmp_path / "state.npz"))  # a run that never hears from the device
    quiet.save_state()
    quiet.outbox.close()
    kept = agent(str(tmp_path / "state.npz"))
    assert feed(kept, again, now + 190) == []  # taken back: the level is known
    kept.outbox.close()
    forgot = agent("")
    assert forgot.state is None
    assert feed(forgot, again, now + 190)[:1] == ["start"]  # without it, it alerts again
    forgot.outbox.close()


def test_the_state_config_resolves_turns_off_and_names_a_bad_value(tmp_path: Path) -> None:
    from edge.config import ConfigError, summary

    base = {"bundle": {"path": "b"}, "sources": [{"type": "stdin", "device": "pod"}]}
    kept = parse_config(base, base_dir=tmp_path, environ={})
    assert kept.state.path == tmp_path / "scoring-state.npz"
    assert f"state     {tmp_path / 'scoring-state.npz'} (saved every 300 s" in "\n".join(
        summary(kept))
    off = parse_config({**base, "state": {"path": ""}}, base_dir=tmp_path, environ={})
    assert off.state.path is None and "state     not kept" in "\n".join(summary(off))
    with pytest.raises(ConfigError, match=r"state\.save_every_s = 0"):
        parse_config({**base, "state": {"save_every_s": 0}}, environ={})
