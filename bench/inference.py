"""Inference throughput classifying SST-2 dev sentences: SNN-BERT against its ANN twin.

Both models are built from the same offline MiniLM-L6-H384 weights: the ANN twin is
``BertForSequenceClassification``; SNN-BERT has the spiking settings of the zoo's ``sst2``
checkpoint (read from ``zoo/sst2/config.json``: individual coding, per-channel BPSN, its
threshold and pooling). Throughput does not depend on fine-tuned weights (every matrix is
computed densely on the GPU), so the checkpoint's weights are not needed: a GPU run carries
the tree without them.

Sentences are tokenized once per batch beforehand (padded to the longest in the batch, or
up to a multiple of ``--pad_multiple``, truncated to ``--max_length``); the timed pass is every
batch's forward under ``torch.inference_mode`` (and autocast, when asked). Passes take turns
between the models, so machine load affects them alike; sentences per second use the median
pass.

``--compile_mode MODE`` also times both models under ``torch.compile`` (one full graph each,
the fused neuron inside), side by side with the eager ones: ``reduce-overhead`` replays CUDA
graphs, so the GPU's time without the host's per-kernel launches, which bound the eager
SNN-BERT at batch 1 (``bench/host_overhead.py``). The untimed warm-up passes compile (and
record the graphs of) every batch shape: ``--pad_multiple`` keeps their number small.

    python bench/inference.py                     # writes bench/results/inference_<device>.json
    python bench/inference.py --batch_sizes 1 64 --max_sentences 256
    python bench/inference.py --compile_mode reduce-overhead --pad_multiple 32
"""

from __future__ import annotations

import argparse
import os
import statistics
from pathlib import Path
from typing import Optional

import torch
from transformers import AutoTokenizer, BertForSequenceClassification

from sj_bert import SpikingBertForSequenceClassification, offline_bert
from sj_bert.glue import read_glue_file
from sj_bert.files import write_json
from sj_bert.timing import AUTOCAST, COMPILE_MODES, compiled, device_name, first_line, interleaved_times
from sj_bert.zoo import spiking_settings

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"


def batches(tokenizer, sentences: list[str], batch_size: int, max_length: int, device,
            pad_multiple: Optional[int] = None) -> list[dict]:
    """``input_ids``/``attention_mask``/``token_type_ids`` ``[B, L_batch]`` per batch (``L_batch``
    a multiple of ``pad_multiple`` when given, at most ``max_length``, which is then one too)."""
    out = []
    for start in range(0, len(sentences), batch_size):
        encoded = tokenizer(sentences[start:start + batch_size], padding=True, truncation=True,
                            max_length=max_length, pad_to_multiple_of=pad_multiple, return_tensors="pt")
        out.append({k: v.to(device) for k, v in encoded.items()})
    return out


