"""edge.table.read_table: delimiters, time formats, channel and label detection, bad input."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest

from edge.table import TableError, detect_delimiter, parse_times, read_table

T0 = datetime(2024, 3, 1, 12, 0, 0, tzinfo=timezone.utc).timestamp()


def write(tmp_path: Path, text: str, name: str = "data.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("delimiter", [",", ";", "\t"])
def test_delimiters(tmp_path: Path, delimiter: str) -> None:
    rows = [
        ["timestamp", "a", "b", "anomaly"],
        ["2024-03-01T12:00:00Z", "1.5", "2", "0"],
        ["2024-03-01T12:00:01Z", "", "3", "1"],
    ]
    path = write(tmp_path, "\n".join(delimiter.join(r) for r in rows) + "\n")
    table = read_table(path)
    assert table.delimiter == delimiter
    assert table.channels == ["a", "b"]
    assert table.time_column == "timestamp"
    np.testing.assert_array_equal(table.timestamps, [T0, T0 + 1])
    np.testing.assert_array_equal(table.values, [[1.5, 2.0], [np.nan, 3.0]])
    assert table.labels is not None and table.labels.tolist() == [False, True]


def test_detect_delimiter_prefers_the_most_frequent() -> None:
    assert detect_delimiter("a;b;c,d\n") == ";"
    assert detect_delimiter("a\tb\n") == "\t"
    assert detect_delimiter("single\n") == ","


@pytest.mark.parametrize(
    ("cells", "expected"),
    [
        (["2024-03-01T12:00:00Z", "2024-03-01T12:00:01.5Z"], [T0, T0 + 1.5]),
        (["2024-03-01T12:00:00", "2024-03-01T12:00:02"], [T0, T0 + 2]),
        (["2024-03-01 12:00:00", "2024-03-01 12:00:03"], [T0, T0 + 3]),
        (["2024-03-01T14:00:00+02:00", "2024-03-01T13:00:01+01:00"], [T0, T0 + 1]),
        ([str(T0), str(T0 + 4)], [T0, T0 + 4]),
        ([str(int(T0 * 1000)), str(int(T0 * 1000) + 500)], [T0, T0 + 0.5]),
        # mixed spellings take the per-cell fallback
        (["2024-03-01T12:00:00Z", "2024-03-01 13:00:01+01:00"], [T0, T0 + 1]),
        (["01.03.2024 12:00:00", "01.03.2024 12:00:05"], [T0, T0 + 5]),
    ],
)
def test_time_formats(cells: list[str], expected: list[float]) -> None:
    np.testing.assert_allclose(parse_times(cells, "t"), expected, rtol=0, atol=1e-6)


def test_unparsable_time_names_the_column_and_row() -> None:
    with pytest.raises(TableError, match=r"time column 'when'.*'soon'.*data row 2") as info:
        parse_times(["2024-03-01T12:00:00Z", "soon"], "when")
    assert info.value.option == "time_column"


def test_time_column_found_by_content(tmp_path: Path) -> None:
    path = write(tmp_path, "x,recorded,y\n1,2024-03-01 12:00:00,2\n3,2024-03-01 12:00:01,4\n")
    table = read_table(path)
    assert table.time_column == "recorded"
    assert table.channels == ["x", "y"]


def test_named_time_column_with_epoch_numbers(tmp_path: Path) -> None:
    path = write(tmp_path, f"sec,v\n{T0},1\n{T0 + 1},2\n")
    table = read_table(path, time_column="sec")
    np.testing.assert_array_equal(table.timestamps, [T0, T0 + 1])
    assert table.channels == ["v"]


@pytest.mark.parametrize("name", ["anomaly", "is_anomaly", "label"])
def test_label_column_detected(tmp_path: Path, name: str) -> None:
    path = write(tmp_path, f"time,v,{name}\n2024-03-01 12:00:00,1,1\n2024-03-01 12:00:01,2,\n")
    table = read_table(path)
    assert table.label_column == name
    assert table.channels == ["v"]
    assert table.labels is not None and table.labels.tolist() == [True, False]


def test_label_column_named_or_disabled(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "time,v,anomaly,flag\n2024-03-01 12:00:00,1,0,true\n2024-03-01 12:00:01,2,1,false\n",
    )
    named = read_table(path, label_column="flag")
    assert named.labels is not None and named.labels.tolist() == [True, False]
    assert named.channels == ["v"]  # `anomaly` is never a channel when found automatically
    none = read_table(path, label_column="")
    assert none.labels is None and none.label_column is None


def test_non_channel_and_text_columns_are_skipped(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "datetime;a;changepoint;fault;note;anomaly\n"
        "2024-03-01 12:00:00;1;0;;ok;0\n2024-03-01 12:00:01;2;1;leak;bad;1\n",
    )
    table = read_table(path)
    assert table.channels == ["a"]
    assert "note" in table.skipped


def test_explicit_channels_and_unparsable_cells(tmp_path: Path) -> None:
    path = write(tmp_path, "time,a,b,c\n2024-03-01 12:00:00,1,x,3\n2024-03-01 12:00:01,2,4,\n")
    table = read_table(path, channels=["c", "b"])
    assert table.channels == ["c", "b"]
    np.testing.assert_array_equal(table.values, [[3.0, np.nan], [np.nan, 4.0]])


def test_unknown_column_names_the_option(tmp_path: Path) -> None:
    path = write(tmp_path, "time,a\n2024-03-01 12:00:00,1\n")
    with pytest.raises(TableError, match="'zz' is not in the header") as info:
        read_table(path, channels=["zz"])
    assert info.value.option == "channels"
    with pytest.raises(TableError) as info:
        read_table(path, time_column="nope")
    assert info.value.option == "time_column"


def test_no_numeric_channels(tmp_path: Path) -> None:
    path = write(tmp_path, "time,name\n2024-03-01 12:00:00,pump\n")
    with pytest.raises(TableError, match="no numeric channel columns") as info:
        read_table(path)
    assert info.value.option == "channels"


def test_bom_blank_lines_and_ragged_rows(tmp_path: Path) -> None:
    path = tmp_path / "bom.csv"
    path.write_bytes(
        "\ufefftime,a,b\n2024-03-01 12:00:00,1,2\n\n2024-03-01 12:00:01,3\n".encode("utf-8")
    )
    table = read_table(path)
    assert table.time_column == "time"
    np.testing.assert_array_equal(table.values, [[1.0, 2.0], [3.0, np.nan]])


def test_empty_file_and_header_only(tmp_path: Path) -> None:
    with pytest.raises(TableError, match="empty"):
        read_table(write(tmp_path, ""))
    with pytest.raises(TableError, match="no data rows"):
        read_table(write(tmp_path, "time,a\n", "header.csv"))


def test_many_rows_are_fast(tmp_path: Path) -> None:
    n = 200_000
    stamps = np.datetime64("2024-03-01T00:00:00") + np.arange(n).astype("timedelta64[s]")
    values = np.random.default_rng(0).normal(size=(n, 3)).round(4)
    lines = ["timestamp,a,b,c"] + [
        f"{s}Z,{v[0]},{v[1]},{v[2]}" for s, v in zip(stamps, values, strict=True)
    ]
    path = write(tmp_path, "\n".join(lines) + "\n")
    started = time.perf_counter()
    table = read_table(path)
    elapsed = time.perf_counter() - started
    assert len(table) == n
    np.testing.assert_array_equal(table.values, values)
    assert np.all(np.diff(table.timestamps) == 1.0)
    assert elapsed < 5.0, f"200k rows took {elapsed:.1f}s"
