"""The benchmark harness (`make bench`, tests/bench) on tiny hand-made cases: the SKAB protocol
(test rows only, counts pooled over files), NAB scoring of alert starts, the Markdown results,
the refusal without data. The benchmarks themselves read ../shared/data and are not run here."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import pytest

from export.metrics import PointMetrics
from export.nab import NabFile
from tests.bench import e2e, nab_corpus, run_all, skab
from tests.bench.harness import fit_config, md_table
from tests.bench.results_md import render

BENCH = Path(__file__).resolve().parent / "bench"


def test_pytest_collects_no_benchmark_script() -> None:
    names = [p.name for p in BENCH.rglob("*.py")]
    assert names and not [n for n in names if n.startswith("test_") or n.endswith("_test.py")]


def test_skab_protocol_scores_test_rows_and_pools_counts() -> None:
    # file A, 4 training rows then 4 test rows: truth 1 1 0 0, predicted 1 0 1 0
    #   -> TP 1, FN 1, FP 1, TN 1 (its training rows, all predicted 1, do not count)
    # file B, 4 training rows then 6 test rows: truth 0 0 0 1 1 1, predicted the same
    #   -> TP 3, TN 3
    a = skab.file_metrics([0, 0, 0, 0, 1, 1, 0, 0], {"x": [1, 1, 1, 1, 1, 0, 1, 0]}, 4)
    b = skab.file_metrics([0] * 7 + [1] * 3, {"x": [0] * 7 + [1] * 3}, 4)
    assert a["x"] == PointMetrics(tp=1, fp=1, fn=1, tn=1)
    assert b["x"] == PointMetrics(tp=3, fp=0, fn=0, tn=3)
    pooled = skab.pool_files([a, b])["x"]
    assert pooled == PointMetrics(tp=4, fp=1, fn=1, tn=4)
    assert pooled.f1 == pytest.approx(0.8)  # 4 / (4 + (1 + 1) / 2)
    assert pooled.far_pct == pytest.approx(20.0)  # 1 / (1 + 4)
    assert pooled.mar_pct == pytest.approx(20.0)  # 1 / (1 + 4)
    # not the mean of the per-file F1s (0.5 and 1.0)
    assert pooled.f1 != pytest.approx((a["x"].f1 + b["x"].f1) / 2)


def test_skab_protocol_several_detectors_and_bad_input() -> None:
    got = skab.file_metrics([0, 0, 1, 1], {"all": [1, 1, 1, 1], "none": [0, 0, 0, 0]}, 2)
    assert got["all"] == PointMetrics(tp=2, fp=0, fn=0, tn=0)
    assert got["none"] == PointMetrics(tp=0, fp=0, fn=2, tn=0)
    with pytest.raises(ValueError, match="needs more than 4"):
        skab.file_metrics([0, 1, 0, 1], {"x": [0, 1, 0, 1]}, 4)
    with pytest.raises(ValueError, match="3 predictions for 6 rows"):
        skab.file_metrics([0] * 6, {"x": [0] * 3}, 2)
    assert skab.pool_files([]) == {}


def test_skab_files_in_numeric_order(tmp_path: Path) -> None:
    folder = tmp_path / "skab" / "valve1"
    folder.mkdir(parents=True)
    for name in ("10.csv", "2.csv", "1.csv", "notes.csv"):
        (folder / name).write_text("")
    assert [p.name for p in skab.skab_files(tmp_path)] == ["1.csv", "2.csv", "10.csv",
                                                           "notes.csv"]


def _nab_file(windows: tuple[tuple[int, int], ...]) -> NabFile:
    ts = np.datetime64("2024-01-01T00:00:00") + np.arange(40).astype("timedelta64[m]")
    return NabFile("x/f.csv", ts, np.zeros(40), tuple((ts[a], ts[b]) for a, b in windows))


def test_nab_alert_starts_scored_over_the_corpus() -> None:
    # 40 rows, probation floor(0.15 * 40) = 6; one window rows 20..29
    f = _nab_file(((20, 29),))
    first_row = np.zeros(40, dtype=bool)
    first_row[20] = True  # an alert start on the window's first row: A_TP = 1 -> 100
    assert nab_corpus.detections_score([f], [first_row], "standard")[0] == pytest.approx(100.0)
    never = np.zeros(40, dtype=bool)
    assert nab_corpus.detections_score([f], [never], "standard")[0] == pytest.approx(0.0)
    early = never.copy()
    early[10] = True  # outside any window, no window before it: -A_FP, and the window missed
    score, files = nab_corpus.detections_score([f], [early], "reward_low_FP_rate")
    assert (files[0].tp, files[0].fp, files[0].fn) == (0, 1, 1)
    assert score == pytest.approx(100 * (-0.22 - 1 + 1) / 2)
    # two files: normalised over the corpus, not averaged
    both = nab_corpus.detections_score([f, f], [first_row, never], "standard")[0]
    assert both == pytest.approx(50.0)
    assert nab_corpus.detections_score([_nab_file(())], [never], "standard")[0] is None


def test_nab_swept_score_finds_the_threshold() -> None:
    f = _nab_file(((20, 29),))
    scores = np.zeros(40)
    scores[20] = 0.9
    scores[35] = 0.5  # lower: a threshold above it leaves only the perfect detection
    score, threshold = nab_corpus.swept_score([f], [scores], "standard")
    assert score == pytest.approx(100.0) and 0.5 < threshold <= 0.9


def test_nab_ranking_is_the_vus_pr_of_the_score_after_the_probation() -> None:
    pytest.importorskip("TSB_AD.evaluation.basic_metrics")
    ts = np.datetime64("2024-01-01T00:00:00") + np.arange(600).astype("timedelta64[m]")
    values = np.sin(2 * np.pi * np.arange(600) / 25)
    f = NabFile("realKnownCause/f.csv", ts, values, ((ts[400], ts[430]),))
    quiet = NabFile("artificialNoAnomaly/q.csv", ts, values, ())
    peak = np.random.default_rng(0).random(600) * 0.1
    peak[400:431] += 1.0
    good = nab_corpus.ranking([f, quiet], [peak, peak])
    flat = nab_corpus.ranking([f], [np.zeros(600)])
    assert list(good["files"]) == ["realKnownCause/f.csv"]  # no window, no ranking
    assert good["parts"] == {nab_corpus.CONFIRMED: good["all"]}
    assert good["all"] > 0.8 > 0.2 > flat["all"]


def test_nab_error_plot_shows_only_the_files_with_a_miss_or_a_false_alarm(
        tmp_path: Path) -> None:
    from tests.bench.nab_plot import plot_errors

    # 40 rows, probation 6, a window on rows 20..29 in each file
    files = [dataclasses.replace(_nab_file(((20, 29),)), name=f"x/{n}.csv")
             for n in ("false_alarm", "missed", "right")]
    starts = [np.zeros(40, dtype=bool) for _ in files]
    starts[0][[3, 10, 22]] = True  # 3: in probation, not scored; 10: a false alarm; 22: caught
    starts[2][25] = True
    path = tmp_path / "nab_errors.png"
    wrong = plot_errors(files, starts, path)
    assert [e.name for e in wrong] == ["x/false_alarm.csv", "x/missed.csv"]
    assert wrong[0].false_alarms == [10] and wrong[0].inside == [22] and wrong[0].caught == [True]
    assert wrong[1].caught == [False] and wrong[1].windows == [(20, 29)]
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plot_errors(files[2:], starts[2:], path) == []


def test_run_all_says_when_the_data_is_missing(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    assert run_all.main(["--data", str(tmp_path / "absent"), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "benchmark data is not there" in err and str(tmp_path / "absent") in err
    assert not (tmp_path / "results.json").exists()
    (tmp_path / "data" / "skab" / "valve1").mkdir(parents=True)
    assert run_all.main(["--data", str(tmp_path / "data"), "--only", "nab"]) == 2
    assert "combined_windows.json" in capsys.readouterr().err
    assert run_all.main(["--only", "skab,speed"]) == 2


def test_fit_config_keeps_the_trainers_defaults() -> None:
    from export.config import FitConfig

    got = fit_config(rows=":400", keep_float=True)
    changed = {f.name for f in dataclasses.fields(FitConfig)
               if getattr(got, f.name) != getattr(FitConfig(), f.name)}
    assert changed == {"rows", "keep_float", "report", "force"}


def test_markdown_table() -> None:
    assert md_table(["a", "b"], [["x|y", 1]]) == "| a | b |\n| --- | ---: |\n| x\\|y | 1 |"


def test_results_markdown_renders_every_section() -> None:
    m = PointMetrics(tp=4, fp=1, fn=1, tn=4).as_dict()
    lat = {"p50_ms": 0.1, "p99_ms": 0.2, "n": 10}
    results = {
        "date": "2026-11-22", "commit": "abcdef0123456", "config_brief": "defaults",
        "machine": {"cores": 2, "machine": "x86_64", "cpu": "cpu", "python": "3.11.2"},
        "skab": {"protocol": "p", "pooled": {skab.DECISION: m, "LOF": m}, "plot": "s.png",
                 "files": [{"float": {"agreement_test_rows": 0.99, "corr_normalised": 0.999}}]},
        "nab": {"protocol": "p", "files": 2, "windows": 3, "alerts": 4,
                "scores": {nab_corpus.OURS: {"standard": 12.5, "reward_low_FP_rate": None,
                                             "reward_low_FN_rate": 20.0}},
                "failures": {"a/flat.csv": "constant"},
                "ranking": {"files": {}, "parts": {nab_corpus.CHOSEN: 0.47,
                                                   nab_corpus.CONFIRMED: 0.53}, "all": 0.5}},
        "device": {"runtime": {"latency": {"tflite_int8_run": lat},
                               "ratio_p50_vs_tflite_int8": {"tflite_int8_run": 1.0},
                               "window_shape": [16, 8], "windows": 10,
                               "replay": {"file": "1.csv", "rows": 5, "rows_per_s_median": 9.0},
                               "sizes_bytes": {"lstm_ae.tflite": 2048},
                               "parity": {"int8_vs_keras_error_corr": 0.99,
                                          "int8_vs_keras_error_max_rel": 0.02,
                                          "float_tflite_vs_keras_max_abs": 1e-6}}},
        "e2e": {"devices": 2, "device": "pump",
                "latency": {"rate_per_device": 10, "start_p50_ms": 5.0, "start_p99_ms": 9.0,
                            "matched_starts": 3, "all_p50_ms": 4.0, "all_p99_ms": 8.0,
                            "matched_events": 6},
                "steps": [{"target_per_s": 50, "publish_per_s": 50.0, "agent_per_s": 49.0,
                           "agent_cpu_pct": 7.0, "kept_up": True}],
                "sustained_under_50pct": 49.0, "stopped_because": "the cap"},
        "devices": {"pump": {"lines": ["2 pump devices (1, 2)"]},
                    "metric": {"lines": ["2 metric devices (1, 2)"]}},
        "timings": {"sections": {"all fits": 61.0}, "total_s": 125.0, "fits": 2,
                    "fit_mean_s": 30.0, "fit_cpu_total_s": 50.0, "run_cpu_s": 100.0,
                    "workers": 2},
    }
    text = render(results)
    for heading in ("# Benchmarks, 2026-11-22", "## SKAB", "## NAB", "## Device cost",
                    "## End to end", "## Other simulated devices", "## Timings"):
        assert heading in text
    assert f"| {skab.DECISION} | 0.800 | 20.0 | 20.0 |" in text
    assert "| 12.5 | n/a | 20.0 |" in text and "`a/flat.csv`: constant" in text
    assert "2 min 05 s" in text
    assert "chosen-on 0.470, confirmed-on 0.530, all 0.500." in text
    assert "pump: 3 h of training, 1 h streamed; metric: 28 days of training, 7 days" in text
    assert "2 metric devices (1, 2)" in text


def test_alert_latency_matches_the_reading_behind_each_alert() -> None:
    sub = e2e.Subscriber("127.0.0.1", 1)  # no connection is made
    sub.readings = {("pump-01", 100.0): 10.0, ("pump-01", 101.0): 11.0}
    sub.alerts = [
        (10.25, {"device": "pump-01", "ts_epoch": 100.0, "state": "start"}),
        (11.5, {"device": "pump-01", "ts_epoch": 101.0, "state": "end"}),
        (12.0, {"device": "pump-01", "ts_epoch": 150.0, "state": "end"}),  # stale: no reading
    ]
    got = sub.latencies()
    assert got["start"] == pytest.approx([0.25]) and got["all"] == pytest.approx([0.25, 0.5])


def test_scripted_faults_fit_the_stream_and_cpu_time_is_read() -> None:
    faults = e2e.shift_faults(300.0)
    assert len(faults) == 5 and all(f.start_s + f.duration_s < 300.0 for f in faults)
    assert {f.type for f in faults} == {"level_shift"}
    assert e2e.cpu_seconds(os.getpid()) > 0


@pytest.mark.slow
def test_float_lstm_scores_the_replays_windows_like_the_int8_model(tmp_path: Path) -> None:
    """keep_float + the harness's float path: same windows, same threshold method."""
    from edge.replay import replay_table
    from edge.table import read_table
    from export.config import FitConfig
    from export.fit import fit_bundle
    from tests.agent_fixtures import synthetic_csv

    csv = synthetic_csv(tmp_path / "pod.csv", 700, fault=(560, 600, 3))
    config = FitConfig(rows=":450", window=8, units=8, epochs=4, patience=2, batch_size=16,
                       calib_samples=64, keep_float=True, report=False)
    fit = fit_bundle(csv, tmp_path / "bundle", config)
    assert fit.float_model is not None and fit.float_model.is_file()
    assert fit.float_model.name not in fit.manifest.files  # not part of the device bundle
    result = replay_table(fit.out_dir, read_table(csv, channels=fit.manifest.channels))
    int8 = result.scorers["lstm_ae"]
    scored = np.isfinite(int8)
    normalised, threshold, heldout = skab.float_lstm_scores(csv, config, fit.float_model, scored)
    assert np.array_equal(np.isfinite(normalised), scored)
    assert np.corrcoef(int8[scored], normalised[scored])[0, 1] > 0.95
    int8_threshold = next(s.threshold.value for s in fit.manifest.scorers if s.name == "lstm_ae")
    assert threshold == pytest.approx(int8_threshold, rel=0.2) and heldout.size > 8
    assert np.mean((int8[scored] >= 1) == (normalised[scored] >= 1)) > 0.95


