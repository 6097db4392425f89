"""DTensor params (FSDP2's ``fully_shard``, tensor parallelism, any mesh): the
kernels update each rank's local shard. A DTensor has no storage of its own
(its ``data_ptr()`` is 0, its ``numel()`` the global size), so every pointer
and size handed to a kernel comes from its local tensor, and its grad and
state must be sharded the same way so the local shards line up."""
from __future__ import annotations

import sys

import torch


def _dtensor_type():
    """torch's DTensor class if its module was imported (no DTensor can exist
    otherwise, so fusedlr never imports torch.distributed itself)."""
    for name in ("torch.distributed.tensor", "torch.distributed._tensor"):
        module = sys.modules.get(name)
        if module is not None and hasattr(module, "DTensor"):
            return module.DTensor
    return None


def is_distributed(t) -> bool:
    """True for a DTensor."""
    dtensor = _dtensor_type()
    return dtensor is not None and isinstance(t, dtensor)


def local_tensor(t: torch.Tensor) -> torch.Tensor:
    """The tensor holding ``t``'s values on this rank: a DTensor's local shard,
    any other tensor itself."""
    return t._local_tensor if is_distributed(t) else t


def sharding(t: torch.Tensor):
    """(device mesh, placements) of a DTensor; None for other tensors."""
    return (t.device_mesh, tuple(t.placements)) if is_distributed(t) else None


def check_same_sharding(param: torch.Tensor, other: torch.Tensor, what: str, where: str) -> None:
    """Refuse a grad or state tensor not sharded as its param: the kernels pair
    local shards element by element."""
    if sharding(param) == sharding(other):
        return
    if not is_distributed(param):
        raise RuntimeError(f"{where}: {what} is a DTensor but the param is a plain tensor")
    if not is_distributed(other):
        raise RuntimeError(f"{where}: the param is a DTensor ({_placements(param)}) but {what} is a plain tensor; "
                           "it must be a DTensor with the param's mesh and placements")
    raise RuntimeError(f"{where}: {what} is a DTensor with placements {_placements(other)} but the param has "
                       f"{_placements(param)}; redistribute it to the param's mesh and placements "
                       "(e.g. grad.redistribute(param.device_mesh, param.placements))")


def _placements(t: torch.Tensor) -> str:
    return f"{tuple(t.placements)} on {t.device_mesh}"
