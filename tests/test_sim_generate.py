"""edge-sim generate: determinism, the CSV contract, physical ranges, speed."""

from __future__ import annotations

import csv
import json
import math
import re
import time
from pathlib import Path

import numpy as np
import pytest

from firmware_sim import FAULT_TYPES, generate, read_csv, read_schedule, write_csv
from firmware_sim.cli import main

TS_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
AIRPOD = (
    [f"pm25_{m}_{k}" for m in ("pms", "opc", "dylos") for k in (1, 2, 3)]
    + [f"{g}_{k}" for g in ("o3", "no2") for k in (1, 2, 3)]
    + ["temp_c", "rh_pct"]
)
SKAB = [
    "Accelerometer1RMS",
    "Accelerometer2RMS",
    "Current",
    "Pressure",
    "Temperature",
    "Thermocouple",
    "Voltage",
    "Volume Flow RateRMS",
]


def _generate_cli(tmp_path: Path, name: str, *args: str) -> tuple[bytes, bytes]:
    out = tmp_path / f"{name}.csv"
    assert main(["generate", "--out", str(out), *args]) == 0
    return out.read_bytes(), (tmp_path / f"{name}.faults.json").read_bytes()


@pytest.mark.parametrize("device", ["airpod", "pump", "metric"])
def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path, device: str) -> None:
    args = ["--device", device, "--duration", "2d" if device != "pump" else "2h"]
    a = _generate_cli(tmp_path, "a", *args, "--seed", "7")
    b = _generate_cli(tmp_path, "b", *args, "--seed", "7")
    c = _generate_cli(tmp_path, "c", *args, "--seed", "8")
    assert a == b
    assert a[0] != c[0] and a[1] != c[1]


def test_csv_contract_read_back_with_csv_module(tmp_path: Path) -> None:
    out = tmp_path / "week.csv"
    assert main(["generate", "--device", "airpod", "--duration", "7d", "--seed", "1",
                 "--out", str(out)]) == 0  # fmt: skip
    with open(out, newline="") as fh:
        rows = list(csv.reader(fh))
    header, body = rows[0], rows[1:]
    assert header == ["timestamp", *AIRPOD, "anomaly", "fault"]
    assert all(len(r) == len(header) for r in body)
    assert all(TS_RE.match(r[0]) for r in body)
    assert {r[-2] for r in body} == {"0", "1"}
    assert {r[-1] for r in body} - {""} <= set(FAULT_TYPES)
    assert all((r[-2] == "1") == (r[-1] != "") for r in body)
    cells = [c for r in body for c in r[1:-2]]
    assert "" in cells  # dropouts are empty cells
    for c in cells:
        if c:
            assert math.isfinite(float(c)) and len(c.replace("-", "").replace(".", "")) <= 10
    data = read_csv(out)
    assert data.channels == tuple(AIRPOD) and data.values.shape == (len(body), len(AIRPOD))
    # the schedule is a list of {type, channels, start, end, start_row, end_row, params}
    sched = json.loads((tmp_path / "week.faults.json").read_text())
    assert isinstance(sched, list) and {e["type"] for e in sched} == set(FAULT_TYPES)
    for e in sched:
        assert set(e) == {"type", "channels", "start", "end", "start_row", "end_row", "params"}
        assert TS_RE.match(e["start"]) and TS_RE.match(e["end"]) and e["start"] < e["end"]
        assert body[e["start_row"]][-1].split("+")[0] == e["type"]
        assert body[e["end_row"]][-2] == "1"
    assert read_schedule(out) == sched


def test_timestamp_glitches_really_in_file(tmp_path: Path) -> None:
    result = generate("airpod", "7d", seed=1)
    write_csv(result, tmp_path / "g.csv")
    ts = read_csv(tmp_path / "g.csv").timestamps
    step = np.diff(ts)
    assert (step == 0).any(), "duplicate timestamps"
    assert (step < 0).any(), "out-of-order timestamps"
    assert (step > 60).any(), "gaps (rows absent)"
    assert len(ts) != 7 * 1440


