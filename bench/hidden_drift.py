"""How far SNN-BERT's hidden states drift from the ANN's, layer by layer, right after conversion.

Both models hold the same weights (MiniLM, or with ``--model`` a fine-tuned ANN twin); the
script feeds real SST-2 dev sentences and prints, per layer, the mean cosine similarity between
the SNN's and the ANN's hidden state at each real token, for 0/1 spikes (``unit``), for spikes
that carry their channel's threshold (``threshold``, ``spike_amplitude``) and with ``--ternary``
for ternary spikes carrying it (``ternary``: -1 below minus the threshold too), at each
``--v_threshold``. With ``--model`` a sequence classifier (a twin fine-tuned on SST-2), it also
gives each model's dev accuracy on those sentences: what conversion alone keeps of the twin's
function. Writes ``bench/results/hidden_drift.json``.

    python bench/hidden_drift.py                                   # MiniLM, threshold 0.25
    python bench/hidden_drift.py --model outputs/sst2-ann --sentences 256 --v_threshold 0.1 0.25 0.5 1 \\
        --ternary --out bench/results/hidden_drift_twin.json
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification, AutoTokenizer

from sj_bert import SpikingBertForSequenceClassification, SpikingBertModel, offline_bert
from sj_bert.files import write_json
from sj_bert.glue import read_glue_file

REPO = Path(__file__).resolve().parents[1]


@torch.no_grad()
def layer_cosines(snn, ann, batch) -> tuple[list[float], object, object]:
    """Per layer, the mean cosine of the two models' hidden states over real tokens; and both
    models' outputs (logits, or the last hidden state for a ``BertModel``)."""
    real = batch["attention_mask"].bool()
    snn_out = snn(**batch, output_hidden_states=True)
    ann_out = ann(**batch, output_hidden_states=True)
    cosines = [
        torch.nn.functional.cosine_similarity(s[real], a[real], dim=-1).mean().item()
        for s, a in zip(snn_out.hidden_states, ann_out.hidden_states)
    ]
    return cosines, snn_out, ann_out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="the ANN: a BERT folder (default: the offline MiniLM)")
    parser.add_argument("--data_dir", default=str(REPO.parent / "shared" / "data" / "glue"))
    parser.add_argument("--sentences", type=int, default=64)
    parser.add_argument("--max_length", type=int, default=64, help="tokens per sentence (SST-2 dev's longest is 55 with [CLS] and [SEP])")
    parser.add_argument("--v_threshold", type=float, nargs="+", default=[0.25])
    parser.add_argument("--ternary", action="store_true", help="also ternary spikes carrying the threshold")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "hidden_drift.json"))
    args = parser.parse_args(argv)
    path = args.model or offline_bert()
    # a fine-tuned twin is scored as the classifier it is; MiniLM as the encoder
    classifier = any("SequenceClassification" in a for a in AutoConfig.from_pretrained(path).architectures or [])
    tokenizer = AutoTokenizer.from_pretrained(path)
    dev = read_glue_file(Path(args.data_dir) / "SST-2" / "dev.tsv", "sst2").select(range(args.sentences))
    batch = dict(tokenizer(list(dev["sentence"]), padding=True, truncation=True, max_length=args.max_length,
                           return_tensors="pt"))
    labels = torch.tensor(dev["label"])
    ann = (AutoModelForSequenceClassification if classifier else AutoModel).from_pretrained(path).eval()
    snn_class = SpikingBertForSequenceClassification if classifier else SpikingBertModel
    kinds = {"unit": dict(spike_amplitude="unit"), "threshold": dict(spike_amplitude="threshold")}
    if args.ternary:
        kinds["ternary"] = dict(spike_amplitude="threshold", ternary_spikes=True)
    several = len(args.v_threshold) > 1
    rows, accuracy = {}, {}
    for threshold in args.v_threshold:
        for kind, settings in kinds.items():
            name = f"{kind}@{threshold:g}" if several else kind
            snn = snn_class.from_pretrained(path, per_channel=True, v_threshold=threshold, pooling="cls" if classifier
                                            else "mean", **settings).eval()
            rows[name], snn_out, ann_out = layer_cosines(snn, ann, batch)
            if classifier:
                accuracy[name] = (snn_out.logits.argmax(-1) == labels).float().mean().item()
                accuracy["ann"] = (ann_out.logits.argmax(-1) == labels).float().mean().item()
    print(f"cosine(SNN hidden state, ANN hidden state) per layer right after conversion, {path}, "
          f"{args.sentences} SST-2 dev sentences")
    print(f"{'layer':<8}" + "".join(f"{name:>16}" for name in rows))
    for layer in range(len(next(iter(rows.values())))):
        print(f"{layer:<8}" + "".join(f"{rows[name][layer]:>16.3f}" for name in rows))
    if accuracy:
        print(f"{'accuracy':<8}" + "".join(f"{accuracy[name]:>16.3f}" for name in rows) + f"   (ANN {accuracy['ann']:.3f})")
    result = {"bench": "hidden_drift", "model": path, "v_threshold": args.v_threshold if several else args.v_threshold[0],
              "sentences": args.sentences, "cosine_by_layer": rows}
    if accuracy:
        result["accuracy"] = accuracy
    write_json(args.out, result)
    return result


if __name__ == "__main__":
    main()
