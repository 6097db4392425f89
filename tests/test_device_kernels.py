"""The CUDA kernels, proven without a GPU where that is possible: their CPU
emulation is race-free under ThreadSanitizer and equal to the serial maths;
one kernel launch per optimizer step (counted by the kernel module, the same
launcher code on the GPU and in the emulation); the sm_90 build's resource
usage and SASS read with cuobjdump (at most 64 registers, 128-bit global
loads, no local memory in the element loops). On a GPU also: the caller's
current device is kept and eager steps with moving grads do not sync. (The
kernels' results against the reference run in every optimizer test through
the "emulated" backend.)"""
import gc
import glob
import os
import re
import shutil
import subprocess
import sysconfig
from pathlib import Path

import pytest
import torch

import fusedlr
from fusedlr import _native
from fusedlr import schedules as S

REPO = Path(__file__).resolve().parents[1]
HAS_CUDA = "cuda" in fusedlr.available_backends()
needs_cuda = pytest.mark.skipif(not HAS_CUDA, reason="no usable CUDA device")
EXPECT_CUDA_BUILD = os.environ.get("FUSEDLR_EXPECT_CUDA_KERNELS") == "1"
REQUIRE_SASS_TOOLS = os.environ.get("FUSEDLR_REQUIRE_SASS_TOOLS") == "1"  # CI: the tools must be there


# ---- ThreadSanitizer ------------------------------------------------------------------
def test_emulated_kernels_are_race_free_and_equal_to_the_serial_maths(tmp_path):
    compiler = shutil.which("g++")
    if compiler is None:
        pytest.skip("no g++ to build the ThreadSanitizer run")
    exe = tmp_path / "race_check"
    build = subprocess.run([compiler, "-std=c++20", "-O1", "-g", "-fsanitize=thread", "-ffp-contract=off",
                            f"-I{REPO / 'csrc'}", str(REPO / "tests" / "native" / "emulated_kernels_race_check.cpp"),
                            "-o", str(exe), "-pthread"], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr[-4000:]
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=900,
                         env=dict(os.environ, TSAN_OPTIONS="halt_on_error=1 exitcode=66"))
    assert run.returncode == 0, run.stdout + run.stderr[-6000:]
    assert run.stdout.count("same as serial") == 40, run.stdout


