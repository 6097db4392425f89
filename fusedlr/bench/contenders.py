"""The optimizers raced against each other. Each contender builds its optimizer
on a workload's params and returns it with a ``step()`` callable that does
everything one training step needs from the optimizer, schedule included."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

import fusedlr
from fusedlr import schedules as S

#: bytes each element moves per step, in units of the param's element size:
#: Adam(W) reads p, g, m, v and writes p, m, v; SGD-momentum reads p, g, buf and writes p, buf
ACCESSES_PER_ELEMENT = {"adamw": 7, "adam": 7, "sgd": 5}
HYPER = {"adamw": dict(lr=1e-3, weight_decay=1e-2), "adam": dict(lr=1e-3, weight_decay=1e-2),
         "sgd": dict(lr=1e-2, momentum=0.9)}
#: each optimizer's (torch.optim class, fusedlr class)
CLASSES = {"adamw": (torch.optim.AdamW, fusedlr.AdamW), "adam": (torch.optim.Adam, fusedlr.Adam),
           "sgd": (torch.optim.SGD, fusedlr.SGD)}
TOTAL_STEPS, WARMUP_STEPS = 100_000, 1_000


@dataclass
class Contender:
    name: str
    #: build(params, optimizer name, max_grad_norm or None) -> (torch.optim.Optimizer, step callable)
    build: Callable
    #: the step is a CUDA graph replay (host time is the replay call alone)
    graphed: bool = False
    #: the torch fused path every ratio is taken against
    baseline: bool = False
    #: the param dtypes it races on (None: all)
    dtypes: tuple | None = None
    #: the optimizers it races (None: all)
    optimizers: tuple | None = None


def _torch_warmup_cosine(opt):
    lrs = torch.optim.lr_scheduler
    return lrs.SequentialLR(opt, [lrs.LinearLR(opt, 1e-2, 1.0, WARMUP_STEPS),
                                  lrs.CosineAnnealingLR(opt, TOTAL_STEPS - WARMUP_STEPS)],
                            milestones=[WARMUP_STEPS])


def fusedlr_warmup_cosine():
    return S.with_warmup(S.Cosine(TOTAL_STEPS - WARMUP_STEPS), WARMUP_STEPS, start_factor=1e-2)


def _torch_class(optimizer: str):
    return CLASSES[optimizer][0]


def _torch_eager(mode: str):
    flags = {"for-loop": dict(foreach=False), "foreach": dict(foreach=True), "fused": dict(fused=True)}[mode]

    def build(params, optimizer, max_grad_norm=None):
        opt = _torch_class(optimizer)(params, **HYPER[optimizer], **flags)
        sched = _torch_warmup_cosine(opt)
        clip = _clip_grad_norm(params, max_grad_norm)

        def step():
            clip()
            opt.step()
            sched.step()
        return opt, step
    return build


def _clip_grad_norm(params, max_grad_norm) -> Callable:
    """What a training loop runs before torch's step: clip_grad_norm_ (or nothing)."""
    if max_grad_norm is None:
        return lambda: None
    return lambda: torch.nn.utils.clip_grad_norm_(params, max_grad_norm)


def _fusedlr_eager(params, optimizer, max_grad_norm=None):
    cls = CLASSES[optimizer][1]
    opt = cls(params, **HYPER[optimizer], schedule=fusedlr_warmup_cosine(), max_grad_norm=max_grad_norm)
    return opt, opt.step


HALF = (torch.float16, torch.bfloat16)


def _half_only(params) -> None:
    if params[0].dtype not in HALF:
        raise ValueError("master weights apply to fp16/bf16 params only")


def _fusedlr_master_weights(params, optimizer, max_grad_norm=None):
    _half_only(params)
    cls = CLASSES[optimizer][1]
    opt = cls(params, **HYPER[optimizer], schedule=fusedlr_warmup_cosine(), max_grad_norm=max_grad_norm,
              master_weights=True)
    return opt, opt.step


def _fusedlr_remainders(params, optimizer, max_grad_norm=None):
    """bf16 params as the high halves of fp32 masters (master_weights="remainder")."""
    cls = CLASSES[optimizer][1]
    opt = cls(params, **HYPER[optimizer], schedule=fusedlr_warmup_cosine(), max_grad_norm=max_grad_norm,
              master_weights="remainder")
    return opt, opt.step


def _fusedlr_bf16_states(params, optimizer, max_grad_norm=None):
    """bf16 states beside fp32 params, or beside fp32 masters of half params."""
    cls = CLASSES[optimizer][1]
    opt = cls(params, **HYPER[optimizer], schedule=fusedlr_warmup_cosine(), max_grad_norm=max_grad_norm,
              master_weights=params[0].dtype in HALF, state_dtype=torch.bfloat16)
    return opt, opt.step


def _fusedlr_int8_states(params, optimizer, max_grad_norm=None):
    """Block-wise 8-bit moments beside fp32 params, or beside fp32 masters of half params."""
    cls = CLASSES[optimizer][1]
    opt = cls(params, **HYPER[optimizer], schedule=fusedlr_warmup_cosine(), max_grad_norm=max_grad_norm,
              master_weights=params[0].dtype in HALF, state_dtype="int8")
    return opt, opt.step


