"""The demo's scoring of alerts against the injected faults, its summary and its HTML report.

Which faults should raise an alert: the value faults that change what the sensors read
(spike, level_shift, drift, stuck, noise_burst, twin_disagree, slope_change). Dropouts and
timestamp glitches are data-quality faults: the agent's validation stage counts them as bad
input (null values, dropped or late readings, gaps) and an alert is not expected.

A value fault counts as caught when an alert is open at a row from its first faulty row until
`window - 1` rows after its last one (those windows still hold faulty rows); the detection
delay runs from its first row to the first such row. The same rule, as per-row labels, goes
through `export.metrics.event_metrics` for the totals; an alert overlapping no fault of either
kind is a false alarm. The per-row scores in the figure come from `edge.replay.replay_table`
over the streamed CSV: the agent's own pipeline, so its alerts are the live ones.
"""

from __future__ import annotations

import base64
import contextlib
import html
import json
import logging
import os
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from firmware_sim.faults import ROW_FAULTS

if TYPE_CHECKING:
    from edge.replay import ReplayResult
    from firmware_sim.demo_config import DemoConfig, Simulation

INPUT_FAULTS = (*ROW_FAULTS, "dropout")  # counted as bad input, no alert expected
BAD_KINDS = {  # fault type -> the agent's bad-input kinds it shows up as
    "ts_out_of_order": ("out_of_order",),
    "ts_duplicate": ("duplicate_ts",),
    "ts_gap": ("gap",),
    "dropout": ("null_value", "missing_channels", "gap"),
}


def epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def clock(ts: float, date: bool = True) -> str:
    fmt = "%Y-%m-%d %H:%M" if date else "%H:%M"
    return datetime.fromtimestamp(ts, timezone.utc).strftime(fmt)


def span(seconds: float) -> str:
    minutes = round(seconds / 60)
    return f"{minutes // 60}h{minutes % 60:02d}m" if minutes >= 60 else f"{minutes} min"


def fault_label(fault: dict[str, Any]) -> str:
    channels = fault["channels"]
    if fault["type"] in ROW_FAULTS:
        return f"{fault['type']} (timestamps)"
    where = (
        ", ".join(channels)
        if 0 < len(channels) <= 2
        else ("all channels" if not channels else f"{len(channels)} channels")
    )
    return f"{fault['type']} on {where}"


def matching_fault(
    ts: float, faults: list[dict[str, Any]], grace_s: float
) -> dict[str, Any] | None:
    for fault in faults:
        if epoch(fault["start"]) <= ts < epoch(fault["end"]) + grace_s:
            return fault
    return None


def alert_line(alert: dict[str, Any], faults: list[dict[str, Any]], grace_s: float) -> str:
    """One readable line per alert message: time, device, state, severity, score, channels."""
    state = alert["state"]
    head = (
        f"      ALERT {state:<6} {clock(alert['ts_epoch'])}  {alert['device']}  "
        f"{alert['severity']:<8}"
    )
    if state == "end":
        took = alert["ts_epoch"] - alert["ts_start_epoch"]
        return (
            f"{head} after {span(took)} ({alert.get('reason', '')}), peak score "
            f"{alert['peak_score'] or 0:.2f}"
        )
    top = (
        ", ".join(
            f"{c['name']} {c['contribution']:.0%}" + (f" {c['fence']}" if c["fence"] else "")
            for c in alert["channels"]
        )
        or "-"
    )
    line = f"{head} score {alert['score']:.2f}  channels: {top}"
    if state == "start":
        fault = matching_fault(alert["ts_start_epoch"], faults, grace_s)
        line += (
            f"   <- injected {fault_label(fault)} since {clock(epoch(fault['start']), False)}"
            if fault
            else "   <- no injected fault here (false alarm)"
        )
    return line


@dataclass
class AlertSpan:
    id: str
    start: float
    end: float
    peak: float
    severity: str
    channels: list[str]
    reason: str
    fault: str = ""  # the fault it overlaps, "" for a false alarm


@dataclass
class FaultOutcome:
    fault: dict[str, Any]
    start: float
    end: float  # exclusive
    expected: bool  # a value fault: an alert is expected
    caught: bool = False
    delay_s: float | None = None
    alert_id: str = ""
    already_open: bool = False  # the alert had started before the fault did
    note: str = ""


