"""Loads the compiled backends and says which ones can run here.

``_C`` (CPU) is always part of a build. ``_C_cuda`` exists when the build
found nvcc; importing it needs no GPU, and a machine without one simply
reports the CUDA backend as unavailable. ``_C_emulated`` (always built) is the
CUDA kernels compiled for the CPU: the "emulated" backend, which runs them on
CPU tensors (slowly) so tests exercise the GPU code without a GPU.
``_C_host`` (built when torch's headers were importable) runs a kept step
plan's per-step checks against libtorch; the Python path does without it.
"""
from __future__ import annotations

import importlib

import torch

from . import _layout  # generated at build time from the C++ headers; pure Python

BACKENDS = ("reference", "cpu", "cuda", "emulated")
#: backends that run the CUDA kernels (on the GPU, or emulated on the CPU)
DEVICE_KERNEL_BACKENDS = ("cuda", "emulated")


def _try_import(name: str):
    try:
        return importlib.import_module(f"fusedlr.{name}"), ""
    except ImportError as exc:  # not built, or built for another Python
        return None, str(exc)


cpu_module, _cpu_import_error = _try_import("_C")
cuda_module, _cuda_import_error = _try_import("_C_cuda")
emulated_module, _emulated_import_error = _try_import("_C_emulated")
# the libtorch host path (optional): imported only by the torch it was built against
host_module, _host_import_error = None, "not built"
if cpu_module is not None and cpu_module.HOST_MODULE_BUILT:
    if cpu_module.TORCH_VERSION_AT_BUILD != torch.__version__:
        _host_import_error = f"built against torch {cpu_module.TORCH_VERSION_AT_BUILD}"
    else:
        host_module, _host_import_error = _try_import("_C_host")
        if host_module is not None and host_module.TORCH_VERSION_AT_BUILD != torch.__version__:
            host_module, _host_import_error = None, f"built against torch {host_module.TORCH_VERSION_AT_BUILD}"


def cuda_unavailable_reason() -> str:
    """Why the CUDA backend cannot run here ('' when it can)."""
    if cuda_module is None:
        return "fusedlr was built without CUDA kernels (no nvcc at build time)"
    if not torch.cuda.is_available():
        return "torch sees no CUDA device (CPU-only torch build or no GPU)"
    count, error = cuda_module.device_count()
    if count == 0:
        return f"the CUDA runtime found no usable device: {error}"
    return ""


def available_backends() -> list[str]:
    """Backends that can run on this machine now."""
    usable = ["reference"]
    if cpu_module is not None:
        usable.append("cpu")
    if not cuda_unavailable_reason():
        usable.append("cuda")
    if emulated_module is not None:
        usable.append("emulated")
    return usable


def check_backend(backend: str) -> None:
    """Raise a clear error unless ``backend`` names a backend usable here."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "cpu" and cpu_module is None:
        raise RuntimeError(
            f"the fusedlr CPU backend is not built or failed to import: {_cpu_import_error}"
        )
    if backend == "cuda":
        reason = cuda_unavailable_reason()
        if reason:
            raise RuntimeError(f"the fusedlr CUDA backend is unavailable: {reason}")
    if backend == "emulated" and emulated_module is None:
        raise RuntimeError(f"the fusedlr emulated backend is not built or failed to import: {_emulated_import_error}")


def module_of(backend: str):
    """The compiled module that runs a native backend's kernels."""
    return {"cpu": cpu_module, "cuda": cuda_module, "emulated": emulated_module}[backend]


def format_constants():
    """The numbers shared with the kernels (table layouts, enums, the packed-schedule
    format): ``fusedlr._layout``, written from the C++ headers at build time, so
    it needs no native module."""
    return _layout


def build_info() -> dict:
    """How this fusedlr was built and what can run now."""
    return {
        "torch_version_at_build": (cpu_module.TORCH_VERSION_AT_BUILD or None)
        if cpu_module is not None
        else None,
        "torch_version": torch.__version__,
        "links_libtorch": host_module is not None,
        "host_module_built": cpu_module is not None and cpu_module.HOST_MODULE_BUILT,
        "host_module_unavailable_reason": None if host_module is not None else _host_import_error,
        "cpu_kernels": cpu_module is not None,
        "cuda_kernels": cuda_module is not None,
        "emulated_cuda_kernels": emulated_module is not None,
        "cuda_archs": cuda_module.CUDA_ARCHS.split(",") if cuda_module is not None else [],
        "nvcc_version": cuda_module.NVCC_VERSION if cuda_module is not None else None,
        "available_backends": available_backends(),
        "cuda_unavailable_reason": cuda_unavailable_reason() or None,
    }
