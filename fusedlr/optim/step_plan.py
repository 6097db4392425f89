"""The buckets of one step, kept for the next ones: with many small tensors,
rebuilding them (and the native pointer tables they carry) every step would
cost more host time than the update itself."""
from __future__ import annotations

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
        self._watch: list = []  # per param, in group order: (param, its group, its Entry or None without a grad)

    def work_for(self, optimizer) -> dict:
        """{device: [Bucket]} for this step (see ``buckets.collect``)."""
        if not self._reuse(optimizer):
            self.work = collect(optimizer)
            entries = {id(e.param): e for buckets in self.work.values() for b in buckets for e in b.entries}
            self._state = optimizer.state
            self._watch = [(p, g, entries.get(id(p))) for g, group in enumerate(optimizer.param_groups)
                           for p in group["params"]]
        return self.work

    def _reuse(self, optimizer) -> bool:
        state = optimizer.state
        if state is not self._state:
            return False
        watch = iter(self._watch)
        for g, group in enumerate(optimizer.param_groups):
            for p in group["params"]:
                kept, kept_group, entry = next(watch, (None, None, None))
                if kept is not p or kept_group != g:
                    return False
                if entry is None:
                    if _grad_of(p) is not None:
                        return False
                elif not entry.reuse(state):
                    return False
        return next(watch, None) is None
