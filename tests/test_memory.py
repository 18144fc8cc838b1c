"""The device's recent-pattern memory against a plain reference, its batch invariance, what k
means, and its place in the pipeline (per device, a repeated fault alerting less)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge.bundle import MemorySpec
from edge.memory import LagMemory
from tests.batch_splits import assert_any_split_gives_the_same_bits


def reference(vectors: np.ndarray, spec: MemorySpec) -> np.ndarray:
    """The definition, window by window: k-th nearest of windows g-size .. g-gap."""
    out = np.full(len(vectors), np.inf)
    for g in range(len(vectors)):
        seen = vectors[max(0, g - spec.size) : max(0, g - spec.gap + 1)]
        if len(seen) >= spec.k:
            d = np.sqrt(np.square(seen - vectors[g]).sum(axis=1))
            out[g] = np.sort(d)[spec.k - 1]
    return out


def walk(n: int, width: int = 3, seed: int = 0) -> np.ndarray:
    return np.cumsum(np.random.default_rng(seed).normal(size=(n, width)), axis=0) * 0.1


def test_matches_the_reference() -> None:
    spec = MemorySpec(lags=1, size=150, gap=7, k=3)
    vectors = walk(500)
    got = LagMemory(spec).distances(vectors)
    want = reference(vectors, spec)
    assert np.isinf(got[: spec.gap + spec.k - 1]).all()
    np.testing.assert_allclose(got, want, rtol=1e-12)


@pytest.mark.parametrize("size", [40, 300])  # smaller and larger than a batch block
def test_any_batch_split_gives_the_same_bits(size: int) -> None:
    spec = MemorySpec(lags=1, size=size, gap=5, k=2)
    parts = assert_any_split_gives_the_same_bits(
        lambda: LagMemory(spec), LagMemory.distances, walk(700, seed=1))
    assert parts.count == 700 and parts._vectors is not None and len(parts._vectors) == size


def test_a_pattern_is_known_once_seen_k_times() -> None:
    quiet = np.zeros((60, 2))
    burst = np.array([[4.0, -4.0]])
    stream = np.vstack([quiet, burst, quiet, burst, quiet, burst])
    got = LagMemory(MemorySpec(lags=1, size=1000, gap=10, k=2)).distances(stream)
    first, second, third = 60, 121, 182
    assert got[first] > 5 and got[second] > 5  # seen 0 times, then once: still far
    assert got[third] == 0.0  # seen twice: known
    assert np.all(got[70:120] == 0.0)  # the quiet rows are known


def test_spec_bounds() -> None:
    with pytest.raises(ValueError, match="gap"):
        MemorySpec(lags=4, size=10, gap=10, k=1)
    with pytest.raises(ValueError):
        MemorySpec(lags=4, size=10**7, gap=1, k=1)


# -- in the pipeline ------------------------------------------------------------------------


def with_memory(source: Path, target: Path, memory: MemorySpec | None) -> Path:
    """The agent fixture bundle with `euclidean` (raw, the only member) given `memory`."""
    from edge.bundle import Ensemble, load_bundle
    from tests.agent_fixtures import bundle_variant

    m = load_bundle(source).manifest
    scorers = [s.model_copy(update={"memory": memory}) if s.name == "euclidean" else s
               for s in m.scorers]
    return bundle_variant(source, target, scorers=scorers,
                          ensemble=Ensemble(rule="max", members=["euclidean"]))


def test_a_repeated_fault_scores_lower_with_the_memory(agent_bundle: Path, tmp_path: Path
                                                       ) -> None:
    from edge.bundle import load_bundle
    from edge.replay import replay_table
    from edge.table import read_table
    from tests.agent_fixtures import synthetic_csv

    lags = load_bundle(agent_bundle).manifest.distance.lags  # type: ignore[union-attr]
    spec = MemorySpec(lags=lags, size=600, gap=20, k=2)
    remembering = with_memory(agent_bundle, tmp_path / "memory", spec)
    frozen = with_memory(agent_bundle, tmp_path / "frozen", None)
    csv = synthetic_csv(tmp_path / "d.csv", 1200, seed=3, fault=(400, 440, 2))
    table = read_table(csv)
    values = table.values.copy()
    for start in (600, 800, 1000):  # the same fault again, three times
        values[start : start + 40] = values[400:440]
    table = type(table)(**{**table.__dict__, "values": values})
    a = replay_table(remembering, table)
    b = replay_table(frozen, table)
    small = replay_table(remembering, table, batch_rows=5)
    ra, rb = a.scorers["euclidean"], b.scorers["euclidean"]
    assert np.array_equal(ra, small.scorers["euclidean"], equal_nan=True)
    # the first time the fault is new (real normal vectors lie a little nearer than centroids)
    assert np.nanmax(ra[400:440]) > 0.8 * np.nanmax(rb[400:440])
    # its third repeat is known: about as far as the normal rows are
    assert np.nanmax(ra[1000:1040]) < 0.4 * np.nanmax(rb[1000:1040])
    assert np.all(ra[~np.isnan(ra)] <= rb[~np.isnan(ra)] + 1e-9)


def test_each_device_keeps_its_own_memory(agent_bundle: Path, tmp_path: Path) -> None:
    from edge.bundle import load_bundle
    from edge.engine import ScoringEngine
    from edge.pipeline import Gateway
    from edge.readings import Reading
    from tests.agent_fixtures import channel_names, normal_rows

    lags = load_bundle(agent_bundle).manifest.distance.lags  # type: ignore[union-attr]
    bundle = with_memory(agent_bundle, tmp_path / "b",
                         MemorySpec(lags=lags, size=100, gap=5, k=1))
    gateway = Gateway(ScoringEngine(load_bundle(bundle)))
    names = channel_names()
    for i, row in enumerate(normal_rows(60, seed=5)):
        gateway.process(Reading("a", 1000.0 + i, dict(zip(names, row.tolist(), strict=True))))
    assert gateway.pipelines["a"].state.of("euclidean")["memory.euclidean"].count == 60 - 15


def test_memory_lags_cannot_exceed_the_distance_inputs(agent_bundle: Path) -> None:
    from edge.bundle import load_bundle

    m = load_bundle(agent_bundle).manifest
    assert m.distance is not None
    too_long = MemorySpec(lags=m.distance.lags + 1, size=100, gap=5, k=1)
    scorers = [s.model_copy(update={"memory": too_long}) if s.name == "euclidean" else s
               for s in m.scorers]
    with pytest.raises(ValueError, match="memory"):
        type(m).model_validate({**m.model_dump(), "scorers": [s.model_dump() for s in scorers]})


def test_docstring_example() -> None:
    import doctest

    import edge.memory

    assert doctest.testmod(edge.memory).failed == 0


def test_scaled_nearest_distance_takes_each_reference_at_its_best_size() -> None:
    from edge.memory import nearest_distances, nearest_scaled_distances

    shape = np.array([[0.0, 1.0, 2.0, 1.0]])
    vectors = np.vstack([1.5 * shape, 3.0 * shape, -shape, shape + 0.1])
    plain = nearest_distances(vectors, shape)
    scaled = nearest_scaled_distances(vectors, shape, 2.0)
    assert scaled[0] == pytest.approx(0.0, abs=1e-12)  # 1.5x: within [1/2, 2]
    assert scaled[1] == pytest.approx(np.linalg.norm(3.0 * shape - 2.0 * shape))  # clipped at 2
    assert scaled[2] == pytest.approx(np.linalg.norm(-shape - 0.5 * shape))  # no sign flip
    assert np.all(scaled <= plain + 1e-12)
    assert np.array_equal(nearest_scaled_distances(vectors, shape, 1.0), plain)
    # any batch split gives the same bits
    halves = np.concatenate([nearest_scaled_distances(vectors[:1], shape, 2.0),
                             nearest_scaled_distances(vectors[1:], shape, 2.0)])
    assert np.array_equal(halves, scaled)


def test_only_the_needed_distances_are_computed_and_every_vector_is_held() -> None:
    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(300, 4))
    needed = rng.random(300) < 0.3
    full, partial = LagMemory(MemorySpec(lags=4, size=50, gap=3, k=2)), LagMemory(
        MemorySpec(lags=4, size=50, gap=3, k=2))
    every = np.concatenate([full.distances(vectors[i : i + 37]) for i in range(0, 300, 37)])
    some = np.concatenate([partial.distances(vectors[i : i + 37], needed[i : i + 37])
                           for i in range(0, 300, 37)])
    assert np.array_equal(some[needed], every[needed])
    assert np.all(np.isinf(some[~needed]))
    assert all(np.array_equal(a, b) for a, b in zip(full.snapshot().values(),
                                                     partial.snapshot().values(), strict=True))
