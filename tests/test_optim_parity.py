"""fusedlr.SGD / Adam / AdamW against torch.optim.SGD / Adam / AdamW stepped together
with the equivalent torch scheduler: same parameters after hundreds of steps,
for the option grid, several param groups and params that miss grads."""
import itertools

import pytest
import torch
from torch.optim import lr_scheduler as tls

import fusedlr
from optim_oracle import max_relative_error, run_side_by_side

STEPS = 200
RTOL = 1e-5

SCHEDULERS = {
    "warmup-cosine": lambda o: tls.SequentialLR(o, [tls.LinearLR(o, 0.1, 1.0, 20), tls.CosineAnnealingLR(o, 180)],
                                                milestones=[20]),
    "onecycle": lambda o: tls.OneCycleLR(o, max_lr=[g["lr"] * 2 for g in o.param_groups], total_steps=STEPS,
                                         cycle_momentum=False),
    "step": lambda o: tls.StepLR(o, 30, 0.5),
    "none": None,
}


def _sgd_options():
    for momentum, dampening, nesterov, weight_decay, maximize in itertools.product(
            [0.0, 0.9], [0.0, 0.3], [False, True], [0.0, 1e-2], [False, True]):
        if nesterov and (momentum == 0 or dampening != 0):
            continue
        yield dict(momentum=momentum, dampening=dampening, nesterov=nesterov, weight_decay=weight_decay,
                   maximize=maximize)


SGD_CASES = list(_sgd_options())


@pytest.mark.parametrize("options", SGD_CASES, ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()))
def test_sgd_matches_torch(options, backend):
    schedule = ["warmup-cosine", "step", "onecycle"][SGD_CASES.index(options) % 3]
    groups = [dict(options, lr=0.05), dict(options, lr=0.01)]
    tp, fp, _, f_opt = run_side_by_side(torch.optim.SGD, fusedlr.SGD, groups, SCHEDULERS[schedule], STEPS, backend)
    assert max_relative_error(tp, fp) < RTOL
    assert int(f_opt.step_count) == STEPS


ADAM_CASES = [
    dict(amsgrad=amsgrad, weight_decay=wd, maximize=maximize, betas=betas, eps=eps)
    for amsgrad, wd, maximize, (betas, eps) in itertools.product(
        [False, True], [0.0, 0.1], [False, True], [((0.9, 0.999), 1e-8), ((0.8, 0.95), 1e-6)])
]
#: torch.optim.AdamW (decoupled weight decay) and torch.optim.Adam (weight decay as an L2 term on the grad)
ADAM_FAMILY = {"adamw": (torch.optim.AdamW, fusedlr.AdamW, 0), "adam": (torch.optim.Adam, fusedlr.Adam, 1)}


@pytest.mark.parametrize("options", ADAM_CASES, ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()))
@pytest.mark.parametrize("name", sorted(ADAM_FAMILY))
def test_adam_family_matches_torch(name, options, backend):
    torch_cls, fused_cls, offset = ADAM_FAMILY[name]
    schedule = ["step", "warmup-cosine", "onecycle", "none"][(ADAM_CASES.index(options) + offset) % 4]
    groups = [dict(options, lr=3e-3), dict(options, lr=1e-3, weight_decay=0.05)]
    tp, fp, t_opt, f_opt = run_side_by_side(torch_cls, fused_cls, groups, SCHEDULERS[schedule], STEPS, backend)
    assert max_relative_error(tp, fp) < RTOL
    # optimizer state follows torch's too
    for p_t, p_f in zip(tp, fp):
        for key in ("exp_avg", "exp_avg_sq") + (("max_exp_avg_sq",) if options["amsgrad"] else ()):
            assert max_relative_error([t_opt.state[p_t][key]], [f_opt.state[p_f][key]]) < RTOL
        assert int(f_opt.state[p_f]["step"]) == int(t_opt.state[p_t]["step"])


def test_groups_with_different_modes_and_schedules(backend):
    """Groups differing in nesterov/maximize land in separate kernel buckets;
    a per-group schedule overrides the optimizer's."""
    groups = [dict(lr=0.05, momentum=0.9, nesterov=True), dict(lr=0.02, momentum=0.5, maximize=True),
              dict(lr=0.01, momentum=0.0, weight_decay=1e-3)]
    tp, fp, _, _ = run_side_by_side(torch.optim.SGD, fusedlr.SGD, groups, SCHEDULERS["warmup-cosine"], STEPS, backend)
    assert max_relative_error(tp, fp) < RTOL


def test_float64_params_match_torch_closely(backend):
    groups = [dict(lr=1e-2, amsgrad=True)]
    tp, fp, _, _ = run_side_by_side(torch.optim.AdamW, fusedlr.AdamW, groups, SCHEDULERS["warmup-cosine"], STEPS,
                                    backend, dtype=torch.float64)
    assert max_relative_error(tp, fp) < 1e-11


def test_current_lr_follows_the_torch_scheduler(backend):
    param = torch.nn.Parameter(torch.zeros(3))
    t_opt = torch.optim.SGD([{"params": [torch.nn.Parameter(torch.zeros(1))], "lr": 0.1},
                             {"params": [torch.nn.Parameter(torch.zeros(1))], "lr": 0.02}])
    sched = SCHEDULERS["onecycle"](t_opt)
    f_opt = fusedlr.SGD([{"params": [param], "lr": 0.1}, {"params": [torch.nn.Parameter(torch.zeros(1))], "lr": 0.02}],
                        schedule=fusedlr.schedules.from_torch(sched), backend=backend)
    for _ in range(50):
        expected = [g["lr"] for g in t_opt.param_groups]
        assert torch.allclose(f_opt.current_lr, torch.tensor(expected, dtype=torch.float64), rtol=1e-12)
        t_opt.step()
        sched.step()
        param.grad = torch.ones(3)
        f_opt.step()
