"""The history ring (opt.enable_history / opt.history()) against torch.optim +
a torch scheduler run side by side: each step's lr per group, whether it was
applied (GradScaler skips), its schedule step; written inside the step (no
host read, no extra launch)."""
import pytest
import torch

import fusedlr
from fusedlr import _native
from fusedlr import schedules as S
from optim_oracle import device_for
from test_no_host_sync import NoHostReadsOrCrossDeviceCopies

STEPS, CAPACITY = 12, 7
SKIPPED = {3, 8}  # GradScaler found inf/nan in these steps
NO_GRADS = {5}  # no param has a grad: the step still ends


def _run(backend, capacity=CAPACITY):
    """(fusedlr history, the torch run's [(lrs, applied, scheduler step)] per step)."""
    device = device_for(backend)
    gen = torch.Generator().manual_seed(0)
    init = [torch.randn(6, 3, generator=gen), torch.randn(5, generator=gen).double()]  # two dtypes: two buckets
    tp = [torch.nn.Parameter(t.clone()) for t in init]
    fp = [torch.nn.Parameter(t.clone().to(device)) for t in init]
    t_opt = torch.optim.AdamW([{"params": [tp[0]]}, {"params": [tp[1]], "lr": 0.3}], lr=0.1)
    sched = torch.optim.lr_scheduler.OneCycleLR(t_opt, max_lr=[0.1, 0.3], total_steps=STEPS + 5)
    f_opt = fusedlr.AdamW([{"params": [fp[0]]}, {"params": [fp[1]], "lr": 0.3}], lr=0.1,
                          schedule=S.from_torch(sched), backend=backend)
    f_opt.enable_history(capacity)
    expected = []
    for step in range(STEPS):
        grads = [torch.randn(p.shape, generator=gen, dtype=p.dtype) for p in tp]
        skipped = step in SKIPPED
        expected.append(([g["lr"] for g in t_opt.param_groups], not skipped, sched.last_epoch))
        for p, q, g in zip(tp, fp, grads):
            p.grad = None if step in NO_GRADS else g.clone()
            q.grad = None if step in NO_GRADS else g.to(device)
        if skipped:  # what GradScaler hands the optimizer; torch.optim skips the step and its scheduler step
            f_opt.grad_scale = torch.ones(1, device=device)
            f_opt.found_inf = torch.ones(1, device=device)
            f_opt.step()
            del f_opt.grad_scale, f_opt.found_inf
            continue
        t_opt.step()
        sched.step()
        f_opt.step()
    return f_opt.history(), expected


def test_history_records_each_step_as_torch_ran_it(backend):
    history, expected = _run(backend)
    kept = expected[-CAPACITY:]  # the ring keeps the last CAPACITY steps
    assert history["lr"].shape == (CAPACITY, 2)
    assert history["applied"].tolist() == [applied for _, applied, _ in kept]
    assert history["step"].tolist() == [step for _, _, step in kept]
    torch.testing.assert_close(history["lr"], torch.tensor([lrs for lrs, _, _ in kept], dtype=torch.float64),
                               rtol=1e-12, atol=0)


def test_history_before_the_ring_fills(backend):
    history, expected = _run(backend, capacity=100)
    assert history["step"].tolist() == [step for _, _, step in expected]
    torch.testing.assert_close(history["lr"], torch.tensor([lrs for lrs, _, _ in expected], dtype=torch.float64),
                               rtol=1e-12, atol=0)


@pytest.mark.parametrize("backend", ["reference", "cpu", "emulated"])
def test_recording_reads_nothing_on_the_host(backend):
    p = torch.nn.Parameter(torch.randn(10))
    opt = fusedlr.SGD([p], lr=0.1, momentum=0.9, schedule=S.Cosine(10), backend=backend)
    opt.enable_history(4)
    p.grad = torch.ones(10)
    opt.step()
    with NoHostReadsOrCrossDeviceCopies():
        for _ in range(5):
            opt.step()
    assert opt.history()["step"].tolist() == [2, 3, 4, 5]


