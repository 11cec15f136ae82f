"""Training-step time and peak memory: ANN BERT vs SNN-BERT individual vs repeat coding;
and inference latency, SNN-BERT (individual coding) vs the ANN.

All models share one shape. Training: one optimizer step (forward with labels, backward,
AdamW) on the same random batch. Inference: one forward in ``eval()`` under
``torch.inference_mode()``, for every batch size and length asked. Ratios are measured side
by side in one run. The SNN uses the zoo's and recipes' neuron settings (BPSN per
channel, threshold 0.25, spikes carrying their threshold, mean pooling).

- CUDA (default when available): MiniLM-L6-H384 shape, batch 32, L in {64, 128, 256, 512},
  bf16 autocast (``--autocast none`` for fp32).
- CPU: a tiny shape by default (well under a minute on 2 cores); ``--shape minilm`` for the
  real one (the README's CPU numbers: see there for the command).

Peak memory is the peak of allocations during one training step above what was live
before it (weights, gradients, optimizer state): ``torch.cuda.max_memory_allocated`` on
CUDA, the torch profiler's CPU memory events (``profile_memory=True``) on CPU. The JSON
names the method. ``saved_mb`` is what one training forward keeps for the backward
(``saved_tensors_hooks``), exact on any device: the activations alone.

    python bench/coding.py                       # writes bench/results/coding_<device>.json
    python bench/coding.py --device cpu --shape minilm --batch_size 8 --lengths 128 \
        --infer_batch_sizes 1 32 --infer_lengths 32 128 512 --threads 1
"""

from __future__ import annotations

import argparse
import os
import statistics
from pathlib import Path

import torch
from transformers import BertConfig, BertForSequenceClassification

from sj_bert import BPSN, SpikingBertConfig, SpikingBertForSequenceClassification, offline_bert
from sj_bert.files import write_json
from sj_bert.timing import (
    AUTOCAST, COMPILE_MODES, CUDA_GRAPH_MODES, compiled, device_name, first_line, interleaved_times, peak_memory_mb,
)
from sj_bert.zoo import spiking_settings

RESULTS = Path(__file__).resolve().parent / "results"
TINY = dict(
    vocab_size=1000, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
    intermediate_size=256, max_position_embeddings=128,
)
MODELS = ("ann", "individual", "repeat")
COMPILED = ("ann", "individual")  # measured again under torch.compile at --compile_lengths
# the individual-coding neuron settings of the zoo's sst2 checkpoint (the recipe's defaults);
# coding and time steps are set per model
SNN_SETTINGS = {k: v for k, v in spiking_settings("sst2").items() if k not in ("coding", "time_steps")}


def shape_config(shape: str) -> dict:
    if shape == "tiny":
        return dict(TINY)
    keys = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
            "max_position_embeddings", "type_vocab_size", "layer_norm_eps")
    minilm = BertConfig.from_pretrained(offline_bert())
    return {k: getattr(minilm, k) for k in keys}


def build(kind: str, shape: dict, time_steps: int, neuron_backend: str | None,
          compile_backend: str = "inductor", compile_mode: str | None = None) -> torch.nn.Module:
    """``kind``: a model of :data:`MODELS`, or ``"<model>+compile"``: the same under
    :func:`compiled` (compiled on its first steps, which are warm-up)."""
    if kind.endswith("+compile"):
        model = build(kind[: -len("+compile")], shape, time_steps, neuron_backend)
        return compiled(model, compile_backend, compile_mode)
    if kind == "ann":
        return BertForSequenceClassification(BertConfig(**shape, num_labels=2))
    settings = SNN_SETTINGS if kind == "individual" else {}
    config = SpikingBertConfig(
        **shape, num_labels=2, coding=kind, time_steps=time_steps, neuron_backend=neuron_backend, **settings
    )
    return SpikingBertForSequenceClassification(config)


def bpsn_implementations(model: torch.nn.Module) -> list[str]:
    """The BPSN implementations that ran in ``model`` (empty for models without BPSN)."""
    return sorted({str(m.implementation) for m in model.modules() if isinstance(m, BPSN)})


def training_step(model: torch.nn.Module, batch: dict, device: torch.device, autocast: str = "none"):
    """A closure running one optimizer step of ``model`` on ``batch``, the forward pass under
    ``torch.autocast`` when ``autocast`` names a dtype (fp32 weights, as mixed-precision
    training keeps them)."""
    model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    dtype = AUTOCAST[autocast]

    def step():
        # a new iteration for CUDA graph trees (reduce-overhead); nothing happens without them
        torch.compiler.cudagraph_mark_step_begin()
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def inference_step(model: torch.nn.Module, batch: dict, device: torch.device):
    """A closure running one forward of ``model`` in ``eval()`` under ``inference_mode``."""
    model.to(device).eval()
    inputs = {k: v for k, v in batch.items() if k != "labels"}

    def step():
        torch.compiler.cudagraph_mark_step_begin()
        with torch.inference_mode():
            model(**inputs)

    return step


