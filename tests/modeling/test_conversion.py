"""sj_bert.conversion: each neuron's least-squares spike map, folded into the matrices it feeds."""

import pytest
import torch

from sj_bert import conversion
from sj_bert.conversion import calibrate_spike_maps, spike_fed_units

SETTINGS = dict(per_channel=True, v_threshold=0.1, spike_amplitude="threshold")


def _batch(tiny, lengths=(7, 5, 9, 3)):
    ids, mask = tiny.padded(list(lengths))
    return {"input_ids": ids, "attention_mask": mask}


def _least_squares(x: torch.Tensor, s: torch.Tensor):
    """Per channel of ``[tokens, C]``: gain, offset and R^2 of ``x ~ g s + o`` (torch.linalg.lstsq)."""
    gains, offsets, r2 = [], [], []
    for c in range(x.shape[1]):
        if s[:, c].var() > 1e-12:
            design = torch.stack([s[:, c], torch.ones_like(s[:, c])], 1)
            g, o = torch.linalg.lstsq(design, x[:, c:c + 1]).solution.squeeze(1)
            residual = x[:, c] - design @ torch.stack([g, o])
            r2.append(1 - residual.pow(2).sum().item() / (x[:, c] - x[:, c].mean()).pow(2).sum().item())
        else:  # never or always fires: a constant shift only
            g, o = torch.tensor(1.0, dtype=x.dtype), x[:, c].mean() - s[:, c].mean()
            r2.append(0.0)
        gains.append(g)
        offsets.append(o)
    return torch.stack(gains), torch.stack(offsets), sum(r2) / len(r2)


@pytest.mark.parametrize("unit_index,target", [(0, lambda x: x), (3, torch.nn.functional.gelu)],
                         ids=["attention-input", "ffn-gelu-slot"])
