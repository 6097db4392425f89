"""Checks of fusedlr on DTensor params, run in 2 gloo processes on the CPU,
then in 1 (loading the 2 ranks' DCP checkpoints, resharded)
(``python distributed_checks.py OUT.json``; test_distributed.py runs it once;
the checkpoints are left beside OUT.json). Each check compares a fusedlr optimizer against torch.optim + a torch
scheduler on the same sharded run, or expects a clear error; the results
(check name -> None or the failure) go to OUT.json from rank 0."""
import json
import math
import os
import sys
import traceback

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

WORLD = 2
STEPS = 5
#: where the 2-rank DCP checks leave their checkpoints for the 1-rank (resharded) load
CHECKPOINTS = ""


def _sharded_model(seed):
    from torch.distributed.fsdp import fully_shard
    torch.manual_seed(seed)
    # odd sizes: 2 ranks get uneven shards, one rank an empty shard of the (1,) bias
    model = torch.nn.Sequential(torch.nn.Linear(9, 17), torch.nn.ReLU(), torch.nn.Linear(17, 1))
    for layer in model:
        if isinstance(layer, torch.nn.Linear):
            fully_shard(layer)
    fully_shard(model)
    return model


def _pair(kind, backend, params_a, params_b, with_schedule=True):
    """(torch optimizer, its scheduler, fusedlr optimizer) over two identical param lists."""
    import fusedlr
    from fusedlr import schedules as S
    torch_cls, fused_cls = (torch.optim.AdamW, fusedlr.AdamW) if kind == "adamw" else (torch.optim.SGD, fusedlr.SGD)
    options = dict(lr=0.05, weight_decay=0.1, **({"momentum": 0.9, "nesterov": True} if kind == "sgd" else {}))
    t_opt = torch_cls(params_a, **options)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(t_opt, T_max=STEPS, eta_min=0.001) if with_schedule else None
    f_opt = fused_cls(params_b, schedule=S.from_torch(sched) if sched else None, backend=backend, **options)
    return t_opt, sched, f_opt


def _max_error(params_a, params_b):
    from torch.distributed.tensor import DTensor
    worst = 0.0
    for a, b in zip(params_a, params_b):
        assert isinstance(b, DTensor) and b.placements == a.placements
        a, b = a.detach().to_local().double(), b.detach().to_local().double()
        if a.numel():
            worst = max(worst, float((a - b).abs().max() / a.abs().max().clamp_min(1e-12)))
    return worst


def check_fsdp2(kind, backend):
    model_a, model_b = _sharded_model(0), _sharded_model(0)
    t_opt, sched, f_opt = _pair(kind, backend, list(model_a.parameters()), list(model_b.parameters()))
    for step in range(STEPS):
        torch.manual_seed(100 + step + dist.get_rank())
        x = torch.randn(6, 9)
        for model, opt in ((model_a, t_opt), (model_b, f_opt)):
            model(x).square().mean().backward()
            opt.step()
            opt.zero_grad()
        sched.step()
    assert _max_error(model_a.parameters(), model_b.parameters()) < 1e-5
    state = f_opt.state[next(model_b.parameters())]
    from torch.distributed.tensor import DTensor
    buffers = [v for k, v in state.items() if k != "step"]
    assert buffers and all(isinstance(v, DTensor) for v in buffers), "state must be DTensors like torch's"


def _dtensor_params(placements_of, seed, mesh_shape=(WORLD,)):
    """Params of odd shapes (uneven shards), each placed by ``placements_of(ndim)``."""
    from torch.distributed.tensor import distribute_tensor, init_device_mesh
    mesh = init_device_mesh("cpu", mesh_shape)
    gen = torch.Generator().manual_seed(seed)
    shapes = [(5, 7), (3,), (2, 3, 4)]
    return [torch.nn.Parameter(distribute_tensor(torch.randn(s, generator=gen), mesh, placements_of(len(s))))
            for s in shapes]


