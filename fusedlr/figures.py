"""Matplotlib figures for fusedlr's plots (optional dependency: matplotlib)."""
from __future__ import annotations


def new_axes(path, size=(7, 4)):
    """(figure, axes); the file-only Agg backend when the figure goes to ``path``."""
    try:
        import matplotlib
        if path is not None:
            matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError("plotting needs matplotlib: pip install 'fusedlr[plot]'") from None
    return plt.subplots(figsize=size)


def finish(fig, ax, path, xlabel: str, ylabel: str):
    """Label the axes, add the legend, and save to ``path`` (a PNG) when given; the figure."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig
