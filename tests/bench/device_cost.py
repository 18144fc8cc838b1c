"""What the bundle costs on a device: model sizes, per-window latency of each runtime, the
agent process's memory and cold start, replay throughput.

Latency (`runtime_costs`, run in a worker with TensorFlow on one thread): the same windows of
a SKAB file through the int8 TFLite model (as the engine runs it, and `invoke()` alone), the
ONNX distance model, the whole `ScoringEngine`, a float32 TFLite conversion of the float Keras
autoencoder (made here, in a subprocess, as the trainer converts) and the Keras model itself
(`model.predict` one window at a time, and a direct call). Ratios are against int8 TFLite.

Agent process (`agent_process_costs`): `edge-agent run` with a stdin source and a private
Mosquitto, `NOTIFY_SOCKET` pointing at a datagram socket here, so "ready" is the agent's own
sd_notify READY=1; then one window of readings whose last row is far off, with `trigger = 1`,
so the first alert on stdout marks the first window scored. VmRSS from /proc.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from tests.bench.harness import ROOT

FloatArray = npt.NDArray[np.float64]
WINDOWS = 400
KERAS_PREDICT_WINDOWS = 60
KERAS_CALL_WINDOWS = 100
WARMUP = 20


def _percentiles(seconds: list[float]) -> dict[str, float]:
    ms = 1000 * np.asarray(seconds)
    return {"p50_ms": round(float(np.percentile(ms, 50)), 4),
            "p99_ms": round(float(np.percentile(ms, 99)), 4),
            "mean_ms": round(float(ms.mean()), 4), "n": int(ms.size)}


def time_each(fn: Callable[[int], object], n: int, warmup: int = WARMUP) -> dict[str, float]:
    """Wall time of fn(i) for i in range(n), after `warmup` untimed calls."""
    for i in range(min(warmup, n)):
        fn(i)
    times = []
    for i in range(n):
        t0 = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - t0)
    return _percentiles(times)


def convert_float(keras_path: Path, out: Path, timeout_s: float = 600.0) -> Path:
    """float32 TFLite of the Keras model, converted in a subprocess (a converter crash must
    not take the benchmark down)."""
    done = subprocess.run(
        [sys.executable, "-m", "tests.bench.device_cost", "convert-float", str(keras_path),
         str(out)], cwd=ROOT, capture_output=True, text=True, timeout=timeout_s,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, check=False)
    if done.returncode != 0 or not out.is_file():
        raise RuntimeError(f"float TFLite conversion failed ({done.returncode}): "
                           f"{done.stderr[-1500:]}")
    return out


def _convert_float_child(keras_path: Path, out: Path) -> None:
    import keras
    import tensorflow as tf

    model = keras.models.load_model(keras_path, compile=False)
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    out.write_bytes(converter.convert())


def runtime_costs(bundle_dir: Path, csv: Path, keras_path: Path) -> dict[str, Any]:
    """Worker task: sizes and per-window latency of each runtime on the same windows."""
    import keras

    from edge.bundle import load_bundle
    from edge.engine import ScoringEngine
    from edge.runtimes.tflite import TfliteModel
    from export.prepare import prepare, windows_at
    from tests.bench.harness import fit_config

    bundle = load_bundle(bundle_dir)
    m = bundle.manifest
    engine = ScoringEngine(bundle, threads=1)
    assert engine.tflite is not None and engine.onnx is not None and m.distance is not None
    prep = prepare(csv, fit_config(rows=":400"))
    length = m.window.length
    ends = np.arange(length - 1, min(len(prep.scaled), length - 1 + WINDOWS), dtype=np.int64)
    windows = windows_at(prep.scaled, ends, length)
    clipped = np.clip(windows, -m.preprocess.clip, m.preprocess.clip).astype(np.float32)
    lags = m.distance.lags
    rows = windows[:, -lags:, :].reshape(len(windows), -1)  # the ONNX input, as the engine
    if m.distance.clip_inputs:
        rows = np.clip(rows, -m.preprocess.clip, m.preprocess.clip)
    flat = rows.astype(np.float32)
    tflite, onnx, state = engine.tflite, engine.onnx, engine.new_state()
    n = len(windows)
    with tempfile.TemporaryDirectory(prefix="bench-float-") as tmp:
        float_path = convert_float(keras_path, Path(tmp) / "lstm_ae_float.tflite")
        float_bytes = float_path.stat().st_size
        float_tflite = TfliteModel(float_path, threads=1)
        model = keras.models.load_model(keras_path, compile=False)
        interpreter = tflite.interpreter
        quantised = [tflite._quantize(clipped[i:i + 1]) for i in range(n)]
        index = tflite.input["index"]

        def invoke(i: int) -> None:
            interpreter.set_tensor(index, quantised[i])
            interpreter.invoke()

        latency = {
            "tflite_int8_run": time_each(lambda i: tflite.run(clipped[i:i + 1]), n),
            "tflite_int8_invoke": time_each(invoke, n),
            "onnx_distance_run": time_each(lambda i: onnx.run(flat[i:i + 1]), n),
            "engine_score_window": time_each(
                lambda i: engine.score_windows(windows[i:i + 1], state), n),
            "tflite_float32_run": time_each(lambda i: float_tflite.run(clipped[i:i + 1]), n),
            "keras_call": time_each(lambda i: model(clipped[i:i + 1], training=False),
                                    min(n, KERAS_CALL_WINDOWS)),
            "keras_predict": time_each(
                lambda i: model.predict(clipped[i:i + 1], verbose=0), KERAS_PREDICT_WINDOWS),
        }
        int8_out = np.vstack([tflite.run(clipped[i:i + 1]) for i in range(n)])
        float_out = np.vstack([float_tflite.run(clipped[i:i + 1]) for i in range(n)])
        keras_out = np.asarray(model.predict(clipped, verbose=0))
    from edge.replay import replay_table
    from edge.table import read_table

    table = read_table(csv, channels=m.channels)
    replays = [replay_table(engine, table) for _ in range(3)]
    pipeline = pipeline_cost(bundle, table.values, m.channels)
    base = latency["tflite_int8_run"]["p50_ms"]
    err = {k: np.square(windows - v).mean(axis=(1, 2))
           for k, v in (("int8", int8_out), ("float_tflite", float_out), ("keras", keras_out))}
    files = {name: (bundle_dir / name).stat().st_size for name in ("manifest.json",
                                                                    *m.files)}
    return {
        "bundle": bundle_dir.name, "windows": n, "window_shape": [length, len(m.channels)],
        "threads": 1,
        "latency": latency,
        "replay": {"file": csv.name, "rows": len(table),
                   "rows_per_s_median": float(np.median([r.rows_per_s for r in replays]))},
        "pipeline": pipeline,
        "ratio_p50_vs_tflite_int8": {k: round(v["p50_ms"] / base, 2) for k, v in latency.items()},
        "sizes_bytes": {**files, "bundle_files_total": sum(files.values()),
                        "lstm_ae_float.tflite": float_bytes,
                        "lstm_ae_float.keras": keras_path.stat().st_size},
        "parity": {
            "float_tflite_vs_keras_max_abs": float(np.max(np.abs(float_out - keras_out))),
            "int8_vs_keras_error_corr": float(np.corrcoef(err["int8"], err["keras"])[0, 1]),
            "int8_vs_keras_error_max_rel": float(np.max(
                np.abs(err["int8"] - err["keras"]) / np.maximum(err["keras"], 1e-9))),
        },
    }


def memory_cost(bundle_dir: Path, csv: Path, windows: int = 400) -> dict[str, Any]:
    """Per-window cost of a one-channel bundle's engine with its device memories (full, after
    as many windows as they hold), against the same engine without the long shapes, and
    without them and the lag memories, on the same windows."""
    import dataclasses

    from edge.bundle import load_bundle
    from edge.engine import ScoringEngine
    from edge.preprocess import scale_rows
    from edge.table import read_table
    from export.prepare import windows_at

    bundle = load_bundle(bundle_dir)
    m = bundle.manifest
    held = max((s.memory.size for s in m.scorers if s.memory is not None), default=0)
    table = read_table(csv, channels=m.channels)
    scaled = np.nan_to_num(scale_rows(table.values, m.preprocess))
    length = m.window.length
    ends = np.arange(length - 1, min(len(scaled), length - 1 + held + windows), dtype=np.int64)
    all_windows = windows_at(scaled, ends, length)
    warm, timed = all_windows[:-windows], all_windows[-windows:]
    shapes = {s.name for s in m.scorers if s.kind == "long_shape"}
    no_shapes = m.model_copy(update={
        "scorers": [s for s in m.scorers if s.name not in shapes],
        "ensemble": m.ensemble.model_copy(update={"members": [
            n for n in m.ensemble.members if n not in shapes]})})
    frozen = no_shapes.model_copy(update={"scorers": [
        s.model_copy(update={"memory": None}) for s in no_shapes.scorers]})
    out: dict[str, Any] = {"file": csv.name, "memory_size": held, "windows": len(timed),
                           "long_shapes": len(shapes)}
    for name, variant in (("with_memory", bundle),
                          ("without_long_shapes", dataclasses.replace(bundle, manifest=no_shapes)),
                          ("without_memory", dataclasses.replace(bundle, manifest=frozen))):
        engine = ScoringEngine(variant, threads=1)
        state = engine.new_state()
        engine.score_windows(warm, state)  # fills the memory (and the likelihood history)
        out[name] = time_each(lambda i, e=engine, st=state: e.score_windows(timed[i:i + 1], st),
                              len(timed))
    out["ratio_p50"] = round(out["with_memory"]["p50_ms"] / out["without_memory"]["p50_ms"], 2)
    return out


def pipeline_cost(bundle: Any, raw: FloatArray, channels: list[str]) -> dict[str, Any]:
    """CPU per live reading in the agent's code path without MQTT: JSON payload ->
    `decode_counted` -> `Gateway.process` (window, score, decide), one reading at a time."""
    from edge.engine import ScoringEngine
    from edge.pipeline import Gateway
    from edge.readings import BadInputCounter, decode_counted

    gateway = Gateway(ScoringEngine(bundle), counter=BadInputCounter())
    counter = BadInputCounter()
    start = time.time() - len(raw)
    payloads = [json.dumps({"ts": start + i, "values": dict(zip(
        channels, np.nan_to_num(row).tolist(), strict=True))}).encode()
        for i, row in enumerate(raw)]
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for payload in payloads:
        reading = decode_counted(payload, "bench", counter, now=time.time(), channels=channels,
                                 max_bytes=4096, max_skew_s=1e9, received=time.monotonic())
        if reading is not None:
            gateway.process(reading)
    cpu = time.process_time() - cpu0
    return {"readings": len(payloads), "cpu_ms_per_reading": 1000 * cpu / len(payloads),
            "wall_ms_per_reading": 1000 * (time.perf_counter() - wall0) / len(payloads),
            "readings_per_s_at_50pct": 0.5 * len(payloads) / cpu if cpu > 0 else None}


# -- the agent process -----------------------------------------------------------------------
def _rss_kb(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


def _agent_toml(path: Path, bundle: Path, broker: Any) -> Path:
    path.write_text(f"""