# ---- CPU half conversions -------------------------------------------------------------------
@pytest.mark.parametrize("simd", [True, False], ids=["f16c-where-available", "software"])
def test_cpu_half_conversions_round_as_torch(simd, tmp_path):
    """The CPU's whole-array fp16/bf16 conversions (F16C instructions where
    the CPU has them, else the software ones) against torch's, bit for bit: every
    fp16 widened, a spread of fp32 patterns narrowed (nan: a nan)."""
    compiler = shutil.which("g++")
    if compiler is None:
        pytest.skip("no g++ to build the conversion check")
    exe, data = tmp_path / "half_check", tmp_path / "out.bin"
    build = subprocess.run([compiler, "-std=c++17", "-O2", *([] if simd else ["-DFUSEDLR_NO_SIMD_CONVERSIONS"]),
                            f"-I{REPO / 'csrc'}", str(REPO / "tests" / "native" / "half_conversions_check.cpp"),
                            "-o", str(exe)], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr[-4000:]
    assert subprocess.run([str(exe), str(data)]).returncode == 0
    raw = data.read_bytes()
    halves = torch.arange(1 << 16, dtype=torch.int32).to(torch.int16).view(torch.float16)
    widened = torch.frombuffer(bytearray(raw[:4 << 16]), dtype=torch.float32)
    expected = halves.to(torch.float32)
    assert torch.equal(widened.isnan(), expected.isnan())
    assert torch.equal(widened[~expected.isnan()].view(torch.int32), expected[~expected.isnan()].view(torch.int32))
    floats = torch.arange(0, 1 << 32, 65537, dtype=torch.int64)
    floats = torch.where(floats >= 2 ** 31, floats - 2 ** 32, floats).to(torch.int32).view(torch.float32)
    rest = raw[4 << 16:]
    for i, dtype in enumerate((torch.float16, torch.bfloat16)):
        narrowed = torch.frombuffer(bytearray(rest[i * 2 * len(floats):(i + 1) * 2 * len(floats)]), dtype=dtype)
        expected = floats.to(dtype)
        assert torch.equal(narrowed.isnan(), expected.isnan()), dtype
        keep = ~expected.isnan()
        assert torch.equal(narrowed[keep].view(torch.int16), expected[keep].view(torch.int16)), dtype


# ---- launches per step -------------------------------------------------------------------
LAUNCH_BACKENDS = ["emulated", pytest.param("cuda", marks=needs_cuda)]


def _launches(module, action) -> int:
    before = module.launch_count()
    action()
    return module.launch_count() - before


@pytest.mark.parametrize("backend", LAUNCH_BACKENDS)
def test_one_launch_per_step(backend):
    """One launch per (dtype, mode) bucket and step: the update kernel also ends
    the step and evaluates the next step's schedule. Grads that moved add the
    launches that rewrite the table's grad column (no host memory is copied)."""
    module = _native.module_of(backend)
    device = "cuda" if backend == "cuda" else "cpu"
    params = [torch.nn.Parameter(torch.randn(s, device=device)) for s in ((300, 7), (5,), (70_000,), ())]
    half = torch.nn.Parameter(torch.randn(40, device=device, dtype=torch.float16))
    opt = fusedlr.AdamW(params, lr=1e-3, schedule=S.with_warmup(S.Cosine(50), 5), backend=backend)
    for p in params:
        p.grad = torch.randn_like(p)

    assert _launches(module, opt.step) == 2  # warm-up: the tables are built and prepared
    assert [_launches(module, opt.step) for _ in range(5)] == [1] * 5  # grads stay in place
    for p in params:
        p.grad = torch.randn_like(p)  # new grads at new addresses
    assert _launches(module, opt.step) == 2
    opt.add_param_group({"params": [half]})
    half.grad = torch.randn_like(half)
    opt.step()
    assert _launches(module, opt.step) == 2  # two dtypes: two buckets
    for p in params + [half]:
        p.grad = None
    assert _launches(module, opt.step) == 1  # nothing to update: the step still moves the schedule
    assert int(opt.step_count) == 10


@pytest.mark.parametrize("backend", LAUNCH_BACKENDS)
def test_a_report_rewrites_the_next_update_and_a_skipped_step_launches_once(backend):
    module = _native.module_of(backend)
    device = "cuda" if backend == "cuda" else "cpu"
    p = torch.nn.Parameter(torch.randn(100, device=device))
    opt = fusedlr.SGD([p], lr=0.1, momentum=0.9, schedule=S.Plateau(patience=0), backend=backend)
    p.grad = torch.ones_like(p)
    opt.step()
    metric = torch.tensor(1.0, device=device)
    assert _launches(module, lambda: opt.report(metric)) == 2  # the plateau step, then the next update's values
    opt.report(metric)  # no improvement with patience 0: the lr is reduced
    before = p.detach().clone()
    assert _launches(module, opt.step) == 1
    buf = 0.9 * 1.0 + 1.0  # the second update's momentum buffer
    torch.testing.assert_close(p.detach(), before - 0.1 * 0.1 * buf, rtol=1e-6, atol=0)
    opt.grad_scale, opt.found_inf = torch.ones(1, device=device), torch.ones(1, device=device)
    kept = p.detach().clone()
    assert _launches(module, opt.step) == 1  # GradScaler found inf: one launch, nothing changes
    assert torch.equal(p.detach(), kept) and not bool(opt.last_step_applied)


def test_compiled_step_tables_live_as_long_as_their_optimizer():
    from fusedlr.optim import compiled_step

    opt = fusedlr.AdamW([torch.nn.Parameter(torch.randn(3))])
    key = opt.step_count.data_ptr()
    assert compiled_step._TABLES_BY_COUNTER[key][0] is opt._devices[torch.device("cpu")].compiled_tables
    del opt
    gc.collect()
    assert key not in compiled_step._TABLES_BY_COUNTER


# ---- resource usage and SASS of the sm_90 build ------------------------------------------------
def _cuda_tool(name: str) -> str | None:
    """A CUDA tool from PATH, the toolkit, or NVIDIA's pip wheels (nvidia-cuda-cuobjdump, -nvdisasm)."""
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/local/cuda*/bin/{name}"))), None)
    if found:
        return found
    roots = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    return next((path for root in roots for path in sorted(glob.glob(os.path.join(root, "nvidia", "*", "bin", name)))),
                None)


@pytest.fixture(scope="module")
def sm90():
    """{kernel name: (registers, stack bytes, SASS text)} of the built _C_cuda for sm_90."""
    if _native.cuda_module is None:
        if EXPECT_CUDA_BUILD:
            pytest.fail("nvcc is on this machine but the CUDA kernels were not built")
        pytest.skip("fusedlr was built without CUDA kernels")
    cuobjdump, nvdisasm = _cuda_tool("cuobjdump"), _cuda_tool("nvdisasm")
    if cuobjdump is None or nvdisasm is None:
        message = "cuobjdump/nvdisasm not found (pip install nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm)"
        pytest.fail(message) if REQUIRE_SASS_TOOLS else pytest.skip(message)
    if "90" not in _native.cuda_module.CUDA_ARCHS.split(","):
        pytest.skip(f"the CUDA kernels were built for sm_{_native.cuda_module.CUDA_ARCHS}, not sm_90")
    env = dict(os.environ, PATH=os.path.dirname(nvdisasm) + os.pathsep + os.environ.get("PATH", ""))
    library = _native.cuda_module.__file__

    def dump(option):
        result = subprocess.run([cuobjdump, option, "-arch", "sm_90", library], capture_output=True, text=True, env=env)
        assert result.returncode == 0, result.stderr
        return result.stdout

    usage = {name: (int(reg), int(stack))
             for name, reg, stack in re.findall(r"Function (\S+):\s+REG:(\d+) STACK:(\d+)", dump("-res-usage"))}
    sass = dict(re.findall(r"Function : (\S+)\n(.*?)(?=\n\s*Function : |\Z)", dump("-sass"), flags=re.S))
    kernels = {name: (*usage[name], sass[name]) for name in usage if "update_kernel" in name and name in sass}
    # 4 dtypes, 2 fp32-master pairs (fp16, bf16 grads), bf16 params with low halves, and 4 with bf16 states
    # beside fp32 (fp32, fp16, bf16 grads; bf16 params with low halves), times SGD/AdamW, times their flag;
    # and 3 of AdamW with 8-bit coded moments beside fp32 params or masters (fp32, fp16, bf16 grads)
    assert len(kernels) == 47, sorted(usage)
    return kernels


DTYPE_CODES = {"f": "fp32", "d": "fp64", "NS_9half_bitsE": "fp16", "NS_9bf16_bitsE": "bf16",
               "NS_13bf16_low_bitsE": "bf16-low-halves", "h": "uint8-codes"}


def _dtypes_of(kernel: str) -> tuple:
    """(param, grad, state dtype) of an update kernel's template arguments."""
    arguments = re.search(r"update_kernelI(.*?)Li", kernel).group(1)
    dtypes = []
    for code in re.findall(r"NS_\d+\w+?_bitsE|S\d*_|[fdh]", arguments):
        if code.startswith("NS_"):
            last_struct = DTYPE_CODES[code]
        dtypes.append(DTYPE_CODES.get(code) or last_struct)  # S2_, S3_: the bits struct named before
    return tuple(dtypes)


def _dtype_of(kernel: str) -> str:
    return "/".join(dict.fromkeys(_dtypes_of(kernel)))


def test_update_kernels_fit_64_registers(sm90):
    over = {name: reg for name, (reg, _, _) in sm90.items() if reg > 64}
    assert not over, over


def test_update_kernels_move_elements_with_128_bit_global_loads_and_stores(sm90):
    """Every 16-byte pack of params (and of grads and states of their dtype)
    moves in one 128-bit access; beside a pack of 4 fp32 params (masters), the
    4 bf16/fp16 grads or states move in one 64-bit access each. (Not the
    kernels of 8-bit coded moments: one element per thread, a state block of
    256 per iteration of the block, its absmax reduced in shared memory.)"""
    for name, (_, _, sass) in sm90.items():
        if _dtypes_of(name)[2] == "uint8-codes":
            continue
        loads = len(re.findall(r"LDG\.E[.\w]*\.128", sass))
        stores = len(re.findall(r"STG\.E[.\w]*\.128", sass))
        states = 1 if "Li0E" in name else 2  # SGD's momentum buffer; AdamW's moments (AMSGrad's max not counted)
        params, grads, state = _dtypes_of(name)
        if params == "bf16-low-halves":  # 4 fp32 masters a pack: 4 low halves, 4 bf16 params and grads
            assert re.search(r"LDG\.E[.\w]*\.64", sass) and re.search(r"STG\.E[.\w]*\.64", sass), name
            assert loads >= states * (state == "fp32"), (_dtype_of(name), name, loads)
            continue
        wide_grads, wide_states = grads == params, state == params
        assert loads >= 1 + wide_grads + states * wide_states, (_dtype_of(name), name, loads)
        assert stores >= 1 + states * wide_states, (_dtype_of(name), name, stores)
        if not (wide_grads and wide_states):
            assert re.search(r"LDG\.E[.\w]*\.64", sass) and re.search(r"STG\.E[.\w]*\.64", sass), name


def test_update_kernels_element_loops_use_no_local_memory(sm90):
    """Local memory (a spilled register or a stack array) appears only after the
    blocks-done atomic: in the last block's end of step, which evaluates the
    schedule once per step, never in the loops over the elements. Not asked of
    AdamW with AMSGrad in fp64 (its five 16-byte packs of doubles and fp64
    scalars spill a pack at 64 registers: two 8-byte local stores per pack)
    or with fp32 master weights (the four master/state packs, the grad and
    param packs and a sixth pointer spill 3 words per pack)."""
    for name, (_, stack, sass) in sm90.items():
        params, grads, states = _dtypes_of(name)
        if (params == "fp64" or params != grads or params != states) and "Li1ELb1E" in name:
            continue
        epilogue = sass.find("ATOMG")
        assert epilogue > 0, name
        assert not re.search(r"\b(LDL|STL)\b", sass[:epilogue]), (_dtype_of(name), name, stack)


# ---- on a GPU ---------------------------------------------------------------------------
@needs_cuda
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_a_step_on_another_device_keeps_the_callers_current_device():
    p = torch.nn.Parameter(torch.randn(1000, device="cuda:1"))
    opt = fusedlr.AdamW([p], backend="cuda")
    torch.cuda.set_device(0)
    for _ in range(3):
        p.grad = torch.randn_like(p)
        opt.step()
    assert torch.cuda.current_device() == 0


@needs_cuda
def test_eager_steps_with_moving_grads_do_not_sync():
    params = [torch.nn.Parameter(torch.randn(s, device="cuda")) for s in ((512, 3), (7,), (70_000,))]
    opt = fusedlr.AdamW(params, lr=1e-3, schedule=S.with_warmup(S.Cosine(50), 5), backend="cuda")
    for p in params:
        p.grad = torch.randn_like(p)
    opt.step()  # warm-up: tables built
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(5):
            for p in params:
                p.grad = torch.randn_like(p)  # grads at new addresses: the grad column is rewritten by kernels
            opt.step()
        opt.current_lr  # noqa: B018
    finally:
        torch.cuda.set_sync_debug_mode(0)
