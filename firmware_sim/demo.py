"""`make demo`: simulate -> train -> export -> agent -> MQTT alerts, on one machine, in minutes.

    python -m firmware_sim.demo                 # 7 days to train on, 2 days streamed at 3600x
    python -m firmware_sim.demo --quick         # 2 days + 12 hours, a small model (about 1 min)
    python -m firmware_sim.demo --days 3 --speed 7200 --out /tmp/demo

1. simulate: `edge-sim`'s air-quality pod (`airpod`, 17 channels, one reading a minute) for
   the training days *and* the streamed days in one continuous run, so the streamed days are
   the same pod's next days. The training days carry the seeded default fault mix (the trainer
   leaves labelled rows out); the streamed days get new faults drawn with `--fault-seed`.
   Why not a different `--seed` for the stream: the seed also draws the pod's sensors
   (per-unit gains and offsets), so another seed is another pod, and a detector trained on one
   pod flags most of a different pod's clean data (it should).
2. train: `edge-train fit` (a subprocess) trains and exports the bundle.
3. broker: a private Mosquitto on a free loopback port (`firmware_sim.broker`).
4. agent: `edge-agent run` (a subprocess) with a generated `agent.toml`, subscribed to
   `sensors/+/readings`, Home Assistant discovery on.
5. stream: the streamed days published like `edge-sim publish` (readings and truth topics,
   QoS 1) at `--speed` simulated seconds per second; a subscriber prints every alert.
6. summary: injected faults vs alerts (caught, missed, false alarms, detection delay, with
   `export.metrics.event_metrics`) and an HTML report with the stream, scores, thresholds,
   alerts and faults (`firmware_sim.demo_report`).

Everything goes to `--out` (default `demo-out/`, recreated on every run); the same options
give the same data, model and alerts. Needs the `train` extra (TensorFlow, matplotlib) and the
`mosquitto` binary, which `make demo` installs.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from firmware_sim import demo_report
from firmware_sim.broker import Broker
from firmware_sim.csvio import write_csv
from firmware_sim.demo_config import DemoConfig, Simulation
from firmware_sim.devices import make_device
from firmware_sim.engine import SimResult, generate
from firmware_sim.publish import DeviceClient, PublishConfig
from firmware_sim.scenario import default_mix
from firmware_sim.timeparse import format_iso, to_epoch

PREFIX = "edge-anomaly"  # the agent's topic prefix
SENSOR_PREFIX = "sensors"  # where the pod publishes (edge-sim publish's default)
AGENT_ID = "edge-agent-demo"
MARKER = ".edge-demo"  # marks an output folder the demo may delete and recreate
ROOT = Path(__file__).resolve().parents[1]
Say = Callable[[str], None]


QUICK = {"train_days": 2.0, "stream_days": 0.5, "epochs": 8, "units": 16, "speed": 3600.0}


@dataclass
class DemoResult:
    out: Path
    alerts: list[dict[str, Any]]
    summary: dict[str, Any]
    report: Path | None
    pngs: list[Path]
    seconds: dict[str, float] = field(default_factory=dict)


# -- 1. simulate ------------------------------------------------------------------------------
def _split(
    result: SimResult, rows: np.ndarray, schedule: list[dict[str, Any]], first_row: int
) -> SimResult:
    idx = np.flatnonzero(rows)
    moved = [
        {**e, **{k: (None if e[k] is None else e[k] - first_row) for k in ("start_row", "end_row")}}
        for e in schedule
    ]
    return dataclasses.replace(
        result,
        timestamps=result.timestamps[idx],
        values=result.values[idx],
        clean=result.clean[idx],
        anomaly=result.anomaly[idx],
        fault=[result.fault[i] for i in idx],
        fault_channels=[result.fault_channels[i] for i in idx],
        schedule=moved,
        start=float(result.timestamps[idx[0]]) if idx.size else result.start,
    )


def simulate(cfg: DemoConfig, data_dir: Path) -> Simulation:
    """One continuous run of the pod; the first `train_days` to train on, the rest to stream."""
    period = cfg.period_s
    n_train = int(cfg.train_days * 86400 // period)
    n_stream = int(cfg.stream_days * 86400 // period)
    if n_train < 64 or n_stream < 1:
        raise ValueError("--train-days and --days are too short for one-minute readings")
    model = make_device(cfg.device, np.random.default_rng(0), period, 0.0)  # channels only
    specs = default_mix(model, n_train, period, np.random.default_rng(cfg.seed))
    offset = n_train * period
    stream_specs = (
        list(cfg.stream_faults)
        if cfg.stream_faults is not None
        else default_mix(model, n_stream, period, np.random.default_rng(cfg.fault_seed), 0.05)
    )
    specs += [dataclasses.replace(s, start_s=s.start_s + offset) for s in stream_specs]
    whole = generate(cfg.device, (n_train + n_stream) * period, cfg.seed, specs, cfg.start)
    cut = to_epoch(cfg.start) + offset
    in_train = whole.timestamps < cut
    train_sched = [e for e in whole.schedule if e["start"] < format_iso(cut)]
    stream_sched = [e for e in whole.schedule if e["start"] >= format_iso(cut)]
    train = _split(whole, in_train, train_sched, 0)
    stream = _split(whole, ~in_train, stream_sched, int(in_train.sum()))
    train_csv = write_csv(train, data_dir / "train.csv")
    stream_csv = write_csv(stream, data_dir / "stream.csv")
    return Simulation(train, stream, train_csv, stream_csv, train_sched, stream_sched)


# -- 2. train ---------------------------------------------------------------------------------
def train_command(cfg: DemoConfig, csv: Path, bundle: Path) -> list[str]:
    """The `edge-train fit` arguments (after the program name)."""
    return [
        "fit",
        str(csv),
        "--out",
        str(bundle),
        "--force",
        "--epochs",
        str(cfg.epochs),
        "--units",
        str(cfg.units),
        "--train-stride",
        str(cfg.train_stride),
        # everything else (scorers, thresholds, decision) is the trainer's recommendation
        "--name",
        f"{cfg.device}-demo",
        "--bundle-version",
        f"seed{cfg.seed}",
        "--seed",
        "0",
        "--report" if cfg.report else "--no-report",
    ]


def _env() -> dict[str, str]:
    return {
        **os.environ,
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "TF_ENABLE_ONEDNN_OPTS": "0",
        "PYTHONUNBUFFERED": "1",
    }


def train(cfg: DemoConfig, csv: Path, bundle: Path, log_path: Path, say: Say) -> None:
    """Run `edge-train fit` as a subprocess, echoing its progress lines; stderr to `log_path`."""
    command = [sys.executable, "-m", "export.cli", *train_command(cfg, csv, bundle)]
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=log, text=True, env=_env(), cwd=ROOT
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            say("      | " + line.rstrip())
        code = proc.wait(timeout=cfg.timeout_s)
    if code != 0:
        tail = log_path.read_text()[-1500:]
        raise RuntimeError(f"edge-train fit failed (exit {code}); see {log_path}:\n{tail}")


# -- 4. agent ---------------------------------------------------------------------------------
def agent_toml(bundle: Path, broker: Broker) -> str:
    return f"""\
