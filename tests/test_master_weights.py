"""master_weights=True: bf16/fp16 params updated through an fp32 master copy,
against torch.optim run on fp32 copies of the params, cast after each step
(the oracle), on every backend; the master survives checkpoints and follows
a param written from outside."""
import pytest
import torch
import torch.optim.lr_scheduler as tls

import fusedlr
from fusedlr import schedules as S
from optim_oracle import clone_params, device_for, grads_for_step, make_params, max_relative_error, set_grads

HALF = [torch.bfloat16, torch.float16]
KINDS = {
    "adamw": (torch.optim.AdamW, fusedlr.AdamW, dict(lr=1e-2, weight_decay=0.1)),
    "adamw-amsgrad": (torch.optim.AdamW, fusedlr.AdamW, dict(lr=1e-2, amsgrad=True)),
    "adam-l2": (torch.optim.Adam, fusedlr.Adam, dict(lr=1e-2, weight_decay=0.1)),
    "sgd-nesterov": (torch.optim.SGD, fusedlr.SGD, dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3)),
}


def _half_base(dtype):
    """make_params' odd shapes (empty, 0-d, non-contiguous...) as half-precision values."""
    return [p.to(dtype) for p in make_params()]


def _masters(opt, params):
    return [opt.state[p]["master_param"] for p in params]


def _run_pair(kind, dtype, backend, steps=6, **fused_options):
    torch_cls, fused_cls, options = KINDS[kind]
    base = _half_base(dtype)
    tp = clone_params([b.float() for b in base])  # torch on fp32 copies of the same values
    fp = clone_params(base, device_for(backend))
    t_opt = torch_cls(tp, **options)
    sched = tls.OneCycleLR(t_opt, max_lr=options["lr"], total_steps=steps + 2, cycle_momentum=False)
    f_opt = fused_cls(fp, schedule=S.from_torch(sched), backend=backend, master_weights=True, **options,
                      **fused_options)
    for step in range(steps):
        grads = [None if g is None else g.to(dtype) for g in grads_for_step(base, step)]
        set_grads(tp, [None if g is None else g.float() for g in grads])
        set_grads(fp, grads)
        t_opt.step()
        sched.step()
        f_opt.step()
    return tp, fp, f_opt


@pytest.mark.parametrize("dtype", HALF, ids=["bf16", "fp16"])
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_master_weights_match_torch_on_fp32_copies(kind, dtype, backend):
    tp, fp, f_opt = _run_pair(kind, dtype, backend)
    masters = _masters(f_opt, fp)
    assert all(m.dtype == torch.float32 for m in masters)
    assert max_relative_error(tp, masters) < 2e-6  # the fp32 trajectory, to fusedlr's fp32 parity
    for m, p in zip(masters, fp):  # the param is its master's rounding
        assert p.dtype == dtype and torch.equal(m.to(dtype), p.detach())
    state = f_opt.state[fp[0]]
    assert all(v.dtype == torch.float32 for k, v in state.items() if k not in ("step",))


def test_master_weights_keep_updates_a_half_param_would_lose(backend):
    """lr * update below half a bf16 ulp: a bf16 param alone never moves, the
    master accumulates and the param moves once the sum crosses the rounding."""
    device = device_for(backend)
    plain, mastered = (torch.nn.Parameter(torch.ones(64, dtype=torch.bfloat16, device=device)) for _ in range(2))
    opts = [fusedlr.SGD([plain], lr=1e-3, backend=backend),
            fusedlr.SGD([mastered], lr=1e-3, master_weights=True, backend=backend)]
    for _ in range(10):
        for p, opt in zip((plain, mastered), opts):
            p.grad = torch.ones_like(p)
            opt.step()
    assert torch.equal(plain.detach().float().cpu(), torch.ones(64))  # 1 - 1e-3 rounds back to 1 in bf16
    master = opts[1].state[mastered]["master_param"].cpu()
    assert torch.allclose(master, torch.full((64,), 1 - 10e-3), atol=1e-6)
    assert torch.equal(mastered.detach().cpu(), master.to(torch.bfloat16))
    assert float(mastered.detach()[0]) < 1


def test_fp32_params_keep_no_master(backend):
    p = torch.nn.Parameter(torch.ones(3, device=device_for(backend)))
    opt = fusedlr.AdamW([p], master_weights=True, backend=backend)
    p.grad = torch.ones_like(p)
    opt.step()
    assert "master_param" not in opt.state[p] and opt.state[p]["exp_avg"].dtype == torch.float32


def test_state_bytes_per_bf16_param_are_master_plus_moments():
    p = torch.nn.Parameter(torch.ones(1000, dtype=torch.bfloat16))
    opt = fusedlr.AdamW([p], master_weights=True)
    tensors = {k: v.nbytes for k, v in opt.state[p].items() if k != "step"}
    assert tensors == {"master_param": 4000, "exp_avg": 4000, "exp_avg_sq": 4000}


