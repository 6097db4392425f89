"""Drives real torch.optim.lr_scheduler objects step by step: the oracle."""
import warnings

import torch


def torch_lr_trajectory(make_scheduler, base_lrs, num_steps):
    """(scheduler, float64 tensor (num_steps, groups)): lr used by the t-th update."""
    params = [torch.nn.Parameter(torch.zeros(1)) for _ in base_lrs]
    opt = torch.optim.SGD([{"params": [p], "lr": lr} for p, lr in zip(params, base_lrs)], lr=base_lrs[0],
                          momentum=0.9)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scheduler = make_scheduler(opt)
        lrs = []
        for _ in range(num_steps):
            lrs.append([float(g["lr"]) for g in opt.param_groups])
            opt.step()
            scheduler.step()
    return scheduler, torch.tensor(lrs, dtype=torch.float64)


def assert_close(actual, expected, rtol=1e-12, atol=1e-15):
    """Relative comparison in double; atol only guards values at exactly 0."""
    actual = actual.cpu().to(torch.float64)
    expected = expected.to(torch.float64)
    assert actual.shape == expected.shape
    assert torch.isfinite(actual).all()
    err = (actual - expected).abs()
    bad = err > atol + rtol * expected.abs()
    if bad.any():
        i = int(bad.nonzero()[0, 0])
        raise AssertionError(
            f"{int(bad.sum())} mismatches; first at step {i}: got {actual[i].tolist()}, "
            f"expected {expected[i].tolist()}; max rel err {float((err / expected.abs().clamp_min(1e-300)).max()):.3g}"
        )


def max_relative_error(actual, expected):
    actual = actual.cpu().to(torch.float64)
    scale = expected.abs().clamp_min(1e-300)
    nonzero = expected != 0
    rel = ((actual - expected).abs() / scale)[nonzero]
    return float(rel.max()) if rel.numel() else float((actual - expected).abs().max())
