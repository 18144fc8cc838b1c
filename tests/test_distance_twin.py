"""The distance model's TFLite twin (`distance.tflite`) and the agent's choice of runtime.

- each distance model kind converts with built-in ops only and matches its ONNX model and its
  float64 reference on fitted models (no autoencoder needed: fast);
- a real tiny fit lists the twin in the manifest with its parity figures, and a replay on the
  twin gives the same alerts as on ONNX;
- with onnxruntime made unimportable (`sys.modules["onnxruntime"] = None`, in-process or by a
  sitecustomize in an agent subprocess: a stand-in for a device that has no onnxruntime wheel,
  which this machine cannot otherwise be) the agent picks the twin and says so; an explicit
  choice that cannot be had, or a bundle without a twin there, is refused with the key and
  what to do.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge.bundle import BundleError, checksums, load_bundle, write_manifest
from edge.engine import ScoringEngine
from edge.replay import replay_table
from edge.runtimes.tflite import RuntimeMissing, TfliteSignatureModel
from edge.table import read_table
from export.config import FitConfig
from export.fit import fit_bundle
from export.lag_kmeans import fit_lag_kmeans
from export.linear import fit_linear
from export.onnx_export import export_distance
from export.recipes import resolve
from export.tflite_distance import TWIN_FILE, export_twin, twin_parity
from export.window_features import fit_window_features
from tests.test_bundle_roundtrip import synthetic_csv

pytestmark = pytest.mark.slow
LAGS = 4


def _rows(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    return np.stack([np.sin(t / 7), 0.8 * np.sin(t / 7) + 0.2 * rng.normal(size=n),
                     rng.normal(size=n)], axis=1)


def _lagged(rows: np.ndarray) -> np.ndarray:
    x = np.stack([rows[i:i + LAGS].reshape(-1) for i in range(len(rows) - LAGS + 1)])
    return x.astype(np.float32).astype(np.float64)


def _model(kind: str, rows: np.ndarray, x: np.ndarray):  # type: ignore[no-untyped-def]
    config = resolve(FitConfig(), rows.shape[1])
    if kind == "pca_kmeans":
        return fit_linear(x, config)
    if kind == "window_features":
        return fit_window_features(x, LAGS, rows, config, ["a", "b", "c"])
    return fit_lag_kmeans(x, LAGS, dataclasses.replace(config, lag_scales=(1, LAGS)))


@pytest.mark.parametrize("kind", ["pca_kmeans", "window_features", "lag_kmeans"])
def test_the_twin_matches_onnx_and_the_float64_reference(kind: str, tmp_path: Path) -> None:
    rows = _rows(400)
    x = _lagged(rows)
    model = _model(kind, rows, x)
    export_distance(model, tmp_path / "distance.onnx")
    entry = export_twin(model, tmp_path / TWIN_FILE)
    assert entry.runtime == "tflite" and [o.name for o in entry.outputs] == list(model.outputs)
    twin = TfliteSignatureModel(tmp_path / TWIN_FILE)
    ops = {op["op_name"] for op in twin.interpreter._get_ops_details()}
    assert ops and not any(op.startswith(("Flex", "Custom")) for op in ops), ops
    far = x + np.random.default_rng(1).normal(scale=3.0, size=x.shape)  # anomalous inputs too
    for inputs in (x, far, x[:1]):  # any batch size
        figures = twin_parity(tmp_path / TWIN_FILE, tmp_path / "distance.onnx", model, inputs)
        assert figures["max_rel_diff"] < 1e-5, figures
        assert figures["vs_onnx_max_rel_diff"] < 1e-5, figures


# -- a real fit -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("twin")
    csv = synthetic_csv(root / "pump.csv")
    config = dataclasses.replace(
        FitConfig(), rows=":450", window=8, units=8, epochs=4, patience=2, calib_samples=64,
        batch_size=16, report=False)
    fit_bundle(csv, root / "bundle", config)
    return root / "bundle", csv


def test_the_fit_lists_the_twin_with_its_parity(fitted: tuple[Path, Path]) -> None:
    bundle_dir, _ = fitted
    manifest = load_bundle(bundle_dir).manifest
    twin = manifest.models["distance_tflite"]
    assert twin.runtime == "tflite" and twin.file == TWIN_FILE and TWIN_FILE in manifest.files
    assert [o.name for o in twin.outputs] == [o.name for o in manifest.models["distance"].outputs]
    figures = manifest.parity["distance_tflite"]
    assert figures["kept"] and figures["dtype"] == "float32"
    assert figures["max_rel_diff"] < 1e-5 and figures["vs_onnx_max_rel_diff"] < 1e-5
    assert figures["ensemble_decisions_changed"] == 0 and figures["scorer_decisions_changed"] == {}
    assert figures["engine_windows"] > 600


def test_replay_on_the_twin_gives_the_alerts_of_onnx(fitted: tuple[Path, Path]) -> None:
    bundle_dir, csv = fitted
    bundle = load_bundle(bundle_dir)
    table = read_table(csv)
    onnx = ScoringEngine(bundle, distance_runtime="onnx")
    twin = ScoringEngine(bundle, distance_runtime="tflite")
    assert onnx.runtimes["distance"].startswith("distance.onnx on onnxruntime")
    assert twin.runtimes["distance"].startswith(f"{TWIN_FILE} on ")
    a, b = replay_table(onnx, table), replay_table(twin, table)
    assert a.alerts >= 1
    assert [(e.id, e.state) for e in a.events] == [(e.id, e.state) for e in b.events]
    assert a.event_rows == b.event_rows and (a.is_anomaly == b.is_anomaly).all()
    np.testing.assert_allclose(b.score, a.score, rtol=1e-5, atol=1e-9)


def test_auto_picks_the_twin_when_onnxruntime_is_missing_and_says_so(
        fitted: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    bundle = load_bundle(fitted[0])
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # a device without onnxruntime
    caplog.set_level("INFO", logger="edge.engine")
    engine = ScoringEngine(bundle)
    assert engine.onnx is None and engine.distance_model is not None
    assert "onnxruntime is not installed" in engine.runtimes["distance"]
    assert any("distance: distance.tflite on " in r.getMessage() for r in caplog.records)
    with pytest.raises(RuntimeMissing, match=r'\[bundle\] distance_runtime = "onnx" but '
                       r'onnxruntime is not installed.*set \[bundle\] distance_runtime = '
                       r'"tflite"'):
        ScoringEngine(bundle, distance_runtime="onnx")


def _without_twin(bundle_dir: Path, out: Path) -> Path:
    """A copy of the bundle as an older trainer wrote it: no distance.tflite."""
    shutil.copytree(bundle_dir, out)
    (out / TWIN_FILE).unlink()
    (out / "manifest.sig").unlink(missing_ok=True)
    manifest = load_bundle(bundle_dir).manifest
    models = {k: v for k, v in manifest.models.items() if k != "distance_tflite"}
    files = checksums(out, [n for n in manifest.files if n != TWIN_FILE])
    write_manifest(out, manifest.model_copy(update={"models": models, "files": files}))
    return out


def test_a_bundle_without_the_twin_is_refused_where_it_is_needed(
        fitted: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    old = load_bundle(_without_twin(fitted[0], tmp_path / "old"))
    assert ScoringEngine(old).runtimes["distance"].startswith("distance.onnx on onnxruntime")
    with pytest.raises(BundleError, match=r'distance_runtime = "tflite" but the bundle has no '
                       r"TFLite twin of distance.onnx.*re-export the bundle with `edge-train "
                       r"fit`"):
        ScoringEngine(old, distance_runtime="tflite")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(RuntimeMissing, match=r"onnxruntime is not installed and the bundle has "
                       r"no TFLite twin.*re-export the bundle with `edge-train fit`"):
        ScoringEngine(old)


# -- the agent as a subprocess without onnxruntime ------------------------------------------
def _no_onnxruntime_env(tmp_path: Path) -> dict[str, str]:
    """The environment of an agent subprocess in which `import onnxruntime` fails."""
    site = tmp_path / "no-onnxruntime"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(
        "import sys\nsys.modules['onnxruntime'] = None  # no onnxruntime on this 'device'\n")
    path = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path}


def _agent(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edge.cli", *args], capture_output=True,
                          text=True, env=env, timeout=300, check=False)


def _config(tmp_path: Path, bundle: Path, runtime: str | None) -> Path:
    key = f'distance_runtime = "{runtime}"\n' if runtime else ""
    path = tmp_path / f"agent-{runtime}.toml"
    path.write_text(f'[bundle]\npath = "{bundle}"\n{key}\n[outbox]\n'
                    f'path = "{tmp_path / "outbox.sqlite3"}"\n')
    return path


def test_the_agent_without_onnxruntime_scores_on_the_twin(
        fitted: tuple[Path, Path], tmp_path: Path) -> None:
    bundle_dir, csv = fitted
    env = _no_onnxruntime_env(tmp_path)
    probe = subprocess.run([sys.executable, "-c", "import onnxruntime"], env=env,
                           capture_output=True, text=True, check=False)
    assert probe.returncode != 0 and "onnxruntime" in probe.stderr

    checked = _agent(["check-config", str(_config(tmp_path, bundle_dir, None))], env)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert (f'runtime   distance: {TWIN_FILE} on ai-edge-litert ([bundle] distance_runtime = '
            '"auto": onnxruntime is not installed') in checked.stdout

    refused = _agent(["check-config", str(_config(tmp_path, bundle_dir, "onnx"))], env)
    assert refused.returncode == 2
    assert '[bundle] distance_runtime = "onnx" but onnxruntime is not installed' in refused.stdout

    old = _without_twin(bundle_dir, tmp_path / "old")
    refused = _agent(["check-config", str(_config(tmp_path, old, None))], env)
    assert refused.returncode == 2 and "re-export the bundle" in refused.stdout

    alerts = {}
    for name, environ in (("onnx", dict(os.environ)), ("tflite", env)):
        out = tmp_path / f"{name}.jsonl"
        done = _agent(["replay", "--bundle", str(bundle_dir), "--input", str(csv), "--out",
                       str(tmp_path / f"{name}.csv"), "--alerts", str(out),
                       "--log-level", "INFO"], environ)
        assert done.returncode == 0, done.stderr
        used = "distance.onnx on onnxruntime" if name == "onnx" else f"{TWIN_FILE} on "
        assert f"distance: {used}" in done.stderr and f"distance {used}" in done.stdout
        alerts[name] = [json.loads(line) for line in out.read_text().splitlines()]
    assert alerts["onnx"], "the fault should alert"
    keys = ("id", "state", "ts_start", "ts")
    assert ([[a[k] for k in keys] for a in alerts["onnx"]]
            == [[a[k] for k in keys] for a in alerts["tflite"]])
    for a, b in zip(alerts["onnx"], alerts["tflite"], strict=True):  # float32 rounding
        assert abs(a["score"] - b["score"]) <= 1e-5 * max(1.0, abs(a["score"]))
