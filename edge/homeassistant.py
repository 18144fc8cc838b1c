"""Home Assistant MQTT discovery: `anomaly` and `sensor fault` binary_sensors and a `score`
sensor per device.

With `[homeassistant] enabled = true` the agent publishes, for every device it serves, three
retained discovery configs (QoS 1) on every (re)connect and when a device is first seen:

- ``<discovery_prefix>/binary_sensor/<node_id>/<device>_anomaly/config``: device_class
  ``problem``, ON while an alert is open;
- ``<discovery_prefix>/binary_sensor/<node_id>/<device>_sensor_fault/config``: device_class
  ``problem``, ON while an open alert's `trouble` is ``sensor`` (one sensor leaves its twins:
  check or replace it) rather than ``process`` (what the sensors watch is unusual);
- ``<discovery_prefix>/sensor/<node_id>/<device>_score/config``: the smoothed ensemble score
  (1.0 = the calibrated threshold), state_class ``measurement``.

`node_id` is the agent's client id; ids are reduced to ``[a-zA-Z0-9_-]`` as the discovery topic
requires. Both entities read one retained JSON state topic, ``<prefix>/<device>/state``::

    {"anomaly": "ON", "sensor_fault": "ON", "trouble": "sensor", "score": 2.31,
     "severity": "critical", "alert_id": "pod-1-...", "ts": "2026-01-12T07:05:00.000+00:00",
     "channels": ["pm25_opc_1", "no2_3"]}

published at once when the decision changes (alert start / end) and otherwise with the latest
score at most every `score_every_s`; the binary_sensor also takes the whole JSON as attributes.
A score of ``null`` (warming up, or a window not scored yet) renders as ``None``, which Home
Assistant shows as unknown. Availability follows the agent's status topic (its MQTT last will)
and the device's own status topic, both ``online``/``offline``, with ``availability_mode: all``:
the entities go unavailable when the agent dies or shuts down.
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
import time
from dataclasses import dataclass
from typing import Any

from edge.config import HomeAssistantConfig
from edge.decide import AlertEvent, BundleInfo, iso_time
from edge.mqtt_client import MqttConnection, Topics
from edge.sinks.status import OFFLINE, ONLINE

log = logging.getLogger(__name__)

ON, OFF = "ON", "OFF"
MANUFACTURER = "edge-anomaly"
ORIGIN_NAME = "edge-agent"
_NOT_ID = re.compile(r"[^a-zA-Z0-9_-]")


def slug(text: str) -> str:
    """`text` reduced to the characters a discovery topic level allows (others become `_`)."""
    return _NOT_ID.sub("_", text) or "_"


def state_topic(topics: Topics, device: str) -> str:
    return f"{topics.prefix}/{device}/state"


@dataclass(frozen=True)
class Discovery:
    """One discovery message: publish `payload` as JSON on `topic`, retained."""

    component: str
    topic: str
    payload: dict[str, Any]

    def encode(self) -> bytes:
        return json.dumps(self.payload, separators=(",", ":"), sort_keys=True).encode()


def discovery_messages(
    device: str, *, discovery_prefix: str, topics: Topics, agent_id: str, bundle: BundleInfo,
    agent_version: str,
) -> list[Discovery]:
    """The binary_sensor and sensor configs of one device."""
    node = slug(agent_id)
    uid = slug(f"{topics.prefix}_{device}")
    state = state_topic(topics, device)
    availability = [{"topic": topics.status(agent_id), "payload_available": ONLINE,
                     "payload_not_available": OFFLINE}]
    if device != agent_id:
        availability.append({"topic": topics.status(device), "payload_available": ONLINE,
                             "payload_not_available": OFFLINE})
    common: dict[str, Any] = {
        "state_topic": state,
        "availability": availability,
        "availability_mode": "all",
        "qos": 1,
        "device": {
            "identifiers": [uid],
            "name": device,
            "manufacturer": MANUFACTURER,
            "model": f"anomaly detector, bundle {bundle.name} {bundle.version}",
            "sw_version": agent_version,
        },
        "origin": {"name": ORIGIN_NAME, "sw_version": agent_version},
    }
    anomaly = {
        **common,
        "name": "Anomaly",
        "unique_id": f"{uid}_anomaly",
        "device_class": "problem",
        "value_template": "{{ value_json.anomaly }}",
        "payload_on": ON,
        "payload_off": OFF,
        "json_attributes_topic": state,
    }
    sensor_fault = {
        **common,
        "name": "Sensor fault",
        "unique_id": f"{uid}_sensor_fault",
        "device_class": "problem",
        "value_template": "{{ value_json.sensor_fault | default('OFF') }}",
        "payload_on": ON,
        "payload_off": OFF,
    }
    score = {
        **common,
        "name": "Anomaly score",
        "unique_id": f"{uid}_score",
        "value_template": "{{ value_json.score }}",
        "state_class": "measurement",
        "suggested_display_precision": 2,
        "icon": "mdi:chart-bell-curve",
    }
    obj = slug(device)
    return [
        Discovery("binary_sensor",
                  f"{discovery_prefix}/binary_sensor/{node}/{obj}_anomaly/config", anomaly),
        Discovery("binary_sensor",
                  f"{discovery_prefix}/binary_sensor/{node}/{obj}_sensor_fault/config",
                  sensor_fault),
        Discovery("sensor", f"{discovery_prefix}/sensor/{node}/{obj}_score/config", score),
    ]


@dataclass
class _DeviceState:
    anomaly: bool = False
    trouble: str = ""  # of the open alert
    score: float | None = None
    severity: str | None = None
    alert_id: str | None = None
    ts: float | None = None
    channels: tuple[str, ...] = ()
    published_at: float = -math.inf

    def payload(self) -> bytes:
        data = {
            "anomaly": ON if self.anomaly else OFF,
            "sensor_fault": ON if self.anomaly and self.trouble == "sensor" else OFF,
            "trouble": (self.trouble or None) if self.anomaly else None,
            "score": None if self.score is None else round(self.score, 4),
            "severity": self.severity,
            "alert_id": self.alert_id,
            "ts": None if self.ts is None else iso_time(self.ts),
            "channels": list(self.channels),
        }
        return json.dumps(data, separators=(",", ":")).encode()


class HomeAssistantPublisher:
    """Discovery configs and the retained state topic; `observe`/`event` from the main loop."""

    def __init__(self, connection: MqttConnection, topics: Topics, config: HomeAssistantConfig,
                 bundle: BundleInfo, agent_version: str, devices: list[str]) -> None:
        self.connection = connection
        self.topics = topics
        self.config = config
        self.bundle = bundle
        self.agent_version = agent_version
        self.agent_id = connection.cfg.client_id
        self._states: dict[str, _DeviceState] = {d: _DeviceState() for d in devices}
        self._lock = threading.Lock()
        connection.on_connect(self._announce_all)

    def messages(self, device: str) -> list[Discovery]:
        return discovery_messages(
            device, discovery_prefix=self.config.discovery_prefix, topics=self.topics,
            agent_id=self.agent_id, bundle=self.bundle, agent_version=self.agent_version)

    def add_device(self, device: str) -> None:
        """A device seen for the first time: its discovery configs and an initial OFF state."""
        if device in self._states:
            return
        with self._lock:
            self._states[device] = _DeviceState()
        if self.connection.connected.is_set():
            self._announce(device)

    def event(self, event: AlertEvent, now: float | None = None) -> None:
        """An alert event: `start`/`update` mean ON, `end` means OFF; a change goes out at once."""
        state = self._state(event.device)
        anomaly = event.state != "end"
        trouble = event.trouble if anomaly else ""
        with self._lock:
            changed = anomaly != state.anomaly or trouble != state.trouble
            state.anomaly, state.trouble = anomaly, trouble
            state.severity = event.severity if anomaly else None
            state.alert_id = event.id
            state.ts = event.ts
            state.channels = tuple(c.name for c in event.channels)
            if math.isfinite(event.score):
                state.score = event.score
        if changed:
            self._publish(event.device, state, now)

    def observe(self, device: str, score: float, ts: float, now: float | None = None) -> None:
        """A scored window (NaN while warming up): the score, at most every `score_every_s`."""
        state = self._state(device)
        with self._lock:
            state.score = score if math.isfinite(score) else None
            state.ts = ts
        now = time.monotonic() if now is None else now
        if now - state.published_at >= self.config.score_every_s:
            self._publish(device, state, now)

    # -- publishing ----------------------------------------------------------------------------
    def _state(self, device: str) -> _DeviceState:
        state = self._states.get(device)
        if state is None:
            self.add_device(device)
            state = self._states[device]
        return state

    def _announce_all(self) -> None:
        with self._lock:
            devices = list(self._states)
        for device in devices:
            self._announce(device)

    def _announce(self, device: str) -> None:
        for message in self.messages(device):
            self.connection.publish(message.topic, message.encode(), qos=1, retain=True)
        self._publish(device, self._states[device], None)
        log.info("home assistant discovery published for %s under %s/", device,
                 self.config.discovery_prefix)

    def _publish(self, device: str, state: _DeviceState, now: float | None) -> None:
        with self._lock:
            state.published_at = time.monotonic() if now is None else now
            payload = state.payload()
        self.connection.publish(state_topic(self.topics, device), payload, qos=1, retain=True)
