"""Shared pieces of `make bench`: where the data is, the fit settings, the worker pool,
progress lines and Markdown tables.

Fitting is the slow part (TensorFlow): it runs in `WORKERS` spawned worker processes, each
with TensorFlow on one thread, so two fits share the two cores instead of fighting over them.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import resource
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from export.config import FitConfig

ROOT = Path(__file__).resolve().parents[2]
DATA_ENV = "EDGE_BENCH_DATA"
DEFAULT_DATA = ROOT.parent / "shared" / "data"
BENCH_DIR = Path(__file__).resolve().parent


def data_root(explicit: Path | None = None) -> Path:
    """--data, else $EDGE_BENCH_DATA, else ../shared/data beside the repository."""
    if explicit is not None:
        return explicit
    env = os.environ.get(DATA_ENV)
    return Path(env) if env else DEFAULT_DATA


def fit_config(**overrides: Any) -> FitConfig:
    """The trainer's current defaults (`FitConfig()`), with only the benchmark's bookkeeping
    changed: no training report, replace the output, and whatever `overrides` say (rows,
    keep_float). Detection settings are never changed here."""
    return dataclasses.replace(FitConfig(), report=False, force=True, **overrides)


def cpu_seconds() -> float:
    """CPU time (user + system) of this process and of its finished children (the trainer's
    conversion subprocess), so a fit's cost can be told apart from waiting for a core."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(
        resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _init_worker() -> None:
    """Worker processes: TensorFlow on one thread each, quiet logs."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    import logging

    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    tf.get_logger().setLevel("ERROR")  # Keras' retracing notes on predict() of many shapes
    logging.getLogger("edge").setLevel(logging.ERROR)  # replays' rate-limited gap notes


def worker_pool(workers: int) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"),
                               initializer=_init_worker)


class Progress:
    """Timestamped progress lines on stdout (elapsed time since the start of the run)."""

    def __init__(self) -> None:
        self.started = time.monotonic()

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def __call__(self, line: str) -> None:
        minutes, seconds = divmod(int(self.elapsed), 60)
        print(f"[{minutes:>2}:{seconds:02d}] {line}", flush=True)


def machine() -> dict[str, Any]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"machine": platform.machine(), "cpu": cpu, "cores": os.cpu_count(),
            "python": platform.python_version(), "platform": platform.platform(),
            "executable": sys.executable}


def md_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub Markdown table; the first column left-aligned, the others right-aligned."""
    def cell(value: object) -> str:
        return str(value).replace("|", "\\|")

    align = ["---", *["---:" for _ in headers[1:]]]
    lines = ["| " + " | ".join(cell(h) for h in headers) + " |",
             "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def minutes(seconds: float) -> str:
    m, s = divmod(round(seconds), 60)
    return f"{m} min {s:02d} s"
