"""Every supported torch scheduler, driven step by step, against from_torch()
evaluated on every backend (several parameter sets, several param groups)."""
import pytest
import torch
from torch.optim import lr_scheduler as tls

from fusedlr import schedules as S
from torch_oracle import assert_close, torch_lr_trajectory

TWO_GROUPS = [0.1, 0.03]
THREE_GROUPS = [1.0, 0.25, 2e-3]

CASES = {
    "StepLR": (lambda o: tls.StepLR(o, step_size=7, gamma=0.5), TWO_GROUPS, 300),
    "StepLR-1": (lambda o: tls.StepLR(o, step_size=1, gamma=0.97), [0.2], 300),
    "MultiStepLR": (lambda o: tls.MultiStepLR(o, milestones=[30, 80, 81, 200], gamma=0.3), THREE_GROUPS, 300),
    "MultiStepLR-dup": (lambda o: tls.MultiStepLR(o, milestones=[50, 50, 120], gamma=0.5), TWO_GROUPS, 200),
    "ConstantLR": (lambda o: tls.ConstantLR(o, factor=0.25, total_iters=40), TWO_GROUPS, 120),
    "LinearLR-warmup": (lambda o: tls.LinearLR(o, start_factor=0.01, end_factor=1.0, total_iters=100), TWO_GROUPS, 300),
    "LinearLR-decay": (lambda o: tls.LinearLR(o, start_factor=1.0, end_factor=0.05, total_iters=250), THREE_GROUPS, 300),
    "ExponentialLR": (lambda o: tls.ExponentialLR(o, gamma=0.98), TWO_GROUPS, 300),
    "PolynomialLR": (lambda o: tls.PolynomialLR(o, total_iters=200, power=2.0), TWO_GROUPS, 300),
    "PolynomialLR-sqrt": (lambda o: tls.PolynomialLR(o, total_iters=150, power=0.5), [0.5], 200),
    "CosineAnnealingLR": (lambda o: tls.CosineAnnealingLR(o, T_max=100, eta_min=1e-3), TWO_GROUPS, 100),
    "CosineAnnealingLR-past-T_max": (lambda o: tls.CosineAnnealingLR(o, T_max=60, eta_min=0.0), TWO_GROUPS, 300),
    "CosineAnnealingLR-eta": (lambda o: tls.CosineAnnealingLR(o, T_max=45, eta_min=1e-3), THREE_GROUPS, 250),
    "WarmRestarts": (lambda o: tls.CosineAnnealingWarmRestarts(o, T_0=17, eta_min=1e-4), TWO_GROUPS, 300),
    "WarmRestarts-mult2": (lambda o: tls.CosineAnnealingWarmRestarts(o, T_0=5, T_mult=2, eta_min=0.0), TWO_GROUPS, 400),
    "WarmRestarts-mult3": (lambda o: tls.CosineAnnealingWarmRestarts(o, T_0=3, T_mult=3, eta_min=1e-3), THREE_GROUPS, 400),
    "CyclicLR-triangular": (lambda o: tls.CyclicLR(o, base_lr=[0.01, 0.001], max_lr=[0.1, 0.05], step_size_up=20), None, 300),
    "CyclicLR-triangular2": (lambda o: tls.CyclicLR(o, base_lr=0.001, max_lr=0.1, step_size_up=15, step_size_down=25, mode="triangular2"), TWO_GROUPS, 300),
    "CyclicLR-exp_range": (lambda o: tls.CyclicLR(o, base_lr=0.01, max_lr=0.2, step_size_up=10, mode="exp_range", gamma=0.995), TWO_GROUPS, 300),
    "OneCycleLR-cos": (lambda o: tls.OneCycleLR(o, max_lr=[0.5, 0.1], total_steps=300), None, 300),
    "OneCycleLR-linear": (lambda o: tls.OneCycleLR(o, max_lr=0.2, total_steps=250, pct_start=0.25, anneal_strategy="linear", div_factor=10, final_div_factor=100), TWO_GROUPS, 250),
    "OneCycleLR-three-phase": (lambda o: tls.OneCycleLR(o, max_lr=1.0, total_steps=301, three_phase=True), [0.1], 301),
    "SequentialLR-warmup-cosine": (lambda o: tls.SequentialLR(o, [tls.LinearLR(o, 0.1, 1.0, 20), tls.CosineAnnealingLR(o, T_max=180, eta_min=1e-4)], milestones=[20]), TWO_GROUPS, 300),
    "SequentialLR-three": (lambda o: tls.SequentialLR(o, [tls.ConstantLR(o, 0.5, 10), tls.ExponentialLR(o, 0.97), tls.StepLR(o, 30, 0.5)], milestones=[25, 140]), THREE_GROUPS, 300),
    "SequentialLR-restarts": (lambda o: tls.SequentialLR(o, [tls.LinearLR(o, 0.2, 1.0, 10), tls.CosineAnnealingWarmRestarts(o, T_0=40, T_mult=2)], milestones=[10]), TWO_GROUPS, 300),
    "SequentialLR-onecycle": (lambda o: tls.SequentialLR(o, [tls.ConstantLR(o, 0.1, 30), tls.OneCycleLR(o, max_lr=0.4, total_steps=200)], milestones=[30]), TWO_GROUPS, 230),
    "ChainedScheduler": (lambda o: tls.ChainedScheduler([tls.ConstantLR(o, 0.1, 4), tls.ExponentialLR(o, 0.9)]), TWO_GROUPS, 200),
    "ChainedScheduler-warmup-cosine": (lambda o: tls.ChainedScheduler([tls.LinearLR(o, 0.1, 1.0, 25), tls.CosineAnnealingLR(o, T_max=300)]), TWO_GROUPS, 300),
    "ChainedScheduler-three": (lambda o: tls.ChainedScheduler([tls.StepLR(o, 40, 0.5), tls.MultiStepLR(o, [100, 150], 0.3), tls.PolynomialLR(o, 280, 1.5)]), THREE_GROUPS, 300),
    "Chained-of-chained": (lambda o: tls.ChainedScheduler([tls.ChainedScheduler([tls.ConstantLR(o, 0.5, 20), tls.StepLR(o, 30, 0.7)]), tls.ExponentialLR(o, 0.995)]), TWO_GROUPS, 200),
}


