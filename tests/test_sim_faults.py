"""Every fault type: the labels match the rows and channels that were changed."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from firmware_sim import FAULT_TYPES, VALUE_FAULTS, FaultSpec, SimResult, generate
from firmware_sim.cli import main
from firmware_sim.csvio import read_csv, read_schedule

HOUR = 3600.0
ROW0, ROWS = 360, 30  # a fault at 06:00 for 30 minutes on a 1-minute grid


def one_fault(kind: str, channel: str | None = "o3_1", **params: object) -> SimResult:
    channels = (channel,) if channel else ()
    spec = FaultSpec(kind, 6 * HOUR, ROWS * 60.0, channels, params)
    return generate("airpod", "1d", seed=11, faults=[spec])


@pytest.fixture(scope="module")
def clean() -> SimResult:
    return generate("airpod", "1d", seed=11, faults="none")


def labelled(r: SimResult) -> np.ndarray:
    return np.nonzero(r.anomaly)[0]


@pytest.mark.parametrize("kind", VALUE_FAULTS)
def test_value_fault_labels_match_changes(kind: str, clean: SimResult) -> None:
    channel = "pm25_pms_2" if kind == "twin_disagree" else "o3_1"
    r = one_fault(kind, channel)
    rows = np.arange(ROW0, ROW0 + ROWS)
    np.testing.assert_array_equal(labelled(r), rows)
    assert {r.fault[i] for i in rows} == {kind} and not any(r.fault[:ROW0])
    assert {r.fault_channels[i] for i in rows} == {(channel,)}
    (entry,) = r.schedule
    assert (entry["type"], entry["channels"]) == (kind, [channel])
    assert (entry["start_row"], entry["end_row"]) == (ROW0, ROW0 + ROWS - 1)
    assert (entry["start"], entry["end"]) == ("2026-01-05T06:00:00Z", "2026-01-05T06:30:00Z")
    np.testing.assert_array_equal(r.clean, clean.values)
    changed = ~((r.values == clean.values) | (np.isnan(r.values) & np.isnan(clean.values)))
    col = r.channels.index(channel)
    assert not changed[:, [j for j in range(len(r.channels)) if j != col]].any()
    assert set(np.nonzero(changed[:, col])[0]) <= set(rows.tolist())
    assert changed[rows, col].mean() > 0.9  # the fault is really there


def test_value_fault_shapes(clean: SimResult) -> None:
    col, rows = clean.channels.index("o3_1"), slice(ROW0, ROW0 + ROWS)
    base = clean.values[rows, col]
    spike = one_fault("spike", delta=40.0)
    np.testing.assert_allclose(spike.values[rows, col], base + 40.0, rtol=1e-12)
    shift = one_fault("level_shift", delta=-5.0)
    np.testing.assert_allclose(shift.values[rows, col], np.maximum(base - 5.0, 0), rtol=1e-12)
    drift = one_fault("drift", delta=30.0)
    added = drift.values[rows, col] - base
    assert np.all(np.diff(added) > 0) and added[-1] == pytest.approx(30.0)
    stuck = one_fault("stuck")
    assert np.all(stuck.values[rows, col] == clean.values[ROW0 - 1, col])
    assert np.isnan(one_fault("dropout").values[rows, col]).all()
    slope = one_fault("slope_change", factor=0.5)  # 1.2 -> 0.6, as in Denver
    np.testing.assert_allclose(slope.values[rows, col], 0.5 * base, rtol=1e-12)
    burst = one_fault("noise_burst", magnitude=3.0)
    assert np.std(burst.values[rows, col] - base) > 2 * np.std(np.diff(base))
    twin = one_fault("twin_disagree", "pm25_pms_2", factor=2.5)
    pms = [twin.channels.index(f"pm25_pms_{k}") for k in (1, 2, 3)]
    ratio = twin.values[rows, pms[1]] / np.mean(twin.values[rows][:, [pms[0], pms[2]]], axis=1)
    assert np.median(ratio) > 1.8  # well away from its twins
    assert twin.schedule[0]["params"]["factor"] == 2.5


def test_logger_dropout_all_channels() -> None:
    r = one_fault("dropout", None)
    assert np.isnan(r.values[ROW0 : ROW0 + ROWS]).all()
    assert not np.isnan(r.values[:ROW0]).any()
    assert r.fault_channels[ROW0] == r.channels


def test_ts_duplicate(clean: SimResult) -> None:
    r = one_fault("ts_duplicate", None)
    assert len(r) == len(clean) + ROWS
    block = slice(ROW0, ROW0 + 2 * ROWS)
    np.testing.assert_array_equal(labelled(r), np.arange(ROW0, ROW0 + 2 * ROWS))
    np.testing.assert_array_equal(r.timestamps[block][::2], r.timestamps[block][1::2])
    np.testing.assert_array_equal(r.values[block][::2], r.values[block][1::2])
    assert set(r.fault[block]) == {"ts_duplicate"}
    entry = r.schedule[0]
    assert (entry["start_row"], entry["end_row"]) == (ROW0, ROW0 + 2 * ROWS - 1)


def test_ts_out_of_order(clean: SimResult) -> None:
    r = one_fault("ts_out_of_order", None, delay_rows=5)
    assert len(r) == len(clean)
    late = np.arange(ROW0 + 5, ROW0 + 5 + ROWS)  # the 30 rows arrive after 5 later ones
    np.testing.assert_array_equal(labelled(r), late)
    np.testing.assert_array_equal(r.timestamps[late], clean.timestamps[ROW0 : ROW0 + ROWS])
    assert r.timestamps[late[0]] < r.timestamps[late[0] - 1]  # time goes backwards
    np.testing.assert_array_equal(r.timestamps[:ROW0], clean.timestamps[:ROW0])
    np.testing.assert_array_equal(
        r.timestamps[ROW0 : ROW0 + 5], clean.timestamps[ROW0 + ROWS : ROW0 + ROWS + 5]
    )
    assert r.schedule[0]["params"] == {"delay_rows": 5}


@pytest.mark.parametrize("kind,params", [("ts_gap", {}), ("dropout", {"mode": "missing"})])
def test_gap_rows_absent(kind: str, params: dict[str, str], clean: SimResult) -> None:
    r = one_fault(kind, None, **params)
    assert len(r) == len(clean) - ROWS
    assert r.timestamps[ROW0] - r.timestamps[ROW0 - 1] == (ROWS + 1) * 60
    np.testing.assert_array_equal(labelled(r), [ROW0])  # the row that reveals the gap
    entry = r.schedule[0]
    assert (entry["start_row"], entry["end_row"]) == (ROW0, ROW0)
    assert (entry["start"], entry["end"]) == ("2026-01-05T06:00:00Z", "2026-01-05T06:30:00Z")


def test_default_mix_covers_all_types_without_overlap() -> None:
    r = generate("airpod", "7d", seed=4)
    assert {e["type"] for e in r.schedule} == set(FAULT_TYPES)
    assert all("+" not in f for f in r.fault)
    spans = sorted((e["start"], e["end"]) for e in r.schedule)
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans))
    assert spans[0][0] >= "2026-01-06T09:36:00Z"  # the first fifth stays clean
    for e in r.schedule:
        rows = [i for i in range(e["start_row"], e["end_row"] + 1) if r.anomaly[i]]
        assert rows and all(r.fault[i] == e["type"] for i in rows)
    assert 0.02 < r.anomaly.mean() < 0.2
    pump = generate("pump", "2h", seed=4)
    assert "twin_disagree" not in {e["type"] for e in pump.schedule}


SCENARIO = """
description = "two faults"
device = "airpod"

