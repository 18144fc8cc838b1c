"""`edge-sim publish`: simulated devices publishing readings and ground truth over MQTT.

Topics (prefix `sensors` by default), QoS 1, not retained:

- ``<prefix>/<device_id>/readings``: ``{"ts": <epoch s>, "values": {"<channel>": <float|null>}}``
- ``<prefix>/<device_id>/truth``: ``{"ts": ..., "anomaly": 0|1, "fault": "...", "channels": [...]}``

Device ids are ``<device>-01``, ``<device>-02``...; each device is its own MQTT
client and its own random stream (unit k of the seed; unit 0 is what
`edge-sim generate` writes for the same seed). Pacing follows the simulated
timestamps: `rate` readings per second per device (None: real time at the
device period; 0: as fast as possible), so a gap really is a silence and
late rows are sent at once. At the end every publish is waited for.

Caveat for `rate=0`: the broker acknowledges our QoS-1 publishes at once, but
a QoS-1 *subscriber* that falls behind has its backlog capped by the broker
(Mosquitto: `max_queued_messages`, default 1000) and loses the excess. For
lossless fast replays raise that limit on the broker or use a finite rate.
"""

from __future__ import annotations

import contextlib
import heapq
import json
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from firmware_sim.engine import FaultsArg, Reading, resolve_period, stream_readings
from firmware_sim.timeparse import format_iso, to_epoch

PASSWORD_ENV = "EDGE_SIM_PASSWORD"


@dataclass
class PublishConfig:
    device: str
    broker: str = "127.0.0.1:1883"
    devices: int = 1
    rate: float | None = None
    duration_s: float | None = None
    seed: int = 0
    faults: FaultsArg = "default"
    topic_prefix: str = "sensors"
    truth_path: str | Path | None = None
    start: datetime | str | float | None = "now"
    period_s: float | None = None
    device_id: str | None = None
    tls_ca: str | None = None
    username: str | None = None
    password: str | None = None
    forecast: bool = False
    qos: int = 1
    connect_timeout_s: float = 10.0
    drain_timeout_s: float = 60.0


def parse_broker(text: str) -> tuple[str, int]:
    """``host:port`` (port 1883 when omitted; ``[::1]:1883`` for IPv6)."""
    host, sep, port = text.rpartition(":")
    if not sep or (host.count(":") and not host.startswith("[")):
        return text.strip("[]"), 1883
    if not port.isdigit():
        raise ValueError(f"invalid broker {text!r}: expected host:port")
    return host.strip("[]"), int(port)


def device_ids(cfg: PublishConfig) -> list[str]:
    if cfg.devices < 1:
        raise ValueError("--devices must be at least 1")
    if cfg.device_id:
        if cfg.devices != 1:
            raise ValueError("--device-id only works with --devices 1")
        return [cfg.device_id]
    return [f"{cfg.device}-{k:02d}" for k in range(1, cfg.devices + 1)]


class DeviceClient:
    """One simulated device: its own MQTT connection."""

    def __init__(self, device_id: str, cfg: PublishConfig) -> None:
        self.device_id = device_id
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"edge-sim-{device_id}-{os.getpid()}"
        )
        password = cfg.password if cfg.password is not None else os.environ.get(PASSWORD_ENV)
        if cfg.username or password:
            self.client.username_pw_set(cfg.username, password)
        if cfg.tls_ca:
            self.client.tls_set(ca_certs=cfg.tls_ca)
        self.client.max_inflight_messages_set(100)
        self.answered = threading.Event()
        self.refused = False
        self.reason = ""
        self.client.on_connect = self._on_connect
        self.pending: deque[mqtt.MQTTMessageInfo] = deque()

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        self.reason, self.refused = str(reason), bool(reason.is_failure)
        self.answered.set()

    def start(self, host: str, port: int, timeout: float) -> None:
        try:
            self.client.connect(host, port, keepalive=30)
        except OSError as exc:
            raise ConnectionError(f"cannot connect to MQTT broker {host}:{port}: {exc}") from exc
        self.client.loop_start()
        if not self.answered.wait(timeout) or self.refused:
            self.stop()
            why = self.reason if self.refused else f"no answer within {timeout:g} s"
            raise ConnectionError(f"MQTT broker {host}:{port} refused {self.device_id}: {why}")

    def publish(self, topic: str, payload: dict[str, Any], qos: int) -> None:
        info = self.client.publish(topic, json.dumps(payload, separators=(",", ":")), qos=qos)
        self.pending.append(info)
        while self.pending and self.pending[0].is_published():
            self.pending.popleft()
        if len(self.pending) > 5000:  # back-pressure at --rate 0
            with contextlib.suppress(RuntimeError, ValueError):
                self.pending.popleft().wait_for_publish(timeout=30)

    def drain(self, deadline: float) -> int:
        """Wait for outstanding publishes until `deadline`; return how many are left."""
        while self.pending:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            with contextlib.suppress(RuntimeError, ValueError):  # not queued / not connected
                self.pending[0].wait_for_publish(timeout=left)
            if self.pending[0].is_published():
                self.pending.popleft()
            else:  # disconnected: paho reconnects and resends; do not spin meanwhile
                time.sleep(0.05)
        return len(self.pending)

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _merged(streams: list[Iterator[Reading]]) -> Iterator[tuple[float, int, Reading]]:
    """All devices' readings ordered by pacing time (each device's running max timestamp)."""

    def keyed(k: int, it: Iterator[Reading]) -> Iterator[tuple[float, int, Reading]]:
        latest = float("-inf")
        for r in it:
            latest = max(latest, r.ts)
            yield latest, k, r

    return heapq.merge(*(keyed(k, it) for k, it in enumerate(streams)), key=lambda x: (x[0], x[1]))


