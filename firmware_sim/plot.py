"""`edge-sim plot`: a PNG of a generated CSV, one panel per kind of channel, faults shaded.

matplotlib is imported only here (it comes with the `train` extra).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from firmware_sim.csvio import read_csv, read_schedule, schedule_path
from firmware_sim.faults import FAULT_TYPES

UNITS = {
    "pm25": "PM2.5 (ug/m3)",
    "o3": "O3 (ppb)",
    "no2": "NO2 (ppb)",
    "value": "value",
    "temp": "temp (C)",
    "rh": "RH (%)",
}


def panel_key(channel: str) -> str:
    """Channels that share a panel (a twin group): pm25_pms_1 -> pm25_pms, o3_2 -> o3."""
    return re.sub(r"_\d+$", "", channel)


def panel_label(key: str) -> str:
    kind, _, make = key.partition("_")
    if kind == "pm25" and make:
        return f"{UNITS[kind]}\n{make}"
    return UNITS.get(kind, key)


def _spans(data_ts: np.ndarray, anomaly: np.ndarray, fault: list[str]) -> list[dict[str, Any]]:
    """Fault intervals from the per-row labels, when no schedule file is at hand."""
    spans: list[dict[str, Any]] = []
    for i in np.nonzero(anomaly)[0].tolist():
        if spans and spans[-1]["last"] == i - 1 and spans[-1]["type"] == fault[i]:
            spans[-1]["last"], spans[-1]["t1"] = i, data_ts[i]
        else:
            spans.append({"type": fault[i], "last": i, "t0": data_ts[i], "t1": data_ts[i]})
    return spans


def plot_csv(csv_path: str | Path, out: str | Path, title: str | None = None) -> Path:
    """Draw `csv_path` to `out` (PNG); fault intervals from `<stem>.faults.json` if present."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.dates as mdates
        import matplotlib.pyplot as plt
        from matplotlib.patches import Rectangle
    except ImportError as exc:
        raise RuntimeError(
            "edge-sim plot needs matplotlib: pip install 'edge-anomaly[train]' "
            "(or pip install matplotlib)"
        ) from exc
    data = read_csv(csv_path)
    order = np.argsort(data.timestamps, kind="stable")
    when = data.timestamps[order].astype("int64").astype("datetime64[s]")
    panels: dict[str, list[int]] = {}
    for j, ch in enumerate(data.channels):
        panels.setdefault(panel_key(ch), []).append(j)
    sched = schedule_path(csv_path)
    if sched.exists():
        spans = [
            {
                "type": e["type"],
                "t0": np.datetime64(e["start"].rstrip("Z")),
                "t1": np.datetime64(e["end"].rstrip("Z")),
                "channels": set(e["channels"]),
            }
            for e in read_schedule(sched)
        ]
    else:
        raw = _spans(data.timestamps, data.anomaly, data.fault)
        spans = [
            {
                "type": s["type"],
                "t0": np.datetime64(int(s["t0"]), "s"),
                "t1": np.datetime64(int(s["t1"]), "s"),
                "channels": set(data.channels),
            }
            for s in raw
        ]
    cmap = plt.get_cmap("tab20")
    colours = {t: cmap(i % 20) for i, t in enumerate(FAULT_TYPES)}
    fig, axes = plt.subplots(
        len(panels), 1, figsize=(16, 1.6 * len(panels) + 1.2), sharex=True, squeeze=False
    )
    span_s = max(float(data.timestamps.max() - data.timestamps.min()), 1.0)
    min_width = np.timedelta64(max(1, int(span_s * 0.002)), "s")
    for ax, (key, cols) in zip(axes[:, 0], panels.items(), strict=True):
        for j in cols:
            ax.plot(when, data.values[order, j], lw=0.6, label=data.channels[j])
        mine = {data.channels[j] for j in cols}
        for s in spans:
            if not mine & s["channels"]:
                continue
            name = s["type"].split("+")[0]
            t1 = max(s["t1"], s["t0"] + min_width)
            ax.axvspan(s["t0"], t1, color=colours.get(name, "grey"), alpha=0.35, lw=0)
        ax.set_ylabel(panel_label(key), fontsize=8)
        ax.legend(loc="upper left", fontsize=7, ncol=6, framealpha=0.6)
        ax.grid(alpha=0.3)
    names = [t for t in FAULT_TYPES if any(s["type"].split("+")[0] == t for s in spans)]
    handles = [Rectangle((0, 0), 1, 1, color=colours[t], alpha=0.35) for t in names]
    if handles:
        fig.legend(
            handles,
            names,
            loc="upper right",
            ncol=len(names),
            fontsize=8,
            title="injected faults",
            title_fontsize=8,
        )
    date_format = mdates.DateFormatter("%a %d %b\n%H:%M")  # type: ignore[no-untyped-call]
    axes[-1, 0].xaxis.set_major_formatter(date_format)
    fig.suptitle(
        title
        or f"{Path(csv_path).name}: {len(data.timestamps)} rows, "
        f"{int(data.anomaly.sum())} labelled anomalous",
        x=0.01,
        ha="left",
    )
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