def test_folds_each_neurons_least_squares_map(tiny, unit_index, target, monkeypatch):
    """What the reading matrices hold afterwards is ``W diag(g)`` and ``b + W o``, with ``g, o``
    the per-channel least-squares fit of the neuron's target (its input; GELU of it in the
    FFN) from its spikes, measured after the neurons before it were folded; its fidelity is
    that fit's R^2."""
    model = tiny.model(**SETTINGS)
    batch = _batch(tiny)
    unit = spike_fed_units(model)[unit_index]
    reference = tiny.model(**SETTINGS)
    if unit_index:  # the maps of the neurons before this one, folded first, as the function does
        every_unit = conversion.spike_fed_units
        monkeypatch.setattr(conversion, "spike_fed_units", lambda m: every_unit(m)[:unit_index])
        calibrate_spike_maps(reference, [batch])
        monkeypatch.undo()
    seen = {}
    reference_unit = spike_fed_units(reference)[unit_index]
    hook = reference_unit.neuron.register_forward_hook(
        lambda m, args, kwargs, out: seen.update(x=target(args[0])[kwargs["mask"]],
                                                 s=out[kwargs["mask"]]), with_kwargs=True)
    with torch.no_grad():
        reference(**batch)
    hook.remove()
    weights = [(r.weight.detach().double().clone(), r.bias.detach().double().clone()) for r in reference_unit.readers]
    fidelity = calibrate_spike_maps(model, [batch])
    gains, offsets, r2 = _least_squares(seen["x"].double(), seen["s"].double())
    assert 0 < gains.abs().max() and not torch.allclose(gains, torch.ones_like(gains))  # something was folded
    for reader, (weight, bias) in zip(unit.readers, weights):
        torch.testing.assert_close(reader.weight.double(), weight * gains, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(reader.bias.double(), bias + weight @ offsets, rtol=1e-4, atol=1e-5)
    assert fidelity[unit.name] == pytest.approx(r2, abs=1e-4)
    assert list(fidelity) == [u.name for u in spike_fed_units(model)] and len(fidelity) == 4 * 2
    assert all(0 <= v <= 1 for v in fidelity.values())


def test_keeps_the_training_mode_and_the_keys(tiny):
    model = tiny.model(**SETTINGS).train()
    keys = list(model.state_dict())
    calibrate_spike_maps(model, [_batch(tiny)])
    assert model.training and list(model.state_dict()) == keys
    model.eval()
    calibrate_spike_maps(model, [_batch(tiny)])
    assert not model.training


def test_bad_input(tiny):
    from transformers import BertConfig, BertForSequenceClassification

    with pytest.raises(TypeError, match="must be SNN-BERT"):
        ann = BertForSequenceClassification(BertConfig(vocab_size=99, hidden_size=16, num_hidden_layers=1,
                                                        num_attention_heads=2, intermediate_size=32))
        calibrate_spike_maps(ann, [_batch(tiny)])
    with pytest.raises(ValueError, match="coding='repeat'"):
        calibrate_spike_maps(tiny.model(coding="repeat"), [_batch(tiny)])
    with pytest.raises(ValueError, match="attention='spiking'"):
        calibrate_spike_maps(tiny.model(attention="spiking", **SETTINGS), [_batch(tiny)])
    with pytest.raises(ValueError, match="batches is empty"):
        calibrate_spike_maps(tiny.model(**SETTINGS), [])


def _ann_twin(snn):
    """The plain BERT with ``snn``'s weights (every one of its parameters found there), in eval mode."""
    from transformers import BertConfig, BertForSequenceClassification

    ann = BertForSequenceClassification(BertConfig(**{k: v for k, v in snn.config.to_dict().items()
                                                      if k in BertConfig().to_dict()}))
    missing, _ = ann.load_state_dict(snn.state_dict(), strict=False)
    assert not missing
    return ann.eval()


def test_real_valued_at_every_neuron_is_the_ann(tiny):
    """With every kind of neuron passing on real values, SNN-BERT computes its ANN twin exactly
    (same weights, BERT's first-token pooling); with one kind real it is neither; outside the
    block it spikes again."""
    snn = tiny.model(**SETTINGS, pooling="cls")
    ann = _ann_twin(snn)
    batch = _batch(tiny)
    with torch.no_grad():
        spiking, twin = snn(**batch).logits, ann(**batch).logits
        with conversion.real_valued(snn, conversion.NEURON_KINDS):
            real = snn(**batch).logits
        with conversion.real_valued(snn, ["intermediate.neuron"]):
            one_real = snn(**batch).logits
        again = snn(**batch).logits
    torch.testing.assert_close(real, twin, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(spiking, twin, atol=1e-3) and not torch.allclose(one_real, twin, atol=1e-3)
    assert not torch.allclose(one_real, spiking, atol=1e-3)
    torch.testing.assert_close(again, spiking, rtol=0, atol=0)


@pytest.mark.parametrize("read", ["potential", "average"])
def test_real_valued_from_the_potential_is_the_ann_only_without_mixing(tiny, read):
    """``read="potential"`` / ``"average"``: the neurons pass on the ANN's value computed from their
    potential (divided by the potential of ones). At the default decays it mixes neighbouring
    tokens (not the ANN, and the decays get gradients, which the input never gives them); with the
    decays at zero it is the input, and SNN-BERT computes its ANN twin exactly. The block leaves no
    ``v_seq`` behind."""
    snn = tiny.model(**SETTINGS, pooling="cls")
    ann = _ann_twin(snn)
    batch, units = _batch(tiny), spike_fed_units(snn)
    with conversion.real_valued(snn, conversion.NEURON_KINDS):
        snn(**batch).logits.sum().backward()
    assert all(unit.neuron.a_f.grad is None for unit in units)
    with conversion.real_valued(snn, conversion.NEURON_KINDS, read=read):
        mixed = snn(**batch).logits
        mixed.sum().backward()
    # a or b: the last FFN neuron is read at the first token only (CLS pooling), where h_f[0] = x[0]
    assert all(unit.neuron.a_f.grad.abs().sum() + unit.neuron.a_b.grad.abs().sum() > 0 for unit in units)
    assert all(not unit.neuron.store_v_seq and unit.neuron.v_seq is None for unit in units)
    with torch.no_grad():
        twin = ann(**batch).logits
        for unit in units:  # lam = sigmoid(-40), about 4e-18: v[t] = alpha x[t] + (1 - alpha) x[t]
            unit.neuron.a_f.fill_(-40.0)
            unit.neuron.a_b.fill_(-40.0)
        with conversion.real_valued(snn, conversion.NEURON_KINDS, read=read):
            unmixed = snn(**batch).logits
    assert not torch.allclose(mixed.detach(), twin, atol=1e-3)
    torch.testing.assert_close(unmixed, twin, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("read", ["potential", "average"])
def test_real_valued_passes_on_the_potential_or_its_average(tiny, read):
    """At the first neuron, what is passed on is the reference potential of its input (divided
    by the reference potential of ones for ``"average"``), zero at padding."""
    from sj_bert.ops.bpsn.reference import bpsn_reference

    snn = tiny.model(**SETTINGS)
    neuron = spike_fed_units(snn)[0].neuron
    seen = {}
    with torch.no_grad(), conversion.real_valued(snn, ["attention.self.neuron"], read=read):
        hook = neuron.register_forward_hook(  # after real_valued's hook: sees what it passes on
            lambda m, args, kwargs, out: seen.update(x=args[0], mask=kwargs["mask"], out=out), with_kwargs=True)
        snn(**_batch(tiny))
        hook.remove()
        params = (*neuron.decays(), neuron.v_threshold)
        _, v = bpsn_reference(seen["x"], seen["mask"], *params, neuron.surrogate_function, neuron.direction)
        if read == "average":
            v = v / bpsn_reference(torch.ones_like(seen["x"]), seen["mask"], *params, neuron.surrogate_function,
                                   neuron.direction)[1].clamp_min(1e-6)
    expected = v * seen["mask"].unsqueeze(-1)
    torch.testing.assert_close(seen["out"], expected.to(seen["out"].dtype), rtol=1e-5, atol=1e-6)
    assert not torch.allclose(seen["out"], seen["x"] * seen["mask"].unsqueeze(-1), atol=1e-3)


def test_real_valued_names_a_read_it_does_not_know(tiny):
    with pytest.raises(ValueError, match="read must be one of input, potential, average, got 'spikes'"):
        with conversion.real_valued(tiny.model(), ["intermediate.neuron"], read="spikes"):
            pass


def test_real_valued_names_an_unknown_kind(tiny):
    with pytest.raises(ValueError, match="unknown neuron kind.*attention.neuron; expected some of: "
                                         "attention.self.neuron"):
        with conversion.real_valued(tiny.model(), ["attention.neuron"]):
            pass


# -- calibrate_thresholds -----------------------------------------------------------------------


def _fired(model, batch) -> dict:
    """Each neuron's potential and spikes at the real tokens of ``batch`` (``[tokens, C]``)."""
    seen, hooks = {}, []
    for unit in spike_fed_units(model):
        unit.neuron.store_v_seq = True

        def grab(module, args, kwargs, spikes, name=unit.name):
            real = kwargs["mask"]
            seen[name] = (module.v_seq[real].float(), spikes[real].float())

        hooks.append(unit.neuron.register_forward_hook(grab, with_kwargs=True))
    with torch.no_grad():
        model(**batch)
    for hook in hooks:
        hook.remove()
    for unit in spike_fed_units(model):
        unit.neuron.store_v_seq = False
    return seen


@pytest.mark.parametrize("rate", [0.1, 0.3])
def test_thresholds_make_each_channel_fire_at_the_rate(tiny, rate):
    """After calibration on a batch, every channel whose quantile was positive fires on exactly
    the tokens at or above its ``1 - rate`` quantile of the potential it now sees (neurons set in
    forward order see the earlier ones' new thresholds); the others keep their threshold."""
    import math

    model = tiny.model(**SETTINGS).eval()
    batch = _batch(tiny, lengths=(9, 7, 9, 8))
    before = {u.name: u.neuron.v_threshold.clone() for u in spike_fed_units(model)}
    share = conversion.calibrate_thresholds(model, [batch], rate)
    after = _fired(model, batch)
    assert list(share) == [u.name for u in spike_fed_units(model)]
    for unit in spike_fed_units(model):
        v, spikes = after[unit.name]
        n = len(v)
        k = math.ceil((1 - rate) * n)
        quantile = v.sort(0).values[k - 1]
        threshold = unit.neuron.v_threshold.detach()
        set_ = quantile > 0
        assert share[unit.name] == pytest.approx(set_.float().mean().item())
        torch.testing.assert_close(threshold[set_], quantile[set_])
        torch.testing.assert_close(threshold[~set_], before[unit.name][~set_])
        fired = (spikes != 0).float().sum(0)  # per channel, over the n real tokens
        assert torch.equal(fired[set_], (v[:, set_] >= threshold[set_]).float().sum(0))
        assert (fired[set_] <= n - k + 1).all() and (fired[set_] >= 1).all()
    assert any(s > 0 for s in share.values())


def test_thresholds_keep_the_mode_and_the_keys_and_refuse_bad_input(tiny):
    model = tiny.model(**SETTINGS).train()
    keys = list(model.state_dict())
    conversion.calibrate_thresholds(model, [_batch(tiny)], 0.2)
    assert model.training and list(model.state_dict()) == keys
    assert all(not u.neuron.store_v_seq and u.neuron.v_seq is None for u in spike_fed_units(model))
    for rate in (0, 1, 1.5, True, "0.2"):
        with pytest.raises(ValueError, match="rate must be a number in \\(0, 1\\)"):
            conversion.calibrate_thresholds(model, [_batch(tiny)], rate)
    with pytest.raises(ValueError, match="per_channel=True"):
        conversion.calibrate_thresholds(tiny.model(v_threshold=0.1), [_batch(tiny)], 0.2)
    with pytest.raises(ValueError, match="batches is empty"):
        conversion.calibrate_thresholds(model, [], 0.2)
    with pytest.raises(ValueError, match="coding='repeat'"):
        conversion.calibrate_thresholds(tiny.model(coding="repeat"), [_batch(tiny)], 0.2)
