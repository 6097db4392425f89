"""Build report, backend errors, layer-decay groups, plotting and single-step calls."""
import math
import os

import pytest
import torch

import fusedlr
from fusedlr import schedules as S


def test_build_info_reports_the_build_and_what_runs_here():
    info = fusedlr.build_info()
    assert info["cpu_kernels"] is True
    assert info["torch_version_at_build"]
    assert info["torch_version"] == torch.__version__
    assert {"reference", "cpu"} <= set(info["available_backends"])
    if os.environ.get("FUSEDLR_EXPECT_CUDA_KERNELS") == "1":
        # the test script sets this when nvcc was on PATH: the build must have used it
        assert info["cuda_kernels"] is True
        assert set(info["cuda_archs"]) >= {"80", "90"} or os.environ.get("FUSEDLR_CUDA_ARCHS")
    if info["cuda_kernels"]:
        assert info["cuda_archs"] and all(a.strip() for a in info["cuda_archs"])
    if not torch.cuda.is_available():
        assert "cuda" not in info["available_backends"]
        assert info["cuda_unavailable_reason"]
    if info["host_module_built"] and info["torch_version_at_build"] == torch.__version__:
        # built against this torch (scripts/setup.sh builds without isolation): the libtorch host path loads
        assert info["links_libtorch"] is True, info["host_module_unavailable_reason"]
    if os.environ.get("FUSEDLR_EXPECT_HOST_MODULE") == "1":
        # the test script sets this on Linux with torch's headers importable: the build must have made it
        assert info["host_module_built"] is True


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without a GPU")
def test_asking_for_cuda_without_a_gpu_is_a_clear_error():
    with pytest.raises(RuntimeError, match="CUDA backend is unavailable"):
        S.Cosine(10).values([0, 1], [1.0], backend="cuda")


def test_unknown_backend_is_refused():
    with pytest.raises(ValueError, match="backend must be one of"):
        S.Constant().values([0], [1.0], backend="tpu")


def test_call_matches_values_on_every_backend():
    sched = S.with_warmup(S.Cosine(90, eta_min=0.01), 10)
    for step in (0, 5, 10, 57, 100, 10**9):
        expected = sched.values([step], [0.3], backend="reference")[0, 0].item()
        assert math.isclose(sched(step, 0.3), expected, rel_tol=1e-12, abs_tol=1e-15)


class _Block(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.attn = torch.nn.Linear(4, 4)


class _TinyViT(torch.nn.Module):
    def __init__(self, depth=3):
        super().__init__()
        self.embed = torch.nn.Linear(4, 4)
        self.blocks = torch.nn.ModuleList(_Block() for _ in range(depth))
        self.head = torch.nn.Linear(4, 2)
        self.frozen = torch.nn.Parameter(torch.zeros(1), requires_grad=False)


def test_layer_decay_groups_follow_timm_scaling():
    model = _TinyViT(depth=3)
    groups = fusedlr.layer_decay_param_groups(model.named_parameters(), lr=1e-3, layer_decay=0.5, num_layers=4)
    by_layer = {g["layer_id"]: g for g in groups}
    # timm: embeddings are layer 0, block k is layer k+1, the head is the last layer
    assert sorted(by_layer) == [0, 1, 2, 3, 4]
    for layer, group in by_layer.items():
        assert group["layer_scale"] == 0.5 ** (4 - layer)
        assert math.isclose(group["lr"], 1e-3 * 0.5 ** (4 - layer))
    assert by_layer[0]["params"] == [model.embed.weight, model.embed.bias]
    assert by_layer[2]["params"] == [model.blocks[1].attn.weight, model.blocks[1].attn.bias]
    assert by_layer[4]["params"] == [model.head.weight, model.head.bias]
    listed = [p for g in groups for p in g["params"]]
    assert all(p is not model.frozen for p in listed)
    assert len(listed) == len([p for p in model.parameters() if p.requires_grad])
    # the groups feed a torch optimizer and a schedule unchanged
    opt = torch.optim.SGD(groups, lr=1e-3)
    lrs = S.Cosine(10).values([0, 10], [g["lr"] for g in opt.param_groups], backend="cpu")
    assert torch.allclose(lrs[0], torch.tensor([g["lr"] for g in groups], dtype=torch.float64))


@pytest.mark.parametrize("kwargs,message", [
    (dict(lr=0.0, layer_decay=0.5, num_layers=2), r"lr must be in \(0"),
    (dict(lr=1e-3, layer_decay=1.5, num_layers=2), r"layer_decay"),
    (dict(lr=1e-3, layer_decay=0.5, num_layers=0), r"num_layers"),
])
def test_layer_decay_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        fusedlr.layer_decay_param_groups(_TinyViT().named_parameters(), **kwargs)


def test_layer_decay_refuses_a_layer_out_of_range():
    with pytest.raises(ValueError, match=r"layer_of\('embed.weight'\) returned 7"):
        fusedlr.layer_decay_param_groups(_TinyViT().named_parameters(), 1e-3, 0.5, 2, layer_of=lambda n, k: 7)


def test_plot_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "schedule.png"
    S.with_warmup(S.Cosine(200), 20).plot(path, num_steps=250, base_lrs=[1.0, 0.5])
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > 5000


def test_demo_trains_both_ways_and_agrees_with_torch(tmp_path, capsys):
    from fusedlr import demo

    assert demo.main(["--out", str(tmp_path), "--steps", "30", "--schedule-steps", "70"]) == 0
    printed = capsys.readouterr().out
    assert "fusedlr.AdamW + schedule" in printed and "MISMATCH" not in printed
    pytest.importorskip("matplotlib")
    assert (tmp_path / "training.png").stat().st_size > 0
    assert (tmp_path / "schedules.png").stat().st_size > 0