def check_placements(placement, backend):
    from torch.distributed.tensor import Replicate, Shard, distribute_tensor
    choice = {"Shard(0)": lambda ndim: [Shard(0)], "Replicate": lambda ndim: [Replicate()],
              "Shard(1)": lambda ndim: [Shard(1) if ndim > 1 else Shard(0)],
              "2d-Replicate-Shard(0)": lambda ndim: [Replicate(), Shard(0)]}[placement]
    mesh_shape = (1, WORLD) if placement.startswith("2d") else (WORLD,)  # a 2-D mesh (data x model)
    params_a, params_b = _dtensor_params(choice, 0, mesh_shape), _dtensor_params(choice, 0, mesh_shape)
    t_opt, sched, f_opt = _pair("adamw", backend, params_a, params_b)
    for step in range(STEPS):
        gen = torch.Generator().manual_seed(200 + step)
        for a, b in zip(params_a, params_b):
            g = distribute_tensor(torch.randn(a.shape, generator=gen), a.device_mesh, a.placements)
            a.grad, b.grad = g, g.clone()
        t_opt.step()
        f_opt.step()
        sched.step()
    assert _max_error(params_a, params_b) < 1e-5


def check_clipping(layout, norm_type, backend):
    """max_grad_norm on sharded params: the global norm (over every rank's
    shards), as torch's clip_grad_norm_ gives on the same sharded run."""
    import fusedlr
    from torch.distributed.tensor import Replicate, Shard, distribute_tensor
    if layout == "fsdp2":
        model_a, model_b = _sharded_model(0), _sharded_model(0)
        params_a, params_b = list(model_a.parameters()), list(model_b.parameters())
    else:  # a 2-D mesh (data x model): replicated over one dim, sharded over the other
        choice = lambda ndim: [Replicate(), Shard(0)]  # noqa: E731
        params_a, params_b = _dtensor_params(choice, 0, (1, WORLD)), _dtensor_params(choice, 0, (1, WORLD))
    t_opt = torch.optim.AdamW(params_a, lr=0.05)
    f_opt = fusedlr.AdamW(params_b, lr=0.05, backend=backend, max_grad_norm=0.05, norm_type=norm_type)
    for step in range(STEPS):
        gen = torch.Generator().manual_seed(300 + step)
        for a, b in zip(params_a, params_b):
            g = distribute_tensor(torch.randn(a.shape, generator=gen), a.device_mesh, a.placements)
            a.grad, b.grad = g, g.clone()
        expected = torch.nn.utils.clip_grad_norm_(params_a, 0.05, norm_type).full_tensor()
        t_opt.step()
        f_opt.step()
        norm = f_opt.last_grad_norm
        assert abs(float(norm) - float(expected)) <= 1e-6 * float(expected), (float(norm), float(expected))
    assert _max_error(params_a, params_b) < 1e-5


def check_master_weights(backend):
    """bf16 DTensor params with master_weights: the masters (DTensors, sharded
    like their params) follow torch.optim on fp32 copies of the same sharded
    params; the global grad norm of bf16 shards (measured, not clipping here:
    on the CPU it is rounded to bf16, as torch's norm of bf16 grads)."""
    import fusedlr
    from torch.distributed.tensor import DTensor, Shard, distribute_tensor
    choice = lambda ndim: [Shard(0)]  # noqa: E731
    params_a = _dtensor_params(choice, 0)  # fp32: the oracle's
    params_b = [torch.nn.Parameter(p.detach().to(torch.bfloat16)) for p in _dtensor_params(choice, 0)]
    with torch.no_grad():  # the same starting values: the bf16 ones
        for a, b in zip(params_a, params_b):
            a.copy_(b.to(torch.float32))
    t_opt = torch.optim.AdamW(params_a, lr=0.05)
    f_opt = fusedlr.AdamW(params_b, lr=0.05, backend=backend, master_weights=True, max_grad_norm=1e9)
    for step in range(STEPS):
        gen = torch.Generator().manual_seed(400 + step)
        for a, b in zip(params_a, params_b):
            g = distribute_tensor(torch.randn(a.shape, generator=gen).to(torch.bfloat16), a.device_mesh, a.placements)
            a.grad, b.grad = g.to(torch.float32), g
        norm = float(torch.nn.utils.clip_grad_norm_(params_a, 1e9).full_tensor())
        t_opt.step()
        f_opt.step()
        assert abs(float(f_opt.last_grad_norm) - norm) <= 1e-2 * norm, (float(f_opt.last_grad_norm), norm)
    masters = [f_opt.state[b]["master_param"] for b in params_b]
    assert all(isinstance(m, DTensor) and m.placements == b.placements and m.dtype == torch.float32
               for m, b in zip(masters, params_b))
    error = _max_error(params_a, masters)
    assert error < 1e-5, error
    for m, b in zip(masters, params_b):
        assert torch.equal(m.to_local().to(torch.bfloat16), b.detach().to_local())


