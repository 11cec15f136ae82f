"""Inference throughput classifying SST-2 dev sentences: SNN-BERT against its ANN twin.

Both models are built from the same offline MiniLM-L6-H384 weights: the ANN twin is
``BertForSequenceClassification``; SNN-BERT has the spiking settings of the zoo's ``sst2``
checkpoint (read from ``zoo/sst2/config.json``: individual coding, per-channel BPSN, its
threshold and pooling). Throughput does not depend on fine-tuned weights (every matrix is
computed densely on the GPU), so the checkpoint's weights are not needed: a GPU run carries
the tree without them.

Sentences are tokenized once per batch beforehand (padded to the longest in the batch,
truncated to ``--max_length``); the timed pass is every batch's forward under
``torch.inference_mode`` (and autocast, when asked). Passes take turns between the two
models, so machine load affects them alike; sentences per second use the median pass.

    python bench/inference.py                     # writes bench/results/inference_<device>.json
    python bench/inference.py --batch_sizes 1 64 --max_sentences 256
"""

from __future__ import annotations

import argparse
import os
import statistics
from pathlib import Path

import torch
from transformers import AutoTokenizer, BertForSequenceClassification

from sj_bert import SpikingBertForSequenceClassification, offline_bert
from sj_bert.glue import read_glue_file
from sj_bert.files import write_json
from sj_bert.timing import AUTOCAST, device_name, interleaved_times
from sj_bert.zoo import spiking_settings

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"


def batches(tokenizer, sentences: list[str], batch_size: int, max_length: int, device) -> list[dict]:
    """``input_ids``/``attention_mask``/``token_type_ids`` ``[B, L_batch]`` per batch."""
    out = []
    for start in range(0, len(sentences), batch_size):
        encoded = tokenizer(sentences[start:start + batch_size], padding=True, truncation=True,
                            max_length=max_length, return_tensors="pt")
        out.append({k: v.to(device) for k, v in encoded.items()})
    return out


def make_pass(model: torch.nn.Module, inputs: list[dict], autocast: str):
    """A closure classifying every batch once."""
    dtype = AUTOCAST[autocast]
    device_type = next(model.parameters()).device.type

    def run():
        with torch.inference_mode(), torch.autocast(device_type, dtype=dtype, enabled=dtype is not None):
            for batch in inputs:
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
    parser.add_argument("--warmup", type=int, default=1, help="untimed passes per model")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per model (median reported)")
    parser.add_argument("--out", default=None, help="JSON path (default: bench/results/inference_<device>.json)")
    args = parser.parse_args(argv)
    cuda = args.device.startswith("cuda")
    for flag in ("batch_sizes", "max_sentences", "max_length", "repeats"):
        values = getattr(args, flag)
        if values is not None and min(values if isinstance(values, list) else [values]) < 1:
            parser.error(f"--{flag} must be positive, got {values}")
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
    models = {
        "ann": BertForSequenceClassification.from_pretrained(path, num_labels=2),
        "snn": SpikingBertForSequenceClassification.from_pretrained(path, num_labels=2, **settings),
    }
    models = {name: model.to(device).eval() for name, model in models.items()}

    rows = []
    for batch_size in args.batch_sizes:
        inputs = batches(tokenizer, sentences, batch_size, args.max_length, device)
        passes = {name: make_pass(model, inputs, args.autocast) for name, model in models.items()}
        times = interleaved_times(passes, device, args.warmup, args.repeats)
        for name, seconds in times.items():
            median = statistics.median(seconds)
            rows.append({"model": name, "batch_size": batch_size, "sentences": len(sentences),
                         "pass_s": median, "sentences_per_s": len(sentences) / median})
    ratios = {}
    for batch_size in args.batch_sizes:
        by = {r["model"]: r["sentences_per_s"] for r in rows if r["batch_size"] == batch_size}
        ratios[str(batch_size)] = {"snn/ann throughput": by["snn"] / by["ann"]}

    print(f"inference, SST-2 dev ({len(sentences)} sentences), autocast {args.autocast}, device {device}")
    print(f"{'model':<8}{'batch':>7}{'pass (s)':>12}{'sentences/s':>14}")
    for r in rows:
        print(f"{r['model']:<8}{r['batch_size']:>7}{r['pass_s']:>12.3f}{r['sentences_per_s']:>14.1f}")
    for batch_size, values in ratios.items():
        print(f"batch {batch_size}: SNN-BERT / ANN throughput {values['snn/ann throughput']:.2f}x")

    result = {
        "bench": "inference",
        "device": str(device),
        "device_name": device_name(device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "load_average_1min": os.getloadavg()[0],
        "autocast": args.autocast,
        "max_length": args.max_length,
        "snn_settings": settings,
        "weights": "offline MiniLM-L6-H384 for both (throughput does not depend on fine-tuning)",
        "time_method": "median wall time of one pass over every batch (tokenized beforehand) under "
                       "inference_mode; the two models take turns pass by pass",
        "results": rows,
        "ratios": ratios,
    }
    out = Path(args.out) if args.out else RESULTS / f"inference_{device.type}.json"
    write_json(str(out), result)
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