def saved_for_backward_mb(model: torch.nn.Module, batch: dict, device: torch.device,
                         autocast: str = "none") -> float:
    """MiB of the tensors one training forward (loss included) keeps for its backward: each
    storage once, parameters and buffers left out. Exact on any device, unlike a peak, which
    also holds the backward's transients and, on the CPU, only what the profiler sees (devices
    differ a little: dropout keeps a float mask on the CPU, a bool one on CUDA)."""
    model.to(device).train()
    sizes: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        key = storage.data_ptr()
        if key not in kept and key not in sizes:
            sizes[key] = storage.nbytes()
        return tensor

    kept = {t.untyped_storage().data_ptr() for t in (*model.parameters(), *model.buffers())}
    dtype = AUTOCAST[autocast]
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = model(**batch).loss
    del loss  # nothing is run backward: the graph and what it kept go with it
    return sum(sizes.values()) / 2**20


def random_batch(shape: dict, batch_size: int, length: int, device: torch.device) -> dict:
    generator = torch.Generator().manual_seed(0)
    batch = {
        "input_ids": torch.randint(1, shape["vocab_size"], (batch_size, length), generator=generator),
        "attention_mask": torch.ones(batch_size, length, dtype=torch.long),
        "labels": torch.randint(0, 2, (batch_size,), generator=generator),
    }
    return {k: v.to(device) for k, v in batch.items()}


