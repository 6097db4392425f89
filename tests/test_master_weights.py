"""master_weights=True: bf16/fp16 params updated through an fp32 master copy,
against torch.optim run on fp32 copies of the params, cast after each step
(the oracle), on every backend; the master survives checkpoints and follows
a param written from outside. master_weights="remainder": the same fp32
masters held as bf16 params plus int16 low halves, read back here with the
tests' own bit arithmetic (numpy)."""
import numpy as np
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
    if opt.master_weights == "remainder":
        return [_joined_master(p, opt.state[p]["master_remainder"]) for p in params]
    return [opt.state[p]["master_param"] for p in params]


def _joined_master(param, low):
    """The fp32 master a bf16 param and its int16 low halves stand for: the
    param's bits less one where the low half's top bit says it was rounded
    up, then the low half below them."""
    high = param.detach().cpu().contiguous().view(torch.int16).numpy().astype(np.uint16).astype(np.uint32)
    low = low.cpu().numpy().astype(np.uint16).astype(np.uint32)
    bits = (((high - (low >> 15)) & 0xFFFF) << 16) | low
    return torch.from_numpy(np.atleast_1d(bits.astype(np.uint32)).view(np.float32).copy()).reshape(param.shape)


def _rounded_half_away(master):
    """bf16 of fp32 ``master``, ties away from zero (ties to even elsewhere is the same)."""
    bits = master.contiguous().view(torch.int32).numpy().astype(np.uint32)
    finite = (bits & 0x7F800000) != 0x7F800000
    high = np.where(finite, (bits >> 16) + ((bits & 0xFFFF) >= 0x8000), bits >> 16) & 0xFFFF
    return torch.from_numpy(np.atleast_1d(high.astype(np.uint16)).view(np.int16).copy()).view(torch.bfloat16) \
        .reshape(master.shape)


