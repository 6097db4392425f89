"""The learning-rate range test (Leslie Smith's; fastai's ``lr_find``,
Lightning's ``Tuner.lr_find``) on a fusedlr optimizer: the lr ramps up for a
few steps while the smoothed loss is recorded on the device (no per-step host
read), steps after the loss diverged are skipped on the device (as GradScaler
skips a step), and the results are read once at the end. The model and the
optimizer are restored afterwards."""
from __future__ import annotations

import copy
import itertools
import math
from dataclasses import dataclass
from typing import Callable, Iterable

import torch

from . import figures
from .optim.base import FusedOptimizer
from .schedules import Piecewise
from .schedules import _checks as check

MODES = ("exp", "linear")
SUGGESTIONS = ("steepest", "minimum", "valley")


def ramp(start_lr: float, end_lr: float, num_steps: int, mode: str) -> list[float]:
    """The lr of each step, as Lightning's lr finder ramps it: ``start_lr`` at
    step 0, then at step ``i`` the point ``r = (i + 1) / num_steps`` of the way
    from ``start_lr`` to ``end_lr`` (geometrically for "exp", linearly for
    "linear"), so the last step reaches ``end_lr``."""
    lrs = [start_lr]
    for i in range(1, num_steps):
        r = (i + 1) / num_steps
        lrs.append(start_lr * (end_lr / start_lr) ** r if mode == "exp" else start_lr + r * (end_lr - start_lr))
    return lrs


