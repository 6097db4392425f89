"""fusedlr inside HF Trainer, accelerate and Lightning, against torch.optim in the same
trainer: the default path refuses the double schedule clearly, and with
SchedulerView the run and the logged lrs equal torch's."""
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
    for a, b in zip(torch_model.parameters(), fused_model.parameters()):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)


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
    for a, b in zip(torch_model.parameters(), fused_model.parameters()):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)


def test_lightning_with_scheduler_view_matches_torch():
    pl = pytest.importorskip("pytorch_lightning")
    data = _data()

    class Module(pl.LightningModule):
        def __init__(self, make):
            super().__init__()
            torch.manual_seed(0)
            self.net = TinyRegression()
            self.make = make
            self.lrs = []

        def training_step(self, batch, _):
            return self.net(**batch)["loss"]

        def on_train_batch_end(self, *args):
            self.lrs.append(self.lr_schedulers().get_last_lr()[0])

        def configure_optimizers(self):
            opt, sched = self.make(self.net)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def run(make):
        module = Module(make)
        loader = torch.utils.data.DataLoader(data, batch_size=4, shuffle=False)
        trainer = pl.Trainer(max_steps=STEPS, accelerator="cpu", logger=False, enable_checkpointing=False,
                             enable_progress_bar=False, enable_model_summary=False)
        trainer.fit(module, loader)
        return module.net, module.lrs

    torch_model, torch_lrs = run(_torch_pair)
    fused_model, fused_lrs = run(_fused_pair)
    assert len(fused_lrs) == STEPS
    assert fused_lrs == pytest.approx(torch_lrs, rel=1e-9, abs=1e-15)
    for a, b in zip(torch_model.parameters(), fused_model.parameters()):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)


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
