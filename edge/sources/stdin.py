"""JSON lines on standard input, one reading per line (the format edge.readings decodes).

A line may name its device (`"device": "pump-3"`); otherwise the source's `device` is used.
Lines longer than the payload limit are cut at the limit (the decoder then rejects them as
`too_large`) and the rest of the line is skipped. End of input puts `SourceDone`.
"""

from __future__ import annotations

import json
import queue
import sys
import threading
import time
from typing import BinaryIO

from edge.sources import ItemQueue, Payload, SourceDone


def line_device(line: bytes, default: str) -> str:
    """The line's own `device` field when it is a usable topic level, else `default`."""
    if b'"device"' not in line:
        return default
    try:
        data = json.loads(line)
    except ValueError:
        return default
    device = data.get("device") if isinstance(data, dict) else None
    if isinstance(device, str) and device and not any(c in device for c in "/+#\x00"):
        return device[:128]
    return default


class StdinSource:
    def __init__(self, device: str, items: ItemQueue, max_bytes: int,
                 stream: BinaryIO | None = None) -> None:
        self.name = "stdin"
        self.device = device
        self.items = items
        self.max_bytes = max_bytes
        self.stream = stream if stream is not None else sys.stdin.buffer
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="source-stdin", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()  # a blocked read cannot be interrupted; the thread is a daemon

    def _put(self, item: Payload | SourceDone) -> None:
        while not self._stop.is_set():
            try:
                self.items.put(item, timeout=0.5)  # back-pressure: stdin can wait
                return
            except queue.Full:
                continue

    def _run(self) -> None:
        limit = self.max_bytes + 1
        while not self._stop.is_set():
            line = self.stream.readline(limit)
            if not line:
                break
            if len(line) == limit and not line.endswith(b"\n"):
                rest = line
                while rest and not rest.endswith(b"\n"):
                    rest = self.stream.readline(1 << 16)
            line = line.strip()
            if line:
                self._put(Payload(line_device(line, self.device), line, time.monotonic()))
        self._put(SourceDone(self.name))
