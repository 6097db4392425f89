"""FusedOptimizer: the torch.optim.Optimizer subclass behind fusedlr.SGD and
fusedlr.AdamW. It owns the per-device schedule step counters, allocates all
state at construction, groups each step's work into (device, dtype, mode)
buckets and hands them to a backend: the native CPU or CUDA kernels, or the
pure-PyTorch reference."""
from __future__ import annotations

from typing import Callable

import torch

from .. import _native
from ..schedules import Constant, Schedule
from . import compiled_step, native_backend, plateau_buffer, reference_backend
from .buckets import check_param
from .device_state import DeviceState
from .group_tables import HYPER_SCHEDULES
from .step_plan import StepPlan


def default_backend(device: torch.device) -> str:
    """The native kernel for the device when one can run, else the reference."""
    usable = _native.available_backends()
    if device.type in ("cpu", "cuda") and device.type in usable:
        return device.type
    return "reference"


class FusedOptimizer(torch.optim.Optimizer):
    """Base class; subclasses set ``kind``, ``state_names`` and the group checks."""

    kind = ""
    #: state keys of the kernel's state0..state2 slots ("" for unused)
    state_names: tuple = ("", "", "")
    #: tells torch.amp.GradScaler to hand over grad_scale/found_inf instead of unscaling
    _step_supports_amp_scaling = True

    def __init__(self, params, defaults: dict, backend: str | None):
        if backend is not None and backend not in _native.BACKENDS:
            raise ValueError(f"backend must be None (automatic) or one of {_native.BACKENDS}, got {backend!r}")
        if backend is not None:
            _native.check_backend(backend)
        self._forced_backend = backend
        self._devices: dict[torch.device, DeviceState] = {}
        self._plan = StepPlan()
        self._layout = None
        super().__init__(params, defaults)
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
        self.complete_state(param, group, state)
        return state

    def flags(self, group: dict) -> tuple:
        """(maximize, nesterov, amsgrad): the modes compiled into the kernel."""
        raise NotImplementedError

    def add_param_group(self, param_group: dict) -> None:
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        where = f"param_groups[{len(self.param_groups) - 1}]"
        try:
            self._check_and_fill_schedule(group, where)
            self.check_group(group)
            for i, p in enumerate(group["params"]):
                check_param(p, f"{where}['params'][{i}]")
                self._check_backend_fits(p, where)
        except Exception:
            self.param_groups.pop()
            raise
        for p in group["params"]:
            if p not in self.state or not self.state[p]:
                self.state[p] = self.init_state(p, group)
            if p.device not in self._devices:
                self._devices[p.device] = DeviceState(p.device, self._step_count_value())
        for ds in self._devices.values():
            ds.key = None  # the group table must be rebuilt (at the next step or upload_hyperparameters())

    def _check_and_fill_schedule(self, group: dict, where: str) -> None:
        if group.get("schedule") is None:
            group["schedule"] = Constant()
        for key in ("schedule", *HYPER_SCHEDULES[self.kind].values()):
            group.setdefault(key, None)
            schedule = group[key]
            if schedule is not None and not isinstance(schedule, Schedule):
                raise TypeError(f"{where}: {key} must be a fusedlr.schedules.Schedule (e.g. from_torch(...)) "
                                f"or None, got {type(schedule).__name__}")

    def _check_schedules(self) -> None:
        """Every schedule fits the groups it drives (number of groups, base values)."""
        for key, base_of in (("schedule", lambda group: group["lr"]), *self._hyper_bases()):
            seen = []
            for g, group in enumerate(self.param_groups):
                schedule = group[key]
                if schedule is None or any(s is schedule for s in seen):
                    continue
                if schedule.num_groups is None:
                    schedule.check_base_lrs([base_of(group)])
                elif schedule.num_groups != len(self.param_groups):
                    raise ValueError(
                        f"param_groups[{g}]: its {key} is written for {schedule.num_groups} param groups "
                        f"but the optimizer has {len(self.param_groups)}")
                else:
                    schedule.check_base_lrs([base_of(group) for group in self.param_groups])
                    seen.append(schedule)

    def _hyper_bases(self) -> list:
        """(group key of a hyperparameter schedule, the base value it scales)."""
        raise NotImplementedError

    def _check_backend_fits(self, p: torch.Tensor, where: str) -> None:
        forced = self._forced_backend
        if forced in ("cpu", "cuda") and p.device.type != forced:
            raise ValueError(f"{where}: backend={forced!r} cannot update a param on {p.device}; "
                             "use backend=None (automatic) or 'reference'")

    def _step_count_value(self) -> int:
        """Step count for a device seen for the first time (0, or the current count)."""
        return 0 if not self._devices else int(next(iter(self._devices.values())).step)

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
        self._ready_tables()
        if torch.compiler.is_compiling():
            compiled_step.traced_step(self, self._backend_of, grad_scale, found_inf, _on)
            return loss
        work = self._plan.work_for(self.param_groups, self.state, self.state_names, self.flags)
        for device, ds in self._devices.items():
            scale = _on(grad_scale, device)
            inf = _on(found_inf, device)
            buckets = work.get(device, [])
            if self._backend_of(device) == "reference":
                reference_backend.run(ds, buckets, self.kind, self.param_groups, scale, inf)
            else:
                native_backend.run(ds, buckets, self.kind, len(self.param_groups), scale, inf)
        return loss

    def _backend_of(self, device: torch.device) -> str:
        return self._forced_backend or default_backend(device)

    def _capturing(self) -> bool:
        return torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()

    def _ready_tables(self) -> None:
        """Upload param_group edits; inside torch.compile or a CUDA graph capture,
        where the tables cannot be re-packed, refuse edits not uploaded before."""
        if not (torch.compiler.is_compiling() or self._capturing()):
            self._refresh_tables()
        elif any(ds.is_stale(self.param_groups, self.kind) for ds in self._devices.values()):
            raise RuntimeError("param_groups were edited since the device tables were written; call "
                               "opt.upload_hyperparameters() before capturing a CUDA graph or outside the "
                               "compiled function")

    def _refresh_tables(self) -> None:
        """Re-check and re-upload group hyperparameters edited since the last step."""
        stale = [ds for ds in self._devices.values() if ds.is_stale(self.param_groups, self.kind)]
        if not stale:
            return
        for g, group in enumerate(self.param_groups):
            self._check_and_fill_schedule(group, f"param_groups[{g}]")
            self.check_group(group)
        self._check_schedules()
        for group in self.param_groups:  # e.g. momentum or amsgrad switched on
            for p in group["params"]:
                self.complete_state(p, group, self.state[p])
        # buckets (and the pointer tables a CUDA graph captured) follow the groups'
        # modes and state tensors; a changed value alone keeps them
        layout = ([self.flags(g) for g in self.param_groups], sum(len(st) for st in self.state.values()))
        if layout != self._layout:
            self._plan.invalidate()
            self._layout = layout
        for ds in stale:
            ds.refresh(self.param_groups, self.kind)

    def upload_hyperparameters(self) -> None:
        """Check param_group edits made since the last step (lr, weight_decay,
        momentum, dampening, betas, eps, a new schedule of the same shape, e.g.
        warmup_stable_decay with a new decay start) and write them into the device
        tables in place. step() does this itself; call it between CUDA graph
        replays, whose captured kernels read those tables.

        Raises RuntimeError (after applying the edit) when it changed what a
        captured graph holds: a mode (nesterov, maximize, amsgrad), momentum
        switched on, or a schedule whose packed program has another length —
        such edits, like adding params, need the graph to be captured again."""
        addresses = self._table_addresses()
        plan = self._plan.work
        self._refresh_tables()
        if self._table_addresses() != addresses or self._plan.work is not plan:
            raise RuntimeError("the param_group edit changed the step's layout (a mode, new state, or a schedule "
                               "of another shape); it is applied for eager steps, but a captured CUDA graph must "
                               "be captured again")

    def _table_addresses(self) -> list:
        return [tuple(t.data_ptr() if t is not None else 0
                      for t in (ds.groups, ds.program, ds.base_lrs, ds.next_lr, ds.plateau))
                for ds in self._devices.values()]

    # ---- reduce on plateau ----------------------------------------------------
    @torch.no_grad()
    def report(self, metric) -> None:
        """Feed a validation metric to the ``Plateau`` in the groups' schedules:
        torch ReduceLROnPlateau.step(metric) semantics, run on the device (its
        state lives there), so it never syncs and may sit inside a captured
        CUDA graph or a compiled function. ``metric``: a one-element tensor
        (ideally on the params' device; a Python number costs a host-to-device
        copy and is frozen by graph capture). The reduced lr applies from the
        next step and shows in ``current_lr``."""
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
            value = torch.as_tensor(metric).detach().to(device=device, dtype=torch.float64).reshape(())
            if self._backend_of(device) == "reference":
                plateau_buffer.reference_report(ds.plateau, ds.plateau_schedule, value, ds.base_lrs)
                ds.next_lr.copy_(ds.lrs_at(self.param_groups, ds.step))
            else:
                torch.ops.fusedlr.plateau_report(ds.plateau, ds.next_lr, value, ds.groups, ds.program, ds.step,
                                                 len(self.param_groups))

    # ---- what users read --------------------------------------------------
    def _primary(self) -> DeviceState:
        if not self._devices:
            raise RuntimeError("the optimizer has no params")
        return next(iter(self._devices.values()))

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
        ds = self._primary()
        self._refresh_tables()
        return ds.next_lr

    # ---- checkpoints --------------------------------------------------------
    def state_dict(self) -> dict:
        """torch's optimizer state_dict plus ``"fusedlr": {"step_count": tensor,
        "plateau": tensor}`` (the plateau buffer: metric state and reductions)."""
        sd = super().state_dict()
        ds = self._primary()
        sd["fusedlr"] = {"step_count": ds.step.clone(), "plateau": ds.plateau.clone()}
        return sd

    def load_state_dict(self, state_dict: dict) -> None:
        """Load a fusedlr state_dict, or a torch.optim one of the same optimizer
        (its per-param ``step`` gives the step count; a group keeps its schedule
        unless the saved group has one; with a torch scheduler attached the
        saved ``initial_lr`` becomes the base lr)."""
        extra = state_dict.get("fusedlr", {})
        kept = [{k: v for k, v in g.items() if k != "params"} for g in self.param_groups]
        super().load_state_dict(state_dict)
        for group, old in zip(self.param_groups, kept):
            from_torch = "schedule" not in group
            for key, value in old.items():
                group.setdefault(key, value)
            if from_torch and "initial_lr" in group:
                group["lr"] = group["initial_lr"]
        for group in self.param_groups:
            for p in group["params"]:
                self.state[p] = self.adopt_state(p, group, self.state.get(p, {}))
        if "step_count" in extra:
            count = int(extra["step_count"])
        else:
            count = max((int(st["step"]) for st in self.state.values() if "step" in st), default=0)
        self._plan.invalidate()  # the state tensors were replaced
        for ds in self._devices.values():
            ds.step.fill_(count)
            saved = extra.get("plateau")
            if saved is not None and saved.shape == ds.plateau.shape:
                ds.plateau.copy_(saved)  # the configuration part is rewritten from the schedule at the refresh
            ds.key = None

    def adopt_state(self, param: torch.Tensor, group: dict, loaded: dict) -> dict:
        """A loaded state (fusedlr's or torch's) in this optimizer's layout:
        fresh state filled with what was loaded, step as int64 on the param's device."""
        state = self.init_state(param, group)
        for key, value in loaded.items():
            if key == "step":
                state["step"].fill_(int(value))
            elif isinstance(value, torch.Tensor) and key in state:
                state[key].copy_(value)
        return state


def _on(t: torch.Tensor | None, device: torch.device) -> torch.Tensor | None:
    """GradScaler's scale/found_inf on the bucket's device as float32."""
    if t is None:
        return None
    if t.device != device or t.dtype != torch.float32:
        t = t.to(device=device, dtype=torch.float32, non_blocking=True)
    return t.reshape(1)
