"""Gathering one step's work: the params that have grads, checked, grouped
into (device, dtype, mode flags) buckets, each entry with its state tensors."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

SUPPORTED_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


@dataclass
class Entry:
    """One parameter's tensors for this step. ``work`` is the param itself, or a
    contiguous copy written back after the update when the param is not contiguous."""
    param: torch.Tensor
    work: torch.Tensor
    grad: torch.Tensor
    states: tuple  # (state0, state1, state2): tensors or None, per optimizer (see step_layout.h)
    step: torch.Tensor
    group: int
    where: str  # "param_groups[g]['params'][i]", for errors

    def refresh(self) -> None:
        """Ready a kept entry for a new step: re-read the param's current grad
        (checked; contiguous as the kernels need) and the values of a
        non-contiguous param into its contiguous stand-in."""
        grad = self.param.grad
        check_grad(self.param, grad, self.where)
        self.grad = grad if grad.is_contiguous() else grad.contiguous()
        if self.work is not self.param:
            self.work.copy_(self.param)


@dataclass
class Bucket:
    device: torch.device
    dtype: torch.dtype
    maximize: bool
    nesterov: bool
    amsgrad: bool
    entries: list = field(default_factory=list)
    #: the native backend's device pointer tables, kept with the bucket (see native_backend)
    native: object = None

    def write_back(self) -> None:
        """Copy updated contiguous stand-ins back into non-contiguous params."""
        for e in self.entries:
            if e.work is not e.param:
                e.param.copy_(e.work)


def check_param(param: torch.Tensor, where: str) -> None:
    """Refuse params no kernel can update (at construction / add_param_group)."""
    if not isinstance(param, torch.Tensor):
        raise TypeError(f"{where}: params must be tensors, got {type(param).__name__}")
    if param.is_complex():
        raise TypeError(f"{where}: complex params are not supported (dtype {param.dtype}); "
                        "optimize torch.view_as_real(param) instead")
    if param.dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"{where}: param dtype must be one of float32, float64, float16, bfloat16; "
                        f"got {param.dtype}")
    if param.is_sparse:
        raise TypeError(f"{where}: sparse params are not supported")


def check_grad(param: torch.Tensor, grad: torch.Tensor, index: str) -> None:
    """Refuse a gradient the update cannot use, before any state changes
    (torch's grad setter already enforces shape and device; dtype only unless
    the param's ``grad_dtype`` allows another)."""
    if grad.is_sparse:
        raise RuntimeError(f"{index}: sparse gradients are not supported by fusedlr optimizers")
    if grad.dtype != param.dtype:
        raise TypeError(f"{index}: gradient dtype {grad.dtype} differs from the param dtype {param.dtype}")


def collect(param_groups: list[dict], state: dict, state_names: tuple, flags_of) -> dict:
    """{device: [Bucket]} for every param with a grad. Checks every grad first,
    so a bad one raises before anything is touched. ``flags_of(group)`` gives
    (maximize, nesterov, amsgrad); ``state_names`` the state keys of state0..2."""
    for g, group in enumerate(param_groups):
        for i, p in enumerate(group["params"]):
            if p.grad is not None:
                check_grad(p, p.grad, f"param_groups[{g}]['params'][{i}]")
    by_device: dict = {}
    for g, group in enumerate(param_groups):
        flags = flags_of(group)
        for i, p in enumerate(group["params"]):
            if p.grad is None:
                continue
            key = (p.dtype, *flags)
            buckets = by_device.setdefault(p.device, {})
            bucket = buckets.get(key)
            if bucket is None:
                bucket = buckets[key] = Bucket(p.device, p.dtype, *flags)
            st = state[p]
            work = p if p.is_contiguous() else p.contiguous()
            states = tuple(st.get(name) if name else None for name in state_names)
            where = f"param_groups[{g}]['params'][{i}]"
            bucket.entries.append(Entry(p, work, p.grad.contiguous(), states, st["step"], g, where))
    return {device: list(buckets.values()) for device, buckets in by_device.items()}
