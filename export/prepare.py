"""Load a CSV, clean it and fit the preprocessing the device will apply (edge.preprocess).

Cleaning, in order: rows sorted by time with duplicate time stamps dropped (the last one
kept); `--rows` picks training rows (file order); label-anomalous rows are left out of
training; NaN are forward-filled exactly as the device's `ForwardFill` does (the training
median before the first valid value); a gap longer than `max_gap_s` restarts the window.
Per channel a variance-stabilising transform and a robust scale are fitted on the first
(1 - holdout) of the clean training rows; the rest is held out for calibration. Twin sensors
(`export.twins`: one stem, a trailing number, correlated) share one transform: the one of
none/sqrt/log1p on which they agree best (the smallest 99th percentile of each member's
robust-scaled residual against its twins), since a sensor is judged against its twins on
that scale and a residual that swings with the level of what they measure (a per-unit
gain, on the linear scale) would set its threshold.

A channel constant in all the training rows (value v; a valve position, a door sensor, a
setpoint) is kept: its scale is its tolerance, `flat_tolerance` x max(|v|, 1) in its own
units, so a scaled value beyond +/-1 is a departure beyond the tolerance (the `flat` scorer);
its IQR fences and its training range are set so that they too are crossed there.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edge.bundle import ChannelPreprocess, ForecastResidual, IqrSpec, Preprocess, RangeSpec
from edge.preprocess import apply_transform, forward_fill, scale_rows
from edge.table import Table, TableError, read_table
from export.config import FitConfig
from export.errors import InputError
from export.recipes import resolve
from export.twins import twin_groups

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

OPTION_FLAGS = {
    "time_column": "--time-column",
    "channels": "--channels",
    "label_column": "--label-column",
}
MIN_FIT_WINDOWS = 32
MIN_CALIB_WINDOWS = 8
MIN_WINDOW = 8  # rows: the lag distances compare up to 8 rows


@dataclass(frozen=True)
class Dataset:
    """The file's rows after cleaning, channels in manifest order (residual derived)."""

    source: Path
    table: Table
    timestamps: FloatArray
    raw: FloatArray
    labels: BoolArray | None
    train: BoolArray  # rows picked by --rows
    channels: list[str]
    forecast: ForecastResidual | None
    duplicates: int


@dataclass(frozen=True)
class Prepared:
    data: Dataset
    preprocess: Preprocess
    iqr: IqrSpec
    sample_period_s: float
    scaled: FloatArray  # every row, forward-filled and scaled, unclipped
    gap_before: BoolArray  # row i starts a new window run (gap > max_gap_s before it)
    fit_ends: IntArray  # last-row indices of the training windows
    calib_ends: IntArray  # last-row indices of the held-out normal windows
    fit_rows: BoolArray
    calib_rows: BoolArray
    summary: dict[str, Any] = field(default_factory=dict)
    config: FitConfig = field(default_factory=FitConfig)  # resolved: the recipe filled in
    range: RangeSpec | None = None  # the training rows' range, where a device's starts
    flat: tuple[str, ...] = ()  # channels constant in the training rows, in manifest order

    @property
    def missing(self) -> BoolArray:
        """(n, C) the values the file did not hold (forward-filled in `scaled`)."""
        return ~np.isfinite(self.data.raw)

    @property
    def flat_mask(self) -> BoolArray:
        return np.array([c in self.flat for c in self.data.channels], dtype=bool)

    def windows(self, ends: IntArray, length: int) -> FloatArray:
        return windows_at(self.scaled, ends, length)


def windows_at(rows: FloatArray, ends: IntArray, length: int) -> FloatArray:
    """Windows (B, length, C) of `rows` ending at the given row indices."""
    view = np.lib.stride_tricks.sliding_window_view(rows, length, axis=0)  # (n-L+1, C, L)
    return np.ascontiguousarray(view[ends - length + 1].transpose(0, 2, 1))


