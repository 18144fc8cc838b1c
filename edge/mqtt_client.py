"""The agent's one MQTT connection (paho-mqtt 2.x, callback API v2).

One client per agent carries everything: alerts, status and metrics out, MQTT sources in.
One connection means one last will (the agent's status topic), one TLS handshake and one
session per Pi, and the subscriptions come back in the same `on_connect` that republishes
`online`, so a reconnect restores the whole agent at once. Readings are tiny and rare compared
to what the network thread can move, so sharing it does not slow alerts down.

Network conditions are values, not exceptions: the connection retries forever with paho's
exponential backoff (`reconnect_delay_set` + `loop_start`) and reports state through hooks.
`protocol = "auto"` connects with MQTT v5 and, if the broker answers "unsupported protocol
version" before any connection succeeded, rebuilds the client for 3.1.1 (paho cannot change
the protocol of a client; `tick()` does the swap on the caller's thread).
The password is passed to paho and never logged.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.reasoncodes import ReasonCode

from edge.config import MqttConfig

log = logging.getLogger(__name__)

MessageHandler = Callable[[str, bytes], None]
_PROTOCOL_NAMES = {MQTTProtocolVersion.MQTTv5: "5", MQTTProtocolVersion.MQTTv311: "3.1.1"}


class Topics:
    """`<prefix>/<device>/{alert,status,metrics}`."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def alert(self, device: str) -> str:
        return f"{self.prefix}/{device}/alert"

    def status(self, device: str) -> str:
        return f"{self.prefix}/{device}/status"

    def metrics(self, device: str) -> str:
        return f"{self.prefix}/{device}/metrics"


