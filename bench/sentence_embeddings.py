"""What SNN-BERT keeps as a sentence embedder: STS-B dev scored zero-shot as a bi-encoder.

GPU batch 3 (``docs/accuracy.md``) left SNN-BERT at a constant on STS-B (Pearson 0.13) as a
cross-encoder: both sentences in one input, compared through attention. MiniLM-L6 (the
offline BERT) was trained as a sentence embedder: each sentence encoded alone, its token
states mean-pooled, two sentences compared by the cosine of their embeddings. This scores
each model that way, with no training: Pearson and Spearman correlation of ``cos(u, v)`` with
the gold similarity over the STS-B dev pairs. A model whose sentence embeddings keep the
meaning scores high here whatever it does as a cross-encoder.

``--models``: BERT or SNN-BERT checkpoints (folder, hub id or zoo name), scored as they are;
``--convert``: BERT checkpoints scored as the SNN-BERT converted from them with no training
(``finetune.py``'s individual-coding defaults: BPSN per channel, threshold 0.25, spikes
carrying it).

    python bench/sentence_embeddings.py                                   # MiniLM and its conversion
    python bench/sentence_embeddings.py --models <bert> /tmp/base --convert <bert> --out x.json

Writes ``bench/results/sentence_embeddings.json`` (``--out``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from sj_bert import SpikingBertModel, glue, offline_bert
from sj_bert.files import write_json
from sj_bert.modeling.configuration_spiking_bert import is_spiking
from sj_bert.modeling.modeling_spiking_bert import masked_mean
from sj_bert.timing import device_name
from sj_bert.zoo import load_pretrained, resolve_checkpoint

REPO = Path(__file__).resolve().parents[1]


def conversion_settings() -> dict:
    """``recipes/finetune.py``'s ``INDIVIDUAL_DEFAULTS`` without the pooler's setting (no pooler
    is read here): the SNN-BERT the recipe builds from an ANN BERT."""
    recipes = str(REPO / "recipes")
    if recipes not in sys.path:
        sys.path.insert(0, recipes)
    import finetune

    return {name: value for name, value in finetune.INDIVIDUAL_DEFAULTS.items() if name != "pooling"}


@torch.no_grad()
def embed(model, tokenizer, sentences: list[str], batch_size: int, max_length: int, device) -> torch.Tensor:
    """Mean of the last hidden state over each sentence's real tokens: ``[N, D]``."""
    out = []
    for i in range(0, len(sentences), batch_size):
        batch = tokenizer(sentences[i:i + batch_size], padding=True, truncation=True, max_length=max_length,
                          return_tensors="pt").to(device)
        out.append(masked_mean(model(**batch).last_hidden_state, batch["attention_mask"]))  # [B, D]
    return torch.cat(out).float().cpu()


def load_encoder(name: str, convert: bool):
    """``(tokenizer, encoder)``: the checkpoint's base model (BERT or SNN-BERT), or with
    ``convert`` the SNN-BERT converted from a BERT checkpoint."""
    import transformers

    what = "--convert" if convert else "--models"
    path = resolve_checkpoint(name, what)
    if convert and is_spiking(load_pretrained(transformers.AutoConfig, path, what)):
        raise ValueError(f"--convert {name}: already SNN-BERT; give it to --models, or give --convert a BERT checkpoint")
    tokenizer = load_pretrained(transformers.AutoTokenizer, path, what)
    model_class = SpikingBertModel if convert else transformers.AutoModel
    model = load_pretrained(model_class, path, what, dtype=torch.float32, **(conversion_settings() if convert else {}))
    return tokenizer, model


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=None,
                        help="checkpoints scored as they are (default: the offline MiniLM)")
    parser.add_argument("--convert", nargs="*", default=None,
                        help="BERT checkpoints scored as SNN-BERT converted from them (default: the offline MiniLM)")
    parser.add_argument("--data_dir", default=str(REPO.parent / "shared" / "data" / "glue"))
    parser.add_argument("--max_pairs", type=int, default=None, help="the first N dev pairs (default: all)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--max_length", type=int, default=128)
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "sentence_embeddings.json"))
    args = parser.parse_args(argv)
    if args.max_pairs is not None and args.max_pairs < 2:
        parser.error(f"--max_pairs must be at least 2 pairs (a correlation needs two), got {args.max_pairs}")
    if args.models is None and args.convert is None:
        args.models = args.convert = [offline_bert()]
    runs = [(name, False) for name in args.models or []] + [(name, True) for name in args.convert or []]
    if not runs:
        parser.error("nothing to score: give --models and/or --convert checkpoints")

    dev = glue.read_glue_file(Path(args.data_dir) / glue.task_to_dir("stsb") / "dev.tsv", "stsb",
                              require_labels=True)
    pairs = min(len(dev), args.max_pairs or len(dev))
    first, second = list(dev["sentence1"])[:pairs], list(dev["sentence2"])[:pairs]
    gold = list(dev["label"])[:pairs]
    result = {"bench": "sentence_embeddings", "task": "stsb", "split": "dev", "pairs": pairs,
              "device": device_name(torch.device(args.device)), "pooling": "mean over real tokens",
              "conversion": conversion_settings(), "rows": []}
    for name, convert in runs:
        tokenizer, model = load_encoder(name, convert)
        model.eval().to(args.device)
        u, v = (embed(model, tokenizer, sentences, args.batch_size, args.max_length, args.device)
                for sentences in (first, second))
        cosines = torch.nn.functional.cosine_similarity(u, v).tolist()
        metrics = glue.compute_metrics("stsb", cosines, gold)
        result["rows"].append({"model": name, "converted": convert, "spiking": is_spiking(model),
                               **metrics})
    print(f"STS-B dev, {pairs} pairs, zero-shot bi-encoder: cos(mean-pooled u, v) against the gold score")
    print(f"{'pearson':>9}{'spearman':>10}  model")
    for row in result["rows"]:
        print(f"{row['pearson']:>9.3f}{row['spearmanr']:>10.3f}  {row['model']}{' (converted)' if row['converted'] else ''}")
    write_json(args.out, result)
    return result


if __name__ == "__main__":
    main()
