"""Whole training steps captured in CUDA graphs: forward, backward,
opt.step() (or scaler.step(opt)) with its schedules, and opt.report(metric),
replayed N times, against N eager steps of an identical twin. CUDA only."""
import pytest
import torch

import fusedlr
from fusedlr import schedules as S

pytestmark = pytest.mark.skipif("cuda" not in fusedlr.available_backends(), reason="no usable CUDA device")

REPLAYS = 25


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.GELU(), torch.nn.Linear(64, 8)).cuda()


def _batch(step):
    gen = torch.Generator(device="cuda").manual_seed(step)
    return torch.randn(16, 32, device="cuda", generator=gen), torch.randn(16, 8, device="cuda", generator=gen)


OPTIMIZERS = {
    "sgd": lambda params: fusedlr.SGD(params, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-4,
                                      schedule=S.with_warmup(S.Cosine(REPLAYS + 5), 5),
                                      momentum_schedule=S.one_cycle_momentum(REPLAYS + 5)),
    "adamw": lambda params: fusedlr.AdamW(params, lr=1e-3, schedule=S.warmup_stable_decay(5, 10, 10),
                                          weight_decay_schedule=S.Cosine(REPLAYS + 5)),
    "adam": lambda params: fusedlr.Adam(params, lr=1e-3, weight_decay=1e-2, amsgrad=True,
                                        schedule=S.warmup_stable_decay(5, 10, 10)),
}


class _Trainer:
    """A model, its optimizer (and GradScaler) and static input buffers."""

    def __init__(self, kind, with_scaler):
        self.model = _model()
        self.opt = OPTIMIZERS[kind](self.model.parameters())
        self.scaler = torch.amp.GradScaler("cuda", init_scale=1024.0) if with_scaler else None
        self.x, self.y = _batch(0)

    def step(self):
        loss = torch.nn.functional.mse_loss(self.model(self.x), self.y)
        if self.scaler is None:
            loss.backward()
            self.opt.step()
        else:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.opt)
            self.scaler.update()

    def load(self, step):
        x, y = _batch(step)
        self.x.copy_(x)
        self.y.copy_(y)


def _warm_up(trainer, steps=3):
    """torch's recipe: a few eager steps on a side stream before capture."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for step in range(steps):
            trainer.load(step)
            trainer.opt.zero_grad(set_to_none=True)
            trainer.step()
    torch.cuda.current_stream().wait_stream(side)


def _capture(trainer, stream=None):
    graph = torch.cuda.graph
    g = torch.cuda.CUDAGraph()
    trainer.opt.zero_grad(set_to_none=True)
    with graph(g, stream=stream):
        trainer.step()
    return g


@pytest.mark.parametrize("with_scaler", [False, True], ids=["plain", "grad-scaler"])
@pytest.mark.parametrize("kind", sorted(OPTIMIZERS))
@pytest.mark.parametrize("side_stream", [False, True], ids=["default-capture-stream", "side-stream"])
def test_replays_match_eager_steps(kind, with_scaler, side_stream):
    graphed, eager = _Trainer(kind, with_scaler), _Trainer(kind, with_scaler)
    _warm_up(graphed)
    _warm_up(eager)
    g = _capture(graphed, torch.cuda.Stream() if side_stream else None)
    # the capture itself ran nothing: both are at the same point
    lrs_graphed, lrs_eager = [], []
    for step in range(3, 3 + REPLAYS):
        graphed.load(step)
        g.replay()
        lrs_graphed.append(graphed.opt.current_lr.clone())
        eager.load(step)
        eager.opt.zero_grad(set_to_none=True)
        eager.step()
        lrs_eager.append(eager.opt.current_lr.clone())
    torch.cuda.synchronize()
    assert torch.equal(graphed.opt.step_count, eager.opt.step_count)
    assert torch.equal(torch.stack(lrs_graphed), torch.stack(lrs_eager))
    assert len(set(torch.stack(lrs_eager).flatten().tolist())) > 5  # the lr really moved during the replays
    for a, b in zip(graphed.model.parameters(), eager.model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_hyperparameter_upload_between_replays_takes_effect():
    graphed, eager = _Trainer("adamw", False), _Trainer("adamw", False)
    _warm_up(graphed)
    _warm_up(eager)
    g = _capture(graphed)
    for step in range(3, 13):
        if step == 8:  # "start the decay now", and a new weight decay, without recapture
            for trainer in (graphed, eager):
                group = trainer.opt.param_groups[0]
                group["schedule"] = S.warmup_stable_decay(5, 3, 10)
                group["weight_decay"] = 0.05
            graphed.opt.upload_hyperparameters()
        graphed.load(step)
        g.replay()
        eager.load(step)
        eager.opt.zero_grad(set_to_none=True)
        eager.step()
    torch.cuda.synchronize()
    assert torch.equal(graphed.opt.current_lr, eager.opt.current_lr)
    for a, b in zip(graphed.model.parameters(), eager.model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_report_inside_the_graph_follows_the_metric():
    model = _model()
    opt = fusedlr.SGD(model.parameters(), lr=0.1, schedule=S.Plateau(patience=0, factor=0.5))
    oracle_opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    oracle = torch.optim.lr_scheduler.ReduceLROnPlateau(oracle_opt, patience=0, factor=0.5)
    x, y = _batch(0)
    metric = torch.zeros((), device="cuda", dtype=torch.float64)

    def train_step():
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        opt.report(metric)

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.mse_loss(model(x), y).backward()
        opt.step()
    torch.cuda.current_stream().wait_stream(side)
    opt.zero_grad(set_to_none=True)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        train_step()
    for i in range(12):
        value = 1.0 if i % 3 else 0.5 / (i + 1)
        metric.fill_(value)
        g.replay()
        oracle.step(value)
        assert float(opt.current_lr[0]) == pytest.approx(oracle_opt.param_groups[0]["lr"], rel=1e-12)
    assert oracle_opt.param_groups[0]["lr"] < 0.1 / 4


def test_make_graphed_callables_model_with_eager_fused_step():
    graphed_model, eager_model = _model(), _model()
    graphed_opt = OPTIMIZERS["adamw"](graphed_model.parameters())
    eager_opt = OPTIMIZERS["adamw"](eager_model.parameters())
    sample = _batch(0)[0]
    graphed_model = torch.cuda.make_graphed_callables(graphed_model, (sample,))
    for step in range(REPLAYS):
        x, y = _batch(step)
        for model, opt in ((graphed_model, graphed_opt), (eager_model, eager_opt)):
            opt.zero_grad(set_to_none=True)
            torch.nn.functional.mse_loss(model(x), y).backward()
            opt.step()
    torch.cuda.synchronize()
    assert torch.equal(graphed_opt.current_lr, eager_opt.current_lr)
    for a, b in zip(graphed_opt.param_groups[0]["params"], eager_opt.param_groups[0]["params"]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_capturing_the_first_step_asks_for_a_warm_up():
    model = _model()
    opt = fusedlr.SGD(model.parameters(), lr=0.1)
    x, y = _batch(0)
    g = torch.cuda.CUDAGraph()
    with pytest.raises(RuntimeError, match="eager step"):
        with torch.cuda.graph(g):
            torch.nn.functional.mse_loss(model(x), y).backward()
            opt.step()


def test_edit_without_upload_is_refused_during_capture():
    trainer = _Trainer("sgd", False)
    _warm_up(trainer)
    trainer.opt.param_groups[0]["lr"] = 0.01
    with pytest.raises(RuntimeError, match="upload_hyperparameters"):
        _capture(trainer)
