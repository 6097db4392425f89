"""FusedOptimizer: the torch.optim.Optimizer subclass behind fusedlr.SGD and
fusedlr.Adam(W). It owns the per-device schedule step counters, allocates all
state at construction (and lazily again, as torch does, after a reset),
groups each step's work into (device, dtype, mode) buckets, checked every step
against what the kernels were handed before, and hands them to a backend: the
native CPU or CUDA kernels, or the pure-PyTorch reference."""
from __future__ import annotations

from typing import Callable

import torch

from .. import _native
from ..schedules import Constant, Schedule
from ..schedules._checks import integer as check_integer
from . import (block_states, checkpoint, clipping, compiled_step, history, native_backend, plateau_buffer,
               reference_backend, split_master)
from .buckets import check_param, describe, note_master_in_step
from .device_state import DeviceState
from .distributed import check_same_sharding, is_distributed, local_tensor
from .scheduler_guard import refuse_torch_scheduler
from .split_master import REMAINDER
from .specs import OptimizerSpec
from .step_plan import StepPlan


#: the state key of a param's fp32 master copy (master_weights)
MASTER = "master_param"
#: master_weights' value for masters kept as low halves beside bf16 params
REMAINDER_MODE = "remainder"


def default_backend(device: torch.device) -> str:
    """The native kernel for the device when one can run, else the reference."""
    usable = _native.available_backends()
    if device.type in ("cpu", "cuda") and device.type in usable:
        return device.type
    return "reference"


