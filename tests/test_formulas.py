"""Families torch lacks, against the formulas of the libraries that define them
(HF, Keras, optax, timm, fastai/Lightning), on every backend."""
import math

import pytest
import torch

import formula_oracles as F
from fusedlr import schedules as S
from torch_oracle import assert_close

STEPS = list(range(400))


def expected(fn, base_lrs, steps=STEPS):
    return torch.tensor([[fn(t, b) for b in base_lrs] for t in steps], dtype=torch.float64)


# (schedule, oracle(t, base) -> lr, base_lrs)
CASES = {
    # Hugging Face get_scheduler names
    "hf-linear": (S.get_scheduler("linear", 30, 300), lambda t, b: b * F.hf_linear(t, 30, 300), [1e-3, 5e-4]),
    "hf-cosine": (S.get_scheduler("cosine", 40, 400), lambda t, b: b * F.hf_cosine(t, 40, 400), [1e-3]),
    "hf-cosine-1.5-cycles-in-range": (S.get_scheduler("cosine", 10, 500, num_cycles=0.25),
                                      lambda t, b: b * F.hf_cosine(t, 10, 500, 0.25), [2e-3]),
    "hf-cosine_with_restarts": (S.get_scheduler("cosine_with_restarts", 20, 380, num_cycles=3),
                                lambda t, b: b * F.hf_cosine_hard_restarts(t, 20, 380, 3), [1e-3, 1e-2]),
    "hf-polynomial": (S.get_scheduler("polynomial", 25, 350, power=2.0, lr_end=1e-5),
                      lambda t, b: b * F.hf_polynomial(t, 25, 350, b, 1e-5, 2.0), [1e-3, 3e-3]),
    "hf-constant": (S.get_scheduler("constant"), lambda t, b: b, [1e-3]),
    "hf-constant_with_warmup": (S.get_scheduler("constant_with_warmup", 50),
                                lambda t, b: b * F.hf_constant_with_warmup(t, 50), [1e-3]),
    "hf-inverse_sqrt": (S.get_scheduler("inverse_sqrt", 40), lambda t, b: b * F.hf_inverse_sqrt(t, 40), [1e-3]),
    "hf-inverse_sqrt-timescale": (S.get_scheduler("inverse_sqrt", 16, timescale=100),
                                  lambda t, b: b * F.hf_inverse_sqrt(t, 16, 100), [1e-3]),
    "hf-inverse_sqrt-no-warmup": (S.get_scheduler("inverse_sqrt", 0), lambda t, b: b * F.hf_inverse_sqrt(t, 0), [1e-3]),
    "hf-cosine_with_min_lr": (S.get_scheduler("cosine_with_min_lr", 20, 420, min_lr_rate=0.1),
                              lambda t, b: b * F.hf_cosine_with_min_lr(t, 20, 420, min_lr_rate=0.1), [1e-3, 4e-3]),
    "hf-wsd-cosine": (S.get_scheduler("warmup_stable_decay", 30, 360, num_decay_steps=100),
                      lambda t, b: b * F.hf_wsd(t, 30, 230, 100), [1e-3]),
    "hf-wsd-linear-min": (S.warmup_stable_decay(20, 80, num_stable_steps=150, decay_type="linear", min_lr_ratio=0.1),
                          lambda t, b: b * F.hf_wsd(t, 20, 150, 80, "linear", "linear", 0.1), [1e-3]),
    "hf-wsd-1-sqrt": (S.warmup_stable_decay(25, 120, num_stable_steps=100, warmup_type="1-sqrt", decay_type="1-sqrt",
                                            min_lr_ratio=0.05),
                      lambda t, b: b * F.hf_wsd(t, 25, 100, 120, "1-sqrt", "1-sqrt", 0.05), [1e-3]),
    "hf-wsd-cosine-warmup": (S.warmup_stable_decay(40, 60, num_stable_steps=10, warmup_type="cosine", min_lr_ratio=0.2),
                             lambda t, b: b * F.hf_wsd(t, 40, 10, 60, "cosine", "cosine", 0.2), [1e-3]),
    # Keras
    "keras-polynomial": (S.Polynomial(150, power=1.5, end_lr=1e-4), lambda t, b: F.keras_polynomial(t, b, 150, 1e-4, 1.5), [0.1, 0.02]),
    "keras-polynomial-cycle": (S.Polynomial(70, power=2.0, end_lr=1e-4, cycle=True),
                               lambda t, b: F.keras_polynomial(t, b, 70, 1e-4, 2.0, cycle=True), [0.1]),
    "keras-inverse-time": (S.InverseTime(0.5, 10), lambda t, b: F.keras_inverse_time(t, b, 10, 0.5), [0.1]),
    "keras-inverse-time-staircase": (S.InverseTime(2.0, 25, staircase=True),
                                     lambda t, b: F.keras_inverse_time(t, b, 25, 2.0, True), [0.1]),
    "keras-cosine-restarts-mul1": (S.CosineRestarts(37, 1, alpha=0.1, cycle_decay=0.8),
                                   lambda t, b: F.keras_cosine_restarts(t, b, 37, 1.0, 0.8, 0.1), [0.1, 0.01]),
    # optax
    "optax-exponential": (S.Exponential(0.5, transition_steps=50, transition_begin=20, end_factor=0.05),
                          lambda t, b: F.optax_exponential(t, b, 50, 0.5, 20, False, 0.05 * b), [0.1]),
    "optax-exponential-staircase": (S.Exponential(0.7, transition_steps=30, staircase=True),
                                    lambda t, b: F.optax_exponential(t, b, 30, 0.7, 0, True), [0.1]),
    "optax-exponential-growth-capped": (S.Exponential(1.02, end_factor=3.0),
                                        lambda t, b: F.optax_exponential(t, b, 1, 1.02, 0, False, 3.0 * b), [0.01]),
    "optax-cosine-exponent": (S.Cosine(250, alpha=0.05, exponent=2.0),
                              lambda t, b: F.optax_cosine_decay(t, b, 250, 0.05, 2.0), [0.1]),
    "optax-piecewise": (S.Piecewise.from_scales({50: 0.5, 120: 0.1, 300: 2.0}),
                        lambda t, b: F.optax_piecewise_constant(t, b, {50: 0.5, 120: 0.1, 300: 2.0}), [0.1, 1.0]),
    "optax-join": (S.Sequential([S.Linear(0.0, 1.0, 30), S.Cosine(200), S.Constant(0.0)], [30, 230]),
                   lambda t, b: F.optax_join(t, [lambda s: b * s / 30 if s < 30 else b,
                                                 lambda s: F.optax_cosine_decay(s, b, 200),
                                                 lambda s: 0.0], [30, 230]), [0.1]),
    # timm
    "timm-cycle-limit": (S.CosineRestarts(60, 1, eta_min=1e-4, cycle_limit=3),
                         lambda t, b: F.timm_cosine(t, b, 60, lr_min=1e-4, cycle_limit=3), [0.1]),
    "timm-cycle-decay": (S.CosineRestarts(50, 1, cycle_decay=0.5, cycle_limit=10),
                         lambda t, b: F.timm_cosine(t, b, 50, cycle_decay=0.5, cycle_limit=10), [0.1]),
    # LR range test and Noam
    "range-test-exponential": (S.RangeTest(10.0, 300), lambda t, b: F.range_test(t, b, 10.0, 300), [1e-7, 1e-5]),
    "range-test-linear": (S.RangeTest(1.0, 250, "linear"), lambda t, b: F.range_test(t, b, 1.0, 250, True), [1e-4]),
    "noam": (S.noam(512, 60), lambda t, b: b * F.noam(t, 512, 60), [2.0]),
    "noam-warmup-1": (S.noam(64, 1), lambda t, b: b * F.noam(t, 64, 1), [1.0]),
    # warmup prefixes
    "warmup-linear-then-step": (S.with_warmup(S.Step(50, 0.5), 20, start_factor=0.1),
                                lambda t, b: b * (0.1 + 0.9 * t / 20 if t < 20 else 0.5 ** ((t - 20) // 50)), [0.1]),
    "warmup-exponential": (S.with_warmup(S.Cosine(300), 40, "exponential", start_factor=1e-3),
                           lambda t, b: b * (1e-3 ** (1 - t / 40) if t < 40 else F.optax_cosine_decay(t - 40, 1.0, 300)), [0.1]),
    "warmup-constant": (S.with_warmup(S.InverseSqrt(100), 30, "constant", start_factor=0.1),
                        lambda t, b: b * (0.1 if t < 30 else math.sqrt(100 / (t - 30 + 100))), [0.1]),
    # per-group multipliers
    "group-multipliers": (S.group_multipliers([1.0, 0.5, 0.1]) * S.Cosine(300),
                          None, [0.1, 0.1, 0.1]),
}


def _oracle(case, base_lrs):
    schedule, fn, _ = CASES[case]
    if case == "group-multipliers":
        scales = [1.0, 0.5, 0.1]
        return torch.tensor([[F.optax_cosine_decay(t, b * s, 300) for b, s in zip(base_lrs, scales)] for t in STEPS],
                            dtype=torch.float64)
    return expected(fn, base_lrs)


@pytest.mark.parametrize("case", sorted(CASES))
def test_family_matches_its_oracle(case, backend):
    schedule, _, base_lrs = CASES[case]
    assert_close(schedule.values(STEPS, base_lrs, backend=backend), _oracle(case, base_lrs), rtol=1e-11, atol=1e-16)


@pytest.mark.parametrize("t_mul,m_mul,alpha", [(1.5, 0.9, 0.0), (2.5, 1.0, 0.2), (1.1, 0.7, 0.05)])
def test_restarts_with_non_integer_t_mul_match_keras(t_mul, m_mul, alpha, backend):
    """Keras' own log() cycle count can land on the wrong side of an exact cycle
    boundary; there the restart value is checked in closed form instead."""
    first, base = 13, 0.1
    schedule = S.CosineRestarts(first, t_mul, alpha=alpha, cycle_decay=m_mul)
    actual = schedule.values(STEPS, [base], backend=backend)[:, 0].cpu()
    starts, period, start = [], first, 0.0
    while start <= STEPS[-1]:
        starts.append(start)
        start, period = start + period, period * t_mul
    for t in STEPS:
        if any(abs(t - s) < 1e-9 for s in starts):
            i = min(range(len(starts)), key=lambda k: abs(t - starts[k]))
            want = base * (alpha + (1 - alpha) * m_mul ** i)
        else:
            want = F.keras_cosine_restarts(t, base, first, t_mul, m_mul, alpha)
        assert actual[t].item() == pytest.approx(want, rel=1e-11), t


def test_timm_non_integer_cycle_mul(backend):
    schedule = S.CosineRestarts(20.5, 1.7, cycle_limit=4)
    actual = schedule.values(STEPS, [0.1], backend=backend)[:, 0].cpu()
    want = [F.timm_cosine(t, 0.1, 20.5, cycle_mul=1.7, cycle_limit=4) for t in STEPS]
    assert_close(actual.reshape(-1, 1), torch.tensor(want, dtype=torch.float64).reshape(-1, 1), rtol=1e-11, atol=1e-16)


@pytest.mark.parametrize("name", ["linear", "cosine", "cosine_with_restarts", "polynomial", "cosine_with_min_lr"])
def test_hf_schedules_hold_their_final_value_after_the_run(name, backend):
    kwargs = {"min_lr_rate": 0.1} if name == "cosine_with_min_lr" else {}
    schedule = S.get_scheduler(name, 10, 100, **kwargs)
    lrs = schedule.values([100, 101, 150, 10**6, 2**40], [1e-3], backend=backend).cpu()[:, 0]
    assert torch.isfinite(lrs).all()
    assert (lrs == lrs[0]).all()
    final = {"linear": 0.0, "cosine": 0.0, "cosine_with_restarts": 0.0, "polynomial": 1e-7, "cosine_with_min_lr": 1e-4}
    assert lrs[0].item() == pytest.approx(final[name], abs=1e-18)
