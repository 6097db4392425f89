"""Checkpoints: fusedlr state_dicts resume bit-identically; torch.optim state_dicts
load into fusedlr (and back) so a run can migrate."""
import io

import pytest
import torch
from torch.optim import lr_scheduler as tls

import fusedlr
from fusedlr import schedules as S
from optim_oracle import clone_params, device_for, grads_for_step, make_params, max_relative_error, set_grads

SCHEDULE = S.with_warmup(S.Cosine(60, eta_min=1e-4), 10)
OPTIMIZERS = {
    "sgd": lambda ps, backend: fusedlr.SGD(ps, lr=0.05, momentum=0.9, nesterov=True, schedule=SCHEDULE, backend=backend),
    "adamw": lambda ps, backend: fusedlr.AdamW(ps, lr=1e-2, amsgrad=True, schedule=SCHEDULE, backend=backend),
    "adam": lambda ps, backend: fusedlr.Adam(ps, lr=1e-2, weight_decay=0.1, schedule=SCHEDULE, backend=backend),
}


def _run(opt, params, base, steps, first=0):
    for step in range(first, first + steps):
        set_grads(params, grads_for_step(base, step))
        opt.step()


def _step_together(base, steps, t_params, t_step, f_params, f_step):
    """Torch and fusedlr stepped on the same grads; ``t_step`` may step a scheduler too."""
    for step in steps:
        for params in (t_params, f_params):
            set_grads(params, grads_for_step(base, step))
        t_step()
        f_step()


