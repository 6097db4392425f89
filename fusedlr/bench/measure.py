"""Timing primitives: device and host time of steps, kernel launches per step,
peak memory of the first steps, and the copy bandwidth used as the yardstick."""
from __future__ import annotations

import time

import torch


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes of the tensors an optimizer keeps per param (step counters included)."""
    return sum(v.nbytes for st in optimizer.state.values() for v in st.values() if isinstance(v, torch.Tensor))


def time_steps(step, device: torch.device, steps: int) -> tuple[list, list]:
    """(device ms per step, host ms per step() call) of ``steps`` calls. On CUDA the
    device time comes from events around each call; on the CPU both are wall time."""
    sync(device)
    host = []
    if device.type == "cuda":
        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(steps)]
        for start, end in events:
            start.record()
            t0 = time.perf_counter()
            step()
            host.append((time.perf_counter() - t0) * 1e3)
            end.record()
        torch.cuda.synchronize(device)
        return [s.elapsed_time(e) for s, e in events], host
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        host.append((time.perf_counter() - t0) * 1e3)
    return list(host), host


def warm_up(step, device: torch.device, steps: int) -> int | None:
    """Run the untimed first steps (state allocation, graph capture happened at build);
    on CUDA return the memory high-water mark they reached above what was allocated before."""
    if device.type != "cuda":
        for _ in range(steps):
            step()
        return None
    sync(device)
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    for _ in range(steps):
        step()
    sync(device)
    return torch.cuda.max_memory_allocated(device) - base


def launches_per_step(step, device: torch.device, steps: int = 5) -> float | None:
    """CUDA kernels launched per step, counted by the torch profiler (None on CPU)."""
    if device.type != "cuda":
        return None
    from torch.profiler import ProfilerActivity, profile

    sync(device)
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            step()
        sync(device)
    kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA
               and not e.name.startswith(("Memcpy", "Memset"))]
    return len(kernels) / steps


class CopyProbe:
    """``dst.copy_(src)`` over buffers as large as a workload's params (1 MiB..1 GiB):
    bytes/s counted as read + write, timed in the same rounds as the contenders."""

    def __init__(self, device: torch.device, nbytes: int):
        nbytes = max(min(nbytes, 2 ** 30), 2 ** 20)
        self.src = torch.empty(nbytes // 4, dtype=torch.float32, device=device).uniform_()
        self.dst = torch.empty_like(self.src)
        self.bytes_per_copy = 2 * self.src.nbytes

    def step(self) -> None:
        self.dst.copy_(self.src)