def _run_pair(kind, dtype, backend, steps=6, master_weights=True, **fused_options):
    torch_cls, fused_cls, options = KINDS[kind]
    base = _half_base(dtype)
    tp = clone_params([b.float() for b in base])  # torch on fp32 copies of the same values
    fp = clone_params(base, device_for(backend))
    t_opt = torch_cls(tp, **options)
    sched = tls.OneCycleLR(t_opt, max_lr=options["lr"], total_steps=steps + 2, cycle_momentum=False)
    f_opt = fused_cls(fp, schedule=S.from_torch(sched), backend=backend, master_weights=master_weights, **options,
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


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_remainders_hold_the_fp32_masters_torch_computes(kind, backend):
    """bf16 params and int16 low halves: the fp32 trajectory of torch.optim on
    fp32 copies, bit for bit the masters master_weights=True keeps, the
    param the master rounded (half away from zero)."""
    tp, fp, f_opt = _run_pair(kind, torch.bfloat16, backend, master_weights="remainder")
    _, full_p, full_opt = _run_pair(kind, torch.bfloat16, backend, master_weights=True)
    masters = _masters(f_opt, fp)
    assert max_relative_error(tp, masters) < 2e-6
    for m, full, p, full_param in zip(masters, _masters(full_opt, full_p), fp, full_p):
        assert torch.equal(m.view(torch.int32), full.cpu().view(torch.int32))
        assert p.dtype == torch.bfloat16 and torch.equal(p.detach().cpu(), _rounded_half_away(m))
        ties = (m.view(torch.int32) & 0xFFFF) == 0x8000
        assert torch.equal(p.detach().cpu()[~ties], full_param.detach().cpu()[~ties])  # RNE off the ties
    state = f_opt.state[fp[0]]
    assert state["master_remainder"].dtype == torch.int16 and "master_param" not in state
    assert all(v.dtype == torch.float32 for k, v in state.items() if k not in ("step", "master_remainder"))


@pytest.mark.parametrize("stochastic", [False, True], ids=["nearest", "stochastic"])
def test_remainders_with_bf16_moments_match_a_full_master(stochastic, backend):
    """bf16 moments (rounded stochastically or not) beside remainders round as
    they do beside a full fp32 master: the same bits of masters and moments."""
    runs = [_run_pair("adamw", torch.bfloat16, backend, master_weights=mode, state_dtype=torch.bfloat16,
                      stochastic_rounding=stochastic) for mode in (True, "remainder")]
    (_, full_p, full_opt), (_, split_p, split_opt) = runs
    for m_full, m_split in zip(_masters(full_opt, full_p), _masters(split_opt, split_p)):
        assert torch.equal(m_full.cpu().view(torch.int32), m_split.view(torch.int32))
    for a, b in zip(full_p, split_p):
        if a in full_opt.state:
            for key in ("exp_avg", "exp_avg_sq"):
                assert torch.equal(full_opt.state[a][key], split_opt.state[b][key])


def test_rounding_half_away_from_zero_is_undone_exactly():
    """Every low half (the ties and the carries at the top of the range
    included), positive and negative, and inf and nan: split then joined gives
    the fp32 back; the param is the master rounded."""
    from fusedlr.optim.split_master import join, split
    high = torch.tensor([0x3F80, 0x7F7F, 0x0000, 0x0001], dtype=torch.int64)
    low = torch.arange(0, 1 << 16, 7, dtype=torch.int64)
    bits = ((high[:, None] << 16) | low[None, :]).flatten()
    bits = torch.cat([bits, bits | (1 << 31)])
    master = torch.where(bits >= 2 ** 31, bits - 2 ** 32, bits).to(torch.int32).view(torch.float32)
    master = torch.cat([master, torch.tensor([float("inf"), -float("inf"), float("nan")])])
    param, halves = torch.empty_like(master, dtype=torch.bfloat16), torch.empty_like(master, dtype=torch.int16)
    split(master, param, halves)
    back = _joined_master(param, halves)
    finite = master.isfinite()
    assert torch.equal(back[finite].view(torch.int32), master[finite].view(torch.int32))
    assert torch.equal(back[~finite].isnan(), master[~finite].isnan()) and back[:-1][~finite[:-1]].isinf().all()
    assert torch.equal(param.view(torch.int16), _rounded_half_away(master).view(torch.int16))
    assert torch.equal(join(param, halves)[finite], master[finite])


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


def test_state_bytes_per_bf16_param_are_low_halves_plus_moments():
    p = torch.nn.Parameter(torch.ones(1000, dtype=torch.bfloat16))
    opt = fusedlr.AdamW([p], master_weights="remainder", state_dtype=torch.bfloat16)
    tensors = {k: v.nbytes for k, v in opt.state[p].items() if k != "step"}
    assert tensors == {"master_remainder": 2000, "exp_avg": 2000, "exp_avg_sq": 2000}


def test_remainders_keep_updates_a_half_param_would_lose(backend):
    device = device_for(backend)
    p = torch.nn.Parameter(torch.ones(64, dtype=torch.bfloat16, device=device))
    opt = fusedlr.SGD([p], lr=1e-3, master_weights="remainder", backend=backend)
    for _ in range(10):
        p.grad = torch.ones_like(p)
        opt.step()
    expected = torch.ones(64)
    for _ in range(10):
        expected -= 1e-3  # fp32 sums, in torch's order
    assert torch.equal(_masters(opt, [p])[0], expected)
    assert float(p.detach()[0]) < 1


@pytest.mark.parametrize("mode", [True, "remainder"])
def test_a_checkpoint_keeps_the_fp32_master_and_resumes_exactly(mode, backend, tmp_path):
    """torch's load_state_dict casts state to the param's dtype; the master (or
    its low halves) and moments must come back as they were, bit for bit."""
    device = device_for(backend)
    key = "master_param" if mode is True else "master_remainder"

    def make():
        gen = torch.Generator().manual_seed(0)
        p = torch.nn.Parameter(torch.randn(50, generator=gen).to(torch.bfloat16).to(device))
        return p, fusedlr.AdamW([p], lr=1e-2, master_weights=mode, schedule=S.Cosine(20), backend=backend)

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
    assert saved["opt"]["state"][0][key].dtype == (torch.float32 if mode is True else torch.int16)
    resumed_p, resumed = make()
    resumed.load_state_dict(saved["opt"])
    with torch.no_grad():
        resumed_p.copy_(saved["model"])  # the model loaded after the optimizer (the master keeps its low bits)
    assert torch.equal(resumed.state[resumed_p][key], first.state[first_p][key])
    for step in range(4, 8):
        resumed_p.grad = grad(step)
        resumed.step()
    assert torch.equal(resumed_p.detach(), through_p.detach())
    assert torch.equal(resumed.state[resumed_p][key], through.state[through_p][key])


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


@pytest.mark.parametrize("saved_mode, loaded_mode", [(True, "remainder"), ("remainder", True)])
def test_a_checkpoint_of_the_other_master_form_loads_exactly(saved_mode, loaded_mode, backend):
    """master_weights switched between runs: a saved full master becomes the
    param (rounded half away from zero) and its low halves; saved low halves
    with the param become the full master — the same fp32 bits either way."""
    device = device_for(backend)
    gen = torch.Generator().manual_seed(3)
    base = torch.randn(33, generator=gen).to(torch.bfloat16)
    p = torch.nn.Parameter(base.clone().to(device))
    opt = fusedlr.AdamW([p], lr=1e-2, master_weights=saved_mode, backend=backend)
    for _ in range(3):
        p.grad = torch.randn(33, generator=gen).to(torch.bfloat16).to(device)
        opt.step()
    saved_master = _masters(opt, [p])[0].cpu()
    q = torch.nn.Parameter(p.detach().clone())  # the model checkpoint loaded first
    other = fusedlr.AdamW([q], lr=1e-2, master_weights=loaded_mode, backend=backend)
    other.load_state_dict(opt.state_dict())
    assert torch.equal(_masters(other, [q])[0].cpu().view(torch.int32), saved_master.view(torch.int32))
    if loaded_mode == "remainder":
        assert torch.equal(q.detach().cpu(), _rounded_half_away(saved_master))
    q.grad = p.grad.clone()
    other.step()  # and it steps on from there: nothing marked as written from outside
    opt.step()
    assert torch.equal(_masters(other, [q])[0].cpu().view(torch.int32), _masters(opt, [p])[0].cpu().view(torch.int32))


def test_a_param_written_from_outside_keeps_its_low_halves_except_where_zeroed(backend):
    """master_weights="remainder": the master of an edited param is within a
    bf16 ulp of the edit; a param zeroed (pruned) has a zero master, never the
    nan a carried low half would make of it."""
    device = device_for(backend)
    p = torch.nn.Parameter(torch.full((4,), 1.0 + 2 ** -7, dtype=torch.bfloat16, device=device))
    opt = fusedlr.SGD([p], lr=2 ** -8, master_weights="remainder", backend=backend)
    p.grad = torch.ones_like(p)
    opt.step()  # master 1 + 2**-8, a tie: its low half 0x8000 carries into the param (1 + 2**-7)
    assert opt.state[p]["master_remainder"].cpu().tolist() == [-(2 ** 15)] * 4
    with torch.no_grad():
        p[0] = 0.0
        p[1] = 5.0
    p.grad = torch.zeros_like(p)
    opt.step()
    master = _masters(opt, [p])[0]
    assert master[0] == 0.0 and not master.isnan().any()
    assert abs(float(master[1]) - 5.0) <= 2 ** -5  # one bf16 ulp at 5
    assert master[2:].tolist() == [1.0 + 2 ** -8] * 2  # untouched: kept their low halves
    assert p.detach().cpu().tolist()[2:] == [1.0 + 2 ** -7] * 2


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


def _scaled_clipped_run(mode, dtype, backend, steps=5):
    """GradScaler and max_grad_norm on fusedlr, beside torch's unscale_ +
    clip_grad_norm_ + step on fp32 copies."""
    device = device_for(backend)
    base = _half_base(dtype)
    tp, fp = clone_params([b.float() for b in base]), clone_params(base, device)
    t_opt = torch.optim.AdamW(tp, lr=1e-2)
    f_opt = fusedlr.AdamW(fp, lr=1e-2, master_weights=mode, max_grad_norm=0.5, backend=backend)
    t_scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 8)
    f_scaler = torch.amp.GradScaler(device.type, init_scale=2.0 ** 8)
    for step in range(steps):
        for scaler in (t_scaler, f_scaler):
            scaler.scale(torch.ones(()))
        grads = [None if g is None else (g * t_scaler.get_scale()).to(dtype) for g in grads_for_step(base, step)]
        set_grads(tp, [None if g is None else g.float() for g in grads])
        set_grads(fp, grads)
        t_scaler.unscale_(t_opt)
        torch.nn.utils.clip_grad_norm_(tp, 0.5)
        for scaler, opt in ((t_scaler, t_opt), (f_scaler, f_opt)):
            scaler.step(opt)
            scaler.update()
    return tp, fp, f_opt


