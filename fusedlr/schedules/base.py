"""The Schedule base class (packing to the native format, evaluation) and the
composite nodes the composition operators build (Sequential, Chain, PerGroup).

A schedule is data. Leaves hold a family's parameters; composites hold
children. ``pack()`` flattens the tree to the float64 program described in
``csrc/fusedlr/schedule_format.h``; the native backends evaluate that program,
the reference backend evaluates the Python tree with torch ops (each node's
``evaluate``), independently of the C++.
"""
from __future__ import annotations

import copy
import numbers
from typing import Iterator, Sequence

import torch

from .. import _native
from . import _checks as check
from .plot import plot_schedules

#: deepest nesting of composite schedules (Sequential, Chain, PerGroup) accepted
MAX_TREE_DEPTH = 64


class _FrozenAfterInit(type):
    """Freezes a schedule once its outermost constructor has returned."""

    def __call__(cls, *args, **kwargs):
        schedule = super().__call__(*args, **kwargs)
        object.__setattr__(schedule, "_frozen", True)
        return schedule


class Schedule(metaclass=_FrozenAfterInit):
    """Base class of every schedule.

    ``lr(step) = schedule(step, base_lr)``: steps count optimizer updates from 0,
    so the value at step ``t`` is what a torch scheduler gives after ``t`` calls
    of ``scheduler.step()``.

    Schedules are immutable once built (optimizers keep their packed programs,
    so an edited field would silently not apply): build a new one instead.
    """

    _frozen = False

    def __setattr__(self, name: str, value) -> None:
        if self._frozen and not name.startswith("_"):
            raise AttributeError(f"{type(self).__name__} schedules are immutable: build a new one instead of "
                                 f"setting {name!r}")
        object.__setattr__(self, name, value)

    def __delattr__(self, name: str) -> None:
        if self._frozen and not name.startswith("_"):
            raise AttributeError(f"{type(self).__name__} schedules are immutable: cannot delete {name!r}")
        object.__delattr__(self, name)

    def _evolve(self, **fields) -> "Schedule":
        """A copy with ``fields`` replaced (no validation: for converters that
        set torch's own stored values)."""
        clone = copy.copy(self)
        object.__setattr__(clone, "_packed", None)
        for name, value in fields.items():
            if not hasattr(self, name):
                raise AttributeError(f"{type(self).__name__} has no field {name!r}")
            object.__setattr__(clone, name, value)
        return clone

    #: name of the node kind in the native format (leaves and composites alike)
    kind: str = ""

    # ---- structure ---------------------------------------------------------
    def children(self) -> tuple["Schedule", ...]:
        return ()

    def fields(self) -> list[float]:
        """Node fields after the kind, in the order schedule_format.h lists them."""
        raise NotImplementedError

    @property
    def num_groups(self) -> int | None:
        """Number of param groups this schedule is written for (None: any)."""
        counts = {c.num_groups for c in self.children()} - {None}
        if len(counts) > 1:
            raise ValueError(f"children of {type(self).__name__} disagree on the number of param groups: {sorted(counts)}")
        return counts.pop() if counts else None

    def check_base_lrs(self, base_lrs: Sequence[float], groups: Sequence[int] | None = None) -> None:
        """Raise ValueError if the schedule makes no sense for these base LRs
        (``groups``: the param group index of each, for the message)."""
        for child in self.children():
            child.check_base_lrs(base_lrs, groups)

    def check_stored_fields(self) -> None:
        """Raise ValueError if fields set after construction (derived values a
        checkpoint restores, see serialize.py) are inconsistent."""

    def tree_depth(self) -> int:
        """1 for a leaf, 1 + the deepest child for a composite."""
        return 1 + max((c.tree_depth() for c in self.children()), default=0)

    # ---- evaluation on tensors ----------------------------------------------
    def evaluate(self, t: torch.Tensor, b: torch.Tensor, plateau=None) -> torch.Tensor:
        """lr for every step in ``t`` (float64, shape (S, 1)) and base lr in ``b``
        ((1, G) or (S, G)), broadcast to (S, G), with tensor ops only (no host
        read, any device). ``plateau``: the optimizer's plateau reductions as a
        ``plateau.PlateauView`` (None: none yet)."""
        raise NotImplementedError

    # ---- packing -------------------------------------------------------------
    def _emit(self, program: list[float], kinds: dict, parent: int = -1, index: int = 0) -> int:
        """Append this node (header: kind, parent offset, index among the
        parent's children; then its fields) and return its offset."""
        offset = len(program)
        program.extend([float(kinds[self.kind]), float(parent), float(index)])
        program.extend(float(v) for v in self.fields())
        return offset

    def pack(self) -> torch.Tensor:
        """The packed float64 program (CPU tensor) the native evaluators read."""
        cached = getattr(self, "_packed", None)
        if cached is not None:
            return cached
        native = _native.format_constants()
        program: list[float] = []
        self._emit(program, native.NODE_KINDS)
        self._packed = torch.tensor(program, dtype=torch.float64)
        return self._packed

    # ---- evaluation --------------------------------------------------------
    def values(self, steps, base_lrs: Sequence[float] = (1.0,), backend: str = "reference") -> torch.Tensor:
        """LRs at ``steps`` (ints >= 0) for param groups with ``base_lrs``.

        Returns a float64 tensor of shape ``(len(steps), len(base_lrs))`` on the
        backend's device: ``"reference"`` (pure torch, on the device of a
        ``steps`` tensor), ``"cpu"`` (the native evaluator; also for
        ``"emulated"``) or ``"cuda"`` (the same evaluator in a CUDA kernel).
        """
        _native.check_backend(backend)
        steps = _as_steps(steps)
        base = _as_base_lrs(base_lrs, self)
        if backend == "reference":
            t = steps.to(torch.float64).reshape(-1, 1)
            return self.evaluate(t, base.to(steps.device).reshape(1, -1)).expand(len(steps), len(base)).contiguous()
        if backend in ("cpu", "emulated"):  # the emulated CUDA kernels evaluate with the CPU build of the evaluator
            return _run_cpu(self.pack(), steps.cpu(), base)
        return _run_cuda(self.pack(), steps, base)

    def __call__(self, step: int, base_lr: float = 1.0) -> float:
        """LR at one step for one group (native CPU evaluator; for inspection)."""
        return float(self.values([step], [base_lr], backend="cpu")[0, 0])

    # ---- composition -------------------------------------------------------
    def __mul__(self, other: "Schedule") -> "Schedule":
        """``a * b``: ChainedScheduler semantics (b rescales a's output)."""
        if not isinstance(other, Schedule):
            return NotImplemented
        return Chain([self, other])

    def then(self, other: "Schedule", at: int) -> "Schedule":
        """Run ``self`` for ``at`` steps, then ``other`` from its own step 0."""
        return Sequential([self, other], [at])

    def plot(self, path, num_steps: int = 1000, base_lrs: Sequence[float] = (1.0,), backend: str = "cpu"):
        """Write a PNG of the schedule (needs matplotlib: ``pip install fusedlr[plot]``)."""
        return plot_schedules({type(self).__name__: self}, path, num_steps, base_lrs, backend)

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({params})"


