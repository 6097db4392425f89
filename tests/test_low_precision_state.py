"""state_dtype=torch.bfloat16: optimizer states kept in bf16 beside fp32
params (or fp32 masters), maths in fp32. Every backend computes the same
thing (the pure-PyTorch reference is the oracle); against the fp32-state run
(itself torch.optim's trajectory) the error is bounded and documented."""
import pytest
import torch

import fusedlr
from fusedlr import schedules as S
from optim_oracle import clone_params, device_for, grads_for_step, make_params, max_relative_error, set_grads

KINDS = {
    "adamw": (fusedlr.AdamW, dict(lr=1e-2, weight_decay=0.1)),
    "adamw-amsgrad": (fusedlr.AdamW, dict(lr=1e-2, amsgrad=True)),
    "adam-l2": (fusedlr.Adam, dict(lr=1e-2, weight_decay=0.1)),
    "sgd-momentum": (fusedlr.SGD, dict(lr=0.05, momentum=0.9, nesterov=True)),
}


def _run(kind, backend, dtype=torch.float32, steps=6, **options):
    cls, hyper = KINDS[kind]
    base = [p.to(dtype) for p in make_params()]
    params = clone_params(base, device_for(backend))
    opt = cls(params, schedule=S.Cosine(10), backend=backend, **hyper, **options)
    for step in range(steps):
        set_grads(params, [None if g is None else g.to(dtype) for g in grads_for_step(base, step)])
        opt.step()
    return params, opt


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("master", [False, True], ids=["fp32-params", "bf16-master"])
@pytest.mark.parametrize("stochastic", [False, True], ids=["nearest", "stochastic"])
def test_native_backends_compute_what_the_reference_computes(kind, master, stochastic, native_backend):
    dtype, options = (torch.bfloat16, dict(master_weights=True)) if master else (torch.float32, {})
    options["stochastic_rounding"] = stochastic
    expected, ref_opt = _run(kind, "reference", dtype, state_dtype=torch.bfloat16, **options)
    actual, opt = _run(kind, native_backend, dtype, state_dtype=torch.bfloat16, **options)
    for p in actual:
        assert all(v.dtype == torch.bfloat16 for k, v in opt.state[p].items() if k not in ("step", "master_param"))
    if stochastic:  # a last-ulp difference in fp32 may flip a stochastic rounding: one bf16 ulp of a moment
        flipped = sum(int((ref_opt.state[e][k] != opt.state[a][k]).sum()) for e, a in zip(expected, actual)
                      for k in ("exp_avg", "exp_avg_sq", "momentum_buffer") if k in opt.state[a])
        assert flipped <= 1e-3 * sum(p.numel() for p in actual)
    if master:
        expected = [ref_opt.state[p]["master_param"] for p in expected]
        actual = [opt.state[p]["master_param"] for p in actual]
    assert max_relative_error(expected, actual) < (5e-5 if stochastic else 2e-6)


def test_bf16_moments_stay_close_to_the_fp32_run():
    """AdamW, 300 steps on a least-squares problem: bf16 moments against fp32
    moments (the latter matching torch.optim.AdamW), both from the same start."""
    gen = torch.Generator().manual_seed(0)
    x, w_true = torch.randn(256, 64, generator=gen), torch.randn(64, 8, generator=gen)
    y = x @ w_true
    runs = {}
    for name, options in (("torch", None), ("fp32", {}), ("bf16", dict(state_dtype=torch.bfloat16))):
        w = torch.nn.Parameter(torch.zeros(64, 8))
        opt = torch.optim.AdamW([w], lr=1e-2) if options is None else fusedlr.AdamW([w], lr=1e-2, **options)
        for _ in range(300):
            loss = (x @ w - y).square().mean()
            w.grad = None
            loss.backward()
            opt.step()
        runs[name] = (w.detach().clone(), float((x @ w - y).square().mean().detach()))
    assert max_relative_error([runs["torch"][0]], [runs["fp32"][0]]) < 1e-5
    error = max_relative_error([runs["fp32"][0]], [runs["bf16"][0]])
    # measured: 1.1e-2 after 100 steps, 2.8e-2 after 300, 5.7e-3 after 1000 (README)
    assert error < 5e-2, error
    assert runs["bf16"][1] < 1.5 * runs["fp32"][1] + 1e-3


