"""Per-device windows: forward fill, scale and keep the last `window.length` rows in a ring.

Policy, applied to readings in arrival order (the same code for one live reading and for a
replay batch of thousands):

- a non-finite timestamp -> dropped, `bad_timestamp`.
- no finite value for any channel -> dropped, `missing_channels` (as `decode_payload` rejects
  such a payload; here it catches readings built directly, e.g. an empty CSV row).
- ``ts == last ts`` -> dropped, `duplicate_ts` (a retransmission; the first copy was used).
- ``ts < last ts`` -> dropped, `out_of_order`. A window is a time-ordered sequence and the
  models were trained on ordered windows; re-sorting would need a reorder buffer (latency on
  every reading) and a window that was already scored cannot be taken back, so a late
  reading is counted and dropped instead.
- ``ts - last ts > preprocess.max_gap_s`` -> the window restarts: the reading is kept as the
  first row of a new window and the device warms up again (`gap`). Forward fill keeps the
  last known values across the gap (they are still the best guess for a silent channel).
- a missing or non-finite value is forward-filled from the channel's last valid raw value (the
  manifest's `fill`, the training median, before the first one); counted in `filled`.
- once `window.length` rows are in, every `stride`-th full window is scored (the first one
  always); the others are `stride_skip`.

The ring is a preallocated ``(2 * length, C)`` array where each row is written twice, so the
last `length` rows are always one contiguous slice: no copy per reading.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from edge.bundle import Manifest
from edge.preprocess import ForwardFill, forward_fill, reading_to_raw, scale_rows
from edge.readings import Reading

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.intp]
BoolArray = npt.NDArray[np.bool_]

WINDOW = "window"
WARMING_UP = "warming_up"
STRIDE_SKIP = "stride_skip"
DUPLICATE = "duplicate_ts"
OUT_OF_ORDER = "out_of_order"
BAD_TIMESTAMP = "bad_timestamp"
NO_VALUES = "missing_channels"
ACCEPTED = frozenset({WINDOW, WARMING_UP, STRIDE_SKIP})
DROPPED = frozenset({DUPLICATE, OUT_OF_ORDER, BAD_TIMESTAMP, NO_VALUES})


@dataclass(frozen=True)
class PushResult:
    """What happened to one reading; `window` is (length, C) scaled rows when `ready`."""

    status: str
    restarted: bool
    filled: int
    window: FloatArray | None

    @property
    def ready(self) -> bool:
        return self.status == WINDOW


@dataclass(frozen=True)
class WindowBatch:
    """The outcome of pushing n readings: per-row status and the k windows to score."""

    status: list[str]  # per row, one of ACCEPTED | DROPPED
    restarted: npt.NDArray[np.bool_]  # per row: a gap restarted the window at this row
    filled: npt.NDArray[np.intp]  # per row: channels forward-filled
    raw: FloatArray  # (n, C) filled raw rows in sensor units (NaN for dropped rows)
    window_rows: IntArray  # (k,) row index of each window
    windows: FloatArray  # (k, length, C) scaled, unclipped
    missing: BoolArray  # (k, length, C) the window's values that were filled, not read

    def __len__(self) -> int:
        return len(self.status)


class DeviceWindow:
    """The window state of one device."""

    def __init__(self, manifest: Manifest, stride: int = 1) -> None:
        if stride < 1:
            raise ValueError(f"stride must be >= 1, got {stride}")
        self.manifest = manifest
        self.length = manifest.window.length
        self.channels = len(manifest.channels)
        self.stride = stride
        self.max_gap_s = manifest.preprocess.max_gap_s
        self.fill = ForwardFill(manifest.preprocess)
        self._ring = np.zeros((2 * self.length, self.channels))
        self._missing = np.zeros((2 * self.length, self.channels), dtype=bool)
        self._head = 0  # next slot to write
        self.count = 0  # rows since the last restart
        self.last_ts: float | None = None

    def restart(self) -> None:
        """Forget the rows (not the forward-fill values): the next window starts empty."""
        self.count = 0

    def push(self, reading: Reading) -> PushResult:
        raw = reading_to_raw(reading.values, self.manifest)[None, :]
        batch = self.push_rows(np.array([reading.ts], dtype=np.float64), raw)
        window = batch.windows[0] if len(batch.window_rows) else None
        return PushResult(batch.status[0], bool(batch.restarted[0]), int(batch.filled[0]), window)

    def _admit(self, ts: FloatArray, raw: FloatArray) -> tuple[list[str], npt.NDArray[np.bool_]]:
        """The timestamp policy, row by row; updates `last_ts`."""
        status: list[str] = []
        restarted = np.zeros(len(ts), dtype=bool)
        last = self.last_ts
        has_data: list[bool] = np.asarray(np.isfinite(raw).any(axis=1)).tolist()
        for i, t in enumerate(ts.tolist()):
            if not np.isfinite(t):
                status.append(BAD_TIMESTAMP)
            elif not has_data[i]:
                status.append(NO_VALUES)
            elif last is not None and t == last:
                status.append(DUPLICATE)
            elif last is not None and t < last:
                status.append(OUT_OF_ORDER)
            else:
                restarted[i] = last is not None and t - last > self.max_gap_s
                status.append(WARMING_UP)
                last = t
        self.last_ts = last
        return status, restarted

    def push_rows(self, ts: FloatArray, raw: FloatArray) -> WindowBatch:
        """Push n readings as arrays: `ts` (n,) epoch seconds, `raw` (n, C) with NaN missing."""
        status, restarted = self._admit(ts, raw)
        keep = np.flatnonzero([s == WARMING_UP for s in status])
        filled_raw = np.full(raw.shape, np.nan)
        filled = np.zeros(len(ts), dtype=np.intp)
        if len(keep) == 0:
            no_windows = np.zeros((0, self.length, self.channels))
            return WindowBatch(status, restarted, filled, filled_raw,
                               np.zeros(0, dtype=np.intp), no_windows, no_windows.astype(bool))
        rows = raw[keep]
        missing = ~np.isfinite(rows)
        filled[keep] = missing.sum(axis=1)
        rows = self._forward_fill(rows)
        filled_raw[keep] = rows
        scaled = scale_rows(rows, self.manifest.preprocess)
        window_rows, windows, window_missing = self._windows(
            keep, restarted[keep], scaled, missing, status)
        return WindowBatch(status, restarted, filled, filled_raw, window_rows, windows,
                           window_missing)

    def _forward_fill(self, rows: FloatArray) -> FloatArray:
        """ForwardFill over a block at once (same result as calling it row by row)."""
        out = forward_fill(rows, self.fill.last)
        if len(out):
            self.fill.last = out[-1].copy()
        return out

    def _windows(
        self, keep: IntArray, restarts: npt.NDArray[np.bool_], scaled: FloatArray,
        missing: BoolArray, status: list[str],
    ) -> tuple[IntArray, FloatArray, BoolArray]:
        """Feed accepted rows segment by segment (a restart opens a segment)."""
        n_len = self.length
        bounds = [0, *np.flatnonzero(restarts).tolist(), len(keep)]
        row_parts: list[IntArray] = []
        window_parts: list[FloatArray] = []
        missing_parts: list[BoolArray] = []
        for lo, hi in itertools.pairwise(bounds):
            if hi <= lo:
                continue
            if restarts[lo]:
                self.restart()
            segment, segment_missing = scaled[lo:hi], missing[lo:hi]
            history = min(self.count, n_len - 1)
            held = slice(self._head + n_len - history, self._head + n_len)
            stacked = np.vstack([self._ring[held], segment]) if history else segment
            stacked_missing = (np.vstack([self._missing[held], segment_missing]) if history
                               else segment_missing)
            # position p in `segment` ends a full window when count + p + 1 >= length
            counts = self.count + np.arange(1, hi - lo + 1)
            full = counts >= n_len
            scored = full & ((counts - n_len) % self.stride == 0)
            for p in np.flatnonzero(full & ~scored).tolist():
                status[keep[lo + p]] = STRIDE_SKIP
            picks = np.flatnonzero(scored)
            if len(picks):
                view = np.lib.stride_tricks.sliding_window_view(stacked, n_len, axis=0)
                # view[s] is the window ending at stacked row s + length - 1, shape (C, length)
                ends = picks + history
                window_parts.append(np.ascontiguousarray(
                    view[ends - n_len + 1].transpose(0, 2, 1)))
                missing_view = np.lib.stride_tricks.sliding_window_view(
                    stacked_missing, n_len, axis=0)
                missing_parts.append(np.ascontiguousarray(
                    missing_view[ends - n_len + 1].transpose(0, 2, 1)))
                row_parts.append(keep[lo + picks])
                for p in picks.tolist():
                    status[keep[lo + p]] = WINDOW
            self._write(segment, segment_missing)
            self.count += hi - lo
        if not row_parts:
            none = np.zeros((0, n_len, self.channels))
            return np.zeros(0, dtype=np.intp), none, none.astype(bool)
        return (np.concatenate(row_parts), np.concatenate(window_parts),
                np.concatenate(missing_parts))

    def _write(self, segment: FloatArray, missing: BoolArray) -> None:
        rows, flags = segment[-self.length :], missing[-self.length :]
        slots = (self._head + np.arange(len(rows))) % self.length
        self._ring[slots] = rows
        self._ring[slots + self.length] = rows
        self._missing[slots] = flags
        self._missing[slots + self.length] = flags
        self._head = int((self._head + len(rows)) % self.length)

    def last_rows(self) -> FloatArray:
        """The last `min(count, length)` scaled rows, oldest first (a view)."""
        history = min(self.count, self.length)
        return self._ring[self._head + self.length - history : self._head + self.length]