def labelled(base_lrs: Sequence[float], groups: Sequence[int] | None) -> Iterator[tuple[int, float]]:
    """(param group index, base lr) pairs for check_base_lrs messages."""
    return zip(range(len(base_lrs)) if groups is None else groups, base_lrs)


def _as_steps(steps) -> torch.Tensor:
    if isinstance(steps, torch.Tensor):
        if steps.dtype.is_floating_point or steps.dtype.is_complex or steps.dtype == torch.bool:
            raise TypeError(f"steps must hold integers, got dtype {steps.dtype}")
        steps = steps.reshape(-1).to(torch.int64)
    elif isinstance(steps, range):
        steps = torch.arange(steps.start, steps.stop, steps.step, dtype=torch.int64)
    else:
        steps = list(steps)
        for i, step in enumerate(steps):  # refuse 1.5 (an int64 tensor would truncate it)
            if isinstance(step, bool) or not isinstance(step, numbers.Integral):
                raise TypeError(f"steps[{i}] must be an int, got {step!r}")
            if not 0 <= step < 2 ** 63:
                raise ValueError(f"steps must be >= 0 and < 2**63, got steps[{i}] = {step}")
        steps = torch.tensor(steps, dtype=torch.int64).reshape(-1)
    if steps.numel() and bool((steps < 0).any()):
        raise ValueError("steps must be >= 0")
    return steps.contiguous()


def _as_base_lrs(base_lrs, schedule: Schedule) -> torch.Tensor:
    if isinstance(base_lrs, (int, float)):
        base_lrs = [base_lrs]
    base = [float(b) for b in base_lrs]
    if not base:
        raise ValueError("base_lrs must hold at least one learning rate")
    for i, b in enumerate(base):
        if not (b >= 0 and b != float("inf")):
            raise ValueError(f"base_lrs[{i}] must be a finite lr >= 0, got {b}")
    groups = schedule.num_groups
    if groups is not None and groups != len(base):
        raise ValueError(
            f"this schedule is written for {groups} param groups but got {len(base)} base_lrs"
        )
    schedule.check_base_lrs(base)
    return torch.tensor(base, dtype=torch.float64)


