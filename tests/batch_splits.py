"""The device's stateful steps must give the same bits whatever the batch split (live
readings one at a time, replay in large batches)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import numpy as np

State = TypeVar("State")


def assert_any_split_gives_the_same_bits(make: Callable[[], State],
                                         step: Callable[[State, np.ndarray], np.ndarray],
                                         stream: np.ndarray, cuts: int = 20) -> State:
    """`step(state, batch)` over the whole stream at once, one row at a time and in random
    batches gives the same bits; returns the state of the random-batch run."""
    whole = step(make(), stream)
    ones = make()
    one_by_one = np.concatenate([step(ones, stream[i : i + 1]) for i in range(len(stream))])
    assert np.array_equal(whole, one_by_one, equal_nan=True)
    points = np.sort(np.random.default_rng(2).choice(np.arange(1, len(stream)), cuts,
                                                     replace=False))
    parts = make()
    split = np.concatenate([step(parts, p) for p in np.split(stream, points)])
    assert np.array_equal(whole, split, equal_nan=True)
    return parts
