"""Recent-pattern memory: how far a window's lag vector is from what this device itself saw
lately. Stateful, one `LagMemory` per device and scorer.

The distance model compares a lag vector with the centroids of the training stretch only, so
a regime the device settles into after training (a new load level, a recurring burst) stays
"far" for ever and keeps raising alerts. The memory keeps the device's own last `size` lag
vectors; window g is compared with those of windows g-size .. g-gap (the `gap` most recent
ones overlap the current window and would match it trivially), and the scorer's raw score
becomes min(distance to the centroids, distance to the k-th nearest remembered vector). Taking
the k-th nearest (not the nearest) keeps a single past anomaly from excusing its repeat: a
pattern is "known" once the device saw it about k times.

Taught vectors (`teach`, from a `feedback` "normal" command, `edge.feedback`) are kept apart
from the rolling ones and never roll out: a window's distance becomes the smaller of the k-th
nearest remembered distance and the distance to the nearest taught vector (k = 1: a person
said the pattern is normal). At most `size` are held; teaching more forgets the oldest taught.

Batch-invariant: window g sees exactly the vectors of windows g-size .. g-gap whatever the
batch split, and each distance is computed from the same two float64 vectors, so a replay
batch yields the scores of the live path to the bit.

Examples:
    >>> from edge.bundle import MemorySpec
    >>> memory = LagMemory(MemorySpec(lags=1, size=100, gap=2, k=1))
    >>> vectors = np.array([[0.0], [5.0], [0.1], [5.1], [0.0]])
    >>> memory.distances(vectors).round(2).tolist()   # window 2 sees window 0, 3 sees 0-1...
    [inf, inf, 0.1, 0.1, 0.0]
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from edge.scorers.spec import MemorySpec, TaughtSpec

FloatArray = npt.NDArray[np.float64]
BLOCK = 64  # windows per distance block: two BLOCK x (size + BLOCK) float64 work arrays


def _add_squared_distances(a: FloatArray, b: FloatArray, out: FloatArray,
                           scratch: FloatArray) -> None:
    """out (m, n) += the squared distances between the rows of a (m, F) and b (n, F), summed
    feature by feature in order: each pair's bits depend on the two vectors only. In place,
    because replay scores thousands of windows a call and fresh (m, n) arrays each time cost
    more than the arithmetic."""
    columns = np.ascontiguousarray(b.T)
    for f in range(a.shape[1]):
        np.subtract(a[:, f, None], columns[f][None, :], out=scratch)
        np.multiply(scratch, scratch, out=scratch)
        out += scratch


def _summed(terms: list[FloatArray]) -> FloatArray:
    """The terms added one after the other (the same bits whatever the batch's length)."""
    total = np.array(terms[0], dtype=np.float64)
    for term in terms[1:]:
        total += term
    return total


def nearest_distances(vectors: FloatArray, references: FloatArray) -> FloatArray:
    """Distance of each vector to its nearest reference, block by block (elementwise, so
    exact whatever the batch split)."""
    out = np.empty(len(vectors))
    t = len(references)
    d2, scratch = np.empty((BLOCK, t)), np.empty((BLOCK, t))
    for start in range(0, len(vectors), BLOCK):
        block = vectors[start : start + BLOCK]
        m = len(block)
        d2[:m].fill(0.0)
        _add_squared_distances(block, references, d2[:m], scratch[:m])
        out[start : start + m] = np.sqrt(d2[:m].min(axis=1))
    return out


def nearest_scaled_distances(vectors: FloatArray, references: FloatArray,
                             most: float) -> FloatArray:
    """Distance of each vector x to its nearest reference v taken at the size that fits x
    best within [1/most, most] times its own: min over v of |x - s v|, s the least-squares
    factor <x, v> / <v, v> clipped to that range (most = 1: the plain nearest distance). Each
    pair's sums run feature by feature in order, so any batch split gives the same bits."""
    if most <= 1.0:
        return nearest_distances(vectors, references)
    out = np.empty(len(vectors))
    vv = _summed([np.square(references[:, f]) for f in range(references.shape[1])])
    safe = np.where(vv > 0, vv, 1.0)
    for start in range(0, len(vectors), BLOCK):
        block = vectors[start : start + BLOCK]
        xx = _summed([np.square(block[:, f]) for f in range(block.shape[1])])
        dot = _summed([block[:, f, None] * references[None, :, f]
                       for f in range(block.shape[1])])
        scale = np.clip(dot / safe, 1.0 / most, most)
        d2 = xx[:, None] - 2.0 * scale * dot + scale * scale * vv[None, :]
        out[start : start + len(block)] = np.sqrt(np.maximum(d2.min(axis=1), 0.0))
    return out


def taught_width(held: FloatArray | None, taught: FloatArray) -> int | None:
    """The width a memory's new taught rows must have: that of the rows it holds, else of
    those taught before; None: any."""
    if held is not None:
        return int(held.shape[1])
    return int(taught.shape[1]) if taught.size else None


def append_taught(taught: FloatArray, kept: FloatArray, size: int) -> tuple[FloatArray, int]:
    """`kept` after `taught`, the oldest beyond `size` forgotten: (the rows, how many were
    forgotten)."""
    joined = np.vstack([taught, kept]) if taught.size else kept
    forgotten = max(0, len(joined) - size)
    return np.array(joined[forgotten:]), forgotten


def restored_taught(saved: npt.ArrayLike, ring: FloatArray, limit: int, what: str,
                    unit: str) -> FloatArray:
    """Saved taught rows checked against the ring they were saved with (at most `limit`
    rows of the ring's width); an empty (0, 0) array when none were saved."""
    taught = np.asarray(saved, dtype=np.float64)
    if taught.size and (taught.ndim != 2 or taught.shape[0] > limit or (
            ring.size and taught.shape[1] != ring.shape[1])):
        raise ValueError(f"{what} of shape {taught.shape} do not fit a memory of {limit} "
                         f"{unit} of shape {ring.shape[1:]}")
    return taught.copy() if taught.size else np.zeros((0, 0))


def ring_latest(ring: FloatArray | None, count: int, size: int, n: int) -> FloatArray:
    """The last `n` rows of a ring of `size` slots that was given `count` rows (n <= size and
    <= count), in stream order."""
    n = min(n, count, size)
    if ring is None or n <= 0:
        return np.zeros((0, 0 if ring is None else ring.shape[1]))
    return np.array(ring[np.arange(count - n, count) % size])


class LagMemory:
    """The memory of one scorer on one device: its last `size` lag vectors."""

    def __init__(self, spec: MemorySpec) -> None:
        self.spec = spec
        self._vectors: FloatArray | None = None  # (size, features), window g at g % size
        self.count = 0  # windows seen
        self.taught: FloatArray = np.zeros((0, 0))  # (t, features) labelled normal, oldest first

    def snapshot(self) -> dict[str, npt.NDArray[Any]]:
        """The state as arrays (for `edge.state_store`); `restore` takes them back."""
        held = self._vectors if self._vectors is not None else np.zeros((0, 0))
        return {"count": np.array(self.count), "vectors": held.copy(),
                "taught": self.taught.copy()}

    def restore(self, saved: dict[str, npt.NDArray[Any]]) -> None:
        vectors = np.asarray(saved["vectors"], dtype=np.float64)
        if vectors.size and vectors.shape[0] != self.spec.size:
            raise ValueError(f"memory of {vectors.shape[0]} vectors, expected {self.spec.size}")
        # a state saved before taught vectors existed has none
        taught = restored_taught(saved.get("taught", np.zeros((0, 0))), vectors,
                                 self.spec.size, "taught vectors", "vectors")
        self._vectors = vectors.copy() if vectors.size else None
        self.count = int(saved["count"])
        self.taught = taught

    def latest(self, n: int) -> FloatArray:
        """The last `n` vectors held (n <= size and <= count), in stream order: what the
        memory was given for its newest windows (`edge.feedback` keeps an alert's)."""
        return ring_latest(self._vectors, self.count, self.spec.size, n)

    def teach(self, vectors: FloatArray) -> int:
        """Remember `vectors` (t, features) as normal for good (not rolled out by the stream);
        the oldest taught ones beyond `size` are forgotten. Returns how many were forgotten."""
        vectors = np.asarray(vectors, dtype=np.float64)
        if vectors.ndim != 2 or not len(vectors):
            return 0
        width = taught_width(self._vectors, self.taught)
        if width is not None and vectors.shape[1] != width:
            raise ValueError(f"taught vectors of {vectors.shape[1]} features, the memory holds "
                             f"{width}")
        self.taught, forgotten = append_taught(
            self.taught, vectors[np.isfinite(vectors).all(axis=1)], self.spec.size)
        return forgotten

    def distances(self, vectors: FloatArray,
                  needed: npt.NDArray[np.bool_] | None = None) -> FloatArray:
        """For each lag vector of a batch (in stream order), the distance to the k-th nearest
        vector of windows g-size .. g-gap (inf while fewer than k are held); the memory then
        holds the batch too. With `needed`, only those vectors' distances are computed (the
        others get inf) and every vector is held all the same: a scorer whose model already
        finds a window familiar need not search its memory."""
        vectors = np.asarray(vectors, dtype=np.float64)
        if vectors.ndim != 2:
            raise ValueError(f"lag vectors must be 2-D, got shape {vectors.shape}")
        if needed is not None and needed.shape != (len(vectors),):
            raise ValueError(f"needed must have one flag per vector, got shape {needed.shape}")
        if self._vectors is None:
            self._vectors = np.zeros((self.spec.size, vectors.shape[1]))
        out = np.empty(len(vectors))
        rows, size = min(BLOCK, len(vectors)), self.spec.size
        work = np.empty((rows, size + rows)), np.empty((rows, size)), np.empty((rows, size), bool)
        for start in range(0, len(vectors), BLOCK):
            block = vectors[start : start + BLOCK]
            wanted = None if needed is None else needed[start : start + BLOCK]
            out[start : start + len(block)] = self._block(block, *work, wanted)
        if self.taught.size:
            asked = np.arange(len(vectors)) if needed is None else np.flatnonzero(needed)
            if asked.size:
                out[asked] = np.minimum(out[asked], self._taught_distances(vectors[asked]))
        return out

    def _taught_distances(self, vectors: FloatArray) -> FloatArray:
        """Distance of each vector to its nearest taught vector (elementwise, so exact)."""
        return nearest_distances(vectors, self.taught)

    def _block(self, block: FloatArray, d2_work: FloatArray, scratch: FloatArray,
               mask: npt.NDArray[np.bool_], wanted: npt.NDArray[np.bool_] | None = None
               ) -> FloatArray:
        assert self._vectors is not None
        size, gap, k = self.spec.size, self.spec.gap, self.spec.k
        n, m = self.count, len(block)
        rows = np.arange(m) if wanted is None else np.flatnonzero(wanted)
        out = np.full(m, np.inf)
        if rows.size:
            r = rows.size
            query = block[rows]
            g = n + rows[:, None]  # the queried windows' ids, as a column
            # squared distances to every held slot, then to the block's own earlier windows,
            # each pair computed elementwise (no matrix product) so that any batch split
            # gives the bits
            d2 = d2_work[:r, : size + m]
            to_held, to_block = d2[:, :size], d2[:, size:]
            to_held.fill(0.0)
            _add_squared_distances(query, self._vectors, to_held, scratch[:r])
            to_block.fill(0.0)
            _add_squared_distances(query, block, to_block, np.empty((r, m)))
            # the window each slot holds: the latest g < n with g % size == slot (-1: none
            # yet); a slot counts when it holds one of windows g-size .. g-gap
            slots = np.arange(size)
            held = np.where(slots < n, n - 1 - (n - 1 - slots) % size, -1)[None, :]
            np.less(held, np.maximum(g - size, 0), out=mask[:r])
            np.copyto(to_held, np.inf, where=mask[:r])
            np.greater(held, g - gap, out=mask[:r])
            np.copyto(to_held, np.inf, where=mask[:r])
            own = n + np.arange(m)[None, :]
            np.copyto(to_block, np.inf, where=(own < g - size) | (own > g - gap))
            d2.partition(k - 1, axis=1)
            out[rows] = np.sqrt(d2[:, k - 1])
        # keep the block's vectors (the last `size` of them if the block is longer)
        keep = np.arange(max(0, m - size), m)
        self._vectors[(n + keep) % size] = block[keep]
        self.count = n + m
        return out


RECENT = 64  # the last windows' rows a taught memory holds, for an alert's recording


class TaughtWindows:
    """What the taught memories share: the windows a person taught as normal (`taught`, oldest
    first, at most `size`, held for good) and the last RECENT windows' values (`latest`, for
    `edge.feedback`, which records an alert's windows and teaches them). A subclass says what
    it keeps of a taught window (`_kept`) and may derive more from the taught ones
    (`_taught_changed`)."""

    what = "windows"  # in messages: "taught <what> of ..."
    unit = "values"  # what a window's width counts

    def __init__(self, size: int) -> None:
        self.size = size
        self._recent: FloatArray | None = None  # (RECENT, width), window g at g % RECENT
        self.count = 0  # windows seen
        self.taught: FloatArray = np.zeros((0, 0))  # (t, width), oldest first

    def _kept(self, rows: FloatArray) -> FloatArray:
        """What is held of taught windows (t, width)."""
        return rows

    def _taught_changed(self) -> None:
        """`taught` was set (taught, restored)."""

    def snapshot(self) -> dict[str, npt.NDArray[Any]]:
        recent = self._recent if self._recent is not None else np.zeros((0, 0))
        return {"count": np.array(self.count), "recent": recent.copy(),
                "taught": self.taught.copy()}

    def restore(self, saved: dict[str, npt.NDArray[Any]]) -> None:
        recent = np.asarray(saved["recent"], dtype=np.float64)
        if recent.size and recent.shape[0] != RECENT:
            raise ValueError(f"taught {self.what}: {recent.shape[0]} recent windows, expected "
                             f"{RECENT}")
        self._set_taught(restored_taught(saved["taught"], recent, self.size,
                                         f"taught {self.what}", "windows"))
        self._recent = recent.copy() if recent.size else None
        self.count = int(saved["count"])

    def latest(self, n: int) -> FloatArray:
        """The values of the last `n` windows (n <= RECENT and <= count), in stream order."""
        return ring_latest(self._recent, self.count, RECENT, n)

    def _hold_recent(self, values: FloatArray) -> None:
        """The batch's windows (in stream order) become the latest."""
        if self._recent is None:
            self._recent = np.zeros((RECENT, values.shape[1]))
        keep = np.arange(max(0, len(values) - RECENT), len(values))
        self._recent[(self.count + keep) % RECENT] = values[keep]
        self.count += len(values)

    def teach(self, rows: FloatArray) -> int:
        """Hold windows (t, width) as normal for good; the oldest taught beyond `size` are
        forgotten. Returns how many were forgotten."""
        rows = np.asarray(rows, dtype=np.float64)
        if rows.ndim != 2 or not len(rows):
            return 0
        width = taught_width(self._recent, self.taught)
        if width is not None and rows.shape[1] != width:
            raise ValueError(f"taught {self.what} of {rows.shape[1]} {self.unit}, the memory "
                             f"holds {width}")
        joined, forgotten = append_taught(self.taught, self._kept(rows), self.size)
        self._set_taught(joined if len(joined) else np.zeros((0, 0)))
        return forgotten

    def _set_taught(self, taught: FloatArray) -> None:
        """`taught` and what derives from it, or neither (a ValueError leaves both)."""
        previous = self.taught
        self.taught = taught
        try:
            self._taught_changed()
        except ValueError:
            self.taught = previous
            raise


class TaughtMemory(TaughtWindows):
    """The windows a person taught one device as normal, for one window-features distance
    (`TaughtSpec`): the rows of each taught window (its last `lags` scaled rows, flattened:
    the distance model's input, so they stay meaningful for another model of the same
    channels and preprocessing), and their departures in the model's whitened feature space.

    `distances(rows)` gives, per window, the distance of its whitened features to the nearest
    departure (inf with nothing taught): a taught window's whitened vector with the components
    under `level` set to 0. Subtracting only those keeps the comparison to what made the
    taught window unusual: on the components where it looked normal (a channel the alert was
    not about, the weather of that day) a new window is judged as it would be without the
    feedback, so a fault there is not excused. It also keeps the last RECENT windows' rows
    (`latest`, for `edge.feedback`). Every sum runs in a fixed order, elementwise, so any
    batch split gives the same bits."""

    what = "rows"

    def __init__(self, spec: TaughtSpec) -> None:
        super().__init__(spec.size)  # taught: (t, lags * C) rows
        self.spec = spec
        self._keep = np.array(spec.keep, dtype=np.intp)
        self._center = np.array(spec.center, dtype=np.float64)
        self._factor = np.array(spec.factor, dtype=np.float64)
        self._twins = np.array(spec.twins, dtype=np.float64) if spec.twins else None
        self._departures: FloatArray = np.zeros((0, 0))  # (t, components)

    def whiten(self, rows: FloatArray) -> FloatArray:
        """(n, components) the whitened features of flattened rows (n, lags * C)."""
        rows = np.asarray(rows, dtype=np.float64)
        lags = self.spec.lags
        windows = rows.reshape(len(rows), lags, -1)
        mean = _summed([windows[:, i, :] for i in range(lags)]) / lags
        var = _summed([np.square(windows[:, i, :] - mean) for i in range(lags)]) / lags
        parts = [mean[:, self._keep], np.log(np.sqrt(var) + self.spec.eps)]
        if self._twins is not None:
            parts.append(_summed([mean[:, c, None] * self._twins[c][None, :]
                                  for c in range(mean.shape[1])]))
        centred = np.hstack(parts) - self._center
        if centred.shape[1] != self._factor.shape[0]:
            raise ValueError(f"rows of {rows.shape[1]} values give {centred.shape[1]} "
                             f"features, the taught memory's model has {self._factor.shape[0]}")
        return _summed([centred[:, f, None] * self._factor[f][None, :]
                        for f in range(centred.shape[1])])

    def _kept(self, rows: FloatArray) -> FloatArray:
        return np.asarray(rows[np.isfinite(rows).all(axis=1)])

    def _taught_changed(self) -> None:
        self._departures = (self._departures_of(self.taught) if self.taught.size
                            else np.zeros((0, 0)))

    def _departures_of(self, rows: FloatArray) -> FloatArray:
        whitened = self.whiten(rows)
        return np.where(np.abs(whitened) >= self.spec.level, whitened, 0.0)

    def distances(self, rows: FloatArray) -> FloatArray:
        """Per window (rows (B, lags * C), in stream order), the distance of its whitened
        features to the nearest taught departure (inf: nothing taught); the memory then holds
        the batch's rows as the latest."""
        rows = np.asarray(rows, dtype=np.float64)
        if rows.ndim != 2:
            raise ValueError(f"rows must be 2-D, got shape {rows.shape}")
        self._hold_recent(rows)
        out = np.full(len(rows), np.inf)
        if not self._departures.size:
            return out
        return nearest_distances(self.whiten(rows), self._departures)


class TaughtScores(TaughtWindows):
    """What a person taught one device as normal for one per-sensor scorer (`twin`,
    `variability`, `twin_reading`, ...): each taught window's member scores, signed, in the
    members' spreads ((members,) a window), and the last RECENT windows' (`latest`, for
    `edge.feedback`, which records an alert's windows and teaches them).

    A window is then judged against its nearest taught one (`excused`): each member's departure
    from what that member did in the taught window. A member that was normal then (|z| under
    `level`) is compared with 0, so a fault on a sensor the taught event did not move is judged
    as before; a member the event moved is excused by as much as it moved then. A taught pattern
    is held for good, at most `size` windows (the oldest forgotten beyond)."""

    what, unit = "scores", "members"

    def __init__(self, size: int = 3000, level: float = 1.0) -> None:
        super().__init__(size)  # taught: (t, members) signed member scores
        self.level = level

    def _kept(self, rows: FloatArray) -> FloatArray:
        return np.where(np.abs(rows) >= self.level, rows, 0.0)

    def excused(self, scores: FloatArray) -> FloatArray:
        """(B, members) each member's |departure| from the nearest taught window (nearest by
        the largest member departure); `scores` itself (absolute) with nothing taught. The
        windows then count as the latest."""
        scores = np.asarray(scores, dtype=np.float64)
        self._hold_recent(np.nan_to_num(scores))
        if not self.taught.size:
            return np.abs(scores)
        best = np.abs(scores)
        worst = np.nan_to_num(best, nan=0.0).max(axis=1)
        for taught in self.taught:  # elementwise per taught window: any batch split, same bits
            departure = np.abs(scores - taught[None, :])
            largest = np.nan_to_num(departure, nan=0.0).max(axis=1)
            better = largest < worst
            best[better], worst[better] = departure[better], largest[better]
        return best
