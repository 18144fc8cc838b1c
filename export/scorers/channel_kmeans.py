"""Fit the `channel_kmeans` scorer (`edge.scorers.channel_kmeans`): per judged channel, KMeans
centroids of its subsequences of `rows` values and the scale of its distances.

Judged are the channels with more than two distinct values in the training rows: a constant
one is the `flat` scorer's, and a two-valued one is a state (a command, a switch, a valve open
or shut) whose every step a shape distance would take for an anomaly. A channel with twins
(`export.twins`) is left to the per-sensor kinds unless `twins` says otherwise: its shape is
mostly the shared process's (a pollution episode moves every particle sensor of a pod), whose
variety a few days of training do not cover, so judging each twin's shape raised false alarms
on pods without catching a fault the twin kinds missed. Per channel, the
centroids are fitted on the subsequences of the first `1 - spread_share` of the training
windows and the channel's spread is the largest distance of the rest's (floored at
`MIN_SPREAD` scaled units), so each channel is judged in units of its own unseen-but-normal
variation. A slow channel (its level wanders: `export.window_features.slow_channels`, the test
`window_features` uses) is judged by its shape alone, each subsequence's mean taken off
(`centre_slow`). The device's memory of each channel's own recent subsequences (`memory`
of them, the `memory_gap` newest left out, a shape known once seen `memory_k` times: the lag
memory's settings, `edge.memory`) lowers a channel's distance to shapes it keeps seeing after
training; `memory` 0 leaves it out. No judged channel, no scorer.
"""

from __future__ import annotations

import warnings
from typing import Any, ClassVar

import numpy as np

from edge.bundle import Threshold
from export.errors import InputError
from export.kmeans import fit_kmeans
from export.scorers.base import (
    FloatArray,
    Option,
    TrainerScorer,
    TrainingData,
    flag,
    judged_channels,
)
from export.scorers.twin import sensor_threshold
from export.twins import twin_groups
from export.window_features import slow_channels

MIN_SPREAD = 1e-3  # scaled units: a channel whose held-back subsequences all sit on centroids


def centroids_of(subsequences: FloatArray, k: int, seed: int) -> FloatArray:
    """KMeans centroids (at most k, at most the distinct subsequences)."""
    distinct = np.unique(subsequences, axis=0).shape[0]
    n = max(1, min(k, distinct))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning on few distinct points
        km = fit_kmeans(subsequences, n, 4, seed)
    return np.asarray(km.cluster_centers_, dtype=np.float64)


def nearest(x: FloatArray, centroids: FloatArray) -> FloatArray:
    """(N,) Euclidean distance of each row of x to its nearest centroid."""
    d2 = ((x[:, None, :] - centroids[None, :, :]) ** 2).sum(axis=2)
    return np.asarray(np.sqrt(d2.min(axis=1)))


class ChannelKmeansTrainer(TrainerScorer):
    kind = "channel_kmeans"
    options: ClassVar[dict[str, Option]] = {
        "rows": Option(int, 16, "rows per subsequence (at most the window)"),
        "clusters": Option(int, 16, "KMeans centroids per channel"),
        "spread_share": Option(float, 0.2, "share of the training windows held back for each "
                                           "channel's spread"),
        "centre_slow": Option(flag, True,
                              "judge slow channels (window_features' slow test) by shape alone"),
        "twins": Option(flag, False,
                        "judge channels that have twins too (by default the per-sensor kinds "
                        "judge them)"),
        "memory": Option(int, 3000, "recent subsequences the device remembers per channel "
                                    "(0: no memory)"),
        "memory_gap": Option(int, 50, "the newest subsequences left out of the memory"),
        "memory_k": Option(int, 2, "a shape is known once remembered this many times"),
    }

    @classmethod
    def fit(cls, data: TrainingData, options: dict[str, Any]) -> list[dict[str, Any]]:
        windows = data.windows
        if windows is None:
            raise InputError("--scorers channel_kmeans needs the training windows")
        rows = min(int(options["rows"]), windows.shape[1])
        k, share = int(options["clusters"]), float(options["spread_share"])
        if rows < 1 or k < 1 or not 0.0 < share < 1.0:
            raise InputError("--scorer-options channel_kmeans: rows and clusters must be at "
                             "least 1, spread_share between 0 and 1")
        size, gap, kth = (int(options.get(o, cls.options[o].default))
                          for o in ("memory", "memory_gap", "memory_k"))
        if size > 0 and not (1 <= gap < size and kth >= 1):
            raise InputError(f"--scorer-options channel_kmeans: memory_gap {gap} must be at "
                             f"least 1 and below memory {size}, memory_k {kth} at least 1")
        judged = judged_channels(data.rows)
        if not options.get("twins", False):
            twinned = {i for group in twin_groups(data.channels, data.rows) for i in group}
            judged = [c for c in judged if c not in twinned]
        if not judged:
            return []
        n = windows.shape[0]
        cut = max(1, min(n - 1, round(n * (1.0 - share))))
        recent = windows[:, -rows:, :]
        slow = (slow_channels(data.rows, data.config.slow_span, data.config.slow_ratio or 0.5)
                if options.get("centre_slow", True) else np.zeros(data.rows.shape[1], bool))
        centroids, spread = [], []
        for c in judged:
            x = np.nan_to_num(recent[:, :, c])
            if slow[c]:
                x = x - x.mean(axis=1, keepdims=True)
            cent = centroids_of(x[:cut], k, data.config.seed)
            held = nearest(x[cut:], cent)
            centroids.append(cent.tolist())
            spread.append(max(float(held.max()) if held.size else 0.0, MIN_SPREAD))
        spec: dict[str, Any] = {
            "name": "channel_kmeans", "kind": "channel_kmeans",
            "channels": [data.channels[c] for c in judged], "rows": rows,
            "centroids": centroids, "spread": spread, "centred": [bool(slow[c]) for c in judged]}
        if size > 0:
            spec["memory"] = {"lags": rows, "size": size, "gap": gap, "k": kth}
        return [spec]

    @classmethod
    def threshold(cls, name: str, heldout: FloatArray, data: TrainingData,
                  options: dict[str, Any]) -> Threshold:
        """On the held-out and the training windows' scores, as the per-sensor kinds: a day
        or two held out misses shapes a week of training holds (a weather front's
        temperature)."""
        return sensor_threshold(name, heldout, data)
