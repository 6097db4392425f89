"""fusedlr inside HF Trainer, accelerate and Lightning, against torch.optim in the same
trainer: the default path refuses the double schedule clearly, and with
SchedulerView the run, the logged lrs and resumed checkpoints equal torch's."""
import tempfile

import pytest
import torch

import fusedlr
from fusedlr import schedules as S

STEPS, WARMUP, LR = 8, 3, 0.05


class TinyRegression(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(6, 1)

    def forward(self, x, labels):
        return {"loss": torch.nn.functional.mse_loss(self.lin(x).squeeze(-1), labels)}


def _data():
    gen = torch.Generator().manual_seed(0)
    return [{"x": torch.randn(6, generator=gen), "labels": torch.randn((), generator=gen)} for _ in range(64)]


def _hf_run(make_optimizers):
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    torch.manual_seed(0)
    model = TinyRegression()
    with tempfile.TemporaryDirectory() as out:
        args = transformers.TrainingArguments(
            output_dir=out, max_steps=STEPS, per_device_train_batch_size=4, learning_rate=LR, warmup_steps=WARMUP,
            weight_decay=0.0, logging_steps=1, report_to=[], use_cpu=True, save_strategy="no", seed=0,
            disable_tqdm=True)
        trainer = transformers.Trainer(model=model, args=args, train_dataset=_data(),
                                       optimizers=make_optimizers(model))
        trainer.train()
    logged = [h["learning_rate"] for h in trainer.state.log_history if "learning_rate" in h]
    return model, logged


def _fused(model, backend="cpu"):
    return fusedlr.AdamW(model.parameters(), lr=LR, weight_decay=0.0,
                         schedule=S.get_scheduler("linear", WARMUP, STEPS), backend=backend)


def _torch_pair(model):
    """torch AdamW + HF's linear warmup-decay schedule, as a LambdaLR."""
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.0)
    lam = lambda s: s / WARMUP if s < WARMUP else max(0.0, (STEPS - s) / (STEPS - WARMUP))  # noqa: E731
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, lam)


def _fused_pair(model):
    opt = _fused(model)
    return opt, fusedlr.SchedulerView(opt)


def _assert_same_params(expected_model, model):
    for a, b in zip(expected_model.parameters(), model.parameters()):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)


def test_hf_trainer_with_scheduler_view_matches_torch(native_backend):
    if native_backend == "cuda":
        pytest.skip("the Trainer here runs on the CPU")
    torch_model, torch_lrs = _hf_run(lambda model: (None, None))  # HF's AdamW + its linear warmup schedule

    def fused(model):
        opt = _fused(model, native_backend)
        return opt, fusedlr.SchedulerView(opt)

    fused_model, fused_lrs = _hf_run(fused)
    assert len(fused_lrs) == STEPS
    assert fused_lrs == pytest.approx(torch_lrs, rel=1e-9, abs=1e-15)
    _assert_same_params(torch_model, fused_model)


def test_hf_trainer_default_scheduler_is_refused():
    """Trainer(optimizers=(opt, None)) attaches its own LambdaLR: a clear error
    at the first step, not a squared warmup."""
    with pytest.raises(RuntimeError, match="SchedulerView"):
        _hf_run(lambda model: (_fused(model), None))


def test_accelerate_with_scheduler_view_matches_torch():
    accelerate = pytest.importorskip("accelerate")
    data = _data()

    def run(make):
        torch.manual_seed(0)
        model = TinyRegression()
        opt, sched = make(model)
        accelerator = accelerate.Accelerator(cpu=True, gradient_accumulation_steps=2)
        model, opt, sched = accelerator.prepare(model, opt, sched)
        lrs = []
        for i in range(0, 4 * 2 * STEPS, 4):
            batch = {k: torch.stack([d[k] for d in data[i % 64:i % 64 + 4]]) for k in data[0]}
            with accelerator.accumulate(model):
                accelerator.backward(model(**batch)["loss"])
                opt.step()
                sched.step()
                opt.zero_grad()
            lrs.append(sched.get_last_lr()[0])
        return model, lrs

    torch_model, torch_lrs = run(_torch_pair)
    fused_model, fused_lrs = run(_fused_pair)
    assert fused_lrs == pytest.approx(torch_lrs, rel=1e-9, abs=1e-15)
    _assert_same_params(torch_model, fused_model)


def _lightning_module(pl, make):
    """A LightningModule training TinyRegression with ``make(net) -> (optimizer,
    scheduler)`` stepped per batch; it records get_last_lr() after each batch."""
    class Module(pl.LightningModule):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.net = TinyRegression()
            self.lrs = []

        def training_step(self, batch, _):
            return self.net(**batch)["loss"]

        def on_train_batch_end(self, *args):
            self.lrs.append(self.lr_schedulers().get_last_lr()[0])

        def configure_optimizers(self):
            opt, sched = make(self.net)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    return Module()


def _lightning_fit(pl, make, data, max_steps, root, ckpt_path=None, logger=False, callbacks=()):
    module = _lightning_module(pl, make)
    trainer = pl.Trainer(max_steps=max_steps, accelerator="cpu", logger=logger, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(root),
                         callbacks=list(callbacks), log_every_n_steps=1)
    trainer.fit(module, torch.utils.data.DataLoader(data, batch_size=4, shuffle=False), ckpt_path=ckpt_path)
    return module, trainer


def test_lightning_with_scheduler_view_matches_torch(tmp_path):
    pl = pytest.importorskip("pytorch_lightning")
    torch_module, _ = _lightning_fit(pl, _torch_pair, _data(), STEPS, tmp_path)
    fused_module, _ = _lightning_fit(pl, _fused_pair, _data(), STEPS, tmp_path)
    assert len(fused_module.lrs) == STEPS
    assert fused_module.lrs == pytest.approx(torch_module.lrs, rel=1e-9, abs=1e-15)
    _assert_same_params(torch_module, fused_module)


