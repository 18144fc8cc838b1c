"""Where NAB goes wrong: one panel per file with a missed window or a false alarm.

Each panel shows the file's values, its anomaly windows (shaded), the end of the probationary
period (dotted), and the alert starts: green inside a window, red outside every window (a
false alarm). The files without a miss or a false alarm are left out, so the plot is the list
of what to look at.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from export.metrics import events_from_labels
from export.nab import NabFile


@dataclass(frozen=True)
class FileErrors:
    """A file's windows (first and last row of each), and which alert starts fell where."""

    name: str
    windows: list[tuple[int, int]]
    caught: list[bool]  # per window: an alert start inside it
    inside: list[int]  # rows of the alert starts inside a window
    false_alarms: list[int]  # rows of the alert starts outside every window, after probation

    @property
    def wrong(self) -> bool:
        return bool(self.false_alarms) or not all(self.caught)


def file_errors(f: NabFile, starts: npt.ArrayLike) -> FileErrors:
    rows = np.flatnonzero(np.asarray(starts, dtype=bool))
    labels = f.labels()
    # windows wholly in the probationary period are not scored (as in NAB)
    windows = [(a, stop - 1) for a, stop in events_from_labels(labels)
               if stop - 1 >= f.probation_rows]
    caught = [bool(((rows >= a) & (rows <= b)).any()) for a, b in windows]
    inside = [int(r) for r in rows if labels[r]]
    false_alarms = [int(r) for r in rows if not labels[r] and r >= f.probation_rows]
    return FileErrors(f.name, windows, caught, inside, false_alarms)


def plot_errors(files: Sequence[NabFile], starts: Sequence[npt.ArrayLike], path: Path
                ) -> list[FileErrors]:
    """Plot the files with a missed window or a false alarm to `path` (PNG); those files."""
    from matplotlib.figure import Figure  # no pyplot: no global backend state

    wrong = [(f, e) for f, s in zip(files, starts, strict=True)
             if (e := file_errors(f, s)).wrong]
    fig = Figure(figsize=(14.0, 1.9 * max(1, len(wrong)) + 0.6), layout="constrained")
    axes = np.atleast_1d(fig.subplots(max(1, len(wrong)), 1))
    for ax, (f, e) in zip(axes, wrong, strict=False):
        ax.plot(f.values, color="tab:blue", lw=0.6)
        for (a, b), hit in zip(e.windows, e.caught, strict=True):
            ax.axvspan(a, b, color="tab:green" if hit else "tab:orange", alpha=0.25, lw=0)
        ax.axvline(f.probation_rows, color="black", ls=":", lw=0.8)
        for r in e.inside:
            ax.axvline(r, color="tab:green", lw=1.0)
        for r in e.false_alarms:
            ax.axvline(r, color="tab:red", lw=1.0)
        ax.set_title(f"{f.name}: windows caught {sum(e.caught)}/{len(e.windows)}, "
                     f"false alarms {len(e.false_alarms)}", fontsize=9, loc="left")
        ax.tick_params(labelsize=7)
    if not wrong:
        axes[0].set_title("no missed window and no false alarm")
    fig.suptitle("NAB: alert starts in a window (green line), outside every window (red); "
                 "windows caught (green) or missed (orange); probation ends at the dotted line",
                 fontsize=10)
    fig.savefig(path, dpi=70)
    return [e for _, e in wrong]
