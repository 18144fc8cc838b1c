"""The taught memory of a window-features distance (issue 17): `feedback normal` on a bundle of
the multivariate recipe, whose distance model has no memory of its own.

The device whitens a window's features as the trainer's model does; a taught window's
departure (its whitened components beyond `level`) excuses windows near it and nothing else;
nothing taught changes nothing; the same bits whatever the batch split; saved and restored;
and in an agent: a recurring event stops alerting after one `feedback normal` while a fault
on another channel still alerts, across a restart and a reload of other models.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edge.bundle import Ensemble, Threshold, load_bundle, manifest_json
from edge.commands import Request
from edge.feedback import memories
from edge.memory import RECENT, TaughtMemory
from edge.scorers.distance import DistanceScorerSpec
from edge.scorers.spec import TaughtSpec
from tests.agent_fixtures import LAGS, bundle_variant
from tests.batch_splits import assert_any_split_gives_the_same_bits
from tests.closed_loop_fixtures import EVENT_CHANNEL, FAULT_CHANNEL, Stream, make_agent, warm

CHANNELS = 8


def fixture_spec(channels: int = CHANNELS, lags: int = LAGS, size: int = 3000) -> TaughtSpec:
    """The features of the fixture bundle's rows: the mean of every channel (unit weight) and
    its log sd (a small weight: two rows give a noisy sd)."""
    factor = np.diag([1.0] * channels + [0.1] * channels)
    center = [0.0] * channels + [float(np.log(0.5 + 0.3))] * channels
    return TaughtSpec(lags=lags, keep=list(range(channels)), eps=0.3, center=center,
                      factor=factor.tolist(), size=size)


# -- the memory ------------------------------------------------------------------------------
def test_the_device_whitens_as_the_trainers_model_does() -> None:
    from export.config import FitConfig
    from export.window_features import fit_window_features, taught_spec

    rng = np.random.default_rng(3)
    base = rng.normal(size=(3000, 1))
    rows = np.hstack([base + 0.3 * rng.normal(size=(3000, 3)),  # three twins
                      rng.normal(size=(3000, 2)),
                      np.cumsum(rng.normal(size=(3000, 1)), axis=0) * 0.2])  # a slow one
    lags = 4
    x = np.lib.stride_tricks.sliding_window_view(rows, lags, axis=0).transpose(0, 2, 1)
    x = np.ascontiguousarray(x).reshape(len(x), -1)
    config = FitConfig(twin_features=True, slow_ratio=0.5)
    model = fit_window_features(x, lags, rows, config, ["o3_1", "o3_2", "o3_3", "a", "b", "t"])
    assert model.twins is not None and model.twins.shape[1] == 3 and not model.keep.all()
    spec = taught_spec(model, config)
    assert spec is not None and spec.size == 3000 and spec.level == 2.0
    whitened = TaughtMemory(spec).whiten(x[:500])
    assert np.allclose(np.linalg.norm(whitened, axis=1), model.scores(x[:500])[
        "window_mahalanobis"], rtol=1e-12, atol=1e-12)
    assert taught_spec(model, FitConfig(taught_memory=0)) is None
    assert taught_spec(object(), config) is None  # another distance model: none


def test_a_taught_departure_excuses_its_neighbourhood_and_nothing_else() -> None:
    memory = TaughtMemory(fixture_spec())
    rng = np.random.default_rng(1)
    quiet = rng.normal(scale=0.5, size=(50, LAGS * CHANNELS))
    assert np.isinf(memory.distances(quiet)).all()  # nothing taught: no excuse
    event = quiet[:10].reshape(10, LAGS, CHANNELS).copy()
    event[:, :, 3] += 12.0
    fault = quiet[10:20].reshape(10, LAGS, CHANNELS).copy()
    fault[:, :, 5] += 12.0
    memory.teach(event[:5].reshape(5, -1))
    near = memory.distances(event[5:].reshape(5, -1))  # the same event, another day
    far = memory.distances(fault.reshape(10, -1))
    model = np.linalg.norm(memory.whiten(fault.reshape(10, -1)), axis=1)
    assert near.max() < 3.0  # the event's other windows: near
    assert far.min() > model.max()  # a fault elsewhere: farther than the model's own distance
    # only what made the taught window unusual counts: its normal components are left out
    whitened = memory.whiten(event[:1].reshape(1, -1))[0]
    assert np.count_nonzero(np.abs(whitened) >= 2.0) == 1 < np.count_nonzero(whitened)


def test_taught_windows_beyond_the_size_forget_the_oldest_and_bad_rows_are_refused() -> None:
    memory = TaughtMemory(fixture_spec(size=10))
    rows = np.arange(8.0)[:, None] * np.ones((1, LAGS * CHANNELS))
    assert memory.teach(rows) == 0
    assert memory.teach(rows[:6] + 100) == 4
    assert memory.taught[:, 0].tolist() == [4, 5, 6, 7, 100, 101, 102, 103, 104, 105]
    with pytest.raises(ValueError, match="values"):
        memory.teach(np.zeros((2, 3)))


def test_the_same_bits_whatever_the_batch_split_and_a_snapshot_continues() -> None:
    spec = fixture_spec()
    rng = np.random.default_rng(4)
    stream = rng.normal(size=(400, LAGS * CHANNELS))
    stream[::7, :CHANNELS] += 6.0
    taught = rng.normal(size=(30, LAGS * CHANNELS)) + 6.0

    def make() -> TaughtMemory:
        memory = TaughtMemory(spec)
        memory.teach(taught)
        return memory

    state = assert_any_split_gives_the_same_bits(make, TaughtMemory.distances, stream)
    assert np.array_equal(state.latest(3), stream[-3:]) and len(state.latest(500)) == RECENT
    back = TaughtMemory(spec)
    back.restore(state.snapshot())
    more = rng.normal(size=(50, LAGS * CHANNELS))
    assert np.array_equal(back.distances(more), state.distances(more))
    with pytest.raises(ValueError, match="taught rows"):
        TaughtMemory(spec).restore({**state.snapshot(), "taught": np.zeros((3, 7))})


# -- the spec ------------------------------------------------------------------------------
def test_a_distance_spec_without_taught_dumps_as_before_and_with_it_round_trips() -> None:
    plain = DistanceScorerSpec(name="d", kind="distance", output="d",
                               threshold=Threshold(value=1.0, method="quantile"))
    assert "taught" not in plain.model_dump() and "taught" not in plain.model_dump(mode="json")
    spec = plain.model_copy(update={"taught": fixture_spec()})
    again = DistanceScorerSpec.model_validate(json.loads(json.dumps(spec.model_dump(
        mode="json"))))
    assert again == spec
    with pytest.raises(ValueError, match="factor"):
        TaughtSpec(lags=1, keep=[], eps=0.3, center=[0.0, 0.0], factor=[[1.0]])
    with pytest.raises(ValueError, match="level"):
        TaughtSpec(lags=1, keep=[], eps=0.3, center=[0.0], factor=[[1.0]], level=-1)


def test_a_bundle_refuses_a_taught_memory_of_another_shape(
        agent_bundle: Path, tmp_path: Path) -> None:
    from edge.bundle import BundleError

    with pytest.raises((BundleError, ValueError), match="features"):
        taught_bundle(agent_bundle, tmp_path / "bad", fixture_spec(channels=CHANNELS - 1))
        load_bundle(tmp_path / "bad")


# -- on the device ---------------------------------------------------------------------------
def taught_bundle(base: Path, target: Path, spec: TaughtSpec | None = None, **update: object
                  ) -> Path:
    """The fixture bundle, its `euclidean` distance the only member, with a taught memory."""
    manifest = load_bundle(base).manifest
    scorers = [DistanceScorerSpec.model_validate(
        {**s.model_dump(), "taught": (spec or fixture_spec()).model_dump()})
        for s in manifest.scorers if s.name == "euclidean"]
    return bundle_variant(base, target, scorers=scorers,
                          ensemble=Ensemble(rule="max", members=["euclidean"]), **update)


@pytest.fixture(scope="module")
def bundle(agent_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return taught_bundle(agent_bundle, tmp_path_factory.mktemp("taught") / "bundle")


def feedback(alert_id: str) -> Request:
    return Request("feedback", alert_id, "edge-anomaly/agent/cmd", "agent", None, alert_id,
                   "normal", "cooking")


def test_nothing_taught_scores_as_the_model(agent_bundle: Path, bundle: Path) -> None:
    from edge.engine import ScoringEngine

    rng = np.random.default_rng(6)
    windows = rng.normal(size=(300, 16, CHANNELS))
    windows[100:130, :, EVENT_CHANNEL] += 12.0
    plain = ScoringEngine(load_bundle(agent_bundle)).score_windows(windows)
    engine = ScoringEngine(load_bundle(bundle))
    state = engine.new_state()
    taught = engine.score_windows(windows, state)
    assert np.array_equal(plain.raw["euclidean"], taught.raw["euclidean"])
    assert "taught" in manifest_json(engine.manifest).decode()
    assert "taught" not in manifest_json(load_bundle(agent_bundle).manifest).decode()


def test_feedback_normal_stops_a_recurring_event_and_faults_still_alert(
        bundle: Path, tmp_path: Path) -> None:
    """Events alert each time without feedback; after one `feedback normal` on the first, none
    of the later ones does, while faults on another channel alert as often as without it."""
    schedule = [EVENT_CHANNEL, FAULT_CHANNEL, EVENT_CHANNEL, EVENT_CHANNEL, FAULT_CHANNEL]
    results = {}
    for mode in ("without", "with"):
        agent, replies = make_agent(bundle, tmp_path / mode)
        stream = Stream(agent)
        warm(stream)
        first = stream.bursts([EVENT_CHANNEL])[0]
        assert len(first) == 1
        if mode == "with":
            agent.loop.submit(feedback(first[0]))
            agent.publish(agent.loop.tick())
            reply = replies.last("feedback")
            assert reply["learned"] is True and reply["taught"]["taught.euclidean"] > 30
        results[mode] = [len(ids) for ids in stream.bursts(schedule)]
        agent.outbox.close()
    events = [i for i, c in enumerate(schedule) if c == EVENT_CHANNEL]
    faults = [i for i, c in enumerate(schedule) if c == FAULT_CHANNEL]
    assert [results["without"][i] for i in events] == [1, 1, 1]
    assert [results["with"][i] for i in events] == [0, 0, 0]
    assert [results["with"][i] for i in faults] == [results["without"][i] for i in faults] == [
        1, 1]


def test_what_was_taught_survives_a_restart_and_a_reload_of_other_models(
        bundle: Path, tmp_path: Path) -> None:
    agent, replies = make_agent(bundle, tmp_path)
    stream = Stream(agent)
    warm(stream)
    first = stream.bursts([EVENT_CHANNEL])[0]
    agent.loop.submit(feedback(first[0]))
    agent.publish(agent.loop.tick())
    assert replies.last("feedback")["learned"]
    assert agent.state is not None
    agent.state.wait()
    agent.outbox.close()
    agent.loop.close()
    again, _ = make_agent(bundle, tmp_path)  # a restart: the state file
    follow = Stream(again, ts0=stream.ts)
    assert follow.bursts([EVENT_CHANNEL]) == [[]]
    from edge.engine import ScoringEngine

    gateway = again.gateway
    before = memories(gateway.pipelines["pod"].state)["taught.euclidean"].taught
    manifest = gateway.engine.manifest
    other = bundle_variant(bundle, tmp_path / "v2", version="2", scorers=[
        s.model_copy(update={"threshold": Threshold(value=s.threshold.value * 1.01,
                                                    method="quantile")})
        for s in manifest.scorers])
    again.publish(gateway.swap_engine(ScoringEngine(load_bundle(other))))
    after = memories(gateway.pipelines["pod"].state)["taught.euclidean"]
    assert len(before) > 30 and np.array_equal(after.taught, before)
    assert follow.bursts([EVENT_CHANNEL]) == [[]]
    assert len(follow.bursts([FAULT_CHANNEL])[0]) == 1
    again.outbox.close()
