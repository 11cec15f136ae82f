"""BPSN as a SpikingJelly node: behaviour, integration with the host, and misuse."""

import math
import warnings

import pytest
import torch
import torch.nn as nn
from spikingjelly.activation_based import functional, layer, monitor, surrogate
from spikingjelly.activation_based.model import parametric_lif_net
from spikingjelly.activation_based.op_counter import DispatchCounterMode, SynOpCounter

from sj_bert import BPSN
from sj_bert.ops.bpsn import ENV_VAR, cpu
from sj_bert.testing import bpsn_naive
from sj_bert.ops.bpsn.reference import DIRECTIONS


def test_node_matches_equations_and_initialisation():
    node = BPSN(tau=4.0, tau_backward=2.0, v_threshold=0.7, channels=3)
    lam_f, lam_b, alpha = node.decays()
    torch.testing.assert_close(lam_f, torch.full((3,), 0.75))
    torch.testing.assert_close(lam_b, torch.full((3,), 0.5))
    torch.testing.assert_close(alpha, torch.full((3,), 0.5))
    x = torch.randn(9, 2, 3)
    mask = torch.ones(9, 2, dtype=torch.long)
    mask[6:, 0] = 0
    spike = node(x, mask=mask)
    expected, v = bpsn_naive(x, mask, lam_f, lam_b, alpha, node.v_threshold, node.surrogate_function)
    torch.testing.assert_close(spike, expected)
    # the CPU default: the compiled scans where a C++ compiler builds them
    assert node.implementation == ("cpu" if cpu.available()[0] else "torch")


@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("side", ["right", "left"])
def test_padding_invariance(direction, side):
    """Each sample spikes exactly as it does alone, whatever the padding side."""
    g = torch.Generator().manual_seed(1)
    node = BPSN(tau=3.0, v_threshold=0.5, channels=4, direction=direction)
    lengths = [5, 11, 1, 8]
    T = max(lengths)
    x = torch.zeros(T, len(lengths), 4)
    mask = torch.zeros(T, len(lengths), dtype=torch.bool)
    alone = []
    for b, n in enumerate(lengths):
        xb = torch.randn(n, 1, 4, generator=g)
        alone.append(node(xb))
        sl = slice(0, n) if side == "right" else slice(T - n, T)
        x[sl, b] = xb[:, 0]
        mask[sl, b] = True
        # garbage at padded steps must not leak into real ones
        x[~mask[:, b], b] = 100.0
    batch = node(x, mask=mask)
    for b, n in enumerate(lengths):
        sl = slice(0, n) if side == "right" else slice(T - n, T)
        assert torch.equal(batch[sl, b], alone[b][:, 0])
        assert batch[~mask[:, b], b].sum() == 0


@pytest.mark.parametrize("direction", ["bi", "forward"])
def test_no_uninterrupted_firing(direction):
    """A supra-threshold pulse then zeros: BPSN stops within the bound its decay implies,
    while a no-leak, no-reset integrator on the same input fires forever."""
    T, pulse_end, threshold, tau = 60, 5, 1.0, 2.0
    x = torch.zeros(T, 1, 1)
    x[:pulse_end] = 3.0
    node = BPSN(tau=tau, v_threshold=threshold, direction=direction, store_v_seq=True)
    spikes = node(x)[:, 0, 0]
    lam_f, _, alpha = node.decays()
    # after the pulse h_b = 0 and h_f decays geometrically from its peak
    peak = node.v_seq[pulse_end - 1, 0, 0].abs().item() / (alpha.item() if direction == "bi" else 1.0)
    weight = alpha.item() if direction == "bi" else 1.0
    bound = math.ceil(math.log(threshold / (weight * peak)) / math.log(lam_f.item()))
    assert spikes[:pulse_end].sum() > 0
    assert spikes[pulse_end + bound:].sum() == 0
    assert (node.v_seq[pulse_end:, 0, 0].diff() <= 0).all()  # geometric decay

    integrator = torch.cumsum(x, dim=0)  # PSN-style: no leak, no reset
    integrator_spikes = (integrator >= threshold).float()[:, 0, 0]
    assert integrator_spikes[pulse_end + bound:].sum() == T - pulse_end - bound


