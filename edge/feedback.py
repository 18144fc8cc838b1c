"""What a `feedback` command needs to teach a device that an alert was normal: the vectors
each of its memories was given for the alert's windows, kept for a while after the alert.

A device's memories (`edge.memory.LagMemory`: the `memory.<scorer>` parts of its scoring
state and the memory inside each `long_shape.<scorer>` part; `edge.memory.TaughtMemory`: the
`taught.<scorer>` part of a window-features distance, which holds only its last windows) let
their vectors go after `size` (or RECENT) windows. Teaching an alert as normal (`teach`)
needs the vectors of its windows, possibly hours after it ended, so the agent copies them as
the alert goes:

- before any alert, the last `lead` windows' vectors of each memory (the windows that pushed
  the smoothed score over the threshold come before the alert's start);
- from the start to the end of an alert, every window's vectors, at most `max_windows` per
  memory (a longer alert keeps every 2nd, then every 4th ... window: evenly spread);
- after the end, the recording is kept for `keep_s` seconds, at most the last `keep_alerts`
  per device and `max_bytes` for the whole agent (the oldest go first). It lives in memory
  only: an alert from before the agent's last restart cannot be taught (its label is still
  recorded: `edge.capture`, and the capture export keeps its rows as training data).

A recording labelled normal while its alert is still open teaches each new window as it
comes, until the alert ends. Not thread-safe: the agent's main loop owns it.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from edge.decide import AlertEvent
from edge.long_shape import LongShape
from edge.memory import LagMemory, TaughtWindows
from edge.score_state import ScoreState

FloatArray = npt.NDArray[np.float64]
Memory = LagMemory | TaughtWindows


def memories(state: ScoreState) -> dict[str, Memory]:
    """Every memory of a device's scoring state that can be taught, by its part's snapshot
    prefix."""
    found: dict[str, Memory] = {}
    for parts in state.parts.values():
        for key, part in parts.items():
            if isinstance(part, LagMemory | TaughtWindows):
                found[key] = part
            elif isinstance(part, LongShape):
                found[key] = part.memory
    return found


@dataclass
class Recording:
    """One alert's memory vectors (and what the feedback record needs of it)."""

    alert_id: str
    device: str
    ts_start: float
    ts_end: float | None = None
    channels: list[str] = field(default_factory=list)  # top channels of its events, in order
    reason: str = ""
    vectors: dict[str, list[FloatArray]] = field(default_factory=dict)  # memory -> (features,)
    stride: int = 1  # every stride-th window is kept (doubles when max_windows is reached)
    windows: int = 0  # windows seen since the start
    label: str = ""  # "normal" once taught: new windows are taught as they come
    ended_at: float | None = None  # monotonic time of the end

    def add_channels(self, event: AlertEvent) -> None:
        for contribution in event.channels:
            if contribution.name not in self.channels:
                self.channels.append(contribution.name)

    def arrays(self) -> dict[str, FloatArray]:
        return {key: np.array(rows) for key, rows in self.vectors.items() if rows}

    @property
    def nbytes(self) -> int:
        return sum(v.nbytes for rows in self.vectors.values() for v in rows)


@dataclass(frozen=True)
class Retention:
    lead: int = 32  # windows before the start kept with the alert
    max_windows: int = 1024  # windows per memory and alert
    keep_alerts: int = 8  # ended alerts kept per device
    keep_s: float = 7 * 86400.0  # seconds an ended alert is kept
    max_bytes: int = 64 << 20  # all recordings of the agent


class DeviceTap:
    """The vectors of one device's memories, window by window (live: one per reading)."""

    def __init__(self, device: str, retention: Retention) -> None:
        self.device = device
        self.retention = retention
        self._seen: dict[str, tuple[int, int]] = {}  # memory -> (id(memory), its count)
        self._lead: dict[str, deque[FloatArray]] = {}
        self.open: Recording | None = None

    def collect(self, state: ScoreState) -> dict[str, FloatArray]:
        """Take the vectors each memory was given since the last call; into the open
        recording, else the lead. Returns them (memory -> (n, features))."""
        new: dict[str, FloatArray] = {}
        for key, memory in memories(state).items():
            before = self._seen.get(key)
            count = memory.count
            if before is not None and before[0] == id(memory) and count > before[1]:
                new[key] = memory.latest(count - before[1])
            self._seen[key] = (id(memory), count)
        recording = self.open
        if recording is None:
            for key, rows in new.items():
                lead = self._lead.setdefault(key, deque(maxlen=self.retention.lead))
                lead.extend(rows)
        elif new:
            self._append(recording, new)
        return new

    def _append(self, recording: Recording, new: dict[str, FloatArray]) -> None:
        n = max(len(rows) for rows in new.values())
        for i in range(n):
            if recording.windows % recording.stride == 0:
                for key, fresh in new.items():
                    if i < len(fresh):
                        recording.vectors.setdefault(key, []).append(np.array(fresh[i]))
            recording.windows += 1
        if max((len(v) for v in recording.vectors.values()), default=0) > (
                self.retention.max_windows):
            for key, kept in recording.vectors.items():
                recording.vectors[key] = kept[::2]
            recording.stride *= 2

    def start(self, event: AlertEvent) -> Recording:
        recording = Recording(event.id, self.device, event.ts_start)
        recording.vectors = {key: list(rows) for key, rows in self._lead.items()}
        for rows in self._lead.values():
            rows.clear()
        recording.add_channels(event)
        self.open = recording
        return recording


