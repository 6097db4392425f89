"""What an optimizer keeps on each device it updates: the int64 schedule step,
the group table and packed schedules (re-uploaded only when a group's
hyperparameters or schedule change), the plateau buffer, the groups' next lrs
and the scratch where the CUDA kernels write the groups' values for the next
step."""
from __future__ import annotations

import torch

from .. import _native
from . import clipping, history, plateau_buffer
from .buckets import tensor_version
from .group_tables import group_lrs_at, hyper_key, pack_groups
from .specs import OptimizerSpec


class DeviceState:
    def __init__(self, device: torch.device, step: torch.Tensor | None = None):
        """``step``: the optimizer's counter on another device, copied (0 if None)."""
        self.device = device
        self.step = torch.zeros((), dtype=torch.int64, device=device)
        if step is not None:
            self.step.copy_(step)
        self.note_own_write()
        #: the native tables whose update ended the last step: the CUDA kernels wrote
        #: their values for this step; any other table set must be prepared first
        self.stepped_tables: list = []
        #: whether the last step was applied (False: skipped by GradScaler)
        self.applied = torch.ones((), dtype=torch.bool, device=device)
        self.key = None
        #: counts refreshes: per-tensor values the CUDA kernels derived from older tables are stale
        self.generation = 0
        self.groups = self.program = self.base_lrs = self.next_lr = self.plateau = self.group_values = None
        #: native tables of the compiled step, kept as long as the optimizer (see compiled_step)
        self.compiled_tables: dict = {}
        #: the Plateau the groups' schedules hold (None: opt.report() has nothing to drive)
        self.plateau_schedule = None
        #: the opt-in history ring (layout in csrc/fusedlr/step_layout.h), None when not kept
        self.history: torch.Tensor | None = None
        self.history_capacity = 0
        #: rings replaced or turned off: a captured CUDA graph may still write them
        self._retired_history: list = []
        #: with max_grad_norm: this step's clip coefficient and grad norm (clipping.py)
        self.clipping = clipping.allocate(device)
        #: what the compiled step passes for a ring not kept
        self.no_history = torch.zeros(0, dtype=torch.float64, device=device)

    def note_own_write(self) -> None:
        """Remember the counter's version after fusedlr wrote it with a torch op
        (the native kernels write it without bumping the version)."""
        self._step_version = tensor_version(self.step)

    def step_written_by_user(self) -> bool:
        """Was the counter written from the host since (e.g. ``opt.step_count.fill_(n)``)?"""
        return tensor_version(self.step) != self._step_version

    def is_stale(self, param_groups: list[dict], spec: OptimizerSpec) -> bool:
        """Did a group's hyperparameters or schedule change since the last upload?"""
        return self.key is None or self.key != [hyper_key(g, spec) for g in param_groups]

    def refresh(self, param_groups: list[dict], spec: OptimizerSpec) -> None:
        """Upload the group table and recompute the next lrs (no host sync). Tables
        whose size did not change are overwritten in place, so a captured CUDA graph,
        which holds their addresses, sees the new values at its next replay."""
        key = [hyper_key(g, spec) for g in param_groups]
        rows, program = pack_groups(param_groups, spec)
        base_column = _native.format_constants().GROUP_FIELDS["base_lr"]
        self.groups = self._overwrite(self.groups, rows)
        self.program = self._overwrite(self.program, program)
        self.base_lrs = self._overwrite(self.base_lrs, rows[:, base_column].contiguous())
        self.plateau_schedule = plateau_buffer.find_plateau(param_groups, spec.schedules)
        self.plateau = plateau_buffer.refreshed(self.plateau, self.plateau_schedule, len(param_groups), self.device)
        self.next_lr = self._overwrite(self.next_lr, self.lrs_at(param_groups, self.step))
        fields = _native.format_constants().GROUP_VALUE_FIELDS
        if self.group_values is None or self.group_values.shape[0] != len(param_groups):
            self.group_values = torch.zeros(len(param_groups), fields, dtype=torch.float64, device=self.device)
        if self.history is not None:  # rows as wide as the groups
            self.keep_history(self.history_capacity, len(param_groups))
        self.key = key
        self.generation += 1

    def keep_history(self, capacity: int, num_groups: int) -> None:
        """Keep the last ``capacity`` steps in the history ring (0: none). A ring
        of another size is replaced (its records dropped)."""
        if capacity == self.history_capacity and (capacity == 0 or history.fits(self.history, capacity, num_groups)):
            return
        if self.history is not None:
            self._retired_history.append(self.history)
        self.history, self.history_capacity = (
            (history.allocate(capacity, num_groups, self.device), capacity) if capacity else (None, 0))

    def lrs_at(self, param_groups: list[dict], step: torch.Tensor) -> torch.Tensor:
        """The groups' lrs at ``step`` (reference maths, tensor ops, no host sync)."""
        return group_lrs_at(param_groups, step, self.base_lrs, plateau=self.plateau)

    def _overwrite(self, table: torch.Tensor | None, value: torch.Tensor) -> torch.Tensor:
        if table is not None and table.shape == value.shape and table.dtype == value.dtype:
            return table.copy_(value)
        return value.to(self.device)