# Written by the demo (python -m firmware_sim.demo). Every option: edge/deploy/agent.example.toml
[bundle]
path = "{bundle}"

[mqtt]
host = "{broker.host}"
port = {broker.port}
client_id = "{AGENT_ID}"
topic_prefix = "{PREFIX}"

[[sources]]
type = "mqtt"
topic = "{SENSOR_PREFIX}/+/readings"
qos = 1

[alerts]
update_every_s = 1800.0          # in the pod's time: a reminder every 30 simulated minutes

[metrics]
interval_s = 1.0                 # the demo reads the counters at the end

[outbox]
path = "outbox.sqlite3"

[state]
path = ""                        # every demo streams a new simulation: nothing to carry over

[homeassistant]
enabled = true                   # discovery configs under homeassistant/, state topic

[limits]
# The simulated readings are stamped January 2026 and replayed faster than real time: accept
# any distance from the agent's clock (a real sensor would be within minutes of it).
max_skew_s = 1e9

[log]
level = "INFO"
"""


class AgentProcess:
    """`edge-agent run` as a subprocess; SIGTERM for a clean stop."""

    def __init__(self, config: Path, log_path: Path) -> None:
        self.log_path = log_path
        self._log = log_path.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edge.cli", "run", "--config", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=self._log,
            env=_env(),
            cwd=ROOT,
        )

    def check(self) -> None:
        code = self.proc.poll()
        if code is not None:
            raise RuntimeError(
                f"edge-agent exited with code {code}: {self.log_path.read_text()[-1500:]}"
            )

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return int(self.proc.returncode)


class Listener:
    """Subscribes to everything the agent publishes; prints each alert as it arrives."""

    def __init__(self, broker: Broker, on_alert: Callable[[dict[str, Any]], None]) -> None:
        self.on_alert = on_alert
        self.alerts: list[dict[str, Any]] = []
        self.status: dict[str, str] = {}
        self.metrics: dict[str, dict[str, Any]] = {}
        self.metrics_seen = 0
        self.states: list[dict[str, Any]] = []  # the Home Assistant state topic, in order
        self.discovery: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"demo-listener-{os.getpid()}"
        )
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *_: self._ready.set()
        self.client.on_message = self._on_message
        self.broker = broker

    def start(self) -> Listener:
        self.client.connect(self.broker.host, self.broker.port, keepalive=30)
        self.client.loop_start()
        if not self._ready.wait(10):
            raise RuntimeError("the alert subscriber could not subscribe")
        return self

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _on_connect(self, client: mqtt.Client, *_: Any) -> None:
        client.subscribe([(f"{PREFIX}/#", 1), ("homeassistant/#", 1)])

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        topic, payload = msg.topic, bytes(msg.payload)
        kind = topic.rsplit("/", 1)[-1]
        with self._lock:
            if topic.startswith("homeassistant/"):
                self.discovery[topic] = json.loads(payload) if payload else {}
            elif kind == "alert":
                alert = json.loads(payload)
                self.alerts.append(alert)
                self.on_alert(alert)
            elif kind == "status":
                self.status[topic.split("/")[-2]] = payload.decode()
            elif kind == "metrics":
                self.metrics[topic.split("/")[-2]] = json.loads(payload)
                self.metrics_seen += 1
            elif kind == "state":
                self.states.append(json.loads(payload))

    def wait(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if predicate():
                    return
            time.sleep(0.05)
        raise RuntimeError(f"timed out after {timeout:g}s waiting for {what}")


# -- 5. stream --------------------------------------------------------------------------------
def stream(
    cfg: DemoConfig,
    sim: SimResult,
    broker: Broker,
    listener: Listener,
    say: Say,
    agent: AgentProcess,
) -> int:
    """Publish the streamed rows as `edge-sim publish` does, paced at `cfg.speed`."""
    client = DeviceClient(cfg.device_id, PublishConfig(device=cfg.device))
    client.start(broker.host, broker.port, 10.0)
    topic = f"{SENSOR_PREFIX}/{cfg.device_id}"
    total, sent = len(sim), 0
    wall0, sim0 = time.monotonic(), float(sim.timestamps[0])
    last_note = wall0
    try:
        for reading in sim.readings():
            wait = wall0 + (reading.ts - sim0) / cfg.speed - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            client.publish(f"{topic}/readings", reading.payload(), 1)
            client.publish(f"{topic}/truth", reading.truth(), 1)
            sent += 1
            if time.monotonic() - last_note >= 5.0:
                last_note = time.monotonic()
                agent.check()
                say(
                    f"      ... {sent:,}/{total:,} readings published ({sent / total:.0%}), "
                    f"pod time {format_iso(reading.ts)[:16].replace('T', ' ')}, "
                    f"{len(listener.alerts)} alert messages so far"
                )
    finally:
        client.drain(time.monotonic() + 30)
        client.stop()
    return sent


def wait_until_scored(listener: Listener, timeout: float) -> dict[str, Any]:
    """Wait until the agent's queue is empty and its reading count stands still."""
    seen: list[tuple[int, int]] = []

    def settled() -> bool:
        totals = listener.metrics.get(AGENT_ID)
        if totals is None:
            return False
        mark = (listener.metrics_seen, int(totals.get("readings") or 0))
        if not seen or seen[-1][0] != mark[0]:
            seen.append(mark)
        last = seen[-3:]
        return len(last) == 3 and totals.get("queue_depth") == 0 and len({r for _, r in last}) == 1

    listener.wait(settled, timeout, "the agent to score every reading")
    return dict(listener.metrics.get(AGENT_ID, {}))


