"""edge-sim CLI: help, errors, plot; the streaming API; duration parsing."""

from __future__ import annotations

import argparse
import doctest
import itertools
from pathlib import Path

import numpy as np
import pytest

from firmware_sim import (
    engine,
    generate,
    parse_duration,
    pms5003,
    signals,
    stream_readings,
    timeparse,
)
from firmware_sim.cli import build_parser, main


def test_every_flag_has_help() -> None:
    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert set(subparsers.choices) == {"generate", "publish", "uart", "plot", "channels"}
    for name, sub in subparsers.choices.items():
        for action in sub._actions:
            if not isinstance(action, argparse._HelpAction):
                assert action.help, f"{name} {action.dest} has no help"


def test_plot_writes_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    csv_path, png = tmp_path / "d.csv", tmp_path / "d.png"
    assert main(["generate", "--device", "airpod", "--duration", "2d", "--seed", "1",
                 "--out", str(csv_path)]) == 0  # fmt: skip
    assert main(["plot", str(csv_path), "--out", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000


def test_errors_are_short_messages(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = str(tmp_path / "x.csv")
    assert main(["generate", "--device", "pump", "--faults", "nope.toml", "--out", out]) == 2
    assert "nope.toml" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["generate", "--device", "pump", "--duration", "soon", "--out", out])
    assert "invalid duration" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["generate", "--device", "toaster", "--out", out])
    scenario = tmp_path / "s.toml"
    scenario.write_text('[[fault]]\ntype = "spike"\nchannel = "value"\nstart = "1h"\n')
    args = ["generate", "--device", "metric", "--scenario", str(scenario), "--out", out]
    assert main([*args, "--faults", "none"]) == 2
    assert "not both" in capsys.readouterr().err
    assert main(["uart", "--link", str(tmp_path / "l"), "--rate", "0"]) == 2


def test_channels_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["channels", "--device", "pump"]) == 0
    assert "Volume Flow RateRMS" in capsys.readouterr().out


def test_stream_has_no_seams_and_matches_generate() -> None:
    rows = 10080 + 600  # crosses the first block boundary
    streamed = list(itertools.islice(stream_readings("airpod", seed=9, faults="none"), rows))
    ts = np.array([r.ts for r in streamed])
    assert np.all(np.diff(ts) == 60)
    temp = np.array([r.values["temp_c"] for r in streamed])
    assert np.abs(np.diff(temp)).max() < 1.5  # no jump where the blocks meet
    week = generate("airpod", "7d", seed=9, faults="none")
    assert [r.payload() for r in week.readings()] == [r.payload() for r in streamed[:10080]]


def test_parse_duration() -> None:
    assert parse_duration("90s") == 90 and parse_duration("30m") == 1800
    assert parse_duration("12h") == 43200 and parse_duration("7d") == 604800
    assert parse_duration("1d12h") == 129600 and parse_duration("45") == 45
    for bad in ("", "7x", "d7", "-5s", "1h 2m"):
        with pytest.raises(ValueError):
            parse_duration(bad)


@pytest.mark.parametrize("module", [engine, pms5003, signals, timeparse])
def test_docstring_examples(module: object) -> None:
    assert doctest.testmod(module).failed == 0  # type: ignore[arg-type]