@dataclass
class Evaluation:
    ts: np.ndarray
    predicted: np.ndarray
    faults: list[FaultOutcome]
    spans: list[AlertSpan]
    events: Any  # export.metrics.EventMetrics over the value faults
    events_all: Any  # the same over every fault (for false alarms)
    replay: ReplayResult
    window: int
    release_level: float
    thresholds: dict[str, float] = field(default_factory=dict)
    messages: dict[str, int] = field(default_factory=dict)  # live alert messages by state
    members: list[str] = field(default_factory=list)  # the ensemble's scorers

    @property
    def false_alarms(self) -> list[AlertSpan]:
        return [s for s in self.spans if not s.fault]


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def alert_spans(alerts: list[dict[str, Any]], last_ts: float) -> list[AlertSpan]:
    spans: dict[str, AlertSpan] = {}
    for a in alerts:
        found = spans.get(a["id"])
        if found is None:
            found = spans[a["id"]] = AlertSpan(
                a["id"], a["ts_start_epoch"], last_ts, 0.0, a["severity"], [], ""
            )
        found.peak = max(found.peak, a.get("peak_score") or 0.0, a.get("score") or 0.0)
        found.channels = found.channels or [c["name"] for c in a["channels"]]
        if a["severity"] == "critical":
            found.severity = "critical"
        if a["state"] == "end":
            found.end, found.reason = a["ts_epoch"], a.get("reason", "")
    return sorted(spans.values(), key=lambda s: s.start)


def evaluate(
    cfg: DemoConfig, sim: Simulation, alerts: list[dict[str, Any]], bundle: Path
) -> Evaluation:
    from edge.bundle import load_bundle
    from edge.decide import AlertOptions
    from edge.engine import ScoringEngine
    from edge.replay import replay_table
    from edge.table import read_table
    from export.metrics import event_metrics

    loaded = load_bundle(bundle)
    manifest = loaded.manifest
    window, period = manifest.window.length, cfg.period_s
    grace = (window - 1) * period
    table = read_table(sim.stream_csv, channels=list(manifest.channels))
    logging.getLogger("edge").setLevel(logging.ERROR)  # the agent's log already has the details
    with _quiet_stderr():  # the TFLite runtime announces its delegate on stderr
        engine = ScoringEngine(loaded)
    replay = replay_table(
        engine, table, device=cfg.device_id, options=AlertOptions(update_every_s=1800.0)
    )
    ts = np.unique(sim.stream.timestamps)
    spans = alert_spans(alerts, float(ts[-1]))
    predicted = np.zeros(ts.size, dtype=bool)
    for s in spans:
        predicted |= (ts >= s.start) & (ts <= s.end)
    outcomes, truth_value, truth_all = [], np.zeros_like(predicted), np.zeros_like(predicted)
    for fault in sim.stream_faults:
        start, end = epoch(fault["start"]), epoch(fault["end"])
        expected = fault["type"] not in INPUT_FAULTS
        rows = (ts >= start) & (ts < end + grace)
        truth_all |= rows
        if expected:
            truth_value |= rows
        outcome = FaultOutcome(fault, start, end, expected)
        hits = np.flatnonzero(rows & predicted)
        if hits.size:
            first = float(ts[hits[0]])
            outcome.caught, outcome.delay_s = True, max(0.0, first - start)
            hit = next((s for s in spans if s.start <= first <= s.end), None)
            if hit is not None:
                outcome.alert_id, outcome.already_open = hit.id, hit.start < start
        outcomes.append(outcome)
    for s in spans:
        hit = next((o for o in outcomes if s.start < o.end + grace and s.end >= o.start), None)
        s.fault = fault_label(hit.fault) if hit else ""
    days = len(ts) * period / 86400
    return Evaluation(
        ts,
        predicted,
        outcomes,
        spans,
        event_metrics(truth_value, predicted, ts, days),
        event_metrics(truth_all, predicted, ts, days),
        replay,
        window,
        manifest.decision.release_level,
        {s.name: s.threshold.value for s in manifest.scorers},
        dict(Counter(a["state"] for a in alerts)),
        list(manifest.ensemble.members),
    )


