"""The trainer's two kinds of failure, mapped to exit codes by `export.cli`."""

from __future__ import annotations


class InputError(Exception):
    """Bad input or options (exit code 2): the message names the column or the option."""


class FitError(Exception):
    """Training or export failed, or a parity check fell under its bound (exit code 1)."""
