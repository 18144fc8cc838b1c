"""A durable outbox for alerts: SQLite in WAL mode.

An alert is written here before it is published (QoS 1) and deleted only when the broker
acknowledges it, so an alert survives a broker outage, a lost connection and a killed agent;
after a reconnect or a restart the backlog goes out in the order it was written (`seq`).

The box is bounded by `max_alerts`. When a new event arrives at a full box:
1. the oldest `update` event is dropped (updates only refresh an open alert's score);
2. with no update left, a new `update` is itself dropped;
3. a new `start`/`end` then drops the oldest *finished* alert, its `start` and `end` together,
   so a consumer never sees half a lifecycle;
4. if even that finds nothing (every row is an open alert's start), the event is stored anyway
   and the box grows past its bound: a `start` or `end` is never dropped on its own.
Drops are counted by state (`dropped`), persisted across restarts, and reported in metrics.

Beside the events, the box keeps every open alert: the last `start`/`update` of each alert id
not yet ended (`open_alerts`), written in the transaction that stores the event, and deleted
in the transaction that stores its `end`. So after a SIGKILL or a power cut the file says
exactly which alerts were started and not ended, and storing an end and forgetting the open
alert happen together or not at all: the next start ends each of them once
(`edge.open_alerts`).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    created REAL NOT NULL,
    device TEXT NOT NULL,
    topic TEXT NOT NULL,
    state TEXT NOT NULL,
    alert_id TEXT NOT NULL,
    payload BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_state ON outbox (state, seq);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS open_alerts (
    alert_id TEXT PRIMARY KEY,
    device TEXT NOT NULL,
    topic TEXT NOT NULL,
    updated REAL NOT NULL,
    payload BLOB NOT NULL
);
"""


class OutboxError(Exception):
    """The outbox cannot be opened: the agent must not run without its durable store."""


@dataclass(frozen=True)
class OutboxItem:
    seq: int
    created: float
    device: str
    topic: str
    state: str
    alert_id: str
    payload: bytes


@dataclass(frozen=True)
class OpenAlert:
    """An alert started and not ended: its last `start`/`update` event as stored."""

    alert_id: str
    device: str
    topic: str
    updated: float  # wall-clock time of that event's write
    payload: bytes


_LOCK_WAIT_S = 15.0


class Outbox:
    """Thread-safe: the main loop writes, the MQTT network thread acknowledges."""

    def __init__(self, path: Path | str, max_alerts: int = 10000) -> None:
        if max_alerts < 1:
            raise ValueError("max_alerts must be >= 1")
        self.path = Path(path)
        self.max_alerts = max_alerts
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None

    def open(self) -> Outbox:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # another process may hold the file briefly (a restart overlapping a stop): wait
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None,
                                 timeout=_LOCK_WAIT_S)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")  # alerts are rare: one fsync each is fine
            db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise OutboxError(
                f"cannot open the alert outbox {self.path}: {exc}; [outbox] path must be a "
                f"file the agent can create and write") from exc
        self._db = db
        return self

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def __enter__(self) -> Outbox:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("outbox is not open: call open() first")
        return self._db

    def put(self, topic: str, payload: bytes, *, device: str, state: str, alert_id: str) -> int:
        """Store one event durably; returns its sequence number (0 if the event was dropped)."""
        with self._lock, self.db:
            self.db.execute("BEGIN IMMEDIATE")
            self._track(topic, payload, device, state, alert_id)  # even if the event is dropped
            if self._depth() >= self.max_alerts and not self._make_room(state):
                self._count(f"dropped_{state}", 1)
                return 0
            cursor = self.db.execute(
                "INSERT INTO outbox (created, device, topic, state, alert_id, payload)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (time.time(), device, topic, state, alert_id, payload),
            )
            return int(cursor.lastrowid or 0)

    def _track(self, topic: str, payload: bytes, device: str, state: str,
               alert_id: str) -> None:
        """Keep the open-alert record in step with the event being stored."""
        if state == "end":
            self.db.execute("DELETE FROM open_alerts WHERE alert_id = ?", (alert_id,))
        elif state in ("start", "update"):
            self.db.execute(
                "INSERT OR REPLACE INTO open_alerts (alert_id, device, topic, updated, payload)"
                " VALUES (?, ?, ?, ?, ?)", (alert_id, device, topic, time.time(), payload))

    def open_alerts(self) -> list[OpenAlert]:
        """Alerts whose `start` was stored and whose `end` was not, oldest first."""
        with self._lock:
            rows = self.db.execute(
                "SELECT alert_id, device, topic, updated, payload FROM open_alerts"
                " ORDER BY updated, alert_id").fetchall()
        return [OpenAlert(r[0], r[1], r[2], r[3], bytes(r[4])) for r in rows]

    def _make_room(self, state: str) -> bool:
        """Apply the bound policy (module docstring); False means: drop the new event."""
        row = self.db.execute(
            "SELECT seq FROM outbox WHERE state = 'update' ORDER BY seq LIMIT 1").fetchone()
        if row is not None:
            self.db.execute("DELETE FROM outbox WHERE seq = ?", (row[0],))
            self._count("dropped_update", 1)
            return True
        if state == "update":
            return False
        finished = self.db.execute(
            "SELECT s.alert_id FROM outbox s JOIN outbox e"
            " ON s.alert_id = e.alert_id AND s.device = e.device"
            " WHERE s.state = 'start' AND e.state = 'end' ORDER BY s.seq LIMIT 1").fetchone()
        if finished is not None:
            deleted = self.db.execute(
                "DELETE FROM outbox WHERE alert_id = ? AND state IN ('start', 'end')",
                (finished[0],)).rowcount
            self._count("dropped_start", 1)
            self._count("dropped_end", max(deleted - 1, 0))
        return True  # stored even when over the bound: a start or end is never dropped alone

    def _count(self, name: str, n: int) -> None:
        self.db.execute(
            "INSERT INTO counters (name, value) VALUES (?, ?)"
            " ON CONFLICT(name) DO UPDATE SET value = value + excluded.value", (name, n))

    def _depth(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])

    def ack(self, seq: int) -> bool:
        """The broker has the event: forget it. False if it was not (or no longer) stored."""
        with self._lock, self.db:
            return self.db.execute("DELETE FROM outbox WHERE seq = ?", (seq,)).rowcount > 0

    def pending(self, after: int = 0, limit: int = 100) -> list[OutboxItem]:
        """Stored events with seq > `after`, oldest first."""
        with self._lock:
            rows = self.db.execute(
                "SELECT seq, created, device, topic, state, alert_id, payload FROM outbox"
                " WHERE seq > ? ORDER BY seq LIMIT ?", (after, limit)).fetchall()
        return [OutboxItem(r[0], r[1], r[2], r[3], r[4], r[5], bytes(r[6])) for r in rows]

    def depth(self) -> int:
        with self._lock:
            return self._depth()

    def dropped(self) -> dict[str, int]:
        """Events dropped by the bound policy, by state, since the file was created."""
        with self._lock:
            rows = self.db.execute(
                "SELECT name, value FROM counters WHERE name LIKE 'dropped_%'").fetchall()
        return {str(name).removeprefix("dropped_"): int(value) for name, value in rows}
