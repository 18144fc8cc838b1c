"""End to end over MQTT: `edge-sim`'s publisher -> private Mosquitto -> `edge-agent run` ->
a subscriber.

- bundle: `fit_bundle` (trainer defaults) on simulated pump readings of units 0..N-1 without
  faults, so the N simulated devices are all "known" pumps;
- alert latency: N devices publish (`firmware_sim.publish.run_publish`, QoS 1) with scripted
  level shifts; the subscriber stamps every reading and every alert on arrival; an alert's
  latency is its arrival minus the arrival of the reading it is about (same device, same
  `ts`), both on the subscriber's clock;
- throughput: the total rate is stepped up; for each step the agent's CPU time
  (/proc/<pid>/stat utime + stime) is measured from the step's start until the agent has
  taken in every reading of the step (its `readings` counter on the metrics topic), so a
  falling-behind agent shows as a lower rate. Stops once the agent uses >= 50% of one core,
  falls behind, or the publisher cannot reach the rate.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from tests.bench.harness import ROOT, Progress, fit_config
from tests.bench.harness import cpu_seconds as own_cpu_seconds

DEVICE = "pump"
DEVICES = 4
TRAIN_ROWS_PER_UNIT = 600
AGENT_ID = "bench-e2e"
PREFIX = "edge-anomaly"
TRAIN_START = 1_767_571_200.0  # 2026-01-05T00:00:00Z
# readings/s over all devices
STEPS = (50, 100, 200, 300, 400, 500, 600, 800, 1000, 1200, 1600, 2400)
CPU_LIMIT = 50.0
NODELAY_SHIM = """\
import socket

_create_connection = socket.create_connection


def create_connection(*args, **kwargs):
    sock = _create_connection(*args, **kwargs)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:
        pass
    return sock


socket.create_connection = create_connection
"""


def fit_pump_bundle(work: Path, devices: int = DEVICES) -> dict[str, Any]:
    """Worker task: simulate units 0..devices-1 without faults, fit a bundle on them."""
    from export.fit import fit_bundle
    from firmware_sim.engine import generate

    work.mkdir(parents=True, exist_ok=True)
    csv = work / "pump-train.csv"
    lines: list[str] = []
    offset = 0.0
    for unit in range(devices):
        sim = generate(DEVICE, TRAIN_ROWS_PER_UNIT, seed=0, faults="none",
                       start=TRAIN_START + offset, unit=unit)
        if not lines:
            lines.append(",".join(["timestamp", *sim.channels]))
        lines += [",".join([f"{t:.3f}", *(f"{v:.6g}" for v in row)])
                  for t, row in zip(sim.timestamps, sim.values, strict=True)]
        offset += TRAIN_ROWS_PER_UNIT + 3600.0  # an hour apart: a gap restarts the window
    csv.write_text("\n".join(lines) + "\n")
    started, cpu0 = time.perf_counter(), own_cpu_seconds()
    fit = fit_bundle(csv, work / "pump-bundle", fit_config())
    return {"bundle": str(fit.out_dir), "fit_s": time.perf_counter() - started,
            "fit_cpu_s": own_cpu_seconds() - cpu0, "rows": devices * TRAIN_ROWS_PER_UNIT}


def shift_faults(sim_seconds: float, every_s: float = 60.0) -> list[Any]:
    """A 20-second level shift of 6 sd every `every_s` simulated seconds, channels in turn."""
    from firmware_sim.faults import FaultSpec

    channels = ("Current", "Accelerometer1RMS", "Volume Flow RateRMS", "Temperature")
    out = []
    for k, start in enumerate(np.arange(every_s / 2, sim_seconds - 25.0, every_s)):
        out.append(FaultSpec("level_shift", float(start), 20.0, (channels[k % len(channels)],),
                             {"magnitude": 6.0, "sign": 1}))
    return out


@dataclass
class Subscriber:
    """Stamps readings (when `record`) and alerts on arrival; keeps the agent's metrics."""

    host: str
    port: int
    record: bool = True
    readings: dict[tuple[str, float], float] = field(default_factory=dict)
    alerts: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.lock = threading.Lock()
        self.ready = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-sub-{os.getpid()}")
        self.client.on_connect = lambda c, *_: c.subscribe(
            [("sensors/+/readings", 1), (f"{PREFIX}/+/alert", 1), (f"{PREFIX}/+/metrics", 0)])
        self.client.on_subscribe = lambda *_: self.ready.set()
        self.client.on_message = self._on_message

    def start(self) -> Subscriber:
        self.client.connect(self.host, self.port, keepalive=30)
        self.client.loop_start()
        if not self.ready.wait(10):
            raise RuntimeError("the benchmark subscriber could not subscribe")
        return self

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        now = time.monotonic()
        parts = msg.topic.split("/")
        if parts[-1] == "readings":
            if self.record:
                ts = json.loads(msg.payload)["ts"]
                with self.lock:
                    self.readings[(parts[1], round(float(ts), 3))] = now
        elif parts[-1] == "alert":
            with self.lock:
                self.alerts.append((now, json.loads(msg.payload)))
        elif parts[-1] == "metrics":
            with self.lock:
                self.metrics[parts[1]] = json.loads(msg.payload)

    def agent_readings(self) -> int:
        with self.lock:
            return int(self.metrics.get(AGENT_ID, {}).get("readings") or 0)

    def latencies(self, since: int = 0) -> dict[str, list[float]]:
        out: dict[str, list[float]] = {"start": [], "all": []}
        with self.lock:
            for arrived, alert in self.alerts[since:]:
                sent = self.readings.get((alert["device"], round(float(alert["ts_epoch"]), 3)))
                if sent is None:
                    continue  # ended by a gap or a stale device: no reading behind it
                out["all"].append(arrived - sent)
                if alert["state"] == "start":
                    out["start"].append(arrived - sent)
        return out


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def agent_toml(path: Path, bundle: Path, host: str, port: int) -> Path:
    path.write_text(f"""
[bundle]
path = "{bundle}"

[mqtt]
host = "{host}"
port = {port}
client_id = "{AGENT_ID}"
topic_prefix = "{PREFIX}"

[[sources]]
type = "mqtt"
topic = "sensors/+/readings"
qos = 1

[alerts]
update_every_s = 0

[metrics]
interval_s = 1

[outbox]
path = "{path.parent / 'outbox.sqlite3'}"

[limits]
max_skew_s = 1e9
queue_size = 100000

[log]
level = "WARNING"
""")
    return path