def window_ends(ok: BoolArray, gap_before: BoolArray, length: int, stride: int = 1) -> IntArray:
    """Rows i such that rows i-length+1..i are all `ok` with no gap between them."""
    n = ok.shape[0]
    idx = np.arange(n)
    starts = gap_before.copy()
    starts[1:] |= ~ok[:-1]
    if n:
        starts[0] = True
    run_start = np.maximum.accumulate(np.where(starts, idx, 0))
    run_len = idx - run_start + 1
    keep = ok & (run_len >= length) & ((run_len - length) % stride == 0)
    return idx[keep].astype(np.int64)


def parse_rows(text: str | None, n: int) -> BoolArray:
    mask = np.zeros(n, dtype=bool)
    if text is None:
        mask[:] = True
        return mask
    start, sep, end = text.partition(":")
    try:
        if not sep:
            raise ValueError
        lo = int(start) if start.strip() else None
        hi = int(end) if end.strip() else None
    except ValueError:
        raise InputError(f"--rows {text!r}: expected START:END, e.g. ':400' or '100:900'") from None
    mask[slice(lo, hi)] = True
    if not mask.any():
        raise InputError(f"--rows {text!r} selects no rows of the {n} in the file")
    return mask


def _read(csv_path: Path, config: FitConfig) -> tuple[Table, ForecastResidual | None]:
    wanted = list(config.channels) if config.channels is not None else None
    if wanted is not None and config.forecast_column:
        extra = [config.forecast_column]
        if config.measured_column:
            extra.append(config.measured_column)
        wanted += [c for c in extra if c not in wanted]
    try:
        table = read_table(csv_path, config.time_column, wanted, config.label_column)
    except TableError as exc:
        flag = OPTION_FLAGS.get(exc.option or "")
        message = (
            str(exc)
            .replace("the time column option", "--time-column")
            .replace("the channels option", "--channels")
        )
        if flag and flag not in message:
            message += f" ({flag})"
        raise InputError(f"{csv_path.name}: {message}") from exc
    if not config.forecast_column:
        return table, None
    forecast = config.forecast_column
    if forecast not in table.channels:
        raise InputError(
            f"--forecast-column {forecast!r} is not a numeric column of "
            f"{csv_path.name} ({', '.join(table.channels)})"
        )
    others = [c for c in table.channels if c != forecast]
    measured = config.measured_column or ("value" if "value" in others else None)
    if measured is None and len(others) == 1:
        measured = others[0]
    if measured is None or measured not in others:
        raise InputError(
            f"--forecast-column {forecast!r} needs --measured-column, the numeric "
            f"column it forecasts (one of {', '.join(others)})"
            + (f"; {measured!r} is not one" if measured else "")
        )
    return table, ForecastResidual(
        name=f"{measured}_residual", measured=measured, forecast=forecast
    )


def load_dataset(csv_path: Path, config: FitConfig) -> Dataset:
    """Read and clean the file: sort by time, drop duplicate stamps (keep the last)."""
    table, forecast = _read(csv_path, config)
    n = len(table)
    train_file = parse_rows(config.rows, n)
    order = np.lexsort((np.arange(n), table.timestamps))
    stamps = table.timestamps[order]
    keep = np.ones(n, dtype=bool)
    keep[:-1] = stamps[1:] != stamps[:-1]  # the last row of each equal-stamp run
    rows = order[keep]
    values = table.values
    channels = list(table.channels)
    if forecast is not None:
        j_m, j_f = channels.index(forecast.measured), channels.index(forecast.forecast)
        residual = values[:, j_m] - values[:, j_f]
        keep_cols = [j for j in range(len(channels)) if j != j_f]
        values = np.column_stack([values[:, keep_cols], residual])
        channels = [channels[j] for j in keep_cols] + [forecast.name]
    return Dataset(
        source=csv_path,
        table=table,
        timestamps=table.timestamps[rows],
        raw=values[rows],
        labels=table.labels[rows] if table.labels is not None else None,
        train=train_file[rows],
        channels=channels,
        forecast=forecast,
        duplicates=int(n - rows.shape[0]),
    )