def test_hf_trainer_resumes_exactly():
    """Trainer(resume_from_checkpoint=...) loads the fusedlr optimizer's
    checkpoint (torch.load(weights_only=True)) and continues as if never stopped."""
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate")

    def run(out, resume=None):
        torch.manual_seed(0)
        model = TinyRegression()
        args = transformers.TrainingArguments(
            output_dir=out, max_steps=STEPS, per_device_train_batch_size=4, learning_rate=LR, weight_decay=0.0,
            report_to=[], use_cpu=True, save_strategy="steps", save_steps=STEPS // 2, seed=0, disable_tqdm=True)
        opt = _fused(model)
        trainer = transformers.Trainer(model=model, args=args, train_dataset=_data(),
                                       optimizers=(opt, fusedlr.SchedulerView(opt)))
        trainer.train(resume_from_checkpoint=resume)
        return model, opt

    with tempfile.TemporaryDirectory() as out:
        through, through_opt = run(out)
        resumed, resumed_opt = run(out, resume=f"{out}/checkpoint-{STEPS // 2}")
    assert int(resumed_opt.step_count) == int(through_opt.step_count) == STEPS
    for a, b in zip(through.parameters(), resumed.parameters()):
        assert torch.equal(a, b)


def _batches(data, count, offset=0):
    return [{k: torch.stack([d[k] for d in data[(i * 4) % 64:(i * 4) % 64 + 4]]) for k in data[0]}
            for i in range(offset, offset + count)]


def test_accelerate_save_state_load_state_resumes_exactly(tmp_path):
    accelerate = pytest.importorskip("accelerate")
    data = _data()

    def prepared():
        torch.manual_seed(0)
        accelerator = accelerate.Accelerator(cpu=True)
        model = TinyRegression()
        opt, view = _fused_pair(model)
        return accelerator, *accelerator.prepare(model, opt, view)

    def train(accelerator, model, opt, view, batches):
        for batch in batches:
            accelerator.backward(model(**batch)["loss"])
            opt.step()
            view.step()
            opt.zero_grad()

    accelerator, through, through_opt, view = prepared()
    train(accelerator, through, through_opt, view, _batches(data, STEPS))
    accelerator, model, opt, view = prepared()
    train(accelerator, model, opt, view, _batches(data, STEPS // 2))
    accelerator.save_state(str(tmp_path))
    accelerator, resumed, resumed_opt, view = prepared()
    accelerator.load_state(str(tmp_path))
    train(accelerator, resumed, resumed_opt, view, _batches(data, STEPS - STEPS // 2, STEPS // 2))
    assert int(resumed_opt.optimizer.step_count) == int(through_opt.optimizer.step_count) == STEPS
    assert view.scheduler.last_epoch == STEPS  # the SchedulerView's state was saved and loaded too
    for a, b in zip(through.parameters(), resumed.parameters()):
        assert torch.equal(a, b)


def test_lightning_resume_from_checkpoint_matches_torch(tmp_path):
    """Stop, save_checkpoint, fit(ckpt_path=...): the fusedlr run resumes as the
    torch.optim + LambdaLR run does through the same Lightning loop (which
    replays its own data order on resume, so the oracle is torch's resumed
    run, not an uninterrupted one)."""
    pl = pytest.importorskip("pytorch_lightning")
    data = _data()[:4 * (STEPS // 2)]

    def stop_and_resume(make, name):
        _, trainer = _lightning_fit(pl, make, data, STEPS // 2, tmp_path)
        trainer.save_checkpoint(str(tmp_path / name))
        return _lightning_fit(pl, make, data, STEPS, tmp_path, ckpt_path=str(tmp_path / name))

    torch_module, _ = stop_and_resume(_torch_pair, "torch.ckpt")
    fused_module, trainer = stop_and_resume(_fused_pair, "fused.ckpt")
    assert int(trainer.optimizers[0].step_count) == trainer.lr_scheduler_configs[0].scheduler.last_epoch == STEPS
    _assert_same_params(torch_module, fused_module)


def test_lightning_lr_monitor_logs_the_applied_lr(tmp_path):
    """fusedlr.lightning.LearningRateMonitor on the fusedlr run logs what
    Lightning's LearningRateMonitor logs on the torch.optim + LambdaLR run."""
    pl = pytest.importorskip("pytorch_lightning")
    from pytorch_lightning.loggers import CSVLogger

    from fusedlr.lightning import LearningRateMonitor

    def logged(make, monitor, name):
        logger = CSVLogger(str(tmp_path), name=name)
        _lightning_fit(pl, make, _data(), STEPS, tmp_path, logger=logger, callbacks=[monitor])
        logger.save()
        with open(f"{logger.log_dir}/metrics.csv") as f:
            rows = [line.strip().split(",") for line in f]
        column = rows[0].index("lr-AdamW")
        return [float(row[column]) for row in rows[1:] if row[column]]

    expected = logged(_torch_pair, pl.callbacks.LearningRateMonitor(logging_interval="step"), "torch")
    assert len(expected) == STEPS and len(set(expected)) > 3  # the warmup and decay show
    assert logged(_fused_pair, LearningRateMonitor(logging_interval="step"), "fused") == pytest.approx(
        expected, rel=1e-9, abs=1e-15)
    # Lightning's own monitor shows fusedlr's base lr: the reason for fusedlr's
    assert set(logged(_fused_pair, pl.callbacks.LearningRateMonitor(logging_interval="step"), "stock")) == {LR}
