"""The main job: fusedlr's schedule engine next to torch.optim.lr_scheduler.

``python -m fusedlr.demo [--out DIR] [--steps N]`` builds several torch
schedulers, converts each with ``from_torch``, evaluates the converted
schedule on the native backend (CUDA when a GPU is usable, else CPU), checks
it against torch stepped call by call, prints the largest error, and plots
all of them to ``DIR/schedules.png``. Exits non-zero when any schedule
disagrees with torch.
"""
from __future__ import annotations

import argparse
import os
import sys

import torch

import fusedlr
from fusedlr import schedules as S


def _torch_schedulers(steps: int):
    """name -> factory(optimizer) of a torch scheduler, covering the common shapes."""
    lr_sched = torch.optim.lr_scheduler
    warm = max(steps // 10, 1)
    return {
        "StepLR": lambda o: lr_sched.StepLR(o, step_size=steps // 4, gamma=0.5),
        "warmup + cosine (SequentialLR)": lambda o: lr_sched.SequentialLR(
            o, [lr_sched.LinearLR(o, 0.01, 1.0, warm), lr_sched.CosineAnnealingLR(o, steps - warm, eta_min=1e-3)],
            milestones=[warm]),
        "CosineAnnealingWarmRestarts": lambda o: lr_sched.CosineAnnealingWarmRestarts(o, T_0=steps // 7, T_mult=2),
        "OneCycleLR": lambda o: lr_sched.OneCycleLR(o, max_lr=0.1, total_steps=steps),
        "CyclicLR triangular2": lambda o: lr_sched.CyclicLR(o, 0.001, 0.1, step_size_up=steps // 8,
                                                            mode="triangular2", cycle_momentum=False),
        "PolynomialLR": lambda o: lr_sched.PolynomialLR(o, total_iters=steps, power=2.0),
    }


def _torch_lrs(factory, steps: int) -> torch.Tensor:
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=0.1, momentum=0.9)
    sched = factory(opt)
    lrs = []
    for _ in range(steps):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return torch.tensor(lrs, dtype=torch.float64), sched


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="out", help="directory for the PNG (default: out)")
    parser.add_argument("--steps", type=int, default=700, help="steps to evaluate (default: 700)")
    args = parser.parse_args(argv)

    backend = "cuda" if "cuda" in fusedlr.available_backends() else "cpu"
    info = fusedlr.build_info()
    print(f"fusedlr {fusedlr.__version__}, torch {info['torch_version']} "
          f"(built against {info['torch_version_at_build']}), CUDA kernels compiled: {info['cuda_kernels']}")
    print(f"evaluating on the native '{backend}' backend; oracle: torch.optim.lr_scheduler stepped {args.steps} times\n")

    converted = {}
    worst = 0.0
    print(f"{'schedule':34s} {'lr[0]':>10s} {'lr[mid]':>10s} {'lr[end]':>10s} {'max rel err':>12s}")
    for name, factory in _torch_schedulers(args.steps).items():
        expected, torch_sched = _torch_lrs(factory, args.steps)
        schedule = S.from_torch(torch_sched)
        got = schedule.values(range(args.steps), S.torch_base_lrs(torch_sched), backend=backend)[:, 0].cpu()
        err = ((got - expected).abs() / expected.abs().clamp_min(1e-300)).max().item()
        worst = max(worst, err)
        converted[name] = schedule
        mid = args.steps // 2
        print(f"{name:34s} {got[0]:10.6f} {got[mid]:10.6f} {got[-1]:10.6f} {err:12.2e}")

    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "schedules.png")
    try:
        S.plot_schedules(converted, path, num_steps=args.steps, base_lrs=[0.1], backend=backend)
        print(f"\nplot: {path}")
    except ImportError as exc:
        print(f"\nno plot: {exc}")
    ok = worst < 1e-9
    print(f"largest relative error against torch: {worst:.2e} -> {'OK' if ok else 'MISMATCH'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
