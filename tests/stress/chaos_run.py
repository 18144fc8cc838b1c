"""Chaos run (issue 20): `edge-agent run` fed pump readings on stdin, bad lines of 15 kinds
interleaved, the broker stopped twice, the agent SIGKILLed once with an alert open and
restarted. Not part of the test suite (a script, not collected by pytest):

    python -m tests.stress.chaos_run [--lines 24000] [--rate 250] [--bad-every 10]

What it sets up, as a new user would:
- a private Mosquitto with persistence on a free loopback port (generated config; never the
  system broker), and a persistent QoS 1 subscriber (clean_session False) on
  `edge-anomaly/+/alert`, plus a QoS 0 client that records the agent's metrics;
- a pump bundle fitted with `edge-train fit` on `edge-sim generate --device pump` data
  (small options, about 2 minutes; cached under .pytest_cache/d/, `--refit` to redo it, or
  `--bundle DIR` to use another pump bundle);
- `edge-agent run` (a subprocess, tests.agent_io.AgentProcess) with a stdin source, an
  outbox and a scoring-state file; the pump rows after the training rows (with the
  simulator's faults, so alerts start and end) on its stdin at `--rate` lines/s, one line
  in `--bad-every` a bad one, cycling through 14 kinds (the issue's 1,990-deep nesting,
  invalid JSON, not an object, too large, too many keys, bad and far-off timestamps, wrong
  types, NaN/inf, nulls, unknown and missing channels, duplicate and out-of-order
  timestamps), plus a few timestamp gaps; and a level shift of its own on `Current` from 50%
  of the feed, long enough for an alert to be open at the kill;
- the broker stopped (SIGTERM, so it saves its sessions) for `--outage-s` at 25% and 80% of
  the feed and started again with the same config; the agent SIGKILLed once between 50% and
  70% of the feed, at a moment an alert is open (the feed pauses, the agent drains what it
  was sent, the alert is checked still open), then started again on the same config (same
  outbox and state paths) and fed the rest; at the end SIGTERM.

Checks (exit code 1 when one fails):
- exit code 0 on SIGTERM; no source error, no traceback in the agent's logs;
- the agent kept scoring to the end of input: per run, `windows_scored` and `readings` from
  its metrics equal what was sent (each scoreable line minus the window's warm-up after the
  start and after each gap), and `windows_scored` grew after a deep line (the last one a
  few seconds before the run's end of input) and after each outage;
- the bad-input counters by kind equal what was sent of each kind;
- every alert id received has exactly one `start` and one `end` (after dropping the resends
  of at-least-once delivery, keyed on id + state + ts_epoch; their number is reported), its
  latest state is `end`, and the alert open at the kill ended with `reason: restart`;
- no alert event was lost: every event the agent produced (its stdout JSON lines; its log
  lines agree) reached the subscriber.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from edge.bundle import SCHEMA_VERSION, BundleError, load_bundle
from tests.agent_io import PREFIX, AgentProcess, Collector, agent_toml, dedupe, event_key
from tests.mosquitto import Broker
from tests.stress.common import ROOT
from tests.stress.stress_malformed import Metrics

DEVICE = "pump-1"
CLIENT_ID = "chaos-agent"
TRAIN_ROWS = 3000
DATA = ["--device", "pump", "--duration", "8h", "--seed", "1"]
FIT = ["--rows", f":{TRAIN_ROWS}", "--units", "8", "--epochs", "4", "--patience", "2",
       "--calib-samples", "64", "--no-report", "--name", "chaos-pump"]
MAX_BYTES = 8192  # room for a valid JSON object of 1,100 keys (too_many_keys, not too_large)
GAP_S = 8.0  # a gap: the clock jumps this far (the pump bundle's max_gap_s is 5 s)
DEEP = b'{"device":"pump-1","values":' + b"[" * 1990 + b"]" * 1990 + b"}"  # from the issue
# kinds cycled through, one bad line every --bad-every lines; gaps are placed apart
KINDS = ["too_deep", "invalid_json", "not_object", "too_large", "too_many_keys",
         "bad_timestamp", "timestamp_far_off", "wrong_type", "non_finite", "null_value",
         "unknown_channel", "missing_channels", "duplicate_ts", "out_of_order"]
GAPS_AT = (0.15, 0.45, 0.62, 0.9)  # shares of the feed
# besides the simulator's faults (short at 250 rows/s): a level shift of FAULT_SDS standard
# deviations on FAULT_CHANNEL over FAULT_SHARE of the feed from 50%, so that an alert is open
# when the agent is killed (and a new one starts after the restart, as the README says)
FAULT_CHANNEL, FAULT_SDS, FAULT_SHARE = "Current", 6.0, 0.06


# -- the bundle ---------------------------------------------------------------------------------
def tool(name: str) -> list[str]:
    """A console script of this venv (edge-sim, edge-train, edge-agent)."""
    script = Path(sys.executable).parent / name
    return [str(script)] if script.exists() else [shutil.which(name) or name]


def pump_bundle(refit: bool, given: Path | None = None) -> tuple[Path, Path]:
    """(bundle, data CSV): `edge-sim generate` pump data, `edge-train fit` on its first rows
    (unless a bundle is `given`); cached by the options and the manifest schema, fitted again
    when it no longer loads."""
    key = hashlib.sha256(json.dumps([DATA, FIT, SCHEMA_VERSION]).encode()).hexdigest()[:12]
    cache = ROOT / ".pytest_cache" / "d" / f"chaos-pump-{key}"
    data, bundle = cache / "pump.csv", cache / "bundle"
    cache.mkdir(parents=True, exist_ok=True)
    if not data.exists():
        run_tool([*tool("edge-sim"), "generate", *DATA, "--out", str(data)])
    if given is not None:
        return given, data
    if bundle.exists() and not refit:
        try:
            load_bundle(bundle).close()
            return bundle, data
        except BundleError as exc:
            print(f"cached bundle does not load ({exc}); fitting again", flush=True)
    print(f"fitting the pump bundle (edge-train fit {data.name} {' '.join(FIT)}) ...", flush=True)
    started = time.monotonic()
    run_tool([*tool("edge-train"), "fit", str(data), "--out", str(bundle), *FIT, "--force"])
    print(f"  fitted in {time.monotonic() - started:.0f} s -> {bundle}", flush=True)
    return bundle, data


def run_tool(command: list[str]) -> None:
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}):\n"
                         f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}")


def pump_rows(data: Path) -> tuple[list[str], list[list[float]]]:
    """Channel names and the rows after the training rows (NaN where a cell is empty)."""
    with data.open(newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        names = [h for h in header if h not in ("timestamp", "anomaly", "fault")]
        index = [header.index(n) for n in names]
        rows = [[float(row[i]) if row[i] not in ("", "nan", "NaN") else math.nan
                 for i in index] for row in reader]
    return names, rows[TRAIN_ROWS:]


# -- the feed -----------------------------------------------------------------------------------
@dataclass
class Line:
    data: bytes
    kind: str  # "valid", "gap" or one of KINDS
    outcome: str  # scored | dropped (counted in readings, not scored) | rejected
    counted: list[str]  # bad-input kinds the agent must count for it


@dataclass
class Feed:
    """Builds the lines; knows, for each, what the agent must make of it."""

    names: list[str]
    rows: list[list[float]]
    rate: float
    seed: int
    clock: float = field(default_factory=time.time)  # the sensor's clock (epoch seconds)
    last: float | None = None  # ts of the last reading the window accepted
    row: int = 0

    shift: float = 0.0  # added to FAULT_CHANNEL while the feed's own fault is on

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.step = round(1.0 / self.rate, 6)
        column = [r[self.names.index(FAULT_CHANNEL)] for r in self.rows]
        finite = [v for v in column if not math.isnan(v)]
        mean = sum(finite) / len(finite)
        self.fault_size = FAULT_SDS * math.sqrt(sum((v - mean) ** 2 for v in finite)
                                                / len(finite))

    def values(self) -> dict[str, str]:
        """The next pump row as JSON literals; a NaN cell (a simulated dropout) is left out."""
        row = self.rows[self.row % len(self.rows)]
        self.row += 1
        return {n: repr(round(v + self.shift, 6) if n == FAULT_CHANNEL else v)
                for n, v in zip(self.names, row, strict=True) if not math.isnan(v)}

    def tick(self, by: float | None = None) -> float:
        self.clock = round(self.clock + (self.step if by is None else by), 4)
        return self.clock

    @staticmethod
    def text(ts: str | None, values: dict[str, str]) -> bytes:
        fields = ([f'"ts": {ts}'] if ts is not None else []) + [
            f"{json.dumps(n)}: {v}" for n, v in values.items()]
        return ("{" + ", ".join(fields) + "}").encode()

    def reading(self, kind: str, ts: float, values: dict[str, str], accepted: str) -> Line:
        """A JSON reading at `ts`; `accepted`: what the window does with it if it decodes."""
        counted = [problem for name, literal in values.items() if name in self.names
                   for problem in [value_problem(literal)] if problem is not None]
        usable = sum(n in values for n in self.names) - len(counted)
        if usable == 0:
            return Line(self.text(repr(ts), values), kind, "rejected", ["missing_channels"])
        if any(n not in self.names for n in values):
            counted.append("unknown_channel")
        if any(n not in values for n in self.names):
            counted.append("missing_channels")
        if accepted == "gap":
            accepted = "scored"
            counted.append("gap")
        elif accepted == "dropped":
            counted.append(kind)
        if accepted == "scored":
            self.last = ts
        return Line(self.text(repr(ts), values), kind, accepted, counted)

    def valid(self) -> Line:
        return self.reading("valid", self.tick(), self.values(), "scored")

    def gap(self) -> Line:
        return self.reading("gap", self.tick(GAP_S), self.values(), "gap")

    def bad(self, kind: str, n: int) -> Line:
        """The n-th bad line of `kind` (variants rotate)."""
        def rejected(data: bytes) -> Line:
            return Line(data, kind, "rejected", [kind])

        def one_value(literal: str) -> Line:
            values = self.values()
            values[self.rng.choice(sorted(values))] = literal
            return self.reading(kind, self.tick(), values, "scored")

        if kind == "too_deep":
            return rejected(DEEP)
        if kind == "invalid_json":
            return rejected([b"not json", b'{"ts": 1, "Current": ', b"\xff\xfe{}",
                             b"{'Current': 1.5}"][n % 4])
        if kind == "not_object":
            return rejected([b"[1, 2, 3]", b'"pump"', b"42", b"null"][n % 4])
        if kind == "too_large":
            return rejected(self.text(repr(self.clock), {**self.values(),
                                                         "pad": '"' + "x" * MAX_BYTES + '"'}))
        if kind == "too_many_keys":  # 1,100 keys in 7.7 KB
            alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
            keys = ",".join(f'"{a}{b}":0' for a in alphabet for b in alphabet)
            return rejected(b'{"ts":' + repr(self.clock).encode() + b","
                            + ",".join(keys.split(",")[:1100]).encode() + b"}")
        if kind == "bad_timestamp":
            ts = ['"yesterday"', "true", '"2026-13-45T99:00:00Z"', "[1]"][n % 4]
            return rejected(self.text(ts, self.values()))
        if kind == "timestamp_far_off":
            return rejected(self.text(repr(time.time() + [10 * 86400, -400 * 86400][n % 2]),
                                      self.values()))
        if kind == "wrong_type":
            return one_value(['"12.5"', "true", "[1.0]", '{"v": 1}'][n % 4])
        if kind == "non_finite":
            return one_value(["NaN", "Infinity", "-Infinity", "1e400"][n % 4])
        if kind == "null_value":
            return one_value("null")
        if kind == "unknown_channel":
            return self.reading(kind, self.tick(), {**self.values(), "Humidity": "41.5"},
                                "scored")
        if kind == "missing_channels":
            values = self.values()
            for name in self.rng.sample(sorted(values), min(2, len(values) - 1)):
                del values[name]
            return self.reading(kind, self.tick(), values, "scored")
        if self.last is None:  # a new run's window is empty: nothing to repeat or precede
            return self.valid()
        if kind == "duplicate_ts":
            return self.reading(kind, self.last, self.values(), "dropped")
        if kind == "out_of_order":
            return self.reading(kind, round(self.last - self.step / 2, 4), self.values(),
                                "dropped")
        raise ValueError(kind)


def value_problem(literal: str) -> str | None:
    """The bad-input kind of one channel's JSON literal, None for a finite number."""
    if literal == "null":
        return "null_value"
    if literal[0] in '"[{' or literal in ("true", "false"):
        return "wrong_type"
    return None if math.isfinite(float(literal.replace("Infinity", "inf"))) else "non_finite"


