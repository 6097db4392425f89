"""The benchmark harness end to end in --quick mode: a smoke test of the
output's shape and consistency, never of the speed."""
import json

import pytest
import torch

from fusedlr.bench import cli, preset, shapes_from_json, shapes_of
from fusedlr.bench.contenders import ACCESSES_PER_ELEMENT


def test_quick_run_writes_a_well_formed_json(tmp_path, capsys):
    shapes = tmp_path / "shapes.json"
    shapes.write_text(json.dumps([[300, 7], [5], []]))
    assert cli.main(["--quick", "--device", "cpu", "--preset", "tiny-1000", "--shapes", str(shapes),
                     "--optimizer", "adamw", "sgd", "--steps", "2", "--out", str(tmp_path), "--name", "smoke",
                     "--no-plot"]) == 0
    printed = capsys.readouterr().out
    assert "torch fused + sched" in printed and "fusedlr eager" in printed
    results = json.loads((tmp_path / "smoke.json").read_text())
    assert results["meta"]["torch"] == torch.__version__ and results["meta"]["threads"] >= 1
    assert len(results["runs"]) == 4  # 2 workloads x 2 optimizers
    for run in results["runs"]:
        element = 4  # fp32
        assert run["copy_bandwidth_bytes_per_s"] > 0
        assert run["bytes_per_step"] == run["numel"] * element * ACCESSES_PER_ELEMENT[run["optimizer"]]
        names = [r["contender"] for r in run["results"]]
        eight_bit = ["fusedlr int8 states (+ masters)"] if run["optimizer"] == "adamw" else []  # Adam(W) only
        assert names == ["torch for-loop + sched", "torch foreach + sched", "torch fused + sched", "fusedlr eager",
                         "fusedlr bf16 states (+ masters)", *eight_bit]
        for r in run["results"]:
            assert "error" not in r, r
            assert len(r["device_ms_all"]) == 2 and r["device_ms"] > 0 and r["host_ms"] > 0
            assert r["achieved_bytes_per_s"] == pytest.approx(run["bytes_per_step"] / (r["device_ms"] / 1e3))
            assert r["state_bytes"] > 0
        baseline = next(r for r in run["results"] if r["baseline"])
        assert baseline["speedup_vs_baseline"] == 1.0


def test_clipped_races_beside_unclipped_ones(tmp_path):
    assert cli.main(["--quick", "--device", "cpu", "--preset", "tiny-1000", "--steps", "1", "--warmup", "1",
                     "--clip", "none", "0.5",
                     "--contender", "fusedlr eager", "fusedlr bf16 states (+ masters)",
                     "fusedlr int8 states (+ masters)", "--out", str(tmp_path), "--name", "c", "--no-plot"]) == 0
    runs = json.loads((tmp_path / "c.json").read_text())["runs"]
    assert [run["max_grad_norm"] for run in runs] == [None, 0.5]
    for run in runs:
        assert len(run["results"]) == 4 and not any("error" in r for r in run["results"])  # and the baseline
        for r in run["results"]:
            # fp32 AdamW keeps exp_avg and exp_avg_sq: 8 bytes per element (4 in bf16, 2 in 8-bit codes, whose
            # 8 bytes of absmax values per block of 256 weigh more on tiny tensors), plus the step counters
            wanted = 4 if "bf16 states" in r["contender"] else 2 if "int8 states" in r["contender"] else 8
            assert wanted <= r["state_bytes_per_param"] < wanted + (0.6 if wanted == 2 else 0.1), r


def test_plot_is_written(tmp_path):
    pytest.importorskip("matplotlib")
    assert cli.main(["--quick", "--device", "cpu", "--preset", "large", "--steps", "1", "--warmup", "0",
                     "--contender", "fusedlr eager", "--out", str(tmp_path), "--name", "p"]) == 0
    assert (tmp_path / "p.png").stat().st_size > 0


def test_workload_sources():
    assert len(preset("gpt2-small")) == 148
    assert sum(torch.Size(s).numel() for s in preset("gpt2-small")) == 124_439_808  # GPT-2 small's count
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4))
    assert shapes_of(model) == [(4, 3), (4,), (4,), (4,)]
    with pytest.raises(ValueError, match="preset must be one of"):
        preset("resnet")


def test_bad_shapes_file_is_refused(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"a": [1, 2]}))
    with pytest.raises(ValueError, match="list of shapes"):
        shapes_from_json(str(bad))


@pytest.mark.parametrize("argv, message", [
    (["--steps", "0"], "--steps must be >= 1"),
    (["--threads", "0"], "--threads must be >= 1"),
    (["--contender", "nope"], "--contender: unknown"),
])
def test_bad_arguments_are_refused_by_name(argv, message):
    with pytest.raises(SystemExit, match=message):
        cli.main(["--quick", "--device", "cpu", *argv])


def test_a_bad_clip_is_refused_by_name(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--quick", "--device", "cpu", "--clip", "-1"])
    assert "MAX_NORM must be > 0" in capsys.readouterr().err


def test_a_torch_fused_baseline_that_skips_work_is_flagged():
    """The race's check of its baseline: a fused step that leaves the params
    alone is flagged, torch's correct fused steps are not (CPU fp32 SGD, AdamW
    in every dtype)."""
    from fusedlr.bench.contenders import torch_fused_disagrees

    class SkippingSGD(torch.optim.SGD):
        def step(self, closure=None):
            return None if self.defaults["fused"] else super().step(closure)

    cpu, sgd, adamw = torch.device("cpu"), dict(lr=1e-2, momentum=0.9), dict(lr=1e-3, weight_decay=1e-2)
    message = torch_fused_disagrees(SkippingSGD, torch.float32, cpu, sgd)
    assert message is not None and "SkippingSGD(fused=True)" in message
    assert torch_fused_disagrees(torch.optim.SGD, torch.float32, cpu, sgd) is None
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        assert torch_fused_disagrees(torch.optim.AdamW, dtype, cpu, adamw) is None, dtype
