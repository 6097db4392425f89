"""The opt-in history ring of an optimizer's steps (layout in
csrc/fusedlr/step_layout.h): per step, its schedule step, whether it was
applied or skipped by GradScaler, and each group's lr. The kernels write it
in the step itself (no extra launch); the reference backend with tensor ops;
``read`` copies it to the host once."""
from __future__ import annotations

import torch

from .. import _native, figures


def _layout() -> tuple[int, int]:
    native = _native.format_constants()
    return native.HISTORY_HEADER, native.HISTORY_LRS


def allocate(capacity: int, num_groups: int, device: torch.device) -> torch.Tensor:
    header, lrs = _layout()
    ring = torch.zeros(header + capacity * (lrs + num_groups), dtype=torch.float64)
    ring[_native.format_constants().HISTORY_CAPACITY] = capacity
    return ring.to(device)


def fits(history: torch.Tensor, capacity: int, num_groups: int) -> bool:
    header, lrs = _layout()
    return history.numel() == header + capacity * (lrs + num_groups)


def record(history: torch.Tensor, capacity: int, step: torch.Tensor, lrs: torch.Tensor,
           applied: torch.Tensor) -> None:
    """The reference backend's row of the step now ending (tensor ops: no sync)."""
    header, _ = _layout()
    rows = history[header:].view(capacity, -1)
    row = torch.cat([step.to(torch.float64).reshape(1), applied.to(torch.float64).reshape(1),
                     lrs.to(torch.float64).reshape(-1)])
    rows.index_copy_(0, (history[0].to(torch.int64) % capacity).reshape(1), row.unsqueeze(0))
    history[0] += 1


def read(history: torch.Tensor, capacity: int) -> dict:
    """{"step": int64 (n,), "applied": bool (n,), "lr": float64 (n, groups)} of
    the last n = min(steps recorded, capacity) steps, oldest first, on the CPU."""
    header, lrs = _layout()
    values = history.cpu()  # the one read
    recorded = int(values[0])
    rows = values[header:].view(capacity, -1)
    count = min(recorded, capacity)
    order = torch.arange(recorded - count, recorded) % capacity
    rows = rows[order]
    return {"step": rows[:, 0].to(torch.int64), "applied": rows[:, 1] != 0, "lr": rows[:, lrs:].clone()}


def log_history(writer, records: dict, tag: str = "lr") -> None:
    """Write ``opt.history()`` records to a TensorBoard ``SummaryWriter`` (or
    anything with ``add_scalar(tag, value, global_step)``): each applied
    step's lr of group g as ``{tag}/group{g}`` at its schedule step, and each
    step GradScaler skipped as ``{tag}/skipped`` = 1 at the step it held."""
    for step, applied, lrs in zip(records["step"].tolist(), records["applied"].tolist(), records["lr"].tolist()):
        if not applied:
            writer.add_scalar(f"{tag}/skipped", 1.0, step)
            continue
        for g, lr in enumerate(lrs):
            writer.add_scalar(f"{tag}/group{g}", lr, step)


def plot_history(records: dict, path=None, schedule=None, base_lrs=None):
    """Each group's recorded lr against its step (``opt.history()``), steps
    GradScaler skipped marked, and, given the ``schedule`` and the groups'
    ``base_lrs``, the schedule's own curve over the same steps (dashed), to
    see that the run followed it. Saved as a PNG at ``path`` when given;
    returns the matplotlib figure."""
    steps, lrs, applied = records["step"], records["lr"], records["applied"]
    fig, ax = figures.new_axes(path)
    for g in range(lrs.shape[1]):
        ax.plot(steps[applied].tolist(), lrs[applied, g].tolist(), label=f"group {g} (recorded)")
    if (~applied).any():
        ax.scatter(steps[~applied].tolist(), lrs[~applied, 0].tolist(), marker="x", color="red",
                   label="skipped by GradScaler")
    if schedule is not None and len(steps):
        span = list(range(int(steps.min()), int(steps.max()) + 1))
        curve = schedule.values(span, list(base_lrs) if base_lrs is not None else [1.0] * lrs.shape[1])
        for g in range(curve.shape[1]):
            ax.plot(span, curve[:, g].tolist(), linestyle="--", color="gray", label="schedule" if g == 0 else None)
    return figures.finish(fig, ax, path, "step", "lr")
