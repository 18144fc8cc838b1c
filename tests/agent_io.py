"""Helpers for the agent's MQTT and black-box tests: a recording subscriber, the agent as a
subprocess, a generated agent.toml and a reading stream with injected faults."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import paho.mqtt.client as mqtt

from tests.agent_fixtures import channel_names, normal_rows, scales
from tests.mosquitto import Broker

ROOT = Path(__file__).resolve().parents[1]
PREFIX = "edge-anomaly"


def persistent_broker() -> Broker:
    """A broker that keeps sessions across stop()/start() (saved on SIGTERM)."""
    broker = Broker()
    store = Path(tempfile.mkdtemp(prefix="mosq-db-"))
    store.chmod(0o777)  # mosquitto drops root privileges to its own user
    broker.extra_config = f"persistence true\npersistence_location {store}/\n"
    return broker


@dataclass(frozen=True)
class Message:
    at: float
    topic: str
    payload: bytes
    retain: bool

    def json(self) -> Any:
        return json.loads(self.payload)


class Collector:
    """Records every message under `topic`; QoS 1; resubscribes on every reconnect."""

    def __init__(self, broker: Broker, topic: str = f"{PREFIX}/#", client_id: str = "collector",
                 persistent: bool = False) -> None:
        self.broker = broker
        self.topic = topic
        self.messages: list[Message] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                                  clean_session=not persistent, protocol=mqtt.MQTTv311)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *_: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(1, 1)

    def __enter__(self) -> Collector:
        self.client.connect(self.broker.host, self.broker.port, keepalive=10)
        self.client.loop_start()
        assert self._subscribed.wait(5), "collector did not subscribe"
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _on_connect(self, client: mqtt.Client, *_: Any) -> None:
        client.subscribe(self.topic, qos=1)

    def _on_message(self, _client: mqtt.Client, _userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append(Message(time.monotonic(), msg.topic, bytes(msg.payload),
                                         bool(msg.retain)))

    def on(self, topic: str) -> list[Message]:
        with self._lock:
            return [m for m in self.messages if m.topic == topic]

    def payloads(self, topic: str) -> list[str]:
        return [m.payload.decode() for m in self.on(topic)]

    def alerts(self, device: str) -> list[dict[str, Any]]:
        return [m.json() for m in self.on(f"{PREFIX}/{device}/alert")]

    def wait(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.05)
        raise AssertionError(f"timed out after {timeout}s waiting for {what}; got "
                             f"{[(m.topic, m.payload[:80]) for m in self.messages][-20:]}")


def agent_toml(path: Path, broker: Broker, bundle: Path, *, client_id: str,
               sources: str, extra: str = "", mqtt: str = "", bundle_extra: str = "") -> Path:
    """`mqtt` and `bundle_extra` are lines added to the [mqtt] and [bundle] tables."""
    path.write_text(f"""
[bundle]
path = "{bundle}"
{bundle_extra}

[mqtt]
host = "{broker.host}"
port = {broker.port}
client_id = "{client_id}"
keepalive = 10
reconnect_min_delay_s = 1
reconnect_max_delay_s = 1
{mqtt}

{sources}

[outbox]
path = "{path.parent / f'{path.stem}-outbox.sqlite3'}"

[metrics]
interval_s = 1

[stdout]
enabled = true

[log]
level = "DEBUG"
{extra}
""")
    return path


class AgentProcess:
    """`edge-agent run` as a subprocess; stdout (alert JSON lines) is collected on a thread."""

    def __init__(self, config: Path, log_path: Path, env: dict[str, str] | None = None) -> None:
        self.log_path = log_path
        self._log: IO[bytes] = log_path.open("ab")
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edge.cli", "run", "--config", str(config)],
            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, env=env)
        self.stdout_alerts: list[dict[str, Any]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.stdout_alerts.append(json.loads(line))

    def send(self, line: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line)
        self.proc.stdin.flush()

    def close_stdin(self) -> None:
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            self.proc.stdin.close()

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def wait(self, timeout: float) -> int:
        code = self.proc.wait(timeout)
        self._reader.join(timeout=5)
        self._log.close()
        return code

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_log(self, text: str, timeout: float) -> str:
        """Wait until `text` appears in the agent's stderr; returns the log so far."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.log()
            if text in found:
                return found
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(f"{text!r} not in the agent's log (exit {self.proc.poll()}):\n"
                             f"{self.log()[-3000:]}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self._reader.join(timeout=5)
        if not self._log.closed:
            self._log.close()


def live_lines(pattern: list[tuple[int, int | None]], seed: int = 0, device: str | None = None,
               period: float = 0.05, stop: threading.Event | None = None) -> Iterator[bytes]:
    """Lines stamped with the wall clock at the moment they are sent."""
    names = channel_names()
    total = sum(n for n, _ in pattern)
    rows = normal_rows(total, seed=seed)
    i = 0
    for n, channel in pattern:
        if channel is not None:
            rows[i:i + n, channel] += 12.0 * scales()[channel]
        i += n
    next_at = time.monotonic()
    for k in range(total):
        if stop is not None and stop.is_set():
            return
        delay = next_at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        next_at += period
        body: dict[str, Any] = {"ts": round(time.time(), 4),
                                **dict(zip(names, np.round(rows[k], 4).tolist(), strict=True))}
        if device is not None:
            body["device"] = device
        yield (json.dumps(body) + "\n").encode()


def event_key(alert: dict[str, Any]) -> tuple[str, str, float]:
    return (alert["id"], alert["state"], alert["ts_epoch"])


def dedupe(events: list[tuple[str, str, float]]) -> list[tuple[str, str, float]]:
    """Drop repeats (at-least-once delivery may resend an event), keeping first-seen order."""
    seen: set[tuple[str, str, float]] = set()
    out = []
    for event in events:
        if event not in seen:
            seen.add(event)
            out.append(event)
    return out