class FusedOptimizer(torch.optim.Optimizer):
    """Base class; subclasses set ``spec`` (specs.py) and the group checks."""

    #: what the optimizer is (kernel kind, state slots, group table values, schedulable hyperparameters)
    spec: OptimizerSpec
    #: tells torch.amp.GradScaler to hand over grad_scale/found_inf instead of unscaling
    _step_supports_amp_scaling = True

    def __init__(self, params, defaults: dict, backend: str | None, max_grad_norm=None, norm_type=2.0,
                 master_weights=False, state_dtype=None, stochastic_rounding=False):
        if not (isinstance(master_weights, bool) or master_weights == REMAINDER_MODE):
            raise TypeError(f"master_weights must be True, False or {REMAINDER_MODE!r}, got {master_weights!r}")
        if state_dtype not in (None, torch.bfloat16, block_states.INT8):
            raise ValueError(f"state_dtype must be None (the param's dtype, float32 with master_weights), "
                             f"torch.bfloat16 or {block_states.INT8!r} (block-wise 8-bit moments), got {state_dtype!r}")
        if state_dtype == block_states.INT8:
            _check_int8_states(self.spec, master_weights)
        #: True: fp16/bf16 params are updated through an fp32 master copy (state "master_param");
        #: "remainder": bf16 params through the fp32 masters they form with the int16 low halves in
        #: state "master_remainder" (split_master.py)
        self.master_weights = master_weights
        #: bfloat16: states kept in bf16 beside fp32 params or masters (maths in fp32); "int8": Adam(W)'s
        #: moments as block-wise 8-bit codes (block_states.py); None: see state_dtype_of
        self.state_dtype = state_dtype
        if not isinstance(stochastic_rounding, bool):
            raise TypeError(f"stochastic_rounding must be True or False, got {stochastic_rounding!r}")
        if stochastic_rounding and state_dtype != torch.bfloat16:
            raise ValueError("stochastic_rounding=True rounds bf16 states: it needs state_dtype=torch.bfloat16")
        #: bf16 states rounded stochastically (random bits from the update count and element index)
        self.stochastic_rounding = stochastic_rounding
        #: clip the global grad norm of each step to this (None: no clipping), fused into the update
        self.max_grad_norm = clipping.check_max_grad_norm(max_grad_norm)
        #: the norm clipped: p > 0, or inf (largest absolute value), as clip_grad_norm_'s norm_type
        self.norm_type = clipping.check_norm_type(norm_type)
        if backend is not None and backend not in _native.BACKENDS:
            raise ValueError(f"backend must be None (automatic) or one of {_native.BACKENDS}, got {backend!r}")
        if backend is not None:
            _native.check_backend(backend)
        self._forced_backend = backend
        self._devices: dict[torch.device, DeviceState] = {}
        self._plan = StepPlan()
        self._layout = None
        self._constructing = True  # schedules may be written for groups not added yet
        #: set when torch.compile traced step(): the compiled step's own counter writes bump its version
        self._compiled_steps = False
        self._step_calls = 0  # host count of step() calls (SchedulerView's clock; no device read)
        self._history_capacity = 0  # rows of the history ring (enable_history)
        super().__init__(params, defaults)
        self._constructing = False
        self._refresh_tables()  # checks every schedule now, and a compiled step finds the tables ready

    # ---- groups and state ----------------------------------------------------
    def check_group(self, group: dict) -> None:
        """Raise ValueError naming a bad hyperparameter of ``group``."""
        raise NotImplementedError

    def complete_state(self, param: torch.Tensor, group: dict, state: dict) -> None:
        """Allocate the state tensors ``group``'s settings need and ``state`` lacks."""
        raise NotImplementedError

    def init_state(self, param: torch.Tensor, group: dict) -> dict:
        """The state of a param that has not been updated yet."""
        state = {"step": torch.zeros((), dtype=torch.int64, device=param.device)}
        self._complete(param, group, state)
        return state

    def uses_master(self, param: torch.Tensor) -> bool:
        """Is ``param`` updated through an fp32 master copy (master_weights=True, fp16/bf16)?"""
        return self.master_weights is True and param.dtype in (torch.float16, torch.bfloat16)

    def uses_remainder(self, param: torch.Tensor) -> bool:
        """Is ``param`` the high half of an fp32 master (master_weights="remainder", bf16)?"""
        return self.master_weights == REMAINDER_MODE and param.dtype == torch.bfloat16

    def math_dtype_of(self, param: torch.Tensor) -> torch.dtype:
        """The dtype the kernels update ``param`` in: float32 through a master, else its own."""
        return torch.float32 if self.uses_master(param) or self.uses_remainder(param) else param.dtype

    def state_dtype_of(self, param: torch.Tensor) -> torch.dtype:
        """The dtype of ``param``'s state tensors: bfloat16 with state_dtype=bfloat16
        (beside fp32 params or masters), float32 with a master copy, else the param's."""
        math = self.math_dtype_of(param)
        if math != torch.float32 or self.state_dtype is None:
            return math
        return block_states.CODE_DTYPE if self.state_dtype == block_states.INT8 else self.state_dtype

    def new_state_tensor(self, param: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
        """A zero state tensor for ``param`` (contiguous, of ``state_dtype_of``)."""
        return torch.zeros_like(param, dtype=dtype or self.state_dtype_of(param),
                                memory_format=torch.contiguous_format)

    def _complete(self, param: torch.Tensor, group: dict, state: dict) -> None:
        """``complete_state``, and the fp32 master copy of a param that needs one."""
        if self.uses_master(param) and state.get(MASTER) is None:
            state[MASTER] = self.new_state_tensor(param, torch.float32).copy_(param.detach())
            note_master_in_step(local_tensor(state[MASTER]), local_tensor(param))
        if self.uses_remainder(param) and state.get(REMAINDER) is None:
            state[REMAINDER] = self.new_state_tensor(param, torch.int16)  # zeros: the master is the param
            note_master_in_step(local_tensor(state[REMAINDER]), local_tensor(param))
        if self.state_dtype == block_states.INT8 and state.get(block_states.SCALES) is None:
            state[block_states.SCALES] = block_states.new_scales(param)
        self.complete_state(param, group, state)

    @property
    def kind(self) -> str:
        """The optimizer's kind: its spec's name ("sgd", "adamw", "adam")."""
        return self.spec.name

    @property
    def state_names(self) -> tuple:
        """State keys of the kernel's state slots 0..2 ("" for unused)."""
        return self.spec.state_names

    def flags(self, group: dict) -> tuple:
        """(maximize, nesterov, amsgrad): the modes compiled into the kernel."""
        return self.spec.flags(group)

    @property
    def schedule_keys(self) -> tuple:
        """The group keys that hold schedules."""
        return self.spec.schedule_keys

    @property
    def state_keys(self) -> tuple:
        """The state keys the kernels read: the state tensors (the master copy
        or the masters' low halves with master_weights) and "step"."""
        master = (REMAINDER,) if self.master_weights == REMAINDER_MODE else (MASTER,) if self.master_weights else ()
        scales = (block_states.SCALES,) if self.state_dtype == block_states.INT8 else ()
        return tuple(name for name in self.state_names if name) + master + scales + ("step",)

    def add_param_group(self, param_group: dict) -> None:
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        where = f"param_groups[{len(self.param_groups) - 1}]"
        try:
            self.check_group_fully(group, where)
            for i, p in enumerate(group["params"]):
                self.check_new_param(p, f"{where}['params'][{i}]")
            if not self._constructing:
                self.check_schedules(self.param_groups)  # e.g. a schedule written for fewer groups
        except Exception:
            self.param_groups.pop()
            raise
        for p in group["params"]:
            if not self.state.get(p):
                self.state[p] = self.init_state(p, group)
            self.device_state(p.device)
        for ds in self._devices.values():
            ds.key = None  # the group table must be rebuilt (at the next step or upload_hyperparameters())

    def check_group_fully(self, group: dict, where: str) -> None:
        """Fill a group's missing keys (from the defaults; a missing schedule is
        none: a constant value), then check them all (normalising in place)."""
        for key, value in self.defaults.items():
            if key not in self.schedule_keys:
                group.setdefault(key, value)
        self._check_and_fill_schedule(group, where)
        self.check_group(group)
        _refuse_lr_scale(group, where)

    def _check_and_fill_schedule(self, group: dict, where: str) -> None:
        if group.get("schedule") is None:
            group["schedule"] = Constant()
        for key in self.schedule_keys:
            group.setdefault(key, None)
            schedule = group[key]
            if schedule is not None and not isinstance(schedule, Schedule):
                raise TypeError(f"{where}: {key} must be a fusedlr.schedules.Schedule (e.g. from_torch(...)) "
                                f"or None, got {type(schedule).__name__}")

    def check_schedules(self, param_groups: list[dict]) -> None:
        """Every schedule fits the groups it drives (number of groups, base values)."""
        for key, base_of in (("schedule", lambda group: group["lr"]), *self.spec.scheduled_bases()):
            seen = []
            for g, group in enumerate(param_groups):
                schedule = group[key]
                if schedule is None or any(s is schedule for s in seen):
                    continue
                if schedule.num_groups is None:
                    schedule.check_base_lrs([base_of(group)], [g])
                elif schedule.num_groups != len(param_groups):
                    raise ValueError(
                        f"param_groups[{g}]: its {key} is written for {schedule.num_groups} param groups "
                        f"but the optimizer has {len(param_groups)}")
                else:
                    schedule.check_base_lrs([base_of(group) for group in param_groups])
                    seen.append(schedule)

    def check_new_param(self, p: torch.Tensor, where: str) -> None:
        """Refuse a param no backend of this optimizer can update."""
        check_param(p, where)
        self._check_backend_fits(p, where)
        if self.state_dtype == block_states.INT8:
            if self.math_dtype_of(p) != torch.float32:
                raise TypeError(f"{where}: state_dtype='int8' keeps the moments of float32 params or masters; this "
                                f"param is {str(p.dtype).removeprefix('torch.')}: use master_weights=True for "
                                "float16/bfloat16 params")
            if is_distributed(p):
                raise TypeError(f"{where}: state_dtype='int8' is not supported for DTensor (FSDP2/TP) params yet: "
                                "its blocks of 256 elements would straddle shards")
        if self.master_weights == REMAINDER_MODE and p.dtype == torch.float16:
            raise TypeError(f"{where}: master_weights='remainder' keeps the low halves of bfloat16 params' fp32 "
                            "masters (a bf16 value is an fp32's high half); this param is float16: use "
                            "master_weights=True (a full fp32 master) or bfloat16 params")

    def check_state(self, param: torch.Tensor, state: dict, where: str) -> None:
        """Refuse state the kernels cannot use with ``param``: state tensors of
        another shape, dtype or device (the param changed after its state was
        made) or not contiguous, a step count that is not a count."""
        if not isinstance(state, dict):
            raise TypeError(f"{where}: its optimizer state must be a dict, got {type(state).__name__}")
        for name in self.state_keys[:-1]:
            t = state.get(name)
            if t is None:
                continue
            if not isinstance(t, torch.Tensor):
                raise TypeError(f"{where}: state[{name!r}] must be a tensor, got {type(t).__name__}")
            if name == block_states.SCALES:
                _check_scales(t, param, where)
                continue
            if t.dtype == block_states.CODE_DTYPE and state.get(block_states.SCALES) is None:
                raise RuntimeError(f"{where}: state[{name!r}] holds 8-bit codes but the state has no "
                                   f"{block_states.SCALES!r} to decode them with")
            expected = self.math_dtype_of(param) if name == MASTER else \
                torch.int16 if name == REMAINDER else self.state_dtype_of(param)
            if t.shape != param.shape or t.dtype != expected or t.device != param.device:
                kept = "" if expected == param.dtype else f" (kept in {str(expected).removeprefix('torch.')})"
                raise RuntimeError(
                    f"{where}: state[{name!r}] is {describe(t)} but the param is now {describe(param)}{kept}: the "
                    "param changed after its optimizer state was made (e.g. Module.double()/.half()/.to() or p.data "
                    "= ... after building the optimizer). Convert the model before building the optimizer, or drop "
                    "this param's state (del opt.state[param]) to start it afresh")
            if is_distributed(param) or is_distributed(t):
                check_same_sharding(param, t, f"state[{name!r}]", where)
            if not local_tensor(t).is_contiguous():
                raise RuntimeError(f"{where}: state[{name!r}] must be a contiguous tensor")
        if "schedule_step" in state:  # a checkpoint's state put in place without load_state_dict (ZeRO's load)
            checkpoint.step_count_value(state["schedule_step"], f"{where}: state['schedule_step']")
        if "schedule_plateau" in state:
            checkpoint.check_plateau(state["schedule_plateau"], len(self.param_groups),
                                     f"{where}: state['schedule_plateau']")
        step = state.get("step")
        if step is None or _is_step_tensor(step, param):
            return
        checkpoint.step_count_value(step, f"{where}: state['step']")  # a number or a tensor of another kind: read once

    def ready_state(self, param: torch.Tensor, group: dict) -> dict:
        """``param``'s state, checked by ``check_state``, made complete: created
        if it has none (torch's lazy state), tensors the group needs added, the
        step an int64 tensor on the param's device."""
        state = self.state.get(param)
        if not state:
            state = self.state[param] = self.init_state(param, group)
            return state
        self._take_up_saved_schedule_state(state)
        step = state.get("step")
        if not _is_step_tensor(step, param):
            count = 0 if step is None else checkpoint.step_count_value(step, "state['step']")
            state["step"] = torch.full((), count, dtype=torch.int64, device=param.device)
        self._complete(param, group, state)
        return state

    def _take_up_saved_schedule_state(self, state: dict) -> None:
        """A checkpoint's per-param state put in place directly (ZeRO's
        load_state_dict replaces ``opt.state[p]`` without calling this
        optimizer's) carries the schedule step and plateau buffer it was saved
        with (checked by ``check_state``): move them into the device counters."""
        if "schedule_step" not in state and "schedule_plateau" not in state:
            return
        count, plateau = state.get("schedule_step"), state.get("schedule_plateau")
        for other in self.state.values():  # once for all: a param without a grad now must not move it later
            if isinstance(other, dict):
                other.pop("schedule_step", None)
                other.pop("schedule_plateau", None)
        for ds in self._devices.values():
            if count is not None:
                ds.step.fill_(checkpoint.step_count_value(count, "state['schedule_step']"))
                ds.note_own_write()
            if plateau is not None and ds.plateau is not None and ds.plateau.numel() == plateau.numel():
                ds.plateau.copy_(plateau.reshape(ds.plateau.shape))
            ds.key = None

    def device_state(self, device: torch.device) -> DeviceState:
        """The device's counter and tables, made (with the current step count) when first seen."""
        ds = self._devices.get(device)
        if ds is None:
            counters = [d for d in self._devices.values() if d.device.type != "meta"]
            ds = self._devices[device] = DeviceState(device, counters[0].step if counters else None)
            compiled_step.register_device_state(ds)
            ds.keep_history(self._history_capacity, len(self.param_groups))
            if not self._constructing:  # its tables at once (construction writes all devices' at its end)
                ds.refresh(self.param_groups, self.spec)
        return ds

    def _check_backend_fits(self, p: torch.Tensor, where: str) -> None:
        forced = self._forced_backend
        needs = {"cpu": "cpu", "cuda": "cuda", "emulated": "cpu"}.get(forced)
        if needs is not None and p.device.type != needs:
            raise ValueError(f"{where}: backend={forced!r} cannot update a param on {p.device}; "
                             "use backend=None (automatic) or 'reference'")

    # ---- step -----------------------------------------------------------------
    @torch.no_grad()
    def step(self, closure: Callable | None = None):
        """One update of every param that has a grad, with each group's lr taken
        from its schedule at the device step counter, which then advances.
        Under GradScaler a step with inf/nan grads changes nothing."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        grad_scale = getattr(self, "grad_scale", None)
        found_inf = getattr(self, "found_inf", None)
        refuse_torch_scheduler(self.param_groups)
        self._ready_tables()
        if torch.compiler.is_compiling():
            compiled_step.traced_step(self, self._backend_of, grad_scale, found_inf, _on)
            self._step_calls += 1
            return loss
        work = self._plan.work_for(self)
        self._ready_tables()  # tables of a device a new param brought
        clips = self._clip_grads(work, grad_scale)
        for device, ds in self._devices.items():
            scale = _on(grad_scale, device)
            inf = _on(found_inf, device)
            buckets = work.get(device, [])
            backend = self._backend_of(device)
            clip_values = ds.clipping if clips else None
            if backend == "reference":
                reference_backend.run(ds, buckets, self.spec, self.param_groups, scale, inf, clip_values)
            else:
                native_backend.run(ds, buckets, self.kind, len(self.param_groups), scale, inf, backend, clip_values)
        self._step_calls += 1
        return loss

    def _clip_grads(self, work: dict, grad_scale: torch.Tensor | None) -> bool:
        """With max_grad_norm: write this step's clip coefficient and grad norm
        on every device (device ops only); the update applies them."""
        if self.max_grad_norm is None or not self._devices:
            return False
        self.max_grad_norm = clipping.check_max_grad_norm(self.max_grad_norm)  # it may have been reassigned
        self.norm_type = clipping.check_norm_type(self.norm_type)
        clipping.clip(work, self._devices, self.max_grad_norm, self.norm_type, grad_scale)
        return True

    def _backend_of(self, device: torch.device) -> str:
        return self._forced_backend or default_backend(device)

    def _capturing(self) -> bool:
        return torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()

    def _ready_tables(self) -> None:
        """Upload param_group edits and take up a counter written from the host;
        inside torch.compile or a CUDA graph capture, where the tables cannot be
        re-packed, refuse edits not uploaded before."""
        if not (torch.compiler.is_compiling() or self._capturing()):
            self._take_up_counter_writes()
            self._refresh_tables()
        elif any(ds.is_stale(self.param_groups, self.spec) for ds in self._devices.values()):
            raise RuntimeError("param_groups were edited since the device tables were written; call "
                               "opt.upload_hyperparameters() before capturing a CUDA graph or outside the "
                               "compiled function")

    def _take_up_counter_writes(self, always: bool = False) -> None:
        """After ``opt.step_count.fill_(n)`` (seen by its version counter, so no
        sync otherwise): check n once, copy it to the other devices' counters
        and recompute the next lrs. Once steps were compiled (their counter
        writes bump the version too) only when ``always``."""
        if self._compiled_steps and not always:
            return
        written = [ds for ds in self._devices.values() if always or ds.step_written_by_user()]
        if not written:
            return
        count = int(written[0].step)
        if count < 0:
            raise ValueError(f"step_count must be >= 0, got {count} (written to opt.step_count); "
                             "set it with opt.step_count.fill_(n) for some n >= 0")
        for ds in self._devices.values():
            if ds is not written[0]:
                ds.step.copy_(written[0].step)
            ds.note_own_write()
            ds.key = None

    def _refresh_tables(self) -> None:
        """Re-check and re-upload group hyperparameters edited since the last step."""
        stale = [ds for ds in self._devices.values() if ds.is_stale(self.param_groups, self.spec)]
        if not stale:
            return
        for g, group in enumerate(self.param_groups):
            self.check_group_fully(group, f"param_groups[{g}]")
        self.check_schedules(self.param_groups)
        for group in self.param_groups:  # e.g. momentum or amsgrad switched on
            for p in group["params"]:
                if self.state.get(p):
                    self._complete(p, group, self.state[p])
        # buckets (and the pointer tables a CUDA graph captured) follow the groups'
        # modes and state tensors; a changed value alone keeps them
        layout = ([self.flags(g) for g in self.param_groups], sum(len(st) for st in self.state.values()))
        if layout != self._layout:
            self._plan.invalidate()
            self._layout = layout
        for ds in stale:
            ds.refresh(self.param_groups, self.spec)

    def upload_hyperparameters(self) -> None:
        """Check param_group edits made since the last step (lr, weight_decay,
        momentum, dampening, betas, eps, a new schedule of the same shape, e.g.
        warmup_stable_decay with a new decay start) and write them into the device
        tables in place. step() does this itself; call it between CUDA graph
        replays, whose captured kernels read those tables, and after writing
        ``step_count`` when steps run in a CUDA graph or under torch.compile.

        Raises RuntimeError (after applying the edit) when it changed what a
        captured graph holds: a mode (nesterov, maximize, amsgrad), momentum
        switched on, or a schedule whose packed program has another length —
        such edits, like adding params, need the graph to be captured again."""
        addresses = self._table_addresses()
        plan = self._plan.work
        self._take_up_counter_writes(always=True)
        self._ready_tables()
        for device, ds in self._devices.items():  # the CUDA kernels' values for the next update
            native_backend.prepare(ds, plan.get(device, []), self.kind, len(self.param_groups),
                                   self._backend_of(device))
        if self._table_addresses() != addresses or self._plan.work is not plan:
            raise RuntimeError("the param_group edit changed the step's layout (a mode, new state, or a schedule "
                               "of another shape); it is applied for eager steps, but a captured CUDA graph must "
                               "be captured again")

    def _table_addresses(self) -> list:
        return [tuple(t.data_ptr() if t is not None else 0
                      for t in (ds.groups, ds.program, ds.base_lrs, ds.next_lr, ds.plateau, ds.history))
                for ds in self._devices.values()]

    # ---- reduce on plateau ----------------------------------------------------
    @torch.no_grad()
    def report(self, metric) -> None:
        """Feed a validation metric to the ``Plateau`` in the groups' schedules:
        torch ReduceLROnPlateau.step(metric) semantics, run on the device (its
        state lives there), so it never syncs and may sit inside a captured
        CUDA graph or a compiled function. ``metric``: a one-element tensor,
        ideally on the params' device (a Python number goes to the kernel as
        an argument, with no copy, and is frozen by graph capture). The reduced
        lr applies from the next step and shows in ``current_lr``."""
        self._ready_tables()
        if isinstance(metric, torch.Tensor):
            if metric.numel() != 1:
                raise ValueError(f"metric must hold one value, got a tensor of shape {tuple(metric.shape)}")
            if metric.is_complex() or metric.dtype == torch.bool:
                raise TypeError(f"metric must be a real number, got dtype {metric.dtype}")
        elif not isinstance(metric, (int, float)) or isinstance(metric, bool):
            raise TypeError(f"metric must be a tensor or a number, got {type(metric).__name__}")
        for device, ds in self._devices.items():
            if ds.plateau_schedule is None:
                raise RuntimeError("report() needs a fusedlr.schedules.Plateau in a param group's schedule "
                                   "(e.g. schedule=Plateau(...) or from_torch(ReduceLROnPlateau(...)))")
            backend = self._backend_of(device)
            number = not isinstance(metric, torch.Tensor)
            if backend == "reference" or not number or torch.compiler.is_compiling():
                value = torch.as_tensor(metric).detach().to(device=device, dtype=torch.float64).reshape(())
            if backend == "reference":
                plateau_buffer.reference_report(ds.plateau, ds.plateau_schedule, value, ds.base_lrs)
                ds.next_lr.copy_(ds.lrs_at(self.param_groups, ds.step))
            elif torch.compiler.is_compiling():
                torch.ops.fusedlr.plateau_report(ds.plateau, ds.next_lr, value, ds.groups, ds.program, ds.step,
                                                 len(self.param_groups), backend)
            else:
                compiled_step.native_report(ds.plateau, ds.next_lr, None if number else value,
                                            float(metric) if number else 0.0, ds.groups, ds.program, ds.step,
                                            len(self.param_groups), backend)
                native_backend.prepare(ds, self._plan.work.get(device, []), self.kind, len(self.param_groups),
                                       backend)

    # ---- what users read --------------------------------------------------
    def _primary(self) -> DeviceState:
        if not self._devices:
            raise RuntimeError("the optimizer has no params")
        return next(iter(self._devices.values()))

    def _up_to_date_primary(self) -> DeviceState:
        """The first device's state, with counter writes and group edits taken up (outside a capture)."""
        ds = self._primary()
        if not self._capturing():
            self._take_up_counter_writes()
            self._refresh_tables()
        return ds

    @property
    def step_count(self) -> torch.Tensor:
        """The int64 schedule step counter on the device of the first param:
        how many steps were applied (GradScaler-skipped ones are not counted).
        Writing to it (``opt.step_count.fill_(n)``) moves the schedule."""
        return self._primary().step

    @property
    def last_step_applied(self) -> torch.Tensor:
        """bool tensor on the device of the first param: False when GradScaler
        found inf/nan in the last step, which then changed nothing (params,
        state and every schedule stay where they were). Read without a sync by
        keeping it on the device (e.g. ``skipped += ~opt.last_step_applied``)."""
        return self._primary().applied

    @property
    def current_lr(self) -> torch.Tensor:
        """float64 tensor (one entry per param group), on the device of the first
        param, holding the lr the next step will use: log it without a host sync.
        Reflects param_group edits made since the last step."""
        ds = self._up_to_date_primary()
        return ds.next_lr

    @property
    def last_grad_norm(self) -> torch.Tensor:
        """With ``max_grad_norm``: the float64 0-d tensor, on the device of the
        first param, holding the global grad norm the last step measured (of the
        unscaled grads, before clipping: what ``clip_grad_norm_`` returns); NaN
        before the first step. Log it without a host sync."""
        if self.max_grad_norm is None:
            raise RuntimeError("last_grad_norm is measured only with grad clipping: build the optimizer with "
                               "max_grad_norm=... (e.g. 1.0)")
        return self._primary().clipping[_native.format_constants().CLIP_GRAD_NORM]

    def lrs_at(self, step) -> torch.Tensor:
        """float64 tensor (one entry per param group), on the device of the first
        param: the lrs the schedules give at schedule step ``step`` (an int or an
        int64 tensor), with the plateau reductions made so far; no host sync
        for a tensor ``step``."""
        ds = self._up_to_date_primary()
        step = torch.as_tensor(step, dtype=torch.int64, device=ds.device)
        return ds.lrs_at(self.param_groups, step)

    def enable_history(self, capacity: int = 1000) -> None:
        """Record the last ``capacity`` steps on the device, inside the step
        itself (no extra launch, no sync): each step's schedule step, whether
        it was applied (False: skipped by GradScaler), its grad norm (with
        ``max_grad_norm``) and every group's lr in it; ``history()`` reads
        them. 0 stops recording. Enable it before capturing a CUDA graph: a graph captured before the ring was made or
        resized keeps writing to the old one (kept alive, never freed), so
        capture it again."""
        self._history_capacity = check_integer("capacity", capacity, 0, 10_000_000)
        for ds in self._devices.values():
            ds.keep_history(self._history_capacity, len(self.param_groups))

    def history(self) -> dict:
        """The recorded steps, oldest first, read in one copy to the host:
        ``{"step": int64 (n,), "applied": bool (n,), "grad_norm": float64 (n,),
        "lr": float64 (n, groups)}`` (n: the steps taken since
        ``enable_history``, at most its capacity; grad_norm: the global norm
        clipping measured, NaN without ``max_grad_norm``)."""
        ds = self._primary()
        if ds.history is None:
            raise RuntimeError("no history is kept: call opt.enable_history(capacity) before the steps to record")
        return history.read(ds.history, ds.history_capacity)

    # ---- checkpoints --------------------------------------------------------
    def state_dict(self) -> dict:
        """torch's optimizer state_dict (``state`` and ``param_groups`` only, so
        DCP and ZeRO keep all of it), with each group's schedules stored as
        references into ``param_groups[0]["fusedlr"]["schedules"]`` (plain data,
        so it loads with ``torch.load(weights_only=True)``, beside the optimizer
        kind), and in each param's state the schedule step counter
        (``schedule_step``) and, with a Plateau, the plateau buffer
        (``schedule_plateau``: metric state and reductions)."""
        return checkpoint.export(self, super().state_dict())

    def load_state_dict(self, state_dict: dict) -> None:
        """Load a fusedlr state_dict, or a torch.optim one of the same optimizer
        (its per-param ``step`` gives the step count; a group keeps its schedule
        unless the saved group has one; with a torch scheduler attached the
        saved ``initial_lr`` becomes the base lr). Everything is checked first
        (optimizer kind, state shapes, step counts, plateau buffer, schedules):
        when it raises, nothing changed. Values are copied into the existing
        state tensors, so a captured CUDA graph stays valid."""
        checked = checkpoint.check(self, state_dict)
        previous = {p: self.state.get(p) for group in self.param_groups for p in group["params"]}
        # the saved tensors as saved: torch's load casts state to the param's dtype (fp32 masters to bf16)
        saved = checked.torch_state_dict
        saved_ids = [i for group in saved["param_groups"] for i in group["params"]]
        as_saved = {p: saved["state"].get(i, {}) for i, p in
                    zip(saved_ids, (p for group in self.param_groups for p in group["params"]))}
        super().load_state_dict(saved)
        for group in self.param_groups:
            for p in group["params"]:
                self.state[p] = self.adopt_state(p, group, as_saved[p] or self.state.get(p, {}), previous[p])
        self._plan.invalidate()
        for ds in self._devices.values():
            ds.step.fill_(checked.step_count)
            ds.note_own_write()
            if checked.plateau is not None:
                ds.plateau.copy_(checked.plateau)  # the configuration part is rewritten from the schedule at the refresh
            ds.key = None

    def adopt_state(self, param: torch.Tensor, group: dict, loaded: dict, previous: dict | None) -> dict:
        """A loaded state (fusedlr's or torch's, checked) in this optimizer's
        layout: ``previous`` (the state before the load) when it still fits the
        param, else fresh, filled with what was loaded (zeros where nothing was)."""
        state = previous if previous and self._fits(param, previous) else self.init_state(param, group)
        self._complete(param, group, state)
        # the 8-bit moments' absmax values first: a moment saved as fp32 values is encoded into them below
        for name in sorted(self.state_keys[:-1], key=lambda name: name != block_states.SCALES):
            if state.get(name) is not None:
                value = loaded.get(name)
                if block_states.load_moment(state[name], name, loaded, state.get(block_states.SCALES)):
                    continue  # saved as fp32 values and kept as 8-bit codes, or the reverse: converted
                if isinstance(value, torch.Tensor):
                    state[name].copy_(value)
                elif name in (MASTER, REMAINDER):
                    _load_other_master_form(state[name], name, loaded, param)
                else:  # not saved: zeros
                    state[name].zero_()
        for name in (MASTER, REMAINDER):  # the loaded master is the truth; the param may follow (model load)
            if state.get(name) is not None:
                note_master_in_step(local_tensor(state[name]), local_tensor(param))
        state["step"].fill_(checkpoint.step_count_value(loaded.get("step", 0), "state['step']"))
        return state

    def _fits(self, param: torch.Tensor, state: dict) -> bool:
        try:
            self.check_state(param, state, "")
        except (TypeError, ValueError, RuntimeError):
            return False
        return _is_step_tensor(state.get("step"), param)


