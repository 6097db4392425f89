"""Races every contender on every (workload, optimizer, dtype) and collects the
raw figures, with the ratios to the torch fused baseline from the same run."""
from __future__ import annotations

import datetime
import gc
import platform
import statistics
import subprocess
import sys

import torch

import fusedlr
from . import contenders as C
from .measure import CopyProbe, launches_per_step, state_bytes, time_steps, warm_up
from .workloads import make_params, numel

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def machine_info(device: torch.device) -> dict:
    """What the figures were measured on."""
    info = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "device": str(device), "torch": torch.__version__, "fusedlr": fusedlr.__version__,
            "python": platform.python_version(), "threads": torch.get_num_threads(),
            "cpu": _cpu_name(), "command": " ".join(["fusedlr-bench", *sys.argv[1:]]),
            # where a kept plan's per-step checks ran: the libtorch host module or Python
            "host_checks": "libtorch" if fusedlr.build_info()["links_libtorch"] else "python"}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(device_name=props.name, cuda=torch.version.cuda, driver=_driver_version(),
                    sm=f"{props.major}.{props.minor}")
    else:
        info["device_name"] = info["cpu"]
    return info


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _driver_version() -> str:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
        return out.stdout.strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        return "unknown"


def _race(workload: str, shapes, optimizer: str, dtype: str, device, steps: int, warmup: int, chosen,
          max_grad_norm) -> dict:
    """Every contender on one workload, timed in interleaved rounds so that a noisy
    machine slows all of them alike; the copy probe runs in the same rounds."""
    elements = numel(shapes)
    element_size = torch.empty((), dtype=DTYPES[dtype]).element_size()
    bytes_per_step = elements * element_size * C.ACCESSES_PER_ELEMENT[optimizer]
    rows, live = [], []
    for contender in chosen:
        if contender.dtypes is not None and DTYPES[dtype] not in contender.dtypes:
            continue
        if contender.optimizers is not None and optimizer not in contender.optimizers:
            continue
        row = dict(contender=contender.name, graphed=contender.graphed, baseline=contender.baseline)
        rows.append(row)
        params = make_params(shapes, DTYPES[dtype], device)
        try:
            opt, step = contender.build(params, optimizer, max_grad_norm)
            row["peak_bytes"] = warm_up(step, device, warmup)
        except (RuntimeError, ValueError, TypeError) as exc:  # e.g. a torch mode without this dtype/device
            row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
            continue
        row.update(state_bytes=state_bytes(opt), state_bytes_per_param=state_bytes(opt) / max(elements, 1),
                   device_ms_all=[], host_ms_all=[])
        live.append((row, step))
    probe = CopyProbe(device, elements * element_size)
    copy_ms = []
    per_round = min(steps, 5)
    for _ in range(-(-steps // per_round)):
        copy_ms += time_steps(probe.step, device, per_round)[0]
        for row, step in live:
            device_ms, host_ms = time_steps(step, device, per_round)
            row["device_ms_all"] += device_ms
            row["host_ms_all"] += host_ms
    copy_bps = probe.bytes_per_copy / (statistics.median(copy_ms) / 1e3)
    for row, step in live:
        row["device_ms"] = statistics.median(row["device_ms_all"])
        row["host_ms"] = statistics.median(row["host_ms_all"])
        row["launches_per_step"] = launches_per_step(step, device)
        row["achieved_bytes_per_s"] = bytes_per_step / (row["device_ms"] / 1e3)
        row["fraction_of_copy_bandwidth"] = row["achieved_bytes_per_s"] / copy_bps
    baseline = next((row for row, _ in live if row["baseline"]), None)
    for row, _ in live:
        if baseline:
            row["speedup_vs_baseline"] = baseline["device_ms"] / row["device_ms"]
            row["host_speedup_vs_baseline"] = baseline["host_ms"] / row["host_ms"]
    del live, probe
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return dict(workload=workload, optimizer=optimizer, dtype=dtype, max_grad_norm=max_grad_norm,
                tensors=len(shapes), numel=elements,
                bytes_per_step=bytes_per_step, copy_bandwidth_bytes_per_s=copy_bps, results=rows,
                baseline_warning=C.torch_fused_disagrees(C.CLASSES[optimizer][0], DTYPES[dtype], device,
                                                         C.HYPER[optimizer]))


def run_benchmark(device: torch.device, workloads: dict, optimizers, dtypes, steps: int, warmup: int,
                  only=None, progress=None, clips=(None,)) -> dict:
    """Every figure of every race, as a JSON-ready dict. ``only``: contender names to keep;
    ``progress(description)`` is called after each race; ``clips``: the max_grad_norm
    of each race (None: no clipping; else torch contenders run clip_grad_norm_ first)."""
    chosen = [c for c in C.contenders(device) if not only or c.name in only]
    if not any(c.baseline for c in chosen):
        chosen = [c for c in C.contenders(device) if c.baseline] + chosen  # ratios need the baseline
    runs = []
    for workload, shapes in workloads.items():
        for optimizer in optimizers:
            for dtype in dtypes:
                for clip in clips:
                    runs.append(_race(workload, shapes, optimizer, dtype, device, steps, warmup, chosen, clip))
                    if progress:
                        progress(f"{workload} {optimizer} {dtype}" + ("" if clip is None else f" clip {clip:g}"))
    meta = machine_info(device)
    meta.update(steps=steps, warmup=warmup, schedule="warmup-cosine (torch: SequentialLR(LinearLR, CosineAnnealingLR))")
    return dict(meta=meta, runs=runs)


def default_device() -> torch.device:
    return torch.device("cuda" if "cuda" in fusedlr.available_backends() else "cpu")
