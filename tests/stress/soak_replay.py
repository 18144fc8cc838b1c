"""Soak: 1,000,000 readings through the agent's pipeline in-process, RSS sampled as it goes.
Not part of the test suite.

    python -m tests.stress.soak_replay [--readings 1000000] [--devices 4] [--mode live|batch]

`live` (default) is the live agent path reading by reading: JSON bytes -> `Agent.handle`
(decode, window, TFLite + ONNX scoring, decide, alerts into the SQLite outbox), with the
silence check and a metrics snapshot every second, and the outbox drained as PUBACKs would
drain it. `batch` feeds the same pipeline in blocks of 4096 rows (`process_rows`, the replay
path). The readings are the fixture bundle's synthetic 8-channel normal data, generated in
chunks (never all in memory), with a 30-row fault on one channel every 10,000 readings so
alerts open and close throughout, and 1% bad payloads mixed in (live mode).

Reports RSS (VmRSS) at start, 10%, 50%, 90% and the end, throughput, alerts, and exits 1
when RSS grew by more than `--max-growth-mib` between 10% and the end.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from edge.agent import Agent
from edge.bundle import load_bundle
from edge.config import parse_config
from edge.sources import Payload
from tests.agent_fixtures import START_TS, channel_names, normal_rows, scales
from tests.stress.common import fixture_bundle, mib, rss_kib

CHUNK = 10_000
FAULT = (5_000, 5_030, 3)  # rows [start, stop) of each chunk, channel


def chunks(total: int, seed: int) -> Any:
    """(offset, rows (n, 8)) with a fault in each full chunk."""
    for k, offset in enumerate(range(0, total, CHUNK)):
        n = min(CHUNK, total - offset)
        rows = normal_rows(n, seed=seed + k)
        start, stop, channel = FAULT
        if n >= stop:
            rows[start:stop, channel] += 12.0 * scales()[channel]
        yield offset, rows


def make_agent(directory: Path) -> Agent:
    config = parse_config({
        "bundle": {"path": str(fixture_bundle()), "watch_interval_s": 0},
        "sources": [{"type": "stdin", "device": "soak"}],
        "outbox": {"path": str(directory / "outbox.sqlite3")},
        "limits": {"max_skew_s": 1e10, "max_devices": 64},
        "alerts": {"update_every_s": 0},
    }, environ={})
    agent = Agent(config, load_bundle(config.bundle.path))
    agent.outbox.open()
    return agent


def drain(agent: Agent) -> int:
    """Delete what the outbox holds, as the broker's PUBACKs would."""
    n = 0
    while items := agent.outbox.pending(limit=500):
        for item in items:
            agent.outbox.ack(item.seq)
        n += len(items)
    return n


def run(args: argparse.Namespace) -> dict[str, Any]:
    directory = Path(tempfile.mkdtemp(prefix="edge-soak-"))
    agent = make_agent(directory)
    names = channel_names()
    devices = [f"soak-{k}" for k in range(args.devices)]
    marks: dict[str, int] = {"start": rss_kib()}
    checkpoints = {int(args.readings * q): label for q, label in
                   ((0.1, "10%"), (0.5, "50%"), (0.9, "90%"))}
    sent = bad_sent = acked = 0
    started = time.monotonic()
    next_tick = started
    for offset, rows in chunks(args.readings, args.seed):
        if args.mode == "batch":
            for d, device in enumerate(devices):
                mine = rows[d::len(devices)]
                ts = START_TS + (offset // len(devices)) + np.arange(len(mine), dtype=float)
                pipeline = agent.gateway.pipeline(device)
                assert pipeline is not None
                for lo in range(0, len(mine), 4096):
                    result = pipeline.process_rows(ts[lo:lo + 4096], mine[lo:lo + 4096])
                    agent.publish([e for _, e in result.events])
            sent += len(rows)
        else:
            values = np.round(rows, 4).tolist()
            for i, row in enumerate(values):
                n = offset + i
                device = devices[n % len(devices)]
                if n % 100 == 99:  # 1% bad input of a few kinds
                    payload = (b"{broken", b'{"ts": "never", "ch0": 1}', b"[]")[n % 3]
                    bad_sent += 1
                else:
                    ts = START_TS + n // len(devices)
                    payload = json.dumps({"ts": ts, **dict(zip(names, row, strict=True))}
                                         ).encode()
                agent.handle(Payload(device, payload, time.monotonic()))
                sent += 1
                if sent in checkpoints:
                    marks[checkpoints[sent]] = rss_kib()
            now = time.monotonic()
            if now >= next_tick:  # what the run loop does once a second
                agent.publish(agent.expire_silent(now))
                agent.collect_metrics()
                next_tick = now + 1.0
        acked += drain(agent)
        if args.mode == "batch":
            for label_at, label in checkpoints.items():
                if label not in marks and sent >= label_at:
                    marks[label] = rss_kib()
        if sent % 100_000 == 0:
            rate = sent / (time.monotonic() - started)
            print(f"  {sent:,} readings, {rate:,.0f}/s, RSS {mib(rss_kib())}", flush=True)
    elapsed = time.monotonic() - started
    agent.publish(agent.gateway.close("shutdown"))
    acked += drain(agent)
    marks["end"] = rss_kib()
    stats = agent.gateway.metrics()
    scored = sum(d["windows_scored"] for d in stats["devices"].values())
    readings = sum(d["readings"] for d in stats["devices"].values())
    agent.outbox.close()
    growth = marks["end"] - marks["10%"]
    result = {
        "mode": args.mode, "readings_sent": sent, "bad_sent": bad_sent,
        "readings_in_windows": readings, "windows_scored": scored,
        "bad_counted": stats["bad_total"], "alerts": agent.alert_counts,
        "outbox_rows_acked": acked, "seconds": round(elapsed, 1),
        "readings_per_s": round(sent / elapsed), "rss_kib": marks,
        "rss_growth_10pct_to_end_kib": growth, "ok": growth < args.max_growth_mib * 1024,
    }
    print(f"\n{args.mode}: {sent:,} readings in {elapsed:.0f} s ({sent / elapsed:,.0f}/s); "
          f"{readings:,} reached the windows, {scored:,} windows scored; bad counted "
          f"{stats['bad_total']} (sent {bad_sent:,}); alerts {agent.alert_counts}")
    print("RSS: " + ", ".join(f"{k} {mib(v)}" for k, v in marks.items())
          + f"; growth 10%->end {growth / 1024:+.1f} MiB "
          + ("(PASS)" if result["ok"] else f"(FAIL, limit {args.max_growth_mib} MiB)"))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.stress.soak_replay",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--readings", type=int, default=1_000_000)
    parser.add_argument("--devices", type=int, default=4)
    parser.add_argument("--mode", choices=("live", "batch"), default="live")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--max-growth-mib", type=float, default=10.0,
                        help="RSS growth allowed from 10%% of the run to its end")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)
    result = run(args)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