def _run_cpu(program: torch.Tensor, steps: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
    out = torch.empty(len(steps), len(base), dtype=torch.float64)
    _native.cpu_module.schedule_values(
        program.data_ptr(), steps.data_ptr(), len(steps), base.data_ptr(), len(base), out.data_ptr()
    )
    return out


def _run_cuda(program: torch.Tensor, steps: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
    device = steps.device if steps.device.type == "cuda" else torch.device("cuda", torch.cuda.current_device())
    program = program.to(device)
    steps = steps.to(device)
    base = base.to(device)
    out = torch.empty(len(steps), len(base), dtype=torch.float64, device=device)
    stream = torch.cuda.current_stream(device)
    _native.cuda_module.schedule_values(
        device.index, stream.cuda_stream, program.data_ptr(), steps.data_ptr(), len(steps),
        base.data_ptr(), len(base), out.data_ptr(),
    )
    return out


def floor_div(t: torch.Tensor, d) -> torch.Tensor:
    """floor(t / d), exact at huge t (fmod is exact; t / d may round up)."""
    return torch.round((t - torch.fmod(t, d)) / d)


# ---- composite nodes ---------------------------------------------------------
def _schedules(name: str, schedules) -> tuple[Schedule, ...]:
    schedules = tuple(schedules)
    if not schedules:
        raise ValueError(f"{name} must hold at least one schedule")
    for i, s in enumerate(schedules):
        if not isinstance(s, Schedule):
            raise TypeError(f"{name}[{i}] must be a fusedlr schedule, got {type(s).__name__}")
    depth = 1 + max(s.tree_depth() for s in schedules)
    if depth > MAX_TREE_DEPTH:
        raise ValueError(f"schedules nest {depth} composites deep; at most {MAX_TREE_DEPTH} are supported "
                         "(join the phases in one Sequential instead of nesting them)")
    return schedules


class _Composite(Schedule):
    schedules: tuple[Schedule, ...]

    def children(self):
        return tuple(self.schedules)

    def _extra_fields(self) -> list[float]:
        return []

    def _emit(self, program, kinds, parent=-1, index=0):
        offset = len(program)
        n = len(self.schedules)
        program.extend([float(kinds[self.kind]), float(parent), float(index), float(n)] + [0.0] * n
                       + self._extra_fields())
        for i, child in enumerate(self.schedules):
            program[offset + 4 + i] = float(child._emit(program, kinds, offset, i))
        return offset


class Sequential(_Composite):
    """torch SequentialLR: ``schedules[k]`` runs from ``milestones[k-1]`` with
    its own step counted from 0 there, for ``k = #{milestones <= t}``."""

    kind = "SEQUENTIAL"

    def __init__(self, schedules: Sequence[Schedule], milestones: Sequence[int]):
        self.schedules = _schedules("schedules", schedules)
        milestones = list(milestones)
        if len(milestones) != len(self.schedules) - 1:
            raise ValueError(
                f"milestones must have len(schedules) - 1 = {len(self.schedules) - 1} entries, got {len(milestones)}"
            )
        for i, m in enumerate(milestones):
            check.integer(f"milestones[{i}]", m, 0)
        self.milestones = tuple(int(m) for m in check.increasing("milestones", milestones)) if milestones else ()

    def _extra_fields(self):
        return [float(m) for m in self.milestones]

    def evaluate(self, t, b, plateau=None):
        value = self.schedules[0].evaluate(t, b, plateau)
        for milestone, child in zip(self.milestones, self.schedules[1:]):
            local = torch.clamp(t - milestone, min=0.0)
            value = torch.where(t >= milestone, child.evaluate(local, b, plateau), value)
        return value


class Chain(_Composite):
    """torch ChainedScheduler: each schedule takes the previous one's lr as its
    base lr. For multiplicative schedules this is the product of their factors."""

    kind = "CHAIN"

    def __init__(self, schedules: Sequence[Schedule]):
        self.schedules = _schedules("schedules", schedules)

    def evaluate(self, t, b, plateau=None):
        for child in self.schedules:
            b = child.evaluate(t, b, plateau)
        return b


class PerGroup(_Composite):
    """One schedule per param group: ``schedules[g]`` drives group ``g``."""

    kind = "PER_GROUP"

    def __init__(self, schedules: Sequence[Schedule]):
        self.schedules = _schedules("schedules", schedules)
        for i, s in enumerate(self.schedules):
            if s.num_groups is not None:
                raise ValueError(f"schedules[{i}] is itself per-group; PerGroup entries must apply to one group")

    @property
    def num_groups(self):
        return len(self.schedules)

    def check_base_lrs(self, base_lrs, groups=None):
        for (g, b), s in zip(labelled(base_lrs, groups), self.schedules):
            s.check_base_lrs([b], [g])

    def evaluate(self, t, b, plateau=None):
        b = b.expand(t.shape[0], len(self.schedules))
        columns = [child.evaluate(t, b[:, g:g + 1], plateau.column(g) if plateau else None)
                   for g, child in enumerate(self.schedules)]
        return torch.cat([c.expand(t.shape[0], 1) for c in columns], dim=1)
