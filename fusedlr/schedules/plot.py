"""PNG plots of schedules (optional dependency: matplotlib)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Mapping, Sequence

from .. import figures

if TYPE_CHECKING:  # base.py imports this module (Schedule.plot)
    from .base import Schedule


def plot_schedules(schedules: Mapping[str, Schedule], path, num_steps: int = 1000,
                   base_lrs: Sequence[float] = (1.0,), backend: str = "cpu"):
    """Plot each schedule's lr for steps 0..num_steps-1 (one line per group) to ``path``."""
    fig, ax = figures.new_axes(path, (9, 5))
    steps = list(range(num_steps))
    for name, schedule in schedules.items():
        lrs = schedule.values(steps, base_lrs, backend=backend).cpu()
        for g in range(lrs.shape[1]):
            label = name if lrs.shape[1] == 1 else f"{name} (group {g})"
            ax.plot(steps, lrs[:, g].numpy(), label=label)
    figures.finish(fig, ax, path, "step", "learning rate")
    import matplotlib.pyplot as plt
    plt.close(fig)
    return path