def check_grad_placement_refused(backend):
    """A grad sharded unlike its param is refused by name, nothing updated."""
    import fusedlr
    from torch.distributed.tensor import Replicate, Shard, distribute_tensor
    param = _dtensor_params(lambda ndim: [Shard(0)], 0)[0]
    opt = fusedlr.AdamW([param], lr=0.1, backend=backend)
    before = param.to_local().clone()
    param.grad = distribute_tensor(torch.ones(param.shape), param.device_mesh, [Replicate()])
    try:
        opt.step()
    except RuntimeError as exc:
        assert "placements" in str(exc) and "param_groups[0]['params'][0]" in str(exc), str(exc)
    else:
        raise AssertionError("a grad sharded unlike its param was accepted")
    assert torch.equal(param.to_local(), before)


def check_dtensor_grad_on_plain_param_refused(backend):
    """A DTensor grad put on a plain param after the step plan was built (it has
    no storage of its own: data_ptr 0) is refused, nothing updated."""
    import fusedlr
    from torch.distributed.tensor import Shard, distribute_tensor, init_device_mesh
    param = torch.nn.Parameter(torch.ones(4, 3))
    opt = fusedlr.AdamW([param], lr=0.1, backend=backend)
    param.grad = torch.ones(4, 3)
    opt.step()
    before = param.detach().clone()
    try:
        param.grad = distribute_tensor(torch.ones(4, 3), init_device_mesh("cpu", (WORLD,)), [Shard(0)])
    except (RuntimeError, TypeError):
        return  # torch refused it already
    try:
        opt.step()
    except RuntimeError as exc:
        assert "DTensor" in str(exc), str(exc)
    else:
        raise AssertionError("a DTensor grad on a plain param was accepted")
    assert torch.equal(param.detach(), before)


def _resume_matches(run_through, run_saving_and_resuming):
    """Parameters, step count and next lrs of a run resumed from a checkpoint
    equal those of the same run without the interruption."""
    (params_a, opt_a), (params_b, opt_b) = run_through(), run_saving_and_resuming()
    assert int(opt_a.step_count) == int(opt_b.step_count), (int(opt_a.step_count), int(opt_b.step_count))
    assert torch.equal(opt_a.current_lr, opt_b.current_lr), (opt_a.current_lr, opt_b.current_lr)
    for a, b in zip(params_a, params_b):
        a, b = (t.detach().to_local() if hasattr(t, "to_local") else t.detach() for t in (a, b))
        assert torch.equal(a, b), f"resumed params differ by {(a - b).abs().max()}"
    return params_a, opt_a


def _train(model, opt, steps, first):
    """Steps ``first..first+steps``: every third one without grads (the schedule
    still moves), a falling-then-flat metric reported to the plateau."""
    for step in range(first, first + steps):
        if step % 3 != 2:
            torch.manual_seed(300 + step)
            model(torch.randn(6, 9)).square().mean().backward()
        opt.step()
        opt.zero_grad()
        opt.report(max(1.0, 4.0 - step))


