"""The torch.optim.Optimizer surface of fusedlr.SGD / AdamW: argument checks,
grads refused before anything changes, param_group edits, add_param_group,
hooks, closures, zero_grad and backend choice — each against torch.optim."""
import pytest
import torch

import fusedlr
from fusedlr import schedules as S
from fusedlr.optim.base import FusedOptimizer, default_backend
from optim_oracle import clone_params, device_for, grads_for_step, make_params, max_relative_error, set_grads

OPTIMIZERS = {"sgd": (torch.optim.SGD, fusedlr.SGD, dict(lr=0.1, momentum=0.9)),
              "adamw": (torch.optim.AdamW, fusedlr.AdamW, dict(lr=1e-2))}


def _param(device="cpu", shape=(4, 3)):
    return torch.nn.Parameter(torch.randn(shape, device=device))


# ---- construction-time checks -------------------------------------------------
@pytest.mark.parametrize("cls, kwargs, names", [
    (fusedlr.SGD, dict(lr=-0.1), "lr"),
    (fusedlr.SGD, dict(lr=0.1, momentum=-1), "momentum"),
    (fusedlr.SGD, dict(lr=0.1, momentum=0.9, dampening=1.5), "dampening"),
    (fusedlr.SGD, dict(lr=0.1, weight_decay=-1e-4), "weight_decay"),
    (fusedlr.SGD, dict(lr=0.1, nesterov=True), "nesterov"),
    (fusedlr.SGD, dict(lr=0.1, momentum=0.9, dampening=0.1, nesterov=True), "nesterov"),
    (fusedlr.AdamW, dict(lr=-1e-3), "lr"),
    (fusedlr.AdamW, dict(betas=(1.0, 0.999)), "betas[0]"),
    (fusedlr.AdamW, dict(betas=(0.9, -0.1)), "betas[1]"),
    (fusedlr.AdamW, dict(betas=(0.9,)), "betas"),
    (fusedlr.AdamW, dict(eps=-1e-8), "eps"),
    (fusedlr.AdamW, dict(weight_decay=-0.1), "weight_decay"),
    (fusedlr.AdamW, dict(lr=float("nan")), "lr"),
])
def test_bad_hyperparameters_are_refused_by_name(cls, kwargs, names):
    with pytest.raises(ValueError, match=names.replace("[", r"\[").replace("]", r"\]")):
        cls([_param()], **kwargs)


@pytest.mark.parametrize("param, message", [
    (torch.zeros(3, dtype=torch.complex64, requires_grad=True), "complex"),
    (torch.zeros(3, dtype=torch.int32), "dtype"),
    (torch.zeros(3, dtype=torch.float32).to_sparse(), "sparse"),
])
def test_params_no_kernel_can_update_are_refused(param, message):
    with pytest.raises(TypeError, match=message):
        fusedlr.AdamW([param])


def test_differentiable_is_refused_and_torch_flags_are_accepted():
    with pytest.raises(ValueError, match="differentiable"):
        fusedlr.SGD([_param()], lr=0.1, differentiable=True)
    fusedlr.AdamW([_param()], foreach=True, fused=True, capturable=True)


def test_schedule_must_be_a_fusedlr_schedule():
    opt = torch.optim.SGD([_param()], lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, 3)
    with pytest.raises(TypeError, match="schedule must be a fusedlr.schedules.Schedule"):
        fusedlr.SGD([_param()], lr=0.1, schedule=sched)


def test_per_group_schedule_must_fit_the_number_of_groups():
    schedule = S.PerGroup([S.Constant(), S.Cosine(10)])
    with pytest.raises(ValueError, match="written for 2 param groups but the optimizer has 1"):
        fusedlr.AdamW([{"params": [_param()]}], schedule=schedule)


def test_unknown_or_mismatched_backend_is_refused():
    with pytest.raises(ValueError, match="backend must be"):
        fusedlr.AdamW([_param()], backend="tpu")
    if "cuda" in fusedlr.available_backends():
        with pytest.raises(ValueError, match="backend='cuda' cannot update a param on cpu"):
            fusedlr.AdamW([_param("cpu")], backend="cuda")
        with pytest.raises(ValueError, match="backend='cpu' cannot update a param on cuda"):
            fusedlr.AdamW([_param("cuda")], backend="cpu")
    else:
        with pytest.raises(RuntimeError, match="CUDA backend is unavailable"):
            fusedlr.AdamW([_param()], backend="cuda")


def test_automatic_backend_uses_the_native_kernel_for_the_params_device():
    assert default_backend(torch.device("cpu")) == "cpu"
    assert default_backend(torch.device("meta")) == "reference"


# ---- step-time checks: refused before any state changes ----------------------
def _snapshot(opt):
    params = [p.detach().clone() for g in opt.param_groups for p in g["params"]]
    states = [{k: v.clone() for k, v in s.items()} for s in opt.state.values()]
    return params, states, opt.step_count.clone()


