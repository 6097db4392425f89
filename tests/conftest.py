import pytest

import fusedlr

NATIVE_BACKENDS = [
    "cpu",
    # the CUDA kernels compiled for the CPU: the GPU code, tested without a GPU
    "emulated",
    pytest.param("cuda", marks=pytest.mark.skipif(
        "cuda" not in fusedlr.available_backends(), reason="no usable CUDA device")),
]
ALL_BACKENDS = ["reference"] + NATIVE_BACKENDS


@pytest.fixture(params=ALL_BACKENDS)
def backend(request):
    return request.param


@pytest.fixture(params=NATIVE_BACKENDS)
def native_backend(request):
    return request.param
