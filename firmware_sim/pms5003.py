"""Plantower PMS5003 UART frames (encoder only; the decoder lives in `edge`).

From the PMS5003 datasheet (Plantower, "Digital universal particle
concentration sensor PMS5003 series data manual", V2.3), active mode, 9600 8N1:

====  ===========================================================
byte  content (all words big-endian uint16)
====  ===========================================================
0-1   start characters 0x42 0x4D ("BM")
2-3   frame length = 2 x 13 + 2 = 28 (data words + checksum)
4-9   PM1.0, PM2.5, PM10 in ug/m3, CF=1 ("standard particle")
10-15 PM1.0, PM2.5, PM10 in ug/m3 under atmospheric environment
16-27 particles per 0.1 L beyond 0.3, 0.5, 1.0, 2.5, 5.0, 10 um
28-29 reserved (high byte version, low byte error code; we send 0x97 0x00)
30-31 checksum = sum of bytes 0..29 (low 16 bits)
====  ===========================================================

Derived from one PM2.5 reading (the airpod's Plantower channel, treated as the
"atmospheric" value): CF=1 equals atmospheric up to ~20 ug/m3 and is ~1.5x
above (as Plantower units report; cf. PurpleAir's cf_1 vs atm fields); PM1.0
~0.7 x PM2.5 and PM10 ~1.15 x PM2.5 for urban fine aerosol; counts beyond
0.3 um ~150 per ug/m3 per 0.1 L, falling by size bin, with Poisson noise.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

import numpy as np

FRAME_SIZE = 32
HEADER = b"\x42\x4d"
FRAME_LENGTH = 28
RESERVED = 0x9700
#: successive ratios of the count bins (>0.5/>0.3, >1.0/>0.5, ...)
BIN_RATIOS = (0.29, 0.18, 0.12, 0.3, 0.35)


def checksum(data: bytes) -> int:
    """Sum of the bytes, low 16 bits (over bytes 0..29 of a frame)."""
    return sum(data) & 0xFFFF


def encode_frame(words: Sequence[int]) -> bytes:
    """A 32-byte frame from the 13 data words (each 0..65535).

    >>> encode_frame([0] * 12 + [0x9700]).hex()
    '424d001c00000000000000000000000000000000000000000000000097000142'
    """
    if len(words) != 13:
        raise ValueError(f"a PMS5003 frame has 13 data words, got {len(words)}")
    if any(not 0 <= w <= 0xFFFF for w in words):
        raise ValueError("PMS5003 data words must be in 0..65535")
    body = HEADER + struct.pack(">H13H", FRAME_LENGTH, *words)
    return body + struct.pack(">H", checksum(body))


def words_from_pm25(pm25_atm: float, rng: np.random.Generator) -> tuple[int, ...]:
    """The 13 data words a PMS5003 would report for an atmospheric PM2.5 reading."""
    atm25 = max(0.0, float(pm25_atm)) if pm25_atm == pm25_atm else 0.0
    cf25 = atm25 if atm25 < 20.0 else 20.0 + 1.5 * (atm25 - 20.0)
    mass = [0.7 * cf25, cf25, 1.15 * cf25, 0.7 * atm25, atm25, 1.15 * atm25]
    counts = [150.0 * cf25]
    for ratio in BIN_RATIOS:
        counts.append(counts[-1] * ratio)
    noisy = rng.poisson(np.array(counts) + 1e-9)
    words = [round(m) for m in mass] + [int(c) for c in noisy] + [RESERVED]
    return tuple(min(max(int(w), 0), 0xFFFF) for w in words)


def corrupt(frame: bytes, rng: np.random.Generator) -> bytes:
    """Flip 1-2 bytes after the header so the checksum (or length) no longer matches."""
    data = bytearray(frame)
    for pos in rng.choice(np.arange(2, len(data)), size=int(rng.integers(1, 3)), replace=False):
        data[int(pos)] ^= int(rng.integers(1, 256))
    body, (check,) = bytes(data[:-2]), struct.unpack(">H", bytes(data[-2:]))
    if checksum(body) == check and data[2:4] == frame[2:4]:  # flipped into a valid frame
        data[5] ^= 0x01
    return bytes(data)


def truncate(frame: bytes, rng: np.random.Generator) -> bytes:
    """The first 4..31 bytes of the frame (the rest never arrives)."""
    return frame[: int(rng.integers(4, FRAME_SIZE))]
