"""state_dtype="int8": Adam(W)'s moments as block-wise 8-bit codes (an fp8 e4m3
code of 256 value / absmax per element, one fp32 absmax per block of 256;
exp_avg_sq kept as its root). Oracles: torch.optim's fp32 moments, the e4m3
format written out here from its definition, an fp32 training run."""
import numpy as np
import pytest
import torch

import fusedlr
from optim_oracle import device_for

BLOCK = 256
NATIVE = [b for b in ("cpu", "emulated") if b in fusedlr.available_backends()] + [pytest.param(
    "cuda", marks=pytest.mark.skipif("cuda" not in fusedlr.available_backends(), reason="no usable CUDA device"))]
BACKENDS = ["reference", *NATIVE]


def _e4m3_values() -> np.ndarray:
    """The value of each byte as an fp8 e4m3fn number (sign, 4 exponent bits
    biased by 7, 3 mantissa bits; exponent 0 subnormal; 0x7f/0xff nan)."""
    values = np.empty(256)
    for code in range(256):
        sign = -1.0 if code & 0x80 else 1.0
        exponent, mantissa = (code >> 3) & 15, code & 7
        if exponent == 15 and mantissa == 7:
            values[code] = np.nan
        elif exponent == 0:
            values[code] = sign * mantissa / 8 * 2.0 ** -6
        else:
            values[code] = sign * (1 + mantissa / 8) * 2.0 ** (exponent - 7)
    return values


E4M3 = _e4m3_values()


def _decoded(codes: torch.Tensor, scales: torch.Tensor) -> np.ndarray:
    """The values the codes stand for: e4m3 value / 256 * the block's absmax."""
    c = codes.cpu().numpy().reshape(-1)
    per = np.repeat(scales.cpu().double().numpy(), BLOCK)[:c.size]
    return E4M3[c] / 256 * per


def _assert_nearest(codes: torch.Tensor, scales: torch.Tensor, exact: torch.Tensor, root: bool = False) -> None:
    """Each block's absmax is the largest |exact| of the block, and each code the
    e4m3 value nearest to 256 exact / absmax (no other code is closer); for a
    root, a value above zero nearest to code 0 keeps code 1."""
    x = exact.detach().double().cpu().numpy().reshape(-1)
    blocks = np.pad(np.abs(x), (0, (-x.size) % BLOCK)).reshape(-1, BLOCK).max(axis=1)
    np.testing.assert_allclose(scales.cpu().double().numpy(), blocks, rtol=1e-6, atol=0)
    per = np.repeat(blocks, BLOCK)[:x.size]
    relative = np.where(per > 0, 256 * x / np.where(per > 0, per, 1), 0)
    finite = E4M3[~np.isnan(E4M3)]
    best = np.abs(relative[:, None] - finite[None, :]).min(axis=1)
    c = codes.cpu().numpy().reshape(-1)
    got = np.abs(relative - E4M3[c])
    floored = root & (x > 0) & (c == 1) & (np.abs(relative) <= best * (1 + 1e-6) + 1e-12)  # nearest: code 0
    assert np.all((got <= best * (1 + 1e-6) + 1e-12) | floored), np.max(got - best)


def _assert_neighbours(codes: torch.Tensor, scales: torch.Tensor, exact: torch.Tensor, root: bool = False) -> None:
    """Stochastic codes: each block's absmax is the largest |exact| of the block,
    and each code one of the two e4m3 values around 256 exact / absmax (for a
    root above zero below the smallest code, the smallest code)."""
    x = exact.detach().double().cpu().numpy().reshape(-1)
    blocks = np.pad(np.abs(x), (0, (-x.size) % BLOCK)).reshape(-1, BLOCK).max(axis=1)
    np.testing.assert_allclose(scales.cpu().double().numpy(), blocks, rtol=1e-6, atol=0)
    per = np.repeat(blocks, BLOCK)[:x.size]
    relative = np.where(per > 0, 256 * x / np.where(per > 0, per, 1), 0)
    finite = np.sort(np.unique(E4M3[~np.isnan(E4M3)]))
    got = E4M3[codes.cpu().numpy().reshape(-1)]
    slack = 1e-6 * np.abs(relative) + 1e-12  # our fp32 moments may be an ulp from torch's
    below = finite[np.clip(np.searchsorted(finite, relative - slack, side="right") - 1, 0, None)]
    above = finite[np.clip(np.searchsorted(finite, relative + slack, side="left"), None, finite.size - 1)]
    ok = (got >= below) & (got <= above)
    if root:
        ok |= (x > 0) & (got == E4M3[1]) & (relative < E4M3[1])
    assert ok.all(), (relative[~ok][:5], got[~ok][:5])


