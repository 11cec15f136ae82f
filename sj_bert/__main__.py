"""``python -m sj_bert``: classify sentences with a zoo checkpoint and print its energy report.

Runs offline on the embedded defaults: the zoo's ``sst2`` checkpoint when this checkout
has it, otherwise an SNN-BERT built from the offline MiniLM (whose classifier head is
untrained, which the output says).
"""

from __future__ import annotations

import argparse
from typing import Optional

import torch

DEFAULT_SENTENCES = (
    "a gripping , beautifully acted film .",
    "the plot is thin and the jokes fall flat .",
    "an honest , moving portrait of a family .",
)


def _load(checkpoint: str):
    from transformers import AutoTokenizer

    from . import SpikingBertForSequenceClassification, offline_bert, zoo

    try:
        return zoo.from_pretrained(checkpoint), f"zoo checkpoint {checkpoint!r}"
    except (KeyError, FileNotFoundError) as error:
        print(f"note: {error}\n      falling back to SNN-BERT on the offline MiniLM (untrained head)")
    path = offline_bert()
    model = SpikingBertForSequenceClassification.from_pretrained(path, num_labels=2).eval()
    model.tokenizer = AutoTokenizer.from_pretrained(path)
    return model, "offline MiniLM-L6-H384 (untrained classifier head)"


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m sj_bert", description=__doc__.splitlines()[0])
    parser.add_argument("sentences", nargs="*", default=list(DEFAULT_SENTENCES))
    parser.add_argument("--checkpoint", default="sst2", help="zoo name, local folder or hub id")
    args = parser.parse_args(argv)

    from .energy import energy_report

    model, source = _load(args.checkpoint)
    batch = model.tokenizer(args.sentences, return_tensors="pt", padding=True, truncation=True)
    with torch.no_grad():
        probs = model(**batch).logits.softmax(-1)
    labels = model.config.id2label
    print(f"model: {source}\n")
    for sentence, p in zip(args.sentences, probs):
        k = int(p.argmax())
        print(f"{labels.get(k, k):>10} {p[k]:.3f}  {sentence}")
    print()
    print(energy_report(model, batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids")).format())


if __name__ == "__main__":
    main()