def measure(steps: dict, device: torch.device, warmup: int, repeats: int) -> dict:
    """Median step time and peak memory per model. Timed steps take turns across the
    models, so a change in machine load affects them alike and the ratios stay fair."""
    times = interleaved_times(steps, device, warmup, repeats)
    return {
        name: {"step_ms": 1e3 * statistics.median(times[name]), "peak_mem_mb": peak_memory_mb(step, device)}
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
    parser.add_argument("--infer_batch_sizes", type=int, nargs="+", default=[1, 32],
                        help="inference batch sizes (SNN vs ANN latency)")
    parser.add_argument("--infer_lengths", type=int, nargs="*", default=[32, 128, 512],
                        help="inference lengths (those above the shape's max_position_embeddings are skipped)")
    parser.add_argument("--compile_lengths", type=int, nargs="*", default=[],
                        help="training lengths at which the ANN and SNN-BERT are also timed under "
                             "torch.compile (the launch-bound eager step is what a GPU run measures)")
    parser.add_argument("--compile_backend", default="inductor", help="torch.compile backend (tests: aot_eager)")
    parser.add_argument("--compile_mode", default=None, choices=COMPILE_MODES,
                        help="Inductor's mode for the compiled rows (reduce-overhead: CUDA graphs, the GPU's "
                             "time without the host's launches)")
    parser.add_argument("--neuron_backend", default=None, help="BPSN implementation (default: by device)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's); 1 steadies CPU times on a busy machine")
    parser.add_argument("--out", default=None, help="JSON path (default: bench/results/coding_<device>.json)")
    args = parser.parse_args(argv)
    cuda = args.device.startswith("cuda")
    args.shape = args.shape or ("minilm" if cuda else "tiny")
    args.batch_size = args.batch_size or (32 if cuda else 8)
    args.lengths = args.lengths or ([64, 128, 256, 512] if cuda else [32])
    args.autocast = args.autocast or ("bf16" if cuda else "none")
    unknown = sorted(set(args.compile_lengths) - set(args.lengths))
    if unknown:
        parser.error(f"--compile_lengths {unknown} must be among --lengths {args.lengths}")
    return args


def memory_measured(compile_mode: str | None, device: torch.device) -> bool:
    """Whether a compiled model's step has a peak-memory figure. Not under CUDA graphs
    (:data:`CUDA_GRAPH_MODES` on CUDA): their activations sit in a pool allocated at capture and
    kept between steps, so the peak above what was live before a step leaves them out (GPU
    batch 3 read 87 MiB for a step whose eager run peaks at 1.3 GiB)."""
    return not (device.type == "cuda" and compile_mode in CUDA_GRAPH_MODES)


def training_rows(kinds: list[str], length: int, args, shape: dict, device: torch.device,
                  skipped: list[str], implementations: dict) -> list[dict]:
    """Training-step rows of ``kinds`` at ``length``, measured side by side."""
    batch = random_batch(shape, args.batch_size, length, device)
    steps, models = {}, {}
    for kind in kinds:
        torch.manual_seed(0)  # every model of a kind starts from the same weights
        model = models[kind] = build(kind, shape, args.time_steps, args.neuron_backend, args.compile_backend,
                                     args.compile_mode)
        steps[kind] = training_step(model, batch, device, args.autocast)
        if kind.endswith("+compile"):
            try:  # compiles here, so that a compiler failure costs this row, not the run
                steps[kind]()
            except Exception as err:  # noqa: BLE001 - reported in the JSON's "skipped"
                del steps[kind]
                skipped.append(f"training {kind} L={length}: {type(err).__name__}: {first_line(err)}")
    rows = [{"model": kind, "length": length, **stats}
            for kind, stats in measure(steps, device, args.warmup, args.steps).items()]
    for row in rows:  # not through a compiled graph: Dynamo would trace the hooks
        row["saved_mb"] = (None if row["model"].endswith("+compile") else
                           saved_for_backward_mb(models[row["model"]], batch, device, args.autocast))
    if not memory_measured(args.compile_mode, device):
        for row in rows:
            if row["model"].endswith("+compile"):
                row["peak_mem_mb"] = None  # see memory_measured
    for kind in steps:
        implementations.setdefault(f"training {kind}", bpsn_implementations(models[kind]))
    del steps, models
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return rows


def inference_rows(models: dict, lengths: list[int], args, shape: dict, device: torch.device,
                   skipped: list[str]) -> list[dict]:
    """Inference rows of ``models`` (name -> module) at every batch size and length, taking
    turns, and the SNN/ANN ratio of each pair of the same kind."""
    rows = []
    for batch_size in args.infer_batch_sizes:
        for length in lengths:
            batch = random_batch(shape, batch_size, length, device)
            steps = {}
            for kind, model in models.items():
                step = inference_step(model, batch, device)
                if kind.endswith("+compile"):
                    try:  # compiles here, so that a compiler failure costs this row, not the run
                        step()
                    except Exception as err:  # noqa: BLE001 - reported in the JSON's "skipped"
                        skipped.append(f"inference {kind} B={batch_size} L={length}: {type(err).__name__}: "
                                       f"{first_line(err)}")
                        continue
                steps[kind] = step
            times = interleaved_times(steps, device, args.warmup, args.steps)
            ms = {kind: 1e3 * statistics.median(t) for kind, t in times.items()}
            ms_min = {kind: 1e3 * min(t) for kind, t in times.items()}
            for kind in steps:
                rows.append({"model": kind, "batch_size": batch_size, "length": length,
                             "ms": ms[kind], "ms_min": ms_min[kind]})
            for snn, ann in (("individual", "ann"), ("individual+compile", "ann+compile")):
                if snn in ms and ann in ms:
                    rows.append({"model": f"{snn}/{ann}", "batch_size": batch_size, "length": length,
                                 "ratio": ms[snn] / ms[ann], "ratio_min": ms_min[snn] / ms_min[ann]})
    return rows


def ratios_of(rows: list[dict], lengths: list[int]) -> dict:
    ratios = {}
    for length in lengths:
        by = {r["model"]: r for r in rows if r["length"] == length}
        ratios[str(length)] = {
            f"{a}/{b} {what}": by[a][key] / by[b][key]
            for a, b in (("individual", "ann"), ("repeat", "ann"), ("repeat", "individual"),
                         ("individual+compile", "ann+compile"), ("ann+compile", "ann"),
                         ("individual+compile", "individual"))
            for what, key in (("time", "step_ms"), ("memory", "peak_mem_mb"), ("saved", "saved_mb"))
            if a in by and b in by and by[a].get(key) is not None and by[b].get(key)  # None: not measured
        }
    return ratios


def main(argv=None) -> dict:
    """Eager training, eager inference, then the compiled models: the JSON is rewritten after
    each phase (``complete`` false until the end), so a run stopped by a time budget keeps
    what it measured, and a slow compiler costs only its own rows."""
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    shape = shape_config(args.shape)
    out = Path(args.out) if args.out else RESULTS / f"coding_{device.type}.json"
    rows, inference, skipped, implementations = [], [], [], {}
    result = {
        "bench": "coding",
        "device": str(device),
        "device_name": device_name(device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "load_average_1min": os.getloadavg()[0],  # other processes on a shared machine skew CPU times
        "shape": args.shape,
        "config": shape,
        "batch_size": args.batch_size,
        "autocast": args.autocast,
        "time_steps": args.time_steps,
        "timed_steps": args.steps,
        "time_method": "median wall time of one optimizer step (forward with loss, backward, AdamW); models take "
                       "turns step by step (the compiled models with each other, after the eager ones)",
        "compile": {"lengths": args.compile_lengths, "backend": args.compile_backend, "mode": args.compile_mode,
                    "fullgraph": True,
                    "models": [f"{k}+compile" for k in COMPILED]},
        "saved_method": "saved_mb: MiB of the tensors one training forward (loss included) keeps for its "
                        "backward, each storage once, parameters and buffers left out (saved_tensors_hooks); "
                        "null for compiled models",
        "memory_method": (
            "torch.cuda.max_memory_allocated during one step minus memory_allocated before it"
            if device.type == "cuda"
            else "torch.profiler profile_memory=True: peak of CPU allocator events during one step, above the memory live before it"
        ) + ("" if memory_measured(args.compile_mode, device) else
             f"; null for the compiled rows: mode {args.compile_mode} replays CUDA graphs, whose pool is allocated "
             "at capture and kept between steps"),
        "complete": False,
        "results": rows,
        "ratios": {},
        "snn_settings": SNN_SETTINGS,
        "bpsn_implementations": implementations,
        "inference_method": "median (ms) and minimum (ms_min) wall time of one forward in eval() under "
                            "torch.inference_mode(); ANN and SNN (individual coding) take turns, their "
                            "torch.compile'd twins likewise at --compile_lengths; ratio = SNN/ANN of the same kind",
        "inference": inference,
        "skipped": skipped,
    }

    def save() -> None:
        result["ratios"] = ratios_of(rows, args.lengths)
        write_json(str(out), result)  # temporary name, then rename

    for length in args.lengths:
        rows += training_rows(list(MODELS), length, args, shape, device, skipped, implementations)
        save()

    lengths = [L for L in args.infer_lengths if L <= shape["max_position_embeddings"]]
    skipped += [f"inference L={L}: above max_position_embeddings" for L in args.infer_lengths if L not in lengths]
    torch.manual_seed(0)
    models = {kind: build(kind, shape, args.time_steps, args.neuron_backend) for kind in ("ann", "individual")}
    inference += inference_rows(models, lengths, args, shape, device, skipped)
    save()

    # compiled last: Inductor's compile time must not cost the eager rows
    for length in args.compile_lengths:
        rows += training_rows([f"{k}+compile" for k in COMPILED], length, args, shape, device, skipped,
                              implementations)
        save()
    if args.compile_lengths:
        compiled_models = {f"{kind}+compile": compiled(model, args.compile_backend, args.compile_mode)
                           for kind, model in models.items()}
        inference += inference_rows(compiled_models, [L for L in lengths if L in args.compile_lengths], args, shape,
                                    device, skipped)
        for kind, model in compiled_models.items():
            implementations.setdefault(f"inference {kind}", bpsn_implementations(model))
    for kind, model in models.items():
        implementations.setdefault(f"inference {kind}", bpsn_implementations(model))
    result["bpsn_implementations"] = {k: v for k, v in implementations.items() if v}
    del models

    print(f"training step, {args.shape} shape, batch {args.batch_size}, autocast {args.autocast}, device {device}")
    print(f"{'model':<20}{'L':>6}{'step (ms)':>12}{'peak mem (MiB)':>16}{'saved (MiB)':>13}")
    for r in rows:
        memory = "not measured" if r["peak_mem_mb"] is None else f"{r['peak_mem_mb']:.2f}"
        saved = "-" if r.get("saved_mb") is None else f"{r['saved_mb']:.2f}"
        print(f"{r['model']:<20}{r['length']:>6}{r['step_ms']:>12.2f}{memory:>16}{saved:>13}")
    for length, values in ratios_of(rows, args.lengths).items():
        print(f"L={length}: " + ", ".join(f"{k} {v:.2f}x" for k, v in values.items()))
    if inference:
        print(f"inference (eval, inference_mode), {args.shape} shape, device {device}")
        print(f"{'B':>4}{'L':>6}{'ANN (ms)':>12}{'SNN (ms)':>12}{'SNN/ANN':>10}{'(min)':>8}  models")
        by = {(r["model"], r["batch_size"], r["length"]): r for r in inference}
        for r in inference:
            if "ratio" in r:
                snn_kind, ann_kind = r["model"].split("/")
                key = (r["batch_size"], r["length"])
                ann, snn = by[(ann_kind, *key)]["ms"], by[(snn_kind, *key)]["ms"]
                print(f"{key[0]:>4}{key[1]:>6}{ann:>12.2f}{snn:>12.2f}{r['ratio']:>9.2f}x{r['ratio_min']:>7.2f}x  "
                      f"{r['model']}")
    for line in skipped:
        print(f"skipped {line}")
    result["complete"] = True
    save()
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
