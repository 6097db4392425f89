"""Momentum (SGD), beta1 (AdamW) and weight decay following their own schedules
from the optimizer's step counter. Oracles: torch.optim driven by OneCycleLR /
CyclicLR with cycle_momentum (which rewrite group['momentum'] / betas[0] every
step), and torch.optim with group['weight_decay'] set on the host each step
from a closed-form formula."""
import warnings

import pytest
import torch
from torch.optim import lr_scheduler as tls

import fusedlr
from fusedlr import schedules as S
from optim_oracle import clone_params, device_for, grads_for_step, make_params, max_relative_error, set_grads
from torch_oracle import assert_close

STEPS = 120


def _torch_momentum(group, kind):
    return group["momentum"] if kind == "sgd" else group["betas"][0]


MOMENTUM_SCHEDULERS = {
    "one-cycle-cos": lambda o: tls.OneCycleLR(o, max_lr=0.05, total_steps=STEPS, base_momentum=0.8,
                                              max_momentum=0.95),
    "one-cycle-linear-3phase": lambda o: tls.OneCycleLR(o, max_lr=0.05, total_steps=STEPS, pct_start=0.25,
                                                        anneal_strategy="linear", three_phase=True),
    "cyclic-triangular": lambda o: tls.CyclicLR(o, 0.005, 0.05, step_size_up=13, step_size_down=29),
    "cyclic-triangular2": lambda o: tls.CyclicLR(o, 0.005, 0.05, step_size_up=11, mode="triangular2",
                                                 base_momentum=0.7, max_momentum=0.92),
    "cyclic-exp-range": lambda o: tls.CyclicLR(o, 0.005, 0.05, step_size_up=17, mode="exp_range", gamma=0.99),
}

TORCH_OPTIMIZERS = {
    "sgd": (lambda ps: torch.optim.SGD(ps, lr=0.01, momentum=0.9, nesterov=True, weight_decay=1e-3),
            lambda ps, lr=0.01, **kw: fusedlr.SGD(ps, lr=lr, momentum=0.9, nesterov=True, weight_decay=1e-3, **kw),
            "momentum_schedule"),
    "adamw": (lambda ps: torch.optim.AdamW(ps, lr=0.01, amsgrad=True),
              lambda ps, lr=0.01, **kw: fusedlr.AdamW(ps, lr=lr, amsgrad=True, **kw), "beta1_schedule"),
    "adam": (lambda ps: torch.optim.Adam(ps, lr=0.01, weight_decay=1e-2),
             lambda ps, lr=0.01, **kw: fusedlr.Adam(ps, lr=lr, weight_decay=1e-2, **kw), "beta1_schedule"),
}


def _lockstep(torch_opt, fused_opt, tp, fp, base, steps, before_step=None, scheduler=None):
    """Steps both optimizers on the same grads (and the torch scheduler after
    torch's step); before_step(t) runs first (host edits, recording)."""
    for step in range(steps):
        if before_step is not None:
            before_step(step)
        grads = grads_for_step(base, step)
        set_grads(tp, grads)
        set_grads(fp, grads)
        torch_opt.step()
        if scheduler is not None:
            scheduler.step()
        fused_opt.step()


@pytest.mark.parametrize("name", sorted(MOMENTUM_SCHEDULERS))
@pytest.mark.parametrize("kind", sorted(TORCH_OPTIMIZERS))
def test_cycled_momentum_matches_torch(kind, name, backend):
    make_torch, make_fused, key = TORCH_OPTIMIZERS[kind]
    base = make_params()
    tp, fp = clone_params(base), clone_params(base, device_for(backend))
    torch_opt = make_torch(tp)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sched = MOMENTUM_SCHEDULERS[name](torch_opt)
    fused_opt = make_fused(fp, lr=S.torch_base_lrs(sched)[0], schedule=S.from_torch(sched), backend=backend,
                           **{key: S.from_torch(sched, "momentum")})
    momenta = []

    def record(step):
        momenta.append(_torch_momentum(torch_opt.param_groups[0], kind))

    _lockstep(torch_opt, fused_opt, tp, fp, base, STEPS, record, sched)
    assert max_relative_error(tp, fp) < 1e-5
    # and the momentum values themselves, in double
    momentum_schedule = fused_opt.param_groups[0][key]
    assert len(set(momenta)) > 10  # the oracle really cycles
    assert_close(momentum_schedule.values(range(STEPS), 0.9)[:, 0], torch.tensor(momenta, dtype=torch.float64))


