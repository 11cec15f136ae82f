"""SNN-BERT forward, padding invariance, heads, training and input errors (tiny configs)."""

import warnings

import pytest
import torch
from spikingjelly.activation_based.neuron import BaseNode, LIFNode

from sj_bert import BPSN, SpikingBertModel
from sj_bert.conversion import NEURON_KINDS

VARIANTS = [
    pytest.param(dict(coding="individual"), id="individual-softmax"),
    pytest.param(dict(coding="individual", attention="spiking"), id="individual-spiking"),
    pytest.param(dict(coding="repeat"), id="repeat-softmax"),
    pytest.param(dict(coding="repeat", attention="spiking"), id="repeat-spiking"),
    pytest.param(dict(coding="individual", neuron="lif"), id="individual-lif"),
    pytest.param(dict(coding="individual", per_channel=True, learnable_threshold=True, direction="forward"),
                 id="individual-perchannel-forward"),
    pytest.param(dict(coding="individual", per_channel=True, ternary_spikes=True), id="individual-ternary"),
]


@pytest.mark.parametrize("overrides", VARIANTS)
def test_padding_invariance(overrides, tiny):
    """Each sentence's logits are the same alone and in a right-padded batch."""
    model = tiny.model(**overrides)
    lengths = [7, 3, 1, 10]
    ids, mask = tiny.padded(lengths)
    with torch.no_grad():
        batched = model(ids, attention_mask=mask).logits
        for row, n in enumerate(lengths):
            alone = model(ids[row : row + 1, :n]).logits
            torch.testing.assert_close(batched[row : row + 1], alone, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(batched[0], batched[1])  # the input matters: spikes carry it


def test_layout_and_neurons(tiny):
    config = tiny.config(attention="spiking")
    model = SpikingBertModel(config)
    layer = model.encoder.layer[0]
    assert isinstance(layer.attention.self.neuron, BPSN)
    assert isinstance(layer.intermediate.intermediate_act_fn, BPSN)  # the GELU slot holds a neuron
    names = {n for n, m in model.named_modules() if isinstance(m, BaseNode)}
    per_layer = {"attention.self.neuron", "attention.self.query_neuron", "attention.self.key_neuron",
                 "attention.self.value_neuron", "attention.output.neuron", "intermediate.neuron",
                 "intermediate.intermediate_act_fn"}
    assert names == {f"encoder.layer.{i}.{n}" for i in range(config.num_hidden_layers) for n in per_layer}
    repeat = SpikingBertModel(tiny.config(coding="repeat"))
    assert isinstance(repeat.encoder.layer[0].attention.self.neuron, LIFNode)


@pytest.mark.parametrize("coding", ["individual", "repeat"])
def test_outputs_in_bert_layout(coding, tiny):
    config = tiny.config(coding=coding, time_steps=3)
    model = SpikingBertModel(config).eval()
    ids, mask = tiny.padded([5, 3])
    out = model(ids, attention_mask=mask, output_hidden_states=True, output_attentions=True)
    assert out.last_hidden_state.shape == (2, 5, config.hidden_size)
    assert out.pooler_output.shape == (2, config.hidden_size)
    assert len(out.hidden_states) == config.num_hidden_layers + 1
    assert all(h.shape == (2, 5, config.hidden_size) for h in out.hidden_states)
    assert all(a.shape == (2, config.num_attention_heads, 5, 5) for a in out.attentions)
    # softmax attention gives padded keys no weight
    assert torch.all(out.attentions[0][1, :, :, 3:] == 0)
    as_tuple = model(ids, attention_mask=mask, return_dict=False)
    torch.testing.assert_close(as_tuple[0], out.last_hidden_state)


def test_state_never_leaks_between_batches(tiny):
    """LIF keeps a membrane potential; the reset at the start of forward clears it, so a
    batch of another size runs and the same batch gives the same output twice."""
    model = tiny.model(coding="repeat")
    ids, mask = tiny.padded([6, 4, 2])
    with torch.no_grad():
        first = model(ids, attention_mask=mask).logits
        model(ids[:1, :3])
        second = model(ids, attention_mask=mask).logits
    torch.testing.assert_close(first, second, rtol=0, atol=0)


@pytest.mark.parametrize("num_labels, problem_type, labels", [
    (3, None, torch.tensor([0, 2])),
    (1, None, torch.tensor([0.5, -1.0])),
    (3, "multi_label_classification", torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])),
])
def test_heads(num_labels, problem_type, labels, tiny):
    model = tiny.model(num_labels=num_labels, problem_type=problem_type)
    ids, mask = tiny.padded([4, 2])
    out = model(ids, attention_mask=mask, labels=labels)
    assert out.logits.shape == (2, num_labels)
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    expected = problem_type or ("regression" if num_labels == 1 else "single_label_classification")
    assert model.config.problem_type == expected
    loss, logits = model(ids, attention_mask=mask, labels=labels, return_dict=False)
    torch.testing.assert_close(logits, out.logits)


