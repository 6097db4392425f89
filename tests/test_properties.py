"""Property-based tests over random parameters: finite values inside each
family's declared bounds, continuity where the family is continuous, exact
values at very large steps, and native == reference on random compositions."""
import math
import os

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fusedlr import schedules as S

SETTINGS = settings(max_examples=int(os.environ.get("FUSEDLR_HYPOTHESIS_EXAMPLES", "60")), deadline=None, suppress_health_check=[HealthCheck.too_slow])
BIG = 2**40

lengths = st.integers(1, 5000)
factors = st.floats(0.0, 1.0)
pos_factors = st.floats(1e-4, 1.0)
decays = st.floats(0.5, 0.999999)
base_lrs = st.floats(1e-6, 10.0)
steps = st.lists(st.one_of(st.integers(0, 20_000), st.integers(0, BIG)), min_size=1, max_size=40)


@st.composite
def leaf_with_bounds(draw):
    """(schedule, lambda b: (low, high)) for a random leaf family."""
    family = draw(st.sampled_from(["constant", "anneal", "step", "exponential", "polynomial", "cosine", "restarts",
                                   "inverse_sqrt", "inverse_time", "one_cycle", "cyclic", "range_test"]))
    if family == "constant":
        f = draw(st.floats(0.0, 4.0))
        return S.Constant(f, draw(st.one_of(st.none(), lengths))), lambda b: (b * min(f, 1), b * max(f, 1))
    if family == "anneal":
        shape = draw(st.sampled_from(S.Anneal.SHAPES))
        lo_f = draw(pos_factors if shape == "exponential" else factors)
        hi_f = draw(pos_factors if shape == "exponential" else factors)
        return S.Anneal(lo_f, hi_f, draw(lengths), shape), lambda b: (b * min(lo_f, hi_f), b * max(lo_f, hi_f))
    if family == "step":
        return S.Step(draw(lengths), draw(decays)), lambda b: (0.0, b)
    if family == "exponential":
        floor = draw(st.one_of(st.none(), st.floats(1e-3, 1.0)))
        sched = S.Exponential(draw(decays), draw(st.integers(1, 100)), draw(st.integers(0, 1000)), draw(st.booleans()), floor)
        return sched, lambda b: (b * (floor or 0.0), b)
    if family == "polynomial":
        end = draw(st.floats(0.0, 1e-6))
        return S.Polynomial(draw(lengths), draw(st.floats(0.1, 4.0)), end, draw(st.booleans())), lambda b: (end, b)
    if family == "cosine":
        eta = draw(st.floats(0.0, 1e-8))
        alpha = draw(st.floats(0.0, 0.9))  # with b >= 1e-6 the floor stays below b
        sched = S.Cosine(draw(lengths), eta, alpha=alpha, exponent=draw(st.floats(0.5, 3.0)),
                         periodic=draw(st.booleans()))
        return sched, lambda b: (eta + alpha * b, b)
    if family == "restarts":
        eta = draw(st.floats(0.0, 1e-6))
        sched = S.CosineRestarts(draw(st.floats(1.0, 500.0)), draw(st.sampled_from([1, 1.3, 2, 2.5, 3])), eta,
                                 cycle_decay=draw(st.floats(0.3, 1.0)), cycle_limit=draw(st.integers(0, 5)))
        return sched, lambda b: (eta, b)
    if family == "inverse_sqrt":
        return S.InverseSqrt(draw(st.floats(1.0, 1e5))), lambda b: (0.0, b)
    if family == "inverse_time":
        return S.InverseTime(draw(st.floats(0.0, 10.0)), draw(lengths), draw(st.booleans())), lambda b: (0.0, b)
    if family == "one_cycle":
        total = draw(st.integers(20, 10_000))
        sched = S.OneCycle(draw(st.floats(1e-4, 1.0)), total, draw(st.floats(0.1, 0.45)),
                           draw(st.sampled_from(["cos", "linear"])), draw(st.floats(2, 100)), draw(st.floats(2, 1e4)),
                           draw(st.booleans()))
        return sched, lambda b: (min(sched.phase_lrs), max(sched.phase_lrs))
    if family == "cyclic":
        max_lr = 20.0
        sched = S.Cyclic(max_lr, draw(st.integers(1, 500)), draw(st.integers(1, 500)),
                         draw(st.sampled_from(S.Cyclic.MODES)), draw(st.floats(0.9, 1.0)))
        return sched, lambda b: (b, max_lr)
    end = draw(st.floats(1e-3, 100.0))
    return S.RangeTest(end, draw(lengths), draw(st.sampled_from(["exponential", "linear"]))), \
        lambda b: (min(b, end), max(b, end))


def _tolerant(low, high):
    slack = 1e-12 * max(abs(low), abs(high)) + 1e-300  # torch's own lerps round at this level
    return low - slack, high + slack


