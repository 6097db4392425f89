"""The buckets of one step, kept for the next ones: with many small tensors,
rebuilding them (and the native pointer tables they carry) every step would
cost more host time than the update itself."""
from __future__ import annotations

from itertools import repeat
from operator import is_

from .. import _native
from .buckets import _grad_of, collect


class StepPlan:
    """collect()'s buckets, kept while the same params (the same objects, in the
    same groups) have grads and every kept entry still describes its param
    (``Entry.reuse``: storage, shape, state dict and state tensors, the grad's
    shape and dtype). Any change rebuilds them, which re-checks everything, so
    the kernels never see a stale pointer or size. ``invalidate()`` forces a
    rebuild (group modes changed)."""

    def __init__(self):
        self.invalidate()

    def invalidate(self) -> None:
        self.work: dict = {}
        self._state = None  # the optimizer's state mapping the plan was built for
        self._state_items: tuple = ([], [])  # its params and their state dicts then, in order
        self._groups: list = []  # each group's params when it was built
        self._without_grad: list = []  # the params that had no grad then

    def work_for(self, optimizer) -> dict:
        """{device: [Bucket]} for this step (see ``buckets.collect``)."""
        if not self._reuse(optimizer):
            self.work = collect(optimizer)
            with_grad = {id(e.param) for buckets in self.work.values() for b in buckets for e in b.entries}
            self._state = optimizer.state
            self._state_items = (list(self._state), list(self._state.values()))
            self._groups = [list(group["params"]) for group in optimizer.param_groups]
            self._without_grad = [p for params in self._groups for p in params if id(p) not in with_grad]
        return self.work

    def _reuse(self, optimizer) -> bool:
        """The plan still fits (``same_params_and_state``) and every bucket's
        entries still describe their params (Bucket.reuse)."""
        return self.same_params_and_state(optimizer) and \
            all(b.reuse(self._state) for buckets in self.work.values() for b in buckets)

    def same_params_and_state(self, optimizer) -> bool:
        """The same params in the same groups, the same state dicts under the
        same params (compared in order, which needs no tensor hashing), and
        those without a grad still without one. Checks over all params at
        once, in builtins."""
        state = optimizer.state
        if state is not self._state or len(optimizer.param_groups) != len(self._groups):
            return False
        keys, values = self._state_items
        if not (same_objects(state, keys) and same_values(state, values)):
            return False
        if not all(same_objects(group["params"], kept) for group, kept in zip(optimizer.param_groups, self._groups)):
            return False
        return none_has_grad(self._without_grad)


# Identity checks over all params at once: in C++ with the host module
# (_native.host_module), else in builtins.

def same_objects(now, kept: list) -> bool:
    """The items of ``now`` (the keys of a dict) are the objects of ``kept``, in order."""
    if _native.host_module is not None:
        return _native.host_module.same_objects(now, kept)
    return len(now) == len(kept) and all(map(is_, now, kept))


def same_values(now, kept: list) -> bool:
    """The values of the mapping ``now`` are the objects of ``kept``, in order."""
    if _native.host_module is not None and isinstance(now, dict):
        return _native.host_module.same_values(now, kept)
    return len(now) == len(kept) and all(map(is_, now.values(), kept))


def none_has_grad(params: list) -> bool:
    if _native.host_module is not None:
        return _native.host_module.none_has_grad(params)
    return all(map(is_, map(_grad_of, params), repeat(None)))
