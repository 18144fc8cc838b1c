"""Agent events on `<prefix>/<client_id>/event` (JSON, QoS 1, not retained).

One message per event: `{"event": "reloaded" | "reload_failed" | "cmd_error", "ts": epoch s,
"agent": client id, "agent_version": ..., ...}`. Events answer commands and report what
operators need to see (a bundle refused on reload, and why); they are not alerts, so they
skip the outbox: one published while the broker is away is lost (the same fact is kept in
the metrics: `bundle.sha256`, `reloads.failed`, `reloads.last_error`).
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from edge.mqtt_client import MqttConnection, Topics

log = logging.getLogger(__name__)


class EventPublisher:
    def __init__(self, connection: MqttConnection, topics: Topics, agent_version: str) -> None:
        self.connection = connection
        self.topic = topics.event(connection.cfg.client_id)
        self.agent_id = connection.cfg.client_id
        self.agent_version = agent_version
        self.sent = 0

    def publish(self, event: str, **fields: Any) -> None:
        """Thread-safe (paho's publish is); never raises for network conditions."""
        body = {"event": event, "ts": round(time.time(), 3), "agent": self.agent_id,
                "agent_version": self.agent_version, **fields}
        payload = json.dumps(body, separators=(",", ":"), default=str)
        info = self.connection.publish(self.topic, payload, qos=1)
        if info is None or info.rc != 0:
            log.debug("event %s not published (not connected)", event)
            return
        self.sent += 1
