"""The chunked torch path (``chunk.py``, the GPU fallback and the CPU path inside ``torch.compile``) against the ``[T, T]`` reference:
spikes, potential and the gradients of x and every parameter; and the node's cache of
what it derives from its parameters."""

from __future__ import annotations

import pytest
import torch
from spikingjelly.activation_based import surrogate

from sj_bert import BPSN, testing
from sj_bert import neuron as neuron_module
from sj_bert.ops.bpsn import CHUNK, DecayTables, bpsn_chunk, bpsn_reference
from sj_bert.testing import bpsn_naive
from sj_bert.ops.bpsn.reference import DIRECTIONS

B, C = 3, 4
PARAMS = ("lam_f", "lam_b", "alpha", "threshold")

# T from one step to past one chunk (CHUNK = 32) and past CHUNK chunks (the chunk-level
# scans then run in chunks of their own); odd lengths, so the last chunk is partial
GRID = [
    (T, direction, dtype, per_channel)
    for T in (1, 7, CHUNK, CHUNK + 1, 100, CHUNK * CHUNK + 37)
    for direction in DIRECTIONS
    for dtype in (torch.float32, torch.float64)
    for per_channel in (False, True)
]


@pytest.mark.parametrize(
    "T,direction,dtype,per_channel", GRID, ids=[f"T{c[0]}-{c[1]}-{str(c[2])[6:]}-{'perchannel' if c[3] else 'shared'}" for c in GRID]
)
def test_matches_reference(T, direction, dtype, per_channel):
    """Padded batches (sample 0 full, odd ones right-padded, even ones left-padded)."""
    case = testing.make_case(T, B, C, per_channel, dtype, seed=T)
    testing.compare(bpsn_chunk, case, direction, dtype, fused_signature=False)


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_ternary_spikes_match_reference(direction):
    case = testing.make_case(70, B, C, True, torch.float32, seed=7)
    testing.compare(bpsn_chunk, case, direction, torch.float32, fused_signature=False, ternary=True)


def _with_chunk(chunk: int):
    """``bpsn_chunk`` with chunks of ``chunk`` steps, for many chunks at small T."""

    def call(x, mask, lam_f, lam_b, alpha, threshold, surrogate_function, direction):
        tables = DecayTables(lam_f, lam_b, alpha, direction, chunk=chunk)
        return bpsn_chunk(x, mask, lam_f, lam_b, alpha, threshold, surrogate_function, direction, tables)

    return call


@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("chunk", [1, 2, 3, 5])
def test_small_chunks_and_deep_recursion(direction, chunk):
    """Chunks of 1-5 steps at T=61: chunk-level scans several levels deep."""
    case = testing.make_case(61, B, C, True, torch.float64, seed=chunk)
    testing.compare(_with_chunk(chunk), case, direction, torch.float64, fused_signature=False)


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_unmasked_and_potential_only(direction):
    case = testing.make_case(45, B, C, True, torch.float32, masked=False, seed=2)
    testing.compare(bpsn_chunk, case, direction, torch.float32, fused_signature=False)
    testing.compare(bpsn_chunk, case, direction, torch.float32, fused_signature=False, spike_loss=False)


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_extreme_decays(direction):
    """Decays from 1e-30 to 0.999 in one layer, T=300: the smallest caps the chunk (its
    powers would leave fp32's range), the result stays the reference's."""
    case = testing.make_case(300, B, C, True, torch.float32, seed=3)
    case["lam_f"] = torch.tensor([1e-30, 1e-3, 0.5, 0.999])
    case["lam_b"] = case["lam_f"].flip(0)
    testing.compare(bpsn_chunk, case, direction, torch.float32, fused_signature=False)


def test_chunk_is_capped_by_the_smallest_decay():
    one = torch.ones(1)
    assert DecayTables(torch.tensor([0.5, 0.9]), one * 0.5, one * 0.5, "bi").chunk == CHUNK
    assert 1 < DecayTables(torch.tensor([1e-3, 0.9]), one * 0.5, one * 0.5, "forward").chunk < CHUNK
    assert DecayTables(torch.tensor([1e-3]), one * 0.5, one * 0.5, "backward").chunk == CHUNK  # lam_f unused
    assert DecayTables(torch.tensor([1e-3]).double(), one.double(), one.double(), "forward").chunk == CHUNK


@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("per_channel", [False, True], ids=["shared", "perchannel"])
def test_gradcheck_float64(direction, per_channel):
    """Float64 gradcheck of every input across chunk boundaries (chunks of 4, T=11), with
    the smooth form of the surrogate so that the threshold's gradient is checked too."""
    g = torch.Generator().manual_seed(0)
    P = 3 if per_channel else 1
    x = torch.randn(11, 2, 3, generator=g, dtype=torch.float64, requires_grad=True)
    mask = torch.ones(11, 2, dtype=torch.bool)
    mask[8:, 1] = False
    params = [(0.2 + 0.7 * torch.rand(P, generator=g, dtype=torch.float64)).requires_grad_() for _ in PARAMS]
    sg = surrogate.Sigmoid(alpha=2.0, spiking=False)
    chunked = _with_chunk(4)

    def fn(x, lam_f, lam_b, alpha, threshold):
        return chunked(x, mask, lam_f, lam_b, alpha, threshold, sg, direction)

    assert torch.autograd.gradcheck(fn, (x, *params), eps=1e-6, atol=1e-6)


