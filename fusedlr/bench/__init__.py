"""Optimizer step-throughput benchmarks: fusedlr against torch.optim.

Command line: ``fusedlr-bench --help`` (or ``python -m fusedlr.bench``).
From Python: :func:`run_benchmark` with workloads from :mod:`.workloads`
(presets, :func:`shapes_of` a module, a JSON list of shapes).
"""
from .runner import run_benchmark
from .workloads import PRESETS, preset, shapes_from_json, shapes_of

__all__ = ["run_benchmark", "PRESETS", "preset", "shapes_of", "shapes_from_json"]
