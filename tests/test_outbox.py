"""The durable outbox: write before publish, ack deletes, order across reopen, bound policy."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from edge.outbox import Outbox


def put(box: Outbox, state: str, alert_id: str, n: int = 0) -> int:
    return box.put(f"p/{alert_id}/alert", f"{alert_id}:{state}:{n}".encode(), device="d",
                   state=state, alert_id=alert_id)


def payloads(box: Outbox) -> list[str]:
    return [item.payload.decode() for item in box.pending(limit=1000)]


def test_write_ack_and_wal(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.sqlite3") as box:
        a, b = put(box, "start", "A"), put(box, "end", "A")
        assert 0 < a < b and box.depth() == 2
        assert box.ack(a) is True and box.ack(a) is False
        assert payloads(box) == ["A:end:0"]
        item = box.pending()[0]
        assert (item.seq, item.topic, item.state, item.alert_id) == (b, "p/A/alert", "end", "A")
        mode = box.db.execute("PRAGMA journal_mode").fetchone()[0]
        assert mode == "wal"


def test_order_is_kept_across_reopen(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite3"
    with Outbox(path) as box:
        seqs = [put(box, "update", "A", i) for i in range(5)]
        box.ack(seqs[1])
    with Outbox(path) as box:  # e.g. after a crash and restart
        assert payloads(box) == ["A:update:0", "A:update:2", "A:update:3", "A:update:4"]
        assert [i.seq for i in box.pending(after=seqs[2])] == seqs[3:]
        new = put(box, "end", "A")
        assert new > seqs[-1]  # AUTOINCREMENT: never reuses a seq, even after deletes


def test_survives_a_process_that_never_closed(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite3"
    box = Outbox(path).open()
    put(box, "start", "A")
    # no close(): a reader in another connection sees the committed row (WAL, synchronous)
    other = sqlite3.connect(path)
    assert other.execute("SELECT COUNT(*) FROM outbox").fetchone()[0] == 1
    other.close()
    box.close()


def test_bound_drops_oldest_updates_first(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.sqlite3", max_alerts=4) as box:
        put(box, "start", "A")
        put(box, "update", "A", 1)
        put(box, "update", "A", 2)
        put(box, "update", "A", 3)
        put(box, "update", "A", 4)  # full: drops update 1
        put(box, "end", "A")  # full: drops update 2
        assert payloads(box) == ["A:start:0", "A:update:3", "A:update:4", "A:end:0"]
        assert box.dropped() == {"update": 2}


def test_bound_never_drops_a_lone_start_or_end(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.sqlite3", max_alerts=4) as box:
        put(box, "start", "A")
        put(box, "end", "A")
        put(box, "start", "B")
        put(box, "end", "B")
        assert put(box, "update", "C") == 0  # full of start/end: a new update is dropped
        put(box, "start", "C")  # drops the oldest finished alert, A, start and end together
        assert payloads(box) == ["B:start:0", "B:end:0", "C:start:0"]
        put(box, "start", "D")  # room again
        put(box, "start", "E")  # drops B (finished)
        put(box, "start", "F")  # only open starts left: kept over the bound
        put(box, "end", "C")
        assert payloads(box) == ["C:start:0", "D:start:0", "E:start:0", "F:start:0", "C:end:0"]
        assert box.dropped() == {"update": 1, "start": 2, "end": 2}


def test_dropped_counts_persist(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite3"
    with Outbox(path, max_alerts=10) as box:
        for i in range(12):
            put(box, "update", "A", i)
    with Outbox(path, max_alerts=10) as box:
        assert box.dropped() == {"update": 2}
        assert box.depth() == 10


def test_concurrent_put_and_ack(tmp_path: Path) -> None:
    """The main loop writes while the MQTT thread acknowledges."""
    with Outbox(tmp_path / "o.sqlite3") as box:
        seqs: list[int] = []
        done = threading.Event()

        def acker() -> None:
            acked = 0
            while acked < 200:
                if acked < len(seqs):
                    box.ack(seqs[acked])
                    acked += 1
            done.set()

        thread = threading.Thread(target=acker)
        thread.start()
        for i in range(200):
            seqs.append(put(box, "update", "A", i))
        assert done.wait(30)
        thread.join()
        assert box.depth() == 0


def test_bad_use_raises() -> None:
    with pytest.raises(ValueError):
        Outbox("x", max_alerts=0)
    with pytest.raises(RuntimeError, match="not open"):
        Outbox("x").depth()


def test_unwritable_outbox_is_a_clear_error(tmp_path: Path) -> None:
    from edge.outbox import Outbox, OutboxError

    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(OutboxError, match=r"\[outbox\] path"):
        Outbox(blocker / "outbox.sqlite3").open()
