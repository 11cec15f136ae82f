"""How far SNN-BERT's hidden states drift from the ANN's, layer by layer, right after conversion.

Both models hold the same weights (MiniLM, or with ``--model`` a fine-tuned ANN twin); the
script feeds real SST-2 dev sentences and prints, per layer, the mean cosine similarity between
the SNN's and the ANN's hidden state at each real token, for 0/1 spikes (``unit``), for spikes
that carry their channel's threshold (``threshold``, ``spike_amplitude``) and with ``--ternary``
for ternary spikes carrying it (``ternary``: -1 below minus the threshold too), at each
``--v_threshold`` and each BPSN decay initialisation ``--tau`` (``lam = 1 - 1/tau``; near 1, a
neuron hardly mixes a token with its neighbours). With ``--model`` a sequence classifier (a
twin fine-tuned on SST-2), it also gives each model's dev accuracy on those sentences: what
conversion alone keeps of the twin's function. Writes ``bench/results/hidden_drift.json``.

With ``--calibrate N`` it also asks how much of the drift is the spikes' scale: on the first
``N`` SST-2 train sentences, each neuron in turn (in forward order, on the SNN's own forward),
it fits per channel the affine map ``g s + o`` from the neuron's spikes ``s`` to the value the
ANN's matrix reads there (the neuron's input; after GELU for ``intermediate_act_fn``), the
least-squares fit, and folds it into the matrices that read those spikes (``W diag(g)``,
bias ``+ W o``: still accumulates of spikes), as ``sj_bert.conversion.calibrate_spike_maps``
does. It reports each neuron's ``fidelity``, the share of that value's variance the fit
explains (R^2, averaged over channels; a silent channel explains none), and the cosines and
accuracy of the calibrated SNN (``<kind>+cal``).
``--save_calibrated DIR`` keeps the calibrated ``threshold`` SNN, as a fine-tuning start.

With ``--sites`` it asks which neurons the drift comes from: for each kind of neuron (the
attention block's input, the attention output's, the FFN's input, the FFN's activation) a row
``only:<kind>`` (``threshold`` spikes) where that kind alone fires and every other neuron
passes on what the ANN's matrix would read (its input; GELU of it in the FFN's activation).

    python bench/hidden_drift.py                                   # MiniLM, threshold 0.25
    python bench/hidden_drift.py --model outputs/sst2-ann --sentences 256 --v_threshold 0.1 0.25 0.5 1 \\
        --ternary --out bench/results/hidden_drift_twin.json
    python bench/hidden_drift.py --model outputs/sst2-ann --sentences 872 --ternary --calibrate 512 \\
        --save_calibrated outputs/sst2-snn-calibrated --out bench/results/hidden_drift_calibrated.json
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import torch
from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification, AutoTokenizer

from sj_bert import SpikingBertForSequenceClassification, SpikingBertModel, offline_bert
from sj_bert.conversion import NEURON_KINDS, calibrate_spike_maps, kind_of, real_valued, spike_fed_units
from sj_bert.files import move_into, write_json
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


@contextlib.contextmanager
def only_spiking(snn, kind: str) -> Iterator[None]:
    """Inside the block, neurons of other kinds than ``kind`` pass on what the ANN's matrix
    would read there (zero at padding), instead of spikes."""
    with real_valued(snn, [other for other in NEURON_KINDS if other != kind]):
        yield


def save_model(model, tokenizer, folder: str) -> None:
    """``save_pretrained`` into ``folder`` by way of a staging folder beside it, so that an
    interrupted save leaves no half-written model there."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent)
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    folder.mkdir(exist_ok=True)
    move_into(staging, folder)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="the ANN: a BERT folder (default: the offline MiniLM)")
    parser.add_argument("--data_dir", default=str(REPO.parent / "shared" / "data" / "glue"))
    parser.add_argument("--sentences", type=int, default=64)
    parser.add_argument("--max_length", type=int, default=64, help="tokens per sentence (SST-2 dev's longest is 55 with [CLS] and [SEP])")
    parser.add_argument("--v_threshold", type=float, nargs="+", default=[0.25])
    parser.add_argument("--tau", type=float, nargs="+", default=[2.0],
                        help="BPSN decay initialisations (lam = 1 - 1/tau) to convert with; the model's default is 2")
    parser.add_argument("--ternary", action="store_true", help="also ternary spikes carrying the threshold")
    parser.add_argument("--calibrate", type=int, default=0, metavar="N",
                        help="also fit and fold each neuron's affine spike map on N SST-2 train sentences")
    parser.add_argument("--save_calibrated", default=None, metavar="DIR",
                        help="save the calibrated 'threshold' SNN here (with --calibrate, one --v_threshold)")
    parser.add_argument("--sites", action="store_true",
                        help="also each kind of neuron alone firing (threshold spikes, the first --v_threshold)")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "hidden_drift.json"))
    args = parser.parse_args(argv)
    if any(not tau > 1 for tau in args.tau):
        raise ValueError(f"--tau: expected decay time constants > 1, got {args.tau}")
    if args.calibrate < 0:
        raise ValueError(f"--calibrate must be a number of sentences >= 0, got {args.calibrate}")
    if args.save_calibrated and not (args.calibrate and len(args.v_threshold) == 1):
        raise ValueError("--save_calibrated needs --calibrate N and exactly one --v_threshold")
    path = args.model or offline_bert()
    # a fine-tuned twin is scored as the classifier it is; MiniLM as the encoder
    classifier = any("SequenceClassification" in a for a in AutoConfig.from_pretrained(path).architectures or [])
    tokenizer = AutoTokenizer.from_pretrained(path)
    dev = read_glue_file(Path(args.data_dir) / "SST-2" / "dev.tsv", "sst2").select(range(args.sentences))
    batch = dict(tokenizer(list(dev["sentence"]), padding=True, truncation=True, max_length=args.max_length,
                           return_tensors="pt"))
    labels = torch.tensor(dev["label"])
    calibration = []
    if args.calibrate:
        train = read_glue_file(Path(args.data_dir) / "SST-2" / "train.tsv", "sst2")
        train = train.select(range(min(args.calibrate, len(train))))
        calibration = [dict(tokenizer(list(train["sentence"][i:i + 64]), padding=True, truncation=True,
                                      max_length=args.max_length, return_tensors="pt"))
                       for i in range(0, len(train), 64)]
    ann = (AutoModelForSequenceClassification if classifier else AutoModel).from_pretrained(path).eval()
    snn_class = SpikingBertForSequenceClassification if classifier else SpikingBertModel
    kinds = {"unit": dict(spike_amplitude="unit"), "threshold": dict(spike_amplitude="threshold")}
    if args.ternary:
        kinds["ternary"] = dict(spike_amplitude="threshold", ternary_spikes=True)
    several, several_taus = len(args.v_threshold) > 1, len(args.tau) > 1
    rows, accuracy, fidelity = {}, {}, {}
    for threshold, tau in itertools.product(args.v_threshold, args.tau):
        for kind, settings in kinds.items():
            name = (f"{kind}@{threshold:g}" if several else kind) + (f"/tau{tau:g}" if several_taus else "")
            snn = snn_class.from_pretrained(path, per_channel=True, v_threshold=threshold, tau=tau,
                                            pooling="cls" if classifier else "mean", **settings).eval()
            for calibrated in (False, True) if calibration else (False,):
                if calibrated:
                    name += "+cal"
                    fidelity[name] = calibrate_spike_maps(snn, calibration)
                    if kind == "threshold" and args.save_calibrated:
                        save_model(snn, tokenizer, args.save_calibrated)
                rows[name], snn_out, ann_out = layer_cosines(snn, ann, batch)
                if classifier:
                    accuracy[name] = (snn_out.logits.argmax(-1) == labels).float().mean().item()
                    accuracy["ann"] = (ann_out.logits.argmax(-1) == labels).float().mean().item()
    if args.sites:
        snn = snn_class.from_pretrained(path, per_channel=True, v_threshold=args.v_threshold[0],
                                        pooling="cls" if classifier else "mean", **kinds["threshold"]).eval()
        for kind in dict.fromkeys(kind_of(name) for name, *_ in spike_fed_units(snn)):
            with only_spiking(snn, kind):
                rows[f"only:{kind}"], snn_out, _ = layer_cosines(snn, ann, batch)
            if classifier:
                accuracy[f"only:{kind}"] = (snn_out.logits.argmax(-1) == labels).float().mean().item()
    print(f"cosine(SNN hidden state, ANN hidden state) per layer right after conversion, {path}, "
          f"{args.sentences} SST-2 dev sentences")
    width = max(16, *(len(name) + 2 for name in rows))
    print(f"{'layer':<8}" + "".join(f"{name:>{width}}" for name in rows))
    for layer in range(len(next(iter(rows.values())))):
        print(f"{layer:<8}" + "".join(f"{rows[name][layer]:>{width}.3f}" for name in rows))
    if accuracy:
        print(f"{'accuracy':<8}" + "".join(f"{accuracy[name]:>{width}.3f}" for name in rows) + f"   (ANN {accuracy['ann']:.3f})")
    result = {"bench": "hidden_drift", "model": path, "v_threshold": args.v_threshold if several else args.v_threshold[0],
              "tau": args.tau if several_taus else args.tau[0], "sentences": args.sentences, "cosine_by_layer": rows}
    if accuracy:
        result["accuracy"] = accuracy
    if fidelity:
        print("fidelity (R^2 of each neuron's affine spike map, mean over channels), by kind of neuron:")
        for name, by_neuron in fidelity.items():
            by_kind = {}
            for neuron, value in by_neuron.items():
                by_kind.setdefault(kind_of(neuron), []).append(value)
            print(f"  {name:<16}" + "  ".join(f"{kind} {sum(v) / len(v):.3f}" for kind, v in by_kind.items()))
        result["calibration_sentences"] = args.calibrate
        result["fidelity"] = fidelity
    write_json(args.out, result)
    return result


if __name__ == "__main__":
    main()
