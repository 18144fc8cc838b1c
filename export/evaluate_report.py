"""The evaluation report: three PNGs and one self-contained HTML page (PNGs embedded base64).

- `<stem>_timeline.png`: the smoothed ensemble score and each scorer's normalised score over
  time (1 = threshold), labelled rows and open alerts shaded, alert starts marked;
- `<stem>_attribution.png`: for each alert, the channels' shares of the reconstruction error
  at its start (what the alert message says drove it);
- `<stem>_pr.png`: precision-recall curves of the ensemble and scorer scores, with the
  operating points of the agent's decision and of each scorer's threshold.

matplotlib's object API only (no pyplot), so no global backend state.
"""

from __future__ import annotations

import base64
import html
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from export.evaluation import DECISION, OVER, Evaluation, summary_lines
from export.metrics import events_from_labels, pr_curve

MAX_ALERT_BARS = 40


def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _times(ts: np.ndarray) -> np.ndarray:
    return (np.asarray(ts) * 1e6).astype("datetime64[us]")


def _shade(ax: Any, t: np.ndarray, runs: list[tuple[int, int]], color: str, alpha: float,
           label: str | None) -> None:
    for k, (a, b) in enumerate(runs):
        ax.axvspan(t[a], t[min(b, len(t)) - 1], color=color, alpha=alpha, lw=0,
                   label=label if k == 0 else None)


def plot_timeline(ev: Evaluation, path: Path) -> Path:
    r = ev.replay
    t = _times(r.timestamps)
    names = [OVER, *r.scorers]
    fig = _figure(11.0, 1.3 + 1.5 * len(names))
    axes = fig.subplots(len(names), 1, sharex=True, squeeze=False)[:, 0]
    labelled = events_from_labels(ev.labels)
    alerting = events_from_labels(r.is_anomaly)
    outside = events_from_labels(~ev.rows)
    starts = [t[a.start_row] for a in ev.alerts]
    for ax, name in zip(axes, names, strict=True):
        values = r.score if name == OVER else r.scorers[name]
        ax.plot(t, np.clip(values, 1e-3, None), lw=0.6, color="tab:blue")
        ax.axhline(1.0, color="red", lw=0.8, ls="--", label="threshold (1.0)")
        if name == OVER:
            level = ev.manifest.decision.release_level
            ax.axhline(level, color="purple", lw=0.6, ls=":", label=f"release ({level:g})")
            ax.vlines(starts, 1e-3, 1.0, color="black", lw=0.8, label="alert start")
        ax.set_yscale("log")
        ax.set_ylabel("ensemble\n(smoothed)" if name == OVER else name, fontsize=8)
        _shade(ax, t, labelled, "orange", 0.3, "labelled anomaly")
        _shade(ax, t, alerting, "red", 0.12, "alert open")
        _shade(ax, t, outside, "grey", 0.15, "not scored (--rows)")
    axes[0].legend(fontsize=7, loc="upper left", ncol=6)
    axes[0].set_title(f"{ev.data.name}: score / threshold over time (log scale)")
    fig.savefig(path, dpi=90)
    return path


