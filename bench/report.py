"""Write BENCHMARKS.md (tables, targets met / not met) and the latency-vs-pieces plot from bench/results/.

    python bench/report.py            # needs matplotlib for the plot (pip install matplotlib)

Inputs: results/resnet50_<precision>_b<batch>[_<variant>].json (bench/resnet50.py), results/torch.json
(bench/torch_baseline.py), results/overhead_<steps>.json, results/dispatch.json, results/memory_gpu.json.
The file without a variant suffix is the configuration's reference run: it alone is judged against the
targets and plotted; variants (earlier runs, other set-ups) are listed after it for comparison.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
TARGETS = {1: 0.02, 4: 0.05, 16: 0.15}  # allowed slowdown over TensorRT alone, graph mode, batch 1, FP16


def load(results: Path, name: str) -> dict | None:
    path = results / name
    return json.loads(path.read_text()) if path.exists() else None


def verdict(ok: bool) -> str:
    return "met" if ok else "**not met**"


def variants(run: dict) -> list[tuple[int, str, str]]:
    """(k, boundary layout, run name) of every orchestrator row, by k then layout."""
    found = []
    for name in run["runs"]:
        if name.startswith("orchestrator_k"):
            k, _, layout = name.removeprefix("orchestrator_k").partition("_")
            found.append((int(k), layout or "linear", name))
    return sorted(found)


def ms(entry: dict, mode: str) -> str:
    return f"{entry[mode]['median_ms']:.3f}" if mode in entry else "–"


def cells(entry: dict) -> str:
    """The eager, graph and graph GPU-time columns of one row."""
    return " | ".join(ms(entry, mode) for mode in ("eager", "graph", "graph_device"))


def config(run: dict) -> str:
    return f"{run['precision']}_b{run['batch']}"


def is_reference(run: dict) -> bool:
    return run["file"] == f"resnet50_{config(run)}"


def torch_run(run: dict, torch: dict | None) -> dict | None:
    """PyTorch's figures for this run's configuration, shown beside reference runs only."""
    return (torch or {}).get("runs", {}).get(config(run)) if is_reference(run) else None


def resnet_rows(run: dict, torch: dict | None) -> list[str]:
    """Latency (what a caller waits for, host issue included) and, where measured, GPU time alone."""
    key = config(run)
    trt = run["runs"]["tensorrt"]
    if "error" in trt:
        return [f"| TensorRT alone | failed: {trt['error']} | | | | | |"]
    rows = [f"| TensorRT alone | {cells(trt)} | floor | floor | |"]
    names = {name for _, _, name in variants(run)}
    for k, layout, name in variants(run):
        r, label = run["runs"][name], f"orchestrator, k = {k}" + ("" if layout == "linear" else f", {layout} cuts")
        if "error" in r:
            rows.append(f"| {label} | failed: {r['error']} | | | | | |")
            continue
        over = r["graph"]["median_ms"] / trt["graph"]["median_ms"] - 1
        device = (f"{r['graph_device']['median_ms'] / trt['graph_device']['median_ms'] - 1:+.1%}"
                  if "graph_device" in r and "graph_device" in trt else "–")
        target = TARGETS.get(k) if key == "fp16_b1" and is_reference(run) else None
        mark = "" if target is None else f"≤ {target:.0%}: {verdict(over <= target)}"
        if target is not None and layout == "linear" and f"{name}_hwc8" in names:
            mark = "unpinned cuts: shows the reformat cost; the target is judged on the hwc8 row"
        rows.append(f"| {label} | {cells(r)} | {over:+.1%} | {device} | {mark} |")
    t = torch_run(run, torch)
    if t:
        rows.append(f"| PyTorch (eager / CUDA graph) | {t['network_eager']['median_ms']:.3f} | "
                    f"{t['network_graph']['median_ms']:.3f} | | | | |")
    return rows


def pipeline_rows(run: dict, torch: dict | None) -> list[str]:
    key = config(run)
    ours = run["runs"]["pipeline"]
    if "error" in ours:
        return [f"| orchestrator | failed: {ours['error']} | | | |"]
    rows = [f"| orchestrator | {cells(ours)} | {ours['memory']['arena_total_bytes'] / 2**20:.1f} MiB (arena) |"]
    if not is_reference(run):
        return rows
    t = torch_run(run, torch)
    if t:
        rows.append(f"| PyTorch (eager / CUDA graph) | {t['pipeline_eager']['median_ms']:.3f} | "
                    f"{t['pipeline_graph']['median_ms']:.3f} | | "
                    f"{t['peak_activation_bytes'] / 2**20:.1f} MiB (peak activations) |")
        if key == "fp16_b1":
            speedup = t["pipeline_eager"]["median_ms"] / ours["graph"]["median_ms"]
            rows.append(f"| target: ≥ 3× faster than PyTorch eager | {speedup:.1f}× | | | {verdict(speedup >= 3)} |")
            graphs = t["pipeline_graph"]["median_ms"] / ours["graph"]["median_ms"]
            rows.append(f"| (against PyTorch with CUDA graphs) | {graphs:.1f}× | | | |")
    elif key == "fp16_b1":
        rows.append("| target: ≥ 3× faster than PyTorch eager | PyTorch not measured yet | | | **not shown** |")
    return rows


def memory_rows(run: dict, torch: dict | None) -> list[str]:
    """Intermediates: naive sum, planned arena, lower bound; then the whole arena with inputs, constants and
    the shared TensorRT scratch; and PyTorch's peak for the full pipeline."""
    mib = 2 ** 20
    rows = []
    for name in ["pipeline", *(n for _, _, n in variants(run))]:
        m = run["runs"][name].get("memory")
        if m:
            rows.append(f"| {name} | {m['naive_bytes'] / mib:.2f} | {m['arena_bytes'] / mib:.2f} | "
                        f"{m['lower_bound_bytes'] / mib:.2f} | {m['arena_over_lower_bound']:.3f} | "
                        f"{m['tensorrt_scratch_bytes'] / mib:.2f} | {m['arena_total_bytes'] / mib:.2f} |")
    t = torch_run(run, torch)
    if t:
        rows.append(f"| PyTorch, full pipeline (peak allocated beyond weights) | | | | | | "
                    f"{t['peak_activation_bytes'] / mib:.2f} |")
    return rows