@pytest.mark.parametrize("backend", BACKENDS)
def test_codes_are_neighbours_of_torch_fp32_moments(backend):
    """After a step the codes decode to one of the two e4m3 values around the
    moments torch.optim.AdamW keeps in fp32 (exp_avg, and the root of
    exp_avg_sq), block by block, on sizes around the block (1, 255, 257, 1000)."""
    device = device_for(backend)
    gen = torch.Generator().manual_seed(3)
    for numel in (1, 255, 257, 1000):
        start = torch.randn(numel, generator=gen)
        p = torch.nn.Parameter(start.to(device))
        q = torch.nn.Parameter(start.clone())
        ours = fusedlr.AdamW([p], lr=1e-3, state_dtype="int8", backend=backend)
        theirs = torch.optim.AdamW([q], lr=1e-3)
        g = torch.randn(numel, generator=gen) * torch.logspace(-4, 1, numel)  # a wide range within each block
        p.grad, q.grad = g.to(device), g.clone()
        ours.step()
        theirs.step()
        st = ours.state[p]
        _assert_neighbours(st["exp_avg"], st["state_scales"][0], theirs.state[q]["exp_avg"])
        _assert_neighbours(st["exp_avg_sq"], st["state_scales"][1], theirs.state[q]["exp_avg_sq"].sqrt(), root=True)
        torch.testing.assert_close(p.detach().cpu(), q.detach(), rtol=0, atol=1e-6)  # one step: from exact moments


@pytest.mark.parametrize("backend", BACKENDS)
def test_stochastic_codes_are_unbiased(backend):
    """The same values coded at 64 update counts (other random bits each time):
    the mean of what the codes stand for is the value, within the sampling
    error, where rounding to nearest would be off by up to half a code (6%)."""
    device = device_for(backend)
    values = torch.linspace(0.30, 0.31, BLOCK - 1).tolist() + [1.0]  # between two codes (0.3125 and 0.28125)
    exact = torch.tensor(values)
    decoded = []
    for count in range(64):
        p = torch.nn.Parameter(torch.zeros(BLOCK, device=device))
        opt = fusedlr.AdamW([p], lr=0.0, betas=(0.0, 0.999), state_dtype="int8", backend=backend)
        opt.state[p]["step"].fill_(count)
        p.grad = exact.to(device)  # beta1 = 0: exp_avg = the grad
        opt.step()
        st = opt.state[p]
        decoded.append(_decoded(st["exp_avg"], st["state_scales"][0]))
    mean = np.mean(decoded, axis=0)
    assert np.abs(mean[:-1] - exact.numpy()[:-1]).max() < 0.006  # > 3 standard errors of 64 draws of a 0.03 step
    assert np.abs(np.mean(decoded, axis=1).mean() - exact.numpy().mean()) < 1e-3


