"""The main job: fusedlr next to torch.optim, on the GPU when one is usable
(else the CPU).

``fusedlr-demo [--out DIR] [--steps N]`` (or ``python -m fusedlr.demo``)
1. trains a small model with torch.optim.AdamW + a warmup-cosine scheduler
   and with fusedlr.AdamW + the same schedule, prints both loss and LR curves'
   agreement and step times, and plots them to ``DIR/training.png``;
2. checks several torch schedulers converted with ``from_torch`` against torch
   and plots them to ``DIR/schedules.png``;
3. runs the lr range test (``fusedlr.lr_find``) on the same model, prints its
   suggestions and plots ``DIR/lr_find.png``.
Exits non-zero when anything disagrees with torch.
"""
from __future__ import annotations

import argparse
import os
import sys

import torch

import fusedlr
from . import demo_lr_find, demo_schedules, demo_training


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="out", help="directory for the PNGs (default: out)")
    parser.add_argument("--steps", type=int, default=400, help="training steps (default: 400)")
    parser.add_argument("--schedule-steps", type=int, default=700,
                        help="steps of each schedule to check (default: 700)")
    args = parser.parse_args(argv)
    if args.steps < 10:
        parser.error("--steps must be at least 10")

    on_gpu = "cuda" in fusedlr.available_backends()
    info = fusedlr.build_info()
    print(f"fusedlr {fusedlr.__version__}, torch {info['torch_version']} "
          f"(built against {info['torch_version_at_build']}), CUDA kernels compiled: {info['cuda_kernels']}, "
          f"backends usable here: {', '.join(fusedlr.available_backends())}\n")
    os.makedirs(args.out, exist_ok=True)
    trained = demo_training.run(args.out, args.steps, torch.device("cuda" if on_gpu else "cpu"))
    print()
    scheduled = demo_schedules.run(args.out, args.schedule_steps, "cuda" if on_gpu else "cpu")
    print()
    demo_lr_find.run(args.out, torch.device("cuda" if on_gpu else "cpu"))
    return 0 if trained and scheduled else 1


if __name__ == "__main__":
    sys.exit(main())
