"""`edge-sim uart`: a pseudo-terminal that speaks PMS5003 frames, for agents without hardware.

The simulator opens a pty pair (`os.openpty`), puts it in raw mode, and makes
`--link PATH` a symlink to the slave (e.g. /dev/pts/7), so the agent opens
PATH with pyserial exactly as it would /dev/ttyUSB0. Frames come at `rate`
per second from the airpod's PM model (1 s of simulated time per frame).
Every `corrupt_every`-th frame has 1-2 bytes flipped, every
`truncate_every`-th frame is cut short (truncation wins when both fall on
the same frame). A truth line per frame (index, kind, hex bytes, PM2.5) can
go to a JSONL file.

As on a real port, opening the port flushes what was sent before; if nobody
reads and the pty buffer fills up, frames are dropped (counted and reported).
"""

from __future__ import annotations

import array
import contextlib
import fcntl
import json
import os
import select
import sys
import termios
import threading
import time
import tty
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TextIO

import numpy as np

from firmware_sim.engine import stream_readings
from firmware_sim.pms5003 import corrupt, encode_frame, truncate, words_from_pm25

PM_CHANNEL = "pm25_pms_1"


@dataclass(frozen=True)
class Frame:
    index: int
    ts: float
    kind: str  # "ok", "corrupt_bytes" or "truncated_frame"
    data: bytes
    pm25_atm: float

    def truth(self) -> dict[str, object]:
        return {
            "frame": self.index,
            "ts": self.ts,
            "kind": self.kind,
            "bytes": len(self.data),
            "hex": self.data.hex(),
            "pm25_atm": self.pm25_atm,
        }


def iter_frames(
    seed: int = 0,
    corrupt_every: int = 0,
    truncate_every: int = 0,
    start: datetime | str | float | None = None,
) -> Iterator[Frame]:
    """PMS5003 frames, one per simulated second, with the scripted corruptions (forever)."""
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(5003,)))
    readings = stream_readings("airpod", seed, "none", start, 1.0)
    for i, reading in enumerate(readings):
        pm = reading.values[PM_CHANNEL]
        pm25 = float("nan") if pm is None else pm
        frame = encode_frame(words_from_pm25(pm25, rng))
        kind = "ok"
        if truncate_every and (i + 1) % truncate_every == 0:
            frame, kind = truncate(frame, rng), "truncated_frame"
        elif corrupt_every and (i + 1) % corrupt_every == 0:
            frame, kind = corrupt(frame, rng), "corrupt_bytes"
        yield Frame(i, reading.ts, kind, frame, pm25)


class PtyLink:
    """A raw-mode pty whose slave is reachable through the symlink `link`."""

    def __init__(self, link: str | Path) -> None:
        self.link = Path(link)
        self.master = self.slave = -1
        self.slave_name = ""

    def __enter__(self) -> PtyLink:
        if self.link.exists() and not self.link.is_symlink():
            raise FileExistsError(
                f"{self.link} exists and is not a symlink; refusing to replace it"
            )
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        tty.setraw(self.master)
        self.slave_name = os.ttyname(self.slave)
        os.set_blocking(self.master, False)
        if self.link.is_symlink():
            self.link.unlink()
        self.link.symlink_to(self.slave_name)
        return self

    def write(self, data: bytes, timeout: float) -> int:
        """Write what fits within `timeout` seconds; return the bytes written."""
        done, deadline = 0, time.monotonic() + timeout
        while done < len(data):
            with contextlib.suppress(BlockingIOError):
                done += os.write(self.master, data[done:])
                continue
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([], [self.master], [], left)[1]:
                break
        return done

    def pending(self) -> int:
        """Bytes sent but not yet read by the other side."""
        buf = array.array("i", [0])
        fcntl.ioctl(self.slave, termios.FIONREAD, buf)
        return int(buf[0])

    def drain_input(self) -> None:
        """Discard what the reader wrote to us (e.g. mode commands)."""
        with contextlib.suppress(BlockingIOError, OSError):
            while os.read(self.master, 4096):
                pass

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(OSError):
            if self.link.is_symlink() and os.readlink(self.link) == self.slave_name:
                self.link.unlink()
        for fd in (self.master, self.slave):
            with contextlib.suppress(OSError):
                os.close(fd)


def run_uart(
    link: str | Path,
    seed: int = 0,
    rate: float = 1.0,
    corrupt_every: int = 0,
    truncate_every: int = 0,
    count: int | None = None,
    truth: str | Path | None = None,
    start: datetime | str | float | None = None,
    stop: threading.Event | None = None,
    log: TextIO = sys.stderr,
) -> int:
    """Serve frames on a pty linked at `link` until `count` frames or `stop`; return frames sent."""
    if rate <= 0:
        raise ValueError("--rate must be > 0 frames per second")
    stop = stop or threading.Event()
    sent = dropped = 0
    truth_fh = open(truth, "w", encoding="utf-8") if truth else None  # noqa: SIM115
    try:
        with PtyLink(link) as pty:
            print(
                f"edge-sim uart: {link} -> {pty.slave_name} ({rate:g} frames/s)",
                file=log,
                flush=True,
            )
            t0 = time.monotonic()
            for frame in iter_frames(seed, corrupt_every, truncate_every, start):
                if stop.is_set() or (count is not None and frame.index >= count):
                    break
                wait = t0 + frame.index / rate - time.monotonic()
                if wait > 0 and stop.wait(wait):
                    break
                pty.drain_input()
                written = pty.write(frame.data, timeout=max(0.05, 1.0 / rate))
                if written < len(frame.data):
                    dropped += 1
                sent += 1
                if truth_fh:
                    truth_fh.write(json.dumps({**frame.truth(), "written": written}) + "\n")
                    truth_fh.flush()
            # let a reader take the last frames before the pty goes away
            deadline = time.monotonic() + 2.0
            while pty.pending() and time.monotonic() < deadline and not stop.wait(0.02):
                pass
    finally:
        if truth_fh:
            truth_fh.close()
    if dropped:
        print(f"edge-sim uart: {dropped} frame(s) not fully written (nobody reading?)", file=log)
    print(f"edge-sim uart: sent {sent} frames", file=log, flush=True)
    return sent
