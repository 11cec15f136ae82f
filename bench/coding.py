"""Training-step time and peak memory: ANN BERT vs SNN-BERT individual vs repeat coding.

All three models share one shape and run one optimizer step (forward with labels,
backward, AdamW) on the same random batch; ratios are measured side by side in one run.

- CUDA (default when available): MiniLM-L6-H384 shape, batch 32, L in {64, 128, 256, 512},
  bf16 autocast (``--autocast none`` for fp32).
- CPU: a tiny shape by default (well under a minute on 2 cores); ``--shape minilm`` for the
  real one.

Peak memory is the peak of allocations during one training step above what was live
before it (weights, gradients, optimizer state): ``torch.cuda.max_memory_allocated`` on
CUDA, the torch profiler's CPU memory events (``profile_memory=True``) on CPU. The JSON
names the method.

    python bench/coding.py                       # writes bench/results/coding_<device>.json
    python bench/coding.py --device cpu --shape minilm --batch_size 8 --lengths 64
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
from pathlib import Path

import torch
from transformers import BertConfig, BertForSequenceClassification

from sj_bert import SpikingBertConfig, SpikingBertForSequenceClassification, offline_bert
from sj_bert.recipes_util import write_json
from sj_bert.timing import interleaved_times, sync

RESULTS = Path(__file__).resolve().parent / "results"
TINY = dict(
    vocab_size=1000, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
    intermediate_size=256, max_position_embeddings=128,
)
MODELS = ("ann", "individual", "repeat")


def shape_config(shape: str) -> dict:
    if shape == "tiny":
        return dict(TINY)
    keys = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
            "max_position_embeddings", "type_vocab_size", "layer_norm_eps")
    minilm = BertConfig.from_pretrained(offline_bert())
    return {k: getattr(minilm, k) for k in keys}


def build(kind: str, shape: dict, time_steps: int, neuron_backend: str | None) -> torch.nn.Module:
    if kind == "ann":
        return BertForSequenceClassification(BertConfig(**shape, num_labels=2))
    config = SpikingBertConfig(
        **shape, num_labels=2, coding=kind, time_steps=time_steps, neuron_backend=neuron_backend
    )
    return SpikingBertForSequenceClassification(config)


def cpu_step_peak(step) -> int:
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


AUTOCAST = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def training_step(model: torch.nn.Module, batch: dict, device: torch.device, autocast: str = "none"):
    """A closure running one optimizer step of ``model`` on ``batch``, the forward pass under
    ``torch.autocast`` when ``autocast`` names a dtype (fp32 weights, as mixed-precision
    training keeps them)."""
    model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    dtype = AUTOCAST[autocast]

    def step():
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def peak_memory(step, device: torch.device) -> float:
    """MiB allocated at the peak of one step above what was live before it."""
    if device.type != "cuda":
        return cpu_step_peak(step) / 2**20
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    step()
    sync(device)
    return (torch.cuda.max_memory_allocated(device) - before) / 2**20


def measure(steps: dict, device: torch.device, warmup: int, repeats: int) -> dict:
    """Median step time and peak memory per model. Timed steps take turns across the
    models, so a change in machine load affects them alike and the ratios stay fair."""
    times = interleaved_times(steps, device, warmup, repeats)
    return {
        name: {"step_ms": 1e3 * statistics.median(times[name]), "peak_mem_mb": peak_memory(step, device)}
        for name, step in steps.items()
    }


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--shape", choices=("tiny", "minilm"), default=None,
                        help="model shape (default: minilm on CUDA, tiny on CPU)")
    parser.add_argument("--batch_size", type=int, default=None, help="default: 32 on CUDA, 8 on CPU")
    parser.add_argument("--lengths", type=int, nargs="+", default=None,
                        help="default: 64 128 256 512 on CUDA, 32 on CPU")
    parser.add_argument("--autocast", choices=tuple(AUTOCAST), default=None,
                        help="mixed precision of the forward pass (default: bf16 on CUDA, none on CPU)")
    parser.add_argument("--time_steps", type=int, default=4, help="repeat coding steps per token")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10, help="timed steps (median reported)")
    parser.add_argument("--neuron_backend", default=None, help="BPSN implementation (default: by device)")
    parser.add_argument("--out", default=None, help="JSON path (default: bench/results/coding_<device>.json)")
    args = parser.parse_args(argv)
    cuda = args.device.startswith("cuda")
    args.shape = args.shape or ("minilm" if cuda else "tiny")
    args.batch_size = args.batch_size or (32 if cuda else 8)
    args.lengths = args.lengths or ([64, 128, 256, 512] if cuda else [32])
    args.autocast = args.autocast or ("bf16" if cuda else "none")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    device = torch.device(args.device)
    shape = shape_config(args.shape)
    rows = []
    for length in args.lengths:
        generator = torch.Generator().manual_seed(0)
        batch = {
            "input_ids": torch.randint(1, shape["vocab_size"], (args.batch_size, length), generator=generator),
            "attention_mask": torch.ones(args.batch_size, length, dtype=torch.long),
            "labels": torch.randint(0, 2, (args.batch_size,), generator=generator),
        }
        batch = {k: v.to(device) for k, v in batch.items()}
        torch.manual_seed(0)
        steps = {kind: training_step(build(kind, shape, args.time_steps, args.neuron_backend), batch, device,
                                     args.autocast)
                 for kind in MODELS}
        for kind, stats in measure(steps, device, args.warmup, args.steps).items():
            rows.append({"model": kind, "length": length, **stats})
        del steps
        if device.type == "cuda":
            torch.cuda.empty_cache()

    ratios = {}
    for length in args.lengths:
        by = {r["model"]: r for r in rows if r["length"] == length}
        ratios[str(length)] = {
            f"{a}/{b} {what}": by[a][key] / by[b][key]
            for a, b in (("individual", "ann"), ("repeat", "ann"), ("repeat", "individual"))
            for what, key in (("time", "step_ms"), ("memory", "peak_mem_mb"))
            if by[b][key] > 0
        }

    print(f"training step, {args.shape} shape, batch {args.batch_size}, autocast {args.autocast}, device {device}")
    print(f"{'model':<12}{'L':>6}{'step (ms)':>12}{'peak mem (MiB)':>16}")
    for r in rows:
        print(f"{r['model']:<12}{r['length']:>6}{r['step_ms']:>12.2f}{r['peak_mem_mb']:>16.2f}")
    for length, values in ratios.items():
        print(f"L={length}: " + ", ".join(f"{k} {v:.2f}x" for k, v in values.items()))

    result = {
        "bench": "coding",
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "load_average_1min": os.getloadavg()[0],  # other processes on a shared machine skew CPU times
        "shape": args.shape,
        "config": shape,
        "batch_size": args.batch_size,
        "autocast": args.autocast,
        "time_steps": args.time_steps,
        "timed_steps": args.steps,
        "time_method": "median wall time of one optimizer step (forward with loss, backward, AdamW); models take turns step by step",
        "memory_method": (
            "torch.cuda.max_memory_allocated during one step minus memory_allocated before it"
            if device.type == "cuda"
            else "torch.profiler profile_memory=True: peak of CPU allocator events during one step, above the memory live before it"
        ),
        "results": rows,
        "ratios": ratios,
    }
    out = Path(args.out) if args.out else RESULTS / f"coding_{device.type}.json"
    write_json(str(out), result)  # temporary name, then rename
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
