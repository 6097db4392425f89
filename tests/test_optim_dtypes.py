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