def test_matches_naive_loop():
    """The equations written as a per-step loop, T=200 in 7 chunks of 32."""
    g = torch.Generator().manual_seed(5)
    x = torch.randn(200, 2, 6, generator=g)
    params = [0.1 + 0.85 * torch.rand(6, generator=g) for _ in range(3)] + [torch.full((6,), 0.5)]
    for direction in DIRECTIONS:
        _, v = bpsn_chunk(x, None, *params, surrogate.ATan(), direction)
        _, expected = bpsn_naive(x, None, *params, surrogate.ATan(), direction)
        torch.testing.assert_close(v, expected, rtol=1e-5, atol=1e-5)


def test_strided_input_and_two_dim_input():
    """``x`` as a transposed view (the encoder's first layer sees one), and ``[T, C]``."""
    x = torch.randn(2, 40, 5).transpose(0, 1)  # [T, B, C], not contiguous
    p = torch.full((5,), 0.6)
    spike, v = bpsn_chunk(x, None, p, p, p, p, surrogate.ATan())
    expected_spike, expected_v = bpsn_reference(x, None, p, p, p, p, surrogate.ATan())
    torch.testing.assert_close(v, expected_v)
    spike, v = bpsn_chunk(x[:, 0], None, p, p, p, p, surrogate.ATan())
    torch.testing.assert_close(v, expected_v[:, 0])


def test_input_errors():
    x = torch.randn(4, 2, 3)
    p = torch.full((1,), 0.5)
    with pytest.raises(ValueError, match="3 channels"):
        bpsn_chunk(x, None, torch.full((2,), 0.5), p, p, p, surrogate.ATan())
    with pytest.raises(ValueError, match="direction"):
        bpsn_chunk(x, None, p, p, p, p, surrogate.ATan(), "sideways")
    with pytest.raises(ValueError, match="built for direction='bi'"):
        bpsn_chunk(x, None, p, p, p, p, surrogate.ATan(), "forward", DecayTables(p, p, p, "bi"))
    with pytest.raises(ValueError, match="chunk"):
        DecayTables(p, p, p, "bi", chunk=0)


# -- the node: which path ran, and the cache of parameter-derived tables --------------------


def test_node_runs_chunked_path_and_reference_on_request():
    g = torch.Generator().manual_seed(6)
    x = torch.randn(70, 2, 4, generator=g)
    mask = torch.ones(70, 2, dtype=torch.bool)
    mask[:9, 1] = False
    outputs = {}
    for backend in ("torch", "reference"):
        node = BPSN(tau=3.0, channels=4, backend=backend, store_v_seq=True)
        outputs[backend] = (node(x, mask=mask), node.v_seq)
        assert node.implementation == backend
    torch.testing.assert_close(outputs["torch"][1], outputs["reference"][1], rtol=1e-5, atol=1e-6)


@pytest.fixture
def builds(monkeypatch):
    """Counts the node's ``DecayTables`` builds."""
    count = {"n": 0}

    class Counting(DecayTables):
        def __init__(self, *args, **kwargs):
            count["n"] += 1
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(neuron_module, "DecayTables", Counting)
    return count


def _expected(node: BPSN, x: torch.Tensor) -> torch.Tensor:
    lam_f, lam_b, alpha = node.decays()
    return bpsn_reference(x, None, lam_f, lam_b, alpha, node.v_threshold, node.surrogate_function, node.direction)[1]


def test_eval_builds_tables_once_and_rebuilds_when_parameters_change(builds):
    node = BPSN(tau=2.0, channels=4, store_v_seq=True, backend="torch").eval()
    x = torch.randn(50, 2, 4)
    with torch.no_grad():
        for _ in range(3):
            node(x)
        assert builds["n"] == 1
        node(x[:7])  # another length: the same tables
        assert builds["n"] == 1
        node.a_f.add_(0.5)  # an optimizer step, in place
        node(x)
        assert builds["n"] == 2
        torch.testing.assert_close(node.v_seq, _expected(node, x))
        state = {k: v + 0.25 for k, v in node.state_dict().items()}
        node.load_state_dict(state)
        node(x)
        assert builds["n"] == 3
        torch.testing.assert_close(node.v_seq, _expected(node, x))
        node.a_m = torch.nn.Parameter(node.a_m.detach() - 1.0)  # a replaced parameter
        node(x)
        assert builds["n"] == 4
        torch.testing.assert_close(node.v_seq, _expected(node, x))
        node.double()
        node(x.double())
        assert builds["n"] == 5 and node.v_seq.dtype == torch.float64
        torch.testing.assert_close(node.v_seq, _expected(node, x.double()))


def test_training_builds_in_the_graph_every_call(builds):
    """With autograd reaching the parameters, every call builds (and gradients arrive)."""
    node = BPSN(channels=4, backend="torch")
    x = torch.randn(40, 2, 4)
    for _ in range(2):
        node(x).sum().backward()
    assert builds["n"] == 2
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in node.parameters())


def test_tables_built_in_inference_mode_serve_autograd_later():
    """Built under ``inference_mode``, then used with autograd on the input (frozen
    parameters, as when explaining a prediction): no inference-tensor error. T=300 also
    builds the chunk-level scans' own chunk-level tables, lazily."""
    node = BPSN(channels=4, backend="torch").eval().requires_grad_(False)
    x = torch.randn(300, 2, 4)
    with torch.inference_mode():
        node(x)
    x.requires_grad_()
    surrogate_spikes = node(x)
    surrogate_spikes.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