def test_single_step_streaming_equals_multi_step():
    x = torch.randn(12, 3, 5)
    mask = torch.ones(12, 3, dtype=torch.bool)
    mask[9:, 2] = False
    multi = BPSN(tau=3.0, direction="forward", channels=5)
    stream = BPSN(tau=3.0, direction="forward", channels=5, step_mode="s", store_v_seq=True)
    stream.load_state_dict(multi.state_dict())
    expected = multi(x, mask=mask)
    got = torch.stack([stream(x[t], mask[t]) for t in range(12)])
    torch.testing.assert_close(got, expected)
    assert stream.v_seq.shape == (12, 3, 5)
    functional.reset_net(stream)
    assert stream.v == 0.0 and stream.v_seq is None


@pytest.mark.parametrize("backend", ["cpu", "torch", "reference"])
def test_ternary_node_fires_both_ways_and_streams(backend):
    """``ternary=True``: +1 at or above the threshold, -1 at or below minus it, 0 between
    and at padded steps; single-step streaming fires the same spikes."""
    if backend == "cpu" and not cpu.available()[0]:
        pytest.skip(cpu.available()[1])
    g = torch.Generator().manual_seed(3)
    x = torch.randn(12, 3, 5, generator=g) * 2
    mask = torch.ones(12, 3, dtype=torch.bool)
    mask[9:, 2] = False
    multi = BPSN(tau=3.0, direction="forward", channels=5, v_threshold=0.5, ternary=True, backend=backend,
                 store_v_seq=True)
    spikes = multi(x, mask=mask)
    v = multi.v_seq
    expected = ((v >= 0.5).float() - (v <= -0.5).float()) * mask[..., None]
    assert torch.equal(spikes, expected) and (spikes < 0).any() and (spikes > 0).any()
    stream = BPSN(tau=3.0, direction="forward", channels=5, v_threshold=0.5, ternary=True, step_mode="s")
    stream.load_state_dict(multi.state_dict())
    torch.testing.assert_close(torch.stack([stream(x[t], mask[t]) for t in range(12)]), spikes)
    assert "ternary=True" in repr(multi)
    with pytest.raises(TypeError, match="ternary must be a bool"):
        BPSN(ternary=1)


def _amplitude_twins(backend: str, ternary: bool, C: int = 5):
    """A node whose spikes carry the threshold and its unit-spike twin, same parameters."""
    kwargs = dict(tau=3.0, channels=C, v_threshold=0.5, learnable_threshold=True, ternary=ternary, backend=backend,
                  channel_dim=-1)
    scaled, unit = BPSN(spike_amplitude="threshold", **kwargs), BPSN(**kwargs)
    with torch.no_grad():
        scaled.v_threshold.copy_(torch.linspace(0.2, 0.9, C))
    unit.load_state_dict(scaled.state_dict())
    return scaled, unit


@pytest.mark.parametrize("backend", ["cpu", "torch", "reference"])
@pytest.mark.parametrize("ternary", [False, True])
def test_spikes_carry_the_threshold(backend, ternary):
    """``spike_amplitude="threshold"``: the unit spikes times their channel's threshold, in
    training (gradients to the input and the threshold as through the explicit product)
    and in inference (scaled in place)."""
    if backend == "cpu" and not cpu.available()[0]:
        pytest.skip(cpu.available()[1])
    g = torch.Generator().manual_seed(5)
    x0 = torch.randn(10, 3, 5, generator=g) * 2
    mask = torch.ones(10, 3, dtype=torch.bool)
    mask[7:, 1] = False
    weights = torch.randn(10, 3, 5, generator=g)
    scaled, unit = _amplitude_twins(backend, ternary)
    grads = []
    for node, scale in ((scaled, False), (unit, True)):
        x = x0.clone().requires_grad_()
        out = node(x, mask=mask)
        out = out * node.v_threshold if scale else out
        (out * weights).sum().backward()
        grads.append((out.detach(), x.grad, node.v_threshold.grad))
    (s_scaled, gx_scaled, gth_scaled), (s_unit, gx_unit, gth_unit) = grads
    assert torch.equal(s_scaled, s_unit) and s_scaled.abs().sum() > 0
    torch.testing.assert_close(gx_scaled, gx_unit, rtol=0, atol=0)  # bit for bit
    torch.testing.assert_close(gth_scaled, gth_unit, rtol=0, atol=0)
    with torch.no_grad():
        torch.testing.assert_close(scaled(x0, mask=mask), unit(x0, mask=mask) * unit.v_threshold)
    assert "spike_amplitude=threshold" in repr(scaled)
    with pytest.raises(ValueError, match="spike_amplitude must be one of"):
        BPSN(spike_amplitude="double")