def _skew(values: FloatArray) -> float:
    centred = values - values.mean()
    sd = centred.std()
    return float(np.mean(centred**3) / sd**3) if sd > 0 else 0.0


def choose_transform(values: FloatArray, config: FitConfig) -> tuple[str, dict[str, float]]:
    """`auto`: the least skewed of none/log1p/sqrt (non-negative channels only), kept `none`
    unless the gain in |skewness| reaches `transform_min_gain`."""
    if config.transform not in ("auto", None):
        if config.transform != "none" and values.min() < 0:
            return "none", {}
        return config.transform, {}
    candidates = ["none"] + (["log1p", "sqrt"] if values.min() >= 0 else [])
    skews = {kind: abs(_skew(apply_transform(kind, values))) for kind in candidates}
    best = min(skews, key=lambda k: skews[k])
    if skews["none"] - skews[best] < config.transform_min_gain:
        best = "none"
    return best, skews


def _robust_scale(t: FloatArray, sd_floor: float = 0.0) -> tuple[float, float, str]:
    """Median and IQR/1.349, at least `sd_floor` x the standard deviation; the standard
    deviation instead when the IQR is degenerate (under a tenth of the std: a channel stuck
    on a few values, e.g. a quantised sensor)."""
    center = float(np.median(t))
    q1, q3 = np.percentile(t, [25, 75])
    floor = 1e-9 * max(1.0, abs(center))
    scale, how = float(q3 - q1) / 1.349, "iqr"
    sd = float(t.std())
    if scale < 0.1 * sd or scale <= floor:
        scale, how = sd, "std"
    elif scale < sd_floor * sd:
        scale, how = sd_floor * sd, "std_floor"
    return center, max(scale, floor), how


def is_constant(values: FloatArray) -> bool:
    """All finite `values` equal (to 1e-12 of their magnitude); False when there are none."""
    values = values[np.isfinite(values)]
    return bool(values.size) and bool(
        np.ptp(values) <= 1e-12 * max(1.0, float(np.abs(values).max())))


def flat_tolerance(value: float, config: FitConfig) -> float:
    """The tolerance of a channel constant at `value` in training: `flat_tolerance` x
    max(|value|, 1), in the channel's units."""
    return float(config.flat_tolerance * max(abs(value), 1.0))


def fit_channel(name: str, raw: FloatArray, config: FitConfig,
                transform: str | None = None) -> tuple[ChannelPreprocess, dict]:
    """Transform and robust scale of one channel from its valid fit-row values (`transform`:
    the one of its twin group, else its own choice); a constant channel is scaled by its
    tolerance around its value (`flat_tolerance`)."""
    values = raw[np.isfinite(raw)]
    if values.size == 0:
        raise InputError(
            f"channel {name!r} has no values in the training rows before the held-out part "
            "(--rows, --holdout); leave it out with --channels"
        )
    if is_constant(values):
        value = float(np.median(values))
        tolerance = flat_tolerance(value, config)
        flat = ChannelPreprocess(
            name=name, transform="none", offset=0.0, center=value, scale=tolerance, fill=value
        )  # type: ignore[arg-type]
        return flat, {"transform": "none", "constant": True, "value": value,
                      "tolerance": tolerance, "scale_from": "flat_tolerance"}
    kind, skews = (transform, {}) if transform is not None else choose_transform(values, config)
    center, scale, how = _robust_scale(apply_transform(kind, values), config.scale_sd_floor or 0.0)
    spec = ChannelPreprocess(
        name=name,
        transform=kind,
        offset=0.0,
        center=center,
        scale=scale,
        fill=float(np.median(values)),
    )  # type: ignore[arg-type]
    info = {
        "transform": kind,
        "abs_skew": {k: round(v, 4) for k, v in skews.items()},
        "scale_from": how,
    }
    return spec, info


