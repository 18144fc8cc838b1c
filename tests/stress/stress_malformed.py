"""Stress: 100,000 malformed readings of every kind, interleaved with valid ones, through a
real Mosquitto into `edge-agent run` (a subprocess). Not part of the test suite.

    python -m tests.stress.stress_malformed [--malformed 100000] [--valid 25000] [--rate 2500]

Checks, from the agent's own metrics topic, that
- the agent stays up (and exits 0 on SIGTERM at the end);
- every reading that should be scored was: per device `windows_scored` equals the valid +
  tolerated readings sent minus the window's warm-up, `readings` equals those plus the ones
  the window drops (out of order, duplicate timestamps);
- the bad-input counters by kind equal what was sent of each kind;
- nothing was dropped for lack of queue room (`queue_full`);
- RSS (VmRSS of the agent, sampled every second) stays bounded: growth from 10% of the run
  to its end under `--max-growth-mib`.

The broker's per-client queue is raised (`max_queued_messages`) and everything is QoS 1 at a
steady rate, so Mosquitto does not drop messages to a subscriber that falls behind.
Exit code 0 when every check passes, 1 otherwise; `--json FILE` writes the figures.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from edge.readings import parse_timestamp
from tests.agent_fixtures import WINDOW, centers, channel_names, scales
from tests.agent_io import PREFIX, AgentProcess
from tests.mosquitto import Broker
from tests.stress.common import RssSampler, fixture_bundle, mib, rss_kib

NAMES = channel_names()
MAX_BYTES = 4096
STEP_S = 0.005  # timestamp step between a device's scoreable readings


class Stream:
    """Builds the payloads; knows, for each, what the agent must make of it."""

    def __init__(self, devices: list[str], seed: int) -> None:
        self.rng = random.Random(seed)
        self.now = time.time()
        self.last = {d: self.now - 120.0 for d in devices}  # nominal, before formatting
        self.decoded = dict(self.last)  # the last scoreable ts exactly as the agent decodes it
        # name -> (builder, outcome, counted kind or None); outcome: rejected | dropped |
        # tolerated (scored, and counted) | valid (scored, not counted)
        self.kinds: dict[str, tuple[Callable[[str], bytes], str, str | None]] = {
            "invalid_json_syntax": (lambda d: b'{"ts": 1, "ch0": ', "rejected", "invalid_json"),
            "invalid_utf8": (lambda d: b"\xff\xfe\x00" + self.junk(20), "rejected",
                             "invalid_json"),
            "too_deep": (lambda d: b"[" * 1900 + b"]" * 1900, "rejected", "invalid_json"),
            "not_object": (lambda d: b"[1, 2, 3]", "rejected", "not_object"),
            "oversize": (self.oversize, "rejected", "too_large"),
            "ts_text": (lambda d: self.body({"ts": "yesterday"}), "rejected", "bad_timestamp"),
            "ts_nan": (lambda d: self.body({"ts": "NaN_"}).replace(b'"NaN_"', b"NaN"),
                       "rejected", "bad_timestamp"),
            "ts_bool": (lambda d: self.body({"ts": True}), "rejected", "bad_timestamp"),
            "ts_future": (lambda d: self.body({"ts": self.now + 10 * 86400}), "rejected",
                          "timestamp_far_off"),
            "ts_past": (lambda d: self.body({"ts": 0}), "rejected", "timestamp_far_off"),
            "values_list": (lambda d: json.dumps({"ts": self.last[d], "values": [1, 2]}).encode(),
                            "rejected", "wrong_type"),
            "no_channel": (lambda d: json.dumps({"ts": self.last[d], "zz": 1, "yy": 2}).encode(),
                           "rejected", "missing_channels"),
            "all_nan": (self.all_nan, "rejected", "missing_channels"),
            "out_of_order": (lambda d: self.body({"ts": self.decoded[d] - STEP_S / 2}),
                             "dropped", "out_of_order"),
            "duplicate_ts": (lambda d: self.body({"ts": self.decoded[d]}), "dropped",
                             "duplicate_ts"),
            "one_nan": (lambda d: self.tolerated(d, "NaN"), "tolerated", "non_finite"),
            "one_inf": (lambda d: self.tolerated(d, "-Infinity"), "tolerated", "non_finite"),
            "one_huge_int": (lambda d: self.tolerated(d, "1" + "0" * 400), "tolerated",
                             "non_finite"),
            "one_null": (lambda d: self.tolerated(d, "null"), "tolerated", "null_value"),
            "one_string": (lambda d: self.tolerated(d, '"12.5"'), "tolerated", "wrong_type"),
            "one_bool": (lambda d: self.tolerated(d, "true"), "tolerated", "wrong_type"),
            "unknown_channel": (self.unknown, "tolerated", "unknown_channel"),
            "missing_some": (self.missing_some, "tolerated", "missing_channels"),
        }
        self.valid_forms: list[Callable[[str], bytes]] = [
            self.valid_flat, self.valid_nested, self.valid_ms, self.valid_iso]

    # -- payloads ----------------------------------------------------------------------------
    def junk(self, n: int) -> bytes:
        return bytes(self.rng.randrange(256) for _ in range(n))

    def values(self) -> dict[str, float]:
        return {n: round(c + s * self.rng.gauss(0, 1), 4)
                for n, c, s in zip(NAMES, centers(), scales(), strict=True)}

    def body(self, head: dict[str, Any]) -> bytes:
        return json.dumps({**head, **self.values()}).encode()

    def tick(self, device: str) -> float:
        self.last[device] += STEP_S
        return round(self.last[device], 6)

    def stamped(self, device: str, ts: float | str) -> float | str:
        """Remember how the agent will decode this scoreable reading's timestamp (ms and
        ISO forms round differently), so that duplicates and late readings are exact."""
        self.decoded[device] = parse_timestamp(ts)
        return ts

    def oversize(self, device: str) -> bytes:
        return json.dumps({"ts": self.last[device], **self.values(),
                           "pad": "x" * (MAX_BYTES + 100)}).encode()

    def all_nan(self, device: str) -> bytes:
        fields = ", ".join(f'"{n}": NaN' for n in NAMES)
        return f'{{"ts": {self.last[device]}, {fields}}}'.encode()

    def tolerated(self, device: str, literal: str) -> bytes:
        text = json.dumps({"ts": self.stamped(device, self.tick(device)), **self.values()})
        victim = self.rng.choice(NAMES)
        start = text.index(f'"{victim}": ') + len(victim) + 4
        end = min(i for i in (text.find(",", start), text.find("}", start)) if i >= 0)
        return (text[:start] + literal + text[end:]).encode()

    def unknown(self, device: str) -> bytes:
        return json.dumps({"ts": self.stamped(device, self.tick(device)), **self.values(),
                           "zz_extra": 1.0}).encode()

    def missing_some(self, device: str) -> bytes:
        values = self.values()
        for name in self.rng.sample(NAMES, 3):
            del values[name]
        return json.dumps({"ts": self.stamped(device, self.tick(device)), **values}).encode()

    def valid_flat(self, device: str) -> bytes:
        return json.dumps({"ts": self.stamped(device, self.tick(device)),
                           **self.values()}).encode()

    def valid_nested(self, device: str) -> bytes:
        return json.dumps({"ts": self.stamped(device, self.tick(device)), "values": self.values(),
                           "device": device, "seq": 1}).encode()

    def valid_ms(self, device: str) -> bytes:
        ts_ms = round(self.tick(device) * 1000, 3)
        return json.dumps({"ts": self.stamped(device, ts_ms), **self.values()}).encode()

    def valid_iso(self, device: str) -> bytes:
        when = datetime.fromtimestamp(self.tick(device), tz=timezone.utc)
        return json.dumps({"ts": self.stamped(device, when.isoformat()),
                           **self.values()}).encode()

    def valid(self, device: str) -> bytes:
        return self.rng.choice(self.valid_forms)(device)


def plan(stream: Stream, devices: list[str], malformed: int, valid: int
         ) -> list[tuple[str, str | None]]:
    """(device, malformed kind or None) in send order: each device starts with a window of
    valid readings (so out-of-order and duplicates have something to be late against), then
    a shuffled mix."""
    warm = [(d, None) for _ in range(WINDOW + 4) for d in devices]
    kinds = list(stream.kinds)
    rest: list[tuple[str, str | None]] = [
        (stream.rng.choice(devices), kinds[i % len(kinds)]) for i in range(malformed)]
    rest += [(stream.rng.choice(devices), None) for _ in range(max(valid - len(warm), 0))]
    stream.rng.shuffle(rest)
    return warm + rest


class Metrics:
    """The latest metrics message per topic id (device or agent)."""

    def __init__(self, broker: Broker) -> None:
        self.latest: dict[str, dict[str, Any]] = {}
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="stress-metrics")
        self.client.on_connect = lambda c, *_: c.subscribe(f"{PREFIX}/+/metrics", 0)
        self.client.on_message = self._message
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()

    def _message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        self.latest[msg.topic.split("/")[-2]] = json.loads(msg.payload)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def agent_config(directory: Path, broker: Broker, bundle: Path) -> Path:
    path = directory / "agent.toml"
    path.write_text(f"""