@dataclass
class LRFinderResult:
    """What ``lr_find`` recorded, one entry per step taken (up to and including
    the step whose loss diverged)."""
    lrs: list[float]
    losses: list[float]  # smoothed (Lightning's bias-corrected running mean)
    raw_losses: list[float]
    diverged: bool
    mode: str

    def suggestion(self, method: str = "steepest", skip_begin: int = 10, skip_end: int = 1) -> float | None:
        """A starting lr, or None with too few finite points.

        - ``"steepest"`` (Lightning's): where the smoothed loss falls fastest
          against the lr (``torch.gradient``), leaving out the first
          ``skip_begin`` and last ``skip_end`` points.
        - ``"minimum"``: a tenth of the lr at the lowest smoothed loss (the loss
          is usually already rising there).
        - ``"valley"``: the longest stretch over which the smoothed loss keeps
          falling (its longest decreasing subsequence, first to last index);
          the lr a third of the way along it.
        """
        check.choice("method", method, SUGGESTIONS)
        skip_begin = check.integer("skip_begin", skip_begin, 0)
        skip_end = check.integer("skip_end", skip_end, 0)
        indices = [i for i in range(skip_begin, len(self.losses) - skip_end) if math.isfinite(self.losses[i])]
        if len(indices) < 2:
            return None
        losses = [self.losses[i] for i in indices]
        if method == "steepest":
            gradients = torch.gradient(torch.tensor(losses, dtype=torch.float64),
                                       spacing=[torch.tensor([self.lrs[i] for i in indices], dtype=torch.float64)])[0]
            return self.lrs[indices[int(torch.argmin(gradients))]]
        if method == "minimum":
            return self.lrs[indices[min(range(len(losses)), key=losses.__getitem__)]] / 10
        start, end = _longest_fall(losses)
        return self.lrs[indices[start + (end - start) // 3]]

    def plot(self, path=None, method: str = "steepest", skip_begin: int = 10, skip_end: int = 1):
        """Smoothed loss against lr (log scale for an exponential ramp) without
        the first ``skip_begin`` and last ``skip_end`` points (as Lightning
        plots it), the suggestion marked; saved as a PNG at ``path`` when
        given. Returns the matplotlib figure."""
        fig, ax = figures.new_axes(path, (6, 4))
        shown = slice(skip_begin, len(self.lrs) - skip_end)
        ax.plot(self.lrs[shown], self.losses[shown], label="smoothed loss")
        if self.mode == "exp":
            ax.set_xscale("log")
        suggested = self.suggestion(method, skip_begin, skip_end)
        if suggested is not None:
            ax.axvline(suggested, color="red", linestyle="--", label=f"{method}: {suggested:.3g}")
        return figures.finish(fig, ax, path, "learning rate", "loss")


def _longest_fall(values: list[float]) -> tuple[int, int]:
    """(first, last) index of the longest strictly decreasing subsequence."""
    length, first = [1] * len(values), list(range(len(values)))
    best = 0
    for i in range(1, len(values)):
        for j in range(i):
            if values[i] < values[j] and length[j] + 1 > length[i]:
                length[i], first[i] = length[j] + 1, first[j]
        if length[i] > length[best]:
            best = i
    return first[best], best


def lr_find(model: torch.nn.Module, loss_fn: Callable, data: Iterable, optimizer: FusedOptimizer,
            start_lr: float = 1e-7, end_lr: float = 10.0, num_steps: int = 100, mode: str = "exp",
            smooth: float = 0.98, diverge_threshold: float | None = 4.0) -> LRFinderResult:
    """Run the lr range test: ``num_steps`` steps of ``optimizer`` with the lr of
    every param group ramped from ``start_lr`` to ``end_lr`` (see ``ramp``),
    each step ``loss_fn(model, batch).backward()`` on the next batch of
    ``data`` (cycled when it runs out), recording the loss smoothed as
    Lightning's lr finder does. Once the smoothed loss exceeds
    ``diverge_threshold`` times the best one seen (None: never), later steps
    change nothing. Then the model's and the optimizer's state (params,
    optimizer state, step counter, schedules) are restored.

    The optimizer may carry any of its options; its schedules are set aside
    for the test. One host read at the end; nothing inside the loop syncs."""
    if not isinstance(optimizer, FusedOptimizer):
        raise TypeError(f"optimizer must be a fusedlr optimizer, got {type(optimizer).__name__}")
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable as loss_fn(model, batch), got {type(loss_fn).__name__}")
    start_lr = check.positive("start_lr", start_lr)
    end_lr = check.positive("end_lr", end_lr)
    if end_lr <= start_lr:
        raise ValueError(f"end_lr must be greater than start_lr ({start_lr}), got {end_lr}")
    num_steps = check.integer("num_steps", num_steps, 2)
    mode = {"exponential": "exp"}.get(mode, mode)
    check.choice("mode", mode, MODES)
    smooth = check.in_range("smooth", smooth, 0, 1, high_open=True)
    if diverge_threshold is not None:
        diverge_threshold = check.positive("diverge_threshold", diverge_threshold)
    lrs = ramp(start_lr, end_lr, num_steps, mode)

    saved_model = copy.deepcopy(model.state_dict())
    saved_optimizer = copy.deepcopy(optimizer.state_dict())
    saved_groups = [(group["lr"], group["schedule"]) for group in optimizer.param_groups]
    saved_history = {ds: ds.history.clone() for ds in optimizer._devices.values() if ds.history is not None}
    saved_calls = optimizer._step_calls
    ramp_schedule = Piecewise(range(1, num_steps), lrs)  # factors of a base lr of 1: the ramp's lrs exactly
    try:
        for group in optimizer.param_groups:
            group["lr"], group["schedule"] = 1.0, ramp_schedule
        optimizer.step_count.fill_(0)
        record = _run(model, loss_fn, data, optimizer, num_steps, smooth, diverge_threshold)
    finally:
        model.load_state_dict(saved_model)
        optimizer.load_state_dict(saved_optimizer)
        for group, (lr, schedule) in zip(optimizer.param_groups, saved_groups):  # the very schedule objects
            group["lr"], group["schedule"] = lr, schedule
        for ds, ring in saved_history.items():  # the ramp's steps leave no record
            ds.history.copy_(ring)
        optimizer._step_calls = saved_calls
        optimizer.zero_grad(set_to_none=True)
    taken = int(record["taken"])  # the one host read
    return LRFinderResult(lrs[:taken], record["smoothed"][:taken].tolist(), record["raw"][:taken].tolist(),
                          bool(record["stopped"]), mode)


def _run(model, loss_fn, data, optimizer, num_steps, smooth, diverge_threshold) -> dict:
    """The ramp's steps; the losses and the stop flag stay on the device."""
    device = optimizer.step_count.device
    raw = torch.full((num_steps,), math.nan, dtype=torch.float64, device=device)
    smoothed = torch.full_like(raw, math.nan)
    mean, best = torch.zeros((), dtype=torch.float64, device=device), torch.zeros((), dtype=torch.float64, device=device)
    stopped = torch.zeros((), dtype=torch.bool, device=device)
    taken = torch.zeros((), dtype=torch.int64, device=device)
    no_scale = torch.ones(1, dtype=torch.float32, device=device)
    batches = _cycle(data)
    for i in range(num_steps):
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model, next(batches))
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            raise TypeError(f"loss_fn must return a one-element loss tensor, got {type(loss).__name__}")
        loss.backward()
        # GradScaler's skip: after the divergence every step leaves params, state and counter alone
        optimizer.grad_scale, optimizer.found_inf = no_scale, stopped.to(torch.float32).reshape(1)
        try:
            optimizer.step()
        finally:
            del optimizer.grad_scale, optimizer.found_inf
        live = ~stopped
        value = loss.detach().to(device=device, dtype=torch.float64).reshape(())
        raw[i] = value
        # Lightning's smoothing: its step count is i + 1 when the loss is recorded
        mean = torch.where(live, smooth * mean + (1 - smooth) * value, mean)
        current = mean / (1 - smooth ** (i + 2))
        smoothed[i] = current
        taken += live.to(torch.int64)
        if diverge_threshold is not None and i >= 1:
            stopped = stopped | (current > diverge_threshold * best)
        best = current if i == 0 else torch.where(live & (current < best), current, best)
    return {"raw": raw, "smoothed": smoothed, "stopped": stopped, "taken": taken}


def _cycle(data: Iterable):
    """The batches of ``data``, started again each time they run out."""
    for epoch in itertools.count():
        empty = True
        for batch in data:
            empty = False
            yield batch
        if empty:
            raise ValueError("data yielded no batches")