def twin_transforms(data: Dataset, fit_rows: BoolArray, flat: tuple[str, ...],
                    config: FitConfig) -> dict[str, str]:
    """One transform per twin group (members not constant in training): with `--transform
    auto`, the one on which the members agree best (`agreement`) on the fit rows, else the
    configured one; channel -> transform."""
    raw = data.raw[fit_rows]
    known = np.isfinite(raw)
    first = np.array([raw[known[:, j], j][0] if known[:, j].any() else 0.0
                      for j in range(raw.shape[1])])  # back-fills a leading gap
    rows = forward_fill(raw, first)
    movable = [j for j, name in enumerate(data.channels) if name not in flat]
    shared: dict[str, str] = {}
    for group in twin_groups([data.channels[j] for j in movable], rows[:, movable]):
        members = [movable[i] for i in group]
        values = raw[:, members]
        values = values[np.isfinite(values).all(axis=1)]
        if config.transform not in ("auto", None):
            kind, _ = choose_transform(values.ravel(), config)
        else:
            kinds = ["none"] + (["sqrt", "log1p"] if values.min() >= 0 else [])
            kind = min(kinds, key=lambda k: agreement(apply_transform(k, values)))
        shared.update({data.channels[j]: kind for j in members})
    return shared


def agreement(values: FloatArray) -> float:
    """How far twins (columns) stray from each other: the mean over members of the 99th
    percentile of |member - mean of the others|, each member robust-scaled first."""
    scaled = np.column_stack([(v - c) / s for v, (c, s, _) in
                              ((v, _robust_scale(v)) for v in values.T)])
    k = scaled.shape[1]
    residual = scaled - (scaled.sum(axis=1, keepdims=True) - scaled) / (k - 1)
    return float(np.mean(np.percentile(np.abs(residual), 99, axis=0)))


def training_range(scaled: FloatArray, constant: BoolArray | None = None,
                   tolerance: float = 0.1) -> RangeSpec:
    """Per-channel lowest and highest row in scaled units (the start of a device's running
    range). A `constant` channel (scaled by its tolerance, 0 in training) starts at +/-a with
    a = 1 / (1 + 2 x `tolerance`, the range threshold): a record beyond +/-1, its tolerance,
    is over the threshold."""
    low, high = np.nanmin(scaled, axis=0), np.nanmax(scaled, axis=0)
    if constant is not None:
        half = 1.0 / (1.0 + 2.0 * tolerance)
        low, high = np.where(constant, -half, low), np.where(constant, half, high)
    return RangeSpec(low=[float(v) for v in low], high=[float(v) for v in high])


def iqr_fences(scaled: FloatArray, k: float, constant: BoolArray | None = None) -> IqrSpec:
    """Per-channel quartiles in scaled units. A degenerate IQR (under a tenth of a normal
    channel's 1.349, e.g. a sensor stuck on a few values) is replaced by the Gaussian
    quartiles +/-0.6745 around the median, so the fence is not absurdly tight. A `constant`
    channel (scaled by its tolerance) gets quartiles +/-1 / (1 + 2k): its fence is +/-1, the
    tolerance."""
    q1, med, q3 = np.nanpercentile(scaled, [25, 50, 75], axis=0)
    flat = (q3 - q1) < 0.1 * 1.349
    q1 = np.where(flat, med - 0.6745, q1)
    q3 = np.where(flat, med + 0.6745, q3)
    if constant is not None:
        quartile = 1.0 / (1.0 + 2.0 * k)
        q1, q3 = np.where(constant, -quartile, q1), np.where(constant, quartile, q3)
    return IqrSpec(q1=[float(v) for v in q1], q3=[float(v) for v in q3], k=k)


