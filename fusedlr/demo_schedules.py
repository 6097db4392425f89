"""Demo part 2: fusedlr's schedule engine next to torch.optim.lr_scheduler.

Builds several torch schedulers, converts each with ``from_torch``, evaluates
the converted schedule on a native backend, checks it against torch stepped
call by call and plots all of them.
"""
from __future__ import annotations

import os

import torch

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


def run(out_dir: str, steps: int, backend: str) -> bool:
    """Print the comparison table, plot to ``out_dir/schedules.png``; True when all agree."""
    print(f"schedules on the native '{backend}' backend; oracle: torch.optim.lr_scheduler stepped {steps} times\n")
    converted = {}
    worst = 0.0
    print(f"{'schedule':34s} {'lr[0]':>10s} {'lr[mid]':>10s} {'lr[end]':>10s} {'max rel err':>12s}")
    for name, factory in _torch_schedulers(steps).items():
        expected, torch_sched = _torch_lrs(factory, steps)
        schedule = S.from_torch(torch_sched)
        got = schedule.values(range(steps), S.torch_base_lrs(torch_sched), backend=backend)[:, 0].cpu()
        err = ((got - expected).abs() / expected.abs().clamp_min(1e-300)).max().item()
        worst = max(worst, err)
        converted[name] = schedule
        mid = steps // 2
        print(f"{name:34s} {got[0]:10.6f} {got[mid]:10.6f} {got[-1]:10.6f} {err:12.2e}")

    path = os.path.join(out_dir, "schedules.png")
    try:
        S.plot_schedules(converted, path, num_steps=steps, base_lrs=[0.1], backend=backend)
        print(f"plot: {path}")
    except ImportError as exc:
        print(f"no plot: {exc}")
    ok = worst < 1e-9
    print(f"largest relative error against torch: {worst:.2e} -> {'OK' if ok else 'MISMATCH'}")
    return ok