def _plateau_schedule():
    from fusedlr import schedules as S
    return S.Chain([S.with_warmup(S.Constant(), 2), S.Plateau(factor=0.5, patience=0)])


def check_dcp_resume(backend):
    """get_optimizer_state_dict -> dcp.save -> dcp.load -> set_optimizer_state_dict
    keeps the step count (with steps no param had a grad for), the plateau
    state and the schedules."""
    import fusedlr
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

    def fresh():
        model = _sharded_model(0)
        return model, fusedlr.AdamW(model.parameters(), lr=0.05, schedule=_plateau_schedule(), backend=backend)

    def through():
        model, opt = fresh()
        _train(model, opt, 7, 0)
        return list(model.parameters()), opt

    def resumed():
        model, opt = fresh()
        _train(model, opt, 4, 0)
        path = os.path.join(CHECKPOINTS, f"dcp-{backend}")
        dcp.save({"model": get_model_state_dict(model), "optim": get_optimizer_state_dict(model, opt)},
                 checkpoint_id=path)
        return _load_and_finish(fresh, path)

    params, opt = _resume_matches(through, resumed)
    expected = {"params": [p.detach().full_tensor() for p in params], "step_count": int(opt.step_count),
                "current_lr": opt.current_lr.clone()}
    if dist.get_rank() == 0:  # what the resharded load must reach (check_dcp_reshard)
        torch.save(expected, os.path.join(CHECKPOINTS, f"dcp-{backend}-expected.pt"))