def constant_channels(data: Dataset, fit_rows: BoolArray, usable: BoolArray) -> tuple[str, ...]:
    """Channels constant in the fit rows (the normal training rows before the held-out part).
    One that moves in the held-out rows only (a command channel, a switch used once) is
    constant too: its fit rows give no scale, so it is scaled by its tolerance and judged by
    `flat` like the others, and its moves in the held-out rows are departures."""
    return tuple(name for j, name in enumerate(data.channels)
                 if is_constant(data.raw[fit_rows, j]))


def _check_missing(data: Dataset, rows: BoolArray, limit: float) -> None:
    missing = np.isnan(data.raw[rows]).mean(axis=0)
    for name, share in zip(data.channels, missing, strict=True):
        if share > limit:
            raise InputError(
                f"channel {name!r} is missing in {share:.0%} of the training rows "
                f"(limit {limit:.0%}, --max-missing); leave it out with --channels"
            )


def _sample_period(stamps: FloatArray) -> float:
    steps = np.diff(stamps)
    steps = steps[steps > 0]
    if steps.size == 0:
        raise InputError(
            "the training rows need at least two distinct time stamps (--time-column, --rows)"
        )
    return float(np.median(steps))


def _usual_step(stamps: FloatArray, period: float) -> float:
    """The longest time step the source takes in its usual run (the 95th percentile of the
    training rows' steps, at least the median period): a source that reports irregularly
    (every 5 to 10 minutes) does not restart its window at each longer step, while one that
    reports like a clock keeps its median period."""
    steps = np.diff(stamps)
    steps = steps[steps > 0]
    return max(period, float(np.quantile(steps, 0.95))) if steps.size else period


def _windows_that_fit(fit_rows: BoolArray, calib_rows: BoolArray, gap_before: BoolArray,
                      config: FitConfig) -> tuple[IntArray, IntArray, FitConfig, int | None]:
    """The training and held-out window ends; when the training rows are too few for
    `--window`, the longest halved window (down to MIN_WINDOW rows) that gives enough of both,
    with the config changed to it (and its lags capped); the window it replaced, or None."""
    window = config.window
    while True:
        fit_ends = window_ends(fit_rows, gap_before, window, config.train_stride)
        calib_ends = window_ends(calib_rows, gap_before, window, 1)
        enough = len(fit_ends) >= MIN_FIT_WINDOWS and len(calib_ends) >= MIN_CALIB_WINDOWS
        if enough or window // 2 < MIN_WINDOW:
            break
        window //= 2
    if window == config.window or not enough:
        return (*_ends(fit_rows, calib_rows, gap_before, config), config, None)
    shorter = dataclasses.replace(config, window=window, lags=min(config.lags, window))
    return fit_ends, calib_ends, shorter, config.window


def _ends(fit_rows: BoolArray, calib_rows: BoolArray, gap_before: BoolArray,
          config: FitConfig) -> tuple[IntArray, IntArray]:
    return (window_ends(fit_rows, gap_before, config.window, config.train_stride),
            window_ends(calib_rows, gap_before, config.window, 1))


