"""KMeans fits that give the same centroids whatever the machine's thread count.

scikit-learn's Lloyd iterations sum each OpenMP thread's share of the points and then the
threads' sums, so the last bits of a centroid depend on how many threads ran: a bundle fitted
on a Dask worker (one thread) differed from `edge-train fit` of the same file on a 2-core
workstation. One thread fixes the order of the sums; the fits here are small (thousands of
points, 16 centroids), so the cost is a fraction of a second.
"""

from __future__ import annotations

from typing import Any

import numpy.typing as npt
from threadpoolctl import threadpool_limits


def fit_kmeans(x: npt.ArrayLike, k: int, n_init: int, seed: int) -> Any:
    """A fitted `sklearn.cluster.KMeans` of k clusters, on one thread."""
    from sklearn.cluster import KMeans

    with threadpool_limits(limits=1):
        return KMeans(n_clusters=k, n_init=n_init, random_state=seed).fit(x)
