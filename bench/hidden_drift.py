"""How far SNN-BERT's hidden states drift from the ANN's, layer by layer, right after conversion.

Both models hold the same MiniLM weights; the script feeds real SST-2 dev sentences and prints,
per layer, the mean cosine similarity between the SNN's and the ANN's hidden state at each real
token, for 0/1 spikes and for spikes that carry their channel's threshold
(``spike_amplitude``). Writes ``bench/results/hidden_drift.json``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from transformers import AutoTokenizer, BertModel

from sj_bert import SpikingBertModel, offline_bert
from sj_bert.glue import read_glue_file
from sj_bert.files import write_json

REPO = Path(__file__).resolve().parents[1]


@torch.no_grad()
def layer_cosines(snn, ann, batch) -> list[float]:
    real = batch["attention_mask"].bool()
    snn_states = snn(**batch, output_hidden_states=True).hidden_states
    ann_states = ann(**batch, output_hidden_states=True).hidden_states
    return [
        torch.nn.functional.cosine_similarity(s[real], a[real], dim=-1).mean().item()
        for s, a in zip(snn_states, ann_states)
    ]


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", default=str(REPO.parent / "shared" / "data" / "glue"))
    parser.add_argument("--sentences", type=int, default=64)
    parser.add_argument("--v_threshold", type=float, default=0.25)
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "hidden_drift.json"))
    args = parser.parse_args(argv)
    path = offline_bert()
    tokenizer = AutoTokenizer.from_pretrained(path)
    sentences = read_glue_file(Path(args.data_dir) / "SST-2" / "dev.tsv", "sst2").select(range(args.sentences))
    batch = tokenizer(list(sentences["sentence"]), padding=True, truncation=True,
                      max_length=64, return_tensors="pt")
    ann = BertModel.from_pretrained(path).eval()
    rows = {}
    for amplitude in ("unit", "threshold"):
        snn = SpikingBertModel.from_pretrained(
            path, per_channel=True, v_threshold=args.v_threshold, pooling="mean", spike_amplitude=amplitude
        ).eval()
        rows[amplitude] = layer_cosines(snn, ann, batch)
    print(f"cosine(SNN hidden state, ANN hidden state) per layer, v_threshold={args.v_threshold}, "
          f"{args.sentences} SST-2 dev sentences")
    print(f"{'layer':<8}" + "".join(f"{name + ' spikes':>18}" for name in rows))
    for layer in range(len(rows["unit"])):
        print(f"{layer:<8}" + "".join(f"{rows[name][layer]:>18.3f}" for name in rows))
    result = {"bench": "hidden_drift", "model": path, "v_threshold": args.v_threshold,
              "sentences": args.sentences, "cosine_by_layer": rows}
    write_json(args.out, result)
    return result


if __name__ == "__main__":
    main()
