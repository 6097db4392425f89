"""Gathering one step's work: the params that have grads, checked, grouped
into (device, dtype, mode flags) buckets, each entry with its state tensors."""
from __future__ import annotations

from dataclasses import dataclass, field
from itertools import repeat
from operator import eq, is_

import torch

from .. import _native
from .distributed import check_same_sharding, is_distributed, local_tensor, sharding
from .block_states import CODE_DTYPE, SCALES
from .split_master import REMAINDER

SUPPORTED_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


# unbound accessors: a few hundred ns less per tensor than attribute lookups on a Parameter
_data_ptr = torch.Tensor.data_ptr
_grad_of = torch._C.TensorBase.grad.__get__
_shape_of = torch._C.TensorBase.shape.__get__
_dtype_of = torch._C.TensorBase.dtype.__get__
_layout_of = torch._C.TensorBase.layout.__get__
_version_of = torch._C.TensorBase._version.__get__
_get_device = torch.Tensor.get_device
_is_contiguous = torch.Tensor.is_contiguous
_strided = torch.strided


@dataclass
class Entry:
    """One parameter's tensors for this step, as the kernels see them: plain
    tensors (a DTensor param's local shard, grad and state; see distributed.py).
    ``target`` holds the param's values (the param, or its local shard);
    ``work`` is ``target``, or a contiguous copy written back after the update
    when it is not contiguous.
    It also remembers what the kernel tables were built from (the param's
    storage, shape and layout, its state dict, state tensors and their
    storage, the version of its step count), so a kept entry can tell when it
    no longer describes the param."""
    param: torch.Tensor
    work: torch.Tensor
    grad: torch.Tensor
    states: tuple  # (state0, state1, state2): tensors or None, per optimizer (see step_layout.h)
    step: torch.Tensor
    group: int
    where: str  # "param_groups[g]['params'][i]", for errors
    state: dict = None  # the param's state dict
    watched: tuple = ()  # (key, tensor, data_ptr() of its local values) of each state tensor the kernels read
    target: torch.Tensor = None  # the param's values: the param itself unless it is a DTensor
    #: with master weights: where the kernels write the rounding of ``work`` (the fp32 master), or with
    #: master_weights="remainder" the param holding the high halves of the masters ``work`` holds the low
    #: halves of: ``target``, or a contiguous stand-in written back after the update; else None
    copy_out: torch.Tensor = None
    #: with state_dtype="int8": the (2, blocks) absmax values of its 8-bit moments (block_states.py); else None
    scales: torch.Tensor = None

    def __post_init__(self):
        if self.target is None:
            self.target = self.param
        t = self.target
        self.shape, self.dtype, self.device_index, self.ptr = t.shape, t.dtype, t.get_device(), _data_ptr(t)
        self.sharding = sharding(self.param)  # None unless a DTensor
        self.grad_type = type(_grad_of(self.param))  # a DTensor grad appearing on a plain param has no data_ptr
        self.grad_ptr = _data_ptr(self.grad)
        self.note_step_written()

    def note_step_written(self) -> None:
        """Remember the step count's version after fusedlr wrote it with a torch
        op (the native kernels write it without bumping the version)."""
        self.step_version = tensor_version(self.step)

    def reuse(self, state: dict) -> bool:
        """Ready a kept entry for a new step, if it still describes the param:
        same storage, dtype, shape and layout, the same state dict holding the same
        state tensors on the same storage, a step count not written from the
        host (whose new value the CUDA kernels' precomputed values would miss),
        and a grad of the shape, dtype and device it was built for (a param
        converted or resized also gets such a grad from backward). Then re-read
        the grad (contiguous, as the kernels need) and, for a non-contiguous
        param, copy its values into the contiguous stand-in. False: rebuild
        (which checks everything and raises the clear error when something
        does not fit)."""
        p = self.param
        grad = _grad_of(p)
        if grad is None or type(grad) is not self.grad_type:
            return False
        t = p
        if self.sharding is not None:
            if sharding(p) != self.sharding or sharding(grad) != self.sharding:
                return False
            t, grad = p._local_tensor, grad._local_tensor
            self.target = t  # the same storage (checked below), maybe another tensor object
        written = self.work if self.copy_out is None else self.copy_out  # what the kernels write the values to
        if self.copy_out is not None and not master_in_step(self.work, t):
            return False
        if (_data_ptr(t) != self.ptr or t.dtype is not self.dtype or t.shape != self.shape
                or state.get(p) is not self.state
                or t.is_contiguous() != (written is t) or grad.dtype is not self.dtype
                or grad.shape != self.shape or grad.layout is not _strided or grad.get_device() != self.device_index
                or tensor_version(self.step) != self.step_version):
            return False
        st, distributed = self.state, self.sharding is not None
        for key, tensor, ptr in self.watched:
            if st.get(key) is not tensor or _data_ptr(local_tensor(tensor) if distributed else tensor) != ptr:
                return False
        if not grad.is_contiguous():
            grad = grad.contiguous()
        self.grad, self.grad_ptr = grad, _data_ptr(grad)
        if self.work is not t and self.copy_out is None:
            self.work.copy_(t)
        return True


