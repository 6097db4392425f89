"""optimizer.step() never reads a device value on the host nor copies between
devices — from construction on, for every schedule in the catalogue, both
optimizers (with grad-norm clipping), with and without GradScaler. Checked on the CPU by intercepting
every aten call made during construction and steps; on CUDA additionally with
torch.cuda.set_sync_debug_mode("error")."""
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import fusedlr
import test_formulas
import test_from_torch
from fusedlr import schedules as S
from optim_oracle import device_for

aten = torch.ops.aten


class NoHostReadsOrCrossDeviceCopies(TorchDispatchMode):
    """Fails on aten._local_scalar_dense (.item(), float(t), bool(t), ...) and
    on any copy whose source and destination devices differ."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is aten._local_scalar_dense.default:
            raise AssertionError("host read of a tensor value (aten._local_scalar_dense)")
        if func is aten._to_copy.default and "device" in kwargs and kwargs["device"] != args[0].device:
            raise AssertionError(f"cross-device copy {args[0].device} -> {kwargs['device']}")
        if func is aten.copy_.default and args[0].device != args[1].device:
            raise AssertionError(f"cross-device copy {args[1].device} -> {args[0].device}")
        return func(*args, **kwargs)


def _formula_case(name):
    schedule, _, base_lrs = test_formulas.CASES[name]
    return schedule, list(base_lrs)


def _torch_case(name):
    make, _, _ = test_from_torch.CASES[name]
    base = test_from_torch._base(name)
    opt = torch.optim.SGD([{"params": [torch.nn.Parameter(torch.zeros(1))], "lr": lr} for lr in base])
    scheduler = make(opt)
    return S.from_torch(scheduler), S.torch_base_lrs(scheduler)


SCHEDULES = ([pytest.param(_formula_case, n, id=f"formula-{n}") for n in sorted(test_formulas.CASES)]
             + [pytest.param(_torch_case, n, id=f"torch-{n}") for n in sorted(test_from_torch.CASES)])
OPTIMIZERS = [(fusedlr.SGD, dict(momentum=0.9, nesterov=True, weight_decay=1e-2,
                                  momentum_schedule=S.cyclic_momentum(step_size_up=2),
                                  weight_decay_schedule=S.Anneal(1.0, 3.0, 3), max_grad_norm=0.5,
                                  norm_type=float("inf"))),
              (fusedlr.AdamW, dict(amsgrad=True, maximize=True, beta1_schedule=S.one_cycle_momentum(5),
                                   weight_decay_schedule=S.Cosine(3), max_grad_norm=1.0)),
              (fusedlr.Adam, dict(weight_decay=1e-2, weight_decay_schedule=S.Cosine(3)))]


def _train(case, name, backend, with_scaler):
    device = device_for(backend)
    schedule, base_lrs = case(name)
    params = [[torch.nn.Parameter(torch.randn(5, 3, device=device)), torch.nn.Parameter(torch.randn(7, device=device))]
              for _ in base_lrs]
    grads = [[torch.randn_like(p) for p in ps] for ps in params]
    for cls, options in OPTIMIZERS:
        scaler = torch.amp.GradScaler(device.type, init_scale=4.0) if with_scaler else None
        if scaler is not None:
            scaler.scale(torch.ones((), device=device))  # creates the scale, as the first loss.backward() would
        with NoHostReadsOrCrossDeviceCopies():
            groups = [dict(params=ps, lr=lr) for ps, lr in zip(params, base_lrs)]
            opt = cls(groups, schedule=schedule, backend=backend, **options)
            for step in range(4):
                for ps, gs in zip(params, grads):
                    for p, g in zip(ps, gs):
                        # an inf on step 2 makes GradScaler skip that step
                        p.grad = g * 4.0 if not (with_scaler and step == 2) else g * float("inf")
                if scaler is None:
                    opt.step()
                else:
                    scaler.step(opt)
                    scaler.update()
            opt.current_lr  # noqa: B018 - reading the lrs for logging must not sync either
            applied = opt.last_step_applied.clone()
        expected_steps = 3 if with_scaler else 4
        assert torch.equal(opt.step_count.cpu(), torch.tensor(expected_steps))
        assert bool(applied)


@pytest.mark.parametrize("with_scaler", [False, True], ids=["plain", "grad-scaler"])
@pytest.mark.parametrize("case, name", SCHEDULES)
def test_step_makes_no_host_read(case, name, with_scaler, backend):
    if backend == "cuda":
        torch.cuda.set_sync_debug_mode("error")
        try:
            _train(case, name, backend, with_scaler)
        finally:
            torch.cuda.set_sync_debug_mode(0)
    else:
        _train(case, name, backend, with_scaler)


def test_the_interceptor_catches_host_reads():
    """The check itself can fail: .item() and a cross-device copy are caught."""
    t = torch.ones(2)
    with pytest.raises(AssertionError, match="host read"):
        with NoHostReadsOrCrossDeviceCopies():
            t.sum().item()
    with pytest.raises(AssertionError, match="cross-device"):
        with NoHostReadsOrCrossDeviceCopies():
            t.to("meta")
