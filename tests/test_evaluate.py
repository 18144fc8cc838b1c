"""`edge-train evaluate`: the agent's replay measured against labels, report, exit codes.

Uses the cached agent-fixture bundle (8 channels, real TFLite and ONNX runtimes, no training)
and synthetic files made here: normal rows with faults of 12 standard deviations on one channel,
labelled or not.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest

from edge.replay import replay_table
from edge.table import read_table
from export.cli import main
from export.evaluate import DECISION, OVER, alert_spans, alert_starts, evaluate, nab_scores
from export.metrics import event_metrics, point_metrics
from export.nab import MAX_TP, scaled_sigmoid
from tests.agent_fixtures import (
    START_TS,
    channel_names,
    normal_rows,
    scales,
)

ROWS = 2400
LABELLED = (800, 860, 3)  # rows [800, 860) on ch3, labelled
UNLABELLED = (1800, 1830, 5)  # a fault nobody labelled: a false alarm


def write_csv(path: Path, rows: int = ROWS, faults: tuple[tuple[int, int, int, bool], ...] = (
        (*LABELLED, True), (*UNLABELLED, False)), label: str | None = "anomaly") -> Path:
    data = normal_rows(rows, seed=3)
    labels = np.zeros(rows, dtype=int)
    for start, stop, channel, labelled in faults:
        data[start:stop, channel] += 12.0 * scales()[channel]
        labels[start:stop] = int(labelled)
    header = ["timestamp", *channel_names(), *([label] if label else [])]
    lines = [",".join(header)]
    for i in range(rows):
        stamp = datetime.fromtimestamp(START_TS + i, tz=timezone.utc).strftime(
            "%Y-%m-%dT%H:%M:%SZ")
        cells = [stamp, *(f"{v:.4f}" for v in data[i]), *([str(labels[i])] if label else [])]
        lines.append(",".join(cells))
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_csv(tmp_path_factory.mktemp("eval") / "pod.csv")


def test_figures_are_the_replays_measured_by_hand(agent_bundle: Path, data: Path) -> None:
    table = read_table(data)
    assert table.labels is not None
    ev = evaluate(agent_bundle, table, table.labels)
    plain = replay_table(agent_bundle, table)
    assert np.array_equal(ev.replay.is_anomaly, plain.is_anomaly)  # the same pipeline
    decided = ev.point[DECISION]
    assert decided == point_metrics(table.labels, plain.is_anomaly)
    # two alerts: the labelled fault and the unlabelled one
    assert len(ev.alerts) == 2
    first, second = ev.alerts
    assert LABELLED[0] <= first.start_row < LABELLED[0] + 5  # trigger: 3 windows over
    assert UNLABELLED[0] <= second.start_row < UNLABELLED[0] + 5
    assert first.end_row > LABELLED[1] and first.end is not None
    assert first.start.channels[0].name == "ch3" and second.start.channels[0].name == "ch5"
    assert ev.events.n_events == 1 and ev.events.caught == 1
    assert ev.events.false_alarm_events == 1
    assert ev.events.delays_s == (float(first.start_row - LABELLED[0]),)
    assert ev.events == event_metrics(table.labels, plain.is_anomaly, table.timestamps)
    # NAB-style: the window is rows 800..859 (W = 60); the start at row s earns
    # S(-(859 - s + 1) / 60) / S(-1); the second start is 1800 - 859 rows after the window,
    # y = 941 / 59 > 3, so it costs the full A_FP
    s = first.start_row
    tp = float(scaled_sigmoid(-(859 - s + 1) / 60)) / MAX_TP
    std = ev.nab["standard"]
    assert (std.tp, std.fp, std.fn) == (1, 1, 0)
    assert std.raw == pytest.approx(tp - 0.11)
    assert ev.nab_normalized["standard"] == pytest.approx(100 * (std.raw + 1) / 2)
    assert ev.nab["reward_low_FP_rate"].raw == pytest.approx(tp - 0.22)
    # each scorer alone: the channel fault is far over every distance threshold
    for name in ("lstm", "euclidean", "mahalanobis"):
        assert ev.point[name].recall > 0.9
    assert set(ev.ap) == {OVER, "lstm", "euclidean", "mahalanobis", "iqr"}
    assert ev.ap[OVER] > 0.5


def test_rows_restrict_the_scored_rows(agent_bundle: Path, data: Path) -> None:
    table = read_table(data)
    assert table.labels is not None
    rows = np.zeros(ROWS, dtype=bool)
    rows[1000:] = True
    ev = evaluate(agent_bundle, table, table.labels, rows, "1000:")
    assert ev.point[DECISION].total == ROWS - 1000
    assert ev.events.n_events == 0 and ev.events.false_alarm_events == 1
    assert ev.nab == {}  # no labelled run: undefined


def test_nab_scores_of_alert_starts_by_hand() -> None:
    labels = np.zeros(30, dtype=bool)
    labels[10:20] = True
    starts = np.zeros(30, dtype=bool)
    starts[10] = True  # the first row of the window: A_TP exactly
    got = nab_scores(starts, labels)
    assert got["standard"].raw == pytest.approx(1.0)
    starts[:] = False
    assert got.keys() == nab_scores(starts, labels).keys()
    assert nab_scores(starts, labels)["reward_low_FN_rate"].raw == pytest.approx(-2.0)
    assert nab_scores(starts, np.zeros(30, dtype=bool)) == {}


def test_alert_spans_pair_starts_and_ends(agent_bundle: Path, data: Path) -> None:
    result = replay_table(agent_bundle, read_table(data))
    spans = alert_spans(result)
    assert [s.start_row for s in spans] == np.flatnonzero(alert_starts(result)).tolist()
    for span in spans:
        assert result.is_anomaly[span.start_row:span.end_row].all()


def test_cli_prints_metrics_and_writes_the_report(agent_bundle: Path, data: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    page, figures = tmp_path / "out" / "eval.html", tmp_path / "eval.json"
    code = main(["evaluate", "--bundle", str(agent_bundle), str(data), "--report", str(page),
                 "--json", str(figures)])
    assert code == 0
    out = capsys.readouterr().out
    assert re.search(r"point \(agent decision\): precision [\d.]+ +recall [\d.]+ +F1 [\d.]+ +"
                     r"FAR [\d.]+% +MAR [\d.]+%", out)
    assert "events: 1/1 caught, detection delay median" in out
    assert "1 false alarms" in out and "per day" in out
    assert "NAB-style" in out and "standard" in out and "reward_low_FN_rate" in out
    for name in ("decision", "lstm", "euclidean", "mahalanobis", "iqr"):
        assert re.search(rf"^{name} +[\d.]+ +[\d.]+ +[\d.]+", out, re.M), name
    html = page.read_text()
    assert html.count("data:image/png;base64,") == 3
    for suffix in ("timeline", "attribution", "pr"):
        png = page.parent / f"eval_{suffix}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", suffix
    saved = json.loads(figures.read_text())
    assert saved["events"]["caught"] == 1 and len(saved["alerts"]) == 2
    assert saved["point"]["decision"]["tp"] > 0 and saved["scored_rows"] == ROWS


def test_cli_rows_option(agent_bundle: Path, data: Path,
                         capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", "--bundle", str(agent_bundle), str(data), "--rows", "1000:"]) == 0
    out = capsys.readouterr().out
    assert "scored rows 1000:: 1400 rows, 0 labelled anomalous in 0 events" in out
    assert "NAB-style: no labelled anomaly" in out


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("no_bundle", "--bundle"),
        ("no_data", "does not exist"),
        ("no_labels", "no label column"),
        ("unknown_label", "column 'truth' is not in the header"),
        ("missing_channel", "ch7"),
        ("bad_rows", "--rows"),
        ("empty_rows", "selects no rows"),
        ("report_is_dir", "is a directory"),
    ],
)
def test_bad_input_exits_2_with_a_message(case: str, message: str, agent_bundle: Path, data: Path,
                                          tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    args = ["evaluate", "--bundle", str(agent_bundle), str(data)]
    if case == "no_bundle":
        args[2] = str(tmp_path / "nothing")
    elif case == "no_data":
        args[3] = str(tmp_path / "nothing.csv")
    elif case == "no_labels":
        args[3] = str(write_csv(tmp_path / "plain.csv", rows=100, faults=(), label=None))
    elif case == "unknown_label":
        args += ["--label-column", "truth"]
    elif case == "missing_channel":
        text = data.read_text().replace(",ch7,", ",other,", 1)
        (tmp_path / "renamed.csv").write_text(text)
        args[3] = str(tmp_path / "renamed.csv")
    elif case == "bad_rows":
        args += ["--rows", "ten"]
    elif case == "empty_rows":
        args += ["--rows", "5000:"]
    else:
        args += ["--report", str(tmp_path)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("edge-train evaluate: error:") and message in err, err


def test_missing_required_option_exits_2(data: Path) -> None:
    assert main(["evaluate", str(data)]) == 2