def test_momentum_helpers_match_torch_cycles():
    params = [torch.nn.Parameter(torch.zeros(1))]
    opt = torch.optim.SGD(params, lr=0.01, momentum=0.9)
    one_cycle = tls.OneCycleLR(opt, max_lr=0.1, total_steps=200, pct_start=0.2, base_momentum=0.75,
                               max_momentum=0.93, three_phase=True)
    momenta = []
    for _ in range(200):
        momenta.append(opt.param_groups[0]["momentum"])
        opt.step()
        one_cycle.step()
    mine = S.one_cycle_momentum(200, 0.75, 0.93, pct_start=0.2, three_phase=True)
    for backend in ("reference", "cpu"):
        assert_close(mine.values(range(200), backend=backend)[:, 0], torch.tensor(momenta, dtype=torch.float64))

    opt = torch.optim.SGD(params, lr=0.01, momentum=0.9)
    cyclic = tls.CyclicLR(opt, 0.01, 0.1, step_size_up=7, step_size_down=12, mode="triangular2",
                          base_momentum=0.81, max_momentum=0.97)
    momenta = []
    for _ in range(200):
        momenta.append(opt.param_groups[0]["momentum"])
        opt.step()
        cyclic.step()
    mine = S.cyclic_momentum(0.81, 0.97, step_size_up=7, step_size_down=12, mode="triangular2")
    for backend in ("reference", "cpu"):
        assert_close(mine.values(range(200), backend=backend)[:, 0], torch.tensor(momenta, dtype=torch.float64))


def _increasing_weight_decay(t):
    """weight decay factor 1 -> 4 linearly over 60 steps, then held (closed form)."""
    return 1.0 + 3.0 * min(t, 60) / 60


@pytest.mark.parametrize("kind", sorted(TORCH_OPTIMIZERS))
def test_weight_decay_schedule_matches_host_edited_torch(kind, backend):
    make_torch, make_fused, _ = TORCH_OPTIMIZERS[kind]
    base = make_params()
    tp, fp = clone_params(base), clone_params(base, device_for(backend))
    torch_opt = make_torch(tp)
    wd0 = torch_opt.param_groups[0]["weight_decay"]
    fused_opt = make_fused(fp, backend=backend, weight_decay_schedule=S.Anneal(1.0, 4.0, 60))

    def set_weight_decay(step):
        torch_opt.param_groups[0]["weight_decay"] = wd0 * _increasing_weight_decay(step)

    _lockstep(torch_opt, fused_opt, tp, fp, base, STEPS, set_weight_decay)
    assert max_relative_error(tp, fp) < 1e-5


def test_weight_decay_proportional_to_lr(backend):
    """The lr schedule reused as the weight-decay schedule: wd_t = wd * lr_t / lr,
    against torch with the decay set from its scheduler's lr on the host."""
    base = make_params()
    tp, fp = clone_params(base), clone_params(base, device_for(backend))
    torch_opt = torch.optim.AdamW(tp, lr=0.01, weight_decay=0.1)
    sched = tls.SequentialLR(torch_opt, [tls.LinearLR(torch_opt, 0.1, 1.0, 10), tls.CosineAnnealingLR(torch_opt, 90)],
                             milestones=[10])
    schedule = S.from_torch(sched)
    fused_opt = fusedlr.AdamW(fp, lr=0.01, weight_decay=0.1, schedule=schedule, weight_decay_schedule=schedule,
                              backend=backend)
    def decay_with_lr(step):
        torch_opt.param_groups[0]["weight_decay"] = 0.1 * torch_opt.param_groups[0]["lr"] / 0.01

    _lockstep(torch_opt, fused_opt, tp, fp, base, STEPS, decay_with_lr, sched)
    assert max_relative_error(tp, fp) < 1e-5