def _through_bytes(state_dict):
    buffer = io.BytesIO()
    torch.save(state_dict, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_resume_from_a_checkpoint_is_bit_identical(name, backend):
    base = make_params()
    straight = clone_params(base, device_for(backend))
    opt = OPTIMIZERS[name](straight, backend)
    _run(opt, straight, base, 80)

    first_half = clone_params(base, device_for(backend))
    opt_a = OPTIMIZERS[name](first_half, backend)
    _run(opt_a, first_half, base, 40)
    saved_params = _through_bytes([p.detach() for p in first_half])
    saved_state = _through_bytes(opt_a.state_dict())
    del opt_a

    resumed = clone_params(saved_params, device_for(backend))
    opt_b = OPTIMIZERS[name](resumed, backend)
    opt_b.load_state_dict(saved_state)
    assert int(opt_b.step_count) == 40
    _run(opt_b, resumed, base, 40, first=40)
    assert all(torch.equal(a, b) for a, b in zip(straight, resumed))
    assert torch.equal(opt.current_lr, opt_b.current_lr)


def _torch_run(steps):
    base = make_params()
    params = clone_params(base)
    opt = torch.optim.AdamW([{"params": params[:3], "lr": 1e-2}, {"params": params[3:], "lr": 3e-3}], amsgrad=True)
    make_sched = lambda o: tls.SequentialLR(o, [tls.LinearLR(o, 0.1, 1.0, 10), tls.CosineAnnealingLR(o, 60)],  # noqa: E731
                                            milestones=[10])
    sched = make_sched(opt)
    for step in range(steps):
        set_grads(params, grads_for_step(base, step))
        opt.step()
        sched.step()
    return base, params, opt, sched, make_sched


def test_torch_adamw_checkpoint_loads_into_fusedlr(backend):
    base, t_params, t_opt, t_sched, make_sched = _torch_run(30)
    f_params = clone_params(t_params, device_for(backend))
    # the schedule comes from an identical, freshly built torch scheduler
    template = torch.optim.AdamW([{"params": [torch.nn.Parameter(torch.zeros(1))], "lr": 1e-2},
                                  {"params": [torch.nn.Parameter(torch.zeros(1))], "lr": 3e-3}])
    f_opt = fusedlr.AdamW([{"params": f_params[:3], "lr": 1e-2}, {"params": f_params[3:], "lr": 3e-3}], amsgrad=True,
                          schedule=S.from_torch(make_sched(template)), backend=backend)
    f_opt.load_state_dict(_through_bytes(t_opt.state_dict()))
    assert int(f_opt.step_count) == 30
    assert [g["lr"] for g in f_opt.param_groups] == [1e-2, 3e-3]  # base lrs, from torch's initial_lr
    _step_together(base, range(30, 70), t_params, lambda: (t_opt.step(), t_sched.step()), f_params, f_opt.step)
    assert max_relative_error(t_params, f_params) < 1e-5


def test_fusedlr_checkpoint_loads_into_torch_adamw(backend):
    base = make_params()
    f_params = clone_params(base, device_for(backend))
    f_opt = fusedlr.AdamW(f_params, lr=1e-2, weight_decay=0.1, backend=backend)
    _run(f_opt, f_params, base, 25)
    t_params = clone_params(f_params)
    t_opt = torch.optim.AdamW(t_params, lr=1e-2, weight_decay=0.1)
    t_opt.load_state_dict(_through_bytes(f_opt.state_dict()))
    _step_together(base, range(25, 60), t_params, t_opt.step, f_params, f_opt.step)
    assert max_relative_error(t_params, f_params) < 1e-5


def test_torch_adam_checkpoint_loads_into_fusedlr_adam_and_back(backend):
    base = make_params()
    t_params = clone_params(base)
    t_opt = torch.optim.Adam(t_params, lr=1e-2, weight_decay=0.1, amsgrad=True)
    _run(t_opt, t_params, base, 20)
    f_params = clone_params(t_params, device_for(backend))
    f_opt = fusedlr.Adam(f_params, lr=1e-2, weight_decay=0.1, amsgrad=True, backend=backend)
    f_opt.load_state_dict(_through_bytes(t_opt.state_dict()))
    _step_together(base, range(20, 50), t_params, t_opt.step, f_params, f_opt.step)
    assert max_relative_error(t_params, f_params) < 1e-5
    back = clone_params(f_params)
    t_back = torch.optim.Adam(back, lr=1e-2, weight_decay=0.1, amsgrad=True)
    t_back.load_state_dict(_through_bytes(f_opt.state_dict()))
    _step_together(base, range(50, 70), back, t_back.step, f_params, f_opt.step)
    assert max_relative_error(back, f_params) < 1e-5


def test_adam_and_adamw_checkpoints_do_not_cross():
    """Same state keys, other maths: a fusedlr checkpoint says which it is."""
    params = [torch.nn.Parameter(torch.ones(3))]
    adam = fusedlr.Adam(params)
    with pytest.raises(ValueError, match="from fusedlr.Adam; it cannot be loaded into fusedlr.AdamW"):
        fusedlr.AdamW(params).load_state_dict(adam.state_dict())
    with pytest.raises(ValueError, match="decoupled_weight_decay=True: that is fusedlr.AdamW"):
        fusedlr.Adam(params, decoupled_weight_decay=True)
    with pytest.raises(ValueError, match="decoupled_weight_decay=False: that is fusedlr.Adam "):
        fusedlr.AdamW(params, decoupled_weight_decay=False)
    fusedlr.AdamW(params, decoupled_weight_decay=True)  # torch.optim.Adam(decoupled_weight_decay=True)'s meaning


def test_torch_sgd_checkpoint_loads_into_fusedlr(backend):
    """torch's SGD keeps only momentum buffers: they carry over, and the step
    count (which torch does not record) is set by the user."""
    base = make_params()
    t_params = clone_params(base)
    t_opt = torch.optim.SGD(t_params, lr=0.05, momentum=0.9)
    for step in range(20):
        set_grads(t_params, grads_for_step(base, step))
        t_opt.step()
    f_params = clone_params(t_params, device_for(backend))
    f_opt = fusedlr.SGD(f_params, lr=0.05, momentum=0.9, backend=backend)
    f_opt.load_state_dict(_through_bytes(t_opt.state_dict()))
    f_opt.step_count.fill_(20)
    _step_together(base, range(20, 50), t_params, t_opt.step, f_params, f_opt.step)
    assert max_relative_error(t_params, f_params) < 1e-5


def test_saved_schedule_state_put_in_place_is_taken_up_once():
    """ZeRO's load puts each param's saved state (with schedule_step) in place
    without load_state_dict: the counter takes it up at the next step, and a
    param that gets its first grad later does not move it back."""
    import fusedlr as F
    a, b = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(3))
    saved = F.AdamW([a, b], lr=0.1)
    for _ in range(5):
        a.grad, b.grad = torch.ones(2), torch.ones(3)
        saved.step()
    states = saved.state_dict()["state"]
    opt = F.AdamW([a, b], lr=0.1)
    opt.state[a], opt.state[b] = dict(states[0]), dict(states[1])  # what ZeRO's load_state_dict does
    a.grad, b.grad = torch.ones(2), None
    opt.step()
    assert int(opt.step_count) == 6
    for _ in range(2):
        a.grad, b.grad = torch.ones(2), torch.ones(3)
        opt.step()
    assert int(opt.step_count) == 8
    assert all("schedule_step" not in st for st in opt.state.values())


def test_old_layer_decay_checkpoint_with_lr_scale_loads():
    """fusedlr's layer-decay groups once recorded lr_scale (already folded into lr)."""
    import fusedlr as F
    p = torch.nn.Parameter(torch.ones(2))
    sd = F.AdamW([{"params": [p], "lr": 0.05}], lr=0.1).state_dict()
    sd["param_groups"][0]["lr_scale"] = 0.5
    opt = F.AdamW([{"params": [p], "lr": 0.05}], lr=0.1)
    opt.load_state_dict(sd)
    assert opt.param_groups[0]["lr"] == 0.05 and opt.param_groups[0]["layer_scale"] == 0.5
    assert "lr_scale" not in opt.param_groups[0]
