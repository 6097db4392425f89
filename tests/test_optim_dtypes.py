"""Half-precision params: maths in fp32, state in the param dtype. The native
kernel's error against an fp32 run must be no more than ~2x the pure-PyTorch
reference's own error; single steps round exactly as torch's conversions do."""
import pytest
import torch

import fusedlr
from optim_oracle import clone_params, device_for, grads_for_step, make_params, max_relative_error, set_grads

HALF_TYPES = [torch.float16, torch.bfloat16]


def _trajectory(dtype, backend, make, steps=100):
    base32 = make_params()
    params = clone_params([p.to(dtype) for p in base32], device_for(backend))
    opt = make(params, backend)
    for step in range(steps):
        set_grads(params, [None if g is None else g.to(dtype) for g in grads_for_step(base32, step)])
        opt.step()
    return params, opt


MAKERS = {
    "adamw": lambda ps, b: fusedlr.AdamW(ps, lr=1e-2, weight_decay=0.1, amsgrad=True, backend=b),
    "sgd": lambda ps, b: fusedlr.SGD(ps, lr=0.02, momentum=0.9, nesterov=True, weight_decay=1e-3, backend=b),
}


@pytest.mark.parametrize("dtype", HALF_TYPES, ids=str)
@pytest.mark.parametrize("name", sorted(MAKERS))
def test_half_precision_error_is_within_twice_the_reference_error(name, dtype, native_backend):
    exact, _ = _trajectory(torch.float32, "reference", MAKERS[name])
    reference, _ = _trajectory(dtype, "reference", MAKERS[name])
    native, opt = _trajectory(dtype, native_backend, MAKERS[name])
    ref_error = max_relative_error(exact, reference)
    native_error = max_relative_error(exact, native)
    assert native_error <= 2 * ref_error + 1e-6, (native_error, ref_error)
    state = opt.state[native[0]]
    assert all(state[k].dtype == dtype for k in state if k != "step")


@pytest.mark.parametrize("dtype", HALF_TYPES, ids=str)
def test_one_step_rounds_like_torch(dtype, native_backend):
    """p = 0 - lr * g for g spanning subnormals to overflow: the stored result
    equals torch's fp32 product rounded to the param dtype (incl. inf)."""
    info = torch.finfo(dtype)
    g = torch.cat([torch.logspace(-9, 0, 300) * info.tiny * 4, torch.linspace(-3, 3, 301),
                   torch.logspace(0, 1, 50) * info.max / 4, torch.tensor([0.0, -0.0])]).to(dtype)
    p = torch.nn.Parameter(torch.zeros_like(g, device=device_for(native_backend)))
    lr = 1 / 3
    opt = fusedlr.SGD([p], lr=lr, backend=native_backend)
    p.grad = g.to(p.device)
    opt.step()
    expected = (torch.zeros(len(g)) + (-torch.tensor(lr, dtype=torch.float32)) * g.float()).to(dtype)
    got = p.detach().cpu()
    assert torch.equal(got.isinf(), expected.isinf())
    assert torch.equal(got[~got.isinf()], expected[~expected.isinf()])


CPU_TILE_MAKERS = {
    "adamw-amsgrad": lambda ps, b: fusedlr.AdamW(ps, lr=1e-2, weight_decay=0.1, amsgrad=True, backend=b),
    "adam-l2": lambda ps, b: fusedlr.Adam(ps, lr=1e-2, weight_decay=0.1, backend=b),
    "sgd-nesterov": lambda ps, b: fusedlr.SGD(ps, lr=0.02, momentum=0.9, nesterov=True, weight_decay=1e-3,
                                              backend=b),
    "sgd-dampened": lambda ps, b: fusedlr.SGD(ps, lr=0.02, momentum=0.9, dampening=0.3, backend=b),
    "sgd-plain": lambda ps, b: fusedlr.SGD(ps, lr=0.02, backend=b),
}


@pytest.mark.parametrize("dtype", HALF_TYPES, ids=str)
@pytest.mark.parametrize("name", sorted(CPU_TILE_MAKERS))
def test_cpu_half_steps_equal_the_kernels_element_loops(name, dtype):
    """The CPU backend updates fp16/bf16 tensors in fp32 tiles (widened, updated,
    narrowed); the CUDA kernels' source, run on the host, updates them element by
    element with the same maths. Params and states agree bit for bit, on sizes
    around the tile (128) and past a work chunk (32768)."""
    if "emulated" not in fusedlr.available_backends():
        pytest.skip("the emulated kernels are not built")
    gen = torch.Generator().manual_seed(7)
    shapes = [(1,), (127,), (129,), (3, 43), (70_001,)]
    start = [torch.randn(s, generator=gen).to(dtype) for s in shapes]
    grads = [[torch.randn(s, generator=gen).to(dtype) for s in shapes] for _ in range(4)]
    runs = {}
    for backend in ("cpu", "emulated"):
        params = [torch.nn.Parameter(t.clone()) for t in start]
        opt = CPU_TILE_MAKERS[name](params, backend)
        for step_grads in grads:
            set_grads(params, [g.clone() for g in step_grads])
            opt.step()
        runs[backend] = (params, opt)
    (cpu_params, cpu_opt), (emulated_params, emulated_opt) = runs["cpu"], runs["emulated"]
    for p, q in zip(cpu_params, emulated_params):
        assert torch.equal(p.view(torch.int16), q.view(torch.int16))
        for key, value in cpu_opt.state[p].items():
            if key != "step":
                assert torch.equal(value.view(torch.int16), emulated_opt.state[q][key].view(torch.int16)), key
