"""The demo's settings (`DemoConfig`) and the pod data it simulated (`Simulation`).

Shared by the run (`firmware_sim.demo`, which builds them) and its scoring and report
(`firmware_sim.demo_report`, which reads them).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from firmware_sim.engine import SimResult, resolve_period
from firmware_sim.faults import FaultSpec


@dataclass(frozen=True)
class DemoConfig:
    out: Path = Path("demo-out")
    device: str = "airpod"
    device_id: str = "airpod-01"
    train_days: float = 7.0
    stream_days: float = 2.0
    seed: int = 1  # the pod: its sensors' calibration, the weather, the training faults
    fault_seed: int = 2  # the faults of the streamed days
    stream_faults: tuple[FaultSpec, ...] | None = None  # fixed faults instead (offsets from
    # the start of the streamed days)
    start: str = "2026-01-05T00:00:00Z"
    speed: float = 3600.0  # simulated seconds per wall-clock second
    epochs: int = 30
    units: int = 32
    train_stride: int = 2
    report: bool = True  # the demo's HTML report and edge-train's report in the bundle
    timeout_s: float = 600.0  # for each subprocess step

    @property
    def period_s(self) -> float:
        return resolve_period(self.device, None)


@dataclass
class Simulation:
    train: SimResult
    stream: SimResult
    train_csv: Path
    stream_csv: Path
    train_faults: list[dict[str, Any]]
    stream_faults: list[dict[str, Any]]
