"""Read a sensor CSV into arrays: numpy and the csv module only, so the device can use it too.

`read_table` detects the delimiter (`,` `;` or tab), finds the time column (or takes the one
named), the numeric channel columns (or the ones named) and an optional 0/1 label column. Time
stamps become epoch seconds (float64): ISO-8601 with or without `Z` or an offset,
`YYYY-MM-DD HH:MM:SS`, or epoch numbers (seconds; milliseconds when they are too large to be
seconds). Times without an offset are taken as UTC. Empty or unparsable channel cells are NaN.

The file is parsed in chunks, each converted to arrays at once (vectorised float and
datetime64 parsing, with a per-cell fallback), so a million rows take a few seconds and memory
stays near the size of the result.

    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "t.csv"
    >>> rows = ["time;a;b;anomaly", "2024-01-01 00:00:00;1;x;0", "2024-01-01 00:00:01;;x;1"]
    >>> _ = path.write_text("\\n".join(rows) + "\\n")
    >>> table = read_table(path)
    >>> table.channels, table.time_column, table.label_column, table.delimiter
    (['a'], 'time', 'anomaly', ';')
    >>> table.values[:, 0].tolist(), table.labels.tolist(), np.diff(table.timestamps).tolist()
    ([1.0, nan], [False, True], [1.0])
"""

from __future__ import annotations

import contextlib
import csv
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from itertools import islice
from pathlib import Path

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

DELIMITERS = (",", ";", "\t")
TIME_NAMES = ("timestamp", "time", "datetime", "date", "ts", "date_time", "time_stamp")
LABEL_NAMES = ("anomaly", "is_anomaly", "label")
# Columns that are never channels when channels are found automatically.
NON_CHANNELS = frozenset({"anomaly", "is_anomaly", "label", "labels", "changepoint", "fault"})
CHUNK_ROWS = 65_536
# Epoch numbers above this are milliseconds (as seconds they would be past the year 5000).
EPOCH_MS_ABOVE = 1e11
_FALLBACK_TIME_FORMATS = ("%d.%m.%Y %H:%M:%S", "%m/%d/%Y %H:%M:%S", "%Y/%m/%d %H:%M:%S")


class TableError(ValueError):
    """The file cannot be read as a table; `option` names the argument at fault, if any."""

    def __init__(self, message: str, option: str | None = None) -> None:
        super().__init__(message)
        self.option = option


@dataclass(frozen=True)
class Table:
    """A sensor file as arrays, rows in file order."""

    path: Path
    timestamps: FloatArray  # (n,) epoch seconds
    values: FloatArray  # (n, C), NaN where a cell was empty or not a number
    channels: list[str]
    labels: BoolArray | None  # (n,) True = anomalous, or None without a label column
    time_column: str
    label_column: str | None
    delimiter: str
    skipped: list[str]  # columns that were neither time, label nor numeric channel

    def __len__(self) -> int:
        return int(self.timestamps.shape[0])


def detect_delimiter(header: str) -> str:
    """The candidate delimiter that occurs most often in the header line (`,` on a tie)."""
    counts = [header.count(d) for d in DELIMITERS]
    best = max(range(len(DELIMITERS)), key=lambda i: (counts[i], -i))
    return DELIMITERS[best] if counts[best] > 0 else ","


def parse_floats(cells: Sequence[str]) -> FloatArray:
    """Cells as float64; empty or unparsable cells become NaN."""
    try:
        return np.array(cells, dtype=np.float64)
    except ValueError:
        pass
    arr = np.asarray(cells, dtype=str)
    out = np.full(arr.shape[0], np.nan)
    stripped = np.char.strip(arr)
    present = stripped != ""
    try:
        out[present] = stripped[present].astype(np.float64)
    except ValueError:
        for i in np.flatnonzero(present):
            with contextlib.suppress(ValueError):
                out[i] = float(stripped[i])
    return out


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _parse_one_time(cell: str) -> float | None:
    text = cell.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        parsed = None
        for fmt in _FALLBACK_TIME_FORMATS:
            try:
                parsed = datetime.strptime(text, fmt)
                break
            except ValueError:
                continue
    if parsed is None:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.timestamp()


def parse_times(cells: Sequence[str], column: str, first_row: int = 0) -> FloatArray:
    """Time cells as epoch seconds; raises TableError naming the first cell it cannot read."""
    arr = np.char.strip(np.asarray(cells, dtype=str))
    if arr.shape[0] == 0:
        return np.zeros(0)
    empty = np.flatnonzero(arr == "")
    if empty.size:
        raise TableError(
            f"time column {column!r} is empty in data row {first_row + int(empty[0]) + 1}",
            "time_column",
        )
    if _is_number(str(arr[0])):
        try:
            numbers = arr.astype(np.float64)
        except ValueError:
            numbers = None
        if numbers is not None and np.isfinite(numbers).all():
            return numbers / 1000.0 if np.median(numbers) > EPOCH_MS_ABOVE else numbers
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # numpy warns that it applies the UTC offset
            stamps = np.char.rstrip(np.char.rstrip(arr, "Z"), "z").astype("datetime64[us]")
        return stamps.astype(np.int64).astype(np.float64) / 1e6
    except ValueError:
        pass
    out = np.empty(arr.shape[0])
    for i, cell in enumerate(arr.tolist()):
        value = _parse_one_time(cell)
        if value is None:
            raise TableError(
                f"time column {column!r}: cannot read {cell!r} (data row {first_row + i + 1}) "
                "as a time; expected ISO-8601, 'YYYY-MM-DD HH:MM:SS' or epoch seconds",
                "time_column",
            )
        out[i] = value
    return out