@dataclass
class Bucket:
    device: torch.device
    dtype: torch.dtype  # of the params the kernels update (or of their fp32 masters)
    maximize: bool
    nesterov: bool
    amsgrad: bool
    entries: list = field(default_factory=list)
    #: of the grads (and of the params written from masters); None: ``dtype``
    grad_dtype: torch.dtype = None
    #: of the states; None: ``dtype``
    state_dtype: torch.dtype = None
    #: bf16 states beside fp32 params rounded stochastically
    stochastic_rounding: bool = False
    #: the native backend's device pointer tables, kept with the bucket (see native_backend)
    native: object = None

    def __post_init__(self):
        if self.grad_dtype is None:
            self.grad_dtype = self.dtype
        if self.state_dtype is None:
            self.state_dtype = self.dtype
        self._kept = None

    def reuse(self, state: dict) -> bool:
        """``Entry.reuse`` of every entry, the plain ones (a contiguous plain
        tensor param updated in place) checked together, each check one pass
        of builtins over all of them, the others one by one. The caller has
        checked that ``state`` holds the same state dicts under the same
        params as when the bucket was built. Any mismatch or unusual grad (not
        contiguous, an inference-mode step count) sends the plain ones through
        Entry.reuse as well, which decides."""
        if self._kept is None:
            self._kept = _PlainEntries(self.entries)
        kept = self._kept
        if not (kept.still_describe() or all(e.reuse(state) for e in kept.entries)):
            return False
        return all(e.reuse(state) for e in kept.others)

    def write_back(self) -> None:
        """Copy updated contiguous stand-ins back into non-contiguous params
        (plain entries have none: only the others are visited once known)."""
        for e in self.entries if self._kept is None else self._kept.others:
            written = e.work if e.copy_out is None else e.copy_out
            if written is not e.target:
                e.target.copy_(written)
            if e.copy_out is not None:
                note_master_in_step(e.work, e.target)


