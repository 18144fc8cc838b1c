"""The per-sensor kinds' taught scores (`edge.memory.TaughtScores`): what a person taught as
normal excuses the members it moved, by as much as it moved them, and nothing else."""

from __future__ import annotations

import numpy as np
import pytest

from edge.memory import RECENT, TaughtScores


def test_nothing_taught_leaves_the_scores() -> None:
    memory = TaughtScores()
    z = np.array([[0.5, -3.0], [np.nan, 2.0]])
    assert np.array_equal(memory.excused(z), np.abs(z), equal_nan=True)
    assert memory.count == 2 and np.array_equal(memory.latest(1), [[0.0, 2.0]])


def test_a_taught_event_excuses_the_members_it_moved_and_not_the_others() -> None:
    memory = TaughtScores(level=1.0)
    memory.teach(np.array([[4.0, 0.4, -2.5]]))  # member 1 was normal then: compared with 0
    again = memory.excused(np.array([[4.6, 0.2, -2.0]]))  # the event, a little larger
    assert again.max() == pytest.approx(0.6)
    fault = memory.excused(np.array([[4.0, 5.0, -2.5]]))  # the same event and a fault
    assert fault[0, 1] == pytest.approx(5.0)
    opposite = memory.excused(np.array([[-4.0, 0.0, 0.0]]))  # the other way: not excused
    assert opposite.max() == pytest.approx(4.0)


def test_any_batch_split_and_a_snapshot_give_the_same_bits() -> None:
    rng = np.random.default_rng(2)
    taught, later = rng.normal(0, 3, (20, 4)), rng.normal(0, 3, (200, 4))
    one, two = TaughtScores(), TaughtScores()
    one.teach(taught)
    two.teach(taught)
    whole = one.excused(later)
    parts = np.vstack([two.excused(later[i : i + 7]) for i in range(0, 200, 7)])
    assert np.array_equal(whole, parts)
    copy = TaughtScores()
    copy.restore(one.snapshot())
    assert np.array_equal(copy.latest(RECENT), one.latest(RECENT))
    assert np.array_equal(copy.excused(later[:5]), one.excused(later[:5]))


def test_bad_saved_or_taught_shapes_are_refused() -> None:
    memory = TaughtScores(size=2)
    memory.excused(np.zeros((1, 3)))
    with pytest.raises(ValueError, match="4 members, the memory holds 3"):
        memory.teach(np.zeros((1, 4)))
    with pytest.raises(ValueError, match="do not fit"):
        memory.restore({"count": np.array(1), "recent": np.zeros((RECENT, 3)),
                        "taught": np.zeros((5, 3))})
    assert memory.teach(np.ones((3, 3)) * 2) == 1  # beyond size: the oldest forgotten


def test_a_state_saved_before_taught_scores_existed_restores() -> None:
    from edge.score_state import ScoreState
    from tests.scorers.cases import CASES, stream
    from tests.scorers.test_contract import manifest_for, run

    manifest = manifest_for(CASES["twin"])
    state = ScoreState(manifest)
    run(state, stream())
    saved = {k: v for k, v in state.snapshot().items() if not k.startswith("taught.twin.")}
    assert len(saved) < len(state.snapshot())
    fresh = ScoreState(manifest)
    fresh.restore(saved)
    assert fresh.snapshot().keys() == state.snapshot().keys()
    with pytest.raises(ValueError, match="does not fit"):  # a part it does not know still fails
        fresh.restore({**saved, "memory.other.count": np.array(1)})


def test_feedback_on_twin_windows_excuses_them_on_the_device() -> None:
    """The twin scorer's state, fed and taught the way `edge.feedback` does (the windows'
    latest member scores): the same windows score low again; windows that are not near them
    mostly keep theirs."""
    from edge.feedback import memories, teach
    from edge.score_state import ScoreState
    from tests.scorers.cases import CASES, stream
    from tests.scorers.test_contract import manifest_for, run

    manifest = manifest_for(CASES["twin"])
    s = stream()
    state = ScoreState(manifest)
    raw, _ = run(state, s)
    held = memories(state)
    assert "taught.twin" in held
    taught = teach({"taught.twin": held["taught.twin"].latest(10)}, state)
    assert taught == {"taught.twin": 10}
    again, _ = run(state, s)
    assert np.all(again[-10:] < 0.5 * raw[-10:] + 1e-9)
    assert np.all(again <= raw + 1e-9)  # teaching only ever lowers a score
    assert np.mean(again[:100] > 0.9 * raw[:100]) > 0.5  # and leaves windows unlike them