def test_streamed_spikes_carry_the_threshold():
    node = BPSN(direction="forward", channels=4, v_threshold=0.3, spike_amplitude="threshold", step_mode="s")
    with torch.no_grad():
        node.v_threshold.copy_(torch.tensor([0.1, 0.2, 0.3, 0.4]))
    x = torch.randn(6, 2, 4) * 2
    unit = BPSN(direction="forward", channels=4, step_mode="s")
    unit.load_state_dict(node.state_dict())
    for t in range(6):
        torch.testing.assert_close(node(x[t]), unit(x[t]) * unit.v_threshold)


def test_store_v_last_false_leaves_the_state_alone():
    """``store_v_last=False`` skips keeping the last potential (SNN-BERT's neurons): the
    spikes are the same, ``v`` stays at its reset value; the default keeps ``v[-1]``."""
    x = torch.randn(6, 2, 3)
    keep, skip = BPSN(store_v_seq=True), BPSN(store_v_last=False)
    assert torch.equal(keep(x), skip(x))
    assert torch.equal(keep.v, keep.v_seq[-1]) and skip.v == 0.0
    assert "store_v_last=False" in repr(skip)
    with pytest.raises(TypeError, match="store_v_last must be a bool"):
        BPSN(store_v_last=0)


def test_bidirectional_single_step_is_a_clear_error():
    with pytest.raises(ValueError, match="direction='forward'"):
        BPSN(step_mode="s")
    node = BPSN()
    with pytest.raises(ValueError, match="multi-step mode only"):
        functional.set_step_mode(nn.Sequential(node), "s")


def test_store_v_seq_and_reset_net():
    node = BPSN(store_v_seq=True)
    x = torch.randn(4, 2, 3)
    node(x)
    assert node.v_seq.shape == (4, 2, 3)
    assert torch.is_tensor(node.v) and node.v.shape == (2, 3)
    functional.reset_net(node)
    assert node.v == 0.0 and node.v_seq is None


def test_output_monitor_records_spikes():
    net = nn.Sequential(layer.Linear(4, 6, step_mode="m"), BPSN(channels=6), layer.Linear(6, 2, step_mode="m"))
    mon = monitor.OutputMonitor(net, BPSN)
    net(torch.randn(7, 3, 4))
    assert len(mon.records) == 1 and mon.records[0].shape == (7, 3, 6)
    assert set(mon.records[0].unique().tolist()) <= {0.0, 1.0}
    mon.remove_hooks()


def test_op_counter_counts_spike_fed_synaptic_operations():
    torch.manual_seed(0)
    fc_in, node, fc_out = layer.Linear(4, 6, step_mode="m"), BPSN(v_threshold=0.3, channels=6), layer.Linear(6, 5, bias=False, step_mode="m")
    x = torch.randn(7, 3, 4)
    counter = SynOpCounter()
    with torch.no_grad(), DispatchCounterMode([counter]):
        spikes = node(fc_in(x))
        fc_out(spikes)
    nnz = int(spikes.count_nonzero())
    assert nnz > 0
    assert counter.get_total() == nnz * 5


def test_spikingjelly_model_trains_with_bpsn():
    """A SpikingJelly model built with spiking_neuron=BPSN runs forward, backward and a step.
    The model sees [T, N, C, H, W]; BPSN integrates over T for every pixel and channel."""
    torch.manual_seed(0)
    net = parametric_lif_net.MNISTNet(channels=4, spiking_neuron=BPSN, tau=2.0, surrogate_function=surrogate.ATan(), detach_reset=True)
    functional.set_step_mode(net, "m")
    assert sum(isinstance(m, BPSN) for m in net.modules()) == 4
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    before = [p.detach().clone() for p in net.parameters()]
    x = torch.rand(3, 2, 1, 28, 28)
    out = net(x).mean(0)
    loss = nn.functional.cross_entropy(out, torch.tensor([1, 7]))
    loss.backward()
    assert any(m.a_f.grad is not None for m in net.modules() if isinstance(m, BPSN))
    opt.step()
    assert any(not torch.equal(a, b) for a, b in zip(before, net.parameters()))
    functional.reset_net(net)


