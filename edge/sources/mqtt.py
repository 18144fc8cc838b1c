"""Readings from the local broker: `sensors/+/readings`, the `+` level is the device id.

The subscription rides on the agent's one MQTT connection (see edge.mqtt_client) and is
renewed on every reconnect. The handler runs on paho's network thread, so it never blocks:
when the main loop is behind and the queue is full, the reading is dropped and counted
(`queue_full`). The handler is wrapped by the agent's `Supervisor` (edge.sources.supervisor):
an exception in it is logged and counted in `source_errors`, and it cannot end paho's loop.
Payloads are decoded (bounded: size, depth, keys; edge.readings) on the main loop.
"""

from __future__ import annotations

import queue
import time

from edge.config import MqttSource as MqttSourceConfig
from edge.mqtt_client import MqttConnection
from edge.readings import BadInputCounter
from edge.sources import ItemQueue, Payload
from edge.sources.supervisor import Supervisor


class MqttSource:
    def __init__(self, cfg: MqttSourceConfig, connection: MqttConnection, items: ItemQueue,
                 counter: BadInputCounter, supervisor: Supervisor | None = None) -> None:
        self.name = f"mqtt:{cfg.topic}"
        self.cfg = cfg
        self.items = items
        self.counter = counter
        self._level = cfg.device_level
        guard = (supervisor or Supervisor()).guard
        connection.subscribe(cfg.topic, cfg.qos, guard(self.name, self._handle))

    def start(self) -> None:
        """Nothing to do: the connection subscribes on connect."""

    def stop(self) -> None:
        """Nothing to do: the connection goes away with the agent."""

    def _handle(self, topic: str, payload: bytes) -> None:
        device = topic.split("/")[self._level]
        try:
            self.items.put_nowait(Payload(device, payload, time.monotonic()))
        except queue.Full:
            self.counter.add("queue_full", "the scoring loop is behind; reading dropped",
                             device=device)
