"""The checks every registered scorer kind passes (its case is in `cases.py`): reference
parity, any batch split gives the same bits, a snapshot taken back continues to the bit, a
state that does not fit is refused and leaves the state as it was, NaN means not scored, bad
spec values are refused naming the field, and the manifest round trip."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from edge.bundle import Manifest, manifest_json, parse_manifest
from edge.score_state import ScoreState
from edge.scorers.base import FloatArray, ScoringBatch
from edge.scorers.registry import SCORERS
from export.scorers.registry import TRAINERS
from tests.batch_splits import assert_any_split_gives_the_same_bits
from tests.scorers.cases import CASES, CHANNELS, LENGTH, Case, Stream, part, stream
from tests.scorers.harness import ArrayInputs

KINDS = sorted(CASES)


def manifest_for(case: Case, spec: dict[str, Any] | None = None) -> Manifest:
    from tests.agent_fixtures import make_manifest

    files = {"lstm_ae.tflite": "0" * 64, "distance.onnx": "0" * 64}
    base = make_manifest(files, {"lstm": 1.0, "euclidean": 1.0, "mahalanobis": 1.0},
                         n=CHANNELS, window=LENGTH).model_dump(mode="json")
    scorer = spec if spec is not None else case.spec
    base.update({"scorers": [scorer], **case.manifest,
                 "ensemble": {"rule": "max", "members": [scorer["name"]]}})
    return Manifest.model_validate(base)


def batch_of(s: Stream) -> ScoringBatch:
    inputs = ArrayInputs(s["windows"], lag_vectors=s["lag_vectors"], distances=s["distances"],
                         lstm_errors=s["lstm_errors"], iqr_excess=s["iqr_excess"])
    return ScoringBatch(s["windows"], s["timestamps"], inputs)  # type: ignore[arg-type]


def run(state: ScoreState, s: Stream) -> tuple[FloatArray, FloatArray]:
    """(raw, stepped) of the case's one scorer over the stream `s`."""
    raw, stepped = state.score(batch_of(s))
    (name,) = raw
    return raw[name], stepped[name]


def test_every_kind_has_a_case() -> None:
    assert set(SCORERS) == set(CASES), "register a case in tests/scorers/cases.py"


@pytest.mark.parametrize("kind", KINDS)
def test_matches_its_plain_reference(kind: str) -> None:
    case, s = CASES[kind], stream()
    raw, _ = run(ScoreState(manifest_for(case)), s)
    expected = case.reference(s)
    assert raw.shape == (len(s["windows"]),)
    np.testing.assert_allclose(raw, expected, rtol=1e-12, atol=1e-12, equal_nan=True)
    assert np.isfinite(raw).sum() > len(raw) // 2  # the stream really scores


@pytest.mark.parametrize("kind", KINDS)
def test_any_batch_split_gives_the_same_bits(kind: str) -> None:
    manifest, s = manifest_for(CASES[kind]), stream()

    def step(state: ScoreState, index: np.ndarray) -> np.ndarray:
        raw, stepped = run(state, part(s, index))
        return np.column_stack([raw, stepped])

    assert_any_split_gives_the_same_bits(lambda: ScoreState(manifest), step,
                                         np.arange(len(s["windows"])))