def prepare(csv_path: Path, config: FitConfig) -> Prepared:
    """Everything the model fits need, or an InputError naming the column or option."""
    if config.window < 2:
        raise InputError(f"--window {config.window}: a window needs at least 2 rows")
    if not 0.05 <= config.holdout <= 0.5:
        raise InputError(f"--holdout {config.holdout}: use a share between 0.05 and 0.5")
    data = load_dataset(csv_path, config)
    normal = ~data.labels if data.labels is not None else np.ones(len(data.raw), dtype=bool)
    usable = data.train & normal
    if usable.sum() < 2:
        raise InputError(
            f"--rows {config.rows or ':'} leaves {int(usable.sum())} normal "
            f"training rows in {csv_path.name}"
        )
    _check_missing(data, usable, config.max_missing)
    period = _sample_period(data.timestamps[data.train])
    max_gap = config.gap_factor * _usual_step(data.timestamps[data.train], period)
    gap_before = np.ones(len(data.raw), dtype=bool)
    gap_before[1:] = np.diff(data.timestamps) > max_gap

    normal_idx = np.flatnonzero(usable)
    boundary = normal_idx[len(normal_idx) - max(1, round(config.holdout * len(normal_idx)))]
    idx = np.arange(len(data.raw))
    fit_rows, calib_rows = usable & (idx < boundary), usable & (idx >= boundary)
    flat = constant_channels(data, fit_rows, usable)
    config = resolve(config, len(data.channels), flat)
    fit_ends, calib_ends, config, shrunk = _windows_that_fit(fit_rows, calib_rows, gap_before,
                                                             config)
    if len(fit_ends) < MIN_FIT_WINDOWS or len(calib_ends) < MIN_CALIB_WINDOWS:
        shortest = ""
        if config.window > MIN_WINDOW:  # what the trainer tried before refusing
            short = dataclasses.replace(config, window=MIN_WINDOW)
            fit_short, calib_short = _ends(fit_rows, calib_rows, gap_before, short)
            shortest = (f", and even the shortest window it tries ({MIN_WINDOW} rows) gets only "
                        f"{len(fit_short)} and {len(calib_short)}")
        raise InputError(
            f"too few rows for the window: {len(normal_idx)} normal training rows "
            f"(--rows {config.rows or ':'}) give {len(fit_ends)} training and "
            f"{len(calib_ends)} held-out windows of --window {config.window}{shortest} (need "
            f"at least {MIN_FIT_WINDOWS} and {MIN_CALIB_WINDOWS}, the held-out ones from the "
            f"last --holdout {config.holdout:g} of the rows); use more --rows or a smaller "
            "--window"
        )

    channels, info = [], {}
    shared = twin_transforms(data, fit_rows, flat, config)
    for j, name in enumerate(data.channels):
        spec, info[name] = fit_channel(name, data.raw[fit_rows, j], config, shared.get(name))
        if name in shared:
            info[name]["transform_of_twins"] = True
        channels.append(spec)
    preprocess = Preprocess(
        channels=channels, clip=config.clip, max_gap_s=max_gap, forecast=data.forecast
    )
    fill = np.array([c.fill for c in channels])
    scaled = scale_rows(forward_fill(data.raw, fill), preprocess)
    constant = np.array([c in flat for c in data.channels], dtype=bool)
    iqr = iqr_fences(scaled[fit_rows], config.iqr_k, constant)
    summary = {
        "rows_in_file": len(data.table),
        "rows_after_cleaning": len(data.raw),
        "duplicate_stamps_dropped": data.duplicates,
        "training_rows": int(data.train.sum()),
        "anomalous_training_rows_left_out": int((data.train & ~normal).sum()),
        "fit_rows": int(fit_rows.sum()),
        "holdout_rows": int(calib_rows.sum()),
        "fit_windows": len(fit_ends),
        "holdout_windows": len(calib_ends),
        "window_shortened_from": shrunk,
        "gaps_over_max_gap": int(gap_before[1:].sum()),
        "missing_share": {
            c: round(float(v), 4)
            for c, v in zip(data.channels, np.isnan(data.raw[usable]).mean(axis=0), strict=True)
        },
        "channels": info,
        "constant_channels": list(flat),
        "time_column": data.table.time_column,
        "label_column": data.table.label_column,
        "delimiter": data.table.delimiter,
        "skipped_columns": data.table.skipped,
    }
    return Prepared(
        data,
        preprocess,
        iqr,
        period,
        scaled,
        gap_before,
        fit_ends,
        calib_ends,
        fit_rows,
        calib_rows,
        summary,
        config,
        range=training_range(scaled[fit_rows | calib_rows], constant, config.range_tolerance),
        flat=flat,
    )
