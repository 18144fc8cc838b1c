"""`tests/bench/results.md` from the results dictionary that `run_all` writes as JSON."""

from __future__ import annotations

from typing import Any

from tests.bench.harness import fmt, md_table, minutes

# From /work/shared/data/README.md (published figures, not measured here).
SKAB_PUBLISHED = (
    ("Conv-AE", "0.78", "13.6", "28.0"),
    ("MSET", "0.78", "", ""),
    ("T-squared+Q (PCA)", "0.76", "", ""),
    ("LSTM-AE", "0.74", "30.0", "25.9"),
    ("T-squared", "0.66", "", ""),
    ("Isolation forest", "0.29", "", ""),
)
NAB_PUBLISHED = (
    ("ARTime", 74.9), ("Numenta HTM", 70.5), ("CAD OSE", 69.9), ("KNN CAD", 58.0),
    ("Relative Entropy", 54.6), ("Random Cut Forest", 51.7), ("Twitter ADVec", 47.1),
    ("Windowed Gaussian", 39.6),
)
PROFILE_NAMES = ("standard", "reward_low_FP_rate", "reward_low_FN_rate")


def skab_section(skab: dict[str, Any]) -> list[str]:
    rows = [[name, fmt(m["f1"]), fmt(m["far_pct"], 1), fmt(m["mar_pct"], 1),
             fmt(m["precision"]), fmt(m["recall"]), f"{m['tp']}/{m['fp']}/{m['fn']}/{m['tn']}"]
            for name, m in skab["pooled"].items()]
    lines = ["## SKAB valve1, leaderboard protocol", "",
             f"{skab['protocol']}; {len(skab['files'])} files. "
             "\"ours: agent decision\" is what the agent publishes (ensemble, trigger, "
             "hysteresis); the other \"ours\" rows are one score each over its calibrated "
             "threshold, without the alert policy.", "",
             md_table(["detector", "F1", "FAR %", "MAR %", "precision", "recall",
                       "TP/FP/FN/TN"], rows), ""]
    lines += skab_split(skab.get("split"))
    floats = [f["float"] for f in skab["files"] if f.get("float")]
    if floats:
        agree = min(f["agreement_test_rows"] for f in floats)
        corr = min(f["corr_normalised"] for f in floats)
        lines += [f"int8 vs float LSTM-AE on the same windows: normalised-score correlation "
                  f">= {corr:.4f} in every file, threshold decisions agree on >= {agree:.1%} "
                  f"of the test rows of every file.", ""]
    lines += [f"Comparison plot: `{skab['plot']}`. Published (full corpus valve1 + valve2 + "
              "other, not measured here):", "",
              md_table(["published", "F1", "FAR %", "MAR %"], SKAB_PUBLISHED), ""]
    return lines


def skab_split(split: dict[str, Any] | None) -> list[str]:
    """Every detector pooled over the chosen-on and the confirmed-on files (issue 16)."""
    if not split:
        return []
    parts = list(split["pooled"])
    names = list(dict.fromkeys(n for p in parts for n in split["pooled"][p]))
    rows = []
    for name in names:
        row = [name]
        for part in parts:
            m = split["pooled"][part].get(name)
            row += [fmt(m["f1"]), fmt(m["far_pct"], 1), fmt(m["mar_pct"], 1)] if m else \
                ["", "", ""]
        rows.append(row)
    heads = ["detector"] + [f"{p} {k}" for p in parts for k in ("F1", "FAR %", "MAR %")]
    return [f"Split ({split['rule']}): each part pooled on its own.", "",
            md_table(heads, rows), ""]


def nab_split(split: dict[str, Any] | None) -> list[str]:
    """Ours per part and per category, each normalised over its own files (issue 16)."""
    if not split:
        return []
    rows = []
    groups = [(f"**{p}**", v) for p, v in split["parts"].items()]
    groups += [(f"{c} ({v['part']})", v) for c, v in split["categories"].items()]
    for label, v in groups:
        rows.append([label, v["files"], v["windows"],
                     *(fmt(v[p], 1) if v[p] is not None else "-" for p in PROFILE_NAMES),
                     f"{v['tp']}/{v['fn']}", v["fp"]])
    gaps = split.get("held_out_gaps_standard") or {}
    lines = [f"Split ({split['rule']}), ours as deployed; each part and category normalised "
             "over its own files (\"-\": no anomaly window, only false alarms count):", "",
             md_table(["part / category", "files", "windows", "standard", "reward low FP",
                       "reward low FN", "windows caught/missed", "false alarms"], rows), ""]
    if gaps:
        lines += ["Confirmed-on categories against the chosen-on part (standard): "
                  + ", ".join(f"{c} {g:+.1f}" for c, g in gaps.items()) + ".", ""]
    return lines


