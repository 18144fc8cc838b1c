"""Fit the `twin_long` scorer (`edge.scorers.twin_long`): the twin groups of `twin`, and per
member the centre (median) and spread (IQR / 1.349) of its newest-row residual against its
twins averaged over `rows` windows, run over the training windows in order as the device
runs it. No twins, no scorer."""

from __future__ import annotations

from typing import Any, ClassVar

from edge.scorers.twin import combine_members
from edge.scorers.twin_long import ResidualHistory, min_history
from export.scorers.base import FloatArray, Option
from export.scorers.twin import TwinGroupTrainer

ROWS = 128  # windows (about two hours at one reading a minute); see export/recipes.py


class TwinLongTrainer(TwinGroupTrainer):
    kind = "twin_long"
    options: ClassVar[dict[str, Option]] = {
        "rows": Option(int, ROWS, "windows the residual is averaged over"),
    }

    @classmethod
    def member_values(cls, readings: FloatArray, matrix: FloatArray, members: list[int],
                      options: dict[str, Any]) -> tuple[FloatArray, dict[str, Any]]:
        """Each member's newest-row residual, averaged over the last `rows` windows."""
        rows = int(options["rows"])
        history = ResidualHistory(rows, len(members))
        newest = combine_members(readings[:, -1, :], matrix)
        return history.means(newest, min_history(rows)), {"rows": rows}
