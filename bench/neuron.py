"""BPSN forward+backward per backend vs SpikingJelly's multi-step LIF and its parallel
spiking neurons (PSN, SlidingPSN) at the same [T, N].

Every neuron runs the same step on the same input ``x`` ``[T, N]``: reset its state,
forward all T steps, backward a fixed gradient of the spikes. BPSN runs on each backend
the device has (torch always; the compiled scans, ``cpu``, on the CPU where a C++
compiler builds them; triton and cupy on CUDA when installed; the ``[T, T]``
``reference`` while T <= ``--reference_max_T``), LIF is ``LIFNode(step_mode='m')`` with
SpikingJelly's default (fused, on CUDA) path for the device, ``PSN(T)`` is SpikingJelly's
parallel spiking neuron (a learnable ``[T, T]`` matrix), ``SlidingPSN(k=16)`` its
sliding-window form, and snnTorch's parallel ``StateLeaky`` joins when snnTorch is
installed (skipped otherwise). PSN and SlidingPSN hold their parameters in the input's
dtype (their matmul needs it); BPSN keeps fp32 parameters and accumulates in fp32 whatever
the input's dtype. Timed steps take turns across neurons, so machine load affects them
alike and the ratios are measured side by side.

Cases: shared parameters on ``x`` ``[T, N]``, and per channel (``--channels C``, SNN-BERT's
default) on ``x`` ``[T, --batch, C]`` (``N = batch * C``). Peak memory: what one step
allocates above its inputs (``sj_bert.timing.peak_memory_mb``).

Effective bandwidth counts the same minimal traffic for every neuron, the I/O of one
fused forward+backward: ``x`` read, spikes written, an fp32 potential written and read
back, the spikes' gradient read, ``x``'s gradient written: ``T * N * (4 * itemsize + 8)``
bytes per step, divided by the median step time. The device's copy bandwidth (bytes read
plus written by a large device-to-device copy) is measured in the same run, and each row
gives its fraction of it.

    python bench/neuron.py                          # writes bench/results/neuron_<device>.json
    python bench/neuron.py --T 64 256 --N 65536 --dtype bf16
    python bench/neuron.py --device cpu --threads 1   # steadier on a shared CPU
    python bench/neuron.py --device cpu --T 4096 --channels 384 --batch 4   # the 1 GB check
    python bench/neuron.py --neurons bpsn lif         # a subset
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import os
import statistics
import time
from pathlib import Path
from typing import Callable, Optional

import torch
from spikingjelly.activation_based import neuron as sj_neuron

from sj_bert import BPSN
from sj_bert.ops.bpsn.cpu import available as cpu_scans_available
from sj_bert.files import write_json
from sj_bert.timing import copy_gbps, device_name, interleaved_times, peak_memory_mb, versions

RESULTS = Path(__file__).resolve().parent / "results"
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
NEURONS = ("bpsn", "lif", "psn", "slidingpsn", "stateleaky")
SLIDING_K = 16  # SlidingPSN's window


def bpsn_backends(device: torch.device, T: int, reference_max_T: int, triton_steps: tuple = (),
                  N: Optional[int] = None) -> list[str]:
    """torch always; the [T, T] reference at short T; the compiled scans on the CPU where
    they build; the fused ones on CUDA where their package is installed, Triton also as
    ``triton@S`` for each tile length ``S`` of ``triton_steps``, except the one Triton's own
    choice at ``[T, N]`` already runs as ``triton`` (when ``N`` is given)."""
    backends = ["torch"] + (["reference"] if T <= reference_max_T else [])
    if device.type != "cuda":
        return (["cpu"] if cpu_scans_available()[0] else []) + backends
    fused = [b for b in ("triton", "cupy") if importlib.util.find_spec(b) is not None]
    if "triton" not in fused:
        return backends + fused
    own = None
    if N is not None:
        from sj_bert.ops.bpsn import triton as triton_kernels

        own = triton_kernels.tile_shape(T, N)[1]
    tiles = [f"triton@{steps}" for steps in triton_steps if steps != own]
    return backends + fused[:1] + tiles + fused[1:]


def with_tile_steps(step: Callable[[], None], steps: int) -> Callable[[], None]:
    """``step`` with the Triton kernels scanning ``steps`` time steps per tile
    (``sj_bert.ops.bpsn.triton.STEPS_PER_TILE``), set around each call only."""
    from sj_bert.ops.bpsn import triton as triton_kernels

    def run():
        with triton_kernels.steps_per_tile(steps):
            step()

    return run


def triton_default_steps() -> Optional[str]:
    """How the Triton backend picks its tile length (``bpsn/triton`` rows), if installed."""
    if importlib.util.find_spec("triton") is None:
        return None
    from sj_bert.ops.bpsn import triton as triton_kernels

    if triton_kernels.STEPS_PER_TILE:
        return f"min({triton_kernels.STEPS_PER_TILE}, next power of two >= T)"
    return (f"min({triton_kernels.DEFAULT_STEPS}, next power of two >= T) below "
            f"{triton_kernels.TILED_MAX_COLUMNS} columns, 1 from there on")


def stateleaky(T: int):
    """snnTorch's parallel leaky neuron on ``[T, N, 1]``; raises when unavailable."""
    import snntorch

    cls = getattr(snntorch, "StateLeaky", None)
    if cls is None:
        from snntorch._neurons.stateleaky import StateLeaky as cls
    accepted = inspect.signature(cls.__init__).parameters
    kwargs = {k: v for k, v in {"beta": 0.5, "channels": 1, "max_timesteps": T}.items() if k in accepted}
    return cls(**kwargs)


