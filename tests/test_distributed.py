"""fusedlr on DTensor params (FSDP2, tensor-parallel placements) against
torch.optim on the same sharded run, and DCP/ZeRO checkpoints resumed:
distributed_checks.py in gloo processes, run once; one test per check."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import fusedlr

if not torch.distributed.is_available():
    pytest.skip("torch.distributed is not available in this torch build", allow_module_level=True)

import distributed_checks  # noqa: E402  (tests/ is on sys.path)

BACKENDS = [b for b in ("reference", "cpu", "emulated") if b in fusedlr.available_backends()]


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("distributed") / "results.json"
    script = Path(distributed_checks.__file__)
    run = subprocess.run([sys.executable, str(script), str(out)], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0 and out.exists(), f"the distributed run failed:\n{run.stdout}\n{run.stderr[-4000:]}"
    return json.loads(out.read_text())


@pytest.mark.parametrize("name", list(distributed_checks.checks(BACKENDS)))
def test_distributed(results, name):
    assert name in results, f"{name} did not run"
    assert results[name] is None, results[name]
