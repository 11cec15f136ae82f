"""SpikeRate: the differentiable firing rate equals the energy report's, and its gradient
lowers firing."""

import pytest
import torch

from sj_bert.energy import energy_report
from sj_bert.spike_rate import SpikeRate

NO_DROPOUT = dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
CASES = {
    "individual, binary, threshold spikes, per channel": dict(per_channel=True, learnable_threshold=True),
    "individual, ternary": dict(ternary_spikes=True, per_channel=True),
    "individual, unit spikes": dict(spike_amplitude="unit"),
    "repeat coding (LIF, T=3)": dict(coding="repeat", time_steps=3),
}


def measured_rate(model, ids, mask) -> torch.Tensor:
    with SpikeRate(model) as meter:
        meter.reset(mask)
        model(input_ids=ids, attention_mask=mask)
        return meter.rate()


@pytest.mark.parametrize("overrides", CASES.values(), ids=CASES.keys())
def test_rate_is_the_energy_reports_firing_rate(tiny, overrides):
    model = tiny.model(**NO_DROPOUT, **overrides)
    ids, mask = tiny.padded([7, 4, 1])
    expected = energy_report(model, ids, mask).firing_rate  # counts nonzero spikes at real tokens
    assert 0.02 < expected < 0.98  # neither silent nor saturated: a miscount would show
    model.train()
    rate = measured_rate(model, ids, mask)
    assert rate.item() == pytest.approx(expected, rel=1e-5)
    assert rate.requires_grad


def test_padding_adds_no_updates(tiny):
    """The same sentence alone and beside a longer one has the same rate per real update."""
    model = tiny.model(**NO_DROPOUT, per_channel=True).train()
    ids, mask = tiny.padded([5, 9])
    alone = measured_rate(model, ids[:1, :5], mask[:1, :5])
    twice = measured_rate(model, torch.cat([ids[:1, :5]] * 2), torch.cat([mask[:1, :5]] * 2))
    assert twice.item() == pytest.approx(alone.item(), rel=1e-6)
    padded = measured_rate(model, torch.cat([ids[:1], ids[:1]]), torch.tensor([[1] * 5 + [0] * 4] * 2))
    assert padded.item() == pytest.approx(alone.item(), rel=1e-6)


def test_penalty_alone_lowers_firing_and_raises_thresholds(tiny):
    model = tiny.model(**NO_DROPOUT, per_channel=True, learnable_threshold=True, ternary_spikes=True).train()
    ids, mask = tiny.padded([8, 6, 3])
    thresholds = [p for n, p in model.named_parameters() if n.endswith("v_threshold")]
    assert thresholds
    before = [t.detach().clone() for t in thresholds]
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    first = None
    for _ in range(20):
        rate = measured_rate(model, ids, mask)
        first = rate.item() if first is None else first
        optimizer.zero_grad()
        rate.backward()
        optimizer.step()
    assert measured_rate(model, ids, mask).item() < 0.5 * first
    # on the whole the thresholds rise (a larger one also feeds larger spikes to the next
    # layers, so a single one may fall)
    assert torch.cat([t.detach() - b for t, b in zip(thresholds, before)]).mean() > 0


@pytest.mark.parametrize("ternary", [False, True])
def test_threshold_spikes_are_counted_with_the_step_functions_gradient(ternary):
    """A spike carrying its threshold counts as 1, and its count has the gradient of the 0/1
    count: dividing by the (learnable) threshold adds no term of its own."""
    from sj_bert.neuron import BPSN

    torch.manual_seed(0)
    x = torch.randn(6, 3, 5)  # [T, B, C]
    counts, grads = [], []
    for amplitude in ("unit", "threshold"):
        neuron = BPSN(channels=5, v_threshold=0.3, learnable_threshold=True, ternary=ternary,
                      spike_amplitude=amplitude, step_mode="m", backend="torch")
        with SpikeRate(neuron) as meter:
            meter.reset(torch.ones(3, 6))  # [B, L]: every step real
            neuron(x)
            rate = meter.rate()
        rate.backward()
        counts.append(rate.item())
        grads.append(neuron.v_threshold.grad.clone())
    assert 0 < counts[0] < 1 and counts[1] == pytest.approx(counts[0], rel=1e-6)
    assert bool((grads[0] < 0).any()) and bool((grads[0] <= 0).all())  # raising a threshold fires less
    torch.testing.assert_close(grads[1], grads[0])


def test_eval_mode_forwards_are_not_counted(tiny):
    model = tiny.model(**NO_DROPOUT)  # eval mode
    ids, mask = tiny.padded([4])
    with SpikeRate(model) as meter:
        meter.reset(mask)
        model(input_ids=ids, attention_mask=mask)
        with pytest.raises(RuntimeError, match="train"):
            meter.rate()


def test_hooks_are_removed_on_exit(tiny):
    model = tiny.model(**NO_DROPOUT).train()
    ids, mask = tiny.padded([4])
    with SpikeRate(model) as meter:
        meter.reset(mask)
    model(input_ids=ids, attention_mask=mask)  # outside the block: no hook, no error
    assert not meter._spikes


def test_bad_input_is_refused(tiny):
    from transformers import BertConfig, BertModel

    with pytest.raises(ValueError, match="no spiking neuron"):
        SpikeRate(BertModel(BertConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8)))
    model = tiny.model().train()
    with SpikeRate(model) as meter:
        with pytest.raises(ValueError, match=r"attention_mask must be \[B, L\]"):
            meter.reset(torch.ones(4))
        ids, mask = tiny.padded([3])
        with pytest.raises(RuntimeError, match="reset"):
            model(input_ids=ids, attention_mask=mask)


def test_any_spikingjelly_net_without_a_mask():
    """A conv net of SpikingJelly layers with a LIF and a per-channel BPSN (channels on dim 2,
    [T, N, C, H, W]), no padding: the rate is the share of nonzero neuron outputs."""
    from spikingjelly.activation_based import functional, layer, neuron

    from sj_bert.neuron import BPSN

    torch.manual_seed(0)
    net = torch.nn.Sequential(
        layer.Conv2d(1, 4, 3, padding=1, step_mode="m"),
        BPSN(channels=4, channel_dim=2, v_threshold=0.2, step_mode="m", spike_amplitude="threshold"),
        layer.Conv2d(4, 4, 3, padding=1, step_mode="m"),
        neuron.LIFNode(step_mode="m"),
    ).train()
    outputs = []
    net[1].register_forward_hook(lambda m, a, out: outputs.append(out))
    net[3].register_forward_hook(lambda m, a, out: outputs.append(out))
    with SpikeRate(net) as meter:
        meter.reset()
        net(torch.randn(5, 2, 1, 6, 6))  # [T, N, C, H, W]
        rate = meter.rate()
    functional.reset_net(net)
    expected = sum(int((o != 0).sum()) for o in outputs) / sum(o.numel() for o in outputs)
    assert 0.02 < expected < 0.98
    assert rate.item() == pytest.approx(expected, rel=1e-6)
    rate.backward()
    assert net[0].weight.grad is not None and net[0].weight.grad.abs().sum() > 0
