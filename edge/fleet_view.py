"""The fleet from the broker: every agent's retained status document, checked against the
fleet index. Used by `edge-train fleet status` on a workstation (paho and the standard library
only, so it runs on a lean install too, e.g. from cron or CI).

`collect` subscribes to `<prefix>/+/status` (plain `online`/`offline`, the agents' last wills)
and `<prefix>/+/info` (the JSON documents of `edge.sinks.status`) and returns once the
retained messages have arrived (no new retained message for `quiet_s`, at most `wait_s`).
`fleet_rows` makes one row per (agent, device): a device is online when its agent's document
and its agent's status topic both say so (a killed agent leaves its document as it was, and
the will sets its status topic to `offline`). `problems` lists what makes the fleet unhealthy:

- silent: no reading from the device for longer than `max_age_s` (or never);
- bundle mismatch: the device runs another bundle (manifest sha256) than the index names;
- missing: a device of the index that no agent reports.

A device reported by several agents (it moved) is judged by the freshest report; the older
rows are marked `superseded`.
"""

from __future__ import annotations

import json
import ssl
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edge.sinks.status import ONLINE

STATUS, INFO = "status", "info"


class FleetViewError(Exception):
    """The broker cannot be read (connection refused, TLS, authentication, timeout)."""


@dataclass(frozen=True)
class BrokerOptions:
    host: str = "localhost"
    port: int = 1883
    prefix: str = "edge-anomaly"
    username: str | None = None
    password: str | None = None
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    tls: bool = False
    client_id: str = ""


@dataclass
class FleetSnapshot:
    status: dict[str, str] = field(default_factory=dict)  # id -> online / offline
    documents: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> document
    received_at: float = 0.0

    def agents(self) -> dict[str, dict[str, Any]]:
        return {doc["agent"]: doc for doc in self.documents.values()
                if doc.get("kind") == "agent" and isinstance(doc.get("agent"), str)}


def _tls_context(options: BrokerOptions) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(options.ca) if options.ca else None)
    if options.cert is not None:
        context.load_cert_chain(str(options.cert), str(options.key) if options.key else None)
    return context