class AlertKeeper:
    """The recordings of every device of an agent: open ones, then the kept ended ones."""

    def __init__(self, retention: Retention | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.retention = retention or Retention()
        self._clock = clock
        self.taps: dict[str, DeviceTap] = {}
        self.ended: OrderedDict[str, Recording] = OrderedDict()  # oldest end first

    def tap(self, device: str) -> DeviceTap:
        found = self.taps.get(device)
        if found is None:
            found = self.taps[device] = DeviceTap(device, self.retention)
        return found

    def collect(self, device: str, state: ScoreState) -> dict[str, FloatArray]:
        """After a reading of `device` was scored: its memories' new vectors (and, for an
        alert labelled normal while open, teach them at once)."""
        tap = self.tap(device)
        new = tap.collect(state)
        if tap.open is not None and tap.open.label == "normal" and new:
            teach(new, state)
        return new

    def events(self, events: Iterable[AlertEvent]) -> None:
        """Every alert event of the agent, in order (start opens a recording, end closes it)."""
        for event in events:
            tap = self.tap(event.device)
            recording = tap.open if tap.open is not None and tap.open.alert_id == event.id \
                else None
            if event.state == "start" and recording is None:
                recording = tap.start(event)
            elif recording is not None:
                recording.add_channels(event)
            if event.state == "end" and recording is not None:
                recording.ts_end, recording.reason = event.ts, event.reason
                recording.ended_at = self._clock()
                tap.open = None
                self.ended[recording.alert_id] = recording
        self.expire()

    def find(self, alert_id: str) -> Recording | None:
        self.expire()
        found = self.ended.get(alert_id)
        if found is not None:
            return found
        for tap in self.taps.values():
            if tap.open is not None and tap.open.alert_id == alert_id:
                return tap.open
        return None

    def expire(self) -> None:
        """Drop what is beyond the retention (age, count per device, bytes)."""
        r, now = self.retention, self._clock()
        per_device: dict[str, int] = {}
        for alert_id, recording in reversed(list(self.ended.items())):  # newest first
            per_device[recording.device] = kept = per_device.get(recording.device, 0) + 1
            ended = recording.ended_at if recording.ended_at is not None else now
            if kept > r.keep_alerts or now - ended > r.keep_s:
                del self.ended[alert_id]
        total = self.nbytes
        while total > r.max_bytes and self.ended:
            _, oldest = self.ended.popitem(last=False)
            total -= oldest.nbytes

    @property
    def nbytes(self) -> int:
        return sum(r.nbytes for r in self.ended.values()) + sum(
            t.open.nbytes for t in self.taps.values() if t.open is not None)


def fits(vectors: dict[str, FloatArray], state: ScoreState) -> dict[str, Memory]:
    """The device's memories that can take `vectors` (same part, same number of features)."""
    held = memories(state)
    out: dict[str, Memory] = {}
    for key, rows in vectors.items():
        memory = held.get(key)
        if memory is None or rows.ndim != 2 or not len(rows):
            continue
        width = memory.taught.shape[1] if memory.taught.size else None
        latest = memory.latest(1)
        width = latest.shape[1] if latest.size else width
        if width is None or width == rows.shape[1]:
            out[key] = memory
    return out


def teach(vectors: dict[str, FloatArray], state: ScoreState) -> dict[str, int]:
    """Teach each fitting memory its vectors; memory -> vectors taught."""
    taught: dict[str, int] = {}
    for key, memory in fits(vectors, state).items():
        memory.teach(vectors[key])
        taught[key] = len(vectors[key])
    return taught


def carry_taught(old: ScoreState, new: ScoreState) -> int:
    """A reload to other models of the same channels, window and preprocessing: the taught
    vectors of each memory go to the new state's memory of the same part and width (the
    vectors are rows of scaled readings, still meaningful). Returns the vectors carried."""
    carried = 0
    target = memories(new)
    for key, memory in memories(old).items():
        found = target.get(key)
        if found is None or not memory.taught.size:
            continue
        try:
            found.teach(memory.taught)
        except ValueError:
            continue
        carried += len(memory.taught)
    return carried
