"""The fused kernels' op boundary (``sj_bert/ops/bpsn/autograd.py``): eager calls take the
plain ``autograd.Function``, traced ones the ``torch.library`` custom op, and both give
the same outputs and gradients over the same launchers. On CPU, in Triton's interpreter."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

from sj_bert.ops.bpsn import autograd  # noqa: E402
from sj_bert.ops.bpsn.triton import bpsn_triton  # noqa: E402


@pytest.fixture(autouse=True)
def _interpret(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")


def _leaves(per_channel: bool, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    T, B, C = 7, 3, 5
    P = C if per_channel else 1
    x = (1.5 * torch.randn(T, B, C, generator=generator)).requires_grad_()
    params = [(0.2 + 0.6 * torch.rand(P, generator=generator)).requires_grad_() for _ in range(3)]
    threshold = (0.5 + 0.1 * torch.rand(P, generator=generator)).requires_grad_()
    mask = torch.ones(T, B, dtype=torch.bool)
    mask[5:, 1] = False  # right padding
    mask[:2, 2] = False  # left padding
    weights = torch.randn(T, B, C, generator=generator), torch.randn(T, B, C, generator=generator)
    return x, mask, [*params, threshold], weights


def _grads(call, x, mask, params, weights, direction):
    spike, v = call(x, mask, *params, direction)
    loss = (spike * weights[0]).sum() + (v * weights[1]).sum()
    return [spike.detach(), v.detach(), *torch.autograd.grad(loss, [x, *params], allow_unused=True)]


def test_eager_calls_take_the_autograd_function():
    x, mask, params, _ = _leaves(per_channel=True)
    spike, _ = bpsn_triton(x, mask, *params, "bi")
    assert type(spike.grad_fn).__name__ == "BPSNFunctionBackward"


@pytest.mark.parametrize("direction", ["bi", "forward", "backward"])
@pytest.mark.parametrize("per_channel", [True, False], ids=["perchannel", "shared"])
def test_custom_op_and_eager_route_agree(direction, per_channel):
    """Same launchers, two routes: outputs and every gradient equal (unused parameters get
    none on either route)."""
    x, mask, params, weights = _leaves(per_channel)

    def through_op(x, mask, *args):
        *params, direction = args
        return torch.ops.sj_bert.bpsn_fwd(x, mask, *params, direction, 1, 2.0, "triton")

    eager = _grads(lambda *a: bpsn_triton(*a[:-1], a[-1], 1, 2.0), x, mask, params, weights, direction)
    traced = _grads(through_op, x, mask, params, weights, direction)
    for name, a, b in zip(["spike", "v", "x", "lam_f", "lam_b", "alpha", "threshold"], eager, traced):
        if a is None or b is None:
            assert a is None and b is None or torch.count_nonzero(a if b is None else b) == 0, name
            continue
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=lambda m: f"{name}: {m}")


def test_opcheck_with_the_backend_named():
    x, mask, params, _ = _leaves(per_channel=True, seed=3)
    torch.library.opcheck(torch.ops.sj_bert.bpsn_fwd.default, (x, mask, *params, "bi", 1, 2.0, "triton"))


def test_unknown_backend_is_named():
    with pytest.raises(ValueError, match="no fused BPSN backend 'metal'"):
        autograd.launchers("metal")


def test_cupy_on_cpu_tensors_is_refused_before_any_work():
    x, mask, params, _ = _leaves(per_channel=True)
    with pytest.raises(ValueError, match="bpsn_cupy runs on CUDA tensors only"):
        autograd.bpsn_fused("cupy", x, mask, *params)