def test_a_checkpoint_keeps_the_fp32_master_and_resumes_exactly(backend, tmp_path):
    """torch's load_state_dict casts state to the param's dtype; the master and
    moments must come back in fp32, bit for bit."""
    device = device_for(backend)

    def make():
        gen = torch.Generator().manual_seed(0)
        p = torch.nn.Parameter(torch.randn(50, generator=gen).to(torch.bfloat16).to(device))
        return p, fusedlr.AdamW([p], lr=1e-2, master_weights=True, schedule=S.Cosine(20), backend=backend)

    def grad(step):
        return torch.randn(50, generator=torch.Generator().manual_seed(100 + step)).to(torch.bfloat16).to(device)

    through_p, through = make()
    for step in range(8):
        through_p.grad = grad(step)
        through.step()
    first_p, first = make()
    for step in range(4):
        first_p.grad = grad(step)
        first.step()
    torch.save({"model": first_p.detach().clone(), "opt": first.state_dict()}, tmp_path / "ckpt.pt")
    saved = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    assert saved["opt"]["state"][0]["master_param"].dtype == torch.float32
    resumed_p, resumed = make()
    resumed.load_state_dict(saved["opt"])
    with torch.no_grad():
        resumed_p.copy_(saved["model"])  # the model loaded after the optimizer (the master keeps its low bits)
    assert torch.equal(resumed.state[resumed_p]["master_param"], first.state[first_p]["master_param"])
    for step in range(4, 8):
        resumed_p.grad = grad(step)
        resumed.step()
    assert torch.equal(resumed_p.detach(), through_p.detach())
    assert torch.equal(resumed.state[resumed_p]["master_param"], through.state[through_p]["master_param"])


def test_a_param_written_from_outside_becomes_the_master_where_it_changed(backend):
    device = device_for(backend)
    p = torch.nn.Parameter(torch.ones(4, dtype=torch.bfloat16, device=device))
    opt = fusedlr.SGD([p], lr=1e-3, master_weights=True, backend=backend)
    p.grad = torch.ones_like(p)
    opt.step()  # master 0.999, param rounds to 1
    with torch.no_grad():
        p[0] = 5.0  # a weight edited (or a model checkpoint loaded) after the step
    opt.step()
    master = opt.state[p]["master_param"].cpu()
    assert master[0] == pytest.approx(5.0 - 1e-3, abs=1e-6)  # took the edit, then stepped from it
    assert master[1:].tolist() == pytest.approx([1 - 2e-3] * 3, abs=1e-6)  # untouched: kept its low bits


def test_a_torch_checkpoint_of_half_params_loads_into_fp32_state(backend):
    device = device_for(backend)
    tp = torch.nn.Parameter(torch.linspace(-1, 1, 6, dtype=torch.bfloat16))
    t_opt = torch.optim.AdamW([tp], lr=1e-2)
    tp.grad = torch.ones_like(tp)
    t_opt.step()
    fp = torch.nn.Parameter(tp.detach().clone().to(device))
    opt = fusedlr.AdamW([fp], lr=1e-2, master_weights=True, backend=backend)
    opt.load_state_dict(t_opt.state_dict())
    state = opt.state[fp]
    assert state["exp_avg"].dtype == torch.float32
    assert torch.equal(state["exp_avg"].cpu(), t_opt.state[tp]["exp_avg"].float())
    assert torch.equal(state["master_param"].cpu(), tp.detach().float())  # no master saved: the param


def test_master_weights_with_grad_scaler_and_clipping(backend):
    """The combination large runs use: GradScaler and max_grad_norm, against
    torch's unscale_ + clip_grad_norm_ + step on fp32 copies."""
    device = device_for(backend)
    base = _half_base(torch.float16)
    tp, fp = clone_params([b.float() for b in base]), clone_params(base, device)
    t_opt = torch.optim.AdamW(tp, lr=1e-2)
    f_opt = fusedlr.AdamW(fp, lr=1e-2, master_weights=True, max_grad_norm=0.5, backend=backend)
    t_scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 8)
    f_scaler = torch.amp.GradScaler(device.type, init_scale=2.0 ** 8)
    for step in range(5):
        for scaler in (t_scaler, f_scaler):
            scaler.scale(torch.ones(()))
        grads = [None if g is None else (g * t_scaler.get_scale()).half() for g in grads_for_step(base, step)]
        set_grads(tp, [None if g is None else g.float() for g in grads])
        set_grads(fp, grads)
        t_scaler.unscale_(t_opt)
        torch.nn.utils.clip_grad_norm_(tp, 0.5)
        for scaler, opt in ((t_scaler, t_opt), (f_scaler, f_opt)):
            scaler.step(opt)
            scaler.update()
    assert max_relative_error(tp, _masters(f_opt, fp)) < 2e-6


def test_compiled_steps_update_masters_like_eager_ones(backend):
    def run(compiled):
        p = torch.nn.Parameter(torch.linspace(-1, 1, 40, dtype=torch.bfloat16))
        opt = fusedlr.AdamW([p], lr=0.1, schedule=S.Cosine(10), backend=backend, master_weights=True)
        step = torch.compile(opt.step, fullgraph=True, backend="eager") if compiled else opt.step
        for i in range(4):
            p.grad = torch.linspace(0, 2 + i, 40, dtype=torch.bfloat16)
            step()
        return p.detach().clone(), opt.state[p]["master_param"].clone()

    (eager_p, eager_m), (compiled_p, compiled_m) = run(False), run(True)
    assert torch.equal(eager_p, compiled_p) and torch.equal(eager_m, compiled_m)


def test_a_master_of_the_wrong_dtype_is_refused_by_name():
    p = torch.nn.Parameter(torch.ones(3, dtype=torch.bfloat16))
    opt = fusedlr.AdamW([p], master_weights=True)
    opt.state[p]["master_param"] = torch.ones(3, dtype=torch.bfloat16)
    p.grad = torch.ones_like(p)
    with pytest.raises(RuntimeError, match="master_param.*kept in float32"):
        opt.step()


def test_master_weights_must_be_a_bool():
    with pytest.raises(TypeError, match="master_weights"):
        fusedlr.SGD([torch.nn.Parameter(torch.ones(1))], master_weights="yes")
