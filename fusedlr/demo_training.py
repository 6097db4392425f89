"""Demo part 1: train one small model twice on the same data — with
torch.optim.AdamW + a torch warmup-cosine scheduler, and with fusedlr.AdamW
whose schedule is the same warmup-cosine written with fusedlr.schedules —
and show that the loss and LR curves agree, and what a step costs each.
"""
from __future__ import annotations

import copy
import os
import statistics
import time
from dataclasses import dataclass

import torch

import fusedlr
from fusedlr import schedules as S

LR = 3e-3
WEIGHT_DECAY = 0.05
ETA_MIN = LR * 0.02


@dataclass
class Run:
    name: str
    losses: torch.Tensor  # float64 (steps,)
    lrs: torch.Tensor  # float64 (steps,): the lr each step used
    step_ms: list  # wall time of each optimizer step (+ scheduler step), ms
    total_ms: list  # wall time of each whole training step, ms


def _data(device: torch.device, samples: int = 8192, features: int = 64, classes: int = 10):
    """A synthetic classification task labelled by a random 'teacher' network."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(samples, features, generator=gen)
    teacher = torch.randn(features, classes, generator=gen)
    y = (torch.tanh(x) @ teacher + 0.5 * torch.randn(samples, classes, generator=gen)).argmax(1)
    return x.to(device), y.to(device)


def _model(features: int = 64, classes: int = 10, hidden: int = 512) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(features, hidden), torch.nn.GELU(),
                               torch.nn.Linear(hidden, hidden), torch.nn.GELU(),
                               torch.nn.Linear(hidden, classes))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _train(name, model, x, y, steps, batch, make_optimizer, read_lr) -> Run:
    """The same loop for both contenders; ``make_optimizer(params)`` returns
    (optimizer, step function), ``read_lr(opt)`` the lr the next step uses."""
    device = x.device
    opt, optimizer_step = make_optimizer(model.parameters())
    losses = torch.zeros(steps, dtype=torch.float64, device=device)
    lrs = torch.zeros(steps, dtype=torch.float64, device=device)
    step_ms, total_ms = [], []
    order = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(1)).to(device)
    for step in range(steps):
        start = time.perf_counter()
        idx = order[(step * batch) % x.shape[0]:][:batch]
        loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        losses[step].copy_(loss.detach())  # logged on the device: no sync
        lrs[step].copy_(read_lr(opt))
        _sync(device)
        opt_start = time.perf_counter()
        optimizer_step()
        _sync(device)
        end = time.perf_counter()
        step_ms.append((end - opt_start) * 1e3)
        total_ms.append((end - start) * 1e3)
    return Run(name, losses.cpu(), lrs.cpu(), step_ms, total_ms)


def _torch_adamw(steps: int, warmup: int):
    def make(params):
        opt = torch.optim.AdamW(params, lr=LR, weight_decay=WEIGHT_DECAY)
        sched = torch.optim.lr_scheduler.SequentialLR(
            opt, [torch.optim.lr_scheduler.LinearLR(opt, 0.01, 1.0, warmup),
                  torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps - warmup, eta_min=ETA_MIN)],
            milestones=[warmup])

        def optimizer_step():
            opt.step()
            sched.step()
        return opt, optimizer_step
    return make


def _fusedlr_adamw(steps: int, warmup: int):
    schedule = S.with_warmup(S.Cosine(steps - warmup, eta_min=ETA_MIN), warmup, start_factor=0.01)

    def make(params):
        opt = fusedlr.AdamW(params, lr=LR, weight_decay=WEIGHT_DECAY, schedule=schedule)
        return opt, opt.step
    return make


def _plot(runs: list[Run], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_lr) = plt.subplots(1, 2, figsize=(12, 4.5))
    for run, style in zip(runs, ("-", "--")):
        ax_loss.plot(run.losses.numpy(), style, label=run.name)
        ax_lr.plot(run.lrs.numpy(), style, label=run.name)
    ax_loss.set(xlabel="step", ylabel="training loss", yscale="log", title="loss")
    ax_lr.set(xlabel="step", ylabel="learning rate", title="learning rate (warmup + cosine)")
    for ax in (ax_loss, ax_lr):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(out_dir: str, steps: int, device: torch.device) -> bool:
    """Train both, print the comparison, plot ``out_dir/training.png``; True when they agree."""
    warmup = max(steps // 10, 1)
    x, y = _data(device)
    model = _model().to(device)
    params = sum(p.numel() for p in model.parameters())
    print(f"training: MLP with {params:,} params, AdamW lr={LR} weight_decay={WEIGHT_DECAY}, "
          f"{warmup} warmup + cosine steps to {steps}, on {device}")
    runs = [
        _train("torch.optim.AdamW + SequentialLR", copy.deepcopy(model), x, y, steps, 256,
               _torch_adamw(steps, warmup), lambda o: o.param_groups[0]["lr"]),
        _train("fusedlr.AdamW + schedule", copy.deepcopy(model), x, y, steps, 256,
               _fusedlr_adamw(steps, warmup), lambda o: o.current_lr[0]),
    ]
    ref, fused = runs
    lr_err = ((fused.lrs - ref.lrs).abs() / ref.lrs.abs()).max().item()
    loss_err = ((fused.losses - ref.losses).abs() / ref.losses.abs()).max().item()
    print(f"\n{'':34s} {'loss[0]':>9s} {'loss[end]':>9s} {'opt step ms':>12s} {'train step ms':>14s}")
    for r in runs:
        print(f"{r.name:34s} {r.losses[0]:9.4f} {r.losses[-1]:9.4f} {statistics.median(r.step_ms):12.3f} "
              f"{statistics.median(r.total_ms):14.3f}")
    print("(medians over all steps; 'opt step' is optimizer.step() plus scheduler.step() for torch)")
    print(f"largest relative difference: lr {lr_err:.2e}, loss {loss_err:.2e}")
    path = os.path.join(out_dir, "training.png")
    try:
        _plot(runs, path)
        print(f"plot: {path}")
    except ImportError:
        print("no plot: plotting needs matplotlib (pip install 'fusedlr[plot]')")
    # lrs are the same closed form; losses drift only by fp32 rounding of the updates
    ok = lr_err < 1e-9 and loss_err < 1e-3
    print(f"-> {'OK' if ok else 'MISMATCH'}")
    return ok