def run_publish(
    cfg: PublishConfig, log: TextIO = sys.stderr, stop: threading.Event | None = None
) -> int:
    """Publish until the duration ends (or forever, or `stop`); return readings published."""
    stop = stop or threading.Event()
    host, port = parse_broker(cfg.broker)
    ids = device_ids(cfg)
    period = resolve_period(cfg.device, cfg.period_s)
    rate = 1.0 / period if cfg.rate is None else cfg.rate
    if rate < 0:
        raise ValueError("--rate must be >= 0")
    start = to_epoch(cfg.start)  # once, so "now" is the same instant for every device
    streams = [
        stream_readings(
            cfg.device,
            cfg.seed,
            cfg.faults,
            start,
            period,
            duration_s=cfg.duration_s,
            unit=k,
            forecast=cfg.forecast,
        )
        for k in range(len(ids))
    ]
    clients = [DeviceClient(i, cfg) for i in ids]
    truth_fh = open(cfg.truth_path, "w", encoding="utf-8") if cfg.truth_path else None  # noqa: SIM115
    count, started = 0, []
    try:
        for c in clients:
            c.start(host, port, cfg.connect_timeout_s)
            started.append(c)
        tty = log.isatty()
        print(
            f"edge-sim publish: {len(ids)} x {cfg.device} -> {host}:{port} "
            f"({'as fast as possible' if rate == 0 else f'{rate:g} readings/s per device'})",
            file=log,
            flush=True,
        )
        wall0, sim0, last_note = time.monotonic(), None, time.monotonic()
        for pace_ts, k, reading in _merged(streams):
            sim0 = pace_ts if sim0 is None else sim0
            if rate > 0:
                wait = wall0 + (pace_ts - sim0) / (rate * period) - time.monotonic()
                if wait > 0 and stop.wait(wait):
                    break
            elif stop.is_set():
                break
            topic = f"{cfg.topic_prefix}/{ids[k]}"
            clients[k].publish(f"{topic}/readings", reading.payload(), cfg.qos)
            clients[k].publish(f"{topic}/truth", reading.truth(), cfg.qos)
            if truth_fh:
                truth_fh.write(json.dumps({"device_id": ids[k], **reading.truth()}) + "\n")
            count += 1
            if time.monotonic() - last_note >= 2.0:
                last_note = time.monotonic()
                note = f"published {count} readings, simulated time {format_iso(reading.ts)}"
                print(("\r" + note) if tty else note, end="" if tty else "\n", file=log, flush=True)
    except KeyboardInterrupt:
        print("\nedge-sim publish: interrupted, flushing", file=log)
    finally:
        if truth_fh:
            truth_fh.close()
        deadline = time.monotonic() + cfg.drain_timeout_s
        left = sum(c.drain(deadline) for c in started)
        for c in started:
            c.stop()
    if left:
        print(f"\nedge-sim publish: {left} message(s) not acknowledged by the broker", file=log)
    print(f"edge-sim publish: published {count} readings", file=log, flush=True)
    return count
