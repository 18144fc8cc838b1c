"""The chosen-on / confirmed-on splits of the benchmarks (issue 16) on tiny hand-made cases:
SKAB valve1 by file number, NAB by category, each part pooled or normalised on its own, and
their Markdown. The benchmarks themselves read ../shared/data and are not run here."""

from __future__ import annotations

import numpy as np
import pytest

from export.metrics import PointMetrics, pool
from export.nab import NabFile
from tests.bench import nab_corpus, skab
from tests.bench.results_md import nab_split, skab_split


def test_skab_split_is_even_chosen_odd_confirmed() -> None:
    assert [skab.part_of(f"{i}.csv") for i in (0, 1, 2, 14, 15)] == [
        skab.CHOSEN, skab.CONFIRMED, skab.CHOSEN, skab.CHOSEN, skab.CONFIRMED]


def test_skab_parts_pool_on_their_own_and_sum_to_the_whole() -> None:
    even = {"x": PointMetrics(tp=3, fp=1, fn=0, tn=4)}
    odd = {"x": PointMetrics(tp=1, fp=0, fn=2, tn=5)}
    parts = skab.pool_by_part(["0.csv", "1.csv", "2.csv"], [even, odd, even])
    assert parts[skab.CHOSEN]["x"] == pool([even["x"], even["x"]])
    assert parts[skab.CONFIRMED]["x"] == odd["x"]
    whole = skab.pool_parts(parts)
    assert whole["x"] == pool([even["x"], odd["x"], even["x"]])
    # a detector missing from one part (e.g. no file there) still pools over the others
    assert skab.pool_parts({skab.CHOSEN: {"y": odd["x"]}, skab.CONFIRMED: {}}) == {"y": odd["x"]}


def _nab_file(name: str, windows: tuple[tuple[int, int], ...]) -> NabFile:
    ts = np.datetime64("2024-01-01T00:00:00") + np.arange(40).astype("timedelta64[m]")
    return NabFile(name, ts, np.zeros(40), tuple((ts[a], ts[b]) for a, b in windows))


def test_nab_split_by_category() -> None:
    assert nab_corpus.part_of("realAWSCloudwatch/a.csv") == nab_corpus.CHOSEN
    assert nab_corpus.part_of("artificialNoAnomaly/a.csv") == nab_corpus.CHOSEN
    # every other category, seen here or not, is confirmed on: nothing was chosen on it
    for category in ("realKnownCause", "artificialWithAnomaly", "realTweets", "new"):
        assert nab_corpus.part_of(f"{category}/a.csv") == nab_corpus.CONFIRMED
    assert nab_corpus.category_of("realTweets/Twitter_volume_AAPL.csv") == "realTweets"


def test_nab_parts_and_categories_normalised_on_their_own() -> None:
    # probation floor(0.15 * 40) = 6 rows; one window rows 20..29 where there is one
    files = [_nab_file("realAWSCloudwatch/a.csv", ((20, 29),)),
             _nab_file("artificialNoAnomaly/b.csv", ()),
             _nab_file("realKnownCause/c.csv", ((20, 29),))]
    at_start = np.zeros(40, dtype=bool)
    at_start[20] = True
    false_alarm = np.zeros(40, dtype=bool)
    false_alarm[10] = True
    never = np.zeros(40, dtype=bool)
    split = nab_corpus.split_scores(files, [at_start, false_alarm, never])
    chosen, confirmed = split["parts"][nab_corpus.CHOSEN], split["parts"][nab_corpus.CONFIRMED]
    assert (chosen["files"], chosen["windows"], chosen["tp"], chosen["fp"]) == (2, 1, 1, 1)
    assert chosen["standard"] < 100.0  # the false alarm on the normal-only file costs
    assert (confirmed["standard"], confirmed["tp"], confirmed["fn"]) == (0.0, 0, 1)
    cats = split["categories"]
    assert cats["realAWSCloudwatch"]["standard"] == pytest.approx(100.0)
    assert cats["artificialNoAnomaly"]["standard"] is None  # no window: no score
    assert cats["artificialNoAnomaly"]["fp"] == 1
    assert cats["realKnownCause"]["part"] == nab_corpus.CONFIRMED
    gaps = nab_corpus.held_out_gaps(split)
    assert gaps == {"realKnownCause": pytest.approx(-chosen["standard"])}


def test_split_markdown() -> None:
    m = PointMetrics(tp=4, fp=1, fn=1, tn=4).as_dict()
    lines = skab_split({"rule": "even/odd", "pooled": {
        skab.CHOSEN: {skab.DECISION: m, "LOF": m}, skab.CONFIRMED: {skab.DECISION: m}}})
    text = "\n".join(lines)
    assert "even/odd" in text and f"| {skab.DECISION} | 0.800 | 20.0 | 20.0 | 0.800 |" in text
    assert "| LOF | 0.800 | 20.0 | 20.0 |  |  |  |" in text
    files = [_nab_file("realAWSCloudwatch/a.csv", ((20, 29),)),
             _nab_file("artificialNoAnomaly/b.csv", ())]
    at_start = np.zeros(40, dtype=bool)
    at_start[20] = True
    split = nab_corpus.split_scores(files, [at_start, np.zeros(40, dtype=bool)])
    text = "\n".join(nab_split(split))
    assert "| artificialNoAnomaly (chosen-on) | 1 | 0 | - | - | - | 0/0 | 0 |" in text
    assert "| **chosen-on** | 2 | 1 | 100.0 |" in text
    assert skab_split(None) == [] and nab_split(None) == []
