"""Plantower PMS5003 (and PMS7003, same frame) UART frames: decode a byte stream, never raise.

A frame is 32 bytes: ``0x42 0x4D``, a big-endian uint16 frame length that must be 28, thirteen
big-endian uint16 data words (PM1.0/PM2.5/PM10 "CF=1", the same three for atmospheric
environment, six particle counts per 0.1 L, one reserved word) and a uint16 checksum equal to
the sum of the first 30 bytes.

`Pms5003Decoder.feed` accepts any chunking (frames split across reads, one byte at a time) and
resynchronises on the next ``0x42 0x4D`` after garbage. Accounting, so that
``bytes_in == 32 * frames + garbage_bytes + bad_frame_bytes + pending``:

- `garbage_bytes`: bytes skipped while looking for a header;
- `bad_frame_length`: a header whose length word is not 28 (its 2 header bytes are dropped);
- `truncated_frame`: a frame whose checksum fails *and* that is cut short by another header
  inside its 32 bytes (the sensor restarted a frame, or bytes were lost); the bytes up to that
  header are dropped and decoding resumes there;
- `bad_frame_checksum`: a full-length frame whose checksum fails (its 32 bytes are dropped);
- `flush()` at the end of a stream counts an incomplete frame left in the buffer as truncated.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, fields

from edge.readings import BadInputCounter, Reading

HEADER = b"\x42\x4d"
FRAME_SIZE = 32
FRAME_LENGTH = 28  # the length word: 13 data words + checksum
_WORDS = struct.Struct(">HH13HH")


@dataclass(frozen=True)
class Pms5003Frame:
    pm1_cf1: int
    pm25_cf1: int
    pm10_cf1: int
    pm1_atm: int
    pm25_atm: int
    pm10_atm: int
    n0_3: int
    n0_5: int
    n1_0: int
    n2_5: int
    n5_0: int
    n10: int

    def values(self) -> dict[str, float]:
        """Channel name -> value; pm1_0/pm2_5/pm10 are the atmospheric readings (ug/m3),
        n* the particle counts per 0.1 L above that size (um)."""
        return {
            "pm1_0": float(self.pm1_atm),
            "pm2_5": float(self.pm25_atm),
            "pm10": float(self.pm10_atm),
            "pm1_0_cf1": float(self.pm1_cf1),
            "pm2_5_cf1": float(self.pm25_cf1),
            "pm10_cf1": float(self.pm10_cf1),
            "n0_3": float(self.n0_3),
            "n0_5": float(self.n0_5),
            "n1_0": float(self.n1_0),
            "n2_5": float(self.n2_5),
            "n5_0": float(self.n5_0),
            "n10": float(self.n10),
        }

    def to_reading(self, device: str, ts: float, received: float = 0.0) -> Reading:
        values: dict[str, float | None] = dict(self.values())
        return Reading(device, ts, values, received)

    def encode(self) -> bytes:
        """The 32-byte frame the sensor would send (for the simulator and tests)."""
        data = [getattr(self, f.name) for f in fields(self)] + [0]
        body = struct.pack(">HH13H", 0x424D, FRAME_LENGTH, *data)
        return body + struct.pack(">H", sum(body) & 0xFFFF)


PMS5003_CHANNELS: tuple[str, ...] = tuple(Pms5003Frame(*([0] * 12)).values())


class Pms5003Decoder:
    """Incremental frame decoder; bad frames go to `stats` and, if given, to `counter`."""

    def __init__(self, counter: BadInputCounter | None = None, device: str = "pms5003") -> None:
        self.counter = counter
        self.device = device
        self._buffer = bytearray()
        self.stats: dict[str, int] = {
            "bytes_in": 0, "frames": 0, "garbage_bytes": 0, "bad_frame_bytes": 0,
            "bad_frame_checksum": 0, "bad_frame_length": 0, "truncated_frame": 0,
        }

    @property
    def pending(self) -> int:
        """Bytes held back waiting for the rest of a frame."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[Pms5003Frame]:
        """Add bytes from the UART; return every complete, valid frame they finish."""
        self.stats["bytes_in"] += len(data)
        self._buffer += data
        frames: list[Pms5003Frame] = []
        while True:
            start = self._buffer.find(HEADER)
            if start < 0:
                # keep a trailing 0x42: it may be the first half of a header
                keep = 1 if self._buffer.endswith(HEADER[:1]) else 0
                self._drop_garbage(len(self._buffer) - keep)
                return frames
            self._drop_garbage(start)
            if len(self._buffer) < 4:
                return frames
            if (self._buffer[2] << 8 | self._buffer[3]) != FRAME_LENGTH:
                self._bad("bad_frame_length", 2, f"length word {self._buffer[2:4].hex()}")
                continue
            if len(self._buffer) < FRAME_SIZE:
                return frames
            frame = self._parse(bytes(self._buffer[:FRAME_SIZE]))
            if frame is not None:
                del self._buffer[:FRAME_SIZE]
                self.stats["frames"] += 1
                frames.append(frame)
                continue
            # a header may straddle the frame's last byte: a frame cut to 31 bytes
            restart = self._buffer.find(HEADER, 1, FRAME_SIZE + 1)
            if restart < 0 and len(self._buffer) == FRAME_SIZE and self._buffer[-1] == HEADER[0]:
                return frames  # wait for the next byte: it decides whether a frame starts
            if 0 < restart < FRAME_SIZE:
                self._bad("truncated_frame", restart, f"a new frame started at byte {restart}")
            else:
                self._bad("bad_frame_checksum", FRAME_SIZE, "checksum mismatch")

    def flush(self) -> None:
        """End of stream: an incomplete frame left in the buffer is counted as truncated."""
        if self._buffer.startswith(HEADER):
            self._bad("truncated_frame", len(self._buffer), "the stream ended inside a frame")
        else:
            self._drop_garbage(len(self._buffer))

    @staticmethod
    def _parse(raw: bytes) -> Pms5003Frame | None:
        words = _WORDS.unpack(raw)
        if sum(raw[:30]) & 0xFFFF != words[-1]:
            return None
        return Pms5003Frame(*words[2:14])

    def _drop_garbage(self, count: int) -> None:
        if count <= 0:
            return
        del self._buffer[:count]
        self.stats["garbage_bytes"] += count
        if self.counter is not None:
            self.counter.add("garbage_bytes", f"{count} bytes outside frames",
                             device=self.device, n=count)

    def _bad(self, kind: str, drop: int, detail: str) -> None:
        del self._buffer[:drop]
        self.stats[kind] += 1
        self.stats["bad_frame_bytes"] += drop
        if self.counter is not None:
            self.counter.add(kind, detail, device=self.device)