[[fault]]
type = "spike"
channel = "pm25_opc_3"
start = 2026-01-05T03:00:00Z
duration = "2m"
magnitude = 10

[[fault]]
type = "ts_gap"
start = "12h"
end = "12h10m"
"""


def test_toml_scenario_through_cli(tmp_path: Path) -> None:
    scenario = tmp_path / "s.toml"
    scenario.write_text(SCENARIO)
    out = tmp_path / "d.csv"
    assert main(["generate", "--device", "airpod", "--duration", "1d", "--seed", "2",
                 "--scenario", str(scenario), "--out", str(out)]) == 0  # fmt: skip
    sched = read_schedule(out)
    assert [e["type"] for e in sched] == ["spike", "ts_gap"]
    assert sched[0]["channels"] == ["pm25_opc_3"] and sched[0]["params"]["magnitude"] == 10
    assert (sched[0]["start_row"], sched[0]["end_row"]) == (180, 181)
    data = read_csv(out)
    assert [data.fault[i] for i in np.nonzero(data.anomaly)[0]] == ["spike", "spike", "ts_gap"]
    assert data.fault[720] == "ts_gap" and data.timestamps[720] - data.timestamps[719] == 660


@pytest.mark.parametrize(
    "body,message",
    [
        ('[[fault]]\ntype = "melt"\nstart = "1h"', "type must be one of"),
        ('[[fault]]\ntype = "spike"\nchannel = "co2"\nstart = "1h"', "cannot take faults"),
        ('[[fault]]\ntype = "spike"\nchannel = "o3_1"\nstart = "1h"\nsize = 3', "unknown param"),
        ('[[fault]]\ntype = "twin_disagree"\nchannel = "temp_c"\nstart = "1h"', "twin group"),
        ('[[fault]]\ntype = "spike"\nstart = "3d"', "after the end"),
        ('[[faults]]\ntype = "spike"', "unknown key"),
        ('device = "pump"', "not 'airpod'"),
    ],
)
def test_bad_scenarios_say_why(tmp_path: Path, body: str, message: str) -> None:
    scenario = tmp_path / "bad.toml"
    scenario.write_text(body)
    with pytest.raises(ValueError, match=message):
        generate("airpod", "1d", faults=scenario)
