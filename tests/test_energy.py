"""Energy report against hand counts on a tiny config with forced spikes."""

import json
from pathlib import Path

import pytest
import torch
from spikingjelly.activation_based.neuron import BaseNode

from sj_bert.energy import E_AC_PJ, E_MAC_PJ, energy_report, plot_firing_rates

D, I, H, LABELS = 8, 16, 2, 3
LENGTHS = [3, 2]  # two sentences, right-padded to L = 4
SHAPE = dict(hidden_size=D, intermediate_size=I, num_attention_heads=H, num_hidden_layers=1, num_labels=LABELS)


def force_half_spikes(model, mask: torch.Tensor, coding: str) -> None:
    """Every neuron fires on its even channels at every real position (and step): a
    neuron with C channels emits C / 2 spikes per real token per step."""

    def hook(module, args, out):
        spikes = torch.zeros_like(out)
        spikes[..., ::2] = 1
        real = mask.t()[..., None] if coding == "individual" else mask[None, ..., None]
        return spikes * real

    for module in model.modules():
        if isinstance(module, BaseNode):
            module.register_forward_hook(hook)


def batch():
    ids = torch.tensor([[5, 6, 7, 0], [8, 9, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    return ids, mask


@pytest.mark.parametrize("coding, steps", [("individual", 1), ("repeat", 3)])
def test_hand_count_softmax_attention(coding, steps, tiny):
    model = tiny.model(coding=coding, time_steps=3, **SHAPE)
    ids, mask = batch()
    force_half_spikes(model, mask, coding)
    report = energy_report(model, ids, mask)

    tokens = sum(LENGTHS)  # 5 real tokens; padding never counts
    squares = sum(n * n for n in LENGTHS)  # 9 + 4 query-key pairs
    # spike-fed matrices: nnz(input) x out_features, every step
    qkv = 3 * (tokens * steps * D // 2) * D
    attention_out = (tokens * steps * D // 2) * D
    ffn_in = (tokens * steps * D // 2) * I
    ffn_out = (tokens * steps * I // 2) * D
    sops = qkv + attention_out + ffn_in + ffn_out
    # real-fed: softmax attention (QK^T and AV, every step), pooler and classifier per sample
    attention = 2 * squares * D * steps
    heads = len(LENGTHS) * (D * D + D * LABELS)
    assert report.sops == sops
    assert report.macs == attention + heads
    assert report.steps == steps and report.tokens == tokens and report.batch_size == 2
    by_name = {op.name: op for op in report.ops}
    assert by_name["bert.encoder.layer.0.intermediate.dense"].sops == ffn_in
    assert by_name["bert.encoder.layer.0.output.dense"].sops == ffn_out
    assert by_name["bert.encoder.layer.0.attention.self (QK^T, AV)"].macs == attention
    assert not by_name["bert.pooler.dense"].spike_fed and by_name["bert.pooler.dense"].macs == 2 * D * D

    # every neuron at exactly 50 %; per position: two samples at 0-1, one at 2, none at 3
    assert [n.firing_rate for n in report.neurons] == [0.5] * 4
    assert [n.channels for n in report.neurons] == [D, D, D, I]
    rates = report.neurons[0].by_position
    assert rates == [0.5, 0.5, 0.5, None]
    assert report.other == {
        "layernorm_elements": tokens * D + 2 * tokens * steps * D,  # embeddings once, two per layer
        "softmax_elements": H * squares * steps,
        "neuron_updates": tokens * steps * (3 * D + I),
    }
    energy = (sops * E_AC_PJ + (attention + heads) * E_MAC_PJ) / 2 * 1e-9
    assert report.energy_per_sample_mj == pytest.approx(energy, rel=1e-12)

    # the ANN twin: the same matrices dense, every real token once, no synaptic ops
    ann = report.ann
    assert ann.sops == 0 and ann.neurons == []
    assert ann.macs == tokens * (4 * D * D + 2 * D * I) + 2 * squares * D + heads
    assert ann.other == {"layernorm_elements": 3 * tokens * D, "softmax_elements": H * squares,
                         "gelu_elements": tokens * I}


def test_hand_count_spiking_attention(tiny):
    """Spiking Q K^T: each Q spike adds one K column per real key; scores x V: each V spike
    adds one score column per real query."""
    model = tiny.model(attention="spiking", **SHAPE)
    ids, mask = batch()
    force_half_spikes(model, mask, "individual")
    report = energy_report(model, ids, mask)
    per_token = D // 2  # Q (and V) spikes per real token
    attention = 2 * sum(n * per_token * n for n in LENGTHS)
    op = next(op for op in report.ops if op.kind == "attention")
    assert op.spike_fed and (op.sops, op.macs) == (attention, 0)
    tokens = sum(LENGTHS)
    linears = 3 * tokens * per_token * D + tokens * per_token * D + tokens * per_token * I + tokens * (I // 2) * D
    assert report.sops == linears + attention
    assert report.macs == len(LENGTHS) * (D * D + D * LABELS)
    assert report.other["softmax_elements"] == 0 and len(report.neurons) == 7


def test_everything_fires_costs_the_ann_linears(tiny):
    """With a threshold far below any potential every real position spikes (padding
    never): the synaptic count of each encoder matrix equals its dense MAC count."""
    model = tiny.model(v_threshold=-1e4, spike_amplitude="unit", **SHAPE)
    ids, mask = batch()
    report = energy_report(model, ids, mask)
    assert report.firing_rate == 1.0
    encoder = [op for op in report.ops if op.kind == "linear" and ".encoder." in op.name]
    twins = {op.name: op.macs for op in report.ann.ops}
    assert len(encoder) == 6 and all(op.sops == twins[op.name] for op in encoder)


@pytest.mark.parametrize("coding", ["individual", "repeat"])
def test_synaptic_ops_agree_with_spikingjelly_op_counter(coding, tiny):
    """With natural spikes and softmax attention, SpikingJelly's SynOpCounter (aten-level,
    binary inputs of every matmul) sees exactly the synaptic operations the hooks count.
    SynOpCounter knows 0/1 spikes only, hence unit amplitude."""
    from spikingjelly.activation_based.op_counter import DispatchCounterMode, SynOpCounter

    model = tiny.model(coding=coding, spike_amplitude="unit")
    ids, mask = tiny.padded([7, 4, 1, 9])
    report = energy_report(model, ids, mask)
    counter = SynOpCounter()
    with torch.no_grad(), DispatchCounterMode([counter]):
        model(ids, attention_mask=mask)
    assert 0 < report.firing_rate < 1
    assert report.sops == counter.get_total()


def test_report_serialises_formats_and_plots(tmp_path, tiny):
    model = tiny.model(**SHAPE).train()
    ids, mask = batch()
    report = energy_report(model, ids, mask)
    assert model.training  # its mode is restored
    data = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert data["ann"]["sops"] == 0 and data["energy_per_sample_mj"] == report.energy_per_sample_mj
    assert len(data["neurons"]) == 4 and "firing_rate" in data["neurons"][0]
    text = report.format()
    assert "synaptic ops (AC)" in text and "energy (mJ, 45 nm)" in text and "not in the energy" in text
    png = plot_firing_rates(report, str(tmp_path / "rates.png"))
    assert Path(png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(TypeError, match="SpikingBertModel or SpikingBertForSequenceClassification"):
        energy_report(torch.nn.Linear(2, 2), ids, mask)


def test_threshold_amplitude_spikes_still_count_as_accumulates(tiny):
    """Spikes that carry their channel's threshold (a scale the weights absorb) are still
    synaptic input: encoder matrices cost accumulates only, as many as with 0/1 spikes."""
    ids, mask = tiny.padded([7, 4, 1, 9])
    reports = {}
    for amplitude in ("threshold", "unit"):
        torch.manual_seed(0)
        model = tiny.model(v_threshold=0.5, spike_amplitude=amplitude)
        reports[amplitude] = energy_report(model, ids, mask)
    scaled = reports["threshold"]
    encoder = [op for op in scaled.ops if op.kind == "linear" and ".encoder." in op.name]
    assert encoder and all(op.spike_fed and op.macs == 0 for op in encoder)
    assert 0 < scaled.firing_rate < 1
    first = {op.name: op.sops for op in reports["unit"].ops}
    # the first layer's Q/K/V see the same spikes whatever their amplitude
    assert all(first[op.name] == op.sops for op in encoder if "layer.0.attention.self" in op.name)


def test_ternary_spikes_count_as_accumulates(tiny):
    """A -1 spike costs the next matrix a subtraction: it counts as a synaptic operation and
    as firing, like a +1 spike; the layer stays spike-fed."""
    model = tiny.model(coding="individual", ternary_spikes=True, v_threshold=0.05, **SHAPE)
    ids, mask = batch()
    seen = []

    def record(module, args, out):
        seen.append(out.detach())

    node = model.bert.encoder.layer[0].intermediate.neuron
    handle = node.register_forward_hook(record)
    report = energy_report(model, ids, mask)
    handle.remove()
    spikes = seen[0]  # [T, B, D], real positions only count
    real = mask.t().bool()[..., None]
    assert (spikes[real.expand_as(spikes)] < 0).any(), "the case fires -1 spikes"
    by_name = {op.name: op for op in report.ops}
    dense = by_name["bert.encoder.layer.0.intermediate.dense"]
    assert dense.spike_fed and dense.sops == int(((spikes != 0) & real).sum()) * I
    stats = next(n for n in report.neurons if n.name.endswith("layer.0.intermediate.neuron"))
    assert stats.spikes == int(((spikes != 0) & real).sum())


def test_a_pair_costs_its_two_sentences_alone_plus_the_head(tiny):
    """``pair_energy_report`` of a bi-encoder: the synaptic and dense operations, spikes and
    neuron updates of each sentence encoded alone, summed, plus the head's MACs on
    ``[u, v, |u - v|, u * v]``; per sample is per pair."""
    from sj_bert import SpikingBertBiEncoder
    from sj_bert.energy import energy_on_dataset, pair_energy_report
    from sj_bert.modeling.modeling_bi_encoder import SpikingBertBiEncoderConfig

    torch.manual_seed(0)
    config = {k: v for k, v in tiny.config(**SHAPE).to_dict().items() if k not in ("id2label", "label2id")}
    model = SpikingBertBiEncoder(SpikingBertBiEncoderConfig(**config, num_labels=LABELS)).eval()
    ids_a, mask_a = tiny.padded([3, 5], seed=1)
    ids_b, mask_b = tiny.padded([6, 1], seed=2)
    pair = pair_energy_report(model, ids_a, mask_a, ids_b, mask_b)
    alone = [energy_report(model.bert, ids[i : i + 1, : int(mask[i].sum())])
             for ids, mask in ((ids_a, mask_a), (ids_b, mask_b)) for i in range(2)]
    head = 2 * 4 * D * LABELS  # two pairs, one row each
    assert pair.batch_size == 2 and pair.tokens == 15
    assert pair.sops == sum(r.sops for r in alone) > 0
    assert pair.macs == sum(r.macs for r in alone) + head
    assert pair.ann.macs == sum(r.ann.macs for r in alone) + head
    assert sum(n.spikes for n in pair.neurons) == sum(n.spikes for r in alone for n in r.neurons)
    assert pair.other["neuron_updates"] == sum(r.other["neuron_updates"] for r in alone)
    assert pair.energy_per_sample_mj == pytest.approx(
        (pair.sops * E_AC_PJ + pair.macs * E_MAC_PJ) / 2 * 1e-9)
    assert [op.name for op in pair.ops][-1] == "classifier"
    with pytest.raises(TypeError, match="use pair_energy_report"):
        energy_report(model, ids_a, mask_a)
    with pytest.raises(TypeError, match="pair_energy_report needs a SpikingBertBiEncoder"):
        pair_energy_report(model.bert, ids_a, mask_a, ids_b, mask_b)
    # energy_on_dataset measures a bi-encoder's rows the same way
    rows = [{"input_ids_a": ids_a[i, : int(mask_a[i].sum())].tolist(), "attention_mask_a": [1] * int(mask_a[i].sum()),
             "input_ids_b": ids_b[i, : int(mask_b[i].sum())].tolist(), "attention_mask_b": [1] * int(mask_b[i].sum()),
             "labels": 0} for i in range(2)]

    def collate(features):
        from sj_bert.glue import PairCollator

        class Pad:  # the tokenizer's pad: right padding with id 0
            def pad(self, rows, pad_to_multiple_of=None, return_tensors="pt"):
                n = max(len(r["input_ids"]) for r in rows)
                return {k: torch.tensor([r[k] + [0] * (n - len(r[k])) for r in rows]) for k in rows[0]}

        return PairCollator(Pad())(features)

    on_rows = energy_on_dataset(model, rows, collate, 2)
    assert (on_rows.sops, on_rows.macs) == (pair.sops, pair.macs)