def plot(runs: list[dict], path: Path) -> Path | None:
    """Graph-mode latency over TensorRT alone's, against k, for every run; the targets as marks."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(9, 4.2))
    for run in runs:
        trt = run["runs"]["tensorrt"]
        if "error" in trt:
            continue
        tag = f"{run['precision']} b{run['batch']}"
        done = [(k, layout, name) for k, layout, name in variants(run) if "error" not in run["runs"][name]]
        for layout in ("linear", "hwc8"):
            points = [(k, run["runs"][name]["graph"]["median_ms"] / trt["graph"]["median_ms"])
                      for k, lay, name in done if lay == layout or k == 1]
            if len(points) > (0 if layout == "linear" else 1):
                ax.plot(*zip(*points, strict=True), marker="o", linestyle="-" if layout == "linear" else "--",
                        label=f"{tag}, {'FP32 linear' if layout == 'linear' else 'hwc8'} cuts")
    ax.plot(list(TARGETS), [1 + t for t in TARGETS.values()], "k_", markersize=18, mew=2,
            label="target (fp16 b1)")
    ax.axhline(1.0, linestyle=":", color="gray")
    ax.set_xscale("log", base=2)
    ax.set_xticks([1, 4, 16], ["1", "4", "16"])
    ax.set_xlabel("snippets (k)")
    ax.set_ylabel("graph-mode latency / TensorRT alone")
    ax.set_title("ResNet-50 cut into k snippets, H100, TensorRT 8.6")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


def main(results: Path = RESULTS, out: Path = HERE.parent / "BENCHMARKS.md") -> None:
    torch = load(results, "torch.json")
    runs = [{**json.loads(p.read_text()), "file": p.stem} for p in results.glob("resnet50_*.json")]
    runs.sort(key=lambda r: (r["precision"], r["batch"], not is_reference(r), r["file"]))
    lines = ["# Benchmarks", "", "Generated by `bench/report.py` from `bench/results/`; see `bench/README.md` "
             "for how each figure is measured.", ""]
    if torch and "note" in torch:
        lines += [f"PyTorch rows: {torch['note']}", ""]
    for run in runs:
        title = "" if is_reference(run) else f", variant `{run['file'].removeprefix('resnet50_' + config(run) + '_')}`"
        lines += [f"## ResNet-50, {run['precision']}, batch {run['batch']}{title} (ms, medians of {run['iters']})",
                  "", f"{run.get('label', '')} (commit {run.get('commit', '?')}; `results/{run['file']}.json`).", "",
                  "| | eager | graph | graph, GPU time | vs TensorRT, graph | vs TensorRT, GPU time | target |",
                  "|---|---|---|---|---|---|---|", *resnet_rows(run, torch), "",
                  "Full pipeline (uint8 HWC preprocess kernel -> network -> softmax -> top-5):", "",
                  "| | eager | graph | graph, GPU time | memory |", "|---|---|---|---|---|",
                  *pipeline_rows(run, torch), ""]
    overhead = [load(results, f"overhead_{s}.json") for s in (32, 64)]
    dispatch = load(results, "dispatch.json")
    if all(overhead) and dispatch:
        per_step = max(o["enqueue"]["overhead_per_step_us"] for o in overhead)
        graph_host = [dispatch["steps"][s]["graph_conditional"]["host_issue"]["median_us"] for s in ("32", "64")]
        lines += ["## Host overhead", "",
                  f"- eager: {per_step:.2f} µs per step over the direct-call loop (target ≤ 2 µs): "
                  f"{verdict(per_step <= 2)}",
                  f"- graph: {graph_host[0]:.1f} µs per run at 32 steps, {graph_host[1]:.1f} µs at 64 (target: "
                  f"independent of the step count): {verdict(graph_host[1] <= 1.25 * graph_host[0])}", ""]
    memory = load(results, "memory_gpu.json")
    if memory:
        worst = max(m["arena_over_lower_bound"] for m in memory.values())
        lines += ["## Memory", "", f"- arena / lower bound, worst of the example pipelines: {worst:.3f} "
                  f"(target ≤ 1.05): {verdict(worst <= 1.05)}", ""]
    for run in (r for r in runs if is_reference(r)):
        lines += [f"ResNet-50, {run['precision']}, batch {run['batch']} (MiB; intermediates are the tensors "
                  f"between steps):", "", "| | intermediates, naive sum | arena | lower bound | arena / bound | "
                  "TensorRT scratch (shared) | whole arena |", "|---|---|---|---|---|---|---|",
                  *memory_rows(run, torch), ""]
    references = [r for r in runs if is_reference(r)]
    png = plot(references, results / "resnet50_latency_vs_pieces.png") if references else None
    if png:
        lines += [f"![latency vs pieces]({Path(os.path.relpath(png, out.parent)).as_posix()})", ""]
    out.write_text("\n".join(lines))
    print(f"wrote BENCHMARKS.md ({len(runs)} ResNet-50 runs)")


if __name__ == "__main__":
    main()