def _assert_unchanged(opt, snapshot):
    params, states, count = snapshot
    now = _snapshot(opt)
    for a, b in zip(params, now[0]):
        assert torch.equal(a, b)
    for sa, sb in zip(states, now[1]):
        assert sa.keys() == sb.keys()
        for k in sa:
            assert torch.equal(sa[k], sb[k]), k
    assert torch.equal(count, now[2])


@pytest.mark.parametrize("bad_grad, error, message", [
    (lambda p: torch.ones_like(p).to_sparse(), RuntimeError, "sparse gradients"),
    (lambda p: torch.ones_like(p, dtype=torch.float64), TypeError, "gradient dtype torch.float64"),
], ids=["sparse", "float64-grad"])
def test_bad_grads_raise_at_step_before_anything_changes(bad_grad, error, message, backend):
    device = device_for(backend)
    good, bad = _param(device), _param(device)
    opt = fusedlr.AdamW([good, bad], backend=backend)
    good.grad = torch.ones_like(good)
    bad.grad = torch.ones_like(bad)
    opt.step()  # a normal step first, so there is state to protect
    good.grad = torch.ones_like(good)
    if error is TypeError:
        if not hasattr(bad, "grad_dtype"):
            pytest.skip("this torch refuses a grad of another dtype itself")
        bad.grad_dtype = None  # torch >= 2.10: let the grad have another dtype
    bad.grad = bad_grad(bad).to(device)
    snapshot = _snapshot(opt)
    with pytest.raises(error, match=message) as info:
        opt.step()
    assert "param_groups[0]['params'][1]" in str(info.value)
    _assert_unchanged(opt, snapshot)


def test_a_bad_group_edit_raises_at_step_and_changes_nothing(backend):
    p = _param(device_for(backend))
    opt = fusedlr.SGD([p], lr=0.1, momentum=0.9, backend=backend)
    p.grad = torch.ones_like(p)
    opt.step()
    opt.param_groups[0]["momentum"] = -0.5
    snapshot = _snapshot(opt)
    with pytest.raises(ValueError, match="momentum"):
        opt.step()
    _assert_unchanged(opt, snapshot)


# ---- behaviour shared with torch.optim ----------------------------------------
def _lockstep(name, backend, steps, between=None, schedule_of=None):
    """Run torch and fusedlr on the same grads; ``between(step, opt)`` edits both."""
    torch_cls, fused_cls, kwargs = OPTIMIZERS[name]
    base = make_params()
    tp, fp = clone_params(base), clone_params(base, device_for(backend))
    t_opt = torch_cls([{"params": tp[:4]}, {"params": tp[4:], "lr": kwargs["lr"] / 2}], **kwargs)
    f_opt = fused_cls([{"params": fp[:4]}, {"params": fp[4:], "lr": kwargs["lr"] / 2}], backend=backend,
                      **kwargs)
    for step in range(steps):
        if between:
            between(step, t_opt)
            between(step, f_opt)
        grads = grads_for_step(base, step)
        set_grads(tp, grads)
        set_grads(fp, grads)
        t_opt.step()
        f_opt.step()
    return tp, fp


def _edit_hyperparameters(step, opt):
    group = opt.param_groups[0]
    if step == 10:
        group["lr"] *= 0.3
        group["weight_decay"] = 0.05
    if step == 20:
        if "betas" in group:
            group["betas"] = (0.8, 0.99)
            group["eps"] = 1e-6
        else:
            group["nesterov"] = True
            opt.param_groups[1]["momentum"] = 0.5
    if step == 30:
        opt.param_groups[1]["maximize"] = True


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_param_group_edits_take_effect_at_the_next_step(name, backend):
    tp, fp = _lockstep(name, backend, 50, between=_edit_hyperparameters)
    assert max_relative_error(tp, fp) < 1e-5


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_add_param_group_midway_matches_torch(name, backend):
    extra = [torch.randn(9, 4), torch.randn(33)]
    t_extra, f_extra = clone_params(extra), clone_params(extra, device_for(backend))

    def add_group(step, opt):
        if step == 15:
            ps = f_extra if isinstance(opt, FusedOptimizer) else t_extra
            opt.add_param_group({"params": ps, "weight_decay": 0.1})
        if step >= 15:
            ps = opt.param_groups[-1]["params"]
            gen = torch.Generator().manual_seed(step)
            for p in ps:
                p.grad = torch.randn(p.shape, generator=gen).to(p.device)

    tp, fp = _lockstep(name, backend, 40, between=add_group)
    assert max_relative_error(tp + t_extra, fp + f_extra) < 1e-5