def test_learnable_threshold_and_gradients_reach_every_parameter():
    node = BPSN(channels=3, learnable_threshold=True, v_threshold=0.2)
    assert isinstance(node.v_threshold, nn.Parameter)
    names = {n for n, _ in node.named_parameters()}
    assert names == {"a_f", "a_b", "a_m", "v_threshold"}
    node(torch.randn(6, 2, 3) + 0.2).sum().backward()
    for name, p in node.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert set(BPSN(direction="forward").state_dict()) == {"a_f", "v_threshold"}


# -- misuse ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "x, mask, error, match",
    [
        (torch.randn(5), None, ValueError, r"\[T, N, \*\]"),
        (torch.randn(0, 2, 3), None, ValueError, "T=0"),
        (torch.randn(5, 2, 4), None, ValueError, "last dimension"),
        (torch.randn(5, 2, 3), torch.ones(5, 3, dtype=torch.bool), ValueError, r"mask must have shape \[5, 2\]"),
        (torch.randn(5, 2, 3), torch.ones(5, 2), TypeError, "bool or integer"),
        (torch.randint(0, 2, (5, 2, 3)), None, TypeError, "floating-point"),
    ],
    ids=["rank", "T0", "channels", "mask-shape", "mask-dtype", "int-input"],
)
def test_bad_input_is_a_clear_error(x, mask, error, match):
    with pytest.raises(error, match=match):
        BPSN(channels=3)(x, mask=mask)


def test_bad_configuration_is_a_clear_error(monkeypatch):
    with pytest.raises(ValueError, match="backend='cuda-magic'|backend="):
        BPSN(backend="cuda-magic")
    with pytest.raises(ValueError, match="direction"):
        BPSN(direction="sideways")
    with pytest.raises(ValueError, match="tau must be"):
        BPSN(tau=1.0)
    with pytest.raises(ValueError, match="no reset"):
        BPSN(v_reset=-1.0)
    monkeypatch.setenv(ENV_VAR, "nonsense")
    with pytest.raises(ValueError, match=ENV_VAR):
        BPSN()(torch.randn(3, 1, 2))


def test_fused_backend_on_cpu_is_refused_and_env_override_works(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(ValueError, match="CUDA tensors only"):
        BPSN(backend="triton")(torch.randn(3, 1, 2))
    monkeypatch.setenv(ENV_VAR, "torch")
    node = BPSN()
    node(torch.randn(3, 1, 2))
    assert node.implementation == "torch"


def test_non_fused_surrogate_falls_back_to_torch_with_one_warning(monkeypatch):
    class Custom(surrogate.SurrogateFunctionBase):
        def __init__(self):
            super().__init__(alpha=1.0, spiking=True)

        @staticmethod
        def spiking_function(x, alpha):
            return surrogate.heaviside(x)

        @staticmethod
        def primitive_function(x, alpha):
            return torch.sigmoid(x)

    import sj_bert.ops.bpsn.dispatch as dispatch

    monkeypatch.setattr(dispatch, "_warned_fallbacks", set())
    node = BPSN(backend="triton", surrogate_function=Custom())
    with pytest.warns(UserWarning, match="no fused kernel"):
        node(torch.randn(3, 1, 2))
    assert node.implementation == "torch"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        node(torch.randn(3, 1, 2))  # warned once only


def test_integer_mask_selects_steps_without_scaling():
    """HF attention masks are int64; any non-zero entry means 'real step', never a gain."""
    node = BPSN(v_threshold=0.5)
    x = torch.randn(6, 2, 3)
    ones = torch.ones(6, 2, dtype=torch.long)
    assert torch.equal(node(x, mask=2 * ones), node(x, mask=ones.bool()))
    assert set(node(x, mask=2 * ones).unique().tolist()) <= {0.0, 1.0}


def test_reset_parameters_restores_initial_values():
    node = BPSN(tau=3.0, v_threshold=0.4, channels=2, learnable_threshold=True)
    expected = {k: v.clone() for k, v in node.state_dict().items()}
    with torch.no_grad():
        for p in node.parameters():
            p.fill_(7e22)
    node.reset_parameters()
    for k, v in node.state_dict().items():
        torch.testing.assert_close(v, expected[k])
    torch.testing.assert_close(node.decays()[0], torch.full((2,), 2 / 3))
