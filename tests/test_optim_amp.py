"""torch.amp.GradScaler with fusedlr optimizers: the scaler hands grad_scale and
found_inf to the kernel, which unscales in place of GradScaler and, on an
inf/nan step, leaves params, state, step counts and the schedule untouched."""
import copy

import pytest
import torch
from torch.optim import lr_scheduler as tls

import fusedlr
from fusedlr import schedules as S
from optim_oracle import clone_params, device_for, grads_for_step, make_params, max_relative_error

INF_STEPS = {0, 7, 8, 23}


def _scaled_grads(params, step, scale):
    grads = grads_for_step(params, step)
    out = [None if g is None else (g.double() * scale).to(g.dtype) for g in grads]
    if step in INF_STEPS:
        out[0] = out[0].clone()
        out[0].view(-1)[3] = float("inf") if step % 2 else float("nan")
    return out


def _snapshot(opt, params):
    return [p.detach().clone() for p in params], copy.deepcopy(
        {i: opt.state[p] for i, p in enumerate(params)}), opt.step_count.clone()


@pytest.mark.parametrize("make", [
    lambda ps: (torch.optim.AdamW(ps, lr=1e-2, amsgrad=True), fusedlr.AdamW, dict(lr=1e-2, amsgrad=True)),
    lambda ps: (torch.optim.Adam(ps, lr=1e-2, weight_decay=0.1), fusedlr.Adam, dict(lr=1e-2, weight_decay=0.1)),
    lambda ps: (torch.optim.SGD(ps, lr=0.05, momentum=0.9, dampening=0.1), fusedlr.SGD,
                dict(lr=0.05, momentum=0.9, dampening=0.1)),
], ids=["adamw", "adam-l2", "sgd-momentum"])
def test_grad_scaler_unscales_and_skips_like_torch(make, backend):
    base = make_params()
    device = device_for(backend)
    tp, fp = clone_params(base), clone_params(base, device)
    t_opt, fused_cls, kwargs = make(tp)
    t_sched = tls.SequentialLR(t_opt, [tls.LinearLR(t_opt, 0.1, 1.0, 10), tls.CosineAnnealingLR(t_opt, 50)],
                               milestones=[10])
    f_opt = fused_cls(fp, schedule=S.from_torch(t_sched), backend=backend, **kwargs)
    t_scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 12, growth_interval=6)
    f_scaler = torch.amp.GradScaler(device.type, init_scale=2.0 ** 12, growth_interval=6)
    applied = 0
    for step in range(60):
        for scaler in (t_scaler, f_scaler):
            scaler.scale(torch.ones(()))  # what scaler.scale(loss) does first: create the scale
        scale = t_scaler.get_scale()
        assert scale == f_scaler.get_scale()
        grads = _scaled_grads(base, step, scale)
        for params in (tp, fp):
            for p, g in zip(params, grads):
                p.grad = None if g is None else torch.empty_like(p).copy_(g)
        before = _snapshot(f_opt, fp)
        t_scaler.step(t_opt)
        f_scaler.step(f_opt)
        t_scaler.update()
        f_scaler.update()
        if step in INF_STEPS:
            params, state, count = _snapshot(f_opt, fp)
            assert all(torch.equal(a, b) for a, b in zip(before[0], params))
            for i in state:
                for key, value in state[i].items():
                    assert torch.equal(value, before[1][i][key]), (step, i, key)
            assert torch.equal(count, before[2])
        else:
            t_sched.step()  # the torch oracle's schedule advances only on applied steps
            applied += 1
    assert int(f_opt.step_count) == applied
    assert max_relative_error(tp, fp) < 1e-5


def test_first_sgd_step_skipped_by_the_scaler_still_starts_the_buffer_from_the_grad(backend):
    """torch's fused SGD decides "first step" on the host; fusedlr reads the
    param's own update count, so a skipped first step changes nothing."""
    device = device_for(backend)
    p = torch.nn.Parameter(torch.ones(5, device=device))
    opt = fusedlr.SGD([p], lr=0.1, momentum=0.9, backend=backend)
    scaler = torch.amp.GradScaler(device.type, init_scale=4.0)
    scaler.scale(torch.ones(()))
    p.grad = torch.full((5,), float("inf"), device=device)
    scaler.step(opt)
    scaler.update()
    assert torch.equal(p.detach().cpu(), torch.ones(5)) and int(opt.state[p]["step"]) == 0
    p.grad = torch.full((5,), 2.0 * scaler.get_scale(), device=device)
    scaler.scale(torch.ones(()))
    scaler.step(opt)
    assert torch.allclose(opt.state[p]["momentum_buffer"].cpu(), torch.full((5,), 2.0))
    assert torch.allclose(p.detach().cpu(), torch.full((5,), 1 - 0.1 * 2.0))


def test_explicit_unscale_then_step(backend):
    """scaler.unscale_(opt) before step (e.g. for clipping): grads are unscaled by
    the scaler, the kernel gets no grad_scale but still honours found_inf."""
    base = make_params()
    device = device_for(backend)
    tp, fp = clone_params(base), clone_params(base, device)
    t_opt, f_opt = torch.optim.AdamW(tp, lr=1e-2), fusedlr.AdamW(fp, lr=1e-2, backend=backend)
    scalers = [torch.amp.GradScaler(d, init_scale=2.0 ** 8) for d in ("cpu", device.type)]
    for step in range(20):
        for scaler in scalers:
            scaler.scale(torch.ones(()))
        grads = _scaled_grads(base, step, scalers[0].get_scale())
        for params, opt, scaler in ((tp, t_opt, scalers[0]), (fp, f_opt, scalers[1])):
            for p, g in zip(params, grads):
                p.grad = None if g is None else torch.empty_like(p).copy_(g)
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(params, 50.0)
            scaler.step(opt)
            scaler.update()
    assert max_relative_error(tp, fp) < 1e-5
