"""The univariate recipe end to end: fit one channel, replay it with the device code. The lag
distances carry the device's memory, so a burst that keeps recurring after training stops
alerting, while a one-off fault still does. Synthetic data made here with numpy."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from edge.bundle import SCHEMA_VERSION, load_bundle
from edge.engine import ScoringEngine
from edge.replay import replay_table
from edge.table import read_table
from export.config import FitConfig
from export.evaluate import alert_starts
from export.fit import fit_bundle

pytestmark = pytest.mark.slow

N_ROWS, TRAIN = 3000, 600
SPIKE = 1000  # a one-off fault
BURSTS = range(1400, N_ROWS, 90)  # a new pattern that recurs every 90 rows from here on


def series_csv(path: Path) -> Path:
    rng = np.random.default_rng(7)
    t = np.arange(N_ROWS)
    value = 20 + 5 * np.sin(2 * np.pi * t / 144) + rng.normal(0, 0.4, N_ROWS)
    value[SPIKE : SPIKE + 3] += 12.0
    for start in BURSTS:
        value[start : start + 4] += np.array([6.0, -6.0, 6.0, -6.0])
    stamps = np.datetime64("2024-05-01T00:00:00") + (t * 60).astype("timedelta64[s]")
    lines = [f"{s}Z,{v:.4f}" for s, v in zip(stamps, value, strict=True)]
    path.write_text("timestamp,value\n" + "\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def univariate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("univariate")
    csv = series_csv(root / "metric.csv")
    config = dataclasses.replace(FitConfig(), rows=f":{TRAIN}", epochs=2, units=8,
                                 report=False, force=True)
    fit_bundle(csv, root / "bundle", config)
    return csv, root / "bundle"


def test_the_recipe_writes_a_memory_on_each_lag_distance(univariate: tuple[Path, Path]
                                                         ) -> None:
    m = load_bundle(univariate[1]).manifest
    assert m.schema_version == SCHEMA_VERSION == 6
    lag = {s.name: s for s in m.scorers if s.name.startswith("lag_distance_")}
    assert sorted(lag) == ["lag_distance_4", "lag_distance_8"]
    for name, scorer in lag.items():
        assert scorer.memory is not None and scorer.likelihood is not None
        assert (scorer.memory.lags, scorer.memory.size) == (int(name.rsplit("_", 1)[1]), 3000)
    shapes = {s.name: s for s in m.scorers if s.kind == "long_shape"}
    assert sorted(shapes) == ["long_shape_128", "long_shape_256", "long_shape_64"]
    for name, scorer in shapes.items():
        assert scorer.long_shape is not None and scorer.memory is not None
        span = scorer.long_shape.block * scorer.long_shape.blocks
        assert name == f"long_shape_{span}" and scorer.memory.gap == span
        assert scorer.likelihood is not None and scorer.threshold.value == 3.0
    assert all(s.memory is None for s in m.scorers if s.name not in lag | shapes)


def test_recurring_bursts_stop_alerting_and_a_one_off_fault_still_does(
        univariate: tuple[Path, Path]) -> None:
    csv, bundle_dir = univariate
    table = read_table(csv)
    bundle = load_bundle(bundle_dir)
    frozen = dataclasses.replace(bundle, manifest=bundle.manifest.model_copy(update={
        "scorers": [s.model_copy(update={"memory": None}) if s.kind == "distance" else s
                    for s in bundle.manifest.scorers]}))
    remembering = alert_starts(replay_table(ScoringEngine(bundle), table))
    forgetting = alert_starts(replay_table(ScoringEngine(frozen), table))
    for starts in (remembering, forgetting):
        assert starts[SPIKE : SPIKE + 30].any()  # the one-off fault
    late = slice(BURSTS[0] + 900, N_ROWS)  # after ten bursts
    assert forgetting[late].sum() >= 3  # the frozen model keeps alerting on them
    assert remembering[late].sum() == 0  # the device has learned them
    assert remembering[TRAIN:].sum() < forgetting[TRAIN:].sum()


def test_a_larger_copy_of_a_learned_burst_alerts_through_the_range(
        univariate: tuple[Path, Path], tmp_path: Path) -> None:
    """A burst twice as tall as the learned ones has their shape: the lag distances flag it
    only once it has passed, the running range on its first rows. Records are rare: the
    spike, the first burst (new then) and the tall one are all."""
    csv, bundle_dir = univariate
    taller = BURSTS[-3]
    lines = csv.read_text().splitlines()
    for i, bump in enumerate([6.0, -6.0, 6.0, -6.0]):  # on top of the usual burst
        stamp, value = lines[1 + taller + i].split(",")
        lines[1 + taller + i] = f"{stamp},{float(value) + bump:.4f}"
    (tmp_path / "taller.csv").write_text("\n".join(lines) + "\n")
    table = read_table(tmp_path / "taller.csv")
    bundle = load_bundle(bundle_dir)
    m = bundle.manifest
    assert "range" in m.ensemble.members and m.range is not None
    result = replay_table(ScoringEngine(bundle), table)
    records = np.flatnonzero(np.nan_to_num(result.scorers["range"]) >= 1.0)
    near = [SPIKE, BURSTS[0], taller]
    assert all(any(0 <= r - at < 4 for at in near) for r in records)
    assert all(any(0 <= r - at < 4 for r in records) for at in near)
    assert alert_starts(result)[taller : taller + 4].any()
    members = [n for n in m.ensemble.members if n != "range"]
    shape_only = dataclasses.replace(bundle, manifest=m.model_copy(update={
        "ensemble": m.ensemble.model_copy(update={"members": members})}))
    later = alert_starts(replay_table(ScoringEngine(shape_only), table))
    assert not later[taller : taller + 4].any()  # the shapes see it only once it has passed


def test_a_missing_cycle_alerts_through_the_long_shapes(
        univariate: tuple[Path, Path], tmp_path: Path) -> None:
    """One cycle of the sine stays at its trough: every 8 rows of it look like a trough the
    device knows, so neither the lag distances nor the range see it; the shape of the last
    few hundred rows is new."""
    csv, bundle_dir = univariate
    first = 1116  # a trough of the 144-row sine, after the spike and before the bursts
    lines = csv.read_text().splitlines()
    rng = np.random.default_rng(3)
    for i in range(first, first + 144):
        stamp, _ = lines[1 + i].split(",")
        lines[1 + i] = f"{stamp},{15 + rng.normal(0, 0.4):.4f}"
    (tmp_path / "missing.csv").write_text("\n".join(lines) + "\n")
    table = read_table(tmp_path / "missing.csv")
    bundle = load_bundle(bundle_dir)
    m = bundle.manifest
    around = slice(first, first + 144 + 128)
    result = replay_table(ScoringEngine(bundle), table)
    assert alert_starts(result)[around].any()
    shapes = [s.name for s in m.scorers if s.kind == "long_shape"]
    assert max(np.nanmax(result.scorers[n][around]) for n in shapes) >= 1.0
    members = [n for n in m.ensemble.members if n not in shapes]
    without = dataclasses.replace(bundle, manifest=m.model_copy(update={
        "ensemble": m.ensemble.model_copy(update={"members": members})}))
    assert not alert_starts(replay_table(ScoringEngine(without), table))[around].any()