@pytest.mark.parametrize("kind", KINDS)
def test_a_snapshot_taken_back_continues_to_the_bit(kind: str) -> None:
    manifest, s = manifest_for(CASES[kind]), stream()
    n = len(s["windows"])
    whole = np.column_stack(run(ScoreState(manifest), s))
    first = ScoreState(manifest)
    run(first, part(s, np.arange(n // 2)))
    second = ScoreState(manifest)
    second.restore(first.snapshot())
    rest = np.column_stack(run(second, part(s, np.arange(n // 2, n))))
    assert np.array_equal(rest, whole[n // 2:], equal_nan=True)


@pytest.mark.parametrize("kind", KINDS)
def test_a_state_that_does_not_fit_leaves_the_state_as_it_was(kind: str) -> None:
    manifest, s = manifest_for(CASES[kind]), stream()
    n = len(s["windows"])
    state = ScoreState(manifest)
    run(state, part(s, np.arange(n // 2)))
    before = state.snapshot()
    for misfit in ({**before, "stranger.part.x": np.zeros(1)},
                   {k: np.zeros((7, 7, 7)) for k in before} or {"x.y": np.zeros(1)}):
        with pytest.raises(ValueError, match="does not fit"):
            state.restore(misfit)
        after = state.snapshot()
        assert after.keys() == before.keys()
        assert all(np.array_equal(after[k], before[k]) for k in before)
    rest = np.column_stack(run(state, part(s, np.arange(n // 2, n))))
    whole = np.column_stack(run(ScoreState(manifest), s))
    assert np.array_equal(rest, whole[n // 2:], equal_nan=True)


@pytest.mark.parametrize("kind", KINDS)
def test_nan_means_not_scored(kind: str) -> None:
    manifest, s = manifest_for(CASES[kind]), stream()
    raw, stepped = run(ScoreState(manifest), s)
    assert np.all(np.isfinite(stepped))
    assert np.all(stepped[np.isnan(raw)] == 0.0)


@pytest.mark.parametrize("kind", KINDS)
def test_bad_spec_values_are_refused_naming_the_field(kind: str) -> None:
    case = CASES[kind]
    for dotted, value in case.refused:
        spec: dict[str, Any] = {k: (dict(v) if isinstance(v, dict) else v)
                                for k, v in case.spec.items()}
        *path, last = dotted.split(".")
        target = spec
        for key in path:
            target = target[key]
        target[last] = value
        with pytest.raises(ValidationError) as caught:
            manifest_for(case, spec)
        assert last in str(caught.value), f"{dotted}={value!r}: {caught.value}"


@pytest.mark.parametrize("kind", KINDS)
def test_manifest_round_trip(kind: str) -> None:
    manifest = manifest_for(CASES[kind])
    again = parse_manifest(manifest_json(manifest))
    assert again == manifest
    assert type(again.scorers[0]) is SCORERS[kind].spec_type
    assert manifest_json(again) == manifest_json(manifest)


@pytest.mark.parametrize("kind", sorted(k for k, c in CASES.items() if c.behaviour))
def test_what_users_expect_of_the_kind(kind: str) -> None:
    behaviour = CASES[kind].behaviour
    assert behaviour is not None
    behaviour()


@pytest.mark.parametrize("kind", sorted(TRAINERS))
def test_the_trainer_fits_specs_the_device_reads_and_scores(kind: str) -> None:
    """Every kind the trainer can add: fitted on three weeks of training rows, its specs with
    a threshold from held-out scores are valid manifest specs of that kind that score."""
    from edge.bundle import Threshold
    from export.config import FitConfig
    from export.scorers.base import TrainingData
    from export.scorers.registry import Added, options_of, spec_with

    rng = np.random.default_rng(1)
    ts = 1_767_225_600.0 + 900.0 * np.arange(21 * 96)
    rows = (0.3 * rng.normal(size=(ts.size, CHANNELS))
            + 2 * np.sin(ts / 86_400 * 2 * np.pi)[:, None])  # twins: one signal, own noise
    windows = np.stack([rows[i : i + LENGTH] for i in range(len(rows) - LENGTH + 1)])
    cls = TRAINERS[kind]
    # the channels are twins, which channel_kmeans leaves to the per-sensor kinds unless told
    options = options_of(kind, ("channel_kmeans.twins=true",))
    channels = [f"ch{i}" for i in range(CHANNELS)]
    specs = cls.fit(TrainingData(channels, rows, ts, FitConfig(), windows), options)
    assert specs
    for raw_spec in specs:
        added = Added(cls, options, raw_spec)
        provisional = spec_with(added, Threshold(value=1.0, method="provisional"))
        manifest = manifest_for(CASES[kind], provisional.model_dump(mode="json"))
        s = stream(unknown_times=False)
        raw, _ = run(ScoreState(manifest), s)
        scored = ~np.isnan(raw)  # a kind with a history scores once it holds enough
        assert scored[len(raw) // 2:].all() and np.isfinite(raw[scored]).all()
        threshold = cls.threshold(added.name, raw, TrainingData([], rows, ts, FitConfig()),
                                  options)
        assert threshold.value > 0 and np.mean(raw > threshold.value) < 0.2
