"""The training report: PNG plots and a small `report.html` in the bundle's `report/` folder.

The report is for people, not for the device: it is not listed in the manifest's `files`,
so it is neither checksummed nor signed and can be left out of the copy sent to a device.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edge.bundle import Manifest
from export.scoring import ENSEMBLE, WindowScores

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]


@dataclass
class ReportData:
    manifest: Manifest
    history: dict[str, list[float]]
    heldout: WindowScores  # held-out normal windows
    file_scores: WindowScores  # every window of the file
    timestamps: FloatArray
    labels: BoolArray | None
    train_rows: BoolArray
    metrics: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)  # the trainer's stage lines


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_loss(history: dict[str, list[float]], path: Path) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for key in ("loss", "val_loss"):
        if history.get(key):
            ax.plot(range(1, len(history[key]) + 1), history[key], label=key)
    ax.set_xlabel("epoch")
    ax.set_ylabel("MSE (scaled units)")
    ax.set_yscale("log")
    ax.set_title("LSTM autoencoder training")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_distributions(data: ReportData, path: Path) -> None:
    plt = _pyplot()
    scorers = data.manifest.scorers
    fig, axes = plt.subplots(len(scorers), 1, figsize=(7, 2.2 * len(scorers)), squeeze=False)
    ends = data.file_scores.ends
    for ax, scorer in zip(axes[:, 0], scorers, strict=True):
        held = data.heldout.raw[scorer.name]
        every = data.file_scores.raw[scorer.name]
        title, held_label = scorer.name, "held-out normal"
        if scorer.likelihood is not None:  # the threshold applies to the likelihood's z,
            # which needs the device's history: the whole file in order, not held-out windows
            every = data.file_scores.normalized[scorer.name] * scorer.threshold.value
            held, held_label = every, "every window of the file"
            title = f"{scorer.name}: likelihood z"
        both = np.concatenate([held, every])
        bins = np.histogram_bin_edges(both, bins=60)
        if both.min() > 0 and both.max() > 50 * np.median(both):  # heavy tail: log bins
            bins = np.geomspace(both.min(), both.max(), 61)
            ax.set_xscale("log")
        ax.hist(held, bins=bins, density=True, alpha=0.6, label=held_label)
        if data.labels is not None:
            anomalous = data.labels[ends]
            ax.hist(every[anomalous], bins=bins, density=True, alpha=0.5, label="labelled anomaly")
        ax.axvline(
            scorer.threshold.value,
            color="red",
            linestyle="--",
            label=f"threshold ({scorer.threshold.method})",
        )
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_over_time(data: ReportData, path: Path) -> None:
    plt = _pyplot()
    scores = data.file_scores
    names = [*scores.normalized, ENSEMBLE]
    fig, axes = plt.subplots(
        len(names), 1, figsize=(10, 1.6 * len(names)), sharex=True, squeeze=False
    )
    t = (data.timestamps[scores.ends] - data.timestamps[0]) / 60.0
    for ax, name in zip(axes[:, 0], names, strict=True):
        values = scores.ensemble if name == ENSEMBLE else scores.normalized[name]
        ax.plot(t, np.maximum(values, 1e-3), lw=0.7)
        ax.axhline(1.0, color="red", lw=0.8, linestyle="--")
        ax.set_yscale("log")
        ax.set_ylabel(name, fontsize=8)
        lo, hi = ax.get_ylim()
        if data.labels is not None:
            ax.fill_between(
                t,
                lo,
                hi,
                where=data.labels[scores.ends],
                color="orange",
                alpha=0.25,
                step="mid",
                lw=0,
            )
        ax.fill_between(
            t,
            lo,
            hi,
            where=data.train_rows[scores.ends],
            color="green",
            alpha=0.08,
            step="mid",
            lw=0,
        )
        ax.set_ylim(lo, hi)
    axes[-1, 0].set_xlabel(
        "minutes from the first row (green: training rows, orange: labels; "
        "score / threshold, 1 = threshold)"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _metrics_table(metrics: dict[str, dict[str, dict[str, float]]]) -> str:
    rows = []
    for split, by_scorer in metrics.items():
        for name, m in by_scorer.items():
            rows.append(
                f"<tr><td>{html.escape(split)}</td><td>{html.escape(name)}</td>"
                f"<td>{m['precision']:.3f}</td><td>{m['recall']:.3f}</td>"
                f"<td>{m['f1']:.3f}</td><td>{m['far_pct']:.1f}</td></tr>"
            )
    if not rows:
        return "<p>No label column: no precision/recall.</p>"
    return (
        "<table><tr><th>rows</th><th>scorer</th><th>precision</th><th>recall</th>"
        "<th>F1</th><th>FAR %</th></tr>" + "".join(rows) + "</table>"
    )


def write_report(folder: Path, data: ReportData) -> Path:
    """Write the plots and `report.html` into `folder`; returns the HTML path."""
    folder.mkdir(parents=True, exist_ok=True)
    plot_loss(data.history, folder / "loss.png")
    plot_distributions(data, folder / "score_distributions.png")
    plot_over_time(data, folder / "scores_over_time.png")
    (folder / "metrics.json").write_text(json.dumps(data.metrics, indent=2) + "\n")
    m = data.manifest
    thresholds = "".join(
        f"<tr><td>{s.name}</td><td>{s.threshold.value:.6g}</td><td>{s.threshold.method}</td>"
        f"<td>{html.escape(json.dumps(s.threshold.params))}</td></tr>"
        for s in m.scorers
    )
    members = html.escape(", ".join(m.ensemble.members))
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(m.name)} training report</title>
<style>body{{font-family:sans-serif;max-width:1000px;margin:auto}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:2px 6px;font-size:13px}}
pre{{background:#f6f6f6;padding:8px;font-size:12px;white-space:pre-wrap}}</style></head><body>
<h1>Bundle {html.escape(m.name)} {html.escape(m.version)}</h1>
<p>Created {html.escape(m.created)}; channels {html.escape(", ".join(m.channels))};
window {m.window.length}; ensemble {m.ensemble.rule} of {members}.</p>
<h2>Trainer output</h2><pre>{html.escape(chr(10).join(data.lines))}</pre>
<h2>Thresholds</h2><table><tr><th>scorer</th><th>value</th><th>method</th><th>params</th></tr>
{thresholds}</table>
<h2>Labelled rows</h2>{_metrics_table(data.metrics)}
<h2>Parity</h2><pre>{html.escape(json.dumps(m.parity, indent=2))}</pre>
<h2>Training loss</h2><img src="loss.png" alt="loss curve">
<h2>Score distributions</h2><img src="score_distributions.png" alt="score distributions">
<h2>Scores over time</h2><img src="scores_over_time.png" alt="scores over time" width="100%">
</body></html>
"""
    target = folder / "report.html"
    target.write_text(page)
    return target