class _WithMasters:
    """A torch optimizer over fp32 masters, with the masters counted as its state."""

    def __init__(self, opt, masters):
        self.opt, self.masters = opt, masters

    @property
    def state(self) -> dict:
        return {i: {**self.opt.state.get(m, {}), "master": m} for i, m in enumerate(self.masters)}


def _torch_fused_fp32_masters(params, optimizer, max_grad_norm=None):
    """What a torch run does for half params with fp32 master weights: torch
    fused on fp32 copies, the grads cast into theirs, the params written back."""
    _half_only(params)
    masters = [p.detach().float() for p in params]
    for m in masters:
        m.grad = torch.empty_like(m)
    opt = _torch_class(optimizer)(masters, **HYPER[optimizer], fused=True)
    sched = _torch_warmup_cosine(opt)
    clip = _clip_grad_norm(masters, max_grad_norm)

    @torch.no_grad()
    def step():
        torch._foreach_copy_([m.grad for m in masters], [p.grad for p in params])
        clip()
        opt.step()
        sched.step()
        torch._foreach_copy_(params, masters)
    return _WithMasters(opt, masters), step


def _capture(step: Callable, warmup_steps: int = 3) -> Callable:
    """Run ``step`` a few times on a side stream, capture one call, return the replay."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(warmup_steps):
            step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    return graph.replay


def _fusedlr_graphed(params, optimizer, max_grad_norm=None):
    opt, step = _fusedlr_eager(params, optimizer, max_grad_norm)
    return opt, _capture(step)


def _torch_fused_capturable_graphed(params, optimizer, max_grad_norm=None):
    """The best torch does inside a graph: fused + capturable, constant lr (no scheduler)."""
    extra = dict(capturable=True) if optimizer != "sgd" else {}
    opt = _torch_class(optimizer)(params, **HYPER[optimizer], fused=True, **extra)
    clip = _clip_grad_norm(params, max_grad_norm)

    def step():
        clip()
        opt.step()
    return opt, _capture(step)


def torch_fused_disagrees(torch_class, dtype: torch.dtype, device: torch.device, hyper: dict) -> str | None:
    """None when ``torch_class(..., fused=True)`` steps a few params of ``dtype``
    on ``device`` as its for-loop path does (up to the rounding of its fp32
    intermediates), else what differs: a baseline that skips work is not one to
    race. ``hyper``: the race's hyperparameters (the lr raised so that an
    update shows in fp16/bf16). Grads of magnitude 0.5 and up: smaller ones
    underflow Adam's fp16 second moment in the for-loop path, which then
    divides by eps alone (no oracle there). (torch 2.12-2.13's
    CPU fused SGD leaves every whole SIMD block of fp16/bf16 params unchanged
    and writes garbage momentum: pytorch/pytorch#191763.)"""
    gen = torch.Generator().manual_seed(0)
    start = torch.randn(67, generator=gen).to(dtype)  # whole SIMD blocks of every width, and a tail
    grads = [(lambda r: (r.sign() * (0.5 + r.abs())).to(dtype))(torch.randn(67, generator=gen)) for _ in range(3)]
    hyper = dict(hyper, lr=0.1)
    ends = []
    for flags in (dict(fused=True), dict(foreach=False)):
        param = torch.nn.Parameter(start.clone().to(device))
        try:
            opt = torch_class([param], **hyper, **flags)
            for grad in grads:
                param.grad = grad.to(device)
                opt.step()
        except (RuntimeError, ValueError, TypeError):
            return None  # no fused path here: the race reports the error itself
        ends.append(param.detach().float().cpu())
    fused, loop = ends
    change, gap = (loop - start.float()).abs().max().item(), (fused - loop).abs().max().item()
    if gap != gap or gap > 0.25 * change:  # (nan, or a gap of the order of the update itself)
        return (f"torch.optim.{torch_class.__name__}(fused=True) on {device.type} {str(dtype).split('.')[-1]} "
                f"disagrees with its for-loop step in this torch (largest difference {gap:.3g} after 3 steps "
                f"whose largest update is {change:.3g}): its times are not those of a full step")
    return None


def contenders(device: torch.device) -> list[Contender]:
    """Everything that runs on ``device``; the torch fused path is the baseline."""
    found = [
        Contender("torch for-loop + sched", _torch_eager("for-loop")),
        Contender("torch foreach + sched", _torch_eager("foreach")),
        Contender("torch fused + sched", _torch_eager("fused"), baseline=True),
        Contender("fusedlr eager", _fusedlr_eager),
        Contender("torch fused fp32 masters + sched", _torch_fused_fp32_masters, dtypes=HALF),
        Contender("fusedlr master weights", _fusedlr_master_weights, dtypes=HALF),
        Contender("fusedlr master remainders", _fusedlr_remainders, dtypes=(torch.bfloat16,)),
        Contender("fusedlr bf16 states (+ masters)", _fusedlr_bf16_states, dtypes=(torch.float32, *HALF)),
        Contender("fusedlr int8 states (+ masters)", _fusedlr_int8_states, dtypes=(torch.float32, *HALF),
                  optimizers=("adamw", "adam")),
    ]
    if device.type == "cuda":
        found += [Contender("torch fused capturable graph (const lr)", _torch_fused_capturable_graphed, graphed=True),
                  Contender("fusedlr graph", _fusedlr_graphed, graphed=True)]
    return found
