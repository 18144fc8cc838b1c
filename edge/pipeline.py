"""The agent's stages after decoding, per device: window -> score -> decide.

`DevicePipeline.process_rows` is the one code path: the live agent calls `process(reading)`
(a batch of one), replay calls it with thousands of rows at once so the runtimes see batches,
but the window policy and the decider run row by row exactly as live. `Gateway` holds one
pipeline per device id, created on the device's first reading (at most `max_devices`, beyond
that readings are dropped and counted `too_many_devices`).

Not thread-safe: call one `Gateway` from one thread (the agent's run loop).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from edge.bundle import Decision
from edge.decide import AlertEvent, AlertOptions, Decider, Evidence
from edge.engine import ScoringEngine
from edge.feedback import carry_taught
from edge.preprocess import reading_to_raw
from edge.readings import BadInputCounter, Reading
from edge.score_state import ScoreState, depends_on
from edge.window import ACCEPTED, DROPPED, WINDOW, DeviceWindow

log = logging.getLogger("edge.pipeline")

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Outcome:
    """What the pipeline made of one accepted reading."""

    device: str
    ts: float
    scored: bool
    score: float  # smoothed ensemble score (>= 1 over threshold), NaN if not scored
    is_anomaly: bool  # an alert is open for this device
    scores: dict[str, float]  # normalised per-scorer scores of this window ({} if not scored)
    alert: AlertEvent | None  # the last event this reading caused
    latency_s: float  # from Reading.received to the decision (0.0 if unknown)
    events: tuple[AlertEvent, ...] = ()  # every event this reading caused, in order
    alert_id: str = ""  # the open (or just ended) alert


@dataclass(frozen=True)
class RowResults:
    """Columnar results of `process_rows` for n rows (the replay's output)."""

    status: list[str]  # per row, see edge.window
    score: FloatArray  # (n,) smoothed ensemble score, NaN when not scored
    is_anomaly: npt.NDArray[np.bool_]  # (n,)
    alert_ids: list[str]  # (n,), "" when none
    scorers: dict[str, FloatArray]  # scorer -> (n,) normalised, NaN when not scored
    events: list[tuple[int, AlertEvent]]  # (row index, event), in order


def _percentile_ms(samples: Sequence[float], q: float) -> float | None:
    return round(float(np.percentile(np.asarray(samples), q)) * 1000, 3) if samples else None


@dataclass
class DeviceStats:
    readings: int = 0
    dropped: dict[str, int] = field(default_factory=dict)  # duplicate_ts, out_of_order, ...
    gaps: int = 0
    filled: int = 0  # readings with at least one forward-filled channel
    windows_scored: int = 0
    alerts: int = 0  # alerts started
    events: int = 0
    latency_s: deque[float] = field(default_factory=lambda: deque(maxlen=2048))

    def snapshot(self) -> dict[str, Any]:
        return {
            "readings": self.readings,
            "dropped": dict(self.dropped),
            "gaps": self.gaps,
            "filled": self.filled,
            "windows_scored": self.windows_scored,
            "alerts": self.alerts,
            "events": self.events,
            "latency_p50_ms": _percentile_ms(self.latency_s, 50),
            "latency_p99_ms": _percentile_ms(self.latency_s, 99),
        }


class DevicePipeline:
    """Window, score and decide the readings of one device."""

    def __init__(
        self,
        engine: ScoringEngine,
        device: str,
        decision: Decision,
        counter: BadInputCounter,
        stride: int = 1,
        options: AlertOptions | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.engine = engine
        self.device = device
        self.counter = counter
        self.window = DeviceWindow(engine.manifest, stride)
        self.decider = Decider(device, decision, list(engine.manifest.channels), options)
        self.state = engine.new_state()  # the device's likelihood histories, if any
        self.stats = DeviceStats()
        self.scorer_names = [s.name for s in engine.manifest.scorers]
        self._clock = clock

    def process(self, reading: Reading) -> Outcome | None:
        """One live reading; None when it was dropped (duplicate, out of order)."""
        return self.process_batch([reading])[0]

    def process_batch(self, readings: Sequence[Reading]) -> list[Outcome | None]:
        if not readings:
            return []
        ts = np.array([r.ts for r in readings], dtype=np.float64)
        raw = np.vstack([reading_to_raw(r.values, self.engine.manifest) for r in readings])
        rows = self.process_rows(ts, raw)
        now = self._clock()
        events: list[list[AlertEvent]] = [[] for _ in readings]
        for i, event in rows.events:
            events[i].append(event)
        out: list[Outcome | None] = []
        for i, reading in enumerate(readings):
            if rows.status[i] not in ACCEPTED:
                out.append(None)
                continue
            latency = now - reading.received if reading.received > 0 else 0.0
            if reading.received > 0:
                self.stats.latency_s.append(latency)
            scored = rows.status[i] == WINDOW
            scores = {k: float(v[i]) for k, v in rows.scorers.items()} if scored else {}
            mine = tuple(events[i])
            out.append(Outcome(self.device, reading.ts, scored, float(rows.score[i]),
                               bool(rows.is_anomaly[i]), scores, mine[-1] if mine else None,
                               latency, mine, rows.alert_ids[i]))
        return out

    def process_rows(self, ts: FloatArray, raw: FloatArray) -> RowResults:
        """Push n rows (`ts` (n,), `raw` (n, C) in manifest channel order, NaN missing)."""
        n = len(ts)
        batch = self.window.push_rows(ts, raw)
        self._count(ts, batch.status, batch.restarted, batch.filled)
        scores = (self.engine.score_windows(batch.windows, self.state, ts[batch.window_rows],
                                            batch.missing)
                  if len(batch.window_rows) else None)
        self.stats.windows_scored += len(batch.window_rows)
        window_of = np.full(n, -1, dtype=np.intp)
        window_of[batch.window_rows] = np.arange(len(batch.window_rows))
        smoothed = np.full(n, np.nan)
        is_anomaly = np.zeros(n, dtype=bool)
        alert_ids = [""] * n
        events: list[tuple[int, AlertEvent]] = []
        decider = self.decider
        restarted = batch.restarted.tolist()
        windows = window_of.tolist()
        for i in range(n):
            if restarted[i]:
                ended = decider.interrupt("gap")
                if ended is not None:
                    events.append((i, ended))
                    alert_ids[i] = ended.id
            j = windows[i]
            if j >= 0 and scores is not None:
                evidence = Evidence(scores, j, batch.raw[i], batch.windows[j, -1])
                step = decider.step(float(ts[i]), evidence)
                smoothed[i] = step.score
                is_anomaly[i] = step.is_anomaly
                alert_ids[i] = step.alert_id or alert_ids[i]
                if step.event is not None:
                    events.append((i, step.event))
            elif decider.alert is not None:
                is_anomaly[i] = True
                alert_ids[i] = decider.alert.id
        scorers = {name: np.full(n, np.nan) for name in self.scorer_names}
        if scores is not None:
            for name, values in scores.normalized.items():
                scorers[name][batch.window_rows] = values
        self.stats.events += len(events)
        self.stats.alerts += sum(1 for _, e in events if e.state == "start")
        return RowResults(batch.status, smoothed, is_anomaly, alert_ids, scorers, events)

    def _count(self, ts: FloatArray, status: list[str], restarted: npt.NDArray[np.bool_],
               filled: npt.NDArray[np.intp]) -> None:
        self.stats.readings += len(status)
        for i, kind in enumerate(status):
            if kind in DROPPED:
                self.stats.dropped[kind] = self.stats.dropped.get(kind, 0) + 1
                self.counter.add(kind, f"reading at ts {ts[i]!r} dropped (windows need "
                                 "strictly increasing timestamps)", device=self.device)
        gaps = int(restarted.sum())
        if gaps:
            self.stats.gaps += gaps
            self.counter.add("gap", f"more than {self.window.max_gap_s:g} s without a reading; "
                             "the window restarts", device=self.device, n=gaps)
        self.stats.filled += int((filled > 0).sum())

    def interrupt(self, reason: str) -> AlertEvent | None:
        """End an open alert (stale device, shutdown, reload) and restart the window."""
        self.window.restart()
        event = self.decider.interrupt(reason)
        if event is not None:
            self.stats.events += 1
        return event

    def expire(self, now: float) -> AlertEvent | None:
        """End the open alert of a device silent for more than `max_gap_s` (wall-clock `now`)."""
        last = self.window.last_ts
        if self.decider.alert is None or last is None or now - last <= self.window.max_gap_s:
            return None
        return self.interrupt("stale")


def _same_shape(old: ScoringEngine, new: ScoringEngine) -> bool:
    a, b = old.manifest, new.manifest
    return (a.channels == b.channels and a.window.length == b.window.length
            and a.preprocess == b.preprocess)


def _same_steps(old: ScoringEngine, new: ScoringEngine) -> bool:
    """A device's memories, likelihood histories and running range stay valid only for the
    same raw scores from the same scaled rows (`score_state.depends_on`)."""
    return depends_on(old.manifest) == depends_on(new.manifest)


class Gateway:
    """Pipelines for several devices sharing one engine, created on first sight."""

    def __init__(
        self,
        engine: ScoringEngine,
        decision: Decision | None = None,
        counter: BadInputCounter | None = None,
        stride: int = 1,
        options: AlertOptions | None = None,
        max_devices: int = 64,
        clock: Callable[[], float] = time.monotonic,
        saved: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        """`saved`: device -> a `ScoreState.snapshot()` of this bundle, taken back when the
        device is first seen (`edge.state_store`)."""
        self.engine = engine
        self.decision = decision or engine.manifest.decision
        self.counter = counter or BadInputCounter()
        self.stride = stride
        self.options = options
        self.max_devices = max_devices
        self.pipelines: dict[str, DevicePipeline] = {}
        self._clock = clock
        self.saved = dict(saved or {})

    def pipeline(self, device: str) -> DevicePipeline | None:
        found = self.pipelines.get(device)
        if found is None:
            if len(self.pipelines) >= self.max_devices:
                self.counter.add("too_many_devices",
                                 f"already {self.max_devices} devices; ignoring {device!r}",
                                 device=device)
                return None
            found = DevicePipeline(self.engine, device, self.decision, self.counter,
                                   self.stride, self.options, self._clock)
            self._take_back(device, found)
            self.pipelines[device] = found
        return found

    def _take_back(self, device: str, pipeline: DevicePipeline) -> None:
        saved = self.saved.pop(device, None)
        if saved is None:
            return
        try:
            pipeline.state.restore(saved)
            log.info("device %s: scoring state taken back from the last run", device)
        except ValueError as exc:
            log.warning("device %s: %s; it starts afresh", device, exc)

    def serves(self, device: str) -> bool:
        """The device has a pipeline (it was not refused as one too many)."""
        return device in self.pipelines

    def expire_silent(self, silence_s: Callable[[str], float | None]) -> list[AlertEvent]:
        """End the open alerts of devices silent for longer than the bundle's `max_gap_s`:
        `silence_s(device)` is how long the agent has not heard from it (None: unknown),
        handed to the pipeline in the device's own time base (its last timestamp + the
        silence), so a sensor clock that is off neither ends alerts early nor keeps them
        open."""
        ended = []
        for device, pipeline in self.pipelines.items():
            last_ts, silence = pipeline.window.last_ts, silence_s(device)
            if last_ts is not None and silence is not None:
                event = pipeline.expire(last_ts + silence)
                if event is not None:
                    ended.append(event)
        return ended

    def device_counts(self) -> dict[str, tuple[int, int]]:
        """Per device: readings taken and alerts open."""
        return {device: (p.stats.readings, int(p.decider.active))
                for device, p in self.pipelines.items()}

    def states(self) -> dict[str, ScoreState]:
        """Each device's scoring state (for `edge.state_store`)."""
        return {device: p.state for device, p in self.pipelines.items()}

    def process(self, reading: Reading) -> Outcome | None:
        pipeline = self.pipeline(reading.device)
        return None if pipeline is None else pipeline.process(reading)

    @property
    def stats(self) -> dict[str, DeviceStats]:
        return {device: p.stats for device, p in self.pipelines.items()}

    def metrics(self) -> dict[str, Any]:
        """Per-device counters (bad input by kind includes the decode stage's, when the
        sources count into the same `counter`), for the metrics topic."""
        devices = {}
        for device, p in self.pipelines.items():
            snap = p.stats.snapshot()
            snap["bad"] = self.counter.totals(device)
            devices[device] = snap
        return {"devices": devices, "bad_total": self.counter.totals()}

    def swap_engine(self, engine: ScoringEngine, decision: Decision | None = None
                    ) -> list[AlertEvent]:
        """Hot reload. Windows are kept when channels, window length and preprocessing match;
        otherwise each device ends its open alert (`reload`) and warms up again. Memories and
        likelihood histories are kept only when the scorers and model files are the same."""
        keep = _same_shape(self.engine, engine)
        same_steps = _same_steps(self.engine, engine)
        if not same_steps:
            self.saved.clear()  # saved for the old models
        self.engine = engine
        self.decision = decision or engine.manifest.decision
        events: list[AlertEvent] = []
        for device, old in list(self.pipelines.items()):
            if keep:
                old.engine = engine
                old.window.manifest = engine.manifest
                old.scorer_names = [s.name for s in engine.manifest.scorers]
                old.decider.decision = self.decision
                old.decider.resize_smoothing(self.decision.smoothing)
                if not same_steps:
                    fresh_state = engine.new_state()
                    carry_taught(old.state, fresh_state)  # what feedback taught stays
                    old.state = fresh_state
                continue
            ended = old.interrupt("reload")
            if ended is not None:
                events.append(ended)
            fresh = DevicePipeline(engine, device, self.decision, self.counter, self.stride,
                                   self.options, self._clock)
            fresh.stats = old.stats
            self.pipelines[device] = fresh
        return events

    def expire(self, now: float) -> list[AlertEvent]:
        """End alerts of devices silent for longer than `max_gap_s`; call it periodically."""
        return [e for p in self.pipelines.values() if (e := p.expire(now)) is not None]

    def close(self, reason: str = "shutdown") -> list[AlertEvent]:
        """End every open alert (at shutdown, so subscribers see an `end`)."""
        return [e for p in self.pipelines.values() if (e := p.interrupt(reason)) is not None]