def test_header_for_pump_and_metric() -> None:
    assert list(generate("pump", "1m", seed=0).channels) == SKAB
    assert generate("metric", "1d", seed=0).channels == ("value",)
    both = generate("metric", "1d", seed=0, forecast=True)
    assert both.channels == ("value", "predicted")
    # faults go into the sensor value, never into the forecast (timestamp glitches move rows)
    assert all(e["channels"] == ["value"] for e in both.schedule if not e["type"].startswith("ts_"))


def test_clean_signal_does_not_depend_on_faults() -> None:
    faulty = generate("airpod", "2d", seed=3)
    clean = generate("airpod", "2d", seed=3, faults="none")
    assert clean.anomaly.sum() == 0 and clean.schedule == [] and not any(clean.fault)
    assert not np.isnan(clean.values).any()
    # rows keep their identity through the glitches: compare the rows labelled normal
    normal = faulty.anomaly == 0
    idx = np.searchsorted(clean.timestamps, faulty.timestamps[normal])
    np.testing.assert_array_equal(faulty.values[normal], clean.values[idx])


@pytest.mark.parametrize("start", ["2026-01-05T00:00:00Z", "2026-07-06T00:00:00Z"])
def test_airpod_values_physical_and_plausible(start: str) -> None:
    r = generate("airpod", "14d", seed=5, faults="none", start=start)
    v = {ch: r.values[:, j] for j, ch in enumerate(r.channels)}
    for ch in AIRPOD[:15]:
        assert v[ch].min() >= 0.0
    assert v["rh_pct"].min() >= 5.0 and v["rh_pct"].max() <= 100.0
    pms = np.median([v[f"pm25_pms_{k}"] for k in (1, 2, 3)], axis=0) / 1.45
    assert 4.0 < np.median(pms) < 20.0  # typical Denver PM2.5, 5-15 ug/m3
    o3 = np.median([v[f"o3_{k}"] for k in (1, 2, 3)], axis=0) / 1.2
    assert 15.0 < np.percentile(o3, 95) < 80.0  # 20-70 ppb daytime peaks
    no2 = np.median([v[f"no2_{k}"] for k in (1, 2, 3)], axis=0)
    assert 8.0 < np.median(no2) < 40.0
    # twins agree: PM sensors of one make are strongly correlated
    pm = np.array([v[f"pm25_pms_{k}"] for k in (1, 2, 3)])
    assert np.corrcoef(pm).min() > 0.8


def test_pump_magnitudes_like_skab() -> None:
    r = generate("pump", "1h", seed=2, faults="none")
    med = dict(zip(r.channels, np.median(r.values, axis=0), strict=True))
    assert 0.02 < med["Accelerometer1RMS"] < 0.03 and 0.02 < med["Accelerometer2RMS"] < 0.05
    assert 0.8 < med["Current"] < 2.5 and 220 < med["Voltage"] < 250
    assert 70 < med["Temperature"] < 90 and 25 < med["Thermocouple"] < 30
    assert 30 < med["Volume Flow RateRMS"] < 34
    pressure = r.values[:, r.channels.index("Pressure")]
    steps = np.unique(np.round((pressure - 0.054711) / 0.327927, 6))
    assert np.allclose(steps, np.round(steps))  # noisy steps of 0.327927 bar


def test_seven_day_airpod_is_fast(tmp_path: Path) -> None:
    tic = time.perf_counter()
    write_csv(generate("airpod", "7d", seed=1), tmp_path / "w.csv")
    elapsed = time.perf_counter() - tic
    print(f"7-day airpod at 1/min: generate + write {elapsed:.3f} s")
    assert elapsed < 3.0


def test_period_and_start_options() -> None:
    r = generate("airpod", "1h", seed=0, faults="none", start="2026-03-01T12:00:00Z",
                 period_s="30s")  # fmt: skip
    assert (
        len(r) == 120
        and r.timestamps[0] == 1772366400.0
        and r.timestamps[1] - r.timestamps[0] == 30
    )
    with pytest.raises(ValueError, match="whole number of seconds"):
        generate("airpod", "1h", period_s=0.5)
    with pytest.raises(ValueError, match="unknown device"):
        generate("toaster", "1h")