def _load_other_master_form(target: torch.Tensor, name: str, loaded: dict, param: torch.Tensor) -> None:
    """The master (``name`` MASTER) or its low halves (REMAINDER) from a
    checkpoint that saved the other form (master_weights changed between
    runs) — the full master split into the param and its low halves, or low
    halves joined with the param into a full master — else from the param."""
    local = local_tensor(target)
    param = local_tensor(param.detach())
    other = loaded.get(REMAINDER if name == MASTER else MASTER)
    if not isinstance(other, torch.Tensor) or param.dtype != torch.bfloat16:  # nothing to take: the param
        local.copy_(param) if name == MASTER else local.zero_()
    elif name == MASTER:
        local.copy_(split_master.join(param, local_tensor(other).to(param.device)))
    else:  # the saved master is the truth: the param becomes its high halves, as a master's rounding would
        split_master.split(local_tensor(other).to(param.device, torch.float32), param, local)


def _check_int8_states(spec: OptimizerSpec, master_weights) -> None:
    """state_dtype="int8" (block_states.py): Adam(W)'s moments, fp32 maths."""
    if spec.name not in ("adam", "adamw"):
        raise ValueError(f"state_dtype='int8' keeps Adam(W)'s moments in 8 bits; fusedlr.{spec.class_name}: use None "
                         "or torch.bfloat16")
    if master_weights == REMAINDER_MODE:
        raise ValueError("state_dtype='int8' needs float32 params or master_weights=True, not master_weights="
                         "'remainder'")


