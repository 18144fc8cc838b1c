"""Where alert events go: one protocol for every output of the agent, the payload encoded once.

`EncodedAlert` is an event with its JSON-ready payload and its bytes (the MQTT message, the
stdout line); each `AlertSink` takes it as it is. The agent's sinks: the durable outbox
(`OutboxSink`), Home Assistant (`HomeAssistantSink`), stdout (`StdoutAlertSink`) and the log
(`LogSink`), in that order: the outbox first, so an event is durable before anything else.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any, Protocol

from edge.decide import AlertEvent, BundleInfo
from edge.homeassistant import HomeAssistantPublisher
from edge.mqtt_client import Topics
from edge.sinks.mqtt_alerts import AlertPublisher
from edge.sinks.stdout import StdoutSink


@dataclass(frozen=True)
class EncodedAlert:
    event: AlertEvent
    payload: dict[str, Any]
    data: bytes


def encode(event: AlertEvent, bundle: BundleInfo, agent_version: str) -> EncodedAlert:
    """The one place an alert event becomes its message."""
    payload = event.to_payload(bundle=bundle, agent_version=agent_version)
    return EncodedAlert(event, payload, json.dumps(payload, separators=(",", ":")).encode())


class AlertSink(Protocol):
    def alert(self, alert: EncodedAlert) -> None: ...


class OutboxSink:
    """Stored in the durable outbox, then published on `<prefix>/<device>/alert` (QoS 1)."""

    def __init__(self, publisher: AlertPublisher, topics: Topics) -> None:
        self.publisher, self.topics = publisher, topics

    def alert(self, alert: EncodedAlert) -> None:
        event = alert.event
        self.publisher.submit(device=event.device, topic=self.topics.alert(event.device),
                              state=event.state, alert_id=event.id, payload=alert.data)


class HomeAssistantSink:
    def __init__(self, publisher: HomeAssistantPublisher) -> None:
        self.publisher = publisher

    def alert(self, alert: EncodedAlert) -> None:
        self.publisher.event(alert.event)


class StdoutAlertSink:
    def __init__(self, stdout: StdoutSink) -> None:
        self.stdout = stdout

    def alert(self, alert: EncodedAlert) -> None:
        self.stdout.write(alert.payload)


class LogSink:
    def __init__(self, logger: logging.Logger) -> None:
        self.log = logger

    def alert(self, alert: EncodedAlert) -> None:
        event = alert.event
        top = ", ".join(f"{c.name} {c.contribution:.0%}" for c in event.channels) or "-"
        self.log.info("alert %s %s on %s: score %.2f (%s), top channels: %s%s", event.state,
                      event.id, event.device, event.score, event.severity, top,
                      f", reason {event.reason}" if event.reason else "")
