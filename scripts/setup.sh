#!/usr/bin/env bash
# Sets up .venv in the repository root and builds fusedlr from source into it.
# Usage: scripts/setup.sh [extra]   (extra: test, plot, or "test,plot")
# torch is installed (2.13.0, CPU wheel) only when no torch is importable, so
# a machine's own torch build (e.g. a CUDA one) is never replaced.
set -euo pipefail
cd "$(dirname "$0")/.."
extra="${1:-}"
python="${PYTHON:-python3}"

if [ ! -x .venv/bin/python ]; then
  # system site packages: reuse an installed torch instead of downloading one
  "$python" -m venv --system-site-packages .venv
fi
. .venv/bin/activate

have() { python -c "import $1" 2>/dev/null; }
have torch || pip install -q torch==2.13.0
missing=()
have scikit_build_core || missing+=("scikit-build-core>=0.10")
have pybind11 || missing+=("pybind11>=2.12")
command -v ninja >/dev/null || have ninja || missing+=(ninja)
command -v cmake >/dev/null || missing+=("cmake>=3.18")
have numpy || missing+=(numpy)
# transformers, accelerate, pytorch-lightning: the trainer tests run fusedlr inside them
case ",$extra," in *,test,*) have pytest || missing+=(pytest); have hypothesis || missing+=(hypothesis)
  have transformers || missing+=(transformers); have accelerate || missing+=(accelerate)
  have pytorch_lightning || missing+=(pytorch-lightning);; esac
case ",$extra," in *,plot,*) have matplotlib || missing+=(matplotlib);; esac
[ ${#missing[@]} -eq 0 ] || pip install -q "${missing[@]}"
# with nvcc, the tests read the built kernels' SASS: cuobjdump and nvdisasm come
# from NVIDIA's wheels where the toolkit lacks them (best effort: offline is fine)
if case ",$extra," in *,test,*) true;; *) false;; esac && { command -v nvcc >/dev/null || [ -x /usr/local/cuda/bin/nvcc ]; }; then
  { command -v cuobjdump >/dev/null && command -v nvdisasm >/dev/null; } \
    || python -c "import glob,sysconfig,sys; sys.exit(not glob.glob(sysconfig.get_paths()['purelib'] + '/nvidia/*/bin/nvdisasm'))" \
    || pip install -q nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm || echo "setup: no cuobjdump/nvdisasm: the SASS tests will skip"
fi

# no build isolation: compile against the torch in this environment
pip install -q --no-build-isolation --no-deps .
# from outside the source tree, so the installed package (with its compiled modules) is the one imported
(cd "${TMPDIR:-/tmp}" && python -c "import fusedlr, json; print(json.dumps(fusedlr.build_info()))")
