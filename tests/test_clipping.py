"""max_grad_norm: global grad-norm clipping fused into the step, against
torch.nn.utils.clip_grad_norm_ followed by the torch.optim step (the oracle),
on every backend."""
import math

import pytest
import torch
import torch.optim.lr_scheduler as tls

import fusedlr
from fusedlr import schedules as S
from optim_oracle import clone_params, device_for, grads_for_step, make_params, max_relative_error, set_grads

KINDS = {
    "adamw": (lambda ps: torch.optim.AdamW(ps, lr=1e-2, weight_decay=0.1), fusedlr.AdamW,
              dict(lr=1e-2, weight_decay=0.1)),
    "adamw-amsgrad": (lambda ps: torch.optim.AdamW(ps, lr=1e-2, amsgrad=True), fusedlr.AdamW,
                      dict(lr=1e-2, amsgrad=True)),
    "adam-l2": (lambda ps: torch.optim.Adam(ps, lr=1e-2, weight_decay=0.1), fusedlr.Adam,
                dict(lr=1e-2, weight_decay=0.1)),
    "sgd-nesterov": (lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
                     fusedlr.SGD, dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3)),
}


def _grads(base, step, scale):
    """The oracle's grads, larger on some steps so the clip bites on those only."""
    return [None if g is None else g * (scale if step % 2 else 1e-3) for g in grads_for_step(base, step)]


def _run(kind, backend, max_norm, norm_type, dtype=torch.float32, steps=8):
    make_torch, fused_cls, kwargs = KINDS[kind]
    base = make_params(dtype)
    tp, fp = clone_params(base), clone_params(base, device_for(backend))
    t_opt = make_torch(tp)
    t_sched = tls.CosineAnnealingLR(t_opt, 10)
    f_opt = fused_cls(fp, schedule=S.from_torch(t_sched), backend=backend, max_grad_norm=max_norm,
                      norm_type=norm_type, **kwargs)
    f_opt.enable_history(steps)
    torch_norms = []
    for step in range(steps):
        grads = _grads(base, step, 3.0)
        set_grads(tp, grads)
        set_grads(fp, grads)
        raw = [p.grad.clone() if p.grad is not None else None for p in fp]
        # (torch has no inf norm of an empty tensor; it adds nothing to any norm)
        torch_norms.append(float(torch.nn.utils.clip_grad_norm_([p for p in tp if p.numel()], max_norm, norm_type)))
        t_opt.step()
        t_sched.step()
        f_opt.step()
        # torch's norm of half-precision grads is rounded to their dtype
        tolerance = 1e-6 if dtype == torch.float32 else 1e-2
        assert float(f_opt.last_grad_norm) == pytest.approx(torch_norms[-1], rel=tolerance)
        # the grads are left as backward wrote them
        assert all((a is None and p.grad is None) or torch.equal(a, p.grad) for a, p in zip(raw, fp))
    return tp, fp, f_opt, torch_norms


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("norm_type", [2.0, math.inf, 1.0])
def test_clipping_matches_clip_grad_norm_then_the_torch_step(kind, norm_type, backend):
    tp, fp, f_opt, torch_norms = _run(kind, backend, 0.5, norm_type)
    assert max_relative_error(tp, fp) < 2e-6
    history = f_opt.history()
    assert history["grad_norm"].tolist() == pytest.approx(torch_norms, rel=1e-6)


def test_a_large_max_norm_changes_nothing(backend):
    """clip coefficient 1: the same params as without clipping, bit for bit."""
    _, clipped, _, norms = _run("adamw", backend, 1e9, 2.0)
    base = make_params()
    fp = clone_params(base, device_for(backend))
    opt = fusedlr.AdamW(fp, lr=1e-2, weight_decay=0.1, schedule=S.Cosine(10), backend=backend)
    for step in range(8):
        set_grads(fp, _grads(base, step, 3.0))
        opt.step()
    assert all(torch.equal(a, b) for a, b in zip(clipped, fp))
    assert max(norms) > 1  # some steps had norms the clip would have cut at a smaller max_norm


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_params_clip_like_torch(dtype, backend):
    """torch takes the norm of bf16/fp16 grads in their own dtype; fusedlr
    accumulates in float32: within the half-precision rounding."""
    tp, fp, _, _ = _run("adamw", backend, 0.5, 2.0, dtype=dtype, steps=5)
    assert max_relative_error(tp, fp) < 2e-2


