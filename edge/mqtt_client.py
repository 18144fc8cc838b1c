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
Each new socket gets TCP_NODELAY (paho 2.x leaves Nagle on): a QoS 1 alert would otherwise
wait behind the broker's delayed ACK of the previous packet, about 40 ms on Linux.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
from collections.abc import Callable, Mapping
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.reasoncodes import ReasonCode

from edge.config import MqttConfig

log = logging.getLogger(__name__)


def _not_a_retry_echo(record: logging.LogRecord) -> bool:
    """paho logs every reconnect attempt as an error; the connection logs the reason once."""
    return not record.getMessage().startswith("Client is not connected")


_PAHO_LOG = logging.getLogger("edge.mqtt.paho")
_PAHO_LOG.addFilter(_not_a_retry_echo)

MessageHandler = Callable[[str, bytes], None]
_PROTOCOL_NAMES = {MQTTProtocolVersion.MQTTv5: "5", MQTTProtocolVersion.MQTTv311: "3.1.1"}


class Topics:
    """`<prefix>/<device>/{alert,status,info,metrics,event,cmd}`."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def alert(self, device: str) -> str:
        return f"{self.prefix}/{device}/alert"

    def status(self, device: str) -> str:
        return f"{self.prefix}/{device}/status"

    def info(self, device: str) -> str:
        """The retained JSON status document (edge.sinks.status)."""
        return f"{self.prefix}/{device}/info"

    def metrics(self, device: str) -> str:
        return f"{self.prefix}/{device}/metrics"

    def event(self, device: str) -> str:
        return f"{self.prefix}/{device}/event"

    def cmd(self, device: str) -> str:
        return f"{self.prefix}/{device}/cmd"


class _Client(mqtt.Client):
    """paho's client, keeping the exception of the last failed connect attempt (paho's loop
    swallows it and only calls `on_connect_fail`), so the agent can say what went wrong."""

    last_error: OSError | None = None

    def reconnect(self) -> MQTTErrorCode:
        try:
            return super().reconnect()
        except OSError as exc:
            self.last_error = exc
            raise


def describe_connect_error(error: OSError | None, cfg: MqttConfig) -> str:
    """One line saying why a connection attempt failed and what to check."""
    where = f"{cfg.host}:{cfg.port}"
    if isinstance(error, ssl.SSLCertVerificationError):
        ca = f"mqtt.tls.ca = {cfg.tls.ca}" if cfg.tls and cfg.tls.ca else "the system CA store"
        return (f"TLS: the broker's certificate at {where} did not verify against {ca} "
                f"({error.verify_message or error}); check the CA file and the host name")
    if isinstance(error, ssl.SSLError):
        hint = ("a client certificate (mqtt.tls.cert/key) the broker accepts"
                if cfg.tls is not None else "whether the port expects TLS ([mqtt.tls])")
        return f"TLS handshake with {where} failed ({error.reason or error}); check {hint}"
    if isinstance(error, ConnectionRefusedError):
        return f"connection refused by {where}: is the broker running on that port?"
    if isinstance(error, socket.gaierror):
        return f"cannot resolve the broker host {cfg.host!r} ({error.strerror or error})"
    if error is not None:
        return f"cannot reach the broker at {where} ({type(error).__name__}: {error})"
    return f"cannot reach the broker at {where}"


def set_nodelay(sock: object) -> None:
    """Turn Nagle's algorithm off on a TCP socket (plain or TLS); anything else (no socket
    yet, a unix socket, a websocket wrapper) is left as it is."""
    if not isinstance(sock, socket.socket):  # ssl.SSLSocket is one
        log.debug("TCP_NODELAY not set: %s is not a socket", type(sock).__name__)
        return
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError as exc:
        log.debug("TCP_NODELAY not set: %s", exc)


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
        self._unreachable: str | None = None  # the last connect failure logged
        self._refused: str | None = None
        self._stopping = False
        self._on_connect: list[Callable[[], None]] = []
        self._on_disconnect: list[Callable[[], None]] = []
        self._on_publish: list[Callable[[int], None]] = []
        self._subscriptions: list[tuple[str, int, MessageHandler]] = []
        self._subscribing: dict[int, str] = {}  # mid -> topic, until the SUBACK

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
        client = _Client(
            CallbackAPIVersion.VERSION2,
            client_id=cfg.client_id,
            clean_session=None if v5 else True,
            protocol=self.protocol,
        )
        client.enable_logger(_PAHO_LOG)
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
        client.on_subscribe = self._handle_subscribe
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
            text = str(reason)
            if text != self._refused:  # once per reason, not on every retry
                self._refused = text
                hint = ""
                if reason.value in (0x04, 0x05, 0x86, 0x87):  # bad credentials / not authorized
                    hint = (f" (user {self.cfg.username!r}: check mqtt.username and the "
                            f"password, ${self.cfg.password_env} or mqtt.password)"
                            if self.cfg.username else " (no mqtt.username is configured)")
                log.warning("broker refused the connection: %s%s; retrying with backoff",
                            reason, hint)
            return
        self.connections += 1
        self._unreachable = self._refused = None
        set_nodelay(client.socket())  # a new socket on every (re)connect
        self.connected.set()
        log.info(
            "connected to %s:%d (MQTT %s)%s", self.cfg.host, self.cfg.port, self.protocol_name,
            "" if self.connections == 1 else f", reconnect #{self.connections - 1}",
        )
        self._subscribing = {}
        for topic, qos, _handler in self._subscriptions:
            _rc, mid = client.subscribe(topic, qos)
            if mid is not None:
                self._subscribing[mid] = topic
        for hook in self._on_connect:
            hook()

    def _handle_connect_fail(self, client: mqtt.Client, _userdata: Any) -> None:
        error = client.last_error if isinstance(client, _Client) else None
        text = describe_connect_error(error, self.cfg)
        if text != self._unreachable:  # once per kind of failure, not on every retry
            self._unreachable = text
            log.warning("%s; retrying with backoff (up to %ds)", text,
                        self.cfg.reconnect_max_delay_s)

    def _closed_before_connack(self) -> None:
        """The broker dropped the connection before answering CONNECT: usually TLS trouble
        that surfaces after the client's side of the handshake (paho logs the SSL error)."""
        tls = self.cfg.tls
        if tls is not None and tls.cert is None:
            hint = ("if the broker requires client certificates, set mqtt.tls.cert and "
                    "mqtt.tls.key")
        elif tls is not None:
            hint = "check that the broker accepts the client certificate mqtt.tls.cert"
        else:
            hint = "does the port expect TLS ([mqtt.tls])?"
        text = (f"the broker at {self.cfg.host}:{self.cfg.port} closed the connection before "
                f"accepting it; {hint}")
        if text != self._unreachable:
            self._unreachable = text
            log.warning("%s; retrying with backoff", text)

    def _handle_subscribe(self, _client: mqtt.Client, _userdata: Any, mid: int,
                          reasons: list[ReasonCode], _props: Any) -> None:
        topic = self._subscribing.pop(mid, "?")
        for reason in reasons:
            if reason.is_failure:
                log.warning("broker refused the subscription to %s (%s): check the broker's "
                            "ACL for this client", topic, reason)

    def _handle_disconnect(
        self, _client: mqtt.Client, _userdata: Any, _flags: Any, reason: ReasonCode, _props: Any
    ) -> None:
        was_connected = self.connected.is_set()
        self.connected.clear()
        if was_connected and not self._stopping:
            log.warning("connection to the broker lost (%s); reconnecting with backoff", reason)
        elif not (was_connected or self._stopping or self._fallback.is_set()
                  or self._refused is not None):
            self._closed_before_connack()
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
