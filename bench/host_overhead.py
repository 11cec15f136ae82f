"""Host time of one BPSN forward+backward through the fused path, with the kernel launches
stubbed out: what the CPU spends per call before any GPU work.

The H200 run (``bench/results/neuron_cuda.json``) found every neuron at SNN-BERT's shapes
taking 1 to 3 ms per step whatever T is: host time, not kernel time. This measures that
host time on any machine, without a GPU: the Triton backend's launchers are replaced by
no-ops (so the buffers hold garbage, and nothing is checked but time), on ``x`` ``[T, B, C]``
with per-channel parameters, as SNN-BERT calls it. Median of interleaved runs.

    python bench/host_overhead.py                      # bench/results/host_overhead_cpu.json
    python bench/host_overhead.py --out /tmp/h.json --T 128 --batch 32 --channels 1536
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import time
from pathlib import Path

import torch

import sj_bert
import sj_bert.neuron as neuron_module
from sj_bert import BPSN
from sj_bert.files import write_json
from sj_bert.timing import torch_threads

RESULTS = Path(__file__).resolve().parent / "results"


@contextlib.contextmanager
def stubbed_launches():
    """Within: the Triton launchers are no-ops and CPU tensors take the fused path (the
    originals are put back after, so a test process is left as it was)."""
    from sj_bert.ops.bpsn import triton as triton_backend

    def nothing(*args, **kwargs):
        return None

    saved = [(triton_backend, name, getattr(triton_backend, name, None))
             for name in ("launch_forward", "launch_backward", "_launch")]
    saved.append((neuron_module, "select_backend", neuron_module.select_backend))
    try:
        for module, name, _ in saved[:3]:
            setattr(module, name, nothing)  # _launch: what revisions before the op boundary called
        neuron_module.select_backend = lambda device, backend, surrogate, dtype=torch.float32: "triton"
        yield
    finally:
        for module, name, original in saved:
            if original is None:
                delattr(module, name)
            else:
                setattr(module, name, original)


def source_revision() -> str:
    """The git commit of the sj_bert measured (``+dirty`` with local changes)."""
    root = Path(sj_bert.__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True,
                                text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "sj_bert"], cwd=root, capture_output=True,
                               text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--T", type=int, default=128)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--channels", type=int, default=384)
    parser.add_argument("--repeats", type=int, default=300, help="timed calls per case (median reported)")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--out", default=str(RESULTS / "host_overhead_cpu.json"))
    args = parser.parse_args(argv)
    for name in ("T", "batch", "channels", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1, got {getattr(args, name)}")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    # the host work is one thread's; keep the machine's load out
    with torch_threads(1), stubbed_launches():
        results = measure(args)
    for name, us in results.items():
        print(f"BPSN {name}, launches stubbed, x [{args.T}, {args.batch}, {args.channels}]: {us:.0f} us")
    result = {
        "bench": "host_overhead",
        "device": "cpu",
        "sj_bert_revision": source_revision(),
        "torch": torch.__version__,
        "load_average_1min": os.getloadavg()[0],
        "shape": {"T": args.T, "batch": args.batch, "channels": args.channels},
        "method": "median wall time (one torch thread) of BPSN(channels=C, channel_dim=-1) through the Triton "
                  "backend's host code with launch_forward/launch_backward replaced by no-ops; "
                  "forward+backward resets x.grad each call; the two cases interleaved",
        "repeats": args.repeats,
        "host_us": results,
    }
    write_json(args.out, result)
    print(f"wrote {args.out}")
    return result


def measure(args) -> dict:
    """Median microseconds per call of each case."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(args.T, args.batch, args.channels, generator=generator).requires_grad_()
    grad = torch.randn(args.T, args.batch, args.channels, generator=generator)
    mask = torch.ones(args.T, args.batch, dtype=torch.bool)
    node = BPSN(channels=args.channels, channel_dim=-1)

    def train_step():
        x.grad = None
        node.reset()
        node(x, mask).backward(grad)

    def inference_step():
        with torch.no_grad():
            node.reset()
            node(x, mask)

    steps = {"forward+backward": train_step, "forward (no_grad)": inference_step}
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(args.warmup):
        for step in steps.values():
            step()
    for _ in range(args.repeats):
        for name, step in steps.items():  # interleaved: machine load hits both alike
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    return {name: 1e6 * statistics.median(t) for name, t in times.items()}


if __name__ == "__main__":
    main()
