"""Reduce-on-plateau on the device: ``opt.report(metric)`` against torch's
ReduceLROnPlateau fed the same metrics (the lr sequence, and the params the
reduced lrs produce), composition with other schedules, checkpoints, and no
host sync."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.optim import lr_scheduler as tls

import fusedlr
from fusedlr import schedules as S
from optim_oracle import clone_params, device_for, grads_for_step, make_params, max_relative_error, set_grads
from test_no_host_sync import NoHostReadsOrCrossDeviceCopies
from torch_oracle import assert_close

BASE_LRS = (0.1, 0.03)

CONFIGS = {
    "defaults-short-patience": dict(patience=2),
    "max-abs-cooldown": dict(mode="max", threshold_mode="abs", threshold=0.05, patience=1, cooldown=3, factor=0.5),
    "min-rel-min-lr-per-group": dict(patience=0, factor=0.3, min_lr=[1e-3, 5e-3], threshold=0.01),
    "eps-stops-reductions": dict(patience=0, factor=0.5, eps=1e-3),
    "zero-factor": dict(patience=1, factor=0.0, min_lr=1e-4),
}


def _metric_sequence(kind, n, seed):
    gen = torch.Generator().manual_seed(seed)
    noise = torch.rand(n, generator=gen, dtype=torch.float64)
    if kind == "decreasing-then-flat":
        return [max(1.0 - 0.05 * i, 0.4) + 0.01 * float(noise[i]) for i in range(n)]
    if kind == "noisy":
        return [float(v) for v in noise]
    if kind == "increasing":
        return [0.1 * i for i in range(n)]
    return [1.0 if i % 7 else float("nan") for i in range(n)]  # NaN reports count as bad epochs


def _torch_and_fused(config, backend, via_from_torch=True):
    device = device_for(backend)
    torch_params = [torch.nn.Parameter(torch.zeros(3)) for _ in BASE_LRS]
    fused_params = [torch.nn.Parameter(torch.zeros(3, device=device)) for _ in BASE_LRS]
    torch_opt = torch.optim.SGD([{"params": [p], "lr": lr} for p, lr in zip(torch_params, BASE_LRS)])
    sched = tls.ReduceLROnPlateau(torch_opt, **config)
    schedule = S.from_torch(sched) if via_from_torch else S.Plateau(**config)
    fused_opt = fusedlr.SGD([{"params": [p], "lr": lr} for p, lr in zip(fused_params, BASE_LRS)],
                            schedule=schedule, backend=backend)
    return torch_opt, sched, fused_opt, device


def _lr_sequences(config, metrics, backend, via_from_torch=True):
    torch_opt, sched, fused_opt, device = _torch_and_fused(config, backend, via_from_torch)
    expected, got = [], []
    for metric in metrics:
        sched.step(metric)
        fused_opt.report(torch.tensor(metric, dtype=torch.float64, device=device))
        expected.append([g["lr"] for g in torch_opt.param_groups])
        got.append(fused_opt.current_lr.clone())
    return torch.tensor(expected, dtype=torch.float64), torch.stack(got)


@pytest.mark.parametrize("metrics", ["decreasing-then-flat", "noisy", "increasing", "with-nan"])
@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_lr_sequence_matches_torch(config, metrics, backend):
    expected, got = _lr_sequences(CONFIGS[config], _metric_sequence(metrics, 60, 3), backend)
    assert_close(got, expected)
    if metrics == "decreasing-then-flat":
        assert (expected[-1] < expected[0]).all()  # the oracle really reduced


@settings(max_examples=60, deadline=None)
@given(mode=st.sampled_from(["min", "max"]), threshold_mode=st.sampled_from(["rel", "abs"]),
       threshold=st.sampled_from([0.0, 1e-4, 0.1]), patience=st.integers(0, 4), cooldown=st.integers(0, 3),
       factor=st.sampled_from([0.1, 0.5, 0.9]), min_lr=st.sampled_from([0.0, 1e-3, [1e-2, 1e-3]]),
       metrics=st.lists(st.floats(-10, 10, allow_nan=False) | st.sampled_from([0.0, 1.0]), min_size=1, max_size=40),
       backend=st.sampled_from(["reference", "cpu"]), via_from_torch=st.booleans())
def test_lr_sequence_matches_torch_for_any_metrics(mode, threshold_mode, threshold, patience, cooldown, factor,
                                                   min_lr, metrics, backend, via_from_torch):
    config = dict(mode=mode, threshold_mode=threshold_mode, threshold=threshold, patience=patience,
                  cooldown=cooldown, factor=factor, min_lr=min_lr)
    expected, got = _lr_sequences(config, metrics, backend, via_from_torch)
    assert_close(got, expected)


def test_reduced_lrs_drive_the_updates(backend):
    """Params of torch SGD(momentum) + ReduceLROnPlateau vs fusedlr with reports between steps."""
    base = make_params()
    device = device_for(backend)
    tp, fp = clone_params(base), clone_params(base, device)
    torch_opt = torch.optim.SGD(tp, lr=0.05, momentum=0.9)
    sched = tls.ReduceLROnPlateau(torch_opt, patience=1, factor=0.5)
    fused_opt = fusedlr.SGD(fp, lr=0.05, momentum=0.9, schedule=S.from_torch(sched), backend=backend)
    metrics = _metric_sequence("decreasing-then-flat", 40, 5)
    for step in range(120):
        grads = grads_for_step(base, step)
        set_grads(tp, grads)
        set_grads(fp, grads)
        torch_opt.step()
        fused_opt.step()
        if step % 3 == 2:
            sched.step(metrics[step // 3])
            fused_opt.report(torch.tensor(metrics[step // 3], device=device))
    assert torch_opt.param_groups[0]["lr"] < 0.05 / 4
    assert_close(fused_opt.current_lr, torch.tensor([torch_opt.param_groups[0]["lr"]], dtype=torch.float64))
    assert max_relative_error(tp, fp) < 1e-5


def test_warmup_then_plateau_and_cosine_times_plateau(backend):
    """Composition: the plateau's reductions scale whatever lr flows into it.
    Oracle: torch's plateau lr on a separate optimizer with lr 1 (so it is
    factor**k) times the closed-form warmup / cosine value."""
    device = device_for(backend)
    params = [torch.nn.Parameter(torch.zeros(2, device=device))]
    warm = fusedlr.SGD(params, lr=0.2, schedule=S.Sequential([S.Linear(0.1, 1.0, 10), S.Plateau(patience=0, eps=0.0)], [10]),
                       backend=backend)
    cosine = fusedlr.SGD(params, lr=0.2, schedule=S.Chain([S.Cosine(50), S.Plateau(patience=0, eps=0.0)]), backend=backend)
    ref_opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    ref = tls.ReduceLROnPlateau(ref_opt, patience=0, min_lr=0.0, eps=0.0)
    for step in range(30):
        metric = 1.0 if step % 4 else 0.5 - step / 100  # improves every 4th report only
        for opt in (warm, cosine):
            opt.report(torch.tensor(metric, device=device))
            opt.step()
        ref.step(metric)
        scale = ref_opt.param_groups[0]["lr"]
        t = step + 1
        warm_lr = 0.2 * (0.1 + 0.9 * t / 10) if t < 10 else 0.2 * scale
        assert_close(warm.current_lr, torch.tensor([warm_lr], dtype=torch.float64))
        cosine_lr = 0.2 * 0.5 * (1 + math.cos(math.pi * t / 50)) * scale
        assert_close(cosine.current_lr, torch.tensor([cosine_lr], dtype=torch.float64), atol=1e-15)
    assert scale < 1e-3


def test_plateau_state_survives_a_checkpoint(backend):
    device = device_for(backend)
    metrics = _metric_sequence("noisy", 30, 9)

    def make(params):
        return fusedlr.SGD(params, lr=0.1, schedule=S.Plateau(patience=1, cooldown=1), backend=backend)

    first = [torch.nn.Parameter(torch.ones(4, device=device))]
    second = [torch.nn.Parameter(torch.ones(4, device=device))]
    uninterrupted, resumed = make(first), make(second)
    for i, metric in enumerate(metrics):
        for opt, params in ((uninterrupted, first), (resumed, second)):
            params[0].grad = torch.full_like(params[0], 0.5)
            opt.step()
            opt.report(torch.tensor(metric, device=device))
        if i == 14:
            saved = resumed.state_dict()
            resumed = make(second)
            resumed.load_state_dict(saved)
    assert torch.equal(uninterrupted.current_lr, resumed.current_lr)
    assert torch.equal(first[0], second[0])
    assert float(uninterrupted.current_lr[0]) < 0.1


def test_report_makes_no_host_read(backend):
    device = device_for(backend)
    params = [torch.nn.Parameter(torch.ones(4, device=device))]
    metric = torch.tensor(0.5, device=device)
    with NoHostReadsOrCrossDeviceCopies():
        opt = fusedlr.AdamW(params, schedule=S.with_warmup(S.Plateau(patience=0), 3), backend=backend)
        for _ in range(5):
            params[0].grad = torch.ones_like(params[0])
            opt.step()
            opt.report(metric)
            opt.current_lr  # noqa: B018


def test_hf_reduce_lr_on_plateau_is_a_plateau():
    schedule = S.get_scheduler("reduce_lr_on_plateau", patience=3, factor=0.2)
    assert isinstance(schedule, S.Plateau) and schedule.patience == 3 and schedule.factor == 0.2


@pytest.mark.parametrize("make, error, match", [
    (lambda ps: fusedlr.SGD(ps).report(1.0), RuntimeError, "needs a fusedlr.schedules.Plateau"),
    (lambda ps: fusedlr.SGD(ps, schedule=S.Plateau()).report(torch.ones(2)), ValueError, "one value"),
    (lambda ps: fusedlr.SGD(ps, schedule=S.Plateau()).report("0.5"), TypeError, "metric must be"),
    (lambda ps: fusedlr.SGD([{"params": ps[:1], "schedule": S.Plateau()}, {"params": ps[1:], "schedule": S.Plateau()}]),
     ValueError, "2 different Plateau objects"),
    (lambda ps: fusedlr.SGD(ps, momentum=0.9, momentum_schedule=S.Plateau()), ValueError,
     "momentum_schedule holds a Plateau"),
    (lambda ps: S.Plateau(factor=1.0), ValueError, "factor"),
    (lambda ps: S.Plateau(patience=-1), ValueError, "patience"),
    (lambda ps: S.Plateau(mode="best"), ValueError, "mode must be one of"),
    (lambda ps: S.Plateau(min_lr=[]), ValueError, "min_lr"),
])
def test_bad_plateau_use_is_refused(make, error, match):
    with pytest.raises(error, match=match):
        make([torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(2))])
