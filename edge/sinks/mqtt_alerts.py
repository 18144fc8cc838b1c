"""Alerts to MQTT through the durable outbox: written first, published QoS 1, deleted on PUBACK.

One publisher thread owns the mid -> seq map and is the only caller of `publish` for alerts;
paho's callbacks only queue the acknowledged mids and wake it. That avoids the classic race
(the PUBACK callback can run before `publish()` returns the mid) without ever blocking paho's
network thread, and keeps the SQLite writes off it.

Order: rows are handed to paho in `seq` order, at most `max_inflight` at a time. When the
connection drops with messages in flight, paho resends exactly those (same mids, DUP set) right
after the next CONNACK; the publisher holds new rows back until they are all acknowledged, so
nothing overtakes them. After a restart the outbox is replayed from its first row.
Delivery is at least once: a PUBACK lost to a crash means the alert is sent again.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections import deque

from paho.mqtt.client import MQTT_ERR_QUEUE_SIZE

from edge.mqtt_client import MqttConnection
from edge.outbox import Outbox

log = logging.getLogger(__name__)


class AlertPublisher:
    def __init__(self, connection: MqttConnection, outbox: Outbox, max_inflight: int = 20) -> None:
        self.connection = connection
        self.outbox = outbox
        self.max_inflight = max_inflight
        self.published = 0  # handed to paho (resends by paho not counted)
        self.acked = 0
        self.undurable = 0  # published without the outbox (it could not be written)
        self._inflight: dict[int, int] = {}  # mid -> outbox seq; publisher thread only
        self._sent_upto = 0  # highest seq handed to the current client
        self._draining = False
        self._acks: deque[int] = deque()
        self._lost = threading.Event()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._idle = threading.Event()
        self._thread: threading.Thread | None = None
        connection.on_publish(self._on_publish)
        connection.on_connect(self._wake.set)
        connection.on_disconnect(self._on_disconnect)

    def start(self) -> None:
        backlog = self.outbox.depth()
        if backlog:
            log.info("outbox holds %d alert(s) from before; sending them first", backlog)
        self._thread = threading.Thread(target=self._run, name="alert-publisher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def submit(self, *, device: str, topic: str, payload: bytes, state: str,
               alert_id: str) -> int:
        """Store the alert durably, then let the publisher send it; returns its seq.

        If the outbox cannot be written (disk full, file removed), the alert is still
        published, without durability, and the error is logged: losing the file must not
        silence the agent.
        """
        try:
            seq = self.outbox.put(topic, payload, device=device, state=state, alert_id=alert_id)
        except sqlite3.Error as error:
            log.error("outbox write failed (%s): publishing %s %s without durability",
                      error, state, alert_id)
            self.undurable += 1
            self.connection.publish(topic, payload, qos=1)
            return 0
        if seq == 0:
            log.warning("outbox full (%d): dropped %s %s", self.outbox.max_alerts, state, alert_id)
        self._idle.clear()
        self._wake.set()
        return seq

    def reset(self) -> None:
        """The client was rebuilt (protocol fallback): resend everything still stored."""
        self._lost.set()
        self._wake.set()

    def flush(self, timeout: float) -> bool:
        """Wait until every stored alert is acknowledged; False on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.outbox.depth() == 0:
                return True
            self._wake.set()
            self._idle.wait(0.05)
        return self.outbox.depth() == 0

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    # -- paho network thread -----------------------------------------------------------------
    def _on_publish(self, mid: int) -> None:
        self._acks.append(mid)
        self._wake.set()

    def _on_disconnect(self) -> None:
        self._wake.set()

    # -- publisher thread --------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(0.5)
            self._wake.clear()
            try:
                self._step()
            except Exception:  # a database or client error must not kill the thread
                log.exception("alert publisher step failed; retrying")
                self._stop.wait(1.0)

    def _step(self) -> None:
        if self._lost.is_set():
            self._lost.clear()
            self._inflight.clear()
            self._acks.clear()
            self._sent_upto = 0
            self._draining = False
        while self._acks:
            seq = self._inflight.pop(self._acks.popleft(), None)
            if seq is not None:
                self.outbox.ack(seq)
                self.acked += 1
        if not self.connection.connected.is_set():
            # whatever is in flight now is resent by paho after the reconnect: let it go first
            self._draining = bool(self._inflight)
            return
        if self._draining and self._inflight:
            return
        self._draining = False
        room = self.max_inflight - len(self._inflight)
        if room <= 0:
            return
        items = self.outbox.pending(after=self._sent_upto, limit=room)
        for item in items:
            try:
                info = self.connection.publish(item.topic, item.payload, qos=1)
            except ValueError as error:  # a row that can never be sent must not block the rest
                log.error("dropping alert %s from the outbox: %s", item.alert_id, error)
                self.outbox.ack(item.seq)
                self._sent_upto = item.seq
                continue
            if info is None or info.rc == MQTT_ERR_QUEUE_SIZE:
                return  # retried on the next wake
            # rc NO_CONN still means queued by paho: it goes out after the reconnect
            self._inflight[info.mid] = item.seq
            self._sent_upto = item.seq
            self.published += 1
        if not items and not self._inflight:
            self._idle.set()
