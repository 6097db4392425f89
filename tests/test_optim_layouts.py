"""Native kernels against the pure-PyTorch reference on awkward memory layouts:
params at odd storage offsets (misaligned for vector loads), thousands of tiny
tensors (many chunks / launches), and — on CUDA — a tensor over 2**31 elements."""
import pytest
import torch

import fusedlr
from fusedlr import schedules as S
from optim_oracle import device_for, max_relative_error

SCHEDULE = S.with_warmup(S.Cosine(40), 5, start_factor=0.1)


def _run(params_of, backend, steps=12, kind="adamw", dtype=torch.float32):
    """Params after ``steps`` steps of deterministic grads on ``backend``."""
    params = params_of(device_for(backend), dtype)
    if kind == "adamw":
        opt = fusedlr.AdamW(params, lr=1e-2, weight_decay=0.1, schedule=SCHEDULE, backend=backend)
    else:
        opt = fusedlr.SGD(params, lr=0.1, momentum=0.9, nesterov=True, schedule=SCHEDULE, backend=backend)
    for step in range(steps):
        gen = torch.Generator().manual_seed(step)
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen).to(p.device, dtype)
        opt.step()
    return params


def _misaligned(device, dtype):
    """Leaf params that are views at storage offsets 1, 3, 5, ... of one buffer."""
    gen = torch.Generator().manual_seed(7)
    storage = torch.randn(200_000, generator=gen).to(device, dtype)
    params, offset = [], 1
    for size in (1, 3, 8, 1001, 65_537, 70_001):
        params.append(torch.nn.Parameter(storage[offset:offset + size]))
        offset += size + 2
    return params


def _many_tiny(device, dtype, count=1200):
    gen = torch.Generator().manual_seed(8)
    return [torch.nn.Parameter(torch.randn(1 + i % 7, generator=gen).to(device, dtype)) for i in range(count)]


@pytest.mark.parametrize("kind", ["adamw", "sgd"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("layout", [_misaligned, _many_tiny], ids=["misaligned", "many-tiny"])
def test_native_kernel_matches_reference(layout, dtype, kind, native_backend):
    expected = _run(layout, "reference", kind=kind, dtype=dtype)
    got = _run(layout, native_backend, kind=kind, dtype=dtype)
    # fp32: same maths, different op order; half types: one rounding of the result apart
    tolerance = 1e-5 if dtype == torch.float32 else 2 * torch.finfo(dtype).eps
    assert max_relative_error(expected, got) < tolerance


def test_a_tensor_over_2_pow_31_elements_is_updated_to_the_end():
    if "cuda" not in fusedlr.available_backends():
        pytest.skip("no usable CUDA device")
    numel = 2 ** 31 + 4099
    if torch.cuda.mem_get_info()[0] < 3 * numel * 2:
        pytest.skip("not enough free GPU memory")
    param = torch.nn.Parameter(torch.ones(numel, dtype=torch.float16, device="cuda"))
    param.grad = torch.ones_like(param)
    opt = fusedlr.SGD([param], lr=0.5, backend="cuda")
    opt.step()
    # closed form: 1 - 0.5 * 1 everywhere, including past element 2**31
    assert float(param.min()) == 0.5 and float(param.max()) == 0.5
    assert torch.equal(param[-5000:], torch.full((5000,), 0.5, dtype=torch.float16, device="cuda"))
