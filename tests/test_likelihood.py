"""The device's anomaly-likelihood step against a plain reference, its batch invariance, and
its place in the pipeline (per device, stream order, kept across gaps and same-model reloads)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from edge.bundle import LikelihoodSpec
from edge.likelihood import Likelihood


def reference(raw: np.ndarray, spec: LikelihoodSpec) -> np.ndarray:
    """The definition, row by row in float64, straight from the module docstring."""
    x = np.log(np.maximum(raw, spec.floor))
    out = np.zeros(len(x))
    for i in range(len(x)):
        history = x[max(0, i + 1 - spec.history) : i + 1]
        if len(history) < spec.min_history:
            continue
        recent = x[max(0, i + 1 - spec.short) : i + 1]
        sd = math.sqrt(max(float(history.var()), spec.min_variance))
        out[i] = (recent.mean() - history.mean()) / sd
    return out


def stream(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    raw = np.exp(rng.normal(0.0, 0.7, n))
    raw[n // 2 : n // 2 + 40] *= 30.0  # an anomalous stretch
    raw[7] = 0.0  # floored
    return raw


def test_matches_the_reference() -> None:
    spec = LikelihoodSpec(short=5, history=120, min_history=30)
    raw = stream(600)
    got = Likelihood(spec).update(raw)
    want = reference(raw, spec)
    assert np.all(got[:29] == 0.0)
    np.testing.assert_allclose(got, want, atol=2e-4)  # x is held to 1/65536
    assert got[300:340].max() > 3.0 and np.median(np.abs(got[200:290])) < 1.0


def test_any_batch_split_gives_the_same_bits() -> None:
    spec = LikelihoodSpec(short=7, history=50, min_history=10)
    raw = stream(700, seed=1)
    whole = Likelihood(spec).update(raw)
    ones = Likelihood(spec)
    one_by_one = np.concatenate([ones.update(raw[i : i + 1]) for i in range(len(raw))])
    assert np.array_equal(whole, one_by_one)
    rng = np.random.default_rng(2)
    cuts = np.sort(rng.choice(np.arange(1, len(raw)), 25, replace=False))
    parts = Likelihood(spec)
    split = np.concatenate([parts.update(p) for p in np.split(raw, cuts)])
    assert np.array_equal(whole, split)
    assert parts.count == len(raw)


def test_history_is_bounded_and_non_finite_scores_count_as_large() -> None:
    spec = LikelihoodSpec(short=1, history=20, min_history=20)
    step = Likelihood(spec)
    step.update(np.ones(1000))
    assert step._ring.shape == (20,)
    z = step.update(np.array([np.nan, np.inf]))
    assert np.all(z >= 3.0)


def test_spec_bounds() -> None:
    with pytest.raises(ValueError, match="cannot exceed history"):
        LikelihoodSpec(short=30, history=20)
    with pytest.raises(ValueError):
        LikelihoodSpec(history=10**6)


# -- in the pipeline ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def likelihood_bundle(agent_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The agent fixture bundle with `euclidean` through a likelihood step (the only member)."""
    from edge.bundle import Ensemble, Threshold, load_bundle
    from tests.agent_fixtures import bundle_variant

    m = load_bundle(agent_bundle).manifest
    step = LikelihoodSpec(short=5, history=200, min_history=50)
    scorers = [s.model_copy(update={"likelihood": step,
                                    "threshold": Threshold(value=2.5, method="likelihood")})
               if s.name == "euclidean" else s for s in m.scorers]
    return bundle_variant(agent_bundle, tmp_path_factory.mktemp("likelihood") / "bundle",
                          scorers=scorers, ensemble=Ensemble(rule="max", members=["euclidean"]))


def test_replay_is_the_same_in_any_batch_size(likelihood_bundle: Path, tmp_path: Path) -> None:
    from edge.replay import replay_table
    from edge.table import read_table
    from tests.agent_fixtures import synthetic_csv

    table = read_table(synthetic_csv(tmp_path / "d.csv", 900, seed=3, fault=(600, 640, 2)))
    big = replay_table(likelihood_bundle, table)
    small = replay_table(likelihood_bundle, table, batch_rows=7)
    assert np.array_equal(big.scorers["euclidean"], small.scorers["euclidean"], equal_nan=True)
    assert [e.id for e in big.events] == [e.id for e in small.events]
    starts = [r for e, r in zip(big.events, big.event_rows, strict=True) if e.state == "start"]
    assert any(600 <= r < 660 for r in starts)
    # warm-up of the window (15 rows) then min_history (50 windows): nothing before row 64
    assert np.all(np.nan_to_num(big.scorers["euclidean"][:64]) == 0.0)


def test_each_device_keeps_its_own_history(likelihood_bundle: Path) -> None:
    from edge.bundle import load_bundle
    from edge.engine import ScoringEngine
    from edge.pipeline import Gateway
    from edge.readings import Reading
    from tests.agent_fixtures import channel_names, normal_rows

    engine = ScoringEngine(load_bundle(likelihood_bundle))
    gateway = Gateway(engine)
    names = channel_names()
    rows = normal_rows(120, seed=5)
    for i, row in enumerate(rows):
        reading = Reading("a", 1000.0 + i, dict(zip(names, row.tolist(), strict=True)))
        gateway.process(reading)
    gateway.process(Reading("b", 5000.0, dict(zip(names, rows[0].tolist(), strict=True))))
    a, b = gateway.pipelines["a"], gateway.pipelines["b"]
    assert a.state.of("euclidean")["likelihood.euclidean"].count == 120 - 15
    assert b.state.of("euclidean")["likelihood.euclidean"].count == 0  # still filling its window
    same = engine  # a reload of identical models keeps the history
    gateway.swap_engine(same)
    assert gateway.pipelines["a"].state.of("euclidean")["likelihood.euclidean"].count == 120 - 15
