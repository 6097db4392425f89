"""The buckets of one step, kept for the next ones: with many small tensors,
rebuilding them (and the native pointer tables they carry) every step would
cost more host time than the update itself."""
from __future__ import annotations

from .buckets import collect


class StepPlan:
    """collect()'s buckets, rebuilt only when the set of params with a grad or a
    param's storage changes, or after ``invalidate()`` (group table or state
    layout changed). The grads themselves are re-read and re-checked every step."""

    def __init__(self):
        self.invalidate()

    def invalidate(self) -> None:
        self.signature = None
        self.work: dict = {}

    def work_for(self, param_groups: list[dict], state: dict, state_names: tuple, flags_of) -> dict:
        """{device: [Bucket]} for this step (see ``buckets.collect``)."""
        params = [p for group in param_groups for p in group["params"]]
        signature = ([p.data_ptr() for p in params], [p.grad is not None for p in params])
        if signature == self.signature:
            for buckets in self.work.values():
                for bucket in buckets:
                    for entry in bucket.entries:
                        entry.refresh()
            return self.work
        self.work = collect(param_groups, state, state_names, flags_of)
        self.signature = signature
        return self.work
