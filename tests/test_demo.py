"""`make demo` at a reduced size: one day to train on, six hours streamed, a tiny model.

The whole pipeline runs for real: edge-sim data, `edge-train fit` (subprocess), a private
Mosquitto, `edge-agent run` (subprocess), the accelerated stream, the alert subscriber, the
summary and the HTML report.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from firmware_sim.demo import (
    MARKER,
    DemoConfig,
    build_parser,
    config_from_args,
    prepare_out,
    run_demo,
    simulate,
)
from firmware_sim.faults import FaultSpec

pytestmark = pytest.mark.slow

# an unmistakable fault two hours into the streamed part: RH jumps by 10 robust spreads
SHIFT = FaultSpec("level_shift", 2 * 3600.0, 3600.0, ("rh_pct",), {"magnitude": 10.0, "sign": 1})


def small(out: Path, **changes: object) -> DemoConfig:
    values: dict[str, object] = {
        "out": out, "train_days": 1.0, "stream_days": 0.25, "epochs": 2, "units": 8,
        "speed": 4 * 3600.0, "stream_faults": (SHIFT,)}
    values.update(changes)
    return DemoConfig(**values)  # type: ignore[arg-type]


def test_demo_pipeline_end_to_end(tmp_path: Path) -> None:
    lines: list[str] = []
    result = run_demo(small(tmp_path / "demo-out"), lines.append)
    out = result.out
    text = "\n".join(lines)
    for step in ("[1/6] simulate", "[2/6] train", "[3/6] broker", "[4/6] agent", "[5/6] stream",
                 "[6/6] summary"):
        assert step in text
    # alerts arrived over MQTT and were printed one line each
    starts = [a for a in result.alerts if a["state"] == "start"]
    assert starts, text
    assert any(line.strip().startswith("ALERT start") and "airpod-01" in line for line in lines)
    assert "level_shift on rh_pct" in text
    # the summary: the injected shift is caught, and the live alerts are the replay's
    summary = json.loads((out / "summary.json").read_text())
    shift = next(f for f in summary["per_fault"] if f["type"] == "level_shift")
    assert shift["caught"] and shift["delay_s"] is not None
    assert summary["caught"] >= 1 and summary["replay_alert_ids_match_live"]
    assert summary["event_metrics"]["n_events"] == summary["value_faults"]
    assert summary["home_assistant"]["discovery_topics"]
    assert (out / "alerts.jsonl").read_text().count("\n") == len(result.alerts)
    # the report: self-contained HTML with the figure embedded, and the PNG beside it
    assert result.report is not None and result.report.exists()
    page = result.report.read_text()
    assert "data:image/png;base64," in page and "level_shift" in page
    assert all(p.exists() and p.stat().st_size > 10_000 for p in result.pngs)
    manifest = json.loads((out / "bundle" / "manifest.json").read_text())
    # the per-sensor members, on a pod with twins, calibrated on the training windows too
    sensor = {s["name"]: s["threshold"]["params"] for s in manifest["scorers"]
              if s["kind"] in ("twin", "variability", "twin_reading")}
    assert set(sensor) == {"twin", "variability", "twin_reading"}
    assert all(p["training_windows"] > 0 and p["heldout_windows"] > 0
               for p in sensor.values()), sensor
    assert (out / "agent" / "agent.toml").exists() and (out / MARKER).exists()
    assert "edge-agent" in (out / "logs" / "agent.log").read_text()


def test_simulation_is_the_same_every_time(tmp_path: Path) -> None:
    cfg = small(tmp_path, stream_faults=None)
    first = simulate(cfg, tmp_path / "a")
    second = simulate(cfg, tmp_path / "b")
    for name in ("train.csv", "stream.csv", "train.faults.json", "stream.faults.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert first.stream.timestamps[0] > first.train.timestamps.max() - 3600  # continues
    assert first.stream_faults and all(f["start"] >= "2026-01-06" for f in first.stream_faults)
    other = simulate(small(tmp_path, fault_seed=7, stream_faults=None), tmp_path / "c")
    assert other.stream_faults != second.stream_faults  # new faults, same pod
    assert (other.train.values[:100] == second.train.values[:100]).all()


def test_output_folder_is_recreated_but_a_foreign_one_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "demo-out"
    prepare_out(out)
    (out / "data" / "old.csv").write_text("x")
    prepare_out(out)
    assert not (out / "data" / "old.csv").exists()
    foreign = tmp_path / "home"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("x")
    with pytest.raises(RuntimeError, match="not made by the demo"):
        prepare_out(foreign)
    assert (foreign / "thesis.tex").exists()


def test_command_line_options() -> None:
    quick = config_from_args(build_parser().parse_args(["--quick", "--days", "1"]))
    assert quick.stream_days == 1.0 and quick.train_days == 2.0 and quick.epochs == 8
    default = config_from_args(build_parser().parse_args([]))
    assert default.train_days == 7.0 and default.stream_days == 2.0 and default.report
    with pytest.raises(ValueError):
        config_from_args(build_parser().parse_args(["--speed", "0"]))
