"""The `channel_kmeans` kind on small synthetic data (trainer and device), and the helpers of
the TSB-AD benchmark (tests/bench/tsbad.py) that need no benchmark data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge.scorers.base import ScoringBatch
from edge.scorers.channel_kmeans import ChannelKmeansScorer, ChannelKmeansScorerSpec
from export.config import FitConfig
from export.scorers.base import TrainingData
from export.scorers.channel_kmeans import ChannelKmeansTrainer, judged_channels
from tests.scorers.harness import ArrayInputs

WINDOW = 16


def plant(n: int = 1200, seed: int = 0) -> np.ndarray:
    """(n, 4): a periodic telemetry channel, a command channel (0/1 steps), a constant
    channel and a noisy level."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    telemetry = np.sin(2 * np.pi * t / 40) + 0.05 * rng.normal(size=n)
    command = ((t // 97) % 2).astype(float)
    return np.column_stack([telemetry, command, np.zeros(n), 0.3 * rng.normal(size=n)])


def windows_of(rows: np.ndarray) -> np.ndarray:
    return np.stack([rows[i : i + WINDOW] for i in range(len(rows) - WINDOW + 1)])


def fitted(rows: np.ndarray) -> tuple[ChannelKmeansScorer, ChannelKmeansScorerSpec]:
    channels = ["telemetry", "command", "constant", "level"]
    data = TrainingData(channels, rows, np.arange(len(rows)) * 60.0, FitConfig(),
                        windows_of(rows))
    (raw,) = ChannelKmeansTrainer.fit(data, {"rows": 16, "clusters": 16, "spread_share": 0.2})
    spec = ChannelKmeansScorerSpec.model_validate(
        {**raw, "threshold": {"value": 1.2, "method": "quantile"}})
    manifest = type("M", (), {"channels": channels})()
    return ChannelKmeansScorer(spec, manifest), spec  # type: ignore[arg-type]


def scores(scorer: ChannelKmeansScorer, rows: np.ndarray) -> tuple[np.ndarray, ScoringBatch]:
    w = windows_of(rows)
    batch = ScoringBatch(w, np.full(len(w), np.nan), ArrayInputs(w))  # type: ignore[arg-type]
    return scorer.score(batch, {}), batch


def test_state_and_constant_channels_are_not_judged() -> None:
    rows = plant()
    assert judged_channels(rows) == [0, 3]
    _, spec = fitted(rows[:800])
    assert spec.channels == ["telemetry", "level"] and spec.rows == 16
    assert all(s > 0 for s in spec.spread)


def test_a_changed_shape_scores_high_and_names_its_channel() -> None:
    rows = plant(1600, seed=1)
    scorer, _ = fitted(rows[:800])
    normal, _ = scores(scorer, rows[800:1200])
    assert np.quantile(normal, 0.99) < 1.5
    broken = rows[1200:].copy()
    broken[200:260, 0] = broken[200:260, 0] * 0.2 + 0.8  # the oscillation flattens
    s, batch = scores(scorer, broken)
    assert s[200:245].max() > 1.5 * np.quantile(normal, 0.99)
    peak = int(s.argmax())
    assert batch.channel_scores["channel_kmeans"][peak].argmax() == 0


def test_command_steps_are_no_anomaly() -> None:
    rows = plant(1600, seed=2)
    scorer, _ = fitted(rows[:800])
    toggled = rows[800:].copy()
    toggled[:, 1] = 1.0 - toggled[:, 1]  # every step moved: the scorer does not look
    a, _ = scores(scorer, rows[800:])
    b, _ = scores(scorer, toggled)
    assert np.array_equal(a, b)


def test_no_judged_channel_no_scorer() -> None:
    rows = plant()[:, 1:3]  # the command and the constant channel only
    data = TrainingData(["command", "constant"], rows, np.arange(len(rows)) * 60.0,
                        FitConfig(), windows_of(rows))
    assert ChannelKmeansTrainer.fit(data, {"rows": 16, "clusters": 16,
                                           "spread_share": 0.2}) == []


def test_the_device_learns_a_shape_it_keeps_seeing_but_not_a_one_off() -> None:
    """A plant settled into a new rhythm after training stops counting as new once the
    device's memory holds it; a one-off flattening later still stands out."""
    rows = plant(2400, seed=3)
    scorer, spec = fitted(rows[:800])
    assert spec.memory is not None and spec.memory.lags == 16
    after = rows[800:].copy()
    t = np.arange(len(after))
    after[:, 0] = np.sin(2 * np.pi * t / 25) + 0.05 * np.random.default_rng(4).normal(size=t.size)
    after[1300:1340, 0] = 0.9  # a one-off flat stretch
    w = windows_of(after)
    batch = ScoringBatch(w, np.full(len(w), np.nan), ArrayInputs(w))  # type: ignore[arg-type]
    stateless, _ = scores(scorer, after)
    remembered = scorer.score(batch, scorer.new_state())
    assert np.median(stateless[400:1200]) > 1.2  # without a memory, the new rhythm alerts
    assert np.quantile(remembered[400:1200], 0.99) < 1.2  # with it, it is known
    assert remembered[1290:1330].max() > 1.5  # the one-off is not


def test_a_taught_shape_is_excused_at_another_height_but_not_a_far_one() -> None:
    """`feedback normal` on a rise: the same rise at 1.5 times the height no longer counts as
    new; at 4 times it still does."""
    from edge.memory import LagMemory

    rows = plant(1200, seed=6)
    scorer, _ = fitted(rows[:800])
    state = scorer.new_state()
    bump = np.zeros(16)
    bump[4:12] = np.linspace(0.0, 3.0, 8)

    def window(height: float) -> np.ndarray:
        w = rows[900:916].copy()
        w[:, 3] = height * bump
        return w[None]

    def score(height: float) -> float:
        return float(scorer.channel_scores(window(height), state)[0, 1])

    assert score(1.5) > 2.0  # new: far from every training shape
    memory = state["memory.channel_kmeans.1"]
    assert isinstance(memory, LagMemory)
    memory.teach(window(1.0)[0][:, 3][None])
    assert score(1.5) < 1.0 < score(4.0)


def test_memory_options() -> None:
    rows = plant()[:800]
    data = TrainingData(["telemetry", "command", "constant", "level"], rows,
                        np.arange(len(rows)) * 60.0, FitConfig(), windows_of(rows))
    base = {"rows": 16, "clusters": 16, "spread_share": 0.2}
    (spec,) = ChannelKmeansTrainer.fit(data, {**base, "memory": 0})
    assert "memory" not in spec
    (spec,) = ChannelKmeansTrainer.fit(data, {**base, "memory": 500, "memory_gap": 20,
                                                "memory_k": 3})
    assert spec["memory"] == {"lags": 16, "size": 500, "gap": 20, "k": 3}
    from export.errors import InputError

    with pytest.raises(InputError, match="memory_gap 600"):
        ChannelKmeansTrainer.fit(data, {**base, "memory": 500, "memory_gap": 600})


def test_channels_with_twins_are_left_to_the_per_sensor_kinds() -> None:
    """Two particle sensors of one make (twins by name and correlation) and a temperature:
    only the temperature is judged unless `twins` asks for the twins too."""
    rng = np.random.default_rng(5)
    t = np.arange(1000)
    pollution = np.sin(2 * np.pi * t / 150)
    rows = np.column_stack([pollution + 0.1 * rng.normal(size=t.size),
                            pollution + 0.1 * rng.normal(size=t.size),
                            np.cos(2 * np.pi * t / 90) + 0.1 * rng.normal(size=t.size)])
    data = TrainingData(["pm25_1", "pm25_2", "temp"], rows, t * 60.0, FitConfig(),
                        windows_of(rows))
    base = {"rows": 16, "clusters": 8, "spread_share": 0.2}
    (alone,) = ChannelKmeansTrainer.fit(data, base)
    (every,) = ChannelKmeansTrainer.fit(data, {**base, "twins": True})
    assert alone["channels"] == ["temp"]
    assert every["channels"] == ["pm25_1", "pm25_2", "temp"]


def test_the_threshold_covers_the_training_windows_too() -> None:
    """A shape the training windows held but the held-out ones did not raises the threshold
    (a week of weather against the last day)."""
    rows = plant()[:800]
    heldout = np.linspace(0.2, 1.0, 50)
    plain = TrainingData(["a"], rows, np.arange(len(rows)) * 60.0, FitConfig())
    richer = TrainingData(["a"], rows, np.arange(len(rows)) * 60.0, FitConfig(),
                          scored={"channel_kmeans": np.r_[np.full(200, 0.5), 1.5, np.nan]})
    low = ChannelKmeansTrainer.threshold("channel_kmeans", heldout, plain, {})
    high = ChannelKmeansTrainer.threshold("channel_kmeans", heldout, richer, {})
    assert high.value == pytest.approx(low.value * 1.5)
    assert high.params["training_windows"] == 201


# ---- the TSB-AD benchmark's helpers ---------------------------------------------------------

def test_tsbad_file_names_and_the_fixed_split(tmp_path: Path) -> None:
    from tests.bench.tsbad import parse_name

    f = parse_name(tmp_path / "014_MSL_id_13_Sensor_tr_1525_1st_4575.csv", "M")
    assert (f.idx, f.train_rows, f.first_anomaly, f.half) == (14, 1525, 4575, "choose")
    assert parse_name(tmp_path / "003_MSL_id_2_Sensor_tr_883_1st_1238.csv", "M").half == \
        "confirm"
    with pytest.raises(ValueError):
        parse_name(tmp_path / "something.csv", "M")


def test_warm_up_rows_get_the_first_score() -> None:
    from tests.bench.tsbad import fill_warmup

    out = fill_warmup([np.nan, np.nan, 2.0, np.nan, 3.0])
    assert out.tolist() == [2.0, 2.0, 2.0, 2.0, 3.0]
    assert fill_warmup([np.nan, np.nan]).tolist() == [0.0, 0.0]


def test_the_sensor_csv_reads_back_with_the_agent_reader(tmp_path: Path) -> None:
    from edge.table import read_table
    from tests.bench.tsbad import PERIOD_S, load, write_sensor_csv

    src = tmp_path / "001_X_id_1_Sensor_tr_3_1st_4.csv"
    src.write_text("0,1,2,Label\n-1.0,0,1,0\n-0.5,0,1,0\n0.25,1,1,0\n0.5,1,1,1\n")
    columns, data, labels = load(src)
    assert columns == ["0", "1", "2"] and labels.tolist() == [0, 0, 0, 1]
    out = tmp_path / "s.csv"
    write_sensor_csv(out, columns, data)
    table = read_table(out)
    assert table.channels == columns and table.labels is None
    assert np.array_equal(table.values, data)
    assert np.allclose(np.diff(table.timestamps), PERIOD_S)


def test_tsbad_metrics_rank_a_good_score_above_a_constant() -> None:
    pytest.importorskip("TSB_AD.evaluation.basic_metrics")
    pytest.importorskip("statsmodels")
    from tests.bench.tsbad import sliding_window, tsbad_metrics

    rng = np.random.default_rng(0)
    labels = np.zeros(1000, dtype=int)
    labels[600:650] = 1
    good = rng.random(1000) * 0.1 + labels
    m_good = tsbad_metrics(good, labels, 20)
    m_flat = tsbad_metrics(np.zeros(1000), labels, 20)
    assert m_good["vus_pr"] > 0.8 > 0.2 > m_flat["vus_pr"]
    assert m_good["auc_pr"] > 0.9
    wave = np.sin(2 * np.pi * np.arange(2000) / 50)
    assert sliding_window(wave) == 50


def test_a_slow_channel_is_judged_by_its_shape_alone() -> None:
    """A wandering level (a temperature) is centred: the same wiggle at a new level scores
    the same, where an uncentred channel's score grows with the level."""
    rng = np.random.default_rng(3)
    n = 1200
    level = np.cumsum(rng.normal(size=n)) * 0.2  # slow: its trailing mean wanders
    rows = np.column_stack([plant(n)[:, 0], level + 0.05 * rng.normal(size=n)])
    data = TrainingData(["telemetry", "temperature"], rows[:800], np.arange(800) * 60.0,
                        FitConfig(slow_span=32, slow_ratio=0.5), windows_of(rows[:800]))
    (raw,) = ChannelKmeansTrainer.fit(data, {"rows": 16, "clusters": 16, "spread_share": 0.2,
                                             "centre_slow": True})
    assert raw["centred"] == [False, True]
    spec = ChannelKmeansScorerSpec.model_validate(
        {**raw, "threshold": {"value": 1.2, "method": "quantile"}})
    scorer = ChannelKmeansScorer(spec, type("M", (), {"channels": ["telemetry",
                                                                   "temperature"]})())  # type: ignore[arg-type]
    shifted = rows[800:].copy()
    _, batch_a = scores(scorer, shifted)
    shifted[:, 1] += 50.0  # far beyond any training level
    _, batch_b = scores(scorer, shifted)
    assert np.allclose(batch_a.channel_scores["channel_kmeans"][:, 1],
                       batch_b.channel_scores["channel_kmeans"][:, 1])
