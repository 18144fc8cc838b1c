"""Retained status: `online`/`offline` (one last will per connection, so two levels) and a
JSON status document per agent and per device, for the fleet view.

- `<prefix>/<client_id>/status` is the agent's own status and its MQTT last will: the broker
  sets it to `offline` when the agent dies without a clean disconnect (killed, power lost,
  network gone past the keepalive).
- `<prefix>/<device>/status` for every device the agent serves (configured serial/stdin
  devices at start, MQTT devices when their first reading arrives): `online` on every
  (re)connect, `offline` on a clean shutdown. A broker holds one will per connection, so a
  device topic cannot also be a will when one agent serves several devices: a consumer that
  must notice a killed agent watches the agent topic too (Home Assistant: an `availability`
  list with both topics and `availability_mode: all`). With one device whose id equals the
  client id, the two topics are the same and the device topic is the will.
- `<prefix>/<client_id>/info` and `<prefix>/<device>/info` (retained, QoS 1): the status
  document (`agent_document`, `device_document`): online, agent version, bundle name,
  version and sha256, the devices served, last reading time, readings/s, open alerts, whether
  the device is snoozed and until when (`snoozed`, `snoozed_until`). It is
  published on every (re)connect, when a device is first served, after a reload, every
  `every_s` seconds and, with `online: false`, on a clean shutdown. The will stays the plain
  `offline` on the status topic (the documents' format is unchanged by a crash), so a reader
  takes a device as online only when its document says so *and* its agent's status topic is
  `online` (`edge.fleet_view`). A device whose id equals the client id has no document of its
  own: the agent's document holds it, as it holds every device it serves under `devices`.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from paho.mqtt.client import MQTTMessageInfo

from edge.mqtt_client import MqttConnection, Topics

log = logging.getLogger(__name__)

ONLINE = "online"
OFFLINE = "offline"
DOCUMENT_SCHEMA = 1
DOCUMENT_EVERY_S = 30.0


@dataclass(frozen=True)
class DeviceSnapshot:
    readings: int = 0
    last_reading: float | None = None  # wall clock (epoch s) the agent last received one
    open_alerts: int = 0
    snoozed_until: float | None = None  # epoch s while a `snooze` command holds its alerts


@dataclass(frozen=True)
class AgentSnapshot:
    """What the agent knows of itself when a document is published."""

    agent_version: str
    bundle: dict[str, str]  # name, version, sha256 (of manifest.json)
    started: float  # wall clock
    devices: dict[str, DeviceSnapshot] = field(default_factory=dict)


Snapshot = Callable[[], AgentSnapshot]


def device_document(device: str, agent: str, online: bool, snap: AgentSnapshot,
                    dev: DeviceSnapshot, rate: float | None, now: float) -> dict[str, Any]:
    return {
        "schema": DOCUMENT_SCHEMA, "kind": "device", "device": device, "agent": agent,
        "online": online, "ts": round(now, 3), "agent_version": snap.agent_version,
        "bundle": dict(snap.bundle), "last_reading": dev.last_reading,
        "readings": dev.readings, "readings_per_s": rate, "open_alerts": dev.open_alerts,
        "snoozed": dev.snoozed_until is not None,
        "snoozed_until": None if dev.snoozed_until is None else round(dev.snoozed_until, 3),
    }


def agent_document(agent: str, online: bool, snap: AgentSnapshot,
                   devices: dict[str, dict[str, Any]], now: float) -> dict[str, Any]:
    last = [d["last_reading"] for d in devices.values() if d["last_reading"] is not None]
    rates = [d["readings_per_s"] for d in devices.values() if d["readings_per_s"] is not None]
    return {
        "schema": DOCUMENT_SCHEMA, "kind": "agent", "agent": agent, "online": online,
        "ts": round(now, 3), "agent_version": snap.agent_version, "bundle": dict(snap.bundle),
        "started": round(snap.started, 3), "last_reading": max(last) if last else None,
        "readings_per_s": round(sum(rates), 3) if rates else None,
        "open_alerts": sum(int(d["open_alerts"]) for d in devices.values()),
        "devices": devices,
    }


class StatusPublisher:
    def __init__(self, connection: MqttConnection, topics: Topics, devices: list[str],
                 snapshot: Snapshot | None = None,
                 every_s: float = DOCUMENT_EVERY_S) -> None:
        self.connection = connection
        self.topics = topics
        self.agent_id = connection.cfg.client_id
        self.snapshot = snapshot
        self.every_s = every_s
        self._devices: dict[str, None] = dict.fromkeys(devices)
        self._lock = threading.Lock()
        self._next_document = time.monotonic() + every_s
        self._documents_due = False  # (re)connected, a new device, a reload: publish soon
        self._rate_base: dict[str, tuple[float, int]] = {}  # device -> (monotonic, readings)
        self._rates: dict[str, float] = {}
        connection.on_connect(self._online_all)

    @property
    def devices(self) -> list[str]:
        with self._lock:
            return list(self._devices)

    def add_device(self, device: str) -> None:
        """Announce a device seen for the first time (cheap to call for every reading)."""
        if device in self._devices:
            return
        with self._lock:
            self._devices[device] = None
        log.info("serving device %s", device)
        if self.connection.connected.is_set():
            self._publish(device, ONLINE)
        self._documents_due = True

    def _online_all(self) -> None:
        self._publish(self.agent_id, ONLINE)
        for device in self.devices:
            if device != self.agent_id:
                self._publish(device, ONLINE)
        self._documents_due = True  # from the main loop: this is paho's network thread

    def offline_all(self, timeout: float = 2.0) -> bool:
        """Clean shutdown: `offline` on every device topic and the agent's, the documents
        with `online: false` first; True when acked."""
        infos = self.publish_documents(online=False)
        infos += [self._publish(d, OFFLINE) for d in self.devices if d != self.agent_id]
        infos.append(self._publish(self.agent_id, OFFLINE))
        deadline = time.monotonic() + timeout
        ok = True
        for info in infos:
            try:
                if info is not None:
                    info.wait_for_publish(max(deadline - time.monotonic(), 0.01))
            except (RuntimeError, ValueError):
                pass  # not connected: the broker keeps the last will for the agent topic
            ok = ok and info is not None and info.is_published()
        return ok

    def maybe_publish(self, now: float | None = None) -> bool:
        """The documents every `every_s` and soon after a change (`documents_due`), from
        the main loop; readings/s is measured between two periodic ones. Call it often."""
        now = time.monotonic() if now is None else now
        periodic = now >= self._next_document
        if not (periodic or self._documents_due):
            return False
        if self.snapshot is None or not self.connection.connected.is_set():
            return False
        self._documents_due = False
        try:
            snap = self.snapshot()
        except Exception:  # the status must never take the agent down
            log.exception("status document: snapshot failed")
            return False
        if periodic:
            self._next_document = now + self.every_s
        for device, dev in snap.devices.items():
            base = self._rate_base.get(device)
            if base is None or periodic:
                self._rate_base[device] = (now, dev.readings)
            if base is not None and periodic and now > base[0]:
                self._rates[device] = round((dev.readings - base[1]) / (now - base[0]), 3)
        self.publish_documents(online=True, snap=snap)
        return True

    def documents_due(self) -> None:
        """Publish the documents at the next `maybe_publish` (e.g. after a reload)."""
        self._documents_due = True

    def publish_documents(self, online: bool = True, snap: AgentSnapshot | None = None
                          ) -> list[MQTTMessageInfo | None]:
        """The agent's document and each device's (not for a device named like the agent)."""
        if self.snapshot is None:
            return []
        try:
            snap = snap or self.snapshot()
        except Exception:  # the status must never take the agent down
            log.exception("status document: snapshot failed")
            return []
        now = time.time()
        devices: dict[str, dict[str, Any]] = {}
        infos: list[MQTTMessageInfo | None] = []
        for device in dict.fromkeys([*self.devices, *snap.devices]):
            dev = snap.devices.get(device, DeviceSnapshot())
            doc = device_document(device, self.agent_id, online, snap, dev,
                                  self._rates.get(device), now)
            devices[device] = {k: doc[k] for k in ("online", "last_reading", "readings",
                                                   "readings_per_s", "open_alerts", "snoozed",
                                                   "snoozed_until")}
            if device != self.agent_id:
                infos.append(self._publish_json(device, doc))
        infos.append(self._publish_json(
            self.agent_id, agent_document(self.agent_id, online, snap, devices, now)))
        return infos

    def _publish_json(self, name: str, doc: dict[str, Any]) -> MQTTMessageInfo | None:
        payload = json.dumps(doc, separators=(",", ":"), allow_nan=False)
        return self.connection.publish(self.topics.info(name), payload, qos=1, retain=True)

    def _publish(self, device: str, state: str) -> MQTTMessageInfo | None:
        return self.connection.publish(self.topics.status(device), state, qos=1, retain=True)
