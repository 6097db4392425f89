"""Bad parameters raise ValueError/TypeError at construction, naming the
argument and the allowed range."""
import pytest
import torch

import fusedlr
from fusedlr import schedules as S

BAD = [
    (lambda: S.Step(0), ValueError, r"step_size must be an int >= 1"),
    (lambda: S.Step(-3), ValueError, r"step_size"),
    (lambda: S.Step(2.5), TypeError, r"step_size must be an int"),
    (lambda: S.Step(10, gamma=0), ValueError, r"gamma must be in \(0"),
    (lambda: S.Step(10, gamma=-0.5), ValueError, r"gamma"),
    (lambda: S.MultiStep([], 0.1), ValueError, r"milestones must not be empty"),
    (lambda: S.MultiStep([10, 20], 0.0), ValueError, r"gamma"),
    (lambda: S.MultiStep([10, -2]), ValueError, r"milestones\[1\] must be an int >= 0"),
    (lambda: S.Piecewise([10, 10], [1, 0.5, 0.1]), ValueError, r"boundaries must be strictly increasing"),
    (lambda: S.Piecewise([20, 10], [1, 0.5, 0.1]), ValueError, r"strictly increasing"),
    (lambda: S.Piecewise([10], [1.0]), ValueError, r"factors must have len\(boundaries\) \+ 1"),
    (lambda: S.Piecewise.from_scales({}), ValueError, r"boundaries_and_scales must not be empty"),
    (lambda: S.Exponential(0.0), ValueError, r"gamma must be in \(0"),
    (lambda: S.Exponential(float("nan")), ValueError, r"gamma must be finite"),
    (lambda: S.Exponential(0.9, end_factor=2.0), ValueError, r"end_factor must be <= 1"),
    (lambda: S.Exponential(0.9, transition_steps=0), ValueError, r"transition_steps"),
    (lambda: S.Linear(start_factor=1.5), ValueError, r"start_factor must be in \[0, 1\]"),
    (lambda: S.Linear(total_iters=0), ValueError, r"total_iters must be an int >= 1"),
    (lambda: S.Constant(-1.0), ValueError, r"factor must be in \[0"),
    (lambda: S.Anneal(0.0, 1.0, 10, "exponential"), ValueError, r"start_factor > 0"),
    (lambda: S.Anneal(0.1, 1.0, 10, "quadratic"), ValueError, r"shape must be one of"),
    (lambda: S.Polynomial(0), ValueError, r"total_iters"),
    (lambda: S.Polynomial(10, power=-1), ValueError, r"power must be in \[0"),
    (lambda: S.Cosine(0), ValueError, r"T_max must be in \(0"),
    (lambda: S.Cosine(10, eta_min=-1e-3), ValueError, r"eta_min"),
    (lambda: S.Cosine(10, alpha=1.5), ValueError, r"alpha must be in \[0, 1\]"),
    (lambda: S.CosineRestarts(0), ValueError, r"T_0"),
    (lambda: S.CosineRestarts(10, T_mult=0.5), ValueError, r"T_mult must be in \[1"),
    (lambda: S.CosineRestarts(10, cycle_decay=0), ValueError, r"cycle_decay must be in \(0, 1\]"),
    (lambda: S.CosineRestarts(10, cycle_limit=-1), ValueError, r"cycle_limit"),
    (lambda: S.InverseSqrt(0), ValueError, r"timescale"),
    (lambda: S.InverseTime(-1.0), ValueError, r"decay_rate"),
    (lambda: S.OneCycle(0.0, 100), ValueError, r"max_lr must be in \(0"),
    (lambda: S.OneCycle(0.1, 0), ValueError, r"total_steps must be an int >= 1"),
    (lambda: S.OneCycle(0.1, 100, pct_start=1.5), ValueError, r"pct_start must be in \[0, 1\]"),
    (lambda: S.OneCycle(0.1, 100, pct_start=0.01), ValueError, r"phase of the cycle with no steps"),
    (lambda: S.OneCycle(0.1, 100, anneal_strategy="exp"), ValueError, r"anneal_strategy must be one of"),
    (lambda: S.OneCycle([0.1, 0.2], 100), TypeError, r"PerGroup"),
    (lambda: S.Cyclic(0.1, step_size_up=0), ValueError, r"step_size_up"),
    (lambda: S.Cyclic(0.1, mode="sine"), ValueError, r"mode must be one of"),
    (lambda: S.Cyclic(0.1, gamma=0), ValueError, r"gamma"),
    (lambda: S.RangeTest(end_lr=0), ValueError, r"end_lr"),
    (lambda: S.RangeTest(num_iter=0), ValueError, r"num_iter"),
    (lambda: S.Sequential([S.Constant()], [10]), ValueError, r"milestones must have len\(schedules\) - 1"),
    (lambda: S.Sequential([S.Constant(), S.Constant(), S.Constant()], [10, 5]), ValueError, r"strictly increasing"),
    (lambda: S.Sequential([], []), ValueError, r"schedules must hold at least one"),
    (lambda: S.Sequential([S.Constant(), "cosine"], [3]), TypeError, r"schedules\[1\] must be a fusedlr schedule"),
    (lambda: S.Chain([]), ValueError, r"at least one"),
    (lambda: S.PerGroup([S.PerGroup([S.Constant()])]), ValueError, r"per-group"),
    (lambda: S.with_warmup(S.Cosine(10), -1), ValueError, r"warmup_steps"),
    (lambda: S.with_warmup(S.Cosine(10), 5, "sigmoid"), ValueError, r"warmup kind must be one of"),
    (lambda: S.with_warmup(S.Cosine(10), 5, "exponential"), ValueError, r"start_factor in \(0, 1\]"),
    (lambda: S.with_warmup("cosine", 5), TypeError, r"schedule must be a fusedlr schedule"),
    (lambda: S.get_scheduler("cosine", 100, 50), ValueError, r"num_warmup_steps \(100\) must be < num_training_steps"),
    (lambda: S.get_scheduler("linear", 10), ValueError, r"requires num_training_steps"),
    (lambda: S.get_scheduler("sigmoid", 10, 100), ValueError, r"name must be one of"),
    (lambda: S.get_scheduler("cosine", 10, 100, power=2), TypeError, r"unexpected arguments"),
    (lambda: S.get_scheduler("cosine_with_min_lr", 10, 100), ValueError, r"exactly one of min_lr and min_lr_rate"),
    (lambda: S.get_scheduler("reduce_lr_on_plateau", factor=1.5), ValueError, r"factor must be in \[0, 1\)"),
    (lambda: S.warmup_stable_decay(50, 60, num_training_steps=100), ValueError, r"must be\s+<= num_training_steps"),
    (lambda: S.warmup_stable_decay(10, 20), ValueError, r"num_training_steps or num_stable_steps"),
    (lambda: S.noam(0, 10), ValueError, r"d_model"),
]


