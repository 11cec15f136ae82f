"""Side-by-side timing for the benchmarks in ``bench/``."""

from __future__ import annotations

import time
from typing import Callable

import torch

__all__ = ["sync", "interleaved_times"]


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