def collect(options: BrokerOptions, wait_s: float = 5.0, quiet_s: float = 0.5) -> FleetSnapshot:
    """Read the retained status of the fleet; FleetViewError when the broker cannot be read."""
    snapshot = FleetSnapshot()
    lock = threading.Lock()
    subscribed = threading.Event()
    failed: list[str] = []
    last_message = [time.monotonic()]
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=options.client_id,
                         protocol=mqtt.MQTTv311)
    if options.username is not None:
        client.username_pw_set(options.username, options.password)
    if options.tls or options.ca is not None or options.cert is not None:
        try:
            client.tls_set_context(_tls_context(options))
        except (OSError, ssl.SSLError) as exc:
            raise FleetViewError(f"TLS files: {exc}") from None
    prefix = options.prefix

    def on_connect(c: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any = None) -> None:
        if reason.is_failure:
            failed.append(f"the broker refused the connection: {reason}")
            return
        c.subscribe([(f"{prefix}/+/{STATUS}", 1), (f"{prefix}/+/{INFO}", 1)])

    def on_subscribe(_c: mqtt.Client, _u: Any, _mid: int, reasons: Any, _p: Any = None
                     ) -> None:
        bad = [r for r in reasons if getattr(r, "is_failure", False)]
        if bad:
            failed.append(f"subscription to {prefix}/+/{STATUS} and /{INFO} refused: {bad[0]} "
                          "(check the broker's ACL)")
        last_message[0] = time.monotonic()
        subscribed.set()

    def on_message(_c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        parts = msg.topic.split("/")
        if len(parts) < 3:
            return
        name, kind = parts[-2], parts[-1]
        with lock:
            if msg.retain:  # the retained ones come right after the SUBACK; live ones go on
                last_message[0] = time.monotonic()
            if kind == STATUS:
                snapshot.status[name] = msg.payload.decode("utf-8", "replace").strip()
            elif kind == INFO and msg.payload:
                try:
                    doc = json.loads(msg.payload)
                except (UnicodeDecodeError, json.JSONDecodeError):
                    return
                if isinstance(doc, dict):
                    snapshot.documents[name] = doc

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    deadline = time.monotonic() + wait_s
    try:
        client.connect(options.host, options.port, keepalive=max(int(wait_s) + 5, 10))
    except (OSError, ssl.SSLError) as exc:
        raise FleetViewError(
            f"cannot reach the broker at {options.host}:{options.port}: {exc}") from None
    client.loop_start()
    try:
        while not subscribed.is_set() and not failed and time.monotonic() < deadline:
            subscribed.wait(0.05)
        if failed:
            raise FleetViewError(failed[0])
        if not subscribed.is_set():
            raise FleetViewError(f"no answer from the broker at {options.host}:{options.port} "
                                 f"within {wait_s:g}s")
        while time.monotonic() < deadline:
            with lock:
                idle = time.monotonic() - last_message[0]
            if idle >= quiet_s:
                break
            time.sleep(0.05)
    finally:
        client.disconnect()
        client.loop_stop()
    snapshot.received_at = time.time()
    return snapshot


@dataclass
class FleetRow:
    agent: str
    device: str
    online: bool
    bundle_name: str | None
    bundle_version: str | None
    bundle_sha256: str | None
    index: str  # "yes", "no" (another bundle), "-" (no index, or the device is not in it)
    last_reading: float | None
    open_alerts: int
    readings_per_s: float | None
    problems: list[str] = field(default_factory=list)
    superseded: bool = False

    def as_json(self, now: float) -> dict[str, Any]:
        age = None if self.last_reading is None else round(now - self.last_reading, 1)
        return {"agent": self.agent, "device": self.device, "online": self.online,
                "bundle": {"name": self.bundle_name, "version": self.bundle_version,
                           "sha256": self.bundle_sha256},
                "index_match": {"yes": True, "no": False}.get(self.index),
                "last_reading": self.last_reading, "last_reading_age_s": age,
                "readings_per_s": self.readings_per_s, "open_alerts": self.open_alerts,
                "problems": self.problems, "superseded": self.superseded}


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _expected(index: dict[str, Any] | None, device: str) -> dict[str, Any] | None:
    if index is None:
        return None
    entry = index.get("devices", {}).get(device)
    return entry if isinstance(entry, dict) else None


def fleet_rows(snapshot: FleetSnapshot, index: dict[str, Any] | None = None,
               max_age_s: float | None = 300.0, now: float | None = None) -> list[FleetRow]:
    """One row per (agent, device), plus one per index device no agent reports."""
    now = time.time() if now is None else now
    rows: list[FleetRow] = []
    for agent, doc in sorted(snapshot.agents().items()):
        agent_online = bool(doc.get("online")) and snapshot.status.get(agent, ONLINE) == ONLINE
        bundle = _mapping(doc.get("bundle"))
        devices = _mapping(doc.get("devices"))
        for device, dev in sorted(devices.items()):
            dev = _mapping(dev)
            online = (agent_online and bool(dev.get("online", True))
                      and snapshot.status.get(device, ONLINE) == ONLINE)
            last = dev.get("last_reading")
            rate = dev.get("readings_per_s")
            rows.append(FleetRow(
                agent, device, online, bundle.get("name"), bundle.get("version"),
                bundle.get("sha256"), "-",
                float(last) if isinstance(last, (int, float)) else None,
                int(dev.get("open_alerts") or 0),
                float(rate) if isinstance(rate, (int, float)) else None))
    seen = {row.device for row in rows}
    if index is not None:
        for device in sorted(index.get("devices", {})):
            if device not in seen:
                entry = index["devices"][device]
                rows.append(FleetRow("-", device, False, entry.get("name"),
                                     entry.get("version"), None, "-", None, 0, None,
                                     ["missing: no agent reports this device"]))
    _judge(rows, index, max_age_s, now)
    return rows


def _judge(rows: list[FleetRow], index: dict[str, Any] | None, max_age_s: float | None,
           now: float) -> None:
    by_device: dict[str, list[FleetRow]] = {}
    for row in rows:
        by_device.setdefault(row.device, []).append(row)
    for group in by_device.values():
        group.sort(key=lambda r: (r.online, r.last_reading or 0.0), reverse=True)
        for older in group[1:]:
            older.superseded = True
    for row in rows:
        if row.agent == "-":
            continue
        expected = _expected(index, row.device)
        if expected is not None:
            match = row.bundle_sha256 == expected.get("manifest_sha256")
            row.index = "yes" if match else "no"
            if not match and not row.superseded:
                want = expected.get("version") or str(expected.get("manifest_sha256"))[:12]
                have = row.bundle_version or str(row.bundle_sha256)[:12]
                row.problems.append(f"bundle mismatch: runs {have}, the index says {want}")
        if row.superseded or max_age_s is None:
            continue
        if row.last_reading is None:
            row.problems.append("silent: no reading yet")
        elif now - row.last_reading > max_age_s:
            row.problems.append(f"silent for {_age(now - row.last_reading)} "
                                f"(more than {_age(max_age_s)})")


def problems(rows: list[FleetRow]) -> list[str]:
    return [f"{row.device} ({row.agent}): {p}" for row in rows for p in row.problems]


def _age(seconds: float) -> str:
    seconds = max(seconds, 0.0)
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    if seconds < 172800:
        return f"{seconds / 3600:.0f}h"
    return f"{seconds / 86400:.0f}d"


def render_table(rows: list[FleetRow], now: float | None = None) -> str:
    now = time.time() if now is None else now
    head = ("agent", "device", "online", "bundle", "index", "last seen", "alerts", "problem")
    cells = []
    for r in rows:
        seen = "never" if r.last_reading is None else f"{_age(now - r.last_reading)} ago"
        problem = "; ".join(r.problems) or ("superseded" if r.superseded else "")
        cells.append((r.agent, r.device, "yes" if r.online else "no",
                      r.bundle_version or "-", r.index, seen, str(r.open_alerts), problem))
    widths = [max([len(h), *(len(c[i]) for c in cells)]) for i, h in enumerate(head)]

    def fmt(values: tuple[str, ...]) -> str:
        return "  ".join(v.ljust(widths[i]) for i, v in enumerate(values)).rstrip()

    return "\n".join([fmt(head), *(fmt(c) for c in cells)])


def render_json(rows: list[FleetRow], now: float | None = None) -> str:
    now = time.time() if now is None else now
    found = problems(rows)
    return json.dumps({"ts": round(now, 3), "ok": not found, "problems": found,
                       "devices": [r.as_json(now) for r in rows]}, indent=2)
