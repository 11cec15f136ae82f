"""``python -m sj_bert``: classify sentences with a zoo checkpoint and print its energy report.

Runs offline on the embedded defaults: the zoo's ``sst2`` checkpoint when this checkout
has it, otherwise an SNN-BERT built from the offline MiniLM (whose classifier head is
untrained, which the output says). A ``--checkpoint`` that was asked for and cannot be
loaded is an error (exit status 2) that lists the zoo's names.
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


DEFAULT_CHECKPOINT = "sst2"


def _load(checkpoint: Optional[str]):
    """``(model, what it is)``; ``checkpoint=None`` is the default, with its offline fallback."""
    from transformers import AutoTokenizer

    from . import SpikingBertForSequenceClassification, offline_bert, zoo

    if checkpoint is not None:
        model = zoo.from_pretrained(checkpoint)
        return model, model.source
    try:
        model = zoo.from_pretrained(DEFAULT_CHECKPOINT)
        return model, model.source
    except FileNotFoundError as error:  # the checkout has no zoo files and the hub is out of reach
        print(f"note: {error}\n      falling back to SNN-BERT on the offline MiniLM (untrained head)")
    path = offline_bert()
    model = SpikingBertForSequenceClassification.from_pretrained(path, num_labels=2).eval()
    model.tokenizer = AutoTokenizer.from_pretrained(path)
    return model, "offline MiniLM-L6-H384 (untrained classifier head)"


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m sj_bert", description=__doc__.splitlines()[0])
    parser.add_argument("sentences", nargs="*", default=list(DEFAULT_SENTENCES))
    parser.add_argument(
        "--checkpoint", default=None,
        help=f"zoo name (default: {DEFAULT_CHECKPOINT}), local folder as a path (./name) or hub id (owner/name)",
    )
    args = parser.parse_args(argv)

    from .energy import energy_report
    from .modeling.configuration_spiking_bert import MODEL_TYPE, is_spiking
    from .zoo import ChecksumError

    if any(not sentence.strip() for sentence in args.sentences):
        parser.error("sentences must not be empty")
    checkpoint = args.checkpoint or DEFAULT_CHECKPOINT
    try:
        model, source = _load(args.checkpoint)
    except KeyError as error:  # a KeyError's str() is its repr: show the message itself
        parser.error(f"--checkpoint {error.args[0]}")
    except (OSError, ValueError, ChecksumError) as error:
        parser.error(f"--checkpoint {checkpoint}: {error}")
    if not is_spiking(model):
        parser.error(
            f"--checkpoint {checkpoint} is a {type(model).__name__} ({model.config.model_type}); "
            f"this command classifies with SNN-BERT checkpoints (model_type {MODEL_TYPE})"
        )
    # the mask always goes in: sentences of different lengths are padded; long ones are cut to
    # what the model's position table holds
    batch = model.tokenizer(
        args.sentences, return_tensors="pt", padding=True, truncation=True, return_attention_mask=True,
        max_length=model.config.max_position_embeddings,
    )
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
