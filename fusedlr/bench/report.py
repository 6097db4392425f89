"""Benchmark results for people: a terminal table, the JSON file, a PNG."""
from __future__ import annotations

import json
import os


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def table(results: dict) -> str:
    """One block per race: a row per contender with its figures and ratios."""
    meta = results["meta"]
    lines = [f"{meta['device_name']} ({meta['device']}), torch {meta['torch']}, {meta['threads']} threads, "
             f"{meta['date']}, kept-plan checks in {meta.get('host_checks', 'python')}"]
    header = (f"  {'contender':42s} {'device ms':>10s} {'host ms':>9s} {'launch':>6s} {'GB/s':>7s} "
              f"{'% copy':>6s} {'x fused':>7s} {'host x':>6s} {'state MB':>8s} {'B/param':>7s}")
    for run in results["runs"]:
        lines += ["", f"{_race_name(run)}: {run['tensors']} tensors, "
                      f"{run['numel'] / 1e6:.1f} M elements, {run['bytes_per_step'] / 1e6:.0f} MB per step, "
                      f"copy {run['copy_bandwidth_bytes_per_s'] / 1e9:.1f} GB/s", header]
        for r in run["results"]:
            if "error" in r:
                lines.append(f"  {r['contender']:42s} {r['error']}")
                continue
            lines.append(
                f"  {r['contender']:42s} {r['device_ms']:10.3f} {r['host_ms']:9.3f} "
                f"{_fmt(r['launches_per_step'], '6.1f')} {r['achieved_bytes_per_s'] / 1e9:7.1f} "
                f"{100 * r['fraction_of_copy_bandwidth']:6.1f} {_fmt(r.get('speedup_vs_baseline'), '7.2f')} "
                f"{_fmt(r.get('host_speedup_vs_baseline'), '6.2f')} {r['state_bytes'] / 1e6:8.1f} "
                f"{r['state_bytes_per_param']:7.2f}")
        if run.get("baseline_warning"):
            lines.append(f"  ! {run['baseline_warning']}")
    lines += ["", "GB/s: bytes-per-element model (AdamW 7, SGD-momentum 5 accesses per element) / device time; "
                  "copy: dst.copy_(src) of the workload's size, read + write, in the same rounds",
              "x fused / host x: torch fused step time (device / host) divided by the contender's; "
              ">1 is faster than torch fused",
              "B/param: optimizer state bytes per param element (step counters included); "
              "clip N: torch contenders run clip_grad_norm_(params, N) before their step, fusedlr max_grad_norm=N"]
    return "\n".join(lines)


def _race_name(run: dict) -> str:
    clip = run.get("max_grad_norm")
    return f"{run['workload']} / {run['optimizer']} / {run['dtype']}" + ("" if clip is None else f" / clip {clip:g}")


def write_json(results: dict, path: str) -> str:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as f:
        json.dump(results, f, indent=1)
    return path


def plot(results: dict, path: str) -> str:
    """Achieved GB/s per contender, one panel per race, labelled with % of copy bandwidth."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = results["runs"]
    fig, axes = plt.subplots(len(runs), 1, figsize=(10, 1.2 + 0.45 * sum(len(r["results"]) for r in runs)),
                             squeeze=False)
    for ax, run in zip(axes[:, 0], runs):
        copy_gbps = run["copy_bandwidth_bytes_per_s"] / 1e9
        ok = [r for r in run["results"] if "error" not in r]
        names = [r["contender"] for r in ok]
        gbps = [r["achieved_bytes_per_s"] / 1e9 for r in ok]
        colors = ["tab:orange" if r["contender"].startswith("fusedlr") else "tab:blue" for r in ok]
        ax.barh(names, gbps, color=colors)
        for y, r in enumerate(ok):
            ax.text(gbps[y], y, f" {100 * r['fraction_of_copy_bandwidth']:.0f}%", va="center", fontsize=8)
        ax.axvline(copy_gbps, color="gray", linestyle="--", linewidth=1)
        ax.invert_yaxis()
        ax.set_title(_race_name(run), fontsize=10)
        ax.set_xlabel("GB/s (bytes-per-element model); dashed: copy bandwidth")
    meta = results["meta"]
    fig.suptitle(f"{meta['device_name']}, torch {meta['torch']}, {meta['date'][:10]}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
