"""Retained `online`/`offline` status: one last will per connection, so two levels.

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
"""

from __future__ import annotations

import logging
import threading
import time

from paho.mqtt.client import MQTTMessageInfo

from edge.mqtt_client import MqttConnection, Topics

log = logging.getLogger(__name__)

ONLINE = "online"
OFFLINE = "offline"


class StatusPublisher:
    def __init__(self, connection: MqttConnection, topics: Topics, devices: list[str]) -> None:
        self.connection = connection
        self.topics = topics
        self.agent_id = connection.cfg.client_id
        self._devices: dict[str, None] = dict.fromkeys(devices)
        self._lock = threading.Lock()
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

    def _online_all(self) -> None:
        self._publish(self.agent_id, ONLINE)
        for device in self.devices:
            if device != self.agent_id:
                self._publish(device, ONLINE)

    def offline_all(self, timeout: float = 2.0) -> bool:
        """Clean shutdown: `offline` on every device topic and the agent's; True when acked."""
        infos = [self._publish(d, OFFLINE) for d in self.devices if d != self.agent_id]
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

    def _publish(self, device: str, state: str) -> MQTTMessageInfo | None:
        return self.connection.publish(self.topics.status(device), state, qos=1, retain=True)