def make_step(
    kind: str, backend: Optional[str], T: int, x: torch.Tensor, grad: torch.Tensor, channels: Optional[int] = None
) -> Callable[[], None]:
    """A closure running one reset + forward + backward of the neuron ``kind``; BPSN has
    one set of parameters per channel (the last dimension of ``x``) when ``channels``."""
    device = x.device
    if kind == "bpsn" and backend is not None and "@" in backend:  # triton@S: a tile length
        name, _, steps = backend.partition("@")
        return with_tile_steps(make_step(kind, name, T, x, grad, channels), int(steps))
    if kind == "bpsn":
        node = BPSN(tau=2.0, backend=backend, channels=channels).to(device)
    elif kind == "lif":
        node = sj_neuron.LIFNode(tau=2.0, step_mode="m").to(device)
    elif kind == "psn":
        node = sj_neuron.PSN(T=T).to(device, x.dtype)
    elif kind == "slidingpsn":
        node = sj_neuron.SlidingPSN(k=SLIDING_K, step_mode="m").to(device, x.dtype)
    else:
        node = stateleaky(T).to(device)

    def step():
        x.grad = None
        if kind == "stateleaky":
            spike = node(x.unsqueeze(-1))[0].squeeze(-1)
        else:
            if hasattr(node, "reset"):  # PSN keeps no state between sequences
                node.reset()
            spike = node(x)
        spike.backward(grad)

    return step