@pytest.mark.parametrize("backend", ["emulated", pytest.param("cuda", marks=pytest.mark.skipif(
    "cuda" not in fusedlr.available_backends(), reason="no usable CUDA device"))])
def test_recording_adds_no_launch(backend):
    module = _native.module_of(backend)
    device = "cuda" if backend == "cuda" else "cpu"
    p = torch.nn.Parameter(torch.randn(1000, device=device))
    opt = fusedlr.AdamW([p], lr=1e-3, schedule=S.Cosine(10), backend=backend)
    opt.enable_history(8)
    p.grad = torch.randn_like(p)
    opt.step()
    before = module.launch_count()
    opt.step()
    assert module.launch_count() - before == 1


def test_history_follows_new_groups_and_can_be_turned_off():
    p, q = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(3))
    opt = fusedlr.SGD([p], lr=0.1)
    with pytest.raises(RuntimeError, match="enable_history"):
        opt.history()
    opt.enable_history(3)
    p.grad = torch.ones(2)
    opt.step()
    opt.add_param_group({"params": [q], "lr": 0.2})
    q.grad = torch.ones(3)
    opt.step()
    history = opt.history()  # a ring as wide as the groups, started again
    assert history["lr"].tolist() == [[0.1, 0.2]] and history["step"].tolist() == [1]
    opt.enable_history(0)
    with pytest.raises(RuntimeError, match="enable_history"):
        opt.history()
    with pytest.raises(ValueError, match="capacity"):
        opt.enable_history(-1)
    with pytest.raises(TypeError, match="capacity"):
        opt.enable_history(2.5)


def test_log_history_writes_each_step():
    class Writer:
        def __init__(self):
            self.scalars = []

        def add_scalar(self, tag, value, step):
            self.scalars.append((tag, value, step))

    history, expected = _run("reference", capacity=100)
    writer = Writer()
    fusedlr.log_history(writer, history)
    wanted = []
    for lrs, applied, step in expected:
        wanted += [(f"lr/group{g}", lr, step) for g, lr in enumerate(lrs)] if applied else [("lr/skipped", 1.0, step)]
    assert [tag for tag, _, _ in writer.scalars] == [tag for tag, _, _ in wanted]
    assert [step for _, _, step in writer.scalars] == [step for _, _, step in wanted]
    assert [v for _, v, _ in writer.scalars] == pytest.approx([v for _, v, _ in wanted], rel=1e-12)


@pytest.mark.parametrize("backend", ["reference", "cpu", "emulated"])
def test_compiled_steps_record_like_eager_ones(backend):
    def run(compiled):
        p = torch.nn.Parameter(torch.ones(8))
        opt = fusedlr.AdamW([p], lr=0.1, schedule=S.with_warmup(S.Cosine(10), 3), backend=backend)
        opt.enable_history(16)
        step = torch.compile(opt.step, fullgraph=True, backend="eager") if compiled else opt.step
        for _ in range(6):
            p.grad = torch.ones(8)
            step()
        return opt.history()

    eager, compiled = run(False), run(True)
    assert compiled["step"].tolist() == eager["step"].tolist() == list(range(6))
    assert torch.equal(compiled["lr"], eager["lr"]) and compiled["applied"].all()


def test_a_replaced_ring_is_kept_alive():
    """A CUDA graph captured with a ring keeps writing to it: resizing or
    turning the history off must not free it."""
    import gc
    import weakref
    p = torch.nn.Parameter(torch.ones(2))
    opt = fusedlr.SGD([p], lr=0.1)
    opt.enable_history(4)
    ring = weakref.ref(opt._primary().history)
    opt.enable_history(8)
    opt.enable_history(0)
    gc.collect()
    assert ring() is not None


