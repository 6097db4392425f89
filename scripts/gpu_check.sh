#!/usr/bin/env bash
# Everything a GPU can tell us about fusedlr, in one call (no network needed):
#   scripts/gpu_check.sh            (results in $OUT, default out/gpu_check)
# 1. builds fusedlr from source against the installed torch, for this GPU;
# 2. runs every CUDA test (optimizer parity, graphs, compile, no-sync, kernels);
# 3. runs compute-sanitizer memcheck and racecheck over a workload that calls
#    every kernel (each dtype, odd and misaligned sizes, a graph replay);
# 4. runs the benchmark presets (fp32 and bf16: torch fused + scheduler and
#    fusedlr, eager and in CUDA graphs), JSON + table + PNG;
# 5. profiles a step with the torch profiler (kernel times).
# It writes at most 8 files to $OUT and prints a summary. Each phase has a time
# limit so the whole run stays under 10 minutes on an H100-class GPU.
# Without a GPU it says so and exits 2. Commit what it returns under
# benchmarks/results/ (see benchmarks/README.md).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-out/gpu_check}"
mkdir -p "$OUT"
PYTHON="${PYTHON:-python}"

if ! "$PYTHON" -c "import torch, sys; sys.exit(not torch.cuda.is_available())" 2>/dev/null; then
  echo "gpu_check: torch sees no CUDA device here: nothing to check (this needs a GPU machine)"
  exit 2
fi
device=$("$PYTHON" -c "import torch; print(torch.cuda.get_device_name(0))")
arch=$("$PYTHON" -c "import torch; print('%d%d' % torch.cuda.get_device_capability(0))")
slug=$(echo "$device" | tr 'A-Z ' 'a-z-' | tr -cd 'a-z0-9-')
stem="cuda-${slug}-$(date -u +%Y-%m-%d)"
summary="$OUT/summary.txt"
: > "$summary"
failed=0

phase() {  # phase NAME SECONDS LOG command...
  local name=$1 limit=$2 log=$3 start=$SECONDS rc
  shift 3
  echo "== $name (limit ${limit}s)"
  timeout "$limit" "$@" >> "$log" 2>&1
  rc=$?
  local verdict="ok"
  [ $rc -eq 0 ] || { verdict="FAILED (exit $rc$([ $rc -eq 124 ] && echo ', time limit'))"; failed=1; }
  echo "$name: $verdict in $((SECONDS - start))s (log: $(basename "$log"))" | tee -a "$summary"
  return $rc
}

{
  echo "device: $device (sm_$arch)"
  "$PYTHON" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
  command -v nvcc >/dev/null && nvcc --version | tail -1
  date -u +%Y-%m-%dT%H:%M:%SZ
} | tee -a "$summary"

# 1. build for this GPU's architecture, against the torch installed here
phase build 300 "$OUT/build.log" env FUSEDLR_CUDA_ARCHS="$arch" \
  "$PYTHON" -m pip install --no-build-isolation --no-deps -v . || { cat "$summary"; exit 1; }
"$PYTHON" -c "import fusedlr, json; print(json.dumps(fusedlr.build_info()))" >> "$summary" 2>&1 \
  || { echo "the built fusedlr does not import" | tee -a "$summary"; exit 1; }

# 2. every CUDA test (from tests/, so the installed build is imported)
phase cuda-tests 240 "$OUT/tests.log" bash -c "cd tests && '$PYTHON' -m pytest -q -rfE -p no:cacheprovider \
  -k 'cuda or graph or device_kernels' ."

# 3. compute-sanitizer over every kernel
sanitizer=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -1)
if [ -n "$sanitizer" ]; then
  for tool in memcheck racecheck; do
    phase "sanitizer-$tool" 150 "$OUT/checks.log" "$sanitizer" --tool "$tool" --error-exitcode 99 \
      --target-processes all "$PYTHON" scripts/gpu_sanitize_workload.py
  done
else
  echo "sanitizer: compute-sanitizer not found, skipped" | tee -a "$summary"
fi

# 4. benchmark presets, eager and in CUDA graphs
phase bench 200 "$OUT/checks.log" "$PYTHON" -m fusedlr.bench --device cuda \
  --preset large gpt2-small llama7b-layer tiny-1000 tiny-10000 --optimizer adamw sgd --dtype fp32 bf16 \
  --steps 20 --warmup 3 --out "$OUT" --name "$stem"

# 5. kernel times of one workload from the torch profiler
phase profile 90 "$OUT/profile.txt" "$PYTHON" - <<'PY'
import torch
import fusedlr
from fusedlr import schedules as S
from fusedlr.bench.workloads import preset

shapes = preset("gpt2-small")
for dtype in (torch.float32, torch.bfloat16):
    params = [torch.nn.Parameter(torch.randn(s, device="cuda", dtype=dtype)) for s in shapes]
    for p in params:
        p.grad = torch.randn_like(p)
    for name, opt in (("fusedlr AdamW", fusedlr.AdamW(params, lr=1e-4, schedule=S.with_warmup(S.Cosine(1000), 100))),
                      ("torch AdamW fused", torch.optim.AdamW(params, lr=1e-4, fused=True))):
        for _ in range(3):
            opt.step()
        torch.cuda.synchronize()
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            for _ in range(10):
                opt.step()
            torch.cuda.synchronize()
        print(f"== {name}, gpt2-small, {dtype}, 10 steps")
        print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=8))
PY

echo "== summary ($OUT/summary.txt)"
cat "$summary"
ls "$OUT"
exit $failed
