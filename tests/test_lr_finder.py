"""fusedlr.lr_find against Lightning's lr finder (Tuner.lr_find) on the same
model, data, seed, ramp and smoothing; the state restored; no host read
inside the ramp; the suggestions on curves with known answers."""
import math

import pytest
import torch

import fusedlr
from fusedlr.lr_finder import LRFinderResult, _run, ramp
from test_no_host_sync import NoHostReadsOrCrossDeviceCopies


def _data():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(256, 6, generator=gen)
    y = x @ torch.randn(6, generator=gen) + 0.1 * torch.randn(256, generator=gen)
    return [{"x": x[i:i + 8], "y": y[i:i + 8]} for i in range(0, 256, 8)]


def _net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))


def _loss(model, batch):
    return torch.nn.functional.mse_loss(model(batch["x"]).squeeze(-1), batch["y"])


@pytest.mark.parametrize("mode", ["exp", "linear"])
def test_matches_lightning_lr_find(backend, mode):
    if backend == "cuda":
        pytest.skip("Lightning runs this model on the CPU")
    pl = pytest.importorskip("pytorch_lightning")
    from pytorch_lightning.tuner import Tuner

    class Module(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net, self.lr = _net(), 1e-3

        def training_step(self, batch, _):
            return _loss(self.net, batch)

        def configure_optimizers(self):
            return torch.optim.AdamW(self.parameters(), lr=self.lr, weight_decay=0.01)

    data, end_lr = _data(), (10.0 if mode == "exp" else 1.0)
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, max_epochs=100)
    theirs = Tuner(trainer).lr_find(Module(), train_dataloaders=torch.utils.data.DataLoader(data, batch_size=None),
                                    min_lr=1e-5, max_lr=end_lr, num_training=80,
                                    mode="exponential" if mode == "exp" else "linear")
    model = _net()
    opt = fusedlr.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01, backend=backend)
    ours = fusedlr.lr_find(model, _loss, data, opt, start_lr=1e-5, end_lr=end_lr, num_steps=80, mode=mode)
    assert ours.lrs == theirs.results["lr"]
    assert ours.losses == pytest.approx(theirs.results["loss"], rel=1e-3)
    assert ours.suggestion() == theirs.suggestion()


def test_restores_model_and_optimizer(backend):
    from fusedlr import schedules as S
    device = "cuda" if backend == "cuda" else "cpu"
    model = _net().to(device)
    schedule = S.with_warmup(S.Cosine(50), 5)
    opt = fusedlr.AdamW(model.parameters(), lr=1e-3, schedule=schedule, backend=backend)
    opt.enable_history(10)
    view = fusedlr.SchedulerView(opt)
    data = [{k: v.to(device) for k, v in b.items()} for b in _data()]
    for batch in data[:3]:
        _loss(model, batch).backward()
        opt.step()
        opt.zero_grad()
    params = [p.detach().clone() for p in model.parameters()]
    state = {k: v.clone() for k, v in opt.state[next(model.parameters())].items()}
    count, lrs, history, viewed = int(opt.step_count), opt.current_lr.clone(), opt.history(), view.get_last_lr()
    result = fusedlr.lr_find(model, _loss, data, opt, start_lr=1e-4, end_lr=1.0, num_steps=20)
    assert len(result.lrs) == len(result.losses) == len(result.raw_losses) <= 20
    for p, before in zip(model.parameters(), params):
        assert torch.equal(p.detach(), before)
    for key, value in opt.state[next(model.parameters())].items():
        assert torch.equal(value, state[key]), key
    assert int(opt.step_count) == count and torch.equal(opt.current_lr, lrs)
    assert opt.param_groups[0]["schedule"] is schedule and opt.param_groups[0]["lr"] == 1e-3
    after = opt.history()
    for k in history:  # the ramp left no record (grad_norm: NaN without clipping)
        torch.testing.assert_close(after[k], history[k], rtol=0, atol=0, equal_nan=True)
    assert view.get_last_lr() == viewed


def test_ramp_reads_nothing_and_stops_stepping_after_divergence():
    """No host read inside the ramp; after the divergence the optimizer's steps
    change nothing (its counter stops at the steps taken)."""
    model = _net()
    opt = fusedlr.AdamW(model.parameters(), lr=1.0, backend="cpu")
    for group in opt.param_groups:
        group["schedule"] = fusedlr.schedules.Piecewise(range(1, 40), ramp(1e-3, 1e3, 40, "exp"))
    with NoHostReadsOrCrossDeviceCopies():
        record = _run(model, _loss, _data(), opt, 40, 0.98, 4.0)
    taken = int(record["taken"])
    assert bool(record["stopped"]) and 2 <= taken < 40
    assert int(opt.step_count) == taken


def test_suggestions_on_known_curves():
    lrs = [10 ** (-4 + 4 * i / 99) for i in range(100)]
    # a loss that falls fastest (against the lr) at lr = 0.1, lowest at lr = 0.5
    losses = [1 / (1 + math.exp((lr - 0.1) * 40)) + (lr - 0.5) ** 2 for lr in lrs]
    result = LRFinderResult(lrs, losses, losses, False, "exp")
    gradient = [(losses[i + 1] - losses[i - 1]) / (lrs[i + 1] - lrs[i - 1]) for i in range(10, 98)]
    assert result.suggestion("steepest") == lrs[10 + min(range(len(gradient)), key=gradient.__getitem__)]
    assert result.suggestion("minimum") == pytest.approx(lrs[min(range(10, 99), key=losses.__getitem__)] / 10)
    falling = LRFinderResult(lrs[:9], [5, 4, 6, 3, 2, 7, 1, 0.5, 9], [0] * 9, False, "exp")
    # longest decreasing run: 5, 4, 3, 2, 1, 0.5 (indices 0..7); a third of the way in: index 2
    assert falling.suggestion("valley", skip_begin=0, skip_end=0) == lrs[2]
    assert LRFinderResult(lrs[:3], [1.0, 2.0, 3.0], [0] * 3, False, "exp").suggestion() is None
    with pytest.raises(ValueError, match="method"):
        result.suggestion("best")


@pytest.mark.parametrize("kwargs,error,message", [
    (dict(start_lr=0.0), ValueError, "start_lr"),
    (dict(start_lr=1.0, end_lr=0.5), ValueError, "end_lr must be greater"),
    (dict(num_steps=1), ValueError, "num_steps"),
    (dict(mode="cosine"), ValueError, "mode"),
    (dict(smooth=1.0), ValueError, "smooth"),
    (dict(diverge_threshold=-1.0), ValueError, "diverge_threshold"),
])
def test_bad_arguments(kwargs, error, message):
    model = _net()
    opt = fusedlr.AdamW(model.parameters(), lr=1e-3)
    with pytest.raises(error, match=message):
        fusedlr.lr_find(model, _loss, _data(), opt, **kwargs)
    with pytest.raises(TypeError, match="fusedlr optimizer"):
        fusedlr.lr_find(model, _loss, _data(), torch.optim.AdamW(model.parameters()))
    with pytest.raises(ValueError, match="no batches"):
        fusedlr.lr_find(model, _loss, [], opt, num_steps=3)


def test_plot_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    model = _net()
    opt = fusedlr.AdamW(model.parameters(), lr=1e-3)
    result = fusedlr.lr_find(model, _loss, _data(), opt, start_lr=1e-5, end_lr=10.0, num_steps=40)
    result.plot(tmp_path / "lr_find.png")
    with open(tmp_path / "lr_find.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