[bundle]
path = "{bundle}"
watch_interval_s = 0
[mqtt]
host = "{broker.host}"
port = {broker.port}
client_id = "stress-agent"
[[sources]]
type = "mqtt"
topic = "sensors/+/readings"
qos = 1
[outbox]
path = "{directory / 'outbox.sqlite3'}"
[metrics]
interval_s = 1
[limits]
max_payload_bytes = {MAX_BYTES}
max_skew_s = 300
[log]
level = "INFO"
bad_input_every_s = 10
""")
    return path


def publish(broker: Broker, stream: Stream, order: list[tuple[str, str | None]], rate: float,
            progress: Callable[[int], None]) -> None:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="stress-sensors")
    client.max_inflight_messages_set(200)
    client.max_queued_messages_set(0)
    acked = threading.Semaphore(0)
    client.on_publish = lambda *_: acked.release()
    client.connect(broker.host, broker.port)
    client.loop_start()
    started = time.monotonic()
    for i, (device, kind) in enumerate(order):
        payload = stream.valid(device) if kind is None else stream.kinds[kind][0](device)
        client.publish(f"sensors/{device}/readings", payload, qos=1)
        if i % 200 == 199:
            delay = started + (i + 1) / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            progress(i + 1)
    for _ in order:  # every PUBACK: the broker has them all
        acked.acquire(timeout=60)
    client.disconnect()
    client.loop_stop()


def expectations(stream: Stream, order: list[tuple[str, str | None]], devices: list[str]
                 ) -> dict[str, Any]:
    counted: Counter[str] = Counter()
    sent: Counter[str] = Counter()
    scoreable: Counter[str] = Counter()
    dropped: Counter[str] = Counter()
    for device, kind in order:
        sent[kind or "valid"] += 1
        if kind is None:
            scoreable[device] += 1
            continue
        _, outcome, counter_kind = stream.kinds[kind]
        if counter_kind is not None:
            counted[counter_kind] += 1
        if outcome == "tolerated":
            scoreable[device] += 1
        elif outcome == "dropped":
            dropped[device] += 1
    return {
        "sent_by_kind": dict(sent),
        "bad_by_kind": dict(sorted(counted.items())),
        "readings": {d: scoreable[d] + dropped[d] for d in devices},
        "windows_scored": {d: max(scoreable[d] - (WINDOW - 1), 0) for d in devices},
        "scoreable": sum(scoreable.values()),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    devices = [f"stress-{k}" for k in range(args.devices)]
    stream = Stream(devices, args.seed)
    order = plan(stream, devices, args.malformed, args.valid)
    expected = expectations(stream, order, devices)
    bundle = fixture_bundle()
    directory = Path(tempfile.mkdtemp(prefix="edge-stress-"))
    broker = Broker(extra_config="max_queued_messages 1000000\nmax_queued_bytes 0\n"
                                 "max_inflight_messages 100\n")
    with broker:
        metrics = Metrics(broker)
        agent = AgentProcess(agent_config(directory, broker, bundle), directory / "agent.log")
        try:
            deadline = time.monotonic() + 60
            while "stress-agent" not in metrics.latest:
                if time.monotonic() > deadline or agent.proc.poll() is not None:
                    raise RuntimeError(f"the agent did not come up: {agent.log()[-2000:]}")
                time.sleep(0.2)
            with RssSampler(agent.proc.pid) as rss:
                rss_start = rss_kib(agent.proc.pid)
                marks: dict[str, int] = {"start": rss_start}
                total = len(order)
                print(f"sending {total:,} readings ({args.malformed:,} malformed, "
                      f"{total - args.malformed:,} valid) to {len(devices)} devices at "
                      f"{args.rate:,.0f}/s; agent pid {agent.proc.pid}, RSS {mib(rss_start)}",
                      flush=True)

                def progress(n: int) -> None:
                    for label, share in (("10%", 0.1), ("50%", 0.5)):
                        if label not in marks and n >= share * total:
                            marks[label] = rss.samples[-1][1]
                    if n % 25000 == 0:
                        print(f"  {n:,} sent, agent RSS {mib(rss.samples[-1][1])}", flush=True)

                started = time.monotonic()
                publish(broker, stream, order, args.rate, progress)
                sent_s = time.monotonic() - started
                done = wait_until_processed(metrics, expected, devices, timeout=args.drain_s)
                marks["end"] = rss.samples[-1][1]
                alive = agent.proc.poll() is None
            agent.signal(signal.SIGTERM)
            exit_code = agent.wait(30)
        finally:
            agent.kill()
            metrics.close()
    return report(args, expected, metrics.latest, devices, marks, rss.peak, rss.samples,
                  alive, exit_code, done, sent_s, agent.log())


def wait_until_processed(metrics: Metrics, expected: dict[str, Any], devices: list[str],
                         timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    want = sum(expected["readings"].values())
    while time.monotonic() < deadline:
        got = metrics.latest.get("stress-agent", {})
        if got.get("readings") == want and got.get("bad") == expected["bad_by_kind"]:
            time.sleep(1.5)  # one more metrics interval
            return True
        time.sleep(0.5)
    return False


def report(args: argparse.Namespace, expected: dict[str, Any], latest: dict[str, Any],
           devices: list[str], marks: dict[str, int], peak: int,
           samples: list[tuple[float, int]], alive: bool, exit_code: int, done: bool,
           sent_s: float, log: str) -> dict[str, Any]:
    agent = latest.get("stress-agent", {})
    bad = agent.get("bad", {})
    checks = {
        "agent stayed up": alive,
        "agent exited 0 on SIGTERM": exit_code == 0,
        "all readings processed": done,
        "bad counts by kind match": bad == expected["bad_by_kind"],
        "no queue_full drops": "queue_full" not in bad,
    }
    rows = []
    for device in devices:
        got = latest.get(device, {})
        rows.append((device, expected["readings"][device], got.get("readings"),
                     expected["windows_scored"][device], got.get("windows_scored")))
        checks[f"{device}: readings"] = got.get("readings") == expected["readings"][device]
        checks[f"{device}: windows scored"] = (
            got.get("windows_scored") == expected["windows_scored"][device])
    growth = marks.get("end", 0) - marks.get("10%", marks.get("start", 0))
    checks[f"RSS growth 10%->end < {args.max_growth_mib} MiB"] = (
        growth < args.max_growth_mib * 1024)

    print(f"\nsent in {sent_s:.1f} s; payloads by kind (sent):")
    for kind, n in sorted(expected["sent_by_kind"].items()):
        print(f"  {kind:22s} {n:7,d}")
    print("\nbad-input counters (expected vs agent's metrics):")
    for kind in sorted(set(expected["bad_by_kind"]) | set(bad)):
        print(f"  {kind:22s} {expected['bad_by_kind'].get(kind, 0):7,d} {bad.get(kind, 0):7,d}")
    print("\nper device: readings expected/got, windows scored expected/got")
    for device, r_exp, r_got, w_exp, w_got in rows:
        print(f"  {device}: {r_exp:,} / {r_got}, {w_exp:,} / {w_got}")
    print(f"\nscoreable readings sent {expected['scoreable']:,}; windows scored "
          f"{agent.get('windows_scored')} (expected {sum(expected['windows_scored'].values()):,}"
          f" = scoreable - {WINDOW - 1} warm-up per device)")
    print("agent RSS: " + ", ".join(f"{k} {mib(v)}" for k, v in marks.items())
          + f", peak {mib(peak)}; growth 10%->end {growth / 1024:+.1f} MiB")
    print("\nchecks:")
    for name, ok in checks.items():
        print(f"  {'PASS' if ok else 'FAIL'}  {name}")
    if "Traceback" in log:
        checks["no traceback in the agent's log"] = False
        print("  FAIL  traceback in the agent's log")
    return {"checks": checks, "expected": expected, "agent_metrics": agent,
            "device_metrics": {d: latest.get(d) for d in devices}, "rss_kib": marks,
            "rss_peak_kib": peak, "rss_samples": samples, "sent_s": sent_s}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.stress.stress_malformed",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--malformed", type=int, default=100_000, help="malformed readings")
    parser.add_argument("--valid", type=int, default=25_000, help="clean valid readings")
    parser.add_argument("--rate", type=float, default=1200.0, help="messages per second")
    parser.add_argument("--devices", type=int, default=4, help="device ids (topics)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--drain-s", type=float, default=120.0,
                        help="wait this long after sending for the agent to catch up")
    parser.add_argument("--max-growth-mib", type=float, default=20.0,
                        help="RSS growth allowed from 10%% of the run to its end")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)
    result = run(args)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1, default=str))
    return 0 if all(result["checks"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