def test_anomaly_free_recording_cut_into_skab_files_and_summarised(tmp_path: Path) -> None:
    from tests.bench import skab_free

    source = tmp_path / "anomaly-free.csv"
    rows = [f"2020-02-08 13:30:{i % 60:02d};{i}.5;{2 * i}" for i in range(25)]
    source.write_text("datetime;a;b\n" + "\n".join(rows) + "\n")
    pieces = skab_free.cut_pieces(source, tmp_path / "pieces", rows=10)
    assert [p.name for p in pieces] == ["piece-0.csv", "piece-1.csv"]  # the last 5 dropped
    lines = pieces[1].read_text().splitlines()
    assert lines[0] == "datetime;a;b;anomaly;changepoint" and len(lines) == 11
    assert lines[1] == f"{rows[10]};0;0" and lines[-1] == f"{rows[19]};0;0"
    labelled = tmp_path / "labelled.csv"
    labelled.write_text("datetime;a;anomaly\n2020-02-08 13:30:00;1;0\n")
    with pytest.raises(ValueError, match="already labelled"):
        skab_free.cut_pieces(labelled, tmp_path / "other")

    def result(k: int, fp: int, alerts: int) -> dict[str, object]:
        return {"file": f"piece-{k}.csv", "alerts": alerts,
                "metrics": {skab.DECISION: PointMetrics(tp=0, fp=fp, fn=0, tn=100 - fp)}}

    free = skab_free.summarise([result(2, 50, 2), result(0, 10, 1), result(1, 0, 0)],
                               {"LOF": PointMetrics(tp=0, fp=30, fn=0, tn=270)})
    assert [p["file"] for p in free["pieces"]] == ["piece-0.csv", "piece-1.csv", "piece-2.csv"]
    assert free["parts"]["pieces 0-1"] == {"far_pct": 5.0, "rows": 200, "alerts": 1}
    assert free["parts"]["pieces 2-2"] == {"far_pct": 50.0, "rows": 100, "alerts": 2}
    assert free["parts"]["all"]["far_pct"] == 20.0
    text = "\n".join(skab_free.section(free))
    assert "| all | 300 | 20.0 | 3 |" in text and "piece-2 50.0" in text
    assert "same pieces (FAR %): LOF 10.0." in text
    assert [p.name for p in skab_free.piece_files(tmp_path)] == []  # cut_pieces' own folder
    (tmp_path / "skab-free-pieces").mkdir()
    for k in (10, 2):
        (tmp_path / "skab-free-pieces" / f"piece-{k}.csv").write_text("")
    assert [p.name for p in skab_free.piece_files(tmp_path)] == ["piece-2.csv", "piece-10.csv"]
