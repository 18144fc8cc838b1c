"""The device-side record for retraining: raw readings, alerts, feedback labels and snoozes in
one SQLite file (`[capture] path`, WAL mode), on the agent's main loop.

- `readings`: each accepted reading of every device as it arrived (raw sensor units, NaN for
  a missing value), in the order of a channel set (`channel_sets`: the bundle's input
  channels when it was recorded). Written in batches (`flush`, every second from the loop);
  a power cut loses at most the last second. Bounded by `max_days` (older than the newest
  reading minus that) and `max_bytes` (the pages in use; the oldest readings go first and the
  freed pages return to the file system), checked every `prune_every_s`, when the write-ahead
  log is also emptied (so the file on disk is the readings plus at most a minute of writes).
- `alerts`: every alert the agent raised, published or not (a snoozed device's), with its
  span, the channels that drove it and the reason it ended; kept as long as the readings.
- `feedback`: every `feedback` command carried out (alert, device, label, note, the alert's
  span and channels, what was taught), committed before the reply; the last 10,000 kept.
- `snoozes`: the devices snoozed and until when, so a restart keeps them.

`export_rows` turns a device's stretch into what `edge-train fit` reads (`edge.capture_cli`).
"""

from __future__ import annotations

import json
import logging
import math
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge.decide import AlertEvent

