"""Closing the loop on the device: feedback on alerts, snoozes, and the capture for retraining.

The agent hands every accepted reading (`observe`) and every alert event before it is
published (`gate`) to one `ClosedLoop`, and the commands `feedback`, `snooze` and `unsnooze`
(checked by `edge.commands` in paho's thread, queued by `submit`) are carried out on its main
loop (`tick`), where the scoring state lives:

- **feedback** `normal` teaches the device's memories the alert's windows (`edge.feedback`,
  `LagMemory.teach`, `TaughtMemory.teach`): the same pattern is then as near as it was to
  itself, so it no longer alerts on this device; the scoring state is saved at once (and
  so survives a restart). `anomaly` confirms. Both are recorded in the capture file before
  the reply (`feedback` event on the agent's event topic; `cmd_error` with the reason, and
  nothing recorded, for an unknown alert, an alert of another device, or `normal` for an
  alert whose windows are no longer kept).
- **snooze** a device for `for_s` seconds: it is still scored and its alerts recorded in the
  capture file, but they are not published (MQTT, Home Assistant, stdout). An alert open when
  the snooze starts ends with `reason: "snoozed"`; an alert that started during the snooze
  and is still open when it ends (`unsnooze` or the time is up) is published then, as a
  `start` with its own `ts_start`, so every published start still gets its end. Snoozes are
  kept in the capture file across restarts and shown in the retained status documents.
- **capture**: every accepted reading, in the bundle's input channels (`edge.capture`).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import queue
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import numpy as np

from edge.bundle import Manifest
from edge.capture import CaptureError, CaptureStore
from edge.commands import CommandError, Request
from edge.decide import AlertEvent, iso_time
from edge.feedback import AlertKeeper, Retention, fits, memories, teach
from edge.pipeline import Gateway, Outcome
from edge.readings import Reading, input_channels

log = logging.getLogger("edge.closed_loop")


class Reply(Protocol):
    def __call__(self, event: str, **fields: Any) -> None: ...


class ClosedLoop:
    def __init__(self, store: CaptureStore, retention: Retention, manifest: Manifest,
                 gateway: Gateway, *, reply: Reply,
                 reject: Callable[[str, str, str | int | None], None],
                 changed: Callable[[], None], taught: Callable[[], None],
                 clock: Callable[[], float] = time.time) -> None:
        """`reply`: publish an event (`EventPublisher.publish`); `reject`: a `cmd_error`
        (`CommandHandler.reject`); `changed`: the status documents are due; `taught`: save
        the scoring state soon."""
        self.store = store
        self.keeper = AlertKeeper(retention)
        self.gateway = gateway
        self.reply, self.reject, self.changed, self.taught = reply, reject, changed, taught
        self._clock = clock
        self.snoozed: dict[str, float] = {}  # device -> until (epoch s)
        self._silent: dict[str, AlertEvent] = {}  # open alerts not published: their last event
        self._requests: queue.SimpleQueue[Request] = queue.SimpleQueue()
        self.counts = {"feedback": 0, "snoozed_events": 0}
        self.rebind(manifest)

    def rebind(self, manifest: Manifest) -> None:
        """The bundle in use (at start and after a reload): its input channels, the time an
        alert's windows reach back before its start."""
        self.channels = input_channels(manifest)
        self._set = self.store.channel_set(self.channels) if self.store.db_open else 0
        self.lead_s = manifest.sample_period_s * (
            manifest.window.length + manifest.decision.smoothing)

    def open(self) -> None:
        self.store.open()
        self.store.end_open_alerts()
        self._set = self.store.channel_set(self.channels)
        now = self._clock()
        for device, until in self.store.snoozes().items():
            if until > now:
                self.snoozed[device] = until
                log.info("device %s is snoozed until %s", device, iso_time(until))
            else:
                self.store.set_snooze(device, None)

    def close(self) -> None:
        self.store.close()

    # -- the stream ------------------------------------------------------------------------
    def observe(self, reading: Reading, outcome: Outcome) -> None:
        """An accepted reading: captured, and its memories' vectors kept while needed."""
        raw = np.array([_number(reading.values.get(c)) for c in self.channels])
        self.store.add_reading(reading.device, reading.ts, self._set, raw)
        pipeline = self.gateway.pipelines.get(reading.device)
        if outcome.scored and pipeline is not None:
            self.keeper.collect(reading.device, pipeline.state)

    def gate(self, events: Iterable[AlertEvent]) -> list[AlertEvent]:
        """Record every alert event; return those to publish (not a snoozed device's)."""
        events = list(events)
        self.keeper.events(events)
        out = []
        for event in events:
            silent = event.id in self._silent or (
                event.state == "start" and event.device in self.snoozed)
            self.store.record_alert(event, published=not silent, lead_s=self.lead_s)
            if not silent:
                out.append(event)
                continue
            self.counts["snoozed_events"] += 1
            if event.state == "end":
                self._silent.pop(event.id, None)
            else:
                self._silent[event.id] = event
            log.info("alert %s %s on %s not published: the device is snoozed", event.state,
                     event.id, event.device)
        return out

    def snoozed_until(self, device: str) -> float | None:
        return self.snoozed.get(device)

    # -- commands --------------------------------------------------------------------------
    def submit(self, request: Request) -> None:
        """From paho's thread: carried out at the next `tick`."""
        self._requests.put(request)

    def tick(self, now: float | None = None) -> list[AlertEvent]:
        """From the main loop: the queued commands, the snoozes that ran out, the capture's
        writes and bounds. Returns alert events to publish (through `gate`)."""
        events: list[AlertEvent] = []
        while True:
            try:
                request = self._requests.get_nowait()
            except queue.Empty:
                break
            try:
                events += self.execute(request)
            except CommandError as exc:
                log.warning("command %s on %s refused: %s", request.action, request.topic, exc)
                self.reject(request.topic, str(exc), request.request_id)
            except Exception as exc:  # a bug must not stop the agent
                log.exception("command %s on %s failed", request.action, request.topic)
                self.reject(request.topic, f"internal error: {type(exc).__name__}",
                            request.request_id)
        wall = self._clock()
        for device, until in list(self.snoozed.items()):
            if until <= wall:
                events += self.unsnooze(device, "expired")
        self.store.tick(now)
        return events

    def execute(self, request: Request) -> list[AlertEvent]:
        extra = {} if request.request_id is None else {"id": request.request_id}
        if request.action == "feedback":
            self.feedback(request)
            return []
        assert request.device is not None
        if request.action == "snooze":
            return self.snooze(request.device, request.for_s, extra)
        return self.unsnooze(request.device, "command", extra)

    def feedback(self, request: Request) -> dict[str, Any]:
        """Carry out a feedback command; CommandError (nothing recorded) when it cannot be."""
        alert_id, label = request.alert_id, request.label
        recording = self.keeper.find(alert_id)
        record = self.store.alert(alert_id)
        if recording is not None:
            device, ts_start, ts_end = recording.device, recording.ts_start, recording.ts_end
            channels = list(recording.channels)
        elif record is not None:
            device, ts_start, ts_end = record.device, record.ts_start, record.ts_end
            channels = list(record.channels)
        else:
            raise CommandError(f"unknown alert id {alert_id[:80]!r}: no alert of that id was "
                               f"raised by this agent (alerts are kept {self.store.max_days:g} "
                               "days)", alert_id)
        if request.device is not None and request.device != device:
            raise CommandError(f"alert {alert_id} is of device {device!r}, not "
                               f"{request.device!r}", alert_id)
        previous = (record.label if record is not None and record.label else
                    recording.label if recording is not None else "")
        fields: dict[str, Any] = {}
        vectors: dict[str, Any] = {}
        pipeline = self.gateway.pipelines.get(device)
        if label == "normal" and previous != "normal":
            r = self.keeper.retention
            if recording is None or pipeline is None:
                raise CommandError(
                    f"alert {alert_id} can no longer be taught: the windows of an alert are "
                    f"kept for the last {r.keep_alerts} alerts of a device, up to "
                    f"{r.keep_s / 3600:g} h after its end, and not across a restart of the "
                    "agent", alert_id)
            vectors = recording.arrays()
            if not memories(pipeline.state):
                fields["learned"] = False
                fields["why"] = ("the bundle has no memory to teach (no taught memory on its "
                                 "window-features distance, no lag memory on its distance and "
                                 "long-shape scorers): recorded for the capture export; "
                                 "retrain to learn it")
            elif not vectors or not fits(vectors, pipeline.state):
                raise CommandError(
                    f"alert {alert_id} cannot be taught: its windows do not fit the device's "
                    "memories (the bundle was replaced since)", alert_id)
        elif label == "normal":
            fields["already"] = True
        elif previous == "normal":
            fields["why"] = ("the device keeps what it was taught as normal; the capture "
                             "export now leaves the alert out of training")
        try:
            self.store.add_feedback(alert_id=alert_id, device=device, label=label,
                                    note=request.note, ts_start=ts_start, ts_end=ts_end,
                                    channels=channels, taught={})
        except CaptureError as exc:
            raise CommandError(str(exc), alert_id) from exc
        taught: dict[str, int] = {}
        if vectors and pipeline is not None and recording is not None:
            taught = teach(vectors, pipeline.state)
            recording.label = "normal"  # an open alert goes on teaching its new windows
            self.taught()
            fields["learned"] = True
        elif label == "normal" and recording is not None and "already" not in fields:
            recording.label = "normal"
        self.counts["feedback"] += 1
        log.info("feedback %s on alert %s of %s%s; taught %s", label, alert_id, device,
                 f" ({request.note[:80]!r})" if request.note else "", taught or "nothing")
        reply = {"id": alert_id, "device": device, "label": label, "note": request.note,
                 "ts_start": ts_start, "ts_end": ts_end, "open": ts_end is None,
                 "channels": channels, "taught": taught, **fields}
        self.reply("feedback", **reply)
        return reply

    def snooze(self, device: str, for_s: float, extra: dict[str, Any] | None = None
               ) -> list[AlertEvent]:
        until = self._clock() + for_s
        try:
            self.store.set_snooze(device, until)
        except CaptureError as exc:
            raise CommandError(str(exc), (extra or {}).get("id")) from exc
        self.snoozed[device] = until
        events: list[AlertEvent] = []
        pipeline = self.gateway.pipelines.get(device)
        if pipeline is not None and pipeline.decider.alert is not None and (
                pipeline.decider.alert.id not in self._silent):
            ended = pipeline.decider.interrupt("snoozed")
            if ended is not None:
                pipeline.stats.events += 1
                events.append(ended)
        log.info("device %s snoozed until %s%s", device, iso_time(until),
                 f"; alert {events[0].id} ends" if events else "")
        self.reply("snoozed", device=device, for_s=for_s, until=round(until, 3),
                   until_iso=iso_time(until), ended=events[0].id if events else None,
                   **(extra or {}))
        self.changed()
        return events

    def unsnooze(self, device: str, reason: str, extra: dict[str, Any] | None = None
                 ) -> list[AlertEvent]:
        was = self.snoozed.pop(device, None)
        try:
            self.store.set_snooze(device, None)
        except CaptureError as exc:
            log.warning("%s", exc)
        open_now = [e for e in self._silent.values() if e.device == device]
        events = []
        for last in open_now:  # published now, so every published start has its end
            del self._silent[last.id]
            events.append(dataclasses.replace(last, state="start"))
        if was is not None or reason == "command":
            log.info("device %s no longer snoozed (%s)%s", device, reason,
                     f"; open alert(s) {', '.join(e.id for e in events)} published"
                     if events else "")
            self.reply("unsnoozed", device=device, reason=reason, was_snoozed=was is not None,
                       published=[e.id for e in events], **(extra or {}))
            self.changed()
        return events

    def metrics(self) -> dict[str, Any]:
        return {"captured": self.store.captured, "pruned": self.store.pruned,
                "feedback": self.counts["feedback"], "snoozed": sorted(self.snoozed),
                "unpublished_events": self.counts["snoozed_events"],
                "kept_alerts": len(self.keeper.ended),
                "kept_bytes": self.keeper.nbytes}


def _number(value: float | None) -> float:
    return math.nan if value is None else float(value)