@SETTINGS
@given(leaf_with_bounds(), steps, base_lrs)
def test_values_are_finite_and_within_the_declared_bounds(case, ts, b):
    schedule, bounds = case
    low, high = _tolerant(*bounds(b))
    lrs = schedule.values(ts, [b], backend="cpu")[:, 0]
    assert torch.isfinite(lrs).all()
    assert (lrs >= low).all() and (lrs <= high).all(), (schedule, ts, lrs)


@SETTINGS
@given(leaf_with_bounds(), steps, base_lrs)
def test_native_evaluator_agrees_with_the_reference(case, ts, b):
    schedule, _ = case
    native = schedule.values(ts, [b], backend="cpu")
    reference = schedule.values(ts, [b], backend="reference")
    torch.testing.assert_close(native, reference, rtol=1e-9, atol=1e-300)


@st.composite
def continuous_schedule(draw):
    """(schedule, bound on |lr(t+1) - lr(t)| for base lr 1)."""
    family = draw(st.sampled_from(["linear", "cosine", "polynomial", "cyclic", "one_cycle"]))
    T = draw(st.integers(2, 5000))
    if family == "linear":
        s, e = draw(factors), draw(factors)
        return S.Linear(s, e, T), abs(e - s) / T
    if family == "cosine":
        return S.Cosine(T, alpha=draw(factors)), math.pi / (2 * T)
    if family == "polynomial":
        p = draw(st.floats(1.0, 4.0))
        return S.Polynomial(T, p), p / T
    if family == "cyclic":
        up, down = draw(st.integers(1, 500)), draw(st.integers(1, 500))
        return S.Cyclic(5.0, up, down), 4.0 / min(up, down)
    sched = S.OneCycle(1.0, T * 10, 0.3, "linear")
    lengths_ = [sched.phase_ends[0]] + [b - a for a, b in zip(sched.phase_ends, sched.phase_ends[1:])]
    return sched, 1.0 / min(lengths_)


@SETTINGS
@given(continuous_schedule(), st.lists(st.integers(0, 100_000), min_size=1, max_size=30))
def test_continuous_families_move_by_at_most_their_slope_per_step(case, ts):
    schedule, slope = case
    lrs = schedule.values([t for t0 in ts for t in (t0, t0 + 1)], [1.0], backend="cpu")[:, 0]
    jumps = (lrs[1::2] - lrs[0::2]).abs()
    assert (jumps <= slope * (1 + 1e-9) + 1e-15).all()


@SETTINGS
@given(st.integers(1, 10_000), st.integers(0, 10_000), st.sampled_from(["restarts", "cyclic", "step-seq"]))
def test_huge_steps_are_exact(period, offset, kind):
    """Periodic schedules at 2**40-ish steps equal their value one period in;
    a milestone at 10**12 starts its schedule exactly at its step 0."""
    offset = offset % period
    k = BIG // period
    if kind == "restarts":
        schedule = S.CosineRestarts(period)
        near, far = offset, k * period + offset
    elif kind == "cyclic":
        schedule = S.Cyclic(3.0, period, period)
        near, far = offset, k * 2 * period + offset
    else:
        schedule = S.Sequential([S.Constant(0.5), S.with_warmup(S.Step(period, 0.5), 7)], [10**12])
        near, far = 10**12 + offset, 10**12 + offset + period
    for backend in ("cpu", "reference"):
        lrs = schedule.values([near, far], [1.0], backend=backend)[:, 0]
        if kind == "step-seq":
            inner = S.with_warmup(S.Step(period, 0.5), 7).values([offset, offset + period], [1.0], backend=backend)[:, 0]
            assert torch.equal(lrs, inner)
        else:
            assert lrs[1].item() == pytest.approx(lrs[0].item(), rel=1e-12, abs=1e-15)


@st.composite
def composite_tree(draw, depth=0):
    if depth >= 3 or draw(st.booleans()):
        return draw(leaf_with_bounds())[0]
    kind = draw(st.sampled_from(["sequential", "chain"]))
    children = [draw(composite_tree(depth=depth + 1)) for _ in range(draw(st.integers(1, 3)))]
    if kind == "chain":
        return S.Chain(children)
    milestones = sorted(draw(st.sets(st.integers(0, 3000), min_size=len(children) - 1, max_size=len(children) - 1)))
    return S.Sequential(children, milestones)


@SETTINGS
@given(composite_tree(), steps)
def test_random_compositions_agree_between_native_and_reference(schedule, ts):
    native = schedule.values(ts, [0.5], backend="cpu")
    reference = schedule.values(ts, [0.5], backend="reference")
    assert torch.isfinite(native).all()
    torch.testing.assert_close(native, reference, rtol=1e-9, atol=1e-300)