log = logging.getLogger("edge.capture")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS channel_sets (id INTEGER PRIMARY KEY, names TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS readings (
    device TEXT NOT NULL,
    ts REAL NOT NULL,
    channels INTEGER NOT NULL,
    vals BLOB NOT NULL,
    PRIMARY KEY (device, ts)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS readings_ts ON readings (ts);
CREATE TABLE IF NOT EXISTS alerts (
    id TEXT PRIMARY KEY,
    device TEXT NOT NULL,
    ts_start REAL NOT NULL,
    ts_end REAL,
    ts_last REAL NOT NULL,
    lead_s REAL NOT NULL DEFAULT 0,
    channels TEXT NOT NULL DEFAULT '[]',
    reason TEXT NOT NULL DEFAULT '',
    published INTEGER NOT NULL DEFAULT 1,
    updated REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS alerts_device ON alerts (device, ts_start);
CREATE TABLE IF NOT EXISTS feedback (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    received REAL NOT NULL,
    alert_id TEXT NOT NULL,
    device TEXT NOT NULL,
    label TEXT NOT NULL,
    note TEXT NOT NULL DEFAULT '',
    ts_start REAL NOT NULL,
    ts_end REAL,
    channels TEXT NOT NULL DEFAULT '[]',
    taught TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS feedback_alert ON feedback (alert_id, seq);
CREATE TABLE IF NOT EXISTS snoozes (device TEXT PRIMARY KEY, until REAL NOT NULL,
                                    since REAL NOT NULL);
"""
MAX_FEEDBACK = 10_000
WAL_LIMIT = 1 << 20  # bytes the write-ahead log keeps between checkpoints
PRUNE_CHUNK = 2_000  # readings deleted per statement when over the byte bound


class CaptureError(Exception):
    """The capture file cannot be opened or written."""


@dataclass(frozen=True)
class AlertRecord:
    id: str
    device: str
    ts_start: float
    ts_end: float | None
    lead_s: float
    channels: list[str]
    reason: str
    published: bool
    label: str  # the latest feedback label, "" when none


@dataclass(frozen=True)
class ExportRows:
    channels: list[str]
    ts: np.ndarray  # (n,)
    values: np.ndarray  # (n, C), NaN missing
    anomaly: np.ndarray  # (n,) bool: left out of training
    alert_ids: list[str]  # (n,) the alert a row belongs to, "" when none
    labels: list[str]  # (n,) that alert's feedback label ("" none)


class CaptureStore:
    def __init__(self, path: Path, *, readings: bool = True, max_days: float = 7.0,
                 max_bytes: int = 256 << 20, prune_every_s: float = 60.0,
                 flush_rows: int = 512) -> None:
        self.path = Path(path)
        self.record_readings = readings
        self.max_days = max_days
        self.max_bytes = max_bytes
        self.prune_every_s = prune_every_s
        self.flush_rows = flush_rows
        self._db: sqlite3.Connection | None = None
        self._pending: list[tuple[str, float, int, bytes]] = []
        self._sets: dict[tuple[str, ...], int] = {}
        self._next_prune = 0.0
        self._next_flush = 0.0
        self.flush_every_s = 1.0
        self.captured = 0  # readings written since the start
        self.pruned = 0  # readings deleted by the bounds since the start

    # -- opening ---------------------------------------------------------------------------
    def open(self) -> CaptureStore:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fresh = not self.path.exists()
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            if fresh:  # must precede the first table: freed pages go back to the file system
                db.execute("PRAGMA auto_vacuum = INCREMENTAL")
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = NORMAL")
            db.execute(f"PRAGMA journal_size_limit = {WAL_LIMIT}")  # the WAL, after a checkpoint
            db.executescript(_SCHEMA)
            self._sets = {tuple(json.loads(names)): i
                          for i, names in db.execute("SELECT id, names FROM channel_sets")}
        except (sqlite3.Error, OSError) as exc:
            raise CaptureError(f"capture file {self.path}: {exc}") from exc
        self._db = db
        return self

    def end_open_alerts(self) -> int:
        """At the agent's start: alerts a crash left open ended at their last event (the
        agent ends the published ones so too, `edge.open_alerts`; a snoozed device's are not
        in its outbox)."""
        return self.db.execute("UPDATE alerts SET ts_end = ts_last, reason = 'restart' "
                               "WHERE ts_end IS NULL").rowcount

    @property
    def db_open(self) -> bool:
        return self._db is not None

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise CaptureError(f"capture file {self.path} is not open")
        return self._db

    def close(self) -> None:
        if self._db is not None:
            self.flush()
            self._db.close()
            self._db = None

    def __enter__(self) -> CaptureStore:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- readings --------------------------------------------------------------------------
    def channel_set(self, names: Sequence[str]) -> int:
        key = tuple(names)
        found = self._sets.get(key)
        if found is None:
            cursor = self.db.execute("INSERT OR IGNORE INTO channel_sets (names) VALUES (?)",
                                     (json.dumps(list(key)),))
            found = cursor.lastrowid if cursor.rowcount else self.db.execute(
                "SELECT id FROM channel_sets WHERE names = ?", (json.dumps(list(key)),)
            ).fetchone()[0]
            assert found is not None
            self._sets[key] = found
        return found

    def add_reading(self, device: str, ts: float, channels: int,
                    values: np.ndarray) -> None:
        """One accepted reading (raw row in the order of channel set `channels`); buffered."""
        if not self.record_readings or self._db is None:
            return
        self._pending.append((device, float(ts), channels,
                              np.asarray(values, dtype="<f8").tobytes()))
        if len(self._pending) >= self.flush_rows:
            self.flush()

    def flush(self) -> None:
        """Write the buffered readings in one transaction; an error is logged, not raised
        (capture must never stop the scoring)."""
        if not self._pending or self._db is None:
            return
        rows, self._pending = self._pending, []
        try:
            with self._transaction():
                self._db.executemany(
                    "INSERT OR REPLACE INTO readings (device, ts, channels, vals) "
                    "VALUES (?, ?, ?, ?)", rows)
            self.captured += len(rows)
        except sqlite3.Error as exc:
            log.warning("capture: %d reading(s) not recorded: %s", len(rows), exc)

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        self.db.execute("BEGIN")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def tick(self, now: float | None = None) -> None:
        """From the main loop: write what is buffered (at most once a second: one
        transaction for every reading of every device in it); apply the bounds now and
        then."""
        now = time.monotonic() if now is None else now
        if now >= self._next_flush:
            self._next_flush = now + self.flush_every_s
            self.flush()
        if now >= self._next_prune:
            self._next_prune = now + self.prune_every_s
            self.prune()

    def used_bytes(self) -> int:
        page = self.db.execute("PRAGMA page_size").fetchone()[0]
        pages = self.db.execute("PRAGMA page_count").fetchone()[0]
        free = self.db.execute("PRAGMA freelist_count").fetchone()[0]
        return int(page * (pages - free))

    def prune(self) -> int:
        """Apply `max_days` and `max_bytes`; returns the readings deleted."""
        if self._db is None:
            return 0
        deleted = 0
        try:
            newest = self._db.execute("SELECT MAX(ts) FROM readings").fetchone()[0]
            if newest is not None:
                horizon = float(newest) - self.max_days * 86400.0
                deleted += self._db.execute("DELETE FROM readings WHERE ts < ?",
                                            (horizon,)).rowcount
                self._db.execute("DELETE FROM alerts WHERE COALESCE(ts_end, ts_start) < ?",
                                 (horizon,))
            while self.used_bytes() > self.max_bytes:
                gone = self._db.execute(  # the oldest chunk of readings, any device
                    "DELETE FROM readings WHERE ts <= (SELECT ts FROM readings ORDER BY ts "
                    "LIMIT 1 OFFSET ?)", (PRUNE_CHUNK - 1,)).rowcount
                if not gone:  # fewer than a chunk left
                    gone = self._db.execute("DELETE FROM readings").rowcount
                deleted += gone
                if not gone:
                    break
            self._db.execute(
                "DELETE FROM feedback WHERE seq <= (SELECT MAX(seq) FROM feedback) - ?",
                (MAX_FEEDBACK,))
            # to the end (`execute` would free one page)
            self._db.executescript("PRAGMA incremental_vacuum;")
            # the freed pages leave the file only at a checkpoint; the WAL is emptied too
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as exc:
            log.warning("capture: bounds not applied: %s", exc)
        if deleted:
            self.pruned += deleted
            log.debug("capture: %d old reading(s) deleted (bounds %g days, %d bytes)",
                      deleted, self.max_days, self.max_bytes)
        return deleted

    # -- alerts, feedback, snoozes ---------------------------------------------------------
    def record_alert(self, event: AlertEvent, *, published: bool, lead_s: float) -> None:
        """An alert event (start/update/end): the alert's row is created or brought up to
        date at once (committed); logged, not raised, on error."""
        if self._db is None:  # an agent built without being started (tests)
            return
        channels = [c.name for c in event.channels]
        try:
            row = self.db.execute("SELECT channels FROM alerts WHERE id = ?",
                                  (event.id,)).fetchone()
            if row is not None:
                known = json.loads(row[0])
                channels = known + [c for c in channels if c not in known]
            self.db.execute(
                "INSERT INTO alerts (id, device, ts_start, ts_end, ts_last, lead_s, channels, "
                "reason, published, updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT(id) DO UPDATE SET ts_end = excluded.ts_end, "
                "ts_last = excluded.ts_last, channels = excluded.channels, "
                "reason = excluded.reason, published = MAX(published, excluded.published), "
                "updated = excluded.updated",
                (event.id, event.device, event.ts_start,
                 event.ts if event.state == "end" else None, event.ts, lead_s,
                 json.dumps(channels),
                 event.reason, int(published), time.time()))
        except sqlite3.Error as exc:
            log.warning("capture: alert %s %s not recorded: %s", event.id, event.state, exc)

    def alert(self, alert_id: str) -> AlertRecord | None:
        row = self.db.execute(
            "SELECT id, device, ts_start, ts_end, lead_s, channels, reason, published, "
            "(SELECT label FROM feedback f WHERE f.alert_id = a.id ORDER BY seq DESC LIMIT 1) "
            "FROM alerts a WHERE id = ?", (alert_id,)).fetchone()
        return None if row is None else _alert_record(row)

    def alerts(self, device: str, since: float = -math.inf, until: float = math.inf
               ) -> list[AlertRecord]:
        rows = self.db.execute(
            "SELECT id, device, ts_start, ts_end, lead_s, channels, reason, published, "
            "(SELECT label FROM feedback f WHERE f.alert_id = a.id ORDER BY seq DESC LIMIT 1) "
            "FROM alerts a WHERE device = ? AND ts_start <= ? AND COALESCE(ts_end, ?) >= ? "
            "ORDER BY ts_start", (device, _sql(until), _sql(math.inf), _sql(since))).fetchall()
        return [_alert_record(r) for r in rows]

    def add_feedback(self, *, alert_id: str, device: str, label: str, note: str,
                     ts_start: float, ts_end: float | None, channels: list[str],
                     taught: dict[str, int]) -> int:
        """Record a feedback (committed before it returns); CaptureError when it cannot."""
        try:
            cursor = self.db.execute(
                "INSERT INTO feedback (received, alert_id, device, label, note, ts_start, "
                "ts_end, channels, taught) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (time.time(), alert_id, device, label, note, ts_start, ts_end,
                 json.dumps(channels), json.dumps(taught)))
        except sqlite3.Error as exc:
            raise CaptureError(f"feedback not recorded in {self.path}: {exc}") from exc
        return int(cursor.lastrowid or 0)

    def feedback(self, device: str | None = None) -> list[dict[str, Any]]:
        sql = ("SELECT seq, received, alert_id, device, label, note, ts_start, ts_end, "
               "channels, taught FROM feedback")
        rows = (self.db.execute(sql + " WHERE device = ? ORDER BY seq", (device,))
                if device is not None else self.db.execute(sql + " ORDER BY seq"))
        keys = ("seq", "received", "alert_id", "device", "label", "note", "ts_start", "ts_end",
                "channels", "taught")
        out = []
        for row in rows:
            item = dict(zip(keys, row, strict=True))
            item["channels"], item["taught"] = json.loads(row[8]), json.loads(row[9])
            out.append(item)
        return out

    def set_snooze(self, device: str, until: float | None) -> None:
        """Snooze `device` until `until` (epoch s), or end its snooze (None); committed."""
        try:
            if until is None:
                self.db.execute("DELETE FROM snoozes WHERE device = ?", (device,))
            else:
                self.db.execute("INSERT OR REPLACE INTO snoozes (device, until, since) "
                                "VALUES (?, ?, ?)", (device, until, time.time()))
        except sqlite3.Error as exc:
            raise CaptureError(f"snooze not recorded in {self.path}: {exc}") from exc

    def snoozes(self) -> dict[str, float]:
        return {d: float(u) for d, u in self.db.execute("SELECT device, until FROM snoozes")}

    # -- export ----------------------------------------------------------------------------
    def devices(self) -> list[str]:
        found = {d for (d,) in self.db.execute("SELECT DISTINCT device FROM readings")}
        found |= {d for (d,) in self.db.execute("SELECT DISTINCT device FROM alerts")}
        return sorted(found)

    def readings(self, device: str, since: float = -math.inf, until: float = math.inf
                 ) -> Iterator[tuple[float, int, bytes]]:
        yield from self.db.execute(
            "SELECT ts, channels, vals FROM readings WHERE device = ? AND ts >= ? AND ts <= ? "
            "ORDER BY ts", (device, _sql(since), _sql(until)))

    def export_rows(self, device: str, since: float = -math.inf, until: float = math.inf,
                    keep_unlabelled: bool = False) -> ExportRows:
        """A device's readings in [since, until] for `edge-train fit`: the union of the
        channels recorded, and per row `anomaly` (1 = left out of training) from the alerts
        around it: an alert labelled `anomaly`, or one without a label (unless
        `keep_unlabelled`), marks its span (from `lead_s` before its start to its end);
        an alert labelled `normal` keeps its rows as training data."""
        self.flush()
        names = {i: json.loads(n) for i, n in self.db.execute("SELECT id, names FROM "
                                                              "channel_sets")}
        rows = list(self.readings(device, since, until))
        order: list[str] = []
        for _, set_id, _ in rows:
            for name in names[set_id]:
                if name not in order:
                    order.append(name)
        column = {name: j for j, name in enumerate(order)}
        ts = np.array([r[0] for r in rows], dtype=np.float64)
        values = np.full((len(rows), len(order)), np.nan)
        by_set: dict[int, np.ndarray] = {}
        for i, (_, set_id, blob) in enumerate(rows):
            where = by_set.get(set_id)
            if where is None:
                where = by_set[set_id] = np.array([column[n] for n in names[set_id]],
                                                  dtype=np.intp)
            values[i, where] = np.frombuffer(blob, dtype="<f8")
        anomaly = np.zeros(len(rows), dtype=bool)
        normal = np.zeros(len(rows), dtype=bool)
        alert_ids, labels = [""] * len(rows), [""] * len(rows)
        for alert in self.alerts(device, since - 86400.0, until):
            end = alert.ts_end if alert.ts_end is not None else math.inf
            lo = int(np.searchsorted(ts, alert.ts_start - alert.lead_s, side="left"))
            hi = int(np.searchsorted(ts, end, side="right"))
            if hi <= lo:
                continue
            if alert.label == "normal":
                normal[lo:hi] = True
            elif alert.label == "anomaly" or not keep_unlabelled:
                anomaly[lo:hi] = True
            for i in range(lo, hi):
                if not alert_ids[i] or alert.label == "anomaly":
                    alert_ids[i], labels[i] = alert.id, alert.label
        return ExportRows(order, ts, values, anomaly, alert_ids, labels)


def _sql(value: float) -> float:
    """SQLite has no infinity literal in parameters beyond float('inf'), which it stores as
    Inf; clamp to a huge finite value so comparisons behave."""
    return max(min(value, 1e300), -1e300)


def _alert_record(row: tuple[Any, ...]) -> AlertRecord:
    return AlertRecord(row[0], row[1], float(row[2]), None if row[3] is None else float(row[3]),
                       float(row[4]), json.loads(row[5]), row[6], bool(row[7]), row[8] or "")
