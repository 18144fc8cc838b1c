"""Periodic metrics on `<prefix>/<device>/metrics` (QoS 0, not retained).

The agent's own topic (`<prefix>/<client_id>/metrics`) carries the totals; each device topic
carries that device's counters. Metrics are a snapshot: one missed while the broker is away
is not worth queueing, so nothing is published while disconnected.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

from edge.mqtt_client import MqttConnection, Topics

log = logging.getLogger(__name__)

Collect = Callable[[], dict[str, dict[str, Any]]]


class MetricsPublisher:
    """`collect()` returns topic id (device or client id) -> JSON-ready metrics."""

    def __init__(self, connection: MqttConnection, topics: Topics, collect: Collect,
                 interval_s: float) -> None:
        self.connection = connection
        self.topics = topics
        self.collect = collect
        self.interval_s = interval_s
        self._next = time.monotonic() + interval_s

    def maybe_publish(self, now: float | None = None) -> bool:
        """Publish when the interval has passed; call it often from the main loop."""
        now = time.monotonic() if now is None else now
        if now < self._next:
            return False
        self._next = now + self.interval_s
        if not self.connection.connected.is_set():
            return False
        for name, metrics in self.collect().items():
            payload = json.dumps(metrics, separators=(",", ":"), allow_nan=False, default=str)
            self.connection.publish(self.topics.metrics(name), payload, qos=0)
        return True
