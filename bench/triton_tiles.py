"""The Triton BPSN kernels' tile shape at one ``[T, N]``: forward+backward and forward-only
time per shape, beside SpikingJelly's multi-step LIF on the same input.

A shape is ``S`` (``STEPS_PER_TILE = S``, the library's own columns and warps; ``1`` is the
per-step scan) or ``BLOCKxSTEPSxWARPS`` (``tile_shape`` replaced for the run). It is what
``sj_bert.ops.bpsn.triton.tile_shape``'s rule was set from::

    python bench/triton_tiles.py --T 256 1024 --configs 1 16 128x16x8 32x16x1 ...   # N = 2**20
    python bench/triton_tiles.py --T 128 512 --N 12288 --configs 1 16 32 32x32x2

Writes ``bench/results/triton_tiles_<device>.json`` unless ``--out``. On the CPU the kernels
run in Triton's interpreter (a smoke run; its times mean nothing)."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from sj_bert import BPSN  # noqa: E402
from sj_bert.ops.bpsn import triton as triton_kernels  # noqa: E402

DEFAULT_CONFIGS = ("1", "16", "128x16x8", "128x16x4", "256x16x8", "64x16x2", "32x16x1", "128x8x4", "256x8x8",
                   "128x4x4", "256x4x8", "512x4x16")


def parse_config(config: str) -> tuple[int, ...]:
    """``"S"`` -> ``(S,)``; ``"BxSxW"`` -> ``(B, S, W)``; powers of two (Triton tiles)."""
    parts = config.split("x")
    if len(parts) not in (1, 3) or not all(p.isdigit() and int(p) > 0 and not int(p) & (int(p) - 1) for p in parts):
        raise ValueError(f"--configs: {config!r} is neither S nor BLOCKxSTEPSxWARPS in powers of two")
    return tuple(int(p) for p in parts)


@contextlib.contextmanager
def tile_config(parts: tuple[int, ...]):
    """Run the Triton kernels at ``parts`` (see :func:`parse_config`) inside the block."""
    if len(parts) == 1:
        with triton_kernels.steps_per_tile(parts[0]):
            yield
        return
    saved = triton_kernels.tile_shape
    triton_kernels.tile_shape = lambda T, N, interpreted=False: parts
    try:
        yield
    finally:
        triton_kernels.tile_shape = saved


def median_ms(step, device: torch.device, warmup: int, repeats: int) -> float:
    """Median wall time of ``step`` in ms, the device synchronised around each call."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def make_node(config: str, device: torch.device) -> torch.nn.Module:
    if config == "lif":
        from spikingjelly.activation_based import neuron

        return neuron.LIFNode(tau=2.0, step_mode="m").to(device)
    return BPSN(tau=2.0, backend="triton").to(device)


def time_config(config: str, x: torch.Tensor, grad: torch.Tensor, warmup: int, repeats: int) -> dict:
    """``fwd_bwd_ms`` and ``fwd_ms`` of one shape (or LIF); ``error`` when it fails to run."""
    node = make_node(config, x.device)

    def forward_backward():
        x.grad = None
        node.reset()
        node(x).backward(grad)

    def forward():
        with torch.no_grad():
            node.reset()
            node(x)

    shape = contextlib.nullcontext() if config == "lif" else tile_config(parse_config(config))
    try:
        with shape:
            return {"fwd_bwd_ms": median_ms(forward_backward, x.device, warmup, repeats),
                    "fwd_ms": median_ms(forward, x.device, warmup, repeats), "error": None}
    except Exception as error:  # a shape that does not compile is a row, not the end of the sweep
        return {"fwd_bwd_ms": None, "fwd_ms": None, "error": f"{type(error).__name__}: {str(error)[:300]}"}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--T", type=int, nargs="+", default=[256])
    parser.add_argument("--N", type=int, default=2**20, help="neurons per step, shared parameters ([T, N])")
    parser.add_argument("--configs", nargs="+", default=list(DEFAULT_CONFIGS))
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    for config in args.configs:
        try:
            parse_config(config)
        except ValueError as error:
            parser.error(str(error))
    if min(args.T) < 1 or args.N < 1:
        parser.error(f"--T and --N must be positive, got T={args.T}, N={args.N}")
    return args


@contextlib.contextmanager
def interpreted_on_cpu(device: torch.device):
    """``TRITON_INTERPRET=1`` inside the block when ``device`` is not CUDA (BPSN's Triton
    backend refuses CPU tensors otherwise), the environment as it was afterwards."""
    saved = os.environ.get("TRITON_INTERPRET")
    if device.type != "cuda":
        os.environ["TRITON_INTERPRET"] = "1"
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("TRITON_INTERPRET", None)
        else:
            os.environ["TRITON_INTERPRET"] = saved


def main(argv=None) -> dict:
    args = parse_args(argv)
    device = torch.device(args.device)
    with interpreted_on_cpu(device):
        rows = sweep(args, device)
    result = {"bench": "triton_tiles", "device": device.type,
              "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
              "time_method": f"median wall time of {args.repeats} calls after {args.warmup}, device synchronised",
              "rows": rows}
    out = Path(args.out or REPO / "bench" / "results" / f"triton_tiles_{device.type}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=1))
    os.replace(tmp, out)
    return result


def sweep(args: argparse.Namespace, device: torch.device) -> list[dict]:
    """One row per ``(T, config)``, LIF first at each T."""
    rows = []
    for T in args.T:
        generator = torch.Generator(device=device).manual_seed(0)
        x = (1.5 * torch.randn(T, args.N, generator=generator, device=device)).requires_grad_()
        grad = torch.randn(T, args.N, generator=generator, device=device)
        for config in ("lif", *args.configs):
            row = {"T": T, "N": args.N, "config": config, **time_config(config, x, grad, args.warmup, args.repeats)}
            rows.append(row)
            times = "" if row["error"] else f"fwd+bwd {row['fwd_bwd_ms']:.3f} ms  fwd {row['fwd_ms']:.3f} ms"
            print(f"T={T:5d} {config:10s} {times}{row['error'] or ''}", flush=True)
    return rows


if __name__ == "__main__":
    main()
