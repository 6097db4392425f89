#!/usr/bin/env bash
# Set up, then run the whole test suite (CUDA tests skip without a GPU).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh test,plot
. .venv/bin/activate
# nvcc on PATH means the build must have compiled the CUDA kernels; a test checks it
if [ "${FUSEDLR_CUDA:-ON}" != OFF ] && { command -v nvcc >/dev/null || [ -x /usr/local/cuda/bin/nvcc ]; }; then export FUSEDLR_EXPECT_CUDA_KERNELS=1; fi
# Linux with torch's headers: the build must have made the libtorch host module; a test checks it
if [ "${FUSEDLR_HOST_MODULE:-ON}" != OFF ] && [ "$(uname)" = Linux ] && python -c "import os, torch; \
assert os.path.exists(os.path.join(os.path.dirname(torch.__file__), 'include/torch/csrc/autograd/python_variable.h'))" 2>/dev/null; \
then export FUSEDLR_EXPECT_HOST_MODULE=1; fi
# run from tests/: "python -m" puts the working directory on sys.path, and from the
# repo root that would import the source tree (no compiled modules) instead of the build
cd tests
python -m pytest -q "$@"