# -- the whole run ----------------------------------------------------------------------------
def prepare_out(out: Path) -> None:
    """Recreate `out`; refuse to delete a non-empty folder the demo did not make."""
    if out.exists():
        if any(out.iterdir()) and not (out / MARKER).exists():
            raise RuntimeError(
                f"--out {out} exists and was not made by the demo; "
                "choose another folder or remove it"
            )
        shutil.rmtree(out)
    for sub in ("data", "agent", "logs", "report"):
        (out / sub).mkdir(parents=True)
    (out / MARKER).write_text("made by python -m firmware_sim.demo; deleted on the next run\n")


def run_demo(cfg: DemoConfig, say: Say = print) -> DemoResult:
    out = cfg.out.absolute()
    lock = threading.Lock()

    def emit(line: str) -> None:
        with lock:
            say(line)

    started = time.monotonic()
    seconds: dict[str, float] = {}
    prepare_out(out)
    emit(f"edge-anomaly demo: simulate -> train -> export -> agent -> MQTT alerts  (-> {out})")

    t0 = time.monotonic()
    sim = simulate(cfg, out / "data")
    seconds["simulate"] = time.monotonic() - t0
    emit(
        f"[1/6] simulate: {cfg.device_id} ({cfg.device}, {len(sim.train.channels)} channels, "
        f"one reading every {cfg.period_s:g}s), seed {cfg.seed}, from {cfg.start[:10]}"
    )
    emit(
        f"      train on {cfg.train_days:g} days: {len(sim.train):,} rows, "
        f"{len(sim.train_faults)} faults -> {_rel(sim.train_csv)}"
    )
    emit(
        f"      stream the next {cfg.stream_days:g} days: {len(sim.stream):,} rows, "
        f"{len(sim.stream_faults)} new faults (fault seed {cfg.fault_seed}) -> "
        f"{_rel(sim.stream_csv)}  ({seconds['simulate']:.1f}s)"
    )

    t0 = time.monotonic()
    bundle = out / "bundle"
    emit(
        "[2/6] train and export: edge-train "
        + " ".join(
            _rel(Path(a)) if a.startswith("/") else a
            for a in train_command(cfg, sim.train_csv, bundle)
        )
    )
    train(cfg, sim.train_csv, bundle, out / "logs" / "train.log", emit)
    seconds["train"] = time.monotonic() - t0
    emit(f"      bundle ready in {seconds['train']:.0f}s: {_rel(bundle)}")
    window = json.loads((bundle / "manifest.json").read_text())["window"]["length"]
    grace = (window - 1) * cfg.period_s  # windows ending this long after a fault still hold it

    with Broker(extra_config="max_queued_messages 100000") as broker:
        emit(f"[3/6] broker: mosquitto on {broker.address} (config and log in {broker.dir})")
        config = out / "agent" / "agent.toml"
        config.write_text(agent_toml(bundle, broker))
        listener = Listener(
            broker, lambda a: emit(demo_report.alert_line(a, sim.stream_faults, grace))
        ).start()
        t0 = time.monotonic()
        agent = AgentProcess(config, out / "logs" / "agent.log")
        try:
            emit(
                f"[4/6] agent: edge-agent run --config {_rel(config)}  (log {_rel(agent.log_path)})"
            )
            listener.wait(
                lambda: listener.status.get(AGENT_ID) == "online", 60, "the agent to come online"
            )
            agent.check()
            emit(
                f"      online after {time.monotonic() - t0:.1f}s, subscribed to "
                f"{SENSOR_PREFIX}/+/readings; alerts on {PREFIX}/<device>/alert"
            )
            t0 = time.monotonic()
            rate = cfg.speed / cfg.period_s
            emit(
                f"[5/6] stream: {cfg.stream_days:g} days of {cfg.device_id} at {cfg.speed:g}x "
                f"({rate:g} readings/s) -> {SENSOR_PREFIX}/{cfg.device_id}/readings; "
                "alerts as they arrive:"
            )
            sent = stream(cfg, sim.stream, broker, listener, emit, agent)
            totals = wait_until_scored(listener, 120)
            seconds["stream"] = time.monotonic() - t0
            emit(
                f"      published {sent:,} readings in {seconds['stream']:.0f}s; the agent "
                f"took {totals.get('readings', 0):,} and scored "
                f"{totals.get('windows_scored', 0):,} windows"
            )
        finally:
            code = agent.stop()
            time.sleep(0.5)  # the last alerts (an end at shutdown) reach the listener
            listener.stop()
        if code != 0:
            raise RuntimeError(f"edge-agent exited with code {code}; see {agent.log_path}")
        device_metrics = dict(listener.metrics.get(cfg.device_id, {}))
        ha = {"discovery": dict(listener.discovery), "states": list(listener.states)}

    t0 = time.monotonic()
    emit("[6/6] summary: injected faults vs alerts")
    evaluation = demo_report.evaluate(cfg, sim, listener.alerts, bundle)
    summary = demo_report.summarize(cfg, sim, evaluation, device_metrics, totals, ha, seconds)
    for line in demo_report.summary_lines(summary, evaluation):
        emit(line)
    report, pngs = None, []
    if cfg.report:
        report, pngs = demo_report.write_report(out, cfg, sim, evaluation, summary)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    (out / "alerts.jsonl").write_text("".join(json.dumps(a) + "\n" for a in listener.alerts))
    seconds["report"] = time.monotonic() - t0
    seconds["total"] = time.monotonic() - started
    if report is not None:
        emit(f"report: {_rel(report)}  (figure: {', '.join(_rel(p) for p in pngs)})")
    emit(
        f"files: {_rel(out)}/ (summary.json, alerts.jsonl, data/, bundle/, agent/, logs/); "
        f"total {_minutes(seconds['total'])}"
    )
    return DemoResult(out, listener.alerts, summary, report, pngs, seconds)


