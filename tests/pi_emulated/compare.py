"""Compare the emulated roots' replays with the x86 ones (tests/pi_emulated/check.sh).

    python tests/pi_emulated/compare.py OUT ARCH...

For each architecture and file: the alert events (id, state, start and event times) must be
the x86 replay's on the same distance runtime and on x86's ONNX; the per-row decisions too; the
scores may differ by the runtimes' arithmetic (largest relative difference shown). Prints a
table with the emulated per-window cost (emulation is slow: for relative comparison only) and
exits 1 on any difference in alerts or decisions.
"""

from __future__ import annotations

import csv
import json
import re
import sys
from pathlib import Path

import numpy as np

KEYS = ("id", "state", "ts_start", "ts")


def alerts(path: Path) -> list[tuple[object, ...]]:
    lines = path.read_text().splitlines()
    return [tuple(json.loads(line)[k] for k in KEYS) for line in lines if line.strip()]


def scores(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The per-row ensemble score (NaN: not scored) and decision of a replay's SCORES.csv."""
    with path.open() as handle:
        rows = list(csv.DictReader(handle))
    score = np.array([float(r["score"]) if r["score"] not in ("", "nan") else np.nan
                      for r in rows])
    anomaly = np.array([r["is_anomaly"] in ("1", "true", "True") for r in rows])
    return score, anomaly


def cost_ms(summary: Path) -> float:
    """Milliseconds per scored window from a replay's printed summary."""
    text = summary.read_text()
    seconds = float(re.search(r"rows: \d+ in ([\d.]+) s", text).group(1))  # type: ignore[union-attr]
    windows = int(re.search(r"windows scored: (\d+)", text).group(1))  # type: ignore[union-attr]
    return 1000.0 * seconds / max(windows, 1)


def rel_diff(a: np.ndarray, b: np.ndarray) -> float:
    both = ~np.isnan(a) & ~np.isnan(b)
    if not both.any():
        return 0.0
    return float(np.max(np.abs(a[both] - b[both]) / np.maximum(np.abs(b[both]), 1e-6)))


def main(argv: list[str]) -> int:
    out, arches = Path(argv[0]), argv[1:]
    x86 = out / "x86"
    failed = False
    lines = ["| machine | file | distance runtime | alerts | events same as x86 (same runtime / "
             "onnx) | decisions same | max rel score diff vs x86 | ms per window |",
             "|---|---|---|---|---|---|---|---|"]
    for name in ("skab", "pod"):
        for runtime in ("onnx", "tflite"):
            a = alerts(x86 / f"{name}-{runtime}.jsonl")
            starts = sum(1 for e in a if e[1] == "start")
            same = alerts(x86 / f"{name}-onnx.jsonl") == a
            s, d = scores(x86 / f"{name}-{runtime}.csv")
            s0, d0 = scores(x86 / f"{name}-onnx.csv")
            failed |= not same or not (d == d0).all()
            lines.append(f"| x86_64 | {name} | {runtime} | {starts} | - / {same} | "
                         f"{bool((d == d0).all())} | {rel_diff(s, s0):.2g} (vs onnx) | "
                         f"{cost_ms(x86 / f'{name}-{runtime}.txt'):.3f} |")
    for arch in arches:
        res = out / arch
        chosen = (res / "runtime.txt").read_text().strip()
        machine = (res / "machine.txt").read_text().strip()
        for name in ("skab", "pod"):
            for runtime in ("onnx", "tflite"):
                if not (res / f"{name}-{runtime}.jsonl").is_file():
                    refused = res / f"refused-{name}-{runtime}.txt"
                    if refused.is_file():
                        reason = refused.read_text().strip().splitlines()[-1][:90]
                        lines.append(f"| {machine} (qemu-user) | {name} | {runtime}: refused "
                                     f"(`{reason}...`) | | | | | |")
                    continue
                got = alerts(res / f"{name}-{runtime}.jsonl")
                same_rt = got == alerts(x86 / f"{name}-{runtime}.jsonl")
                same_onnx = got == alerts(x86 / f"{name}-onnx.jsonl")
                s, d = scores(res / f"{name}-{runtime}.csv")
                s_ref, d_ref = scores(x86 / f"{name}-{runtime}.csv")
                decisions = bool((d == d_ref).all())
                failed |= not (same_rt and same_onnx and decisions)
                starts = sum(1 for e in got if e[1] == "start")
                auto = " (auto)" if runtime == chosen else ""
                lines.append(f"| {machine} (qemu-user) | {name} | {runtime}{auto} | {starts} | "
                             f"{same_rt} / {same_onnx} | {decisions} | "
                             f"{rel_diff(s, s_ref):.2g} | "
                             f"{cost_ms(res / f'{name}-{runtime}.txt'):.3f} |")
    print("\n".join(lines))
    (out / "comparison.md").write_text("\n".join(lines) + "\n")
    print("differences in alerts or decisions" if failed else
          "every replay: the same alerts and decisions as x86")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