def test_state_bytes_with_bf16_moments():
    fp32, bf16 = torch.nn.Parameter(torch.ones(1000)), torch.nn.Parameter(torch.ones(1000, dtype=torch.bfloat16))
    opt = fusedlr.AdamW([fp32, bf16], state_dtype=torch.bfloat16, master_weights=True)
    sizes = {id(p): {k: v.nbytes for k, v in opt.state[p].items() if k != "step"} for p in (fp32, bf16)}
    assert sizes[id(fp32)] == {"exp_avg": 2000, "exp_avg_sq": 2000}  # 4 bytes per param instead of 8
    assert sizes[id(bf16)] == {"master_param": 4000, "exp_avg": 2000, "exp_avg_sq": 2000}


def test_fp64_and_plain_half_params_keep_their_own_state_dtype():
    """bf16 states apply beside fp32 maths only: fp64 params keep fp64 state,
    bf16 params without masters bf16 state, fp16 ones fp16."""
    params = [torch.nn.Parameter(torch.ones(3, dtype=d)) for d in (torch.float64, torch.bfloat16, torch.float16)]
    opt = fusedlr.AdamW(params, state_dtype=torch.bfloat16)
    assert [opt.state[p]["exp_avg"].dtype for p in params] == [torch.float64, torch.bfloat16, torch.float16]


def test_a_checkpoint_keeps_bf16_states_and_resumes_exactly(backend):
    def run(steps, resume_from=None):
        torch.manual_seed(0)
        p = torch.nn.Parameter(torch.randn(40, device=device_for(backend)))
        opt = fusedlr.AdamW([p], lr=1e-2, state_dtype=torch.bfloat16, backend=backend)
        first = 0
        if resume_from is not None:
            with torch.no_grad():
                p.copy_(resume_from[0])
            opt.load_state_dict(resume_from[1])
            first = int(opt.step_count)
        for step in range(first, steps):
            p.grad = torch.randn(40, generator=torch.Generator().manual_seed(step)).to(p.device)
            opt.step()
        return p, opt

    through, _ = run(6)
    half_p, half = run(3)
    saved = half.state_dict()
    assert saved["state"][0]["exp_avg"].dtype == torch.bfloat16
    resumed, _ = run(6, (half_p.detach().clone(), saved))
    assert torch.equal(resumed.detach(), through.detach())


def test_other_state_dtypes_are_refused_by_name():
    with pytest.raises(ValueError, match="state_dtype"):
        fusedlr.AdamW([torch.nn.Parameter(torch.ones(2))], state_dtype=torch.float16)


def _first_momentum_buffer(backend, value, n, stochastic):
    """SGD's first step stores buf = grad exactly in fp32: its bf16 rounding alone."""
    p = torch.nn.Parameter(torch.zeros(n, device=device_for(backend)))
    opt = fusedlr.SGD([p], lr=0.1, momentum=0.9, state_dtype=torch.bfloat16, stochastic_rounding=stochastic,
                      backend=backend)
    p.grad = torch.full_like(p, value)
    opt.step()
    return opt.state[p]["momentum_buffer"].cpu()


def test_stochastic_rounding_is_unbiased_and_the_same_on_every_backend(backend):
    value = 1 + 2 ** -9  # a quarter of the way between two bf16 neighbours (1 and 1 + 2**-7)
    nearest = _first_momentum_buffer(backend, value, 100_000, False)
    stochastic = _first_momentum_buffer(backend, value, 100_000, True)
    assert torch.equal(nearest, torch.ones(100_000, dtype=torch.bfloat16))  # to nearest: always down, biased
    assert set(stochastic.float().unique().tolist()) == {1.0, 1 + 2 ** -7}
    assert float(stochastic.float().mean()) == pytest.approx(value, abs=3e-5)  # unbiased
    # the random bits are the kernels' hash of (tensor, update count, element): the reference equals them
    assert torch.equal(stochastic, _first_momentum_buffer("reference", value, 100_000, True))


def test_stochastic_rounding_runs_are_reproducible_and_track_the_fp32_run(backend):
    runs = [_run("adamw", backend, state_dtype=torch.bfloat16, stochastic_rounding=True)[0] for _ in range(2)]
    assert all(torch.equal(a, b) for a, b in zip(*runs))
    fp32, _ = _run("adamw", backend)
    assert max_relative_error(fp32, runs[0]) < 5e-2


def test_stochastic_rounding_needs_bf16_states():
    with pytest.raises(ValueError, match="stochastic_rounding.*state_dtype"):
        fusedlr.AdamW([torch.nn.Parameter(torch.ones(2))], stochastic_rounding=True)
