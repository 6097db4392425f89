"""Schedules as plain data (dicts, lists, numbers, strings), so a checkpoint
holding them loads with ``torch.load(weights_only=True)``.

``encode`` flattens any number of schedule trees into one list of nodes, each
``{"type": class name, "fields": {...}}`` with children as ``{"node": k}``; a
schedule object shared by several trees (or groups) is stored once, so it is
shared again after decoding. Only fusedlr's own schedule classes decode, each
rebuilt through its constructor (so its checks run on what was stored), then
given the stored values of its derived fields, which are checked too.
"""
from __future__ import annotations

import inspect
import math
from typing import Sequence

from .base import Schedule

_PRIMITIVES = (bool, int, float, str, type(None))


def encode(schedules: Sequence[Schedule | None]) -> tuple[list, list]:
    """(one reference per schedule (``{"node": k}`` or None), the node list)."""
    nodes: list = []
    index: dict[int, int] = {}  # id(schedule) -> node; the trees keep the objects alive meanwhile

    def ref(schedule: Schedule) -> dict:
        k = index.get(id(schedule))
        if k is None:
            k = index[id(schedule)] = len(nodes)
            nodes.append(None)
            fields = {name: value_of(v) for name, v in vars(schedule).items() if not name.startswith("_")}
            nodes[k] = {"type": type(schedule).__name__, "fields": fields}
        return {"node": k}

    def value_of(value):
        if isinstance(value, Schedule):
            return ref(value)
        if isinstance(value, (tuple, list)):
            return [value_of(v) for v in value]
        if isinstance(value, _PRIMITIVES):
            return value
        raise TypeError(f"cannot store a schedule field of type {type(value).__name__}")

    return [None if s is None else ref(s) for s in schedules], nodes


def is_reference(value) -> bool:
    """Is ``value`` a reference written by ``encode``?"""
    return isinstance(value, dict) and set(value) == {"node"} and isinstance(value["node"], int)


class Decoder:
    """Rebuilds the schedules of an ``encode`` node list (each node once)."""

    def __init__(self, nodes):
        if not isinstance(nodes, list):
            raise TypeError(f"the stored schedules must be a list of nodes, got {type(nodes).__name__}")
        self._nodes = nodes
        self._built: dict[int, Schedule] = {}
        self._building: set[int] = set()
        self._classes = _schedule_classes()

    def schedule(self, reference) -> Schedule:
        """The schedule a reference points at."""
        if not is_reference(reference):
            raise TypeError(f"expected a stored schedule reference {{'node': k}}, got {reference!r}")
        k = reference["node"]
        if k in self._built:
            return self._built[k]
        if not 0 <= k < len(self._nodes):
            raise ValueError(f"stored schedule reference {k} is outside the {len(self._nodes)} stored nodes")
        if k in self._building:
            raise ValueError(f"stored schedule node {k} contains itself")
        self._building.add(k)
        node = self._nodes[k]
        if not isinstance(node, dict) or not isinstance(node.get("fields"), dict):
            raise ValueError(f"stored schedule node {k} is not {{'type': ..., 'fields': {{...}}}}")
        cls = self._classes.get(node.get("type"))
        if cls is None:
            raise ValueError(f"stored schedule node {k} has unknown type {node.get('type')!r}; only "
                             "fusedlr.schedules classes can be stored in a checkpoint")
        fields = {}
        for name, value in node["fields"].items():
            if not isinstance(name, str) or name.startswith("_"):
                raise ValueError(f"stored schedule node {k} has an invalid field name {name!r}")
            fields[name] = self._value(value, f"{cls.__name__}.{name}")
        schedule = _rebuilt(cls, fields, k)
        self._building.discard(k)
        self._built[k] = schedule
        return schedule

    def _value(self, value, where: str):
        if is_reference(value):
            return self.schedule(value)
        if isinstance(value, list):
            return tuple(self._value(v, where) for v in value)
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"stored schedule field {where} is {value}; schedule fields are finite")
        if isinstance(value, _PRIMITIVES):
            return value
        raise TypeError(f"stored schedule field {where} has type {type(value).__name__}")


def _rebuilt(cls: type, fields: dict, k: int) -> Schedule:
    """``cls`` built from its constructor's arguments among ``fields`` (its
    checks run), the remaining fields (values it derives, e.g. torch's own
    phase ends kept by from_torch) set afterwards and checked for consistency."""
    parameters = inspect.signature(cls.__init__).parameters
    arguments = {name: value for name, value in fields.items() if name in parameters and name != "self"}
    derived = {name: value for name, value in fields.items() if name not in arguments}
    try:
        schedule = cls(**arguments)
        if derived:
            schedule = schedule._evolve(**derived)
        schedule.check_stored_fields()
        schedule.pack()
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise ValueError(f"stored schedule node {k} ({cls.__name__}) is invalid: {exc}") from None
    return schedule


def _schedule_classes() -> dict[str, type]:
    found: dict[str, type] = {}
    pending = [Schedule]
    while pending:
        cls = pending.pop()
        if cls.__module__.startswith("fusedlr.schedules"):
            found[cls.__name__] = cls
        pending.extend(cls.__subclasses__())
    return found