def nab_section(nab: dict[str, Any]) -> list[str]:
    rows = [[name, *(fmt(scores.get(p), 1) for p in PROFILE_NAMES)]
            for name, scores in nab["scores"].items()]
    lines = ["## NAB", "", f"{nab['protocol']}; {nab['files']} files, {nab['windows']} "
             f"windows, {nab['alerts']} alerts.", "",
             md_table(["detector", "standard", "reward low FP", "reward low FN"], rows), ""]
    lines += nab_split(nab.get("split"))
    rank = nab.get("ranking")
    if rank and rank["all"] is not None:
        lines += ["Ranking, threshold-free: VUS-PR of our continuous score (TSB-AD's metric, "
                  "the windows' rows as labels, rows after the probationary period), "
                  + ", ".join(f"{p} {v:.3f}" for p, v in rank["parts"].items())
                  + f", all {rank['all']:.3f}.", ""]
    errors = nab.get("errors_plot")
    if errors:
        lines += [f"Plot of the {len(errors['files'])} files with a missed window or a false "
                  f"alarm (values, windows, alert starts): `{errors['plot']}`.", ""]
    if nab["failures"]:
        lines += ["Files that could not be fitted (scored as never detecting):", ""]
        lines += [f"- `{name}`: {why}" for name, why in nab["failures"].items()]
        lines.append("")
    lines += ["Published, standard profile, full 58-file corpus (not measured here): "
              + ", ".join(f"{n} {s}" for n, s in NAB_PUBLISHED) + ".", ""]
    return lines


def device_section(device: dict[str, Any]) -> list[str]:
    lines = ["## Device cost", ""]
    runtime = device.get("runtime")
    if runtime:
        ratios = runtime["ratio_p50_vs_tflite_int8"]
        rows = [[name, fmt(v["p50_ms"], 4), fmt(v["p99_ms"], 4), f"{ratios[name]:g}x", v["n"]]
                for name, v in runtime["latency"].items()]
        shape = "x".join(str(d) for d in runtime["window_shape"])
        lines += [f"One window ({shape}) at a time, one thread, the same {runtime['windows']} "
                  f"windows of SKAB `{runtime['replay']['file']}` for every runtime:", "",
                  md_table(["runtime", "p50 ms", "p99 ms", "p50 vs int8 TFLite", "windows"],
                           rows), ""]
        sizes = runtime["sizes_bytes"]
        lines += [md_table(["file", "KB"], [[k, f"{v / 1024:.1f}"] for k, v in sizes.items()]),
                  ""]
        p = runtime["parity"]
        lines += [f"Replay (`edge-agent replay`'s pipeline): "
                  f"{runtime['replay']['rows_per_s_median']:,.0f} rows/s on "
                  f"`{runtime['replay']['file']}` ({runtime['replay']['rows']} rows, stride 1). "
                  f"int8 vs Keras window error: correlation {p['int8_vs_keras_error_corr']:.4f}, "
                  f"largest relative difference {p['int8_vs_keras_error_max_rel']:.1%}; float32 "
                  f"TFLite vs Keras max |diff| {p['float_tflite_vs_keras_max_abs']:.1e}.", ""]
        pipe = runtime.get("pipeline")
        if pipe:
            lines += [f"The agent's code path for one live reading without MQTT (JSON decode, "
                      f"window, score, decide; one reading at a time): "
                      f"{pipe['cpu_ms_per_reading']:.3f} ms of CPU, i.e. "
                      f"{pipe['readings_per_s_at_50pct']:,.0f} readings/s in half a core.", ""]
    agent = device.get("agent")
    if agent:
        lines += [f"`edge-agent run` (stdin source, private Mosquitto), median of "
                  f"{len(agent['runs'])} starts: READY=1 after {agent['ready_s_median']:.2f} s, "
                  f"first window scored (first alert on stdout) after "
                  f"{agent['first_window_s_median']:.2f} s; RSS {agent['rss_ready_mb_median']:.0f}"
                  f" MB at ready, {agent['rss_first_window_mb_median']:.0f} MB after the first "
                  f"window, {agent['steady']['rss_kb'] / 1024:.0f} MB after "
                  f"{agent['steady']['readings']} readings.", ""]
    memory = device.get("memory")
    if memory:
        shapes = memory.get("without_long_shapes")
        lines += [f"One-channel engine (`{memory['file']}`'s bundle, its memories full with "
                  f"{memory['memory_size']} vectors each), one window at a time over "
                  f"{memory['windows']} windows: p50 {memory['with_memory']['p50_ms']:.3f} ms "
                  f"as fitted"
                  + (f", {shapes['p50_ms']:.3f} ms without its {memory['long_shapes']} long "
                     "shapes" if shapes else "")
                  + f", {memory['without_memory']['p50_ms']:.3f} ms without them and the lag "
                  f"memories ({memory['ratio_p50']}x).", ""]
    if device.get("nab_replay_rows_per_s"):
        lines += [f"NAB replays (one channel, while the other worker was fitting): "
                  f"{device['nab_replay_rows_per_s']:,.0f} rows/s over "
                  f"{device['nab_replay_rows']:,} rows.", ""]
    return lines