def _rel(path: Path) -> str:
    try:
        return str(path.absolute().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _minutes(seconds: float) -> str:
    return f"{int(seconds // 60)}m{seconds % 60:04.1f}s"


# -- command line -----------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    d = DemoConfig()
    p = argparse.ArgumentParser(
        prog="python -m firmware_sim.demo",
        description="Simulate an air-quality pod, train and export a detector, run the agent "
        "against a private Mosquitto, stream new days with new faults and print "
        "the alerts, a summary and an HTML report.",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=d.out,
        help=f"output folder, recreated on every run (default {d.out})",
    )
    p.add_argument(
        "--days",
        type=float,
        default=None,
        help=f"days to stream after training (default {d.stream_days:g}; "
        f"--quick {QUICK['stream_days']:g})",
    )
    p.add_argument(
        "--train-days",
        type=float,
        default=None,
        help=f"days to train on (default {d.train_days:g}; --quick {QUICK['train_days']:g})",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=d.seed,
        help=f"the pod: sensor calibration, weather and training faults (default {d.seed})",
    )
    p.add_argument(
        "--fault-seed",
        type=int,
        default=d.fault_seed,
        help=f"the faults injected into the streamed days (default {d.fault_seed})",
    )
    p.add_argument(
        "--speed",
        type=float,
        default=None,
        help=f"simulated seconds per second while streaming (default {d.speed:g}: "
        "one simulated hour per second)",
    )
    p.add_argument(
        "--epochs",
        type=int,
        default=None,
        help=f"LSTM autoencoder epochs at most (default {d.epochs}; --quick {QUICK['epochs']})",
    )
    p.add_argument(
        "--units",
        type=int,
        default=None,
        help=f"LSTM units (default {d.units}; --quick {QUICK['units']})",
    )
    p.add_argument(
        "--quick", action="store_true", help="2 days to train on, 12 hours streamed, a small model"
    )
    p.add_argument(
        "--no-report",
        dest="report",
        action="store_false",
        help="skip the HTML reports (the demo's and the training report in the bundle)",
    )
    return p


def config_from_args(args: argparse.Namespace) -> DemoConfig:
    values: dict[str, Any] = dict(QUICK) if args.quick else {}
    chosen = {
        "stream_days": args.days,
        "train_days": args.train_days,
        "speed": args.speed,
        "epochs": args.epochs,
        "units": args.units,
    }
    values.update({k: v for k, v in chosen.items() if v is not None})
    if values.get("speed", 1.0) <= 0:
        raise ValueError("--speed must be positive")
    return DemoConfig(
        out=args.out,
        seed=args.seed,
        fault_seed=args.fault_seed,
        report=args.report,
        **values,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def say(line: str) -> None:
        print(line, flush=True)

    try:
        run_demo(config_from_args(args), say)
    except KeyboardInterrupt:
        print("demo: interrupted", file=sys.stderr)
        return 130
    except (RuntimeError, ValueError, OSError, ConnectionError) as error:
        print(f"demo: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