def summarize(
    cfg: DemoConfig,
    sim: Simulation,
    ev: Evaluation,
    device_metrics: dict[str, Any],
    totals: dict[str, Any],
    ha: dict[str, Any],
    seconds: dict[str, float],
) -> dict[str, Any]:
    bad = dict(device_metrics.get("bad") or {})
    for o in ev.faults:
        if not o.expected:
            counts = {k: bad[k] for k in BAD_KINDS.get(o.fault["type"], ()) if bad.get(k)}
            o.note = "bad input: " + (
                ", ".join(f"{k} {v}" for k, v in counts.items()) if counts else "none counted"
            )
            if o.caught:
                o.note += f"; alert {o.alert_id} open"
    expected = [o for o in ev.faults if o.expected]
    delays = [o.delay_s for o in expected if o.delay_s is not None]
    live_ids = [s.id for s in ev.spans]
    replay_ids = sorted({e.id for e in ev.replay.events})
    states = Counter(s["anomaly"] for s in ha["states"])
    return {
        "device": cfg.device_id,
        "train_days": cfg.train_days,
        "stream_days": cfg.stream_days,
        "seed": cfg.seed,
        "fault_seed": cfg.fault_seed,
        "speed": cfg.speed,
        "faults_injected": len(ev.faults),
        "value_faults": len(expected),
        "caught": sum(o.caught for o in expected),
        "missed": sum(not o.caught for o in expected),
        "false_alarms": len(ev.false_alarms),
        "false_alarms_per_day": round(len(ev.false_alarms) / max(cfg.stream_days, 1e-9), 2),
        "delay_median_s": float(np.median(delays)) if delays else None,
        "delay_mean_s": float(np.mean(delays)) if delays else None,
        "event_metrics": ev.events.as_dict(),
        "event_metrics_all_faults": ev.events_all.as_dict(),
        "alerts": len(ev.spans),
        "alert_messages": ev.messages,
        "replay_alert_ids_match_live": sorted(live_ids) == replay_ids,
        "bad_input": bad,
        "agent_readings": totals.get("readings"),
        "windows_scored": totals.get("windows_scored"),
        "home_assistant": {
            "discovery_topics": sorted(ha["discovery"]),
            "state_messages": dict(states),
        },
        "per_fault": [
            {
                "type": o.fault["type"],
                "channels": o.fault["channels"],
                "start": o.fault["start"],
                "end": o.fault["end"],
                "alert_expected": o.expected,
                "caught": o.caught,
                "delay_s": o.delay_s,
                "alert_id": o.alert_id,
                "note": o.note,
            }
            for o in ev.faults
        ],
        "alert_list": [s.__dict__ for s in ev.spans],
        "thresholds": ev.thresholds,
        "seconds": {k: round(v, 1) for k, v in seconds.items()},
    }


def _caught(o: FaultOutcome) -> str:
    if not o.caught:
        return "missed"
    if o.already_open:
        return f"CAUGHT: alert {o.alert_id} was already open"
    return f"CAUGHT after {span(o.delay_s or 0.0)}: alert {o.alert_id}"


def summary_lines(summary: dict[str, Any], ev: Evaluation) -> list[str]:
    lines = [f"      {'injected fault':<34} {'start':<12} {'length':>7}  outcome"]
    for o in ev.faults:
        if o.expected:
            outcome = _caught(o)
        else:
            outcome = o.note + "  (data quality: counted, no alert expected)"
        lines.append(
            f"      {fault_label(o.fault)[:34]:<34} {clock(o.start)[5:]:<12} "
            f"{span(o.end - o.start):>7}  {outcome}"
        )
    n, caught = summary["value_faults"], summary["caught"]
    delay = ""
    if summary["delay_median_s"] is not None:
        delay = (
            f"; detection delay median {span(summary['delay_median_s'])}, "
            f"mean {span(summary['delay_mean_s'])}"
        )
    lines.append(
        f"      caught {caught} of {n} value faults"
        + (f" ({caught / n:.0%})" if n else "")
        + f", missed {summary['missed']}"
        + delay
    )
    fa = ev.false_alarms
    lines.append(
        f"      false alarms: {len(fa)} alert(s) overlapping no injected fault "
        f"({summary['false_alarms_per_day']:g} per day)"
        + (": " + ", ".join(clock(s.start)[5:] for s in fa) if fa else "")
    )
    em = summary["event_metrics"]
    lines.append(
        f"      export.metrics.event_metrics: {em['caught']}/{em['n_events']} events, "
        f"false-alarm events {summary['event_metrics_all_faults']['false_alarm_events']},"
        f" median delay "
        + (span(em["median_delay_s"]) if em["median_delay_s"] is not None else "-")
    )
    bad = ", ".join(f"{k} {v}" for k, v in summary["bad_input"].items()) or "none"
    lines.append(f"      alerts: {summary['alerts']} over MQTT; the agent counted bad input: {bad}")
    same = "the same" if summary["replay_alert_ids_match_live"] else "DIFFERENT"
    lines.append(
        f"      edge-agent replay of the streamed CSV (same pipeline, batched) gives "
        f"{same} alert ids as the live run"
    )
    ha = summary["home_assistant"]
    lines.append(
        f"      Home Assistant: {len(ha['discovery_topics'])} discovery configs "
        f"retained, state messages {ha['state_messages'] or 'none'}"
    )
    return lines