def measure(steps: dict, device: torch.device, warmup: int, repeats: int) -> dict:
    """``(median, min)`` milliseconds per step; steps take turns across neurons, in a new
    order each round (see :func:`sj_bert.timing.interleaved_times`). On a shared CPU the
    minimum is the steadier of the two."""
    times = interleaved_times(steps, device, warmup, repeats, shuffle_seed=0)
    return {name: (1e3 * statistics.median(t), 1e3 * min(t)) for name, t in times.items()}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--T", type=int, nargs="+", default=None,
                        help="default: 16 64 256 1024 on CUDA, 16 64 256 1024 4096 on CPU")
    parser.add_argument("--N", type=int, default=None, help="neurons per step (default: 2**20 on CUDA, 4096 on CPU)")
    parser.add_argument("--channels", type=int, nargs="*", default=None,
                        help="per-channel cases, x [T, batch, C] (default: 384 1536; none: shared only)")
    parser.add_argument("--batch", type=int, default=4, help="batch of the per-channel cases")
    parser.add_argument("--no_shared", action="store_true", help="skip the shared-parameter case [T, N]")
    parser.add_argument("--reference_max_T", type=int, default=256,
                        help="also time the [T, T] reference backend up to this T")
    parser.add_argument("--dtype", choices=tuple(DTYPES), default="fp32")
    parser.add_argument("--triton_steps", type=int, nargs="*", default=[],
                        help="on CUDA, also time the Triton backend at these time steps per tile, as "
                             "bpsn/triton@S (1: one step per load, the per-step scan); bpsn/triton is the default")
    parser.add_argument("--neurons", nargs="+", choices=NEURONS, default=list(NEURONS),
                        help="which neurons to run (BPSN on every backend the device has)")
    parser.add_argument("--copy_mb", type=int, default=None,
                        help="size of the copy that measures bandwidth (default: 1024 MiB on CUDA, 64 on CPU)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=20, help="timed steps per neuron (median reported)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's); 1 steadies CPU times on a busy machine")
    parser.add_argument("--out", default=None, help="JSON path (default: bench/results/neuron_<device>.json)")
    args = parser.parse_args(argv)
    cuda = args.device.startswith("cuda")
    args.T = args.T or ([16, 64, 256, 1024] if cuda else [16, 64, 256, 1024, 4096])
    args.channels = [384, 1536] if args.channels is None else args.channels
    args.N = args.N or (2**20 if cuda else 4096)
    args.copy_mb = args.copy_mb or (1024 if cuda else 64)
    bad = [steps for steps in args.triton_steps if steps < 1 or steps & (steps - 1)]
    if bad:
        parser.error(f"--triton_steps must be powers of two (Triton tiles), got {bad}")
    return args


def ratios_of(rows: list[dict]) -> list[dict]:
    """Each BPSN backend over each other neuron of the same case (LIF: the target)."""
    ratios = []
    cases = dict.fromkeys((r["T"], r["channels"]) for r in rows)
    for T, channels in cases:
        same = [r for r in rows if r["T"] == T and r["channels"] == channels]
        others = [r for r in same if r["neuron"] != "bpsn"]
        for r in same:
            if others and r["neuron"] == "bpsn":
                ratio = {"T": T, "channels": channels, "backend": r["backend"], "bpsn_ms": r["ms"]}
                for other in others:
                    kind = other["neuron"]
                    ratio.update({f"{kind}_ms": other["ms"], f"bpsn_over_{kind}": r["ms"] / other["ms"],
                                  f"bpsn_over_{kind}_min": r["ms_min"] / other["ms_min"]})
                ratios.append(ratio)
    return ratios


def random_input(T: int, shape: tuple, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """``x`` (requires grad) and the spikes' gradient, ``[T, *shape]``, drawn on ``device``
    (drawing 2**30 numbers on the host took longer than timing the neurons)."""
    generator = torch.Generator(device=device).manual_seed(0)
    x = (1.5 * torch.randn(T, *shape, generator=generator, device=device)).to(dtype).requires_grad_()
    grad = torch.randn(T, *shape, generator=generator, device=device).to(dtype)
    return x, grad


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = DTYPES[args.dtype]
    rows, skipped = [], []
    stateleaky_installed = "stateleaky" in args.neurons and importlib.util.find_spec("snntorch") is not None
    if "stateleaky" in args.neurons and not stateleaky_installed:
        skipped.append("stateleaky: snnTorch is not installed")
    copy = copy_gbps(device, args.copy_mb << 20)
    out = Path(args.out) if args.out else RESULTS / f"neuron_{device.type}.json"
    result = {
        "bench": "neuron",
        "device": str(device),
        "device_name": device_name(device),
        "versions": versions(),
        "threads": torch.get_num_threads(),
        "load_average_1min": os.getloadavg()[0],  # other processes on a shared machine skew CPU times
        "dtype": args.dtype,
        "N": args.N,
        "channels": args.channels,
        "batch": args.batch,
        "T": args.T,
        "neurons": args.neurons,
        "triton_steps": args.triton_steps,
        "triton_default_steps": triton_default_steps(),
        "slidingpsn_k": SLIDING_K,
        "copy_gbps": copy,
        "copy_method": f"median of 20 copies of {args.copy_mb} MiB (fp32), bytes read plus written, in this run",
        "warmup": args.warmup,
        "repeats": args.repeats,
        "time_method": "wall time of reset + forward + backward of the spikes, median (ms, used for GB/s and "
                       "ratios) and minimum (ms_min); neurons take turns step by step, in a new (seeded) order each round",
        "bytes_method": "T * N * (4 * itemsize + 8): x read, spikes written, fp32 potential written and read back, "
                        "spike gradient read, x gradient written",
        "memory_method": "peak_mem_mb: sj_bert.timing.peak_memory_mb of one step (reset + forward + backward), "
                         "allocations above what was live before it (x, its gradient buffer and the neuron's parameters)",
        "complete": False,
        "results": rows,
        "ratios": [],
        "skipped": skipped,
    }
    # (channels, shape of x): shared parameters on [T, N]; per channel on [T, batch, C]
    cases = ([] if args.no_shared else [(None, (args.N,))]) + [(C, (args.batch, C)) for C in args.channels]
    print(f"neuron forward+backward, {args.dtype}, device {device}; per channel: x [T, {args.batch}, C]; "
          f"copy bandwidth {copy:.1f} GB/s", flush=True)
    for T in args.T:
        for channels, shape in cases:
            started = time.perf_counter()
            x, grad = random_input(T, shape, device, dtype)
            N = x[0].numel()
            backends = bpsn_backends(device, T, args.reference_max_T, tuple(args.triton_steps), N)
            neurons = [("bpsn", b) for b in backends if "bpsn" in args.neurons]
            neurons += [(kind, None) for kind in ("lif", "psn", "slidingpsn") if kind in args.neurons]
            neurons += [("stateleaky", None)] if stateleaky_installed and channels is None else []
            steps = {}
            for kind, backend in neurons:
                name = kind if backend is None else f"{kind}/{backend}"
                try:
                    step = make_step(kind, backend, T, x, grad, channels)
                    step()  # fails here, not mid-measurement, when a neuron cannot run this case
                    steps[name] = step
                except Exception as err:  # noqa: BLE001 - a missing optional neuron is a result, not a crash
                    message = str(err).splitlines()[0] if str(err) else ""
                    skipped.append(f"{name} T={T} channels={channels}: {type(err).__name__}: {message}")
            nbytes = T * N * (4 * x.element_size() + 8)
            for name, (ms, ms_min) in measure(steps, device, args.warmup, args.repeats).items():
                kind, _, backend = name.partition("/")
                gbps = nbytes / (ms * 1e-3) / 1e9
                rows.append({"neuron": kind, "backend": backend or None, "T": T, "N": N, "channels": channels,
                             "ms": ms, "ms_min": ms_min, "bytes": nbytes, "gbps": gbps, "copy_fraction": gbps / copy,
                             "peak_mem_mb": peak_memory_mb(steps[name], device)})
            del steps, x, grad
            if device.type == "cuda":
                torch.cuda.empty_cache()
            print(f"  T={T} {'shared' if channels is None else f'C={channels}'}: "
                  f"{time.perf_counter() - started:.1f} s", flush=True)
        # rewritten after every T, so a run stopped by a time budget keeps what it measured
        result["ratios"] = ratios_of(rows)
        write_json(str(out), result)

    print(f"{'neuron':<20}{'C':>6}{'T':>6}{'N':>8}{'ms':>11}{'min ms':>10}{'GB/s':>8}{'of copy':>9}{'peak MiB':>10}")
    for r in rows:
        name = r["neuron"] + (f"/{r['backend']}" if r["backend"] else "")
        C = r["channels"] or "-"
        print(f"{name:<20}{C:>6}{r['T']:>6}{r['N']:>8}{r['ms']:>11.3f}{r['ms_min']:>10.3f}{r['gbps']:>8.2f}"
              f"{r['copy_fraction']:>9.1%}{r['peak_mem_mb']:>10.1f}")
    for r in result["ratios"]:
        where = f"C={r['channels']}" if r["channels"] else "shared"
        versus = ", ".join(f"/ {k[len('bpsn_over_'):]} = {v:.2f}x (min {r[k + '_min']:.2f}x)"
                           for k, v in r.items() if k.startswith("bpsn_over_") and not k.endswith("_min"))
        print(f"T={r['T']} {where}: bpsn/{r['backend']} {versus}")
    for line in skipped:
        print(f"skipped {line}")
    result["complete"] = True
    write_json(str(out), result)  # temporary name, then rename
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
