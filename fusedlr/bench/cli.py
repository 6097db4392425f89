"""``fusedlr-bench`` / ``python -m fusedlr.bench``: optimizer step throughput of
fusedlr against torch.optim (for-loop, foreach and fused, each with a torch
warmup-cosine scheduler stepped every step; on CUDA also both inside CUDA
graphs). Prints a table, writes the JSON with every raw figure and a PNG.
"""
from __future__ import annotations

import argparse
import datetime
import os
import sys

import torch

import fusedlr
from . import report
from .contenders import contenders
from .runner import DTYPES, default_device, run_benchmark
from .workloads import PRESETS, preset, shapes_from_json, shapes_from_module_spec


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fusedlr-bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                   help="where to run (auto: cuda when fusedlr's CUDA backend is usable)")
    p.add_argument("--preset", nargs="+", choices=sorted(PRESETS), metavar="NAME",
                   help=f"workload presets: {', '.join(PRESETS)} (default: large gpt2-small tiny-1000)")
    p.add_argument("--shapes", metavar="JSON", help="a JSON file with a list of param shapes")
    p.add_argument("--module", metavar="PKG.MOD:FACTORY", help="shapes of the params of a torch.nn.Module factory")
    p.add_argument("--optimizer", nargs="+", choices=["adamw", "adam", "sgd"], default=["adamw"])
    p.add_argument("--dtype", nargs="+", choices=sorted(DTYPES), default=["fp32"])
    p.add_argument("--clip", nargs="+", metavar="MAX_NORM", type=_clip_value, default=[None],
                   help="race with grad-norm clipping: torch runs clip_grad_norm_(params, MAX_NORM) before its step, "
                        "fusedlr max_grad_norm=MAX_NORM; 'none' races without (default: none)")
    p.add_argument("--steps", type=int, help="timed steps per contender (default 50, --quick 5)")
    p.add_argument("--warmup", type=int, help="untimed steps first (default 5, --quick 1)")
    p.add_argument("--contender", nargs="+", metavar="NAME",
                   help="only these contenders (quoted names as printed; the baseline is always kept)")
    p.add_argument("--threads", type=int, help="CPU threads (torch.set_num_threads) for every contender")
    p.add_argument("--quick", action="store_true", help="smoke test: scaled-down presets, few steps")
    p.add_argument("--out", default="benchmarks/results", help="directory for the JSON and PNG")
    p.add_argument("--name", help="file stem (default: <device>-<date>[-quick])")
    p.add_argument("--no-plot", action="store_true")
    return p


def _clip_value(text: str):
    if text.lower() == "none":
        return None
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"MAX_NORM must be > 0 or 'none', got {text}")
    return value


def _workloads(args) -> dict:
    found = {}
    if args.shapes:
        found[os.path.basename(args.shapes)] = shapes_from_json(args.shapes)
    if args.module:
        found[args.module] = shapes_from_module_spec(args.module)
    names = args.preset or ([] if found else ["large", "gpt2-small", "tiny-1000"])
    for name in names:
        found[name] = preset(name, args.quick)
    return found


def _progress(total: int):
    """(callback after each race, bar to close): a tqdm bar when tqdm is installed
    (pip install 'fusedlr[bench]'), else a line per race."""
    try:
        from tqdm import tqdm
    except ImportError:
        done = [0]

        def line(description: str) -> None:
            done[0] += 1
            print(f"[{done[0]}/{total}] {description}", file=sys.stderr, flush=True)
        return line, None
    bar = tqdm(total=total, file=sys.stderr, unit="race")

    def advance(description: str) -> None:
        bar.set_postfix_str(description)
        bar.update(1)
    return advance, bar


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    device = default_device() if args.device == "auto" else torch.device(args.device)
    if device.type == "cuda" and "cuda" not in fusedlr.available_backends():
        raise SystemExit(f"--device cuda: {fusedlr._native.cuda_unavailable_reason()}")
    if args.threads is not None:
        if args.threads < 1:
            raise SystemExit(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    steps = args.steps if args.steps is not None else (5 if args.quick else 50)
    warmup = args.warmup if args.warmup is not None else (1 if args.quick else 5)
    if steps < 1 or warmup < 0:
        raise SystemExit("--steps must be >= 1 and --warmup >= 0")
    known = {c.name for c in contenders(device)}
    unknown = set(args.contender or ()) - known
    if unknown:
        raise SystemExit(f"--contender: unknown {sorted(unknown)}; on {device.type}: {sorted(known)}")
    workloads = _workloads(args)
    advance, bar = _progress(len(workloads) * len(args.optimizer) * len(args.dtype) * len(args.clip))
    try:
        results = run_benchmark(device, workloads, args.optimizer, args.dtype, steps, warmup, args.contender,
                                advance, args.clip)
    finally:
        if bar is not None:
            bar.close()
    print(report.table(results))
    stem = args.name or f"{device.type}-{datetime.date.today().isoformat()}{'-quick' if args.quick else ''}"
    print(f"\njson: {report.write_json(results, os.path.join(args.out, stem + '.json'))}")
    if not args.no_plot:
        try:
            print(f"plot: {report.plot(results, os.path.join(args.out, stem + '.png'))}")
        except ImportError:
            print("no plot: plotting needs matplotlib (pip install 'fusedlr[bench]')")
    return 0