def test_add_param_group_refuses_a_bad_group_and_keeps_the_optimizer_usable():
    opt = fusedlr.AdamW([_param()])
    with pytest.raises(ValueError, match="betas"):
        opt.add_param_group({"params": [_param()], "betas": (0.9, 2.0)})
    assert len(opt.param_groups) == 1
    opt.param_groups[0]["params"][0].grad = torch.ones(4, 3)
    opt.step()
    assert int(opt.step_count) == 1


def test_hooks_run_around_step_in_torch_order():
    calls = []
    opt = fusedlr.SGD([_param()], lr=0.1)
    opt.register_step_pre_hook(lambda o, args, kwargs: calls.append(("pre", int(o.step_count))))
    opt.register_step_post_hook(lambda o, args, kwargs: calls.append(("post", int(o.step_count))))
    opt.param_groups[0]["params"][0].grad = torch.ones(4, 3)
    opt.step()
    assert calls == [("pre", 0), ("post", 1)]


def test_closure_is_evaluated_with_grad_enabled_and_its_loss_returned():
    p = _param()
    opt = fusedlr.SGD([p], lr=0.1)

    def closure():
        opt.zero_grad()
        loss = (p ** 2).sum()
        loss.backward()
        return loss

    before = p.detach().clone()
    loss = opt.step(closure)
    assert torch.equal(loss, (before ** 2).sum())
    torch.testing.assert_close(p.detach(), before - 0.1 * 2 * before)


@pytest.mark.parametrize("set_to_none", [True, False])
def test_zero_grad_like_torch(set_to_none):
    p = _param()
    opt = fusedlr.AdamW([p])
    p.grad = torch.ones_like(p)
    opt.zero_grad(set_to_none=set_to_none)
    if set_to_none:
        assert p.grad is None
    else:
        assert torch.equal(p.grad, torch.zeros_like(p))


def test_group_lr_is_the_base_lr_the_schedule_scales(backend):
    p = _param(device_for(backend))
    opt = fusedlr.SGD([p], lr=0.5, schedule=S.Linear(1.0, 0.0, 10), backend=backend)
    for _ in range(4):
        p.grad = torch.zeros_like(p)
        opt.step()
    assert opt.param_groups[0]["lr"] == 0.5  # never overwritten by the schedule
    torch.testing.assert_close(opt.current_lr.cpu(), torch.tensor([0.5 * (1 - 4 / 10)], dtype=torch.float64))
    opt.param_groups[0]["lr"] = 1.0
    torch.testing.assert_close(opt.current_lr.cpu(), torch.tensor([1 - 4 / 10], dtype=torch.float64))


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_grads_and_params_moving_to_new_storage_are_followed(name, backend):
    """The step plan and pointer tables are kept between steps: new grad tensors
    and a param whose storage is swapped (``p.data = ...``) must still be used."""
    kept_alive = []  # old grads stay allocated, so new ones cannot reuse their addresses

    def move(step, opt):
        if step == 8:  # step 7 also had every grad: the kept plan would be reused
            for p in opt.param_groups[0]["params"][:2]:
                p.data = p.data.clone()
        kept_alive.extend(p.grad for g in opt.param_groups for p in g["params"] if p.grad is not None)

    tp, fp = _lockstep(name, backend, 15, between=move)
    assert max_relative_error(tp, fp) < 1e-5


def test_upload_hyperparameters_rewrites_the_device_tables_in_place(backend):
    """What a CUDA graph replay needs: edited values land at the same addresses,
    and the kept step plan (pointer tables) survives."""
    p = _param(device_for(backend))
    wsd = S.warmup_stable_decay(10, 20, num_stable_steps=1000)
    opt = fusedlr.AdamW([p], lr=1e-2, schedule=wsd, backend=backend)
    for _ in range(35):
        p.grad = torch.ones_like(p)
        opt.step()
    tables, plan = opt._table_addresses(), opt._plan.work
    group = opt.param_groups[0]
    group["lr"], group["weight_decay"], group["betas"] = 2e-2, 0.2, (0.8, 0.99)
    group["schedule"] = decay_now = S.warmup_stable_decay(10, 20, num_stable_steps=20)  # start the decay now
    opt.upload_hyperparameters()
    assert opt._table_addresses() == tables and opt._plan.work is plan
    expected = decay_now.values([35], [2e-2], backend="reference").reshape(1)  # 5 steps into the decay
    assert float(expected) < 2e-2
    torch.testing.assert_close(opt.current_lr.cpu(), expected, rtol=1e-12, atol=0)


def test_upload_hyperparameters_says_when_a_graph_must_be_recaptured(backend):
    p = _param(device_for(backend))
    opt = fusedlr.SGD([p], lr=0.1, momentum=0.9, backend=backend)
    p.grad = torch.ones_like(p)
    opt.step()
    opt.param_groups[0]["nesterov"] = True
    with pytest.raises(RuntimeError, match="captured again"):
        opt.upload_hyperparameters()
    opt.upload_hyperparameters()  # applied: nothing left to change
