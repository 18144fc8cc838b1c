"""PMS5003 frames: the encoder, and `edge-sim uart` over a real pty read with pyserial."""

from __future__ import annotations

import itertools
import json
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import serial

from firmware_sim.pms5003 import checksum, encode_frame, words_from_pm25
from firmware_sim.uart import iter_frames


def frame_ok(frame: bytes) -> bool:
    """Independent check of the datasheet layout: header, length 28, checksum."""
    if len(frame) != 32 or frame[:2] != b"BM":
        return False
    (length,) = struct.unpack(">H", frame[2:4])
    return length == 28 and struct.unpack(">H", frame[30:])[0] == sum(frame[:30]) & 0xFFFF


def test_encode_frame_layout() -> None:
    words = [*range(1, 13), 0x9700]
    frame = encode_frame(words)
    assert len(frame) == 32 and frame[:4] == b"\x42\x4d\x00\x1c" and frame_ok(frame)
    assert list(struct.unpack(">13H", frame[4:30])) == words
    assert checksum(frame[:30]) == struct.unpack(">H", frame[30:])[0]
    with pytest.raises(ValueError):
        encode_frame([0] * 12)
    with pytest.raises(ValueError):
        encode_frame([70000] + [0] * 12)


def test_words_follow_the_pm_reading() -> None:
    rng = np.random.default_rng(0)
    low, high = words_from_pm25(10.0, rng), words_from_pm25(60.0, rng)
    assert low[1] == low[4] == 10  # CF=1 equals atmospheric at low concentrations
    assert high[4] == 60 and high[1] > high[4]  # CF=1 reads higher above ~20 ug/m3
    assert low[3] <= low[4] <= low[5] and list(low[6:12]) == sorted(low[6:12], reverse=True)
    assert words_from_pm25(float("nan"), rng)[4] == 0


def test_iter_frames_scripted_faults_are_deterministic() -> None:
    a = list(itertools.islice(iter_frames(3, corrupt_every=7, truncate_every=11), 60))
    b = list(itertools.islice(iter_frames(3, corrupt_every=7, truncate_every=11), 60))
    assert [f.data for f in a] == [f.data for f in b]
    kinds = {f.index: f.kind for f in a}
    assert {i for i, k in kinds.items() if k == "truncated_frame"} == {10, 21, 32, 43, 54}
    assert {i for i, k in kinds.items() if k == "corrupt_bytes"} == {6, 13, 20, 27, 34, 41, 48, 55}
    for f in a:
        assert frame_ok(f.data) == (f.kind == "ok")
        assert (len(f.data) < 32) == (f.kind == "truncated_frame")


def test_uart_pty_read_with_pyserial(tmp_path: Path) -> None:
    link, truth = tmp_path / "pms5003", tmp_path / "frames.jsonl"
    proc = subprocess.Popen(
        [sys.executable, "-m", "firmware_sim", "uart", "--link", str(link), "--seed", "2",
         "--rate", "50", "--count", "100", "--corrupt-every", "7", "--truncate-every", "11",
         "--truth", str(truth)],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while not link.is_symlink() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert link.is_symlink(), "the pty link never appeared"
        received = b""
        with serial.Serial(str(link), 9600, timeout=0.3) as port:
            while time.monotonic() < deadline:
                try:
                    chunk = port.read(4096)
                except serial.SerialException:  # the simulator closed the pty
                    break
                received += chunk
                if not chunk and proc.poll() is not None:
                    break
        _, err = proc.communicate(timeout=10)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    frames = [json.loads(x) for x in truth.read_text().splitlines()]
    assert len(frames) == 100 and all(f["written"] == f["bytes"] for f in frames)
    sent = b"".join(bytes.fromhex(f["hex"]) for f in frames)
    offset = sent.find(received)
    assert len(received) > 1000 and offset >= 0, "bytes arrive unaltered and in order"
    # every frame wholly inside what the reader saw is exactly as scripted
    seen = {"ok": 0, "corrupt_bytes": 0, "truncated_frame": 0}
    pos = 0
    for f in frames:
        data, start = bytes.fromhex(f["hex"]), pos
        pos += len(data)
        if start < offset or pos > offset + len(received):
            continue
        got = received[start - offset : pos - offset]
        seen[f["kind"]] += 1
        if f["kind"] == "ok":
            assert frame_ok(got)
        elif f["kind"] == "corrupt_bytes":
            assert len(got) == 32 and got[:2] == b"BM" and not frame_ok(got)
        else:
            assert len(got) < 32 and got == data
            nxt = received[pos - offset : pos - offset + 2]
            assert nxt in (b"BM", b""), "a truncated frame is followed by the next header"
    assert seen["ok"] >= 30 and seen["corrupt_bytes"] >= 3 and seen["truncated_frame"] >= 3
    assert not link.exists(), "the link is removed on exit"