def _base(case):
    make, base_lrs, _ = CASES[case]
    return base_lrs or [1.0, 1.0]


@pytest.mark.parametrize("case", sorted(CASES))
def test_from_torch_matches_torch(case, backend):
    make, base_lrs, steps = CASES[case]
    scheduler, expected = torch_lr_trajectory(make, _base(case), steps)
    schedule = S.from_torch(scheduler)
    actual = schedule.values(range(steps), S.torch_base_lrs(scheduler), backend=backend)
    assert_close(actual, expected, rtol=1e-11)


def test_direct_constructors_equal_torch(backend):
    """The public constructors (not only from_torch) give torch's numbers."""
    pairs = [
        (S.Step(7, 0.5), lambda o: tls.StepLR(o, 7, 0.5)),
        (S.MultiStep([30, 80], 0.3), lambda o: tls.MultiStepLR(o, [30, 80], 0.3)),
        (S.Linear(0.01, 1.0, 100), lambda o: tls.LinearLR(o, 0.01, 1.0, 100)),
        (S.Cosine(100, eta_min=1e-3, periodic=True), lambda o: tls.CosineAnnealingLR(o, 100, 1e-3)),
        (S.CosineRestarts(5, 2, eta_min=1e-3), lambda o: tls.CosineAnnealingWarmRestarts(o, 5, 2, 1e-3)),
        (S.OneCycle(0.4, 200), lambda o: tls.OneCycleLR(o, 0.4, total_steps=200)),
        (S.Cyclic(0.1, 12, 30, "triangular2"), lambda o: tls.CyclicLR(o, 0.01, 0.1, 12, 30, "triangular2")),
        (S.with_warmup(S.Exponential(0.99), 10, start_factor=0.1),
         lambda o: tls.SequentialLR(o, [tls.LinearLR(o, 0.1, 1.0, 10), tls.ExponentialLR(o, 0.99)], [10])),
        (S.Constant(0.1, 4) * S.Exponential(0.9),
         lambda o: tls.ChainedScheduler([tls.ConstantLR(o, 0.1, 4), tls.ExponentialLR(o, 0.9)])),
    ]
    for schedule, make in pairs:
        base = [0.01] if isinstance(schedule, S.Cyclic) else [0.2]
        scheduler, expected = torch_lr_trajectory(make, base, 200)
        assert_close(schedule.values(range(200), S.torch_base_lrs(scheduler), backend=backend), expected, rtol=1e-11)