def test_clipping_with_grad_scaler_matches_unscale_clip_step(backend):
    """torch: scaler.unscale_(opt), clip_grad_norm_, scaler.step(opt); fusedlr:
    scaler.step(opt) alone, skipped steps included (a grad with inf)."""
    base = make_params()
    device = device_for(backend)
    tp, fp = clone_params(base), clone_params(base, device)
    t_opt = torch.optim.AdamW(tp, lr=1e-2)
    f_opt = fusedlr.AdamW(fp, lr=1e-2, backend=backend, max_grad_norm=0.5)
    t_scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10, growth_interval=3)
    f_scaler = torch.amp.GradScaler(device.type, init_scale=2.0 ** 10, growth_interval=3)
    skipped = 0
    for step in range(10):
        for scaler in (t_scaler, f_scaler):
            scaler.scale(torch.ones(()))
        scale = t_scaler.get_scale()
        grads = [None if g is None else g * scale for g in _grads(base, step, 3.0)]
        if step == 4:
            grads[0] = grads[0].clone()
            grads[0].view(-1)[3] = float("inf")
        set_grads(tp, grads)
        set_grads(fp, grads)
        t_scaler.unscale_(t_opt)
        torch_norm = float(torch.nn.utils.clip_grad_norm_(tp, 0.5))
        t_scaler.step(t_opt)
        f_scaler.step(f_opt)
        t_scaler.update()
        f_scaler.update()
        if step == 4:
            skipped += 1
            assert not bool(f_opt.last_step_applied) and math.isinf(float(f_opt.last_grad_norm))
        else:
            assert float(f_opt.last_grad_norm) == pytest.approx(torch_norm, rel=1e-6)
    assert skipped == 1 and int(f_opt.step_count) == 9
    assert max_relative_error(tp, fp) < 2e-6


def test_grad_less_params_and_a_step_without_grads(backend):
    """Params without a grad are left out of the norm, as torch's clip leaves
    them; a step where nothing has a grad measures 0."""
    device = device_for(backend)
    a, b = (torch.nn.Parameter(torch.ones(4, device=device)) for _ in range(2))
    opt = fusedlr.SGD([a, b], lr=0.1, max_grad_norm=1.0, backend=backend)
    a.grad = torch.full((4,), 3.0, device=device)
    opt.step()
    assert float(opt.last_grad_norm) == pytest.approx(6.0)
    assert torch.allclose(a.detach().cpu(), torch.full((4,), 1 - 0.1 * 3.0 / (6.0 + 1e-6)))
    assert torch.equal(b.detach().cpu(), torch.ones(4))
    a.grad = None
    opt.step()
    assert float(opt.last_grad_norm) == 0.0


def test_compiled_steps_clip_like_eager_ones(backend):
    def run(compiled):
        p = torch.nn.Parameter(torch.linspace(-1, 1, 40))
        opt = fusedlr.AdamW([p], lr=0.1, schedule=S.Cosine(10), backend=backend, max_grad_norm=0.3)
        step = torch.compile(opt.step, fullgraph=True, backend="eager") if compiled else opt.step
        norms = []
        for i in range(4):
            p.grad = torch.linspace(0, 2 + i, 40)
            step()
            norms.append(float(opt.last_grad_norm))
        return p.detach().clone(), norms

    (eager, eager_norms), (compiled, compiled_norms) = run(False), run(True)
    assert torch.equal(eager, compiled) and eager_norms == compiled_norms


@pytest.mark.parametrize("bad", [0, -1.0, float("inf"), float("nan"), "1", True])
def test_bad_max_grad_norm_is_refused_by_name(bad):
    with pytest.raises(ValueError, match="max_grad_norm"):
        fusedlr.AdamW([torch.nn.Parameter(torch.ones(2))], max_grad_norm=bad)


@pytest.mark.parametrize("bad", [0, -2.0, float("nan"), "2"])
def test_bad_norm_type_is_refused_by_name(bad):
    with pytest.raises(ValueError, match="norm_type"):
        fusedlr.SGD([torch.nn.Parameter(torch.ones(2))], max_grad_norm=1.0, norm_type=bad)


def test_last_grad_norm_without_clipping_says_how_to_get_it():
    opt = fusedlr.AdamW([torch.nn.Parameter(torch.ones(2))])
    with pytest.raises(RuntimeError, match="max_grad_norm"):
        opt.last_grad_norm


def test_a_reassigned_max_grad_norm_is_checked_at_the_step():
    p = torch.nn.Parameter(torch.ones(2))
    opt = fusedlr.AdamW([p], max_grad_norm=1.0)
    opt.max_grad_norm = -3
    p.grad = torch.ones(2)
    with pytest.raises(ValueError, match="max_grad_norm"):
        opt.step()
    assert torch.equal(p.detach(), torch.ones(2))