def _check_scales(t, param: torch.Tensor, where: str) -> None:
    """state["state_scales"]: the moments' absmax per block of ``param``."""
    expected = (len(block_states.MOMENTS), block_states.num_blocks(param.numel()))
    if not isinstance(t, torch.Tensor) or t.dtype != torch.float32 or tuple(t.shape) != expected \
            or t.device != param.device or not t.is_contiguous():
        got = describe(t) if isinstance(t, torch.Tensor) else type(t).__name__
        raise RuntimeError(f"{where}: state[{block_states.SCALES!r}] (the 8-bit moments' absmax per block of "
                           f"{block_states.BLOCK}) must be a contiguous float32 {expected} tensor on {param.device}, "
                           f"got {got}: the param changed after its optimizer state was made")


def _refuse_lr_scale(group: dict, where: str) -> None:
    """timm's layer-decay groups carry ``lr_scale``, which timm's own schedulers
    multiply into the lr they write; fusedlr's schedules would silently ignore it."""
    scale = group.get("lr_scale")
    if scale is not None and scale != 1.0:
        raise ValueError(
            f"{where}: lr_scale={scale!r} (timm's layer-decay convention, applied by timm's schedulers) is not applied "
            "by fusedlr; fold it into the group's lr with fusedlr.fold_lr_scale(groups, lr) (lr * lr_scale, which "
            "every fusedlr schedule then scales), or build the groups with fusedlr.layer_decay_param_groups")


def _is_step_tensor(step, param: torch.Tensor) -> bool:
    """An int64 one-element tensor on the param's device: what the kernels read."""
    return (isinstance(step, torch.Tensor) and step.dtype == torch.int64 and step.numel() == 1
            and step.device == param.device)


def _on(t: torch.Tensor | None, device: torch.device) -> torch.Tensor | None:
    """GradScaler's scale/found_inf on the bucket's device as float32."""
    if t is None:
        return None
    if t.device != device or t.dtype != torch.float32:
        t = t.to(device=device, dtype=torch.float32, non_blocking=True)
    return t.reshape(1)
