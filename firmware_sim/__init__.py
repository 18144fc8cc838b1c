"""edge-sim: simulated sensor devices with labelled faults, for tests, demos and benchmarks.

The API others import::

    from firmware_sim import generate, write_csv, read_csv, stream_readings, FaultSpec

    result = generate("airpod", "7d", seed=1)             # faults="default" | "none" | TOML | specs
    result.timestamps, result.values, result.channels      # (n,), (n, c), names
    result.anomaly, result.fault, result.schedule          # truth per row, and per fault
    write_csv(result, "data.csv")                          # + data.faults.json
    for reading in stream_readings("pump", seed=2, duration_s="10m"):
        reading.payload(), reading.truth()                 # the MQTT payloads

Devices: `airpod` (CAIRSENSE-like air-quality pod), `pump` (SKAB channels),
`metric` (a business metric, optionally with a forecast). See
`firmware_sim.devices.*` for channels and the figures behind them, and
`firmware_sim.faults` for the fault types.
"""

from __future__ import annotations

from firmware_sim.csvio import CsvData, read_csv, read_schedule, schedule_path, write_csv
from firmware_sim.devices import device_names, make_device
from firmware_sim.engine import Reading, SimResult, generate, stream, stream_readings
from firmware_sim.faults import FAULT_TYPES, ROW_FAULTS, UART_FAULTS, VALUE_FAULTS, FaultSpec
from firmware_sim.timeparse import format_iso, parse_duration, parse_time

__all__ = [
    "FAULT_TYPES",
    "ROW_FAULTS",
    "UART_FAULTS",
    "VALUE_FAULTS",
    "CsvData",
    "FaultSpec",
    "Reading",
    "SimResult",
    "device_names",
    "format_iso",
    "generate",
    "make_device",
    "parse_duration",
    "parse_time",
    "read_csv",
    "read_schedule",
    "schedule_path",
    "stream",
    "stream_readings",
    "write_csv",
]
