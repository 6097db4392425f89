"""The demo's range test: fusedlr.lr_find on the demo's model and data."""
from __future__ import annotations

import os

import torch

import fusedlr
from .demo_training import WEIGHT_DECAY, _data, _model


def run(out_dir: str, device: torch.device) -> None:
    """Ramp the lr over 100 steps, print the suggestions, plot ``out_dir/lr_find.png``."""
    x, y = _data(device)
    batches = [(x[i:i + 256], y[i:i + 256]) for i in range(0, len(x), 256)]
    model = _model().to(device)
    opt = fusedlr.AdamW(model.parameters(), lr=1e-3, weight_decay=WEIGHT_DECAY)
    result = fusedlr.lr_find(model, lambda m, b: torch.nn.functional.cross_entropy(m(b[0]), b[1]), batches, opt,
                             start_lr=1e-6, end_lr=10.0, num_steps=100)
    stop = f"diverged at step {len(result.lrs) - 1}" if result.diverged else "did not diverge"
    print(f"lr range test: {len(result.lrs)} steps from 1e-6 towards 10 ({stop}); suggested lr: "
          + ", ".join(f"{m} {result.suggestion(m):.2e}" for m in ("steepest", "valley", "minimum")
                      if result.suggestion(m) is not None))
    path = os.path.join(out_dir, "lr_find.png")
    try:
        result.plot(path)
        print(f"plot: {path}")
    except ImportError:
        print("no plot: plotting needs matplotlib (pip install 'fusedlr[plot]')")
