"""Side-by-side runs of a fusedlr optimizer and torch.optim + a torch scheduler
on identical params and gradients: the trajectory oracle."""
import torch

from fusedlr import schedules as S

# odd sizes on purpose: a 0-d param, an empty one, one not a multiple of 4,
# one bigger than a CPU chunk (2**15), and a non-contiguous (transposed) one
SHAPES = [(37, 5), (), (0,), (1001,), (40_000,), (3, 4, 2)]


def make_params(dtype=torch.float32, seed=0, shapes=SHAPES):
    gen = torch.Generator().manual_seed(seed)
    params = [torch.randn(s, generator=gen, dtype=torch.float64).to(dtype) for s in shapes]
    params.append(torch.randn(7, 6, generator=gen, dtype=torch.float64).to(dtype).t())  # non-contiguous
    return params


def device_for(backend):
    """Where a backend's params live in these tests ("reference" runs on the CPU)."""
    return torch.device("cuda" if backend == "cuda" else "cpu")


def clone_params(params, device="cpu"):
    return [torch.nn.Parameter(p.detach().to(device, copy=True)) for p in params]


def grads_for_step(params, step, seed=1, skip_every=3):
    """Deterministic grads; param 1 gets none on every ``skip_every``-th step."""
    gen = torch.Generator().manual_seed(seed * 100_003 + step)
    grads = []
    for i, p in enumerate(params):
        if i == 1 and step % skip_every == 0:
            grads.append(None)
        else:
            grads.append(torch.randn(p.shape, generator=gen, dtype=torch.float64).to(p.dtype).reshape(p.shape))
    return grads


def set_grads(params, grads):
    for p, g in zip(params, grads):
        # a fresh grad with the param's own strides, as autograd would give
        p.grad = None if g is None else torch.empty_like(p).copy_(g)


def split_groups(params, group_options):
    """Param groups: params dealt round-robin over ``group_options`` dicts."""
    groups = [dict(opts, params=[]) for opts in group_options]
    for i, p in enumerate(params):
        groups[i % len(groups)]["params"].append(p)
    return groups


def run_side_by_side(torch_cls, fused_cls, group_options, make_scheduler, steps, backend, dtype=torch.float32,
                     fused_kwargs=None):
    """(torch params, fusedlr params, torch optimizer, fusedlr optimizer) after ``steps`` steps."""
    base = make_params(dtype)
    tp, fp = clone_params(base), clone_params(base, device_for(backend))
    t_opt = torch_cls(split_groups(tp, group_options))
    sched = make_scheduler(t_opt) if make_scheduler else None
    schedule = S.from_torch(sched) if sched else None
    f_opt = fused_cls(split_groups(fp, group_options), schedule=schedule, backend=backend, **(fused_kwargs or {}))
    for step in range(steps):
        grads = grads_for_step(base, step)
        set_grads(tp, grads)
        set_grads(fp, grads)
        t_opt.step()
        if sched:
            sched.step()
        f_opt.step()
    return tp, fp, t_opt, f_opt


def max_relative_error(expected, actual):
    """Largest |a - e| over the parameters, relative to each tensor's largest |e|."""
    worst = 0.0
    for e, a in zip(expected, actual):
        if e.numel() == 0:
            continue
        e, a = e.detach().cpu().double(), a.detach().cpu().double()
        assert torch.isfinite(a).all()
        worst = max(worst, float((a - e).abs().max() / e.abs().max().clamp_min(1e-30)))
    return worst
