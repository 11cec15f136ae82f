"""Side-by-side timing for the benchmarks in ``bench/``."""

from __future__ import annotations

import platform
import statistics
import time
from typing import Callable

import torch

__all__ = ["sync", "interleaved_times", "copy_gbps", "device_name"]


def sync(device: torch.device) -> None:
    """Wait for queued CUDA work (a no-op on CPU) so wall time covers the whole step."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved_times(
    steps: dict[str, Callable[[], object]], device: torch.device, warmup: int, repeats: int
) -> dict[str, list[float]]:
    """Seconds per call of every step, ``repeats`` times each after ``warmup`` calls. The
    steps take turns, so a change in machine load affects them alike and ratios stay fair."""
    for step in steps.values():
        for _ in range(warmup):
            step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            sync(device)
            start = time.perf_counter()
            step()
            sync(device)
            times[name].append(time.perf_counter() - start)
    return times


def copy_gbps(device: torch.device, nbytes: int = 1 << 30, repeats: int = 20) -> float:
    """Measured copy bandwidth of ``device`` in GB/s, counting bytes read plus bytes written
    (``2 * nbytes`` per copy): the ceiling a memory-bound kernel is compared with, taken in
    the same run as the kernel so clocks and load are the same."""
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=device).uniform_()
    dst = torch.empty_like(src)
    seconds = interleaved_times({"copy": lambda: dst.copy_(src)}, device, warmup=3, repeats=repeats)["copy"]
    return 2 * src.numel() * 4 / statistics.median(seconds) / 1e9


def device_name(device: torch.device) -> str:
    """What the benches' JSON names the device by: the GPU's name, or the CPU's."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()
