"""Twin sensors: co-located sensors of one make and quantity (`o3_1`, `o3_2`, `o3_3`).

A sensor that disagrees with its twins is a fault whatever the weather does to all of them,
so the distance model gets, for each member of a twin group, its deviation from the mean of
the other members. That residual is linear in the scaled rows (`rows @ matrix`), so it runs
in the ONNX graph as one MatMul.

Groups come from the names (the same stem followed by `_<n>` or `<n>`), confirmed on the
training data: members whose scaled values do not correlate with the rest of their group are
left out, so a naming coincidence does not make a feature.
"""

from __future__ import annotations

import re
from collections import defaultdict

import numpy as np
import numpy.typing as npt

from edge.scorers.twin import twin_matrix

FloatArray = npt.NDArray[np.float64]

_MEMBER = re.compile(r"^(?P<stem>.+)_(?P<n>\d+)$|^(?P<bare>.*[A-Za-z])(?P<m>\d+)$")


def name_groups(channels: list[str]) -> list[list[int]]:
    """Indices of channels that share a stem and differ only in a trailing number."""
    groups: dict[str, list[int]] = defaultdict(list)
    for index, name in enumerate(channels):
        match = _MEMBER.match(name)
        if match:
            groups[match.group("stem") or match.group("bare")].append(index)
    return [members for members in groups.values() if len(members) >= 2]


def twin_groups(channels: list[str], rows: FloatArray, min_corr: float = 0.5) -> list[list[int]]:
    """Name groups whose members correlate (>= `min_corr`) with the mean of their twins."""
    confirmed = []
    for members in name_groups(channels):
        kept = []
        for i in members:
            others = [j for j in members if j != i]
            twin_mean = rows[:, others].mean(axis=1)
            varies = rows[:, i].std() > 1e-12 and twin_mean.std() > 1e-12
            if varies and np.corrcoef(rows[:, i], twin_mean)[0, 1] >= min_corr:
                kept.append(i)
        if len(kept) >= 2:
            confirmed.append(kept)
    return confirmed


def residual_matrix(groups: list[list[int]], channels: int) -> FloatArray:
    """(channels, members) matrix R: (rows @ R)[:, k] = member k minus the mean of its twins
    (the device's `twin` scorer uses the same matrix)."""
    if not groups:
        return np.zeros((channels, 0))
    return twin_matrix(groups, channels)
