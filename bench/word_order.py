"""How much SNN-BERT reads word order, beside its ANN twin: SST-2 or CoLA dev, as written and
with each sentence's words shuffled.

GPU batch 3 (``docs/accuracy.md``) found SNN-BERT at its majority class on CoLA, MRPC, STS-B,
RTE and WNLI, where its twin learned CoLA, MRPC and STS-B: the tasks that need syntax or a
word-by-word comparison of two sentences, where SST-2 can be read off the words alone. A model
that reads little order loses little when the order goes. For each model this counts, over the
dev sentences:

- ``correct``: right answers as written; ``correct_shuffled``: with the word pieces between
  ``[CLS]`` and the final ``[SEP]`` put in a random order (the same order for both models);
- ``unchanged``: sentences whose predicted class does not move when shuffled.

    python bench/word_order.py --ann /tmp/cpu1/ann                 # SNN: the zoo's sst2
    python bench/word_order.py --snn /tmp/runs/cola/individual --ann /tmp/runs/cola/ann --task cola

Writes ``bench/results/word_order.json`` (``--out``). A bag of words scores the same both ways.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from sj_bert import glue
from sj_bert.files import write_json
from sj_bert.timing import device_name
from sj_bert.zoo import load_checkpoint

REPO = Path(__file__).resolve().parents[1]
TASK_FOLDERS = {"sst2": "SST-2", "cola": "CoLA"}  # the single-sentence tasks


def shuffle_words(input_ids: torch.Tensor, attention_mask: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """``input_ids`` ``[B, L]`` with each row's real tokens between the first and the last
    (``[CLS]`` ... ``[SEP]``) in a random order drawn from ``generator``; padding stays."""
    shuffled = input_ids.clone()
    for row, n in enumerate(attention_mask.sum(-1).tolist()):
        order = torch.randperm(n - 2, generator=generator) + 1 if n > 2 else torch.arange(1, n - 1)
        shuffled[row, 1:n - 1] = input_ids[row, order]
    return shuffled


@torch.no_grad()
def predictions(model, batches: list[dict]) -> list[int]:
    return [p for batch in batches for p in model(**batch).logits.argmax(-1).tolist()]


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--snn", default="sst2", help="SNN-BERT checkpoint: zoo name, folder or hub id")
    parser.add_argument("--ann", required=True, help="its ANN twin (a fine-tuned BERT folder)")
    parser.add_argument("--task", choices=sorted(TASK_FOLDERS), default="sst2")
    parser.add_argument("--data_dir", default=str(REPO.parent / "shared" / "data" / "glue"))
    parser.add_argument("--max_sentences", type=int, default=None, help="the first N dev sentences (default: all)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the shuffles")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--max_length", type=int, default=128)
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "word_order.json"))
    args = parser.parse_args(argv)
    if args.max_sentences is not None and args.max_sentences < 1:
        parser.error(f"--max_sentences must be a positive number of sentences, got {args.max_sentences}")

    dev = glue.read_glue_file(Path(args.data_dir) / TASK_FOLDERS[args.task] / "dev.tsv", args.task,
                              require_labels=True)
    sentences = list(dev["sentence"])[: args.max_sentences]
    labels = list(dev["label"])[: len(sentences)]
    models = {"snn": args.snn, "ann": args.ann}
    result = {"bench": "word_order", "task": args.task, "sentences": len(sentences), "seed": args.seed,
              "device": device_name(torch.device(args.device)),
              "models": models, "counts": {}}
    for kind, name in models.items():
        tokenizer, model = load_checkpoint(name, f"--{kind}")
        model.eval().to(args.device)
        generator = torch.Generator().manual_seed(args.seed)  # both models see the same shuffles
        written, shuffled = [], []
        for i in range(0, len(sentences), args.batch_size):
            batch = dict(tokenizer(sentences[i:i + args.batch_size], padding=True, truncation=True,
                                   max_length=args.max_length, return_tensors="pt"))  # shuffled on the CPU
            written.append(batch)
            shuffled.append({**batch, "input_ids": shuffle_words(batch["input_ids"], batch["attention_mask"],
                                                                 generator)})
        as_written, when_shuffled = (predictions(model, [{k: v.to(args.device) for k, v in b.items()} for b in batches])
                                     for batches in (written, shuffled))
        result["counts"][kind] = {
            "correct": sum(p == y for p, y in zip(as_written, labels)),
            "correct_shuffled": sum(p == y for p, y in zip(when_shuffled, labels)),
            "unchanged": sum(a == b for a, b in zip(as_written, when_shuffled)),
        }
    print(f"word order, {args.task} dev ({len(sentences)} sentences, shuffle seed {args.seed})")
    print(f"{'model':<6}{'correct':>10}{'shuffled':>10}{'lost':>8}{'unchanged':>12}")
    for kind, c in result["counts"].items():
        print(f"{kind:<6}{c['correct']:>10}{c['correct_shuffled']:>10}{c['correct'] - c['correct_shuffled']:>8}"
              f"{c['unchanged']:>12}")
    write_json(args.out, result)
    return result


if __name__ == "__main__":
    main()
