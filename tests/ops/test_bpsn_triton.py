"""Triton BPSN kernels against the plain-torch reference, on CPU in Triton's interpreter.

Triton 3.x decides between compiled and interpreted kernels when ``@triton.jit`` runs
(``TRITON_INTERPRET`` at import time), which is fragile inside one pytest process. The
BPSN kernels sidestep it (CPU tensors always run interpreted twins of the kernels, see
``sj_bert/ops/bpsn/triton.py``), so ``TRITON_INTERPRET=1`` is set per test, only for the
dispatcher, which accepts ``backend="triton"`` on CPU only under it. Nothing leaks into the
CUDA tests, which must run the compiled kernels.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

from spikingjelly.activation_based import surrogate  # noqa: E402

from sj_bert import BPSN  # noqa: E402
from sj_bert.ops.bpsn.triton import bpsn_triton  # noqa: E402

B, C = 3, 4
DIRECTIONS = ("bi", "forward", "backward")
SURROGATES = ("Sigmoid", "ATan", "Erf", "PiecewiseQuadratic", "PiecewiseExp", "SoftSign", "SuperSpike", "ATan-alpha5")


@pytest.fixture(autouse=True)
def _interpret(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")


GRID = [
    (T, direction, dtype, per_channel)
    for T in (1, 7, 33)
    for direction in DIRECTIONS
    for dtype in (torch.float32, torch.float16, torch.bfloat16)
    for per_channel in (False, True)
]


def _id(T, direction, dtype, per_channel):
    return f"T{T}-B{B}-C{C}-{direction}-{str(dtype)[6:]}-{'perchannel' if per_channel else 'shared'}"


@pytest.mark.parametrize("T,direction,dtype,per_channel", GRID, ids=[_id(*case) for case in GRID])
def test_matches_reference(bpsn_cases, T, direction, dtype, per_channel):
    """Spikes, potential and the gradients of x and all four parameters, padded batches."""
    case = bpsn_cases.make_case(T, B, C, per_channel, dtype, seed=T)
    bpsn_cases.compare(bpsn_triton, case, direction, dtype)


@pytest.mark.parametrize("name", SURROGATES)
def test_surrogates(bpsn_cases, name):
    """Every fused surrogate, through the spikes only (no gradient of v)."""
    case = bpsn_cases.make_case(7, B, C, True, torch.float32, seed=1)
    bpsn_cases.compare(bpsn_triton, case, "bi", torch.float32, bpsn_cases.surrogate_by_name(name), v_loss=False)


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_unmasked_and_potential_only(bpsn_cases, direction):
    """No mask, and a loss on the potential alone (no gradient through the spikes)."""
    case = bpsn_cases.make_case(9, B, C, True, torch.float32, masked=False, seed=2)
    bpsn_cases.compare(bpsn_triton, case, direction, torch.float32)
    bpsn_cases.compare(bpsn_triton, case, direction, torch.float32, spike_loss=False)


def test_two_dim_input(bpsn_cases):
    """``x`` ``[T, B]``: the last dimension is both batch and channel, as in the reference."""
    case = bpsn_cases.make_case(5, 1, 6, True, torch.float32, seed=3)
    case.update({k: case[k][:, 0, 0] for k in ("x", "w_spike", "w_v")})  # [T, 6]
    case["mask"] = None
    bpsn_cases.compare(bpsn_triton, case, "bi", torch.float32)


def _node(backend: str) -> BPSN:
    torch.manual_seed(0)
    node = BPSN(tau=3.0, tau_backward=1.5, v_threshold=0.6, surrogate_function=surrogate.Sigmoid(),
                channels=C, learnable_threshold=True, backend=backend, store_v_seq=True)
    with torch.no_grad():
        for p in node.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return node


def test_node_triton_matches_torch():
    """``BPSN(backend="triton")`` and ``backend="torch"``: spikes, v, and the gradients of
    the input and of the node's logits (through torch's sigmoid) and threshold."""
    g = torch.Generator().manual_seed(4)
    x0 = torch.randn(11, B, C, generator=g)
    mask = torch.ones(11, B, dtype=torch.bool)
    mask[8:, 1] = False
    mask[:3, 2] = False
    results = {}
    for backend in ("torch", "triton"):
        node = _node(backend)
        x = x0.clone().requires_grad_()
        spike = node(x, mask=mask)
        (spike * torch.linspace(-1, 1, C)).sum().backward()
        assert node.implementation == backend
        results[backend] = (spike, node.v_seq, x.grad, {n: p.grad for n, p in node.named_parameters()})
    (s0, v0, gx0, gp0), (s1, v1, gx1, gp1) = results["torch"], results["triton"]
    torch.testing.assert_close(v1, v0, rtol=1e-5, atol=1e-6)
    decided = (v0 - 0.6).abs() > 1e-3
    assert torch.equal(s1.detach()[decided], s0.detach()[decided])
    torch.testing.assert_close(gx1, gx0, rtol=1e-4, atol=1e-6)
    assert set(gp1) == {"a_f", "a_b", "a_m", "v_threshold"}
    for name in gp0:
        torch.testing.assert_close(gp1[name], gp0[name], rtol=1e-4, atol=1e-5, msg=name)


def _op_args(bpsn_cases):
    case = bpsn_cases.make_case(5, 2, 3, True, torch.float32, seed=5)
    params = [case[k].requires_grad_() for k in ("lam_f", "lam_b", "alpha", "threshold")]
    return case["x"].requires_grad_(), case["mask"], params


def test_opcheck(bpsn_cases):
    """Schema, fake tensor, autograd registration and AOT dispatch of the custom op."""
    x, mask, params = _op_args(bpsn_cases)
    torch.library.opcheck(torch.ops.sj_bert.bpsn_fwd.default, (x, mask, *params, "bi", 1, 2.0))


def test_torch_compile_fullgraph(bpsn_cases):
    """``torch.compile`` traces the op (fake) and its backward without a graph break."""
    x, mask, params = _op_args(bpsn_cases)

    def loss(x, mask, *params):
        spike, v = bpsn_triton(x, mask, *params, "bi", 1, 2.0)
        return spike.sum() + v.square().mean()

    compiled = torch.compile(loss, backend="aot_eager", fullgraph=True)
    expected = torch.autograd.grad(loss(x, mask, *params), [x, *params])
    actual = torch.autograd.grad(compiled(x, mask, *params), [x, *params])
    for a, e in zip(actual, expected):
        torch.testing.assert_close(a, e)


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_fires_at_threshold(direction):
    """Heaviside(0) = 1, as SpikingJelly's: ``v == threshold`` fires; masked steps never do."""
    x = torch.tensor([[1.0, 1.0]])  # [T=1, B=2]; v = m x exactly in every direction
    half, one = torch.full((1,), 0.5), torch.ones(1)
    spike, v = bpsn_triton(x, torch.tensor([[True, False]]), half, half, half, one, direction)
    assert v.tolist() == [[1.0, 0.0]] and spike.tolist() == [[1.0, 0.0]]
    spike, _ = bpsn_triton(x, None, half, half, half, one, direction)
    assert spike.tolist() == [[1.0, 1.0]]


def test_input_errors():
    x = torch.randn(4, 2, 3)
    p = torch.full((1,), 0.5)
    with pytest.raises(TypeError, match="float32, float16 or bfloat16"):
        bpsn_triton(x.double(), None, p, p, p, p)
    with pytest.raises(ValueError, match="1 or C=3"):
        bpsn_triton(x, None, torch.full((2,), 0.5), p, p, p)
    with pytest.raises(ValueError, match="mask"):
        bpsn_triton(x, torch.ones(4, 3, dtype=torch.bool), p, p, p, p)
    with pytest.raises(ValueError, match="direction"):
        bpsn_triton(x, None, p, p, p, p, "sideways")