def publish(host: str, port: int, rate_per_device: float, wall_s: float, start: float,
            devices: int, seed: int) -> tuple[int, float]:
    """`edge-sim publish` for `wall_s` seconds at the rate; (readings, wall seconds)."""
    from firmware_sim.publish import PublishConfig, run_publish

    sim_s = max(30.0, wall_s * rate_per_device)
    cfg = PublishConfig(device=DEVICE, broker=f"{host}:{port}", devices=devices,
                        rate=rate_per_device, duration_s=sim_s, seed=seed,
                        faults=shift_faults(sim_s), start=start, topic_prefix="sensors",
                        drain_timeout_s=60.0)
    t0 = time.monotonic()
    count = run_publish(cfg, log=io.StringIO())
    return count, time.monotonic() - t0


def wait_caught_up(sub: Subscriber, target: int, timeout: float = 60.0) -> float:
    """Wait until the agent's `readings` counter reaches `target` (or stops moving)."""
    deadline = time.monotonic() + timeout
    last, still = -1, 0
    while time.monotonic() < deadline:
        seen = sub.agent_readings()
        if seen >= target:
            return time.monotonic()
        still = still + 1 if seen == last else 0
        if still >= 40:  # 4 s without progress (metrics every 1 s): it will not get there
            break
        last = seen
        time.sleep(0.1)
    return time.monotonic()


def _pct(values: list[float], q: float) -> float | None:
    return round(1000 * float(np.percentile(values, q)), 2) if values else None


class Session:
    """A private Mosquitto, `edge-agent run` subscribed to it, and the subscriber."""

    def __init__(self, bundle: Path, work: Path, nodelay: bool = False) -> None:
        from firmware_sim.broker import Broker

        work.mkdir(parents=True, exist_ok=True)
        extra = "set_tcp_nodelay true" if nodelay else ""
        self.broker = Broker(extra_config=f"max_queued_messages 1000000\n{extra}")
        self.bundle, self.work = bundle, work
        self.env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
        if nodelay:  # an experiment: TCP_NODELAY on every socket the agent opens
            (work / "sitecustomize.py").write_text(NODELAY_SHIM)
            self.env["PYTHONPATH"] = os.pathsep.join(
                p for p in (str(work), os.environ.get("PYTHONPATH", "")) if p)

    def __enter__(self) -> Session:
        self.broker.start()
        config = agent_toml(self.work / "agent.toml", self.bundle, self.broker.host,
                            self.broker.port)
        (self.work / "outbox.sqlite3").unlink(missing_ok=True)
        self.log = (self.work / "agent.log").open("wb")
        self.agent = subprocess.Popen(
            [sys.executable, "-m", "edge.cli", "run", "--config", str(config)], cwd=ROOT,
            stdout=subprocess.DEVNULL, stderr=self.log, env=self.env)
        self.sub = Subscriber(self.broker.host, self.broker.port).start()
        deadline = time.monotonic() + 30
        while AGENT_ID not in self.sub.metrics and time.monotonic() < deadline:
            time.sleep(0.1)
        return self

    def __exit__(self, *exc: object) -> None:
        self.sub.stop()
        self.agent.terminate()
        try:
            self.exit_code = self.agent.wait(60)
        except subprocess.TimeoutExpired:
            self.agent.kill()
            self.exit_code = self.agent.wait()
        self.log.close()
        self.broker.stop()

    def publish(self, rate_per_device: float, wall_s: float, start: float, devices: int,
                seed: int) -> tuple[int, float]:
        return publish(self.broker.host, self.broker.port, rate_per_device, wall_s, start,
                       devices, seed)