def test_loss_goes_down_on_separable_task(tiny):
    """Class 0 sentences use tokens 2-9, class 1 tokens 50-57: a few steps separate them."""
    torch.manual_seed(0)
    model = tiny.model(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0).train()
    low = torch.randint(2, 10, (8, 6))
    ids = torch.cat([low, low + 48])
    labels = torch.tensor([0] * 8 + [1] * 8)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(15):
        loss = model(ids, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


def test_dropout_is_per_token_in_individual_coding(tiny):
    """SpikingJelly's multi-step dropout shares a mask over steps; in individual coding the
    steps are tokens, which BERT drops independently."""
    model = tiny.model(hidden_dropout_prob=0.5).train()
    dropout = model.bert.encoder.layer[0].output.dropout
    x = torch.ones(6, 2, 16)
    out = dropout(x)
    assert not torch.equal(out[0], out[1])
    repeat = tiny.model(coding="repeat", hidden_dropout_prob=0.5).train().bert.encoder.layer[0].output.dropout
    out = repeat(torch.ones(3, 2, 6, 16))
    assert torch.equal(out[0], out[1])  # one mask over the repeated steps


@pytest.mark.parametrize("kwargs, match", [
    (dict(input_ids=torch.ones(1, 25, dtype=torch.long)), r"input_ids has length 25 but max_position_embeddings is 24"),
    (dict(input_ids=torch.ones(2, 5, dtype=torch.long), attention_mask=torch.ones(2, 4)),
     r"attention_mask must have the shape of input_ids, \[batch, length\] = \[2, 5\], got \[2, 4\]"),
    (dict(input_ids=torch.ones(2, 5, dtype=torch.long), token_type_ids=torch.zeros(5, dtype=torch.long)),
     r"token_type_ids must have the shape of input_ids"),
    (dict(input_ids=torch.ones(0, 5, dtype=torch.long)), r"input_ids is empty \(batch=0, length=5\)"),
    (dict(input_ids=torch.ones(2, 0, dtype=torch.long)), r"input_ids is empty \(batch=2, length=0\)"),
    (dict(input_ids=torch.ones(5, dtype=torch.long)), r"input_ids must be batched, \[batch, length\]"),
    (dict(), r"give exactly one of input_ids"),
])
def test_bad_inputs(kwargs, match, tiny):
    model = tiny.model()
    with pytest.raises(ValueError, match=match):
        model(**kwargs)


def test_config_changed_after_construction_is_checked(tiny):
    config = tiny.config()
    config.neuron = "hodgkin-huxley"
    with pytest.raises(ValueError, match="neuron='hodgkin-huxley' is not supported"):
        SpikingBertModel(config)


def test_a_padded_batch_without_attention_mask_warns(tiny):
    """As BERT does: pad tokens in input_ids and no mask means the padding is read as text."""
    model = tiny.model()
    ids, mask = tiny.padded([6, 3])
    ids[mask == 0] = model.config.pad_token_id
    with pytest.warns(UserWarning, match=r"input_ids holds padding \(pad_token_id=0\) but no attention_mask"):
        model(ids)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model(ids, attention_mask=mask)  # the mask given: no warning
        model(ids[1:, :3])  # no padding: no warning


def test_ternary_spikes_reach_every_bpsn_and_round_trip(tiny, tmp_path):
    """``ternary_spikes`` makes every BPSN fire -1 too, survives save/load, and is refused
    for LIF, which has no such rule."""
    model = tiny.model(coding="individual", ternary_spikes=True, v_threshold=0.05)
    nodes = [m for m in model.modules() if isinstance(m, BPSN)]
    assert nodes and all(node.ternary for node in nodes)
    seen = []
    handle = nodes[0].register_forward_hook(lambda module, args, out: seen.append(out))
    ids, mask = tiny.padded([6, 4])
    with torch.no_grad():
        logits = model(ids, attention_mask=mask).logits
    handle.remove()
    assert (seen[0] < 0).any() and (seen[0] > 0).any()
    model.save_pretrained(tmp_path)
    again = type(model).from_pretrained(tmp_path).eval()
    assert again.config.ternary_spikes is True
    with torch.no_grad():
        torch.testing.assert_close(again(ids, attention_mask=mask).logits, logits)
    with pytest.raises(ValueError, match="ternary_spikes are BPSN settings"):
        tiny.config(coding="repeat", ternary_spikes=True)
    with pytest.raises(ValueError, match="ternary_spikes must be a bool or a list of neuron sites"):
        tiny.config(ternary_spikes="yes")


def test_ternary_spikes_and_thresholds_by_site_reach_those_neurons_only(tiny, tmp_path):
    """``ternary_spikes`` as a list of sites and ``site_thresholds`` change the neurons at those
    sites, in every layer, and no other; both survive save/load (as a list and a dict), and the
    model fires -1 only where it was asked to."""
    stream = ["attention.self.neuron", "intermediate.neuron"]
    model = tiny.model(coding="individual", per_channel=True, v_threshold=0.05, ternary_spikes=tuple(stream),
                       site_thresholds={"intermediate.neuron": 0.1, "attention.output.neuron": 0.02}).eval()
    expected_threshold = {"intermediate.neuron": 0.1, "attention.output.neuron": 0.02}
    outputs, checked = {}, 0
    for layer in model.bert.encoder.layer:
        for site in NEURON_KINDS:  # the sites of softmax attention, which this model has
            node = layer.get_submodule(site)
            checked += 1
            assert node.ternary == (site in stream), site
            torch.testing.assert_close(node.v_threshold, torch.full_like(node.v_threshold,
                                                                         expected_threshold.get(site, 0.05)))
            node.register_forward_hook(lambda module, args, out, site=site: outputs.setdefault(site, []).append(out))
    assert checked == 4 * len(model.bert.encoder.layer)
    ids, mask = tiny.padded([6, 4])
    with torch.no_grad():
        logits = model(ids, attention_mask=mask).logits
    for site, outs in outputs.items():
        fired_negative = any(bool((out < 0).any()) for out in outs)
        assert fired_negative == (site in stream), site
    model.save_pretrained(tmp_path)
    again = type(model).from_pretrained(tmp_path).eval()
    assert again.config.ternary_spikes == stream
    assert again.config.site_thresholds == expected_threshold
    with torch.no_grad():
        torch.testing.assert_close(again(ids, attention_mask=mask).logits, logits)


def test_attention_score_scale_sharpens_every_head_and_is_learned(tiny, tmp_path):
    """``attention_score_scale``: one learnable factor per head (``attention.self.score_scale``,
    absent without it), the softmax of the scores times that factor, a gradient for it, the
    value a BERT-initialised model starts from, kept by save/load; refused where it makes no
    sense."""
    ids, mask = tiny.padded([7, 4])
    plain = tiny.model(seed=3, coding="individual", v_threshold=0.05)
    assert not any("score_scale" in key for key in plain.state_dict())
    scaled = tiny.model(seed=3, coding="individual", v_threshold=0.05, attention_score_scale=4.0)
    keys = [key for key in scaled.state_dict() if "score_scale" in key]
    heads = tiny.config().num_attention_heads
    assert keys == [f"bert.encoder.layer.{i}.attention.self.score_scale" for i in range(tiny.config().num_hidden_layers)]
    assert all(torch.equal(scaled.state_dict()[k], torch.full((heads,), 4.0)) for k in keys)

    with torch.no_grad():  # layer 0 sees the same input in both: its map is softmax(4 x scores)
        plain_map = plain(ids, attention_mask=mask, output_attentions=True).attentions[0]
        scaled_map = scaled(ids, attention_mask=mask, output_attentions=True).attentions[0]
    real = mask.bool()[:, None, None, :]
    scores = plain_map.clamp_min(1e-30).log()  # the scores, up to a constant per query
    expected = (4.0 * scores).masked_fill(~real, float("-inf")).softmax(-1)
    torch.testing.assert_close(scaled_map.masked_fill(~real, 0.0), expected.masked_fill(~real, 0.0))

    scaled.train()
    scaled(ids, attention_mask=mask, labels=torch.tensor([0, 1])).loss.backward()
    grad = scaled.bert.encoder.layer[0].attention.self.score_scale.grad
    assert grad is not None and grad.shape == (heads,) and grad.abs().sum() > 0

    bert_dir = tmp_path / "bert"  # a BERT checkpoint has no factor: it starts at the value given
    plain.save_pretrained(bert_dir)
    converted = type(plain).from_pretrained(bert_dir, attention_score_scale=2.5)
    assert torch.equal(converted.bert.encoder.layer[1].attention.self.score_scale, torch.full((heads,), 2.5))
    with torch.no_grad():
        converted.bert.encoder.layer[1].attention.self.score_scale[0] = 7.0  # as training moves it
    converted.save_pretrained(tmp_path / "snn")
    again = type(plain).from_pretrained(tmp_path / "snn")
    assert again.config.attention_score_scale == 2.5
    assert again.bert.encoder.layer[1].attention.self.score_scale[0] == 7.0

    with pytest.raises(ValueError, match="attention_score_scale scales the softmax's scores"):
        tiny.config(attention="spiking", attention_score_scale=2.0)
    for bad in (0.0, -1.0, float("inf"), True, "4"):
        with pytest.raises(ValueError, match="attention_score_scale must be a positive number or None"):
            tiny.config(attention_score_scale=bad)


def test_training_attention_runs_fused_with_dropout_in_individual_coding(tiny, monkeypatch):
    """Softmax attention trains through SDPA, dropout included, in individual coding (on CUDA
    its kernels keep no ``[B, H, L, L]`` tensor for the backward: ``test_cuda.py``). Repeat
    coding shares one dropout mask over its steps, so it trains through the explicit form,
    as does any forward asked for the maps."""
    calls = []
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def counted(*args, **kwargs):
        calls.append(kwargs.get("dropout_p", 0.0))
        return sdpa(*args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", counted)
    ids, mask = tiny.padded([9, 4])
    labels = torch.zeros(2, dtype=torch.long)
    individual = tiny.model(coding="individual", attention_probs_dropout_prob=0.1).train()
    individual(ids, attention_mask=mask, labels=labels).loss.backward()
    assert calls == [0.1] * individual.config.num_hidden_layers
    calls.clear()
    individual(ids, attention_mask=mask, labels=labels, output_attentions=True)
    tiny.model(coding="repeat", attention_probs_dropout_prob=0.1).train()(ids, attention_mask=mask, labels=labels)
    assert calls == []
    individual.eval()(ids, attention_mask=mask)
    assert calls == [0.0] * individual.config.num_hidden_layers


def test_fused_training_attention_matches_the_explicit_form(tiny):
    """Without dropout, the fused and the explicit attention give the same loss and
    gradients in training; with it, the fused one drops attention (a different draw each
    forward) and stays unbiased: the mean over draws nears the no-dropout output."""
    ids, mask = tiny.padded([9, 4])
    labels = torch.tensor([0, 1])
    model = tiny.model(coding="individual", attention_probs_dropout_prob=0.0, hidden_dropout_prob=0.0).train()
    results = []
    for explicit in (False, True):
        model.zero_grad(set_to_none=True)
        out = model(ids, attention_mask=mask, labels=labels, output_attentions=explicit)
        out.loss.backward()
        results.append((out.logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters()
                                              if p.grad is not None}))
    torch.testing.assert_close(results[0][0], results[1][0], atol=1e-5, rtol=1e-5)
    assert results[0][1].keys() == results[1][1].keys()
    for name, grad in results[0][1].items():
        torch.testing.assert_close(grad, results[1][1][name], atol=1e-5, rtol=1e-4, msg=name)

    dropped = tiny.model(coding="individual", attention_probs_dropout_prob=0.5, hidden_dropout_prob=0.0)
    dropped.load_state_dict(model.state_dict())
    with torch.no_grad():
        clean = dropped.eval()(ids, attention_mask=mask).logits
        dropped.train()
        draws = torch.stack([dropped(ids, attention_mask=mask).logits for _ in range(64)])
    assert not torch.equal(draws[0], draws[1])  # dropout acts, with new draws each forward
    assert (draws.mean(0) - clean).abs().max() < (draws[0] - clean).abs().max()