def test_skipped_steps_advance_no_schedule_and_are_flagged(backend):
    """A GradScaler-skipped step (found_inf) moves neither the params nor the lr,
    momentum or weight-decay schedules: the run equals one without that step."""
    device = device_for(backend)
    base = make_params()
    schedules = dict(schedule=S.with_warmup(S.Cosine(40), 5), momentum_schedule=S.one_cycle_momentum(40),
                     weight_decay_schedule=S.Anneal(1.0, 5.0, 40))
    skipping_params, plain_params = clone_params(base, device), clone_params(base, device)
    skipping = fusedlr.SGD(skipping_params, lr=0.05, momentum=0.9, weight_decay=1e-2, backend=backend, **schedules)
    plain = fusedlr.SGD(plain_params, lr=0.05, momentum=0.9, weight_decay=1e-2, backend=backend, **schedules)
    applied = []
    for step in range(30):
        grads = grads_for_step(base, step)
        set_grads(skipping_params, grads)
        skip = step in (4, 5, 17)
        skipping.grad_scale = torch.ones((), device=device)
        skipping.found_inf = torch.full((), float(skip), device=device)
        skipping.step()
        applied.append(bool(skipping.last_step_applied))
        if not skip:
            set_grads(plain_params, grads)
            plain.step()
    assert applied == [step not in (4, 5, 17) for step in range(30)]
    assert int(skipping.step_count) == int(plain.step_count) == 27
    for a, b in zip(skipping_params, plain_params):
        assert torch.equal(a, b)


def test_hyperparameter_schedules_survive_a_checkpoint(backend):
    device = device_for(backend)
    base = make_params()
    schedules = dict(beta1_schedule=S.one_cycle_momentum(50), weight_decay_schedule=S.Cosine(50))
    first, second = clone_params(base, device), clone_params(base, device)
    uninterrupted = fusedlr.AdamW(first, lr=1e-2, backend=backend, **schedules)
    resumed = fusedlr.AdamW(second, lr=1e-2, backend=backend, **schedules)
    for step in range(40):
        grads = grads_for_step(base, step)
        set_grads(first, grads)
        uninterrupted.step()
        set_grads(second, grads)
        resumed.step()
        if step == 19:
            saved = resumed.state_dict()
            resumed = fusedlr.AdamW(second, lr=1e-2, backend=backend)  # no schedules: the checkpoint has them
            resumed.load_state_dict(saved)
    for a, b in zip(first, second):
        assert torch.equal(a, b)


@pytest.mark.parametrize("make, error, match", [
    (lambda ps: fusedlr.SGD(ps, momentum=0.9, momentum_schedule=0.5), TypeError, "momentum_schedule must be"),
    (lambda ps: fusedlr.AdamW(ps, weight_decay_schedule="cosine"), TypeError, "weight_decay_schedule must be"),
    (lambda ps: fusedlr.AdamW(ps, beta1_schedule=S.PerGroup([S.Constant(), S.Constant()])), ValueError,
     "beta1_schedule is written for 2 param groups"),
    (lambda ps: fusedlr.SGD(ps, nesterov=True), ValueError, "momentum > 0"),
    (lambda ps: S.from_torch(tls.StepLR(torch.optim.SGD(ps, lr=0.1, momentum=0.9), 3), "momentum"), TypeError,
     "does not cycle momentum"),
    (lambda ps: S.from_torch(tls.StepLR(torch.optim.SGD(ps, lr=0.1), 3), "beta2"), ValueError,
     "hyperparameter must be"),
    (lambda ps: S.one_cycle_momentum(10, base_momentum=-0.1), ValueError, "base_momentum"),
])
def test_bad_hyperparameter_schedules_are_refused(make, error, match):
    with pytest.raises(error, match=match):
        make([torch.nn.Parameter(torch.zeros(3))])


def test_nesterov_with_only_a_momentum_schedule_is_accepted():
    opt = fusedlr.SGD([torch.nn.Parameter(torch.zeros(3))], nesterov=True,
                      momentum_schedule=S.one_cycle_momentum(10))
    assert "momentum_buffer" in opt.state[opt.param_groups[0]["params"][0]]