def _load_and_finish(fresh, path):
    """A fresh model and optimizer, loaded from the DCP checkpoint at ``path``, trained to the end."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import (get_model_state_dict, get_optimizer_state_dict,
                                                         set_model_state_dict, set_optimizer_state_dict)
    model, opt = fresh()
    state = {"model": get_model_state_dict(model), "optim": get_optimizer_state_dict(model, opt)}
    dcp.load(state, checkpoint_id=path)
    set_model_state_dict(model, state["model"])
    set_optimizer_state_dict(model, opt, state["optim"])
    _train(model, opt, 3, 4)
    return list(model.parameters()), opt


def check_dcp_reshard(backend):
    """One process loads what check_dcp_resume's 2 ranks saved (DCP reshards
    params and state) and ends where the uninterrupted 2-rank run ended."""
    import fusedlr

    def fresh():
        model = _sharded_model(0)
        return model, fusedlr.AdamW(model.parameters(), lr=0.05, schedule=_plateau_schedule(), backend=backend)

    params, opt = _load_and_finish(fresh, os.path.join(CHECKPOINTS, f"dcp-{backend}"))
    expected = torch.load(os.path.join(CHECKPOINTS, f"dcp-{backend}-expected.pt"))
    for p, e in zip(params, expected["params"]):
        torch.testing.assert_close(p.detach().full_tensor(), e, rtol=1e-6, atol=1e-7)
    assert int(opt.step_count) == expected["step_count"]
    torch.testing.assert_close(opt.current_lr, expected["current_lr"], rtol=1e-12, atol=0)


def check_zero_resume(backend):
    """ZeroRedundancyOptimizer(optimizer_class=fusedlr.AdamW): its consolidated
    state_dict, loaded into a new one (which replaces the inner optimizer's
    state without calling its load_state_dict), resumes exactly."""
    import fusedlr
    from torch.distributed.optim import ZeroRedundancyOptimizer

    def fresh():
        torch.manual_seed(0)  # the same model and data on every rank: no DDP needed
        model = torch.nn.Sequential(torch.nn.Linear(9, 17), torch.nn.ReLU(), torch.nn.Linear(17, 1))
        zero = ZeroRedundancyOptimizer(model.parameters(), optimizer_class=fusedlr.AdamW, lr=0.05,
                                       schedule=_plateau_schedule(), backend=backend)
        zero.report = zero.optim.report
        return model, zero

    def through():
        model, zero = fresh()
        _train(model, zero, 7, 0)
        return list(model.parameters()), zero.optim

    def resumed():
        model, zero = fresh()
        _train(model, zero, 4, 0)
        zero.consolidate_state_dict(to=0)
        saved = [zero.state_dict() if dist.get_rank() == 0 else None]
        dist.broadcast_object_list(saved)
        weights = [p.detach().clone() for p in model.parameters()]
        model, zero = fresh()
        with torch.no_grad():
            for p, w in zip(model.parameters(), weights):
                p.copy_(w)
        zero.load_state_dict(saved[0])
        _train(model, zero, 3, 4)
        return list(model.parameters()), zero.optim

    _resume_matches(through, resumed)


def checks(backends):
    """{name: (world size, check, *args)}: the 1-process checks run after the 2-process ones."""
    names = {}
    for backend in backends:
        for kind in ("adamw", "sgd"):
            names[f"fsdp2-{kind}-{backend}"] = (WORLD, check_fsdp2, kind, backend)
        for placement in ("Shard(0)", "Shard(1)", "Replicate", "2d-Replicate-Shard(0)"):
            names[f"dtensor-{placement}-{backend}"] = (WORLD, check_placements, placement, backend)
        # (torch has no inf norm of FSDP2's empty bias shard)
        for layout, norm_type in (("fsdp2", 2.0), ("2d-Replicate-Shard(0)", 2.0), ("2d-Replicate-Shard(0)", math.inf)):
            names[f"clipping-{layout}-norm{norm_type:g}-{backend}"] = (WORLD, check_clipping, layout, norm_type, backend)
        names[f"master-weights-Shard(0)-{backend}"] = (WORLD, check_master_weights, backend)
        names[f"grad-placement-refused-{backend}"] = (WORLD, check_grad_placement_refused, backend)
        names[f"dtensor-grad-on-plain-param-{backend}"] = (WORLD, check_dtensor_grad_on_plain_param_refused, backend)
        names[f"dcp-resume-{backend}"] = (WORLD, check_dcp_resume, backend)
        names[f"dcp-reshard-{WORLD}-to-1-{backend}"] = (1, check_dcp_reshard, backend)
        names[f"zero-resume-{backend}"] = (WORLD, check_zero_resume, backend)
    return names


def worker(rank, world, rendezvous_file, out):
    global CHECKPOINTS
    CHECKPOINTS = os.path.dirname(os.path.abspath(out))
    # a file rendezvous: no port picked in advance that another process could take first
    dist.init_process_group("gloo", init_method=f"file://{rendezvous_file}", rank=rank, world_size=world)
    import fusedlr
    backends = [b for b in ("reference", "cpu", "emulated") if b in fusedlr.available_backends()]
    results = {}
    for name, (check_world, check, *args) in checks(backends).items():
        if check_world != world:
            continue
        try:
            check(*args)
            results[name] = None
        except Exception:  # noqa: BLE001 - reported per check
            results[name] = traceback.format_exc()
        dist.barrier()
    gathered = [None] * world
    dist.all_gather_object(gathered, results)
    if rank == 0:
        merged = {name: next((r[name] for r in gathered if r[name]), None) for name in results}
        previous = json.load(open(out)) if os.path.exists(out) else {}
        with open(out, "w") as f:
            json.dump({**previous, **merged}, f)
    dist.destroy_process_group()


def _new_rendezvous_file(out: str, world: int) -> str:
    """A path no earlier run used (the file store must start absent)."""
    path = os.path.join(os.path.dirname(os.path.abspath(out)), f"rendezvous-{world}-{os.getpid()}")
    if os.path.exists(path):
        os.remove(path)
    return path


if __name__ == "__main__":
    torch.set_num_threads(1)
    for world in (WORLD, 1):
        mp.spawn(worker, args=(world, _new_rendezvous_file(sys.argv[1], world), sys.argv[1]), nprocs=world)
