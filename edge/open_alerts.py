"""Alerts a crash left open are ended at the next start, with `reason: "restart"`.

The outbox keeps the last `start`/`update` of every alert not yet ended, in the transaction
that stores the event (`Outbox.open_alerts`). A SIGKILL, a power cut or an unhandled error
leaves those records behind; `restart_ends` turns each into an `end` that the agent publishes
through the outbox like any alert, before its sources start. Storing that `end` deletes the
record in the same transaction, so a crash at any point ends each alert exactly once: before
the commit the record is still there and the next start ends it, after it the `end` is in the
outbox and goes out on the next start.

Why end rather than resume the alert: after unknown downtime the new run cannot tell that a
fault it sees is the same one (its windows, smoothing and trigger count start empty, the
machine may have been repaired or replaced), and a resumed id would keep consumers waiting
through the warm-up for a decision the agent may never make. Ending at once closes every
lifecycle consumers have seen; if the fault is still there, a new alert starts after warm-up.

The `end` is built from the last stored event: `ts_start`, `ts` (the last event's, so the
last moment the alert was known open), `peak_score` and `windows` as of that event; no window
is scored, so `score` is null and `scorers`/`channels` are empty, as for the other ends
without a window (gap, stale, shutdown). It is the same for the same record, so a repeat is
removed by the consumers' usual dedupe on `id` + `state` + `ts_epoch`.
"""

from __future__ import annotations

import json
import logging
import math
from typing import Any

from edge.decide import AlertEvent, iso_time
from edge.outbox import OpenAlert, Outbox

log = logging.getLogger("edge.open_alerts")

REASON = "restart"


def restart_ends(outbox: Outbox) -> list[AlertEvent]:
    """An `end` for every alert the outbox holds as open (to publish before reading input)."""
    ends = [restart_end(alert) for alert in outbox.open_alerts()]
    for end in ends:
        log.warning("alert %s on %s was open when the agent last stopped without a shutdown; "
                    "ending it (reason %s)", end.id, end.device, REASON)
    return ends


def restart_end(alert: OpenAlert) -> AlertEvent:
    """The `end` of one open alert; a record whose payload cannot be read is logged and still
    ended (times from the record's write), so consumers never keep it open."""
    try:
        last = _last_event(alert.payload)
        ts_start, ts = float(last["ts_start_epoch"]), float(last["ts_epoch"])
        iso_time(ts_start), iso_time(ts)  # the payload needs them as dates: fail here if not
        peak = last.get("peak_score")
        peak_score = float(peak) if isinstance(peak, int | float) else math.nan
        windows = int(last.get("windows", 0))
    except (ValueError, KeyError, TypeError, OverflowError, OSError) as exc:
        log.warning("open alert %s on %s: its stored event is damaged (%s); ending it with the "
                    "time it was stored", alert.alert_id, alert.device, exc)
        ts_start = ts = alert.updated
        peak_score, windows = math.nan, 0
    return AlertEvent(alert.alert_id, alert.device, "end", ts_start, ts, math.nan, 1.0, "info",
                      {}, [], peak_score, windows, REASON)


def _last_event(payload: bytes) -> dict[str, Any]:
    data = json.loads(payload)  # JSONDecodeError and UnicodeDecodeError are ValueErrors
    if not isinstance(data, dict):
        raise ValueError(f"expected a JSON object, got {type(data).__name__}")
    return data
