"""Simulated pods with the `channel_kmeans` member (issue 16): `tests.bench.pods` with a
config `ck` (the recipe plus the kind) beside `recipe`, in one process.

    PYTHONPATH=. .venv/bin/python -m tests.bench.experiments.channel_kmeans_pods --seeds 1,2
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tests.bench import pods


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--seeds", default="1,2")
    args = p.parse_args()
    pods.CONFIGS["ck"] = {"scorers": ("twin", "variability", "channel_kmeans")}
    configs = ["recipe", "ck"]
    results = []
    for seed in (int(s) for s in args.seeds.split(",")):
        results.append(pods.one_pod(seed, configs, Path("/tmp/ck-pods"), pods.EXPERIMENT))
        print(f"pod {seed} done", flush=True)
    for line in pods.summarise(results, configs):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