class _PlainEntries:
    """A bucket's plain entries and what Entry.reuse compares them against:
    read by the host module (C++ against libtorch) when it is loaded, else
    kept as parallel lists for checks in bulk in Python."""

    def __init__(self, entries: list):
        plain = [e for e in entries
                 if e.sharding is None and e.copy_out is None and e.work is e.param]
        ids = {id(e) for e in plain}
        self.entries, self.others = plain, [e for e in entries if id(e) not in ids]
        self._host_checks, self._held = None, []  # (the objects the host module's checks read)
        if _native.host_module is not None:
            try:
                self._host_checks = _native.host_module.PlainEntryChecks(plain, self._held)
                return
            except TypeError:  # a param, step count or state dict of an unusual type: checked here
                self._held = []
        self.params = [e.param for e in plain]
        self.ptrs = [e.ptr for e in plain]
        self.shapes = [e.shape for e in plain]
        self.dtypes = [e.dtype for e in plain]
        self.devices = [e.device_index for e in plain]
        self.grad_types = [e.grad_type for e in plain]
        self.steps = [e.step for e in plain]
        watched = [(e.state, key, tensor, ptr) for e in plain for key, tensor, ptr in e.watched]
        self.watched_dicts, self.watched_keys, self.watched, self.watched_ptrs = \
            (list(column) for column in zip(*watched)) if watched else ([], [], [], [])

    def still_describe(self) -> bool:
        """Entry.reuse's checks on every plain entry at once, but for the state
        dict of each param (StepPlan checks the whole state mapping); True:
        each has taken its param's new grad. (Shapes compared one at a time:
        a list of torch.Size, tuples the garbage collector tracks, made it run
        full collections, a third of the step with 10000 tensors.)"""
        if self._host_checks is not None:
            return self._host_checks.still_describe()
        params = self.params
        if not params:
            return True
        grads = list(map(_grad_of, params))
        if list(map(type, grads)) != self.grad_types:  # (also: a grad gone, None)
            return False
        try:
            versions_kept = list(map(_version_of, self.steps)) == [e.step_version for e in self.entries]
        except RuntimeError:  # an inference-mode step count keeps no version: one by one
            return False
        if not (versions_kept
                and list(map(_data_ptr, params)) == self.ptrs
                and list(map(_dtype_of, params)) == self.dtypes
                and all(map(eq, map(_shape_of, params), self.shapes))
                and all(map(_is_contiguous, params))
                and list(map(_dtype_of, grads)) == self.dtypes
                and all(map(eq, map(_shape_of, grads), self.shapes))
                and all(map(is_, map(_layout_of, grads), repeat(_strided)))
                and list(map(_get_device, grads)) == self.devices
                and all(map(_is_contiguous, grads))
                and all(map(is_, map(dict.get, self.watched_dicts, self.watched_keys), self.watched))
                and list(map(_data_ptr, self.watched)) == self.watched_ptrs):
            return False
        for e, grad, ptr in zip(self.entries, grads, map(_data_ptr, grads)):
            e.grad, e.grad_ptr = grad, ptr
        return True


def note_master_in_step(master: torch.Tensor, param: torch.Tensor) -> None:
    """Remember that ``param`` (its local values) holds ``master``'s rounding
    now: its version after fusedlr's last write (not tracked in compiled steps:
    Dynamo does not trace version counters)."""
    if not torch.compiler.is_compiling():
        master._fusedlr_param_version = tensor_version(param)


def master_in_step(master: torch.Tensor, param: torch.Tensor) -> bool:
    """Was ``param`` left alone since fusedlr last wrote it from ``master``?"""
    return getattr(master, "_fusedlr_param_version", None) == tensor_version(param)


def sync_master(master: torch.Tensor, param: torch.Tensor) -> None:
    """Master weights: a param written from outside since the last step (a
    model checkpoint loaded, a weight edited) becomes the master wherever it
    no longer is the master's rounding; elsewhere the master keeps its low
    bits (loading the checkpoint of the same run changes nothing). Tensor
    ops only: no host read. Eager steps only (see note_master_in_step)."""
    if torch.compiler.is_compiling():
        return
    if getattr(master, "_fusedlr_param_version", None) is not None and not master_in_step(master, param):
        master.copy_(torch.where(master.to(param.dtype) == param, master, param.to(master.dtype)))
    note_master_in_step(master, param)


def sync_remainder(low: torch.Tensor, param: torch.Tensor) -> None:
    """master_weights="remainder": a param written from outside since the last
    step keeps its low halves, so loading a checkpoint of the same run changes
    nothing and elsewhere the master is within a bf16 ulp of the written value;
    where the param was set to zero, inf or nan they are cleared (a low half
    would carry a zero across its sign into a nan master). Tensor ops only."""
    if torch.compiler.is_compiling():
        return
    if getattr(low, "_fusedlr_param_version", None) is not None and not master_in_step(low, param):
        low.copy_(torch.where(param.isfinite() & (param != 0), low, 0))
    note_master_in_step(low, param)


def tensor_version(t: torch.Tensor) -> int:
    """The tensor's version counter (bumped by in-place torch ops, not by the kernels)."""
    try:
        return t._version
    except RuntimeError:  # an inference-mode tensor keeps no version
        return 0


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