def _looks_like_time(cell: str) -> bool:
    text = cell.strip()
    return bool(text) and not _is_number(text) and _parse_one_time(text) is not None


def _chunks(reader: Iterator[list[str]], width: int) -> Iterator[list[list[str]]]:
    """Lists of up to `CHUNK_ROWS` rows of exactly `width` cells (padded or cut); blank lines
    are skipped."""
    while True:
        chunk = list(islice(reader, CHUNK_ROWS))
        if not chunk:
            return
        if set(map(len, chunk)) != {width}:
            chunk = [
                (row + [""] * width)[:width]
                for row in chunk
                if row and (len(row) > 1 or row[0].strip())
            ]
        if chunk:
            yield chunk


def _find(header: list[str], name: str, option: str) -> int:
    if name in header:
        return header.index(name)
    lowered = [h.lower() for h in header]
    if name.lower() in lowered:
        return lowered.index(name.lower())
    raise TableError(f"column {name!r} is not in the header ({', '.join(header)})", option)


def _choose_time(header: list[str], first: list[list[str]], time_column: str | None) -> int:
    if time_column is not None:
        return _find(header, time_column, "time_column")
    lowered = [h.strip().lower() for h in header]
    for name in TIME_NAMES:
        if name in lowered:
            return lowered.index(name)
    for j in range(len(header)):
        sample = next((row[j] for row in first if row[j].strip()), "")
        if _looks_like_time(sample):
            return j
    raise TableError(
        f"no time column found (looked for a column named {', '.join(TIME_NAMES)} or holding "
        "dates); name it with the time column option",
        "time_column",
    )


def _choose_label(header: list[str], label_column: str | None) -> int | None:
    if label_column == "":
        return None
    if label_column is not None:
        return _find(header, label_column, "label_column")
    lowered = [h.strip().lower() for h in header]
    for name in LABEL_NAMES:
        if name in lowered:
            return lowered.index(name)
    return None


def _numeric_share(first: list[list[str]], j: int) -> float:
    cells = [row[j] for row in first if row[j].strip()]
    if not cells:
        return 0.0
    return sum(_is_number(c) for c in cells[:2000]) / min(len(cells), 2000)


def _choose_channels(
    header: list[str], first: list[list[str]], channels: Sequence[str] | None, taken: set[int]
) -> tuple[list[int], list[str]]:
    if channels is not None:
        picked = [_find(header, name, "channels") for name in channels]
        clash = [header[j] for j in picked if j in taken]
        if clash:
            raise TableError(f"channel {clash[0]!r} is also the time or label column", "channels")
        return picked, []
    picked, skipped = [], []
    for j, name in enumerate(header):
        if j in taken or name.strip().lower() in NON_CHANNELS:
            continue
        if _numeric_share(first, j) >= 0.95:
            picked.append(j)
        else:
            skipped.append(name)
    if not picked:
        raise TableError(
            "no numeric channel columns found"
            + (f" (not numeric: {', '.join(skipped)})" if skipped else "")
            + "; name them with the channels option",
            "channels",
        )
    return picked, skipped


def read_table(
    path: Path | str,
    time_column: str | None = None,
    channels: Sequence[str] | None = None,
    label_column: str | None = None,
) -> Table:
    """Read a delimited sensor file.

    `time_column`, `channels`: found automatically when None. `label_column`: None finds a
    column named anomaly, is_anomaly or label; "" means no labels. Raises TableError.
    """
    path = Path(path)
    try:
        handle = path.open(newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise TableError(f"cannot open {path}: {exc.strerror or exc}") from exc
    with handle:
        header_line = handle.readline()
        if not header_line.strip():
            raise TableError(f"{path} is empty: a header line is needed")
        delimiter = detect_delimiter(header_line)
        header = [h.strip() for h in next(csv.reader([header_line], delimiter=delimiter))]
        chunks = _chunks(csv.reader(handle, delimiter=delimiter), len(header))
        first = next(chunks, [])
        if not first:
            raise TableError(f"{path} has a header but no data rows")
        t_idx = _choose_time(header, first, time_column)
        l_idx = _choose_label(header, label_column)
        taken = {t_idx} | ({l_idx} if l_idx is not None else set())
        c_idx, skipped = _choose_channels(header, first, channels, taken)
        times: list[FloatArray] = []
        values: list[FloatArray] = []
        labels: list[FloatArray] = []
        row0 = 0
        for chunk in _prepend(first, chunks):
            columns = list(zip(*chunk, strict=True))
            times.append(parse_times(columns[t_idx], header[t_idx], row0))
            values.append(np.column_stack([parse_floats(columns[j]) for j in c_idx]))
            if l_idx is not None:
                labels.append(_parse_labels(columns[l_idx]))
            row0 += len(chunk)
    return Table(
        path=path,
        timestamps=np.concatenate(times),
        values=np.vstack(values),
        channels=[header[j] for j in c_idx],
        labels=np.concatenate(labels) > 0.5 if l_idx is not None else None,
        time_column=header[t_idx],
        label_column=header[l_idx] if l_idx is not None else None,
        delimiter=delimiter,
        skipped=skipped,
    )


def _prepend(first: list[list[str]], rest: Iterator[list[list[str]]]) -> Iterator[list[list[str]]]:
    yield first
    yield from rest


def _parse_labels(cells: Sequence[str]) -> FloatArray:
    """0/1 (or true/false, yes/no) labels as 0.0/1.0; empty or unknown cells count as normal."""
    numbers = parse_floats(cells)
    for i in np.flatnonzero(~np.isfinite(numbers)).tolist():
        numbers[i] = 1.0 if cells[i].strip().lower() in ("true", "yes", "t", "y") else 0.0
    return numbers
