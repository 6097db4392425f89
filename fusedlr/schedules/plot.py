"""PNG plots of schedules (optional dependency: matplotlib)."""
from __future__ import annotations

from typing import Mapping, Sequence

from .base import Schedule


def plot_schedules(schedules: Mapping[str, Schedule], path, num_steps: int = 1000,
                   base_lrs: Sequence[float] = (1.0,), backend: str = "cpu"):
    """Plot each schedule's lr for steps 0..num_steps-1 (one line per group) to ``path``."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError("plotting needs matplotlib: pip install 'fusedlr[plot]'") from None
    fig, ax = plt.subplots(figsize=(9, 5))
    steps = list(range(num_steps))
    for name, schedule in schedules.items():
        lrs = schedule.values(steps, base_lrs, backend=backend).cpu()
        for g in range(lrs.shape[1]):
            label = name if lrs.shape[1] == 1 else f"{name} (group {g})"
            ax.plot(steps, lrs[:, g].numpy(), label=label)
    ax.set_xlabel("step")
    ax.set_ylabel("learning rate")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