def test_one_cycle_holds_final_value_past_total_steps(backend):
    schedule = S.OneCycle(0.5, 100)
    lrs = schedule.values([99, 100, 1000, 2**40], [0.02], backend=backend).cpu()
    assert torch.isfinite(lrs).all()
    assert (lrs == lrs[0]).all()


@pytest.mark.parametrize("make", [
    lambda o: tls.LambdaLR(o, lambda e: 0.9 ** e),
    lambda o: tls.MultiplicativeLR(o, lambda e: 0.9),
    lambda o: tls.CyclicLR(o, 0.01, 0.1, scale_fn=lambda x: 1.0),
    lambda o: tls.ChainedScheduler([tls.ConstantLR(o, 0.5, 3), tls.CosineAnnealingLR(o, 10, eta_min=1e-3)]),
    lambda o: tls.ChainedScheduler([tls.ExponentialLR(o, 0.9), tls.OneCycleLR(o, 0.1, total_steps=10)]),
    lambda o: tls.ChainedScheduler([tls.ExponentialLR(o, 0.9), tls.SequentialLR(o, [tls.ConstantLR(o, 0.5, 3), tls.ExponentialLR(o, 0.9)], [5])]),
], ids=["LambdaLR", "MultiplicativeLR", "CyclicLR-custom-fn", "Chained-cosine-eta_min",
        "Chained-onecycle", "Chained-sequential"])
def test_unrepresentable_schedulers_raise_type_error(make):
    params = [torch.nn.Parameter(torch.zeros(1))]
    opt = torch.optim.SGD(params, lr=0.1, momentum=0.9)
    scheduler = make(opt)
    with pytest.raises(TypeError, match=r"\S"):
        S.from_torch(scheduler)


NESTS = {
    # nest, its first part alone, milestone, its second part alone
    "Sequential-of-chained": (
        lambda o: tls.SequentialLR(o, [tls.ChainedScheduler([tls.LinearLR(o, 0.1, 1.0, 10), tls.ExponentialLR(o, 0.99)]), tls.CosineAnnealingLR(o, 100, 1e-3)], milestones=[50]),
        lambda o: tls.ChainedScheduler([tls.LinearLR(o, 0.1, 1.0, 10), tls.ExponentialLR(o, 0.99)]),
        50, lambda o: tls.CosineAnnealingLR(o, 100, 1e-3)),
    "Sequential-of-sequential": (
        lambda o: tls.SequentialLR(o, [tls.SequentialLR(o, [tls.ConstantLR(o, 0.3, 5), tls.LinearLR(o, 0.5, 1.0, 20)], milestones=[10]), tls.StepLR(o, 25, 0.5)], milestones=[60]),
        lambda o: tls.SequentialLR(o, [tls.ConstantLR(o, 0.3, 5), tls.LinearLR(o, 0.5, 1.0, 20)], milestones=[10]),
        60, lambda o: tls.StepLR(o, 25, 0.5)),
}


@pytest.mark.parametrize("case", sorted(NESTS))
def test_nested_sequential_follows_sequential_semantics(case, backend):
    """Nests are checked against their parts, each driven alone in torch and
    joined as SequentialLR documents; torch's own nested stepping is one step
    out of phase, which from_torch warns about."""
    nest, first, milestone, second = NESTS[case]
    base = [0.1, 0.03]
    steps = 200
    _, head = torch_lr_trajectory(first, base, milestone)
    _, tail = torch_lr_trajectory(second, base, steps - milestone)
    nested, _ = torch_lr_trajectory(nest, base, 1)
    with pytest.warns(UserWarning, match="out of phase"):
        schedule = S.from_torch(nested)
    actual = schedule.values(range(steps), S.torch_base_lrs(nested), backend=backend)
    assert_close(actual, torch.cat([head, tail]), rtol=1e-11)


def test_from_torch_rejects_non_schedulers():
    with pytest.raises(TypeError, match="cannot convert"):
        S.from_torch(object())