def test_plot_history_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    p = torch.nn.Parameter(torch.ones(2))
    schedule = S.with_warmup(S.Cosine(20), 4)
    opt = fusedlr.SGD([p], lr=0.5, schedule=schedule)
    opt.enable_history(50)
    for step in range(20):
        p.grad = torch.ones(2)
        if step == 7:
            opt.grad_scale, opt.found_inf = torch.ones(1), torch.ones(1)
        opt.step()
        if step == 7:
            del opt.grad_scale, opt.found_inf
    fusedlr.plot_history(opt.history(), tmp_path / "lr.png", schedule=schedule, base_lrs=[0.5])
    with open(tmp_path / "lr.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_the_clipped_grad_norm_is_recorded_with_each_step(backend):
    """With max_grad_norm the ring holds each step's grad norm (torch's
    get_total_norm of the same grads): also on a skipped step, 0 on a step
    without grads; NaN in every row without clipping."""
    device = device_for(backend)
    gen = torch.Generator().manual_seed(3)
    params = [torch.nn.Parameter(torch.randn(4, 3, generator=gen).to(device)) for _ in range(2)]
    opt = fusedlr.SGD(params, lr=0.1, max_grad_norm=0.5, backend=backend)
    opt.enable_history(8)
    expected = []
    for step in range(5):
        grads = [torch.randn(4, 3, generator=gen) for _ in params]
        for p, g in zip(params, grads):
            p.grad = None if step == 2 else g.to(device)
        expected.append(0.0 if step == 2 else float(torch.nn.utils.get_total_norm(grads)))
        if step == 3:
            opt.grad_scale = torch.ones(1, device=device)
            opt.found_inf = torch.ones(1, device=device)
        opt.step()
        opt.__dict__.pop("grad_scale", None)
        opt.__dict__.pop("found_inf", None)
    history = opt.history()
    assert history["applied"].tolist() == [True, True, True, False, True]
    assert history["grad_norm"].tolist() == pytest.approx(expected, rel=1e-6)
    unclipped, _ = _run(backend)
    assert torch.isnan(unclipped["grad_norm"]).all()


def _records_with_norms():
    return {"step": torch.tensor([0, 1, 1]), "applied": torch.tensor([True, False, True]),
            "grad_norm": torch.tensor([2.5, float("inf"), float("nan")], dtype=torch.float64),
            "lr": torch.tensor([[0.1, 0.2], [0.3, 0.4], [0.5, 0.6]], dtype=torch.float64)}


def test_log_history_to_a_lightning_logger(tmp_path):
    pytest.importorskip("pytorch_lightning")
    import csv

    from pytorch_lightning.loggers import CSVLogger
    logger = CSVLogger(str(tmp_path), name="run")
    fusedlr.log_history(logger, _records_with_norms())
    logger.save()
    rows = list(csv.DictReader(open(f"{logger.log_dir}/metrics.csv")))
    by_step = {}
    for row in rows:
        by_step.setdefault(int(row["step"]), {}).update({k: float(v) for k, v in row.items() if v and k != "step"})
    assert by_step == {0: {"lr/group0": 0.1, "lr/group1": 0.2, "grad_norm": 2.5},
                       1: {"lr/skipped": 1.0, "lr/group0": 0.5, "lr/group1": 0.6}}


def test_log_history_to_an_accelerate_style_logger_and_a_refusal():
    class Tracker:  # accelerate's Accelerator.log(values, step=) and wandb's run.log
        def __init__(self):
            self.calls = []

        def log(self, values, step=None):
            self.calls.append((values, step))

    tracker = Tracker()
    fusedlr.log_history(tracker, _records_with_norms(), tag="learning_rate", grad_norm_tag="train/grad_norm")
    assert tracker.calls == [({"learning_rate/group0": 0.1, "learning_rate/group1": 0.2, "train/grad_norm": 2.5}, 0),
                             ({"learning_rate/skipped": 1.0}, 1),
                             ({"learning_rate/group0": 0.5, "learning_rate/group1": 0.6}, 1)]
    with pytest.raises(TypeError, match="add_scalar"):
        fusedlr.log_history(object(), _records_with_norms())