@pytest.mark.parametrize("backend", BACKENDS)
def test_small_root_beside_a_stalled_block_keeps_updates_bounded(backend):
    """A block whose largest element gets one big grad and then none, beside an
    element with steady tiny grads, each step's growth of its root far below
    a code. Rounded to nearest, its root froze at zero or at the smallest code
    while its exp_avg, whose block's largest value shrinks faster, was kept
    again: its update grew to 15x Adam's (19x by step 4000). Rounded
    stochastically, with a root above zero keeping the smallest code, its
    update stays near Adam's (measured: at most 1.44x over 400 steps, 1.6x
    over 6000, its displacement 1.05x fp32's)."""
    device = device_for(backend)
    grads = torch.zeros(BLOCK)
    grads[1] = 1e-6
    p = torch.nn.Parameter(torch.zeros(BLOCK, device=device))
    q = torch.nn.Parameter(torch.zeros(BLOCK))
    ours = fusedlr.AdamW([p], lr=1e-3, weight_decay=0.0, state_dtype="int8", backend=backend)
    theirs = torch.optim.AdamW([q], lr=1e-3, weight_decay=0.0)
    worst = 0.0
    for step in range(400):
        g = grads.clone()
        g[0] = 1.0 if step == 0 else 0.0
        before_p, before_q = p.detach()[1].item(), q.detach()[1].item()
        p.grad, q.grad = g.to(device), g
        ours.step()
        theirs.step()
        worst = max(worst, abs(p.detach()[1].item() - before_p) / abs(q.detach()[1].item() - before_q))
    assert worst < 2.5, worst


def test_codes_without_their_scales_are_refused():
    p = torch.nn.Parameter(torch.randn(10))
    opt = fusedlr.AdamW([p], state_dtype="int8")
    del opt.state[p]["state_scales"]
    p.grad = torch.randn(10)
    with pytest.raises(RuntimeError, match="holds 8-bit codes but the state has no 'state_scales'"):
        opt.step()


