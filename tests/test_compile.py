"""torch.compile(train_step, fullgraph=True) traces through opt.step() (the
native kernels as the custom op fusedlr::native_step), and a schedule that
moves every step causes no recompilation: the lr is computed from the device
step counter, so nothing Dynamo guards on changes."""
import contextlib
import copy

import pytest
import torch
from torch._dynamo.testing import CompileCounter

import fusedlr
from fusedlr import schedules as S
from optim_oracle import max_relative_error

STEPS = 100
# Dynamo traces Tensor.backward() only where this option exists (newer torch);
# elsewhere the backward runs before the compiled function.
TRACES_BACKWARD = "trace_autograd_ops" in torch._dynamo.config._config


def _model(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))


def _inputs(step):
    gen = torch.Generator().manual_seed(step)
    return torch.randn(8, 6, generator=gen)


def _train_step(model, opt, compiled_backend=None):
    """One training step; compiled with fullgraph=True when compiled_backend is given."""

    def step_body(x):
        if TRACES_BACKWARD:
            model(x).square().mean().backward()
        opt.step()

    run = step_body if compiled_backend is None else torch.compile(step_body, fullgraph=True,
                                                                    backend=compiled_backend)

    def train_step(x):
        if not TRACES_BACKWARD:
            model(x).square().mean().backward()
        run(x)
        opt.zero_grad()

    return train_step


def _compile_options():
    options = {"error_on_recompile": True}
    if TRACES_BACKWARD:
        options["trace_autograd_ops"] = True
    return torch._dynamo.config.patch(**options)


def _schedule():
    return S.with_warmup(S.Cosine(STEPS, eta_min=1e-4), 10)


OPTIMIZERS = {
    "sgd": lambda params, backend: fusedlr.SGD(params, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3,
                                              schedule=_schedule(), backend=backend),
    "adamw": lambda params, backend: fusedlr.AdamW(params, lr=1e-2, amsgrad=True, schedule=_schedule(),
                                                  backend=backend),
    "adam": lambda params, backend: fusedlr.Adam(params, lr=1e-2, weight_decay=1e-2, schedule=_schedule(),
                                                backend=backend),
}


@pytest.mark.parametrize("kind", sorted(OPTIMIZERS))
@pytest.mark.parametrize("backend", ["cpu", "reference"])
def test_fullgraph_step_compiles_once_and_matches_eager(kind, backend):
    torch._dynamo.reset()
    eager_model = _model()
    compiled_model = copy.deepcopy(eager_model)
    eager_opt = OPTIMIZERS[kind](eager_model.parameters(), backend)
    compiled_opt = OPTIMIZERS[kind](compiled_model.parameters(), backend)
    counter = CompileCounter()
    eager_step = _train_step(eager_model, eager_opt)
    compiled_step = _train_step(compiled_model, compiled_opt, counter)
    lrs = []
    with _compile_options():
        for step in range(STEPS):
            eager_step(_inputs(step))
            compiled_step(_inputs(step))
            lrs.append(compiled_opt.current_lr.clone())
    assert counter.frame_count == 1  # one graph, never recompiled while the lr moved
    assert counter.op_count > 0
    assert int(compiled_opt.step_count) == STEPS
    expected_lrs = _schedule().values(range(1, STEPS + 1), compiled_opt.defaults["lr"])
    assert torch.allclose(torch.stack(lrs), expected_lrs, rtol=1e-12, atol=0)
    for e, c in zip(eager_model.parameters(), compiled_model.parameters()):
        assert torch.equal(e, c)  # the compiled graph ran the same kernels on the same numbers


def test_inductor_compiled_adamw_matches_torch_adamw_with_scheduler():
    """opt.step() compiled by the default backend (Inductor, which functionalizes
    the custom op's mutations) against torch.optim.AdamW + LambdaLR, on the
    same eager gradients."""
    torch._dynamo.reset()
    torch_model = _model(1)
    fused_model = copy.deepcopy(torch_model)
    schedule = _schedule()
    torch_opt = torch.optim.AdamW(torch_model.parameters(), lr=1e-2)
    torch_sched = torch.optim.lr_scheduler.LambdaLR(torch_opt, lambda t: schedule(t, 1e-2) / 1e-2)
    fused_opt = fusedlr.AdamW(fused_model.parameters(), lr=1e-2, schedule=schedule)
    compiled_opt_step = torch.compile(fused_opt.step, fullgraph=True)
    with torch._dynamo.config.patch(error_on_recompile=True):
        for step in range(30):
            for model in (torch_model, fused_model):
                model(_inputs(step)).square().mean().backward()
            torch_opt.step()
            torch_sched.step()
            compiled_opt_step()
            torch_opt.zero_grad()
            fused_opt.zero_grad()
    assert max_relative_error(list(torch_model.parameters()), list(fused_model.parameters())) < 1e-5
    assert int(fused_opt.step_count) == 30


def test_edit_inside_compiled_step_asks_for_upload():
    torch._dynamo.reset()
    model = _model()
    opt = fusedlr.SGD(model.parameters(), lr=0.1, schedule=_schedule())
    counter = CompileCounter()
    step = _train_step(model, opt, counter)
    with torch._dynamo.config.patch(trace_autograd_ops=True) if TRACES_BACKWARD else contextlib.nullcontext():
        step(_inputs(0))
        opt.param_groups[0]["lr"] = 0.05
        with pytest.raises(RuntimeError, match="upload_hyperparameters"):
            step(_inputs(1))
        opt.zero_grad()
        opt.upload_hyperparameters()
        step(_inputs(1))
    assert torch.allclose(opt.current_lr, _schedule().values([2], 0.05)[0], rtol=1e-12, atol=0)
    assert int(opt.step_count) == 2


@pytest.mark.parametrize("backend", ["cpu", "reference"])
def test_report_compiles_into_the_step_without_recompiles(backend):
    """opt.report(metric) inside the compiled function (the custom op
    fusedlr::plateau_report on the native backend) follows torch's
    ReduceLROnPlateau, with one graph for every metric value."""
    torch._dynamo.reset()
    model = _model()
    opt = fusedlr.SGD(model.parameters(), lr=0.1, schedule=S.Plateau(patience=1, factor=0.5), backend=backend)
    oracle_opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    oracle = torch.optim.lr_scheduler.ReduceLROnPlateau(oracle_opt, patience=1, factor=0.5)
    counter = CompileCounter()

    def step_and_report(metric):
        opt.step()
        opt.report(metric)

    compiled = torch.compile(step_and_report, fullgraph=True, backend=counter)
    with torch._dynamo.config.patch(error_on_recompile=True):
        for step in range(20):
            model(_inputs(step)).square().mean().backward()
            metric = 1.0 / (1 + min(step, 5))
            compiled(torch.tensor(metric, dtype=torch.float64))
            opt.zero_grad()
            oracle.step(metric)
            assert float(opt.current_lr[0]) == pytest.approx(oracle_opt.param_groups[0]["lr"], rel=1e-12)
    assert counter.frame_count == 1
    assert oracle_opt.param_groups[0]["lr"] < 0.1 / 8