[bundle]
path = "{bundle}"

[mqtt]
host = "{broker.host}"
port = {broker.port}
client_id = "bench-agent"

[[sources]]
type = "stdin"
device = "bench"

[decision]
trigger = 1

[stdout]
enabled = true

[outbox]
path = "{path.parent / 'outbox.sqlite3'}"

[limits]
max_skew_s = 1e9

[log]
level = "WARNING"
""")
    return path


def _lines(channels: list[str], rows: FloatArray, start_ts: float) -> list[bytes]:
    return [(json.dumps({"ts": start_ts + i, "values": dict(zip(channels, r.tolist(),
                                                                strict=True))}) + "\n").encode()
            for i, r in enumerate(rows)]


def one_agent_start(bundle: Path, raw: FloatArray, channels: list[str], length: int,
                    broker: Any, work: Path) -> dict[str, Any]:
    """Start `edge-agent run`, time READY=1 and the first scored window, read its RSS."""
    notify = work / "notify.sock"
    notify.unlink(missing_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(notify))
    sock.settimeout(60)
    config = _agent_toml(work / "agent.toml", bundle, broker)
    (work / "outbox.sqlite3").unlink(missing_ok=True)
    first = raw[:length].copy()
    first[-1] = first[-1] * 10 + 10  # far off on every channel: the first window alerts
    steady = raw[length:length + 2000]
    lines = _lines(channels, np.vstack([first, steady]), time.time() - len(raw) - 10)
    env = {**os.environ, "NOTIFY_SOCKET": str(notify), "PYTHONUNBUFFERED": "1",
           "TF_CPP_MIN_LOG_LEVEL": "3"}
    first_line = threading.Event()
    stamps: dict[str, float] = {}
    log = (work / "agent.log").open("wb")
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "edge.cli", "run", "--config", str(config)],
                            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                            env=env)

    def read_stdout() -> None:
        assert proc.stdout is not None
        for _ in proc.stdout:
            if not first_line.is_set():
                stamps["first"] = time.monotonic()
                first_line.set()

    reader = threading.Thread(target=read_stdout, daemon=True)
    reader.start()
    try:
        assert proc.stdin is not None
        proc.stdin.write(b"".join(lines[:length]))
        proc.stdin.flush()
        while b"READY=1" not in sock.recv(4096):
            pass
        ready = time.monotonic() - t0
        rss_ready = _rss_kb(proc.pid)
        if not first_line.wait(60):
            raise RuntimeError(f"no alert from the agent: {(work / 'agent.log').read_text()}")
        scored = stamps["first"] - t0
        rss_first = _rss_kb(proc.pid)
        proc.stdin.write(b"".join(lines[length:]))
        proc.stdin.close()
        code = proc.wait(120)
        return {"ready_s": ready, "first_window_s": scored, "exit_code": code,
                "rss_ready_kb": rss_ready.get("VmRSS"), "rss_first_kb": rss_first.get("VmRSS"),
                "hwm_kb": rss_first.get("VmHWM"), "readings": len(lines)}
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reader.join(5)
        log.close()
        sock.close()


def steady_rss(bundle: Path, raw: FloatArray, channels: list[str], broker: Any, work: Path
               ) -> dict[str, Any]:
    """RSS after scoring a few thousand readings (stdin kept open), then a clean stop."""
    config = _agent_toml(work / "agent.toml", bundle, broker)
    (work / "outbox.sqlite3").unlink(missing_ok=True)
    lines = _lines(channels, raw, time.time() - len(raw) - 10)
    log = (work / "agent-steady.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "edge.cli", "run", "--config", str(config)],
                            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            stderr=log, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    try:
        assert proc.stdin is not None
        proc.stdin.write(b"".join(lines))
        proc.stdin.flush()
        time.sleep(max(3.0, len(lines) / 1000))
        rss = _rss_kb(proc.pid)
        proc.stdin.close()
        code = proc.wait(120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
    return {"readings": len(lines), "rss_kb": rss.get("VmRSS"), "hwm_kb": rss.get("VmHWM"),
            "exit_code": code}


def agent_process_costs(bundle: Path, csv: Path, work: Path, runs: int = 3) -> dict[str, Any]:
    from edge.bundle import load_bundle
    from edge.table import read_table
    from firmware_sim.broker import Broker

    manifest = load_bundle(bundle).manifest
    table = read_table(csv, channels=manifest.channels)
    raw = np.nan_to_num(table.values)
    work.mkdir(parents=True, exist_ok=True)
    with Broker() as broker:
        starts = [one_agent_start(bundle, raw, manifest.channels, manifest.window.length,
                                  broker, work) for _ in range(runs)]
        steady = steady_rss(bundle, raw, manifest.channels, broker, work)

    def median(key: str) -> float:
        return float(np.median([s[key] for s in starts]))

    return {"runs": starts, "ready_s_median": median("ready_s"),
            "first_window_s_median": median("first_window_s"),
            "rss_ready_mb_median": median("rss_ready_kb") / 1024,
            "rss_first_window_mb_median": median("rss_first_kb") / 1024,
            "steady": steady}


if __name__ == "__main__":
    if sys.argv[1:2] == ["convert-float"]:
        _convert_float_child(Path(sys.argv[2]), Path(sys.argv[3]))
    else:
        sys.exit("usage: python -m tests.bench.device_cost convert-float MODEL.keras OUT.tflite")
