"""A small CUDA workload that runs every fusedlr kernel, for compute-sanitizer
(memcheck, racecheck) in scripts/gpu_check.sh: SGD (plain, Nesterov) and
AdamW (plain, AMSGrad) in fp32, fp16, bf16 and fp64, over odd, tiny, empty and
misaligned (storage offset 1) params, with a GradScaler-skipped step, a step
without grads, a plateau report, grads moving between steps, and a CUDA graph
capture replayed a few times; then fp32 master weights, bf16 states with
stochastic rounding and fused grad-norm clipping."""
import torch

import fusedlr
from fusedlr import schedules as S

DEVICE = "cuda"


def params_of(dtype):
    shapes = [(278_011,), (7,), (1,), (0,), (33, 65)]
    params = [torch.nn.Parameter(torch.randn(s, device=DEVICE, dtype=dtype)) for s in shapes]
    misaligned = torch.randn(1001, device=DEVICE, dtype=dtype)[1:]  # storage offset 1: the one-element path
    return params + [torch.nn.Parameter(misaligned)]


def run(cls, options, dtype):
    params = params_of(dtype)
    plateau = S.Plateau(patience=0)
    opt = cls(params, lr=1e-3, schedule=S.Chain([S.with_warmup(S.Cosine(10), 2), plateau]), backend="cuda",
              **options)
    for step in range(4):
        for p in params:
            p.grad = torch.randn_like(p)  # new addresses: the grad column is rewritten
        if step == 2:
            opt.grad_scale, opt.found_inf = torch.ones(1, device=DEVICE), torch.ones(1, device=DEVICE)
        opt.step()
        opt.grad_scale = opt.found_inf = None
        opt.report(torch.tensor(1.0, device=DEVICE))
    for p in params:
        p.grad = None
    opt.step()  # nothing to update: the step kernel alone
    for p in params:
        p.grad = torch.randn_like(p)
    opt.step()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        opt.step()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        opt.step()
    for _ in range(3):
        graph.replay()


for dtype in (torch.float32, torch.float16, torch.bfloat16, torch.float64):
    for cls, options in ((fusedlr.SGD, dict(momentum=0.9, nesterov=True)), (fusedlr.SGD, dict(momentum=0.0)),
                         (fusedlr.AdamW, dict(amsgrad=True)), (fusedlr.AdamW, {}),
                         (fusedlr.Adam, dict(weight_decay=0.1))):
        run(cls, options, dtype)
# the mixed-dtype kernels: fp32 masters of half params (full or as low halves), bf16 states (stochastically rounded), fused clipping
LARGE_RUN = dict(max_grad_norm=1.0, state_dtype=torch.bfloat16, stochastic_rounding=True)
for dtype in (torch.float32, torch.float16, torch.bfloat16):
    for cls, options in ((fusedlr.SGD, dict(momentum=0.9)), (fusedlr.AdamW, dict(amsgrad=True)), (fusedlr.AdamW, {})):
        run(cls, dict(options, master_weights=True), dtype)
        run(cls, dict(options, master_weights=True, **LARGE_RUN), dtype)
        if dtype == torch.bfloat16:  # bf16 params with the low halves of their masters
            run(cls, dict(options, master_weights="remainder"), dtype)
            run(cls, dict(options, master_weights="remainder", **LARGE_RUN), dtype)
# Adam(W) with block-wise 8-bit moments (the block-wide absmax reduction), beside fp32 params or masters
for dtype in (torch.float32, torch.bfloat16):
    for cls in (fusedlr.AdamW, fusedlr.Adam):
        run(cls, dict(state_dtype="int8", master_weights=dtype != torch.float32, max_grad_norm=1.0), dtype)
print(S.Cosine(10).values(range(20), [0.1], backend="cuda").sum().item())
torch.cuda.synchronize()
print("workload done")