@pytest.mark.skipif("cuda" not in fusedlr.available_backends(), reason="no usable CUDA device")
def test_cuda_kernels_track_the_cpu_loops_over_steps():
    """Several steps on the GPU (decoding, the absmax reduction of 256 threads),
    against the CPU loops: the GPU may contract products into FMAs, so codes may
    differ where a moment sits on a rounding boundary; nearly all are equal."""
    gen = torch.Generator().manual_seed(13)
    shapes = [(1,), (255,), (257,), (70_001,)]
    start = [torch.randn(s, generator=gen) for s in shapes]
    grads = [[torch.randn(s, generator=gen) for s in shapes] for _ in range(6)]
    runs = {}
    for device in ("cpu", "cuda"):
        ps = [torch.nn.Parameter(t.to(device)) for t in start]
        opt = fusedlr.AdamW(ps, lr=1e-2, weight_decay=0.1, state_dtype="int8")
        _steps(opt, ps, [[g.to(device) for g in step] for step in grads])
        runs[device] = [(p.detach().cpu(), {k: v.cpu() for k, v in opt.state[p].items()}) for p in ps]
    for (p, st), (q, sq) in zip(runs["cpu"], runs["cuda"]):
        apart = ~torch.isclose(p, q, rtol=1e-5, atol=1e-6)
        assert apart.sum() <= max(2, apart.numel() // 20)
        torch.testing.assert_close(st["state_scales"], sq["state_scales"], rtol=1e-3, atol=0)
        for key in ("exp_avg", "exp_avg_sq"):
            differ = (st[key].int() - sq[key].int()).abs()
            assert differ.max() <= 4 and (differ > 0).sum() <= max(2, differ.numel() // 20), key


def _train(make, steps=300):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(32, 128), torch.nn.GELU(), torch.nn.Linear(128, 1))
    teacher = torch.nn.Sequential(torch.nn.Linear(32, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    opt = make(model.parameters())
    gen = torch.Generator().manual_seed(1)
    losses = []
    for _ in range(steps):
        x = torch.randn(64, 32, generator=gen)
        with torch.no_grad():
            y = teacher(x)
        loss = torch.nn.functional.mse_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return model, losses


def test_training_error_against_fp32_is_bounded():
    """A 300-step regression: 8-bit moments reach the fp32 run's loss within 10%
    (measured: 1% lower), and every weight tensor stays within 10% relative
    (Frobenius) of the fp32 run's (measured: 0.6-4.2%; bf16 moments 0.07-0.3%)."""
    exact, exact_losses = _train(lambda ps: torch.optim.AdamW(ps, lr=1e-3, weight_decay=0.01))
    coded, coded_losses = _train(lambda ps: fusedlr.AdamW(ps, lr=1e-3, weight_decay=0.01, state_dtype="int8"))
    final, exact_final = np.mean(coded_losses[-20:]), np.mean(exact_losses[-20:])
    assert final <= 1.10 * exact_final, (final, exact_final)
    assert exact_losses[0] > 20 * exact_final  # it did learn
    for a, b in zip(coded.parameters(), exact.parameters()):
        assert ((a - b).norm() / b.norm()).item() < 0.1


@pytest.mark.parametrize("params", ["fp32", "bf16-master", "fp16-master"])
@pytest.mark.parametrize("kind", ["adamw", "adam"])
def test_native_kernels_agree_with_each_other_and_the_reference(kind, params):
    """The CPU loops and the CUDA kernels' source (run on the host) give the same
    bits; against the reference (tensor ops, whose fp32 Adam maths may round
    an ulp apart) the params agree to 1e-5 and nearly every code is the same.
    Sizes around the block (256), past a CPU chunk (32768) and a CUDA one (65536)."""
    if "emulated" not in fusedlr.available_backends():
        pytest.skip("the emulated kernels are not built")
    make = {"adamw": fusedlr.AdamW, "adam": fusedlr.Adam}[kind]
    dtype = {"fp32": torch.float32, "bf16-master": torch.bfloat16, "fp16-master": torch.float16}[params]
    gen = torch.Generator().manual_seed(11)
    shapes = [(1,), (255,), (256,), (257,), (3, 43), (70_001,)]
    start = [torch.randn(s, generator=gen).to(dtype) for s in shapes]
    grads = [[torch.randn(s, generator=gen).to(dtype) for s in shapes] for _ in range(4)]
    runs = {}
    for backend in ("reference", "cpu", "emulated"):
        ps = [torch.nn.Parameter(t.clone()) for t in start]
        opt = make(ps, lr=1e-2, weight_decay=0.1, state_dtype="int8", master_weights=dtype != torch.float32,
                   backend=backend)
        _steps(opt, ps, grads)
        runs[backend] = [(p.detach().clone(), opt.state[p]) for p in ps]
    for (p, st), (q, sq), (r, sr) in zip(runs["cpu"], runs["emulated"], runs["reference"]):
        assert torch.equal(p, q)
        for key in st:
            assert torch.equal(st[key], sq[key]), key
        # an ulp apart in fp32 can put a moment on the other side of a code's rounding
        # threshold (one code: 1/8 of its value); the updates that read it then differ
        master, reference = st.get("master_param", p).float(), sr.get("master_param", r).float()
        apart = ~torch.isclose(master, reference, rtol=1e-5, atol=1e-6)
        assert apart.sum() <= max(2, apart.numel() // 20)
        assert (master - reference).abs().max() <= 4 * 1e-2 / 4  # steps x lr x a quarter of the update
        for key in ("exp_avg", "exp_avg_sq"):
            differ = (st[key].int() - sr[key].int()).abs()
            assert differ.max() <= 4 and (differ > 0).sum() <= max(2, differ.numel() // 20), key


def test_state_bytes_per_param():
    """Two bytes per element plus 8 per block of 256 (and the step count)."""
    p = torch.nn.Parameter(torch.zeros(4096))
    opt = fusedlr.AdamW([p], state_dtype="int8")
    state = opt.state[p]
    moments = sum(t.numel() * t.element_size() for k, t in state.items() if k != "step")
    assert moments == 2 * 4096 + 2 * 4 * (4096 // BLOCK)
    assert state["exp_avg"].dtype == torch.uint8 and state["state_scales"].shape == (2, 4096 // BLOCK)


def _steps(opt, params, grads):
    for step_grads in grads:
        for p, g in zip(params, step_grads):
            p.grad = g.clone()
        opt.step()


def test_checkpoint_resumes_bit_exactly():
    gen = torch.Generator().manual_seed(5)
    start = [torch.randn(s, generator=gen) for s in ((300,), (7, 5))]
    grads = [[torch.randn_like(t) for t in start] for _ in range(6)]
    make = lambda ps: fusedlr.Adam(ps, lr=1e-2, weight_decay=0.1, state_dtype="int8")  # noqa: E731
    straight = [torch.nn.Parameter(t.clone()) for t in start]
    _steps(make(straight), straight, grads)
    first = [torch.nn.Parameter(t.clone()) for t in start]
    opt = make(first)
    _steps(opt, first, grads[:3])
    saved = opt.state_dict()
    resumed = [torch.nn.Parameter(p.detach().clone()) for p in first]
    opt2 = make(resumed)
    opt2.load_state_dict(saved)
    _steps(opt2, resumed, grads[3:])
    for a, b in zip(resumed, straight):
        assert torch.equal(a, b)


def test_checkpoints_of_the_other_form_load():
    """fp32 moments saved by state_dtype=None load into an 8-bit optimizer as
    their nearest codes, and 8-bit moments load into an fp32 one as the values
    the codes stand for."""
    gen = torch.Generator().manual_seed(9)
    p = torch.nn.Parameter(torch.randn(600, generator=gen))
    fp32_opt = fusedlr.AdamW([p], lr=1e-2)
    p.grad = torch.randn(600, generator=gen)
    fp32_opt.step()
    coded_opt = fusedlr.AdamW([p], lr=1e-2, state_dtype="int8")
    coded_opt.load_state_dict(fp32_opt.state_dict())
    st, exact = coded_opt.state[p], fp32_opt.state[p]
    _assert_nearest(st["exp_avg"], st["state_scales"][0], exact["exp_avg"])
    _assert_nearest(st["exp_avg_sq"], st["state_scales"][1], exact["exp_avg_sq"].sqrt(), root=True)
    assert st["step"].item() == 1

    back = fusedlr.AdamW([p], lr=1e-2)
    back.load_state_dict(coded_opt.state_dict())
    decoded = _decoded(st["exp_avg"], st["state_scales"][0])
    root = _decoded(st["exp_avg_sq"], st["state_scales"][1])
    np.testing.assert_allclose(back.state[p]["exp_avg"].double().numpy(), decoded, rtol=1e-6, atol=0)
    np.testing.assert_allclose(back.state[p]["exp_avg_sq"].double().numpy(), root * root, rtol=1e-5, atol=0)


def test_skipped_step_keeps_codes_and_scales():
    """A step GradScaler finds inf in changes no code and no absmax."""
    p = torch.nn.Parameter(torch.randn(500))
    opt = fusedlr.AdamW([p], lr=1e-2, state_dtype="int8")
    p.grad = torch.randn(500)
    opt.step()
    before = {k: v.clone() for k, v in opt.state[p].items()}
    param = p.detach().clone()
    opt.found_inf, opt.grad_scale = torch.ones(1), torch.ones(1)
    p.grad = torch.full((500,), float("inf"))
    opt.step()
    for k, v in opt.state[p].items():
        assert torch.equal(v, before[k]), k
    assert torch.equal(p.detach(), param)


def test_master_weights_with_int8_moments_update_the_fp32_run():
    """bf16 params with fp32 masters and 8-bit moments: the masters are the
    fp32-param run's params (same bf16-valued grads), bit for bit."""
    gen = torch.Generator().manual_seed(2)
    start = torch.randn(700, generator=gen).bfloat16()
    grads = [torch.randn(700, generator=gen).bfloat16() for _ in range(4)]
    half = torch.nn.Parameter(start.clone())
    full = torch.nn.Parameter(start.float())
    opt_half = fusedlr.AdamW([half], lr=1e-2, master_weights=True, state_dtype="int8")
    opt_full = fusedlr.AdamW([full], lr=1e-2, state_dtype="int8")
    for g in grads:
        half.grad, full.grad = g.clone(), g.float()
        opt_half.step()
        opt_full.step()
    assert torch.equal(opt_half.state[half]["master_param"], full.detach())
    assert torch.equal(half.detach(), full.detach().bfloat16())


def test_compiled_step_equals_eager():
    """Traced by Dynamo in one graph: the same ops, the same bits. Compiled by
    Inductor (the coding ops opaque to it; its CPU code for the Adam maths may
    round sqrt and products differently): close."""
    torch._dynamo.reset()
    gen = torch.Generator().manual_seed(4)
    start = torch.randn(300, generator=gen)
    grads = [torch.randn(300, generator=gen) for _ in range(3)]
    runs = []
    for compiler in (None, "eager", "inductor"):
        p = torch.nn.Parameter(start.clone())
        opt = fusedlr.AdamW([p], lr=1e-2, state_dtype="int8")
        step = opt.step if compiler is None else torch.compile(opt.step, backend=compiler, fullgraph=True)
        for g in grads:
            p.grad = g.clone()
            step()
        runs.append((p.detach().clone(), {k: v.clone() for k, v in opt.state[p].items()}))
    (eager, eager_state), (traced, traced_state), (inductor, _) = runs
    assert torch.equal(eager, traced)
    for k, v in eager_state.items():
        assert torch.equal(v, traced_state[k]), k
    torch.testing.assert_close(inductor, eager, rtol=0, atol=1e-4)


def test_refusals_name_the_argument():
    p = torch.nn.Parameter(torch.randn(3))
    with pytest.raises(ValueError, match="state_dtype='int8' keeps Adam"):
        fusedlr.SGD([p], lr=0.1, momentum=0.9, state_dtype="int8")
    with pytest.raises(ValueError, match="amsgrad=True is not supported with state_dtype='int8'"):
        fusedlr.AdamW([p], amsgrad=True, state_dtype="int8")
    opt = fusedlr.AdamW([p], state_dtype="int8")
    with pytest.raises(ValueError, match="amsgrad"):
        opt.add_param_group({"params": [torch.nn.Parameter(torch.randn(2))], "amsgrad": True})
    with pytest.raises(ValueError, match="master_weights='remainder'"):
        fusedlr.AdamW([torch.nn.Parameter(torch.randn(3).bfloat16())], master_weights="remainder", state_dtype="int8")
    with pytest.raises(TypeError, match="use master_weights=True"):
        fusedlr.AdamW([torch.nn.Parameter(torch.randn(3).bfloat16())], state_dtype="int8")
    with pytest.raises(ValueError, match="state_dtype must be None"):
        fusedlr.AdamW([p], state_dtype=torch.int8)


def test_python_and_cpp_round_codes_alike(tmp_path):
    """block_states.py's stochastic e4m3 coding (the reference backend's) and
    block_update.h's (the kernels') give the same byte for every value of a grid
    (every exponent, both signs, the subnormal boundary, 256, zeros) under a set
    of random words, including the words' extremes."""
    import shutil
    import subprocess
    from pathlib import Path

    from fusedlr.optim import block_states

    compiler = shutil.which("g++")
    if compiler is None:
        pytest.skip("no g++ to build the check")
    repo = Path(__file__).resolve().parents[1]
    exe, data = tmp_path / "codes", tmp_path / "codes.bin"
    build = subprocess.run([compiler, "-std=c++17", "-O2", "-ffp-contract=off", f"-I{repo / 'csrc'}",
                            str(repo / "tests" / "native" / "block_codes_check.cpp"), "-o", str(exe)],
                           capture_output=True, text=True)
    assert build.returncode == 0, build.stderr[-4000:]
    assert subprocess.run([str(exe), str(data)]).returncode == 0
    raw = data.read_bytes()
    count = int(np.frombuffer(raw[:4], dtype=np.uint32)[0])
    values = torch.from_numpy(np.frombuffer(raw[4:4 + 4 * count], dtype=np.float32).copy())
    codes = np.frombuffer(raw[4 + 4 * count:], dtype=np.uint8).reshape(-1, count)
    randoms = [0, 1, 0x7FFFFF, 0x800000, 0xFFFFF, 0x100000, 0x12345678, 0xDEADBEEF, 0xFFFFFFFF]
    assert codes.shape[0] == len(randoms)
    for random, expected in zip(randoms, codes):
        got = block_states._codes_of_stochastic(values, torch.full((count,), random, dtype=torch.int64))
        differ = np.nonzero(got.numpy() != expected)[0]
        assert differ.size == 0, (hex(random), values[differ[:5]].tolist(), got.numpy()[differ[:5]], expected[differ[:5]])