def latency_phase(session: Session, devices: int, rate: float, seconds: float, start: float
                  ) -> dict[str, Any]:
    sub = session.sub
    count, _ = session.publish(rate, seconds, start, devices, 1)
    wait_caught_up(sub, count)
    time.sleep(2.0)
    lat = sub.latencies()
    return {
        "readings": count, "rate_per_device": rate, "alerts": len(sub.alerts),
        "matched_starts": len(lat["start"]), "matched_events": len(lat["all"]),
        "start_p50_ms": _pct(lat["start"], 50), "start_p99_ms": _pct(lat["start"], 99),
        "all_p50_ms": _pct(lat["all"], 50), "all_p99_ms": _pct(lat["all"], 99),
        "agent_internal": {d: {k: m.get(k) for k in ("latency_p50_ms", "latency_p99_ms")}
                           for d, m in sub.metrics.items() if d != AGENT_ID},
    }


def throughput_phase(session: Session, devices: int, step_s: float, start: float,
                     say: Progress) -> list[dict[str, Any]]:
    sub, agent = session.sub, session.agent
    sub.record = False
    steps = []
    for total in STEPS:
        before_n, before_cpu = sub.agent_readings(), cpu_seconds(agent.pid)
        t0 = time.monotonic()
        count, wall = session.publish(total / devices, step_s, start, devices, 2)
        cpu = 100.0 * (cpu_seconds(agent.pid) - before_cpu) / wall
        done = wait_caught_up(sub, before_n + count)
        took = done - t0
        taken = sub.agent_readings() - before_n
        # kept up: every reading taken in within ~2 metrics intervals of the last publish
        kept_up = taken >= count and took <= wall + 2.5
        step = {"target_per_s": total, "published": count,
                "publish_per_s": round(count / wall, 1), "agent_readings": taken,
                "agent_per_s": round(taken / (wall if kept_up else took), 1),
                "publish_seconds": round(wall, 2), "caught_up_after_s": round(took, 2),
                "agent_cpu_pct": round(cpu, 1), "kept_up": kept_up}
        steps.append(step)
        say(f"e2e: {total:>5} readings/s target: published {step['publish_per_s']}/s, "
            f"agent {step['agent_per_s']}/s at {step['agent_cpu_pct']}% CPU"
            f"{'' if kept_up else ' (fell behind)'}")
        start += step_s * total / devices + 3600.0
        if cpu >= CPU_LIMIT or not kept_up or count / wall < 0.8 * total:
            break
    return steps


def run_e2e(bundle: Path, work: Path, say: Progress, devices: int = DEVICES,
            step_s: float = 8.0, latency_s: float = 40.0) -> dict[str, Any]:
    out: dict[str, Any] = {"devices": devices, "device": DEVICE}
    rate, start = 10.0, TRAIN_START + 86400.0
    say(f"e2e: alert latency, {devices} devices x {rate:g} readings/s for {latency_s:.0f} s, "
        "level shifts every 60 simulated s")
    with Session(bundle, work / "default") as session:
        out["latency"] = lat = latency_phase(session, devices, rate, latency_s, start)
        say(f"e2e: {lat['matched_starts']} alert starts, latency p50 {lat['start_p50_ms']} ms, "
            f"p99 {lat['start_p99_ms']} ms")
        start += latency_s * rate + 3600.0
        out["steps"] = steps = throughput_phase(session, devices, step_s, start, say)
    out["agent_exit_code"] = session.exit_code
    under = [s for s in steps if s["agent_cpu_pct"] < CPU_LIMIT and s["kept_up"]]
    out["sustained_under_50pct"] = max((s["agent_per_s"] for s in under), default=None)
    out["stopped_because"] = _why(steps)
    # the same measurement with Nagle's algorithm off on both hops of an alert: the agent's
    # MQTT socket (paho does not set TCP_NODELAY; a sitecustomize shim does here) and the
    # broker's (set_tcp_nodelay)
    with Session(bundle, work / "nodelay", nodelay=True) as session:
        out["latency_nodelay"] = lat = latency_phase(session, devices, rate, latency_s / 2,
                                                     start)
        say(f"e2e: with TCP_NODELAY (agent and broker): latency p50 {lat['start_p50_ms']} ms, "
            f"p99 {lat['start_p99_ms']} ms ({lat['matched_starts']} starts)")
    return out


def _why(steps: list[dict[str, Any]]) -> str:
    if not steps:
        return "no step ran"
    last = steps[-1]
    if last["agent_cpu_pct"] >= CPU_LIMIT:
        return f"agent CPU {last['agent_cpu_pct']}% at {last['target_per_s']}/s"
    if not last["kept_up"]:
        return f"agent fell behind at {last['target_per_s']}/s"
    if last["publish_per_s"] < 0.8 * last["target_per_s"]:
        return (f"the publisher reached only {last['publish_per_s']}/s of "
                f"{last['target_per_s']}/s (Python paho, 2 messages per reading)")
    return f"the cap of {STEPS[-1]}/s"
