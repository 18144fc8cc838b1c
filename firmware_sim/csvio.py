"""The CSV contract, written and read back without pandas.

Header ``timestamp,<channels...>,anomaly,fault``; ``timestamp`` is
``YYYY-MM-DDTHH:MM:SSZ`` (UTC); channel values use ``%.6g``; a missing value is
an empty cell; ``anomaly`` is 0/1; ``fault`` is the fault type, empty when
none (several joined with "+" if a scenario overlaps them). Rows are in the
order a logger would have written them, timestamp glitches included.
Beside ``data.csv`` goes the fault schedule ``data.faults.json``.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from firmware_sim.engine import SimResult
from firmware_sim.timeparse import format_iso_array, parse_iso_array


def schedule_path(csv_path: str | Path) -> Path:
    """``data.csv`` -> ``data.faults.json`` (same folder)."""
    path = Path(csv_path)
    return (
        path.with_name(path.stem + ".faults.json") if path.suffix else Path(f"{path}.faults.json")
    )


def format_column(col: np.ndarray) -> list[str]:
    return [f"{v:.6g}" if v == v else "" for v in col.tolist()]


def write_csv(result: SimResult, path: str | Path, *, schedule: bool = True) -> Path:
    """Write the rows to `path` (and, unless `schedule=False`, `<stem>.faults.json`)."""
    path = Path(path)
    if path.parent != Path():
        path.parent.mkdir(parents=True, exist_ok=True)
    cols = [format_column(result.values[:, j]) for j in range(len(result.channels))]
    anomaly = [str(int(a)) for a in result.anomaly.tolist()]
    lines = map(
        ",".join,
        zip(format_iso_array(result.timestamps), *cols, anomaly, result.fault, strict=True),
    )
    with open(path, "w", encoding="utf-8", newline="\n") as fh:
        fh.write(",".join(["timestamp", *result.channels, "anomaly", "fault"]) + "\n")
        for line in lines:
            fh.write(line + "\n")
    if schedule:
        schedule_path(path).write_text(result.schedule_json(), encoding="utf-8")
    return path


@dataclass
class CsvData:
    """A simulator CSV read back: epoch timestamps, (rows, channels) values with NaN."""

    timestamps: np.ndarray
    channels: tuple[str, ...]
    values: np.ndarray
    anomaly: np.ndarray
    fault: list[str]


def read_csv(path: str | Path) -> CsvData:
    """Read a simulator CSV (or any CSV with the same header contract)."""
    with open(path, encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        rows = list(reader)
    if header[0] != "timestamp" or header[-2:] != ["anomaly", "fault"]:
        raise ValueError(f"{path}: header must be timestamp,<channels...>,anomaly,fault")
    n_ch = len(header) - 3
    values = np.array(
        [[float(c) if c else np.nan for c in row[1 : 1 + n_ch]] for row in rows], dtype=np.float64
    ).reshape(len(rows), n_ch)
    return CsvData(
        timestamps=parse_iso_array([row[0] for row in rows]),
        channels=tuple(header[1:-2]),
        values=values,
        anomaly=np.array([int(row[-2]) for row in rows], dtype=np.int8),
        fault=[row[-1] for row in rows],
    )


def read_schedule(path: str | Path) -> list[dict[str, Any]]:
    """The fault schedule beside a CSV (pass either the CSV or the JSON path)."""
    path = Path(path)
    target = path if path.name.endswith(".faults.json") else schedule_path(path)
    data: list[dict[str, Any]] = json.loads(target.read_text(encoding="utf-8"))
    return data
