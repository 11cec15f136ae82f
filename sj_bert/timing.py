"""Side-by-side timing and peak memory for the benchmarks in ``bench/``, and the library
versions each bench records beside its numbers."""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import platform
import random
import statistics
import time
from typing import Callable, Iterator, Optional

import torch

__all__ = ["AUTOCAST", "COMPILE_MODES", "CUDA_GRAPH_MODES", "compiled", "first_line", "sync", "torch_threads", "interleaved_times", "copy_gbps",
           "device_name", "peak_memory_mb", "versions"]

# the benches' --autocast choices: the dtype of torch.autocast, or None for none
AUTOCAST = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}
# the benches' --compile_mode choices: Inductor's modes
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
# the modes that replay CUDA graphs: their activations live in a pool the graphs allocated when
# captured and keep between steps, so one step's peak above the memory live before it misses them
CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")


def compiled(model: torch.nn.Module, backend: str = "inductor", mode: Optional[str] = None) -> torch.nn.Module:
    """``torch.compile(model, fullgraph=True)`` with Inductor's ``mode`` when one is given
    (``"reduce-overhead"``: the compiled graphs replayed as CUDA graphs, no launch per kernel;
    call ``torch.compiler.cudagraph_mark_step_begin()`` before each step)."""
    options = {} if mode is None else {"mode": mode}
    return torch.compile(model, backend=backend, fullgraph=True, **options)


def first_line(err: Exception) -> str:
    """The first line of an error's message: what a bench's ``skipped`` entry records of a
    row that failed (a compiler's message runs to pages)."""
    return str(err).splitlines()[0] if str(err) else ""


@contextlib.contextmanager
def torch_threads(threads: Optional[int]) -> Iterator[None]:
    """Run with ``threads`` torch CPU threads (``None`` or 0: as set), then restore the
    caller's setting: a bench called from a test must not change the process's."""
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def sync(device: torch.device) -> None:
    """Wait for queued CUDA work (a no-op on CPU) so wall time covers the whole step."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved_times(
    steps: dict[str, Callable[[], object]], device: torch.device, warmup: int, repeats: int,
    shuffle_seed: Optional[int] = None,
) -> dict[str, list[float]]:
    """Seconds per call of every step, ``repeats`` times each after ``warmup`` calls. The
    steps take turns, so a change in machine load affects them alike and ratios stay fair.
    ``shuffle_seed``: each round takes its turns in a new order (seeded), so that no step
    always runs after the same one. In a fixed order on an H200 (2026-11-28) the same Triton
    BPSN configuration (T=16, C=1536) timed 2.05 ms in the turn after the ``[T, T]`` reference
    path and 1.63 ms two turns later; the cause was not found, so the order is spread instead."""
    for step in steps.values():
        for _ in range(warmup):
            step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    order = list(steps)
    turns = random.Random(shuffle_seed) if shuffle_seed is not None else None
    for _ in range(repeats):
        if turns is not None:
            turns.shuffle(order)
        for name in order:
            step = steps[name]
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


def _cpu_peak_bytes(step: Callable[[], object]) -> int:
    """Peak bytes allocated above the start, from the profiler's CPU memory events."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    events = sorted(
        (e.start_ns(), e.nbytes())
        for e in prof.profiler.kineto_results.events()
        if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU
    )
    live = peak = 0
    for _, nbytes in events:
        live += nbytes
        peak = max(peak, live)
    return peak


def peak_memory_mb(step: Callable[[], object], device: torch.device) -> float:
    """MiB allocated at the peak of one call of ``step`` above what was live before it:
    ``torch.cuda.max_memory_allocated`` on CUDA, the torch profiler's CPU memory events
    (``profile_memory=True``) on CPU."""
    if device.type != "cuda":
        return _cpu_peak_bytes(step) / 2**20
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    step()
    sync(device)
    return (torch.cuda.max_memory_allocated(device) - before) / 2**20


def versions() -> dict:
    """Versions of the libraries a bench's numbers depend on, those installed (the same record
    in every bench's JSON)."""
    found = {}
    for module in ("torch", "spikingjelly", "triton", "cupy", "snntorch"):
        if importlib.util.find_spec(module) is None:
            continue
        try:
            found[module] = importlib.metadata.version(module)
        except importlib.metadata.PackageNotFoundError:  # e.g. CuPy ships as cupy-cudaXXx
            found[module] = getattr(__import__(module), "__version__", None)
    return found