class MqttConnection:
    """Owns the paho client. No network I/O before `start()`."""

    def __init__(
        self, cfg: MqttConfig, *, will_topic: str, environ: Mapping[str, str] | None = None
    ) -> None:
        self.cfg = cfg
        self.will_topic = will_topic
        self._password = cfg.resolved_password(environ)
        self.protocol = (
            MQTTProtocolVersion.MQTTv311 if cfg.protocol == "3.1.1" else MQTTProtocolVersion.MQTTv5
        )
        self.client: mqtt.Client | None = None
        self.connected = threading.Event()
        self.connections = 0  # successful connects so far
        self._fallback = threading.Event()
        self._unreachable = False
        self._stopping = False
        self._on_connect: list[Callable[[], None]] = []
        self._on_disconnect: list[Callable[[], None]] = []
        self._on_publish: list[Callable[[int], None]] = []
        self._subscriptions: list[tuple[str, int, MessageHandler]] = []

    # -- wiring (before start) ---------------------------------------------------------------
    def on_connect(self, hook: Callable[[], None]) -> None:
        """Run `hook` on the network thread after each successful connect."""
        self._on_connect.append(hook)

    def on_disconnect(self, hook: Callable[[], None]) -> None:
        self._on_disconnect.append(hook)

    def on_publish(self, hook: Callable[[int], None]) -> None:
        """`hook(mid)` when the broker acknowledged a QoS 1 publish (or a QoS 0 was sent)."""
        self._on_publish.append(hook)

    def subscribe(self, topic: str, qos: int, handler: MessageHandler) -> None:
        """Subscribe on every (re)connect; `handler(topic, payload)` runs on the network thread."""
        self._subscriptions.append((topic, qos, handler))

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        self.client = self._build()
        self.client.connect_async(self.cfg.host, self.cfg.port, self.cfg.keepalive)
        self.client.loop_start()
        log.info(
            "connecting to mqtt%s://%s:%d as %s (MQTT %s)",
            "s" if self.cfg.tls else "", self.cfg.host, self.cfg.port, self.cfg.client_id,
            "auto: 5, else 3.1.1" if self.cfg.protocol == "auto" else self.cfg.protocol,
        )

    def tick(self) -> bool:
        """Call periodically from the main thread; True when the client was rebuilt."""
        if not self._fallback.is_set() or self.client is None:
            return False
        self._fallback.clear()
        self.client.loop_stop()
        self.protocol = MQTTProtocolVersion.MQTTv311
        log.warning("broker refused MQTT v5: falling back to MQTT 3.1.1")
        self.start()
        return True

    def stop(self) -> None:
        """Disconnect cleanly (no last will) and stop the network thread."""
        client = self.client
        if client is None:
            return
        self._stopping = True
        client.disconnect()
        client.loop_stop()
        self.connected.clear()
        self.client = None

    # -- I/O ---------------------------------------------------------------------------------
    def publish(
        self, topic: str, payload: bytes | str, qos: int = 0, retain: bool = False
    ) -> mqtt.MQTTMessageInfo | None:
        """Publish; None when not started. Check `.rc` of the result for network conditions."""
        client = self.client
        if client is None:
            return None
        return client.publish(topic, payload, qos=qos, retain=retain)

    @property
    def protocol_name(self) -> str:
        return _PROTOCOL_NAMES.get(self.protocol, str(self.protocol))

    # -- paho --------------------------------------------------------------------------------
    def _build(self) -> mqtt.Client:
        cfg = self.cfg
        v5 = self.protocol == MQTTProtocolVersion.MQTTv5
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=cfg.client_id,
            clean_session=None if v5 else True,
            protocol=self.protocol,
        )
        client.enable_logger(logging.getLogger("edge.mqtt.paho"))
        if cfg.username is not None:
            client.username_pw_set(cfg.username, self._password)
        if cfg.tls is not None:
            tls = cfg.tls
            client.tls_set(
                ca_certs=str(tls.ca) if tls.ca else None,
                certfile=str(tls.cert) if tls.cert else None,
                keyfile=str(tls.key) if tls.key else None,
            )
            client.tls_insecure_set(tls.insecure)
        client.will_set(self.will_topic, "offline", qos=1, retain=True)
        client.reconnect_delay_set(cfg.reconnect_min_delay_s, cfg.reconnect_max_delay_s)
        # No paho limit: the alert publisher bounds alerts in flight itself (status messages
        # are one per device). A paho-side limit would park messages as "queued", and paho's
        # resend after a reconnect stops at the first queued message.
        client.max_inflight_messages_set(0)
        client.on_connect = self._handle_connect
        client.on_disconnect = self._handle_disconnect
        client.on_connect_fail = self._handle_connect_fail
        client.on_publish = self._handle_publish
        client.on_message = self._handle_message
        return client

    def _handle_connect(
        self, client: mqtt.Client, _userdata: Any, _flags: Any, reason: ReasonCode, _props: Any
    ) -> None:
        if reason.is_failure:
            if (
                self.cfg.protocol == "auto"
                and self.protocol == MQTTProtocolVersion.MQTTv5
                and self.connections == 0
                and reason == "Unsupported protocol version"
            ):
                self._fallback.set()
                client.disconnect()
                return
            log.warning("broker refused the connection: %s; retrying with backoff", reason)
            return
        self.connections += 1
        self._unreachable = False
        self.connected.set()
        log.info(
            "connected to %s:%d (MQTT %s)%s", self.cfg.host, self.cfg.port, self.protocol_name,
            "" if self.connections == 1 else f", reconnect #{self.connections - 1}",
        )
        for topic, qos, _handler in self._subscriptions:
            client.subscribe(topic, qos)
        for hook in self._on_connect:
            hook()

    def _handle_connect_fail(self, _client: mqtt.Client, _userdata: Any) -> None:
        if not self._unreachable:
            self._unreachable = True
            log.warning(
                "cannot reach the broker at %s:%d; retrying with backoff (up to %ds)",
                self.cfg.host, self.cfg.port, self.cfg.reconnect_max_delay_s)

    def _handle_disconnect(
        self, _client: mqtt.Client, _userdata: Any, _flags: Any, reason: ReasonCode, _props: Any
    ) -> None:
        was_connected = self.connected.is_set()
        self.connected.clear()
        if was_connected and not self._stopping:
            log.warning("connection to the broker lost (%s); reconnecting with backoff", reason)
        for hook in self._on_disconnect:
            hook()

    def _handle_publish(
        self, _client: mqtt.Client, _userdata: Any, mid: int, _reason: Any, _props: Any
    ) -> None:
        for hook in self._on_publish:
            hook(mid)

    def _handle_message(self, _client: mqtt.Client, _userdata: Any, msg: mqtt.MQTTMessage) -> None:
        for pattern, _qos, handler in self._subscriptions:
            if mqtt.topic_matches_sub(pattern, msg.topic):
                handler(msg.topic, bytes(msg.payload))
