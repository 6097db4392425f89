"""What each optimizer is, in one place: its kernel kind, state slots, group
table values, schedulable hyperparameters, mode flag and reference update.
The Python side (group tables, state, checkpoints, reference backend) reads
these; the element update lives in csrc/fusedlr/update_math.h, reached by the
kind (FUSEDLR_OPTIMIZER_KINDS in step_layout.h). Adding an optimizer: a spec
here, its kind and element update in C++, its class (arguments, checks, docs)."""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Callable

from . import reference_updates


@dataclass(frozen=True)
class OptimizerSpec:
    #: its kind in FUSEDLR_OPTIMIZER_KINDS, and the "optimizer" tag of its checkpoints
    name: str
    #: the class name (fusedlr.<name>, torch.optim.<name>)
    class_name: str
    #: state keys of the kernel's state slots 0..2 ("" for unused)
    state_names: tuple
    #: the group keys of the group table's kHyper1..3, as (key, its value read from a group)
    hyper_fields: tuple
    #: {group key of a hyperparameter schedule: the group table column it drives}
    schedules: dict
    #: the group key of the mode compiled into the kernel (SGD "nesterov", Adam "amsgrad")
    mode: str
    #: reference_updates' function of one tensor
    reference_update: Callable

    @cached_property
    def schedule_keys(self) -> tuple:
        """The group keys that hold schedules (the lr's first)."""
        return ("schedule", *self.schedules)

    def table_values(self, group: dict) -> dict:
        """The group table's values for ``group``, by column name (schedule offsets aside)."""
        values = {"base_lr": group["lr"], "weight_decay": group["weight_decay"]}
        for i, (_, value_of) in enumerate(self.hyper_fields):
            values[f"hyper{i + 1}"] = value_of(group)
        return values

    def scheduled_bases(self) -> list:
        """(group key of each hyperparameter schedule, the group's value it scales)."""
        return [(key, self._column_value(column)) for key, column in self.schedules.items()]

    def _column_value(self, column: str) -> Callable:
        return lambda group: self.table_values(group)[column]

    @cached_property
    def compared_keys(self) -> tuple:
        """The group keys whose edits the device tables and the kernels' modes follow
        (read at every step: computed once)."""
        return tuple(dict.fromkeys(("lr", "weight_decay", *(key for key, _ in self.hyper_fields), self.mode,
                                    "maximize", *self.schedule_keys)))

    def flags(self, group: dict) -> tuple:
        """(maximize, nesterov, amsgrad): the modes compiled into the kernel."""
        mode = bool(group[self.mode])
        return bool(group["maximize"]), mode and self.mode == "nesterov", mode and self.mode == "amsgrad"


def _beta(index: int) -> Callable:
    return lambda group: group["betas"][index]


def _value(key: str) -> Callable:
    return lambda group: group[key]


SGD = OptimizerSpec(
    name="sgd", class_name="SGD", state_names=("momentum_buffer", "", ""),
    hyper_fields=(("momentum", _value("momentum")), ("dampening", _value("dampening"))),
    schedules={"weight_decay_schedule": "weight_decay", "momentum_schedule": "hyper1"},
    mode="nesterov", reference_update=reference_updates.sgd)

_ADAM_FIELDS = dict(
    state_names=("exp_avg", "exp_avg_sq", "max_exp_avg_sq"),
    hyper_fields=(("betas", _beta(0)), ("betas", _beta(1)), ("eps", _value("eps"))),
    schedules={"weight_decay_schedule": "weight_decay", "beta1_schedule": "hyper1"},
    mode="amsgrad")

ADAMW = OptimizerSpec(name="adamw", class_name="AdamW", reference_update=reference_updates.adamw, **_ADAM_FIELDS)
ADAM = OptimizerSpec(name="adam", class_name="Adam", reference_update=reference_updates.adam, **_ADAM_FIELDS)

#: every optimizer, by name
SPECS = {spec.name: spec for spec in (SGD, ADAMW, ADAM)}