def plan(lines: int, bad_every: int) -> list[str]:
    """The kind of every line: valid, a bad kind every `bad_every` lines (not in the first
    window), gaps at GAPS_AT."""
    kinds = ["valid"] * lines
    for k, i in enumerate(range(2 * bad_every, lines, bad_every)):
        kinds[i] = KINDS[k % len(KINDS)]
    for share in GAPS_AT:
        i = int(share * lines)
        while kinds[i] != "valid":
            i += 1
        kinds[i] = "gap"
    return kinds


@dataclass
class RunTally:
    """What one agent process was sent."""

    readings: int = 0  # lines the window sees (scored + dropped)
    scored: int = 0
    gaps: int = 0
    bad: Counter[str] = field(default_factory=Counter)
    sent: Counter[str] = field(default_factory=Counter)  # lines by kind

    def add(self, line: Line) -> None:
        self.sent[line.kind] += 1
        self.bad.update(line.counted)
        if line.outcome != "rejected":
            self.readings += 1
        if line.outcome == "scored":
            self.scored += 1
        if line.kind == "gap":
            self.gaps += 1

    def windows(self, window: int) -> int:
        return self.scored - (window - 1) * (1 + self.gaps)


# -- observers ----------------------------------------------------------------------------------
class MetricsLog(Metrics):
    """stress_malformed's metrics client, keeping every message: (time, run, id, payload)."""

    def __init__(self, broker: Broker) -> None:
        self.run = 0
        self.history: list[tuple[float, int, str, dict[str, Any]]] = []
        super().__init__(broker)
        self.client.reconnect_delay_set(1, 1)

    def _message(self, client: Any, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        super()._message(client, userdata, msg)
        self.history.append((time.monotonic(), self.run, msg.topic.split("/")[-2],
                             json.loads(msg.payload)))

    def agent(self, run: int, since: float = 0.0) -> list[tuple[float, dict[str, Any]]]:
        return [(t, m) for t, r, who, m in self.history
                if who == CLIENT_ID and r == run and t >= since]

    def wait(self, run: int, predicate: Any, timeout: float) -> dict[str, Any] | None:
        """The first agent metrics message of `run` (received from now on) that satisfies
        `predicate`, or None after `timeout`."""
        since, deadline = time.monotonic(), time.monotonic() + timeout
        while time.monotonic() < deadline:
            for _t, message in self.agent(run, since):
                if predicate(message):
                    return message
            time.sleep(0.1)
        return None


def persistent_broker(store: Path) -> Broker:
    """tests.agent_io.persistent_broker with room for a subscriber's backlog."""
    store.mkdir(parents=True, exist_ok=True)
    return Broker(extra_config=f"persistence true\npersistence_location {store}/\n"
                               "max_queued_messages 100000\n")


def open_alerts(agent: AgentProcess) -> list[str]:
    """Ids of alerts started and not ended, from the agent's stdout."""
    states: dict[str, str] = {}
    for alert in list(agent.stdout_alerts):
        states[alert["id"]] = alert["state"]
    return [i for i, s in states.items() if s != "end"]


LOG_ALERT = re.compile(r"alert (start|update|end) (\S+) on ")


def logged_events(log: str) -> Counter[tuple[str, str]]:
    return Counter((m.group(2), m.group(1)) for m in LOG_ALERT.finditer(log))


# -- the run ------------------------------------------------------------------------------------
@dataclass
class Chaos:
    args: argparse.Namespace
    bundle: Path
    feed: Feed
    directory: Path
    broker: Broker
    metrics: MetricsLog
    window: int
    agents: list[AgentProcess] = field(default_factory=list)
    tallies: list[RunTally] = field(default_factory=list)
    marks: list[tuple[str, int, float]] = field(default_factory=list)  # (what, run, time)
    # (down, up) monotonic, alert events the agent produced meanwhile
    outages: list[tuple[float, float, int]] = field(default_factory=list)
    kill: dict[str, Any] = field(default_factory=dict)
    final: list[dict[str, Any] | None] = field(default_factory=list)  # last metrics per run
    drained: list[bool] = field(default_factory=list)
    exit_code: int | None = None
    started: float = field(default_factory=time.monotonic)
    feed_s: float = 0.0
    catch_up_s: float = 0.0  # from the last line sent to the metrics showing it handled
    sent: int = 0  # lines sent so far
    agent: AgentProcess | None = None  # the one running
    outage_thread: threading.Thread | None = None

    @property
    def config(self) -> Path:
        return self.directory / "agent.toml"

    def write_config(self) -> None:
        sources = f'[[sources]]\ntype = "stdin"\ndevice = "{DEVICE}"\n'
        # the first lines of `extra` are keys of agent_toml's [log] table
        extra = (f"bad_input_every_s = 5\n\n[limits]\nmax_payload_bytes = {MAX_BYTES}\n\n"
                 "[alerts]\nupdate_every_s = 0.5\n\n"
                 f'[state]\npath = "{self.directory / "scoring-state.npz"}"\nsave_every_s = 5\n')
        agent_toml(self.config, self.broker, self.bundle, client_id=CLIENT_ID,
                   sources=sources, extra=extra)

    def start_agent(self) -> AgentProcess:
        run = len(self.agents) + 1
        self.metrics.run = run
        started = time.monotonic()
        agent = AgentProcess(self.config, self.directory / f"agent-{run}.log")
        self.agents.append(agent)
        self.tallies.append(RunTally())
        if self.metrics.wait(run, lambda m: True, 120) is None:
            raise RuntimeError(f"agent run {run} did not come up (exit {agent.proc.poll()}):\n"
                               f"{agent.log()[-3000:]}")
        print(f"  agent run {run}: pid {agent.proc.pid}, up in "
              f"{time.monotonic() - started:.1f} s", flush=True)
        return agent

    def outage(self) -> None:
        """Stop the broker (SIGTERM: it saves its sessions), wait, start it again."""
        agent = self.agent
        assert agent is not None, "outages happen while an agent runs"

        def cycle() -> None:
            down, before = time.monotonic(), len(agent.stdout_alerts)
            self.broker.stop()
            time.sleep(self.args.outage_s)
            produced = len(agent.stdout_alerts) - before
            self.broker.start()
            self.outages.append((down, time.monotonic(), produced))
            self.marks.append(("outage end", len(self.agents), time.monotonic()))
            print(f"  broker back after {time.monotonic() - down:.1f} s", flush=True)

        print(f"  broker stopped for {self.args.outage_s:g} s", flush=True)
        self.outage_thread = threading.Thread(target=cycle, daemon=True)
        self.outage_thread.start()

    def drain(self, run: int, timeout: float) -> dict[str, Any] | None:
        """Wait for the agent's metrics to show every line sent to this run handled."""
        tally = self.tallies[run - 1]
        return self.metrics.wait(run, lambda m: m.get("readings") == tally.readings
                                 and m.get("bad") == dict(sorted(tally.bad.items())), timeout)

    def try_kill(self, agent: AgentProcess, forced: bool) -> bool:
        """SIGKILL the agent if an alert is open (or `forced`), after it handled every line
        sent; returns whether it was killed."""
        opened = open_alerts(agent)
        if not opened and not forced:
            return False
        paused = time.monotonic()
        # the agent may be some lines behind: the silence that ends an alert as stale (5 s,
        # the bundle's max_gap_s) only starts once it has handled them, and the next metrics
        # message (every second) then shows them all
        final = self.drain(1, timeout=10)
        opened = open_alerts(agent)
        if not opened and not forced:
            return False  # it ended meanwhile: feed on, wait for the next one
        agent.kill()
        self.marks.append(("killed", 1, time.monotonic()))
        self.kill = {"at_line": self.sent, "open": opened, "drained": final is not None,
                     "paused_s": round(time.monotonic() - paused, 2)}
        self.final.append(final)
        self.drained.append(final is not None)
        print(f"  SIGKILL at line {self.sent:,} with {len(opened)} alert(s) open "
              f"({', '.join(opened) or '-'}); drained {final is not None}", flush=True)
        restarted = time.monotonic()
        self.feed.last = None  # the new process starts with an empty window
        agent2 = self.start_agent()
        self.kill["restart_s"] = round(time.monotonic() - restarted, 1)
        self.agent = agent2
        return True

    def send(self, agent: AgentProcess, batch: list[Line]) -> None:
        for line in batch:
            self.tallies[-1].add(line)
            if line.kind == "too_deep":
                self.marks.append(("deep line", len(self.agents), time.monotonic()))
        agent.send(b"".join(line.data + b"\n" for line in batch))

    def run(self) -> None:
        kinds = plan(self.args.lines, self.args.bad_every)
        total = len(kinds)
        outage_at = [int(0.25 * total), int(0.8 * total)]
        kill_from, kill_by = int(0.5 * total), int(0.7 * total)
        self.agent = self.start_agent()
        print(f"feeding {total:,} lines at {self.args.rate:g}/s "
              f"({sum(k != 'valid' for k in kinds):,} bad or gaps)", flush=True)
        batch_n = max(1, int(self.args.rate / 20))  # 20 writes a second
        counts: Counter[str] = Counter()
        self.sent, started = 0, time.monotonic()
        next_at = started
        while self.sent < total:
            if outage_at and self.sent >= outage_at[0]:
                outage_at.pop(0)
                self.outage()
            if not self.kill and kill_from <= self.sent:
                self.try_kill(self.agent, forced=self.sent >= kill_by)
            on = kill_from <= self.sent < kill_from + int(FAULT_SHARE * total)
            self.feed.shift = self.feed.fault_size if on else 0.0
            batch = []
            for kind in kinds[self.sent:self.sent + batch_n]:
                if kind == "valid":
                    batch.append(self.feed.valid())
                elif kind == "gap":
                    batch.append(self.feed.gap())
                else:
                    batch.append(self.feed.bad(kind, counts[kind]))
                    counts[kind] += 1
            self.send(self.agent, batch)
            self.sent += len(batch)
            next_at += len(batch) / self.args.rate
            delay = next_at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            else:
                next_at = time.monotonic()  # behind (a pause, back-pressure): do not burst
            if self.sent % (batch_n * 20 * 10) == 0:
                print(f"  {self.sent:,} lines sent", flush=True)
        self.feed_s = time.monotonic() - started
        self.marks.append(("end of input", len(self.agents), time.monotonic()))
        if self.outage_thread is not None:
            self.outage_thread.join(30)
        run = len(self.agents)
        final = self.drain(run, timeout=60)
        self.catch_up_s = time.monotonic() - started - self.feed_s
        self.final.append(final or (self.metrics.agent(run)[-1][1]
                                    if self.metrics.agent(run) else None))
        self.drained.append(final is not None)
        self.agent.signal(signal.SIGTERM)
        self.exit_code = self.agent.wait(60)
        print(f"  SIGTERM: exit code {self.exit_code}", flush=True)


# -- checks and the summary ---------------------------------------------------------------------
def grew_after(chaos: Chaos, run: int, at: float) -> bool:
    """windows_scored of `run` rose after `at`: between the first metrics message received
    after `at` and a later one."""
    after = [m["windows_scored"] for t, m in chaos.metrics.agent(run, since=at)]
    return len(after) >= 2 and after[-1] > after[0]


def summarise(chaos: Chaos, seen: Collector) -> dict[str, Any]:
    produced = [alert for agent in chaos.agents for alert in agent.stdout_alerts]
    produced_keys = dedupe([event_key(a) for a in produced])
    received = [m.json() for m in seen.messages if m.topic.endswith("/alert")]
    unique = dedupe([event_key(a) for a in received])
    received_set = set(unique)
    lost = [k for k in produced_keys if k not in received_set]
    extra = [k for k in unique if k not in set(produced_keys)]
    by_id: dict[str, list[str]] = defaultdict(list)
    for alert_id, state, _ts in unique:
        by_id[alert_id].append(state)
    bad_ids = {i: s for i, s in by_id.items()
               if s.count("start") != 1 or s.count("end") != 1 or s[-1] != "end"}
    first_seen: dict[tuple[str, str, float], dict[str, Any]] = {}
    for alert in received:
        first_seen.setdefault(event_key(alert), alert)
    reasons = Counter(a.get("reason") for k, a in first_seen.items() if k[1] == "end")
    killed_open = chaos.kill.get("open", [])
    restart_ended = {k[0] for k, a in first_seen.items()
                     if k[1] == "end" and a.get("reason") == "restart"}
    logs = [agent.log() for agent in chaos.agents]
    logged = sum((logged_events(text) for text in logs), Counter())
    stdout_counted = Counter((a["id"], a["state"]) for a in produced)

    checks: dict[str, bool] = {}
    checks["exit code 0 on SIGTERM"] = chaos.exit_code == 0
    checks["agent killed while an alert was open"] = bool(killed_open)
    errors = [m.get("source_errors", {}) for m in chaos.final if m]
    checks["no source errors"] = all(not any(e.values()) for e in errors)
    checks["no traceback in the agent's logs"] = not any("Traceback" in t for t in logs)
    rows = []
    for run, (tally, final) in enumerate(zip(chaos.tallies, chaos.final, strict=True), 1):
        final = final or {}
        want = tally.windows(chaos.window)
        rows.append((run, tally, final, want))
        checks[f"run {run}: all lines handled (readings, bad counts)"] = chaos.drained[run - 1]
        checks[f"run {run}: windows_scored = scoreable - warm-ups"] = (
            final.get("windows_scored") == want)
    for run in range(1, len(chaos.agents) + 1):
        # the last deep line with a few seconds of feed after it (after the very last one,
        # the exact windows_scored above says the rest was scored)
        end = max(at for what, r, at in chaos.marks if r == run)
        deep = [at for what, r, at in chaos.marks
                if what == "deep line" and r == run and at <= end - 3]
        if deep:
            checks[f"run {run}: windows_scored grew after a deep line "
                   f"{end - deep[-1]:.0f} s before its end of input"] = grew_after(
                chaos, run, deep[-1])
    for what, run, at in chaos.marks:
        if what == "outage end":
            checks[f"run {run}: windows_scored grew after the outage ending at "
                   f"{at - chaos.started:.0f} s"] = grew_after(chaos, run, at)
    checks["every alert id: one start, one end, latest end"] = not bad_ids and bool(by_id)
    checks["alerts open at the kill ended with reason restart"] = (
        set(killed_open) <= restart_ended)
    checks["no alert event lost (stdout -> subscriber)"] = not lost
    checks["log and stdout list the same events"] = logged == stdout_counted

    sent = sum((t.sent for t in chaos.tallies), Counter())
    bad_expected = sum((t.bad for t in chaos.tallies), Counter())
    bad_got: Counter[str] = Counter()
    for final in chaos.final:
        bad_got.update((final or {}).get("bad", {}))
    checks["bad counts by kind match"] = bad_got == bad_expected

    print(f"\nfeed: {sum(sent.values()):,} lines in {chaos.feed_s:.0f} s "
          f"({sum(sent.values()) / chaos.feed_s:.0f}/s); lines by kind, bad-input counts "
          "expected / agent:")
    for kind in sorted(set(sent) | set(bad_expected) | set(bad_got)):
        print(f"  {kind:18s} {sent.get(kind, 0):7,d} lines   counted "
              f"{bad_expected.get(kind, 0):6,d} / {bad_got.get(kind, 0):6,d}")
    print("\nrun | lines  | readings exp/got | windows_scored exp/got | gaps | latency p99 "
          "max | source_errors")
    for run, tally, final, want in rows:
        p99_run = max((m.get("latency_p99_ms") or 0 for _t, r, who, m in chaos.metrics.history
                       if who == DEVICE and r == run), default=0)
        print(f"  {run} | {sum(tally.sent.values()):6,d} | {tally.readings:6,d} / "
              f"{final.get('readings')!s:>6} | {want:6,d} / {final.get('windows_scored')!s:>6} "
              f"| {tally.gaps}    | {p99_run:7.1f} ms | {final.get('source_errors')}")
    outages = "; ".join(
        f"{up - down:.1f} s at {down - chaos.started:.0f} s into the run, {n} alert event(s) "
        "produced meanwhile" for down, up, n in chaos.outages)
    backlog = max((m.get("queue_depth") or 0 for _t, _r, who, m in chaos.metrics.history
                   if who == CLIENT_ID), default=0)
    p99 = max((m.get("latency_p99_ms") or 0 for _t, _r, who, m in chaos.metrics.history
               if who == DEVICE), default=0)
    print(f"\nagent: largest backlog in its queue {backlog:,} readings, latency p99 up to "
          f"{p99:.1f} ms, all input handled {chaos.catch_up_s:.1f} s after the last line")
    print(f"broker outages: {outages}")
    print(f"SIGKILL at line {chaos.kill.get('at_line', 0):,} with open alert(s) "
          f"{chaos.kill.get('open')}, feed paused {chaos.kill.get('paused_s')} s, agent back "
          f"in {chaos.kill.get('restart_s')} s")
    states = Counter(k[1] for k in produced_keys)
    print(f"alerts: {len(by_id)} ids; events produced {len(produced_keys)} (start "
          f"{states['start']}, update {states['update']}, end {states['end']}); received "
          f"{len(received)}, {len(received) - len(unique)} duplicate(s) dropped on "
          f"id+state+ts_epoch, {len(lost)} lost, {len(extra)} not on stdout")
    print(f"end reasons received: {dict(reasons)}")
    if bad_ids:
        print(f"ids breaking the invariant: {dict(list(bad_ids.items())[:10])}")
    if lost:
        print(f"lost: {lost[:10]}")
    print(f"exit code on SIGTERM: {chaos.exit_code}")
    print("\nchecks:")
    for name, ok in checks.items():
        print(f"  {'PASS' if ok else 'FAIL'}  {name}")
    return {"checks": checks, "sent": dict(sent), "bad_expected": dict(bad_expected),
            "bad_got": dict(bad_got), "kill": chaos.kill, "outages": chaos.outages,
            "alert_ids": len(by_id), "events_produced": len(produced_keys),
            "received": len(received), "duplicates": len(received) - len(unique),
            "lost": len(lost), "reasons": dict(reasons), "exit_code": chaos.exit_code,
            "backlog_max": backlog, "latency_p99_ms_max": p99, "catch_up_s": chaos.catch_up_s,
            "final_metrics": chaos.final,
            "metrics_history": [(round(t - chaos.started, 2), run, who, m)
                                for t, run, who, m in chaos.metrics.history]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.stress.chaos_run",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=24_000, help="lines fed in all")
    parser.add_argument("--rate", type=float, default=250.0, help="lines per second")
    parser.add_argument("--bad-every", type=int, default=10, help="one bad line every N")
    parser.add_argument("--outage-s", type=float, default=5.0, help="each broker outage")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--bundle", type=Path, help="a pump bundle to use instead of fitting")
    parser.add_argument("--refit", action="store_true", help="fit the cached bundle again")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)

    bundle, data = pump_bundle(args.refit, args.bundle)
    window = load_bundle(bundle).manifest.window.length
    names, rows = pump_rows(data)
    directory = Path(tempfile.mkdtemp(prefix="edge-chaos-"))
    broker = persistent_broker(directory / "mosquitto-db")
    print(f"work directory {directory}; bundle {bundle}", flush=True)
    with broker:
        print(f"private Mosquitto (persistence) on {broker.address}", flush=True)
        metrics = MetricsLog(broker)
        chaos = Chaos(args, bundle, Feed(names, rows, args.rate, args.seed), directory,
                      broker, metrics, window)
        chaos.write_config()
        with Collector(broker, topic=f"{PREFIX}/+/alert", client_id="chaos-pager",
                       persistent=True) as seen:
            try:
                try:
                    chaos.run()
                except (OSError, RuntimeError, subprocess.TimeoutExpired) as exc:
                    # a dead agent (broken pipe), one that does not come up or stop
                    for agent in chaos.agents:
                        print(f"\n{agent.log_path.name} (exit {agent.proc.poll()}), its "
                              f"end:\n{agent.log()[-3000:]}")
                    print(f"\nFAIL  the run stopped: {exc!r}; logs kept in {directory}")
                    return 1
                produced = {event_key(a) for agent in chaos.agents for a in agent.stdout_alerts}
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:
                    got = {event_key(m.json()) for m in seen.messages
                           if m.topic.endswith("/alert")}
                    if produced <= got:
                        break
                    time.sleep(0.2)
            finally:
                for agent in chaos.agents:
                    agent.kill()
                metrics.close()
            result = summarise(chaos, seen)
    ok = all(result["checks"].values())
    if args.json:
        args.json.write_text(json.dumps(result, indent=1, default=str))
    if ok and not args.keep:
        shutil.rmtree(directory, ignore_errors=True)
    else:
        print(f"\nlogs kept in {directory}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