def test_master_weights_with_grad_scaler_and_clipping(backend):
    """The combination large runs use, against torch on fp32 copies."""
    tp, fp, f_opt = _scaled_clipped_run(True, torch.float16, backend)
    assert max_relative_error(tp, _masters(f_opt, fp)) < 2e-6


def test_remainders_with_grad_scaler_and_clipping_match_a_full_master(backend):
    """bf16 grads' norm is bf16-rounded (as torch's clip_grad_norm_ of bf16
    grads), so the oracle is master_weights=True on the same run (checked
    against torch above): the same masters, bit for bit."""
    _, full_p, full_opt = _scaled_clipped_run(True, torch.bfloat16, backend)
    _, split_p, split_opt = _scaled_clipped_run("remainder", torch.bfloat16, backend)
    for a, b in zip(_masters(full_opt, full_p), _masters(split_opt, split_p)):
        assert torch.equal(a.cpu().view(torch.int32), b.view(torch.int32))


@pytest.mark.parametrize("mode", [True, "remainder"])
def test_compiled_steps_update_masters_like_eager_ones(mode, backend):
    def run(compiled):
        p = torch.nn.Parameter(torch.linspace(-1, 1, 40, dtype=torch.bfloat16))
        opt = fusedlr.AdamW([p], lr=0.1, schedule=S.Cosine(10), backend=backend, master_weights=mode)
        torch._dynamo.reset()  # opt.step compiled per optimizer: not against the whole session's recompile limit
        step = torch.compile(opt.step, fullgraph=True, backend="eager") if compiled else opt.step
        for i in range(4):
            p.grad = torch.linspace(0, 2 + i, 40, dtype=torch.bfloat16)
            step()
        return p.detach().clone(), _masters(opt, [p])[0].clone()

    (eager_p, eager_m), (compiled_p, compiled_m) = run(False), run(True)
    assert torch.equal(eager_p, compiled_p) and torch.equal(eager_m, compiled_m)