@pytest.mark.parametrize("make,error,message", BAD, ids=[f"bad{i}" for i in range(len(BAD))])
def test_bad_parameters_raise_at_construction(make, error, message):
    with pytest.raises(error, match=message):
        make()


@pytest.mark.parametrize("schedule,base_lrs,message", [
    (S.Cosine(100, eta_min=0.1), [0.05], r"eta_min \+ alpha \* lr \(0.1\) must be <= the base lr of group 0"),
    (S.CosineRestarts(10, eta_min=0.1), [1.0, 0.01], r"group 1"),
    (S.Polynomial(100, end_lr=1.0), [0.1], r"end_lr"),
    (S.Cyclic(0.1), [0.5], r"max_lr \(0.1\) must be >= the base lr"),
    (S.PerGroup([S.Constant(), S.Constant()]), [0.1], r"written for 2 param groups but got 1"),
    (S.Cosine(10), [], r"at least one"),
    (S.Cosine(10), [-0.1], r"base_lrs\[0\] must be a finite lr >= 0"),
    (S.Cosine(10), [float("nan")], r"base_lrs\[0\]"),
])
def test_base_lr_dependent_checks_raise_before_any_kernel(schedule, base_lrs, message):
    for backend in ("reference", "cpu"):
        with pytest.raises(ValueError, match=message):
            schedule.values([0, 1], base_lrs, backend=backend)


def test_bad_steps_and_backends():
    schedule = S.Cosine(10)
    with pytest.raises(ValueError, match="steps must be >= 0"):
        schedule.values([-1, 2], [0.1])
    with pytest.raises(TypeError, match="steps must hold integers"):
        schedule.values(torch.tensor([0.5]), [0.1])
    with pytest.raises(ValueError, match=r"backend must be one of \('reference', 'cpu', 'cuda', 'emulated'\)"):
        schedule.values([0], [0.1], backend="tpu")


@pytest.mark.skipif("cuda" in fusedlr.available_backends(), reason="a CUDA device is present")
def test_cuda_backend_without_a_gpu_gives_a_clear_error():
    with pytest.raises(RuntimeError, match="CUDA backend is unavailable: .+"):
        S.Cosine(10).values([0], [0.1], backend="cuda")


def test_deeply_nested_chains_and_sequences_evaluate_like_the_reference():
    """The native evaluator walks the tree without a stack, so nesting depth is
    limited only at construction (64)."""
    schedule = S.Constant(0.5)
    for depth in range(30):
        inner = S.Chain([schedule, S.Exponential(0.99)]) if depth % 2 else S.Sequential([schedule, S.Step(3, 0.9)], [7])
        schedule = S.Chain([S.Constant(1.0, 2), inner, S.Linear(0.5, 1.0, 9)])
    steps = list(range(0, 400, 7))
    torch.testing.assert_close(schedule.values(steps, [0.1, 0.3], backend="cpu"),
                               schedule.values(steps, [0.1, 0.3]), rtol=1e-12, atol=0)


def test_nonsense_steps_do_not_reach_kernels_and_state_is_untouched():
    schedule = S.with_warmup(S.Cosine(50), 5)
    before = schedule.pack().clone()
    with pytest.raises(ValueError):
        schedule.values([3, -7], [0.1], backend="cpu")
    assert torch.equal(schedule.pack(), before)
