"""SchedulerView (a fusedlr optimizer's face as a torch LRScheduler) against a
torch scheduler on the same run, the refusal of a torch scheduler attached to
a scheduled fusedlr optimizer, and timm's lr_scale refused by name."""
import pytest
import torch

import fusedlr
from fusedlr import schedules as S
from optim_oracle import clone_params, grads_for_step, make_params, set_grads, split_groups

STEPS = 9
GROUPS = [dict(lr=0.1), dict(lr=0.02, weight_decay=0.0)]


def _warmup_linear(total, warmup):
    return lambda s: s / warmup if s < warmup else max(0.0, (total - s) / (total - warmup))


def _step_both(base, step, tp, fp, t_opt, f_opt):
    grads = grads_for_step(base, step)
    set_grads(tp, grads)
    set_grads(fp, grads)
    t_opt.step()
    f_opt.step()


def test_view_reports_what_the_torch_scheduler_reports(backend):
    """Queried between opt.step() and sched.step() (where HF Trainer logs) and
    after both, get_last_lr() equals torch's, and the trajectories agree."""
    base = make_params()
    tp, fp = clone_params(base), clone_params(base)
    t_opt = torch.optim.AdamW(split_groups(tp, GROUPS))
    t_sched = torch.optim.lr_scheduler.LambdaLR(t_opt, _warmup_linear(STEPS, 3))
    f_opt = fusedlr.AdamW(split_groups(fp, GROUPS), schedule=S.get_scheduler("linear", 3, STEPS), backend=backend)
    view = fusedlr.SchedulerView(f_opt)
    assert view.get_last_lr() == pytest.approx(t_sched.get_last_lr(), rel=1e-12)
    for step in range(STEPS):
        _step_both(base, step, tp, fp, t_opt, f_opt)
        assert view.get_last_lr() == pytest.approx(t_sched.get_last_lr(), rel=1e-12, abs=1e-15)
        t_sched.step()
        view.step()
        assert view.get_last_lr() == pytest.approx(t_sched.get_last_lr(), rel=1e-12, abs=1e-15)
        assert view.last_epoch == t_sched.last_epoch
    for a, b in zip(tp, fp):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)


def test_view_never_touches_the_groups():
    p = torch.nn.Parameter(torch.ones(4))
    opt = fusedlr.SGD([p], lr=0.5, schedule=S.Anneal(1.0, 0.0, 4))
    view = fusedlr.SchedulerView(opt)
    assert isinstance(view, torch.optim.lr_scheduler.LRScheduler)
    for _ in range(3):
        p.grad = torch.ones(4)
        opt.step()
        view.step()
    group = opt.param_groups[0]
    assert group["lr"] == 0.5 and "initial_lr" not in group
    assert view.base_lrs == [0.5]
    assert view.get_last_lr() == pytest.approx([0.5 * (1 - 3 / 4)])
    restored = fusedlr.SchedulerView(opt)
    restored.load_state_dict(view.state_dict())
    assert restored.last_epoch == 3
    with pytest.raises(ValueError, match="takes no epoch"):
        view.step(5)
    with pytest.raises(TypeError, match="fusedlr optimizer"):
        fusedlr.SchedulerView(torch.optim.SGD([p], lr=0.1))


def test_torch_scheduler_on_a_scheduled_optimizer_is_refused(backend):
    """The double scheduling HF Trainer's default path produced: refused at the
    first step, nothing updated."""
    p = torch.nn.Parameter(torch.ones(4))
    opt = fusedlr.AdamW([p], lr=1e-3, schedule=S.with_warmup(S.Constant(), 10), backend=backend)
    torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, s / 10))
    p.grad = torch.ones(4)
    with pytest.raises(RuntimeError, match=r"param_groups\[0\] has 'initial_lr'.*SchedulerView"):
        opt.step()
    assert torch.equal(p.detach(), torch.ones(4))


def test_torch_scheduler_drives_an_unscheduled_optimizer_like_torch(backend):
    """Without schedule=, group['lr'] written by a torch scheduler is the lr (as in torch)."""
    base = make_params()
    tp, fp = clone_params(base), clone_params(base)
    t_opt = torch.optim.AdamW(split_groups(tp, GROUPS))
    f_opt = fusedlr.AdamW(split_groups(fp, GROUPS), backend=backend)
    scheds = [torch.optim.lr_scheduler.LambdaLR(o, _warmup_linear(STEPS, 3)) for o in (t_opt, f_opt)]
    for step in range(STEPS):
        _step_both(base, step, tp, fp, t_opt, f_opt)
        for s in scheds:
            s.step()
    for a, b in zip(tp, fp):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)


def test_torch_checkpoint_with_initial_lr_loads_into_a_scheduled_optimizer():
    params = [torch.nn.Parameter(torch.ones(3))]
    t_opt = torch.optim.AdamW(params, lr=0.01)
    torch.optim.lr_scheduler.LambdaLR(t_opt, lambda s: 0.5)
    params[0].grad = torch.ones(3)
    t_opt.step()
    f_opt = fusedlr.AdamW([torch.nn.Parameter(torch.ones(3))], lr=0.01, schedule=S.Anneal(1.0, 0.1, 5))
    f_opt.load_state_dict(t_opt.state_dict())
    assert f_opt.param_groups[0]["lr"] == 0.01 and "initial_lr" not in f_opt.param_groups[0]
    f_opt.param_groups[0]["params"][0].grad = torch.ones(3)
    f_opt.step()  # not refused: no torch scheduler is attached


def test_timm_lr_scale_is_refused_by_name():
    p = torch.nn.Parameter(torch.ones(3))
    with pytest.raises(ValueError, match=r"param_groups\[1\]: lr_scale=0.75"):
        fusedlr.AdamW([{"params": [torch.nn.Parameter(torch.ones(2))]}, {"params": [p], "lr_scale": 0.75}], lr=0.1)
    fusedlr.AdamW([{"params": [p], "lr_scale": 1.0}], lr=0.1)
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))
    groups = fusedlr.layer_decay_param_groups(model.named_parameters(), lr=0.1, layer_decay=0.5, num_layers=2)
    fusedlr.AdamW(groups, lr=0.1)  # fusedlr's own layer-decay groups fold the scale into the lr


def test_view_after_a_gradscaler_skip():
    """Between opt.step() and view.step(): the lr that step used (or, skipped, would have used)."""
    p = torch.nn.Parameter(torch.ones(3))
    opt = fusedlr.SGD([p], lr=1.0, schedule=S.Anneal(1.0, 0.0, 10))
    view = fusedlr.SchedulerView(opt)
    for step in range(4):
        p.grad = torch.ones(3)
        skipped = step == 2
        if skipped:
            opt.grad_scale, opt.found_inf = torch.ones(1), torch.ones(1)
        opt.step()
        if skipped:
            del opt.grad_scale, opt.found_inf
        counted = step - (step > 2)  # the schedule step this step ran at
        assert view.get_last_lr() == pytest.approx([1.0 - counted / 10])
        view.step()
