"""The parallel torch path against the DESIGN equations written as a per-step loop."""

import zlib

import pytest
import torch
from spikingjelly.activation_based import surrogate

from sj_bert.ops.bpsn import bpsn_reference
from sj_bert.testing import bpsn_naive
from sj_bert.ops.bpsn.reference import DIRECTIONS

SHAPES = [(1, 3, 4), (2, 1, 5), (7, 2, 3), (16, 4, 6), (33, 3, 2, 5)]


def _params(C, per_channel, dtype=torch.float32, generator=None):
    P = C if per_channel else 1
    lam_f = torch.rand(P, generator=generator, dtype=dtype) * 0.9 + 0.05
    lam_b = torch.rand(P, generator=generator, dtype=dtype) * 0.9 + 0.05
    alpha = torch.rand(P, generator=generator, dtype=dtype) * 0.9 + 0.05
    threshold = torch.rand(P, generator=generator, dtype=dtype) + 0.5
    return lam_f, lam_b, alpha, threshold


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("per_channel", [False, True], ids=["scalar", "per_channel"])
@pytest.mark.parametrize("masked", [False, True], ids=["nomask", "mask"])
def test_reference_matches_naive_loop(shape, direction, per_channel, masked):
    # a seed stable across processes (str hashes are salted per process: hash() is not)
    g = torch.Generator().manual_seed(zlib.crc32(repr((shape, direction, per_channel, masked)).encode()))
    x = torch.randn(shape, generator=g) * 2
    mask = (torch.rand(shape[:2], generator=g) > 0.3) if masked else None
    params = _params(shape[-1], per_channel, generator=g)
    sg = surrogate.ATan()
    s_ref, v_ref = bpsn_reference(x, mask, *params, sg, direction)
    s_loop, v_loop = bpsn_naive(x, mask, *params, sg, direction)
    torch.testing.assert_close(v_ref, v_loop, rtol=1e-5, atol=1e-6)
    away = (v_loop - params[3]).abs() > 1e-4
    assert torch.equal(s_ref[away], s_loop[away])
    if masked:
        assert s_ref[~mask].abs().sum() == 0


def test_reference_random_parameters_and_extreme_decays():
    """Decays near 0 and 1 (long memory, T=200): the matrix form stays exact."""
    x = torch.randn(200, 2, 3)
    lam = torch.tensor([1e-3, 0.5, 0.999])
    params = (lam, lam.flip(0), torch.tensor([0.1, 0.5, 0.9]), torch.ones(3))
    for direction in DIRECTIONS:
        _, v_ref = bpsn_reference(x, None, *params, surrogate.Sigmoid(), direction)
        _, v_loop = bpsn_naive(x, None, *params, surrogate.Sigmoid(), direction)
        torch.testing.assert_close(v_ref, v_loop, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("per_channel", [False, True], ids=["scalar", "per_channel"])
def test_reference_gradcheck_float64(direction, per_channel):
    """Float64 gradcheck of every input. The smooth (non-spiking) form of the surrogate
    makes the forward differentiable, so the threshold gradient is checked too."""
    g = torch.Generator().manual_seed(0)
    T, B, C = 5, 2, 3
    x = torch.randn(T, B, C, generator=g, dtype=torch.float64, requires_grad=True)
    mask = torch.ones(T, B, dtype=torch.bool)
    mask[3:, 1] = False
    params = [p.requires_grad_() for p in _params(C, per_channel, torch.float64, g)]
    sg = surrogate.Sigmoid(alpha=2.0, spiking=False)

    def fn(x, lam_f, lam_b, alpha, threshold):
        spike, v = bpsn_reference(x, mask, lam_f, lam_b, alpha, threshold, sg, direction)
        return spike, v

    assert torch.autograd.gradcheck(fn, (x, *params), eps=1e-6, atol=1e-6)


def test_reference_spike_gradient_uses_surrogate():
    """With spiking surrogates the backward is the surrogate's, not zero."""
    x = torch.randn(6, 2, 4, requires_grad=True)
    params = [p.requires_grad_() for p in _params(4, True)]
    spike, _ = bpsn_reference(x, None, *params, surrogate.ATan(), "bi")
    assert set(spike.unique().tolist()) <= {0.0, 1.0}
    spike.sum().backward()
    assert x.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in params)


@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("per_channel", [False, True], ids=["scalar", "per_channel"])
def test_ternary_reference_matches_naive_loop_and_gradcheck(direction, per_channel):
    """Ternary spikes: -1 below -threshold, +1 above threshold, 0 between and at padding,
    as the per-step loop says; float64 gradcheck of every input through both thresholds."""
    g = torch.Generator().manual_seed(11)
    x = torch.randn(23, 3, 4, generator=g, dtype=torch.float64) * 2
    mask = torch.rand(23, 3, generator=g) > 0.3
    params = _params(4, per_channel, torch.float64, generator=g)
    s_ref, v_ref = bpsn_reference(x, mask, *params, surrogate.ATan(), direction, ternary=True)
    s_loop, _ = bpsn_naive(x, mask, *params, surrogate.ATan(), direction, ternary=True)
    assert torch.equal(s_ref, s_loop)
    th = params[3]
    assert torch.equal(s_ref, ((v_ref >= th).double() - (v_ref <= -th).double()) * mask[..., None])
    assert (s_ref == -1).any() and (s_ref == 1).any()
    smooth = surrogate.Sigmoid(alpha=2.0, spiking=False)
    leaves = [p.clone().requires_grad_() for p in (x, *params)]

    def fn(x, lam_f, lam_b, alpha, threshold):
        return bpsn_reference(x, mask, lam_f, lam_b, alpha, threshold, smooth, direction, ternary=True)

    assert torch.autograd.gradcheck(fn, tuple(leaves), eps=1e-6, atol=1e-6)
