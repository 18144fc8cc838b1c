"""Bad input to `edge-train fit`: a one-line error naming the column or option, exit code 2,
and nothing left behind. None of these cases reaches TensorFlow."""

from __future__ import annotations

import stat
from pathlib import Path

import numpy as np
import pytest

from export.cli import main
from export.errors import FitError
from export.tflite_export import export_int8


def write_csv(path: Path, n: int = 300, **columns: list[str]) -> Path:
    rng = np.random.default_rng(0)
    stamps = np.datetime64("2024-03-01T00:00:00") + np.arange(n).astype("timedelta64[s]")
    data = {
        "timestamp": [f"{s}Z" for s in stamps],
        "a": [f"{v:.4f}" for v in rng.normal(size=n)],
        "b": [f"{v:.4f}" for v in rng.normal(size=n)],
    }
    data.update(columns)
    lines = [",".join(data)] + [",".join(row) for row in zip(*data.values(), strict=True)]
    path.write_text("\n".join(lines) + "\n")
    return path


def fit(tmp_path: Path, csv: Path, *extra: str) -> tuple[int, Path]:
    out = tmp_path / "out" / "bundle"
    return main(["fit", str(csv), "--out", str(out), "--epochs", "1", *extra]), out


def assert_refused(code: int, out: Path, err: str, *needles: str) -> None:
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert not out.exists()
    parent = out.parent
    assert not parent.exists() or not list(parent.iterdir()), list(parent.iterdir())


def test_no_numeric_channels(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    csv = tmp_path / "text.csv"
    csv.write_text("timestamp,state\n2024-03-01T00:00:00Z,on\n2024-03-01T00:00:01Z,off\n")
    code, out = fit(tmp_path, csv)
    assert_refused(code, out, capsys.readouterr().err, "no numeric channel", "--channels")


def test_too_few_rows_for_the_window(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = fit(tmp_path, write_csv(tmp_path / "d.csv"), "--rows", ":40", "--window", "16")
    assert_refused(code, out, capsys.readouterr().err, "too few rows", "--rows", "--window 16",
                   "even the shortest window it tries (8 rows) gets only", "--holdout 0.25")


def test_channel_constant_only_before_the_held_out_rows(tmp_path: Path) -> None:
    """A channel constant in all the training rows is kept (tests/test_train_flat_and_parity.py);
    so is one constant in the fit rows that moves in the held-out ones only (a command channel
    used late in the training rows; TSB-AD's MSL files have them): no scale to fit, so it is
    scaled by its tolerance around its fit-row value and judged by `flat` like the others."""
    from export.config import FitConfig
    from export.prepare import prepare

    csv = write_csv(tmp_path / "d.csv", flat=["3.5"] * 225 + ["3.6"] * 75)
    prep = prepare(csv, FitConfig())
    assert prep.flat == ("flat",)
    spec = prep.preprocess.channels[prep.data.channels.index("flat")]
    assert spec.center == 3.5 and spec.scale == pytest.approx(0.0035)
    assert "flat" in (prep.config.ensemble_members or ())


def test_mostly_missing_channel(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    holey = ["" if i % 4 else "1.0" for i in range(300)]
    code, out = fit(tmp_path, write_csv(tmp_path / "d.csv", holey=holey))
    assert_refused(code, out, capsys.readouterr().err, "'holey'", "75%", "--max-missing")


def test_unparsable_timestamps(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    csv = write_csv(tmp_path / "d.csv")
    text = csv.read_text().splitlines()
    text[7] = "not a time," + text[7].split(",", 1)[1]
    csv.write_text("\n".join(text) + "\n")
    code, out = fit(tmp_path, csv)
    assert_refused(
        code,
        out,
        capsys.readouterr().err,
        "time column 'timestamp'",
        "'not a time'",
        "--time-column",
    )


def test_output_exists_needs_force(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out" / "bundle"
    out.mkdir(parents=True)
    (out / "keep.txt").write_text("mine")
    code = main(["fit", str(write_csv(tmp_path / "d.csv")), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    assert "--out" in err and "--force" in err
    assert (out / "keep.txt").read_text() == "mine"
    assert sorted(p.name for p in out.parent.iterdir()) == ["bundle"]


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--channels", "a,zz"], ["'zz'", "--channels"]),
        (["--time-column", "when"], ["'when'", "--time-column"]),
        (["--label-column", "lbl"], ["'lbl'", "--label-column"]),
        (["--rows", "abc"], ["--rows", "START:END"]),
        (["--rows", "5000:"], ["--rows", "no rows"]),
        (["--ensemble-members", "lstm_ae,nope"], ["--ensemble-members"]),
        (["--forecast-column", "zz"], ["--forecast-column"]),
    ],
)
def test_bad_options(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], needles: list[str]
) -> None:
    code, out = fit(tmp_path, write_csv(tmp_path / "d.csv"), *args)
    assert_refused(code, out, capsys.readouterr().err, *needles)


def test_missing_data_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = fit(tmp_path, tmp_path / "absent.csv")
    assert_refused(code, out, capsys.readouterr().err, "absent.csv")


class _FakeModel:
    def save(self, path: Path) -> None:
        Path(path).write_bytes(b"not a model")


def test_converter_crash_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A converter that dies from a signal becomes a FitError naming the signal."""
    crash = tmp_path / "crash.sh"
    crash.write_text("#!/bin/sh\nkill -SEGV $$\n")
    crash.chmod(crash.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setattr("export.tflite_export.sys.executable", str(crash))
    windows = np.zeros((4, 8, 2))
    with pytest.raises(FitError, match="crashed with SIGSEGV"):
        export_int8(_FakeModel(), windows, 8.0, tmp_path / "m.tflite")
    assert not (tmp_path / "m.tflite").exists()


def test_an_irregular_source_restarts_its_window_only_beyond_its_usual_steps(
        tmp_path: Path) -> None:
    from export.config import FitConfig
    from export.prepare import prepare

    rng = np.random.default_rng(0)

    def prepared(steps: np.ndarray) -> tuple[float, int]:
        ts = 1.7e9 + np.concatenate([[0.0], np.cumsum(steps)])
        values = np.sin(np.arange(ts.size) / 7.0) + rng.normal(0, 0.1, ts.size)
        csv = tmp_path / "d.csv"
        csv.write_text("timestamp,value\n" + "".join(
            f"{t:.0f},{v:.5f}\n" for t, v in zip(ts, values, strict=True)))
        prep = prepare(csv, FitConfig())
        return prep.preprocess.max_gap_s, prep.summary["gaps_over_max_gap"]

    # a sensor that reports every 5 or 10 minutes, and now and then after 40 minutes
    irregular = rng.choice([300.0, 600.0], size=399, p=[0.7, 0.3])
    irregular[::50] = 2400.0
    assert prepared(irregular) == (5 * 600.0, 0)  # its usual step is 10 minutes, not 5
    # one that reports like a clock keeps 5 x its period, and a 40-minute gap restarts
    clock = np.full(399, 300.0)
    clock[::50] = 2400.0
    assert prepared(clock) == (5 * 300.0, 8)
