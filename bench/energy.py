"""Energy per sample on real SST-2 dev sentences: ANN BERT vs SNN-BERT individual vs repeat.

Runs :func:`sj_bert.energy.energy_report` on the first ``--batch_size`` sentences of
``<data_dir>/SST-2/dev.tsv`` (classic GLUE layout), tokenized with the model's tokenizer,
for the same weights in individual coding (BPSN over tokens) and repeat coding (LIF, T
steps); the ANN row is the dense twin of the same shape and tokens. The method is in
``sj_bert/energy.py``. Default weights: the offline MiniLM-L6-H384 (not fine-tuned, so the
firing rates are those of the converted ANN; pass a fine-tuned checkpoint with
``--model_name_or_path``).

    python bench/energy.py                       # writes bench/results/energy.json
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from transformers import AutoTokenizer

from sj_bert import SpikingBertForSequenceClassification, offline_bert
from sj_bert.energy import energy_report, plot_firing_rates
from sj_bert.glue import read_glue_file
from sj_bert.files import write_json

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"


def read_sentences(data_dir: Path, count: int) -> list[str]:
    """The first ``count`` SST-2 dev sentences (``sj_bert.glue`` names a missing file)."""
    dev = read_glue_file(data_dir / "SST-2" / "dev.tsv", "sst2")
    sentences = list(dev.select(range(min(count, len(dev))))["sentence"])
    if not sentences:
        raise ValueError(f"{data_dir}/SST-2/dev.tsv holds no sentences")
    return sentences


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data_dir", default=str(REPO.parent / "shared" / "data" / "glue"))
    parser.add_argument("--model_name_or_path", default=None, help="default: the offline MiniLM")
    parser.add_argument("--batch_size", type=int, default=64, help="number of dev sentences")
    parser.add_argument("--max_length", type=int, default=128)
    parser.add_argument("--time_steps", type=int, default=4, help="repeat coding steps per token")
    parser.add_argument("--attention", choices=("softmax", "spiking"), default="softmax")
    parser.add_argument("--individual", default=None,
                        help="a trained individual-coding SNN-BERT checkpoint (default: --model_name_or_path converted)")
    parser.add_argument("--repeat", default=None,
                        help="a trained repeat-coding SNN-BERT checkpoint (default: --model_name_or_path converted)")
    parser.add_argument("--out", default=str(RESULTS / "energy.json"))
    parser.add_argument("--plot", default=None, help="also write the individual coding firing heatmap (PNG)")
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    model_path = args.model_name_or_path or offline_bert()
    sentences = read_sentences(Path(args.data_dir), args.batch_size)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    batch = tokenizer(sentences, padding=True, truncation=True, max_length=args.max_length, return_tensors="pt")
    reports = {}
    trained = {"individual": args.individual, "repeat": args.repeat}
    for coding in ("individual", "repeat"):
        if trained[coding]:
            model = SpikingBertForSequenceClassification.from_pretrained(trained[coding])
        else:
            model = SpikingBertForSequenceClassification.from_pretrained(
                model_path, coding=coding, time_steps=args.time_steps, attention=args.attention, num_labels=2
            )
        torch.manual_seed(0)  # the classifier is new when loading a base checkpoint
        reports[coding] = energy_report(
            model, batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids")
        )
    ann = reports["individual"].ann
    rows = [("ANN (dense twin)", ann)] + [(f"SNN {c}", r) for c, r in reports.items()]

    print(f"energy per sample, {len(sentences)} SST-2 dev sentences, "
          f"{ann.tokens / ann.batch_size:.1f} real tokens/sample, model {model_path}")
    print(f"{'model':<20}{'firing':>9}{'AC (SOP)':>13}{'MAC':>13}{'energy (mJ)':>14}{'ANN/model':>11}")
    for name, r in rows:
        firing = f"{r.firing_rate:.2%}" if r.neurons else "-"
        ratio = ann.energy_per_sample_mj / r.energy_per_sample_mj if r.energy_per_sample_mj else float("inf")
        print(f"{name:<20}{firing:>9}{r.sops_per_sample:>13.4g}{r.macs_per_sample:>13.4g}"
              f"{r.energy_per_sample_mj:>14.4f}{ratio:>10.1f}x")
    print(f"repeat / individual energy: "
          f"{reports['repeat'].energy_per_sample_mj / reports['individual'].energy_per_sample_mj:.2f}x")

    result = {
        "bench": "energy",
        "model": model_path,
        "checkpoints": trained,
        "data": str(Path(args.data_dir) / "SST-2" / "dev.tsv"),
        "sentences": len(sentences),
        "max_length": args.max_length,
        "energy_pj": {"ac": ann.e_ac_pj, "mac": ann.e_mac_pj},
        "summary": {
            name: {
                "firing_rate": r.firing_rate if r.neurons else None,
                "sops_per_sample": r.sops_per_sample,
                "macs_per_sample": r.macs_per_sample,
                "energy_per_sample_mj": r.energy_per_sample_mj,
            }
            for name, r in (("ann", ann), *reports.items())
        },
        "reports": {coding: r.to_dict() for coding, r in reports.items()},
    }
    out = Path(args.out)
    write_json(str(out), result)  # temporary name, then rename
    print(f"wrote {out}")
    if args.plot:
        print(f"wrote {plot_firing_rates(reports['individual'], args.plot)}")
    return result


if __name__ == "__main__":
    main()
