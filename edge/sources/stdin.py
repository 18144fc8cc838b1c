"""JSON lines on standard input, one reading per line (the format edge.readings decodes).

A line may name its device (`"device": "pump-3"`); otherwise the source's `device` is used.
A line longer than the payload limit is passed on cut at the limit (the decoder rejects it as
`too_large`) and the rest of it is skipped. End of input puts `SourceDone`.

The thread runs under the agent's `Supervisor` (edge.sources.supervisor): an unforeseen
exception while handling a line skips that line only; the lines after it and everything read
but not yet handled go on after the restart.

The descriptor is read with `select` + `os.read`, not a blocking `readline`, so `stop()` ends
the thread promptly and no thread is left holding the stdin buffer at interpreter exit.
"""

from __future__ import annotations

import os
import queue
import select
import sys
import threading
import time
from collections import deque

from edge.readings import BadReading, load_json
from edge.sources import ItemQueue, Payload, SourceDone
from edge.sources.supervisor import Supervisor


def line_device(line: bytes, default: str) -> str:
    """The line's own `device` field when it is a usable topic level, else `default`.

    Never raises: a line that is not JSON, or too deep or too keyed to parse safely
    (`edge.readings.load_json`), keeps `default`, and the decoder counts it later.
    """
    if b'"device"' not in line:
        return default
    try:
        data = load_json(line)
    except BadReading:
        return default
    device = data.get("device") if isinstance(data, dict) else None
    if isinstance(device, str) and device and not any(c in device for c in "/+#\x00"):
        return device[:128]
    return default


class LineSplitter:
    """Bytes in, complete lines out; a line over `max_bytes` comes out cut to `max_bytes + 1`."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._buffer = bytearray()
        self._skipping = False  # inside the rest of an overlong line

    def feed(self, data: bytes) -> list[bytes]:
        self._buffer += data
        lines: list[bytes] = []
        while True:
            end = self._buffer.find(b"\n")
            if end < 0:
                if len(self._buffer) > self.max_bytes:
                    if not self._skipping:
                        lines.append(bytes(self._buffer[: self.max_bytes + 1]))
                    self._skipping = True
                    self._buffer.clear()
                return [line for line in lines if line.strip()]
            line = bytes(self._buffer[:end])
            del self._buffer[: end + 1]
            if self._skipping:
                self._skipping = False
                continue
            lines.append(line[: self.max_bytes + 1])

    def flush(self) -> list[bytes]:
        rest, self._buffer = bytes(self._buffer), bytearray()
        return [rest] if rest.strip() and not self._skipping else []


class StdinSource:
    """Runs under `supervisor` (its own one when not given): lines read but not yet queued
    survive a failure, so a restart goes on with the line after the one that failed and
    reads nothing twice."""

    def __init__(self, device: str, items: ItemQueue, max_bytes: int,
                 fd: int | None = None, supervisor: Supervisor | None = None) -> None:
        self.name = "stdin"
        self.device = device
        self.items = items
        self.fd = fd  # standard input, looked up in start()
        self.lines = LineSplitter(max_bytes)
        self._pending: deque[bytes] = deque()  # split, not yet queued
        self.runner = (supervisor or Supervisor()).thread(self.name, self._work, "source-stdin")

    def start(self) -> None:
        if self.fd is None:
            self.fd = sys.stdin.fileno()
        self.runner.start()

    def stop(self) -> None:
        self.runner.stop(timeout=2)

    def _put(self, item: Payload | SourceDone, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.items.put(item, timeout=0.5)  # back-pressure: stdin can wait
                return
            except queue.Full:
                continue

    def _drain(self, stop: threading.Event) -> None:
        while self._pending and not stop.is_set():
            line = self._pending.popleft().strip()  # taken first: a line that fails is skipped
            self._put(Payload(line_device(line, self.device), line, time.monotonic()), stop)

    def _work(self, stop: threading.Event) -> None:
        fd = self.fd
        assert fd is not None, "start() sets the descriptor"
        self._drain(stop)  # what a failed run left
        while not stop.is_set():
            try:
                ready, _, _ = select.select([fd], [], [], 0.25)
                data = os.read(fd, 1 << 16) if ready else None
            except (OSError, ValueError):
                data = b""  # closed or broken: the same as the end of input
            if data is None:
                continue
            if not data:
                break
            self._pending.extend(self.lines.feed(data))
            self._drain(stop)
        else:
            return
        self._pending.extend(self.lines.flush())
        self._drain(stop)
        self._put(SourceDone(self.name), stop)
