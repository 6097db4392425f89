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
           applied: torch.Tensor, grad_norm: torch.Tensor | None) -> None:
    """The reference backend's row of the step now ending (tensor ops: no sync)."""
    header, _ = _layout()
    rows = history[header:].view(capacity, -1)
    if grad_norm is None:
        grad_norm = torch.full((), float("nan"), dtype=torch.float64, device=history.device)
    row = torch.cat([step.to(torch.float64).reshape(1), applied.to(torch.float64).reshape(1),
                     grad_norm.to(torch.float64).reshape(1), lrs.to(torch.float64).reshape(-1)])
    rows.index_copy_(0, (history[0].to(torch.int64) % capacity).reshape(1), row.unsqueeze(0))
    history[0] += 1


def read(history: torch.Tensor, capacity: int) -> dict:
    """{"step": int64 (n,), "applied": bool (n,), "grad_norm": float64 (n,),
    "lr": float64 (n, groups)} of the last n = min(steps recorded, capacity)
    steps, oldest first, on the CPU (grad_norm: NaN without max_grad_norm)."""
    header, lrs = _layout()
    values = history.cpu()  # the one read
    recorded = int(values[0])
    rows = values[header:].view(capacity, -1)
    count = min(recorded, capacity)
    order = torch.arange(recorded - count, recorded) % capacity
    rows = rows[order]
    grad_norm = _native.format_constants().HISTORY_GRAD_NORM
    return {"step": rows[:, 0].to(torch.int64), "applied": rows[:, 1] != 0, "grad_norm": rows[:, grad_norm].clone(),
            "lr": rows[:, lrs:].clone()}


def log_history(logger, records: dict, tag: str = "lr", grad_norm_tag: str = "grad_norm") -> None:
    """Write ``opt.history()`` records to a logger, one call per recorded step
    at its schedule step: each applied step's lr of group g as
    ``{tag}/group{g}`` and its grad norm (with max_grad_norm) as
    ``grad_norm_tag``; a step GradScaler skipped as ``{tag}/skipped`` = 1.
    ``logger``: a TensorBoard ``SummaryWriter`` (anything with
    ``add_scalar(tag, value, global_step)``), a Lightning logger
    (``trainer.logger``: ``log_metrics(metrics, step)``) or an accelerate
    ``Accelerator`` / wandb run (``log(values, step=)``)."""
    write = _metrics_writer(logger)
    steps, applied, norms = records["step"].tolist(), records["applied"].tolist(), records["grad_norm"].tolist()
    for step, was_applied, norm, lrs in zip(steps, applied, norms, records["lr"].tolist()):
        if not was_applied:
            write({f"{tag}/skipped": 1.0}, step)
            continue
        metrics = {f"{tag}/group{g}": lr for g, lr in enumerate(lrs)}
        if norm == norm:  # recorded (NaN without clipping)
            metrics[grad_norm_tag] = norm
        write(metrics, step)


def _metrics_writer(logger):
    """write(metrics: dict, step) for the loggers log_history knows."""
    if hasattr(logger, "add_scalar"):
        def write(metrics, step):
            for name, value in metrics.items():
                logger.add_scalar(name, value, step)
        return write
    if hasattr(logger, "log_metrics"):
        return lambda metrics, step: logger.log_metrics(metrics, step=step)
    if hasattr(logger, "log"):
        return lambda metrics, step: logger.log(metrics, step=step)
    raise TypeError(f"logger must have add_scalar (TensorBoard SummaryWriter), log_metrics (a Lightning logger) or "
                    f"log (accelerate Accelerator, wandb run); got {type(logger).__name__}")


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