def check_grad(param: torch.Tensor, grad: torch.Tensor, where: str) -> None:
    """Refuse a gradient the update cannot use, before any state changes.
    Checked every step: ``p.grad.data = ...`` bypasses torch's grad setter."""
    if grad.is_sparse:
        raise RuntimeError(f"{where}: sparse gradients are not supported by fusedlr optimizers")
    if grad.dtype != param.dtype:
        raise TypeError(f"{where}: gradient dtype {grad.dtype} differs from the param dtype {param.dtype}")
    if grad.shape != param.shape or grad.device != param.device:
        raise RuntimeError(f"{where}: the gradient is {describe(grad)} but the param is {describe(param)}; "
                           "a gradient must match its param's shape and device")
    if is_distributed(param) or is_distributed(grad):
        check_same_sharding(param, grad, "its gradient", where)


def describe(t: torch.Tensor) -> str:
    """'a float32 (4, 3) tensor on cpu', for errors."""
    return f"a {str(t.dtype).removeprefix('torch.')} {tuple(t.shape)} tensor on {t.device}"


def collect(optimizer) -> dict:
    """{device: [Bucket]} for every param of ``optimizer`` with a grad. Checks
    every param, grad and state first, so a bad one raises before anything
    changes; then creates the state of params that have none (after a reset of
    ``opt.state`` or a param appended to a group, as torch does lazily)."""
    param_groups, state = optimizer.param_groups, optimizer.state
    updated = []
    for g, group in enumerate(param_groups):
        for i, p in enumerate(group["params"]):
            where = f"param_groups[{g}]['params'][{i}]"
            optimizer.check_new_param(p, where)
            if p.grad is None:
                continue
            check_grad(p, p.grad, where)
            if state.get(p):
                optimizer.check_state(p, state[p], where)
            updated.append((g, p, where))
    by_device: dict = {}
    for g, p, where in updated:
        group = param_groups[g]
        st = optimizer.ready_state(p, group)
        optimizer.device_state(p.device)
        flags = optimizer.flags(group)
        buckets = by_device.setdefault(p.device, {})
        master = st.get("master_param") if optimizer.uses_master(p) else None
        remainder = st.get(REMAINDER) if optimizer.uses_remainder(p) else None
        # what the kernels update: the param, its master or (with the param) its master's low halves
        dtype = master.dtype if master is not None else remainder.dtype if remainder is not None else p.dtype
        state_dtype = optimizer.state_dtype_of(p)
        key = (dtype, p.dtype, state_dtype, *flags)
        bucket = buckets.get(key)
        if bucket is None:
            bucket = buckets[key] = Bucket(p.device, dtype, *flags, grad_dtype=p.dtype, state_dtype=state_dtype,
                                           stochastic_rounding=optimizer.stochastic_rounding)
        target, grad = local_tensor(p), local_tensor(p.grad)
        copy_out = None
        if master is not None:  # the master is updated, the param written as its rounding
            work = local_tensor(master)
            sync_master(work, target)
            copy_out = target if target.is_contiguous() else \
                torch.empty_like(target, memory_format=torch.contiguous_format)
        elif remainder is not None:  # the low halves updated with the param, their high halves
            work = local_tensor(remainder)
            sync_remainder(work, target)
            copy_out = target if target.is_contiguous() else target.contiguous()
        else:
            work = target if target.is_contiguous() else target.contiguous()
        grad = grad if grad.is_contiguous() else grad.contiguous()
        states = tuple(local_tensor(st[name]) if name and st.get(name) is not None else None
                       for name in optimizer.state_names)
        watched = tuple((key, st[key], _data_ptr(local_tensor(st[key])))
                        for key in optimizer.state_keys if st.get(key) is not None)
        bucket.entries.append(Entry(p, work, grad, states, st["step"], g, where, st, watched, target, copy_out,
                                    st.get(SCALES) if state_dtype == CODE_DTYPE else None))
    return {device: list(buckets.values()) for device, buckets in by_device.items()}