def make_pass(model: torch.nn.Module, inputs: list[dict], autocast: str):
    """A closure classifying every batch once."""
    dtype = AUTOCAST[autocast]
    device_type = next(model.parameters()).device.type

    def run():
        with torch.inference_mode(), torch.autocast(device_type, dtype=dtype, enabled=dtype is not None):
            for batch in inputs:
                # a new iteration for CUDA graph trees (reduce-overhead); nothing happens without them
                torch.compiler.cudagraph_mark_step_begin()
                model(**batch).logits.argmax(-1)

    return run


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--data_dir", default=str(REPO.parent / "shared" / "data" / "glue"),
                        help="classic glue_data folder holding SST-2/dev.tsv")
    parser.add_argument("--batch_sizes", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--max_sentences", type=int, default=None, help="default: all 872 on CUDA, 64 on CPU")
    parser.add_argument("--max_length", type=int, default=128)
    parser.add_argument("--autocast", choices=tuple(AUTOCAST), default=None,
                        help="mixed precision (default: bf16 on CUDA, none on CPU)")
    parser.add_argument("--pad_multiple", type=int, default=None,
                        help="pad each batch to a multiple of this many tokens (default: to its longest)")
    parser.add_argument("--compile_mode", default=None, choices=COMPILE_MODES,
                        help="also time both models under torch.compile with Inductor's MODE (reduce-overhead: "
                             "CUDA graphs)")
    parser.add_argument("--compile_backend", default="inductor", help="torch.compile backend (tests: aot_eager)")
    parser.add_argument("--neuron_backend", default=None, help="BPSN implementation (default: by device)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed passes per model")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per model (median reported)")
    parser.add_argument("--out", default=None, help="JSON path (default: bench/results/inference_<device>.json)")
    args = parser.parse_args(argv)
    cuda = args.device.startswith("cuda")
    for flag in ("batch_sizes", "max_sentences", "max_length", "repeats", "pad_multiple"):
        values = getattr(args, flag)
        if values is not None and min(values if isinstance(values, list) else [values]) < 1:
            parser.error(f"--{flag} must be positive, got {values}")
    if args.pad_multiple and args.max_length % args.pad_multiple:
        parser.error(f"--max_length ({args.max_length}) must be a multiple of --pad_multiple ({args.pad_multiple}): "
                     "sentences are truncated to it and padded to a multiple")
    args.max_sentences = args.max_sentences or (None if cuda else 64)
    args.autocast = args.autocast or ("bf16" if cuda else "none")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    device = torch.device(args.device)
    path = offline_bert()
    dev = read_glue_file(Path(args.data_dir) / "SST-2" / "dev.tsv", "sst2")
    sentences = list(dev["sentence"])[: args.max_sentences]
    tokenizer = AutoTokenizer.from_pretrained(path)
    settings = spiking_settings("sst2")
    snn_settings = {**settings, **({"neuron_backend": args.neuron_backend} if args.neuron_backend else {})}
    models = {
        "ann": BertForSequenceClassification.from_pretrained(path, num_labels=2),
        "snn": SpikingBertForSequenceClassification.from_pretrained(path, num_labels=2, **snn_settings),
    }
    models = {name: model.to(device).eval() for name, model in models.items()}
    if args.compile_mode:  # the same modules (weights shared), compiled
        models.update({f"{name}+compile": compiled(models[name], args.compile_backend, args.compile_mode)
                       for name in ("ann", "snn")})

    rows, skipped = [], []
    out = Path(args.out) if args.out else RESULTS / f"inference_{device.type}.json"
    for batch_size in args.batch_sizes:
        inputs = batches(tokenizer, sentences, batch_size, args.max_length, device, args.pad_multiple)
        passes = {name: make_pass(model, inputs, args.autocast) for name, model in models.items()}
        for name in [n for n in passes if n.endswith("+compile")]:
            try:  # compiles every batch shape here, so a compiler failure costs this row, not the run
                passes[name]()
            except Exception as err:  # noqa: BLE001 - reported in the JSON's "skipped"
                del passes[name]
                skipped.append(f"{name} batch {batch_size}: {type(err).__name__}: {first_line(err)}")
                print(f"skipped: {skipped[-1]}")
        times = interleaved_times(passes, device, args.warmup, args.repeats)
        for name, seconds in times.items():
            median = statistics.median(seconds)
            rows.append({"model": name, "batch_size": batch_size, "sentences": len(sentences),
                         "pass_s": median, "sentences_per_s": len(sentences) / median})
        # after every batch size: a run stopped from outside (a lease's timeout) keeps what it measured
        result = report(args, device, sentences, snn_settings, rows, skipped, complete=False)
        write_json(str(out), result)

    result = report(args, device, sentences, snn_settings, rows, skipped, complete=True)
    ratios = result["ratios"]

    print(f"inference, SST-2 dev ({len(sentences)} sentences), autocast {args.autocast}, device {device}")
    print(f"{'model':<8}{'batch':>7}{'pass (s)':>12}{'sentences/s':>14}")
    for r in rows:
        print(f"{r['model']:<8}{r['batch_size']:>7}{r['pass_s']:>12.3f}{r['sentences_per_s']:>14.1f}")
    for batch_size, values in ratios.items():
        print(f"batch {batch_size}: " + ", ".join(f"{name} {value:.2f}x" for name, value in values.items()))

    write_json(str(out), result)
    print(f"wrote {out}")
    return result


def report(args, device, sentences: list, snn_settings: dict, rows: list, skipped: list, complete: bool) -> dict:
    """The bench's JSON: every row so far, the SNN/ANN (and compiled/eager) throughput ratios per
    batch size, and whether every batch size was measured (``complete``)."""
    ratios = {}
    pairs = (("snn", "ann"), ("snn+compile", "ann+compile"), ("snn+compile", "snn"), ("ann+compile", "ann"))
    for batch_size in sorted({r["batch_size"] for r in rows}, key=args.batch_sizes.index):
        by = {r["model"]: r["sentences_per_s"] for r in rows if r["batch_size"] == batch_size}
        ratios[str(batch_size)] = {f"{a}/{b} throughput": by[a] / by[b] for a, b in pairs if a in by and b in by}
    return {
        "bench": "inference",
        "device": str(device),
        "device_name": device_name(device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "load_average_1min": os.getloadavg()[0],
        "autocast": args.autocast,
        "max_length": args.max_length,
        "pad_multiple": args.pad_multiple,
        "compile": {"mode": args.compile_mode, "backend": args.compile_backend if args.compile_mode else None},
        "snn_settings": snn_settings,
        "weights": "offline MiniLM-L6-H384 for both (throughput does not depend on fine-tuning)",
        "time_method": "median wall time of one pass over every batch (tokenized beforehand) under "
                       "inference_mode; the models take turns pass by pass (compiled ones after a first, "
                       "compiling pass and the warm-up)",
        "results": rows,
        "ratios": ratios,
        "skipped": skipped,
        "complete": complete,
    }


if __name__ == "__main__":
    main()