# -- the report -------------------------------------------------------------------------------
def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _dates(ts: np.ndarray) -> np.ndarray:
    return ts.astype("datetime64[s]")  # type: ignore[no-any-return]


def plot_stream(path: Path, cfg: DemoConfig, sim: Simulation, ev: Evaluation) -> Path:
    plt = _pyplot()
    import matplotlib.dates as mdates
    from matplotlib.ticker import FormatStrFormatter, NullFormatter

    stream = sim.stream
    order = np.argsort(stream.timestamps, kind="stable")
    ts, values = stream.timestamps[order], stream.values[order]
    t = _dates(ts)
    names = list(stream.channels)
    groups = [
        ("PM2.5 (ug/m3)", [n for n in names if n.startswith("pm25")]),
        ("O3, NO2 (ppb)", [n for n in names if n.startswith(("o3", "no2"))]),
        ("temp (C), RH (%)", [n for n in names if n in ("temp_c", "rh_pct")]),
    ]
    fig, axes = plt.subplots(
        len(groups) + 1,
        1,
        figsize=(16, 11),
        sharex=True,
        gridspec_kw={"height_ratios": [3, 3, 2, 3]},
    )
    for ax, (label, chans) in zip(axes, groups, strict=False):
        for ch in chans:
            ax.plot(t, values[:, names.index(ch)], lw=0.6, label=ch)
        ax.set_ylabel(label)
        ax.legend(loc="upper left", bbox_to_anchor=(1.005, 1.0), fontsize=7, frameon=False)
    score_ax = axes[-1]
    rt = _dates(ev.replay.timestamps)
    for name, col in ev.replay.scorers.items():
        member = name in ev.members
        if not np.isfinite(col).any() or (name in ("iqr", "range") and not member):
            continue
        score_ax.plot(
            rt,
            np.clip(col, 0.1, None),
            lw=0.6 if member else 0.4,
            alpha=0.8 if member else 0.35,
            ls="-" if member else "--",
            label=name if member else f"{name} (not in the ensemble)",
        )
    score_ax.plot(
        rt, np.clip(ev.replay.score, 0.1, None), lw=1.0, color="black", label="ensemble (smoothed)"
    )
    score_ax.axhline(1.0, color="red", ls="--", lw=1, label="threshold (1.0)")
    score_ax.axhline(
        ev.release_level, color="red", ls=":", lw=0.8, label=f"release ({ev.release_level:g})"
    )
    score_ax.set_yscale("log")
    score_ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
    score_ax.yaxis.set_minor_formatter(NullFormatter())
    score_ax.set_ylim(0.1, None)
    score_ax.set_ylabel("score / threshold")
    score_ax.legend(loc="upper left", bbox_to_anchor=(1.005, 1.0), fontsize=7, frameon=False)
    for o in ev.faults:
        color = "tab:orange" if o.expected else "tab:gray"
        for ax in axes:
            ax.axvspan(
                _dates(np.array([o.start]))[0],
                _dates(np.array([o.end]))[0],
                color=color,
                alpha=0.25,
                lw=0,
            )
        axes[0].annotate(
            o.fault["type"],
            (_dates(np.array([o.start]))[0], 1.0),
            xycoords=("data", "axes fraction"),
            fontsize=7,
            rotation=90,
            va="top",
            ha="right",
            color=color,
        )
    for s in ev.spans:
        a, b = _dates(np.array([s.start, s.end]))
        score_ax.axvspan(a, b, ymin=0.0, ymax=0.06, color="red" if s.fault else "purple")
        for ax in axes[:-1]:
            ax.axvspan(a, b, color="red", alpha=0.08, lw=0)
    axes[0].set_title(
        f"{cfg.device_id}: {cfg.stream_days:g} streamed days; shaded orange = injected value "
        "fault, grey = data-quality fault, red = alert (bar under the scores: red caught, "
        "purple false alarm)",
        fontsize=9,
    )
    axes[-1].xaxis.set_major_formatter(mdates.DateFormatter("%m-%d %H:%M"))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _table(headers: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def write_report(
    out: Path, cfg: DemoConfig, sim: Simulation, ev: Evaluation, summary: dict[str, Any]
) -> tuple[Path, list[Path]]:
    png = plot_stream(out / "report" / "stream_scores.png", cfg, sim, ev)
    image = base64.b64encode(png.read_bytes()).decode()
    e = html.escape
    faults = [
        [
            e(fault_label(o.fault)),
            clock(o.start),
            span(o.end - o.start),
            "yes" if o.expected else "no (data quality)",
            e(_caught(o) if o.expected else o.note),
        ]
        for o in ev.faults
    ]
    alerts = [
        [
            e(s.id),
            clock(s.start),
            clock(s.end),
            span(s.end - s.start),
            f"{s.peak:.2f}",
            e(s.severity),
            e(", ".join(s.channels)),
            e(s.fault or "false alarm"),
            e(s.reason),
        ]
        for s in ev.spans
    ]
    training = out / "bundle" / "report" / "report.html"
    link = (
        '<p>Training report: <a href="bundle/report/report.html">bundle/report/report.html</a></p>'
        if training.exists()
        else ""
    )
    body = f"""<!doctype html><html><head><meta charset="utf-8">
<title>edge-anomaly demo: {e(cfg.device_id)}</title>
<style>body{{font-family:sans-serif;margin:1.5em;max-width:1500px}}
table{{border-collapse:collapse;font-size:13px;margin:.5em 0 1.5em}}
td,th{{border:1px solid #ccc;padding:3px 7px;text-align:left}}th{{background:#eee}}
img{{max-width:100%}}code{{background:#f4f4f4}}</style></head><body>
<h1>edge-anomaly demo: {e(cfg.device_id)}</h1>
<p>Trained on {cfg.train_days:g} simulated days of an air-quality pod (seed {cfg.seed}), then
streamed the pod's next {cfg.stream_days:g} days with new faults (fault seed {cfg.fault_seed})
at {cfg.speed:g}x through a local Mosquitto to <code>edge-agent run</code>.</p>
<h2>Summary</h2>
<ul><li>value faults caught: <b>{summary["caught"]} of {summary["value_faults"]}</b>,
missed {summary["missed"]}; detection delay median
{span(summary["delay_median_s"]) if summary["delay_median_s"] is not None else "-"}</li>
<li>false alarms: <b>{summary["false_alarms"]}</b>
({summary["false_alarms_per_day"]:g} per day)</li>
<li>alerts over MQTT: {summary["alerts"]}; the same file through
<code>edge-agent replay</code> gives {
        "the same" if summary["replay_alert_ids_match_live"] else "different"
    } alert ids</li>
<li>bad input counted by the agent: {e(json.dumps(summary["bad_input"]))}</li>
<li>thresholds (raw scores; the figure shows score / threshold):
{e(json.dumps({k: round(v, 4) for k, v in summary["thresholds"].items()}))}</li></ul>
<h2>Stream, scores, thresholds, alerts and injected faults</h2>
<img alt="stream and scores" src="data:image/png;base64,{image}">
<h2>Injected faults</h2>
{_table(["fault", "start (UTC)", "length", "alert expected", "outcome"], faults)}
<h2>Alerts</h2>
{
        _table(
            [
                "id",
                "start",
                "end",
                "length",
                "peak score",
                "severity",
                "top channels",
                "injected fault",
                "end reason",
            ],
            alerts,
        )
    }
{link}
<p>Timings (s): {e(json.dumps(summary["seconds"]))}</p>
</body></html>
"""
    path = out / "report.html"
    path.write_text(body)
    return path, [png]