def plot_attribution(ev: Evaluation, path: Path) -> Path:
    channels = ev.manifest.channels
    shown = ev.alerts[:MAX_ALERT_BARS]
    fig = _figure(11.0, 1.6 + 0.28 * max(len(shown), 3))
    ax = fig.subplots()
    if not shown:
        ax.text(0.5, 0.5, "no alerts", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        fig.savefig(path, dpi=90)
        return path
    import matplotlib

    cmap = matplotlib.colormaps["tab20"]
    colors = {c: cmap(k % 20) for k, c in enumerate(channels)}
    labels = []
    for y, alert in enumerate(shown):
        left = 0.0
        for c in alert.start.channels:
            ax.barh(y, c.contribution, left=left, color=colors[c.name], edgecolor="white", lw=0.3)
            left += c.contribution
        hit = bool(ev.labels[alert.start_row:max(alert.end_row, alert.start_row + 1)].any())
        when = datetime.fromtimestamp(alert.start.ts_start, tz=timezone.utc)
        labels.append(f"{when:%Y-%m-%d %H:%M:%S}{'' if hit else ' (false)'}")
    ax.set_yticks(range(len(shown)), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of the reconstruction error at the alert's start")
    handles = [matplotlib.patches.Patch(color=colors[c], label=c) for c in channels]
    ax.legend(handles=handles, fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    more = len(ev.alerts) - len(shown)
    ax.set_title("channel attribution per alert" + (f" (first {len(shown)}; {more} more)"
                                                     if more > 0 else ""))
    fig.savefig(path, dpi=90)
    return path


def plot_pr(ev: Evaluation, path: Path) -> Path:
    fig = _figure(6.5, 5.0)
    ax = fig.subplots()
    truth = ev.labels[ev.rows]
    r = ev.replay
    scores = {OVER: r.score, **r.scorers}
    for k, (name, values) in enumerate(scores.items()):
        precision, recall, _ = pr_curve(truth, np.nan_to_num(values[ev.rows]))
        color = f"C{k}"
        ax.step(recall, precision, where="post", lw=1.0, color=color,
                label=f"{'ensemble' if name == OVER else name} (AP {ev.ap[name]:.3f})")
        m = ev.point[name]
        ax.plot(m.recall, m.precision, "o", color=color, ms=5)
    d = ev.point[DECISION]
    ax.plot(d.recall, d.precision, "*", color="black", ms=12, label="agent decision")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.set_title("precision-recall (dots: each score's threshold)")
    ax.legend(fontsize=7, loc="lower left")
    fig.savefig(path, dpi=90)
    return path


def _table(headers: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                   for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _alert_rows(ev: Evaluation) -> list[list[str]]:
    rows = []
    for a in ev.alerts:
        end = a.end.ts if a.end is not None else float(ev.replay.timestamps[-1])
        hit = bool(ev.labels[a.start_row:max(a.end_row, a.start_row + 1)].any())
        top = ", ".join(f"{c.name} {c.contribution:.0%}" for c in a.start.channels[:3])
        peak = (a.end or a.start).peak_score
        rows.append([a.id, datetime.fromtimestamp(a.start.ts_start, tz=timezone.utc).isoformat(),
                     f"{end - a.start.ts_start:.0f}", f"{peak:.2f}", top,
                     "yes" if hit else "no (false alarm)",
                     a.end.reason if a.end is not None else "open"])
    return rows


def write_report(ev: Evaluation, target: Path) -> tuple[Path, list[Path]]:
    """Write `target` (HTML) and the PNGs beside it; returns (page, images)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    stem = target.with_suffix("")
    images = [
        plot_timeline(ev, Path(f"{stem}_timeline.png")),
        plot_attribution(ev, Path(f"{stem}_attribution.png")),
        plot_pr(ev, Path(f"{stem}_pr.png")),
    ]
    embedded = "".join(
        f'<h2>{title}</h2><img alt="{title}" style="max-width:100%" '
        f'src="data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()}">'
        for title, p in zip(("Scores over time", "Channel attribution", "Precision-recall"),
                            images, strict=True))
    metrics = _table(
        ["score", "precision", "recall", "F1", "FAR %", "MAR %", "AP", "TP", "FP", "FN", "TN"],
        [[name, f"{m.precision:.3f}", f"{m.recall:.3f}", f"{m.f1:.3f}", f"{m.far_pct:.1f}",
          f"{m.mar_pct:.1f}", f"{ev.ap[name]:.3f}" if name in ev.ap else "", str(m.tp),
          str(m.fp), str(m.fn), str(m.tn)] for name, m in ev.point.items()])
    alerts = _table(["id", "start (UTC)", "duration s", "peak", "top channels",
                     "on a labelled event", "ended"], _alert_rows(ev)) if ev.alerts else \
        "<p>No alerts.</p>"
    m = ev.manifest
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Evaluation: {html.escape(ev.data.name)}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:auto}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:2px 6px;font-size:13px}}
pre{{background:#f6f6f6;padding:8px;font-size:12px;white-space:pre-wrap}}</style></head><body>
<h1>Evaluation of {html.escape(m.name)} {html.escape(m.version)} on
{html.escape(ev.data.name)}</h1>
<p>The file was replayed through the agent's pipeline (<code>edge-agent replay</code>: window,
score, decide); the decision is whether an alert is open on a row. Each scorer alone is its
normalised score &gt;= 1, without trigger or hysteresis.</p>
<pre>{html.escape(chr(10).join(summary_lines(ev)))}</pre>
<h2>Point metrics (scored rows {html.escape(ev.rows_text)})</h2>{metrics}
<h2>Alerts</h2>{alerts}
{embedded}
</body></html>
"""
    target.write_text(page)
    return target, images