def e2e_section(e2e: dict[str, Any]) -> list[str]:
    lat = e2e["latency"]
    lines = ["## End to end over MQTT", "",
             f"`edge-sim` publisher ({e2e['devices']} simulated `{e2e['device']}` devices, QoS 1)"
             f" -> private Mosquitto -> `edge-agent run` -> subscriber. Alert latency from the "
             f"reading's arrival to the alert's arrival at the subscriber, "
             f"{lat['rate_per_device']:g} readings/s per device: alert starts p50 "
             f"{fmt(lat['start_p50_ms'], 1)} ms, p99 {fmt(lat['start_p99_ms'], 1)} ms "
             f"({lat['matched_starts']} starts); all alert events p50 "
             f"{fmt(lat['all_p50_ms'], 1)} ms, p99 {fmt(lat['all_p99_ms'], 1)} ms "
             f"({lat['matched_events']}). The agent's own figure (reading received to "
             f"decision) is {_internal(lat)}.", ""]
    nodelay = e2e.get("latency_nodelay")
    if nodelay:
        lines += [f"Experiment, same run: with Nagle's algorithm off on both hops of an alert "
                  f"(TCP_NODELAY on the agent's MQTT socket through a sitecustomize shim, "
                  f"`set_tcp_nodelay true` on the broker), alert starts p50 "
                  f"{fmt(nodelay['start_p50_ms'], 1)} ms, p99 "
                  f"{fmt(nodelay['start_p99_ms'], 1)} ms ({nodelay['matched_starts']} starts).",
                  ""]
    rows = [[s["target_per_s"], s["publish_per_s"], s["agent_per_s"], s["agent_cpu_pct"],
             "yes" if s["kept_up"] else "no"] for s in e2e["steps"]]
    lines += [md_table(["target readings/s", "published/s", "agent took in/s",
                        "agent CPU % of one core", "kept up"], rows), "",
              f"Sustained with the agent under 50% of one core: "
              f"{fmt(e2e['sustained_under_50pct'], 0)} readings/s (stopped: "
              f"{e2e['stopped_because']}).", ""]
    return lines


def _internal(lat: dict[str, Any]) -> str:
    values = [v for v in lat.get("agent_internal", {}).values() if v.get("latency_p50_ms")]
    if not values:
        return "not reported"
    p50 = max(v["latency_p50_ms"] for v in values)
    p99 = max(v["latency_p99_ms"] for v in values)
    return f"p50 <= {p50:.1f} ms, p99 <= {p99:.1f} ms per device"


def _dirty(files: list[str]) -> str:
    return f" with uncommitted changes to {', '.join(files)}" if files else ""


def _moved(commit: str | None) -> str:
    return f" (HEAD was {commit[:10]} at the end: code loaded at the start)" if commit else ""


def render(results: dict[str, Any]) -> str:
    m = results["machine"]
    head = [f"# Benchmarks, {results['date']}", "",
            f"Machine: {m['cores']}-core {m['machine']} ({m['cpu']}), Python {m['python']}, "
            f"no GPU; shared with other work while it ran, so timings are noisy (ratios were "
            f"measured in the same run). Commit {results['commit'][:10]}"
            f"{_dirty(results.get('uncommitted') or [])}"
            f"{_moved(results.get('commit_at_end'))}; trainer defaults "
            f"(`FitConfig()`): {results['config_brief']}.", ""]
    body: list[str] = []
    if "skab" in results:
        body += skab_section(results["skab"])
    if "skab_free" in results:
        from tests.bench.skab_free import section as skab_free_section

        body += ["## SKAB anomaly-free recording, the same protocol (false alarms only)", "",
                 *skab_free_section(results["skab_free"])]
    if "nab" in results:
        body += nab_section(results["nab"])
    if "tsbad" in results:
        from tests.bench.tsbad import render as tsbad_section

        body += tsbad_section(results["tsbad"])
    if "device" in results:
        body += device_section(results["device"])
    if "e2e" in results:
        body += e2e_section(results["e2e"])
    if "loop" in results:
        from tests.bench.closed_loop import closed_loop_section

        body += closed_loop_section(results["loop"])
    if "pods" in results:
        from tests.bench.pods import pods_section

        body += pods_section(results["pods"])
    if "devices" in results:
        from tests.bench.pods import devices_section

        body += devices_section(results["devices"])
    if "fleet" in results:
        from tests.bench.fleet import fleet_section

        body += fleet_section(results["fleet"])
    t = results["timings"]
    rows = [[k, minutes(v)] for k, v in t["sections"].items()]
    body += ["## Timings", "", md_table(["part", "wall time"], rows), "",
             f"Total {minutes(t['total_s'])} wall; {t['fits']} bundles fitted, "
             f"{t['fit_mean_s']:.0f} s wall each on average ({t['workers']} worker processes "
             f"side by side), {t['fit_cpu_total_s'] / max(1, t['fits']):.0f} s of CPU each; "
             f"the whole run used {minutes(t['run_cpu_s'])} of CPU (the other engineers' work "
             "on the same cores accounts for the rest of the wall time).", ""]
    return "\n".join(head + body)
