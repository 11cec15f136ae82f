"""How sharply SNN-BERT attends, beside its ANN twin, by sentence length.

SNN-BERT's SST-2 gap to its twin grows with length (``docs/accuracy.md``, "GPU batch 1"): 4-5.5
points under 30 tokens, 10-16 from 30 on. One candidate is attention: the query and key
projections are fed by spikes, and a softmax over noisier scores spreads its weight over more
keys, which costs more where there are more keys. This measures it on SST-2 dev, for both
models, per encoder layer and length bucket (tokenized length, individual coding's T):

- ``entropy``: a query's attention entropy over the real keys, divided by ``log n`` (n real
  keys): 0 is one key, 1 is uniform; mean over heads, real queries and sentences;
- ``top``: the largest weight a query gives one key (same mean);
- ``distance``: the mean |query - key| position under the attention, divided by n (how local
  the attention is; BPSN's leaky integration mixes neighbouring tokens before Q and K);
- ``spread``: the standard deviation of a query's scaled scores ``q.k / sqrt(d)`` over the real
  keys (read off the maps: ``log p`` differs from the score by a constant per query); near 0,
  the softmax cannot prefer any key.

    python bench/attention_focus.py --ann /tmp/cpu1/ann      # SNN: the zoo's sst2
    python bench/attention_focus.py --snn /tmp/runs/x --ann /tmp/runs/ann --buckets 10 20 30 45

Writes ``bench/results/attention_focus.json``. Sentences with one real token are skipped.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch

from sj_bert import glue
from sj_bert.files import write_json
from sj_bert.zoo import load_checkpoint

REPO = Path(__file__).resolve().parents[1]
MEASURES = ("entropy", "top", "distance", "spread")


def focus(maps: torch.Tensor, n: int) -> dict[str, float]:
    """The measures (module docstring) of one sentence's attention maps ``[H, n, n]``
    (real queries and keys only)."""
    p = maps.float().clamp_min(1e-12)
    entropy = -(p * p.log()).sum(-1) / math.log(n)  # [H, n]
    positions = torch.arange(n, dtype=torch.float32)
    distance = (maps.float() * (positions[None, :] - positions[:, None]).abs()).sum(-1) / n
    return {"entropy": entropy.mean().item(), "top": maps.float().amax(-1).mean().item(),
            "distance": distance.mean().item(), "spread": p.log().std(-1).mean().item()}


@torch.no_grad()
def measure(model, batches: list[dict], edges: list[int]) -> dict:
    """``{bucket: {"sentences": k, "layers": [{measure: mean}, ...]}}`` over ``batches``."""
    sums: dict[str, list[dict[str, float]]] = {}
    counts: dict[str, int] = {}
    for batch in batches:
        maps = model(**batch, output_attentions=True).attentions  # per layer [B, H, L, L]
        for b, n in enumerate(batch["attention_mask"].sum(-1).tolist()):
            if n < 2:
                continue
            real = batch["attention_mask"][b].bool()
            name = glue.length_bucket(n, edges)
            layers = sums.setdefault(name, [dict.fromkeys(MEASURES, 0.0) for _ in maps])
            counts[name] = counts.get(name, 0) + 1
            for layer, layer_maps in zip(layers, maps):
                one = layer_maps[b][:, real][:, :, real]  # [H, n, n]
                for key, value in focus(one, n).items():
                    layer[key] += value
    order = [name for name in (glue.length_bucket(low, edges) for low in [0, *edges]) if name in sums]
    return {name: {"sentences": counts[name],
                   "layers": [{k: v / counts[name] for k, v in layer.items()} for layer in sums[name]]}
            for name in order}


def batches_of(tokenizer, sentences: list[str], batch_size: int, max_length: int) -> list[dict]:
    """Sentences sorted by length (little padding), tokenized in batches."""
    order = sorted(sentences, key=lambda s: len(tokenizer(s)["input_ids"]))
    return [dict(tokenizer(order[i:i + batch_size], padding=True, truncation=True, max_length=max_length,
                           return_tensors="pt")) for i in range(0, len(order), batch_size)]


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--snn", default="sst2", help="SNN-BERT checkpoint: zoo name, folder or hub id")
    parser.add_argument("--ann", required=True, help="its ANN twin (a fine-tuned BERT folder)")
    parser.add_argument("--data_dir", default=str(REPO.parent / "shared" / "data" / "glue"))
    parser.add_argument("--buckets", type=int, nargs="+", default=[10, 20, 30, 45], metavar="TOKENS")
    parser.add_argument("--max_sentences", type=int, default=None, help="the first N dev sentences (default: all)")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--max_length", type=int, default=128)
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "attention_focus.json"))
    args = parser.parse_args(argv)
    try:
        glue.check_length_edges(args.buckets, "--buckets")
    except ValueError as error:
        parser.error(str(error))
    dev = glue.read_glue_file(Path(args.data_dir) / "SST-2" / "dev.tsv", "sst2")
    sentences = list(dev["sentence"])[: args.max_sentences]
    models = {"snn": args.snn, "ann": args.ann}
    result = {"bench": "attention_focus", "task": "sst2", "sentences": len(sentences), "buckets": args.buckets,
              "models": models, "measures": {}}
    for kind, name in models.items():
        # eager attention: SDPA returns no maps
        tokenizer, model = load_checkpoint(name, f"--{kind}", attn_implementation="eager")
        model.eval()
        result["measures"][kind] = measure(model, batches_of(tokenizer, sentences, args.batch_size, args.max_length),
                                           args.buckets)
    print(f"attention by length, SST-2 dev ({len(sentences)} sentences); per bucket: SNN / ANN, mean over layers")
    print(f"{'bucket':<14}{'sentences':>10}" + "".join(f"{m:>22}" for m in MEASURES))
    for bucket, snn_row in result["measures"]["snn"].items():
        ann_row = result["measures"]["ann"].get(bucket)
        if ann_row is None:
            continue
        cells = []
        for m in MEASURES:
            snn_mean = sum(layer[m] for layer in snn_row["layers"]) / len(snn_row["layers"])
            ann_mean = sum(layer[m] for layer in ann_row["layers"]) / len(ann_row["layers"])
            cells.append(f"{snn_mean:>10.3f} / {ann_mean:<9.3f}")
        print(f"{bucket:<14}{snn_row['sentences']:>10}" + "".join(f"{c:>22}" for c in cells))
    write_json(args.out, result)
    return result


if __name__ == "__main__":
    main()