def test_a_master_of_the_wrong_dtype_is_refused_by_name():
    p = torch.nn.Parameter(torch.ones(3, dtype=torch.bfloat16))
    opt = fusedlr.AdamW([p], master_weights=True)
    opt.state[p]["master_param"] = torch.ones(3, dtype=torch.bfloat16)
    p.grad = torch.ones_like(p)
    with pytest.raises(RuntimeError, match="master_param.*kept in float32"):
        opt.step()


def test_master_weights_must_be_a_bool_or_remainder():
    with pytest.raises(TypeError, match="master_weights must be True, False or 'remainder'"):
        fusedlr.SGD([torch.nn.Parameter(torch.ones(1))], master_weights="yes")


def test_remainders_refuse_fp16_params_by_name():
    params = [torch.nn.Parameter(torch.ones(2, dtype=torch.bfloat16)), torch.nn.Parameter(torch.ones(2).half())]
    with pytest.raises(TypeError, match=r"params'\]\[1\].*float16.*master_weights=True"):
        fusedlr.AdamW(params, master_weights="remainder")


def test_fp32_params_keep_no_low_halves():
    p = torch.nn.Parameter(torch.ones(3))
    opt = fusedlr.AdamW([p], master_weights="remainder")
    p.grad = torch.ones_like(p)
    opt.step()
    assert sorted(opt.state[p]) == ["exp_avg", "exp_avg_sq", "step"]
