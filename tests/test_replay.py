"""`edge-agent replay` and `replay_table`: same pipeline as live, one output row per input row."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from edge.bundle import Bundle, load_bundle
from edge.cli import main
from edge.decide import BundleInfo
from edge.engine import ScoringEngine
from edge.pipeline import DevicePipeline
from edge.readings import BadInputCounter, Reading
from edge.replay import replay_table
from edge.table import read_table
from tests.agent_fixtures import START_TS, WINDOW, synthetic_csv

SCORERS = ["lstm", "euclidean", "mahalanobis", "iqr"]


@pytest.fixture(scope="session")
def bundle(agent_bundle: Path) -> Bundle:
    return load_bundle(agent_bundle)


@pytest.fixture(scope="session")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synthetic_csv(tmp_path_factory.mktemp("data") / "pod.csv", 3000, fault=(1000, 1060, 3))


def rows_of(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_cli_writes_one_row_per_input_row(agent_bundle: Path, data: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    out, alerts = tmp_path / "scores.csv", tmp_path / "alerts.jsonl"
    code = main(["replay", "--bundle", str(agent_bundle), "--input", str(data), "--out", str(out),
                 "--alerts", str(alerts), "--device", "pod7"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "rows: 3000" in printed and "rows/s" in printed and "alerts: 1" in printed
    rows = rows_of(out)
    assert len(rows) == 3000
    assert list(rows[0]) == ["timestamp", "score", "is_anomaly", "alert_id", *SCORERS, "label"]
    source = rows_of(data)
    assert [r["timestamp"] for r in rows] == [r["timestamp"] for r in source]  # as in input
    assert rows[0]["timestamp"] == "2023-11-14T22:13:20Z"
    assert all(r["score"] == "" for r in rows[:WINDOW - 1])  # warming up
    assert all(r["score"] != "" for r in rows[WINDOW - 1:])
    flagged = [i for i, r in enumerate(rows) if r["is_anomaly"] == "1"]
    assert flagged and 1000 <= flagged[0] <= 1005 and flagged[-1] < 1100
    ids = {r["alert_id"] for r in rows if r["alert_id"]}
    assert len(ids) == 1 and next(iter(ids)).startswith("pod7-")
    events = [json.loads(line) for line in alerts.read_text().splitlines()]
    assert events[0]["state"] == "start" and events[-1]["state"] == "end"
    assert events[0]["channels"][0]["name"] == "ch3"
    assert events[0]["bundle"]["name"] == "agent-fixture"


def test_replay_is_deterministic(agent_bundle: Path, data: Path, tmp_path: Path) -> None:
    outputs = []
    for k in range(2):
        out, alerts = tmp_path / f"s{k}.csv", tmp_path / f"a{k}.jsonl"
        assert main(["replay", "--bundle", str(agent_bundle), "--input", str(data),
                     "--out", str(out), "--alerts", str(alerts)]) == 0
        outputs.append((out.read_bytes(), alerts.read_bytes()))
    assert outputs[0] == outputs[1]


def test_batch_size_does_not_change_results(bundle: Bundle, data: Path) -> None:
    engine = ScoringEngine(bundle)
    table = read_table(data)
    big = replay_table(engine, table, batch_rows=4096)
    small = replay_table(engine, table, batch_rows=7)
    np.testing.assert_allclose(big.score, small.score, equal_nan=True)
    assert big.alert_ids == small.alert_ids and big.status == small.status
    info = BundleInfo("b", "1", "x")
    assert [e.to_payload(bundle=info, agent_version="") for e in big.events] == \
        [e.to_payload(bundle=info, agent_version="") for e in small.events]


def test_replay_matches_live_pipeline(bundle: Bundle, data: Path) -> None:
    """Row by row through `DevicePipeline.process` gives the replay's decisions."""
    engine = ScoringEngine(bundle)
    table = read_table(data)
    result = replay_table(engine, table, device="x")
    live = DevicePipeline(engine, "x", engine.manifest.decision, BadInputCounter())
    names = table.channels
    for i in range(len(table)):
        values = dict(zip(names, table.values[i].tolist(), strict=True))
        outcome = live.process(Reading("x", float(table.timestamps[i]), values))
        assert outcome is not None
        assert outcome.is_anomaly == bool(result.is_anomaly[i])
        assert outcome.alert_id == result.alert_ids[i]
        if outcome.scored:
            assert outcome.score == pytest.approx(result.score[i], rel=1e-9)


def test_stride_and_bad_rows(bundle: Bundle, tmp_path: Path) -> None:
    path = synthetic_csv(tmp_path / "d.csv", 400, fault=(200, 260, 0))
    lines = path.read_text().splitlines()
    lines.insert(100, lines[99])  # duplicate timestamp
    lines.insert(150, lines[140])  # out of order
    cells = lines[120].split(",")
    cells[3] = ""
    lines[120] = ",".join(cells)  # a missing cell
    lines[300:302] = []  # no gap: 2 s < max_gap_s
    path.write_text("\n".join(lines) + "\n")
    table = read_table(path)
    result = replay_table(bundle, table, stride=4)
    assert len(result.score) == len(table) == 400
    assert result.bad == {"duplicate_ts": 1, "out_of_order": 1}
    assert result.stats["filled"] == 1
    scored = np.isfinite(result.score)
    assert 80 <= scored.sum() <= 100
    assert result.status.count("stride_skip") > 250
    # between scored windows the decision holds
    hit = np.flatnonzero(result.is_anomaly)
    assert len(hit) > 40 and (~scored[hit]).sum() > 20
    assert result.alerts == 1


def test_gap_in_file_restarts(bundle: Bundle, tmp_path: Path) -> None:
    path = synthetic_csv(tmp_path / "g.csv", 200)
    table = read_table(path)
    shifted = table.timestamps.copy()
    shifted[100:] += 3600
    table = type(table)(**{**table.__dict__, "timestamps": shifted})
    result = replay_table(bundle, table)
    assert result.bad == {"gap": 1}
    assert not np.isfinite(result.score[100:100 + WINDOW - 1]).any()
    assert np.isfinite(result.score[100 + WINDOW - 1:]).all()


def test_cli_errors_exit_2(agent_bundle: Path, data: Path, tmp_path: Path,
                           capsys: pytest.CaptureFixture[str]) -> None:
    out = str(tmp_path / "o.csv")
    assert main(["replay", "--bundle", str(tmp_path / "none"), "--input", str(data),
                 "--out", out]) == 2
    assert "does not exist" in capsys.readouterr().err
    bad = tmp_path / "bad.csv"
    bad.write_text("timestamp,ch0\n2024-01-01T00:00:00Z,1\n")
    assert main(["replay", "--bundle", str(agent_bundle), "--input", str(bad), "--out", out]) == 2
    assert "ch1" in capsys.readouterr().err
    assert main(["replay", "--bundle", str(agent_bundle), "--input", str(data), "--out", out,
                 "--stride", "0"]) == 2


def test_throughput(bundle: Bundle, tmp_path: Path) -> None:
    """Far above the 3,000 rows/s target with the tiny fixture models (the real LSTM costs
    about 0.15 ms per window more)."""
    table = read_table(synthetic_csv(tmp_path / "big.csv", 20000))
    result = replay_table(bundle, table)
    assert result.rows_per_s > 3000, result.rows_per_s
    assert result.timestamps[0] == START_TS

