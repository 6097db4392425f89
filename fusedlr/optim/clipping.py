"""Global grad-norm clipping fused into the step (``max_grad_norm=``).

``torch.nn.utils.clip_grad_norm_`` reads every grad twice before the
optimizer reads it a third time: once for the norm, once to multiply it by
the clip coefficient (and writes it back). Here the norm is taken in one
multi-tensor pass per device and dtype (``torch._foreach_norm``, as
``clip_grad_norm_`` takes it), the coefficient stays on the device, and the
update kernels multiply each grad by it as they read it: one pass fewer over
the grads, the grads themselves left as backward wrote them, no host sync.
With GradScaler the norm is the one of the unscaled grads."""
from __future__ import annotations

import math

import torch

from .. import _native

# torch.nn.utils.clip_grad_norm_'s guard against a zero norm
_EPS = 1e-6


def check_max_grad_norm(value) -> float | None:
    """None (no clipping) or a finite number > 0."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"max_grad_norm must be None (no clipping) or a finite number > 0, got {value!r}")
    return float(value)


def check_norm_type(value) -> float:
    """A number > 0, or inf (the largest absolute grad value)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value) or value <= 0:
        raise ValueError(f"norm_type must be a number > 0 or float('inf'), got {value!r}")
    return float(value)


def allocate(device: torch.device) -> torch.Tensor:
    """The device's clipping values (step_layout.h: coefficient, grad norm),
    written in place every step so a captured CUDA graph keeps reading them.
    Before the first step: no clipping and an unknown norm."""
    constants = _native.format_constants()
    values = torch.full((constants.CLIPPING_FIELDS,), float("nan"), dtype=torch.float64, device=device)
    values[constants.CLIP_COEFFICIENT] = 1.0
    return values


def clip(work: dict, devices: dict, max_norm: float, norm_type: float, grad_scale: torch.Tensor | None) -> None:
    """Write every device's clipping values for this step: the global norm of
    the grads in ``work`` ({device: [Bucket]}), unscaled by ``grad_scale``,
    and ``clamp(max_norm / (norm + 1e-6), max=1)``, as clip_grad_norm_ computes
    them. ``devices``: {device: DeviceState}, each with its ``clipping``."""
    total = total_norm(work, norm_type, grad_scale, next(iter(devices.values())).device)
    constants = _native.format_constants()
    values = torch.empty(constants.CLIPPING_FIELDS, dtype=torch.float64, device=total.device)
    values[constants.CLIP_COEFFICIENT] = torch.clamp(max_norm / (total + _EPS), max=1.0)
    values[constants.CLIP_GRAD_NORM] = total
    for ds in devices.values():
        ds.clipping.copy_(values, non_blocking=True)


def total_norm(work: dict, norm_type: float, grad_scale: torch.Tensor | None, first: torch.device) -> torch.Tensor:
    """The ``norm_type`` norm of all grads in ``work`` as one vector, on
    ``first``: per-tensor norms by ``torch._foreach_norm`` (accumulated in
    float32, float64 for float64 grads; bf16 grads on the CPU give bf16
    norms, as torch's), then the norm of those norms, as
    ``torch.nn.utils.get_total_norm``. A DTensor's local shards give partial
    norms, reduced over the mesh dims it is sharded on."""
    plain, sharded = {}, {}
    for buckets in work.values():
        for bucket in buckets:
            for e in bucket.entries:
                # (a sharding's reduction runs on every rank, even one whose shards are all empty)
                groups = plain if e.sharding is None else sharded.setdefault(e.sharding, {})
                if e.grad.numel():  # an empty one adds nothing (and _foreach_norm has no inf norm of nothing)
                    groups.setdefault((e.grad.device, e.grad.dtype), []).append(e.grad)
    accumulate = torch.float64 if any(dtype == torch.float64 for buckets in work.values()
                                      for dtype in (b.dtype for b in buckets)) else torch.float32
    inv_scale = None if grad_scale is None else grad_scale.double().reciprocal().float().reshape(())
    norms = _tensor_norms(plain, norm_type, accumulate, inv_scale, first)
    for (mesh, placements), groups in sharded.items():
        local = _tensor_norms(groups, norm_type, accumulate, inv_scale, first)
        local = torch.linalg.vector_norm(torch.stack(local), norm_type) if local else \
            torch.zeros((), dtype=accumulate, device=first)
        norms.append(_mesh_norm(local, mesh, placements, norm_type))
    if not norms:
        return torch.zeros((), dtype=accumulate, device=first)
    return torch.linalg.vector_norm(torch.stack(norms), norm_type)


def _tensor_norms(groups: dict, norm_type: float, accumulate: torch.dtype, inv_scale, first: torch.device) -> list:
    norms = []
    for (device, dtype), grads in groups.items():
        if device.type == "cpu" and dtype == torch.bfloat16:
            # torch's CPU norm of bf16 accumulates in fp32 and rounds the result to bf16 (as clip_grad_norm_
            # computes it); asking for a float32 result converts every element first, 10x slower
            these = [n.to(accumulate) for n in torch._foreach_norm(grads, norm_type)]
        else:  # fp16 in fp32 always: a norm past 65504 would be inf and clip every grad to 0
            try:
                these = torch._foreach_norm(grads, norm_type, dtype=accumulate)
            except TypeError:  # a torch whose _foreach_norm takes no dtype
                these = [torch.linalg.vector_norm(g, norm_type, dtype=accumulate) for g in grads]
        if inv_scale is not None:  # norm(g * s) = norm(g) * s for s > 0
            these = torch._foreach_mul(these, inv_scale.to(device=device, dtype=accumulate))
        norms += [n.to(first, non_blocking=True) for n in these]
    return norms


def _mesh_norm(local: torch.Tensor, mesh, placements: tuple, norm_type: float) -> torch.Tensor:
    """The norm over all ranks of a tensor sharded by ``placements`` on
    ``mesh``, from this rank's ``local`` norm: its power sums (or maxima, for
    inf) added up over the mesh dims the tensor is sharded on."""
    try:
        from torch.distributed.tensor import DTensor, Partial, Replicate, Shard
    except ImportError:  # torch < 2.5
        from torch.distributed._tensor import DTensor, Replicate, Shard
        from torch.distributed._tensor.placement_types import Partial

    reduce = "max" if math.isinf(norm_type) else "sum"
    partial = local if math.isinf(norm_type) else local ** norm_type
    spread = [Partial(reduce) if isinstance(p, Shard) else Replicate() for p in placements]
    total = DTensor.from_local(partial, mesh, spread, run_check=False).full_tensor()
    return total if math.isinf(norm_type) else total ** (1.0 / norm_type)
