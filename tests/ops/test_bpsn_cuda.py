"""Fused BPSN kernels on a real GPU (compiled Triton, CuPy) against the torch path.

Skipped without CUDA; the CuPy cases are skipped without CuPy. ``TRITON_INTERPRET`` is
removed for these tests so Triton runs its compiled kernels.
"""

from __future__ import annotations

import pytest
import torch
from spikingjelly.activation_based import surrogate

from sj_bert import BPSN

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

B, C = 4, 48  # N = B * 2 * C = 384 columns: more than one Triton program, a ragged last one
DIRECTIONS = ("bi", "forward", "backward")
DTYPES = (torch.float32, torch.float16, torch.bfloat16)


@pytest.fixture(autouse=True)
def _compiled(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)


def _kernel(backend: str):
    pytest.importorskip(backend)
    if backend == "triton":
        from sj_bert.ops.bpsn.triton import bpsn_triton

        return bpsn_triton
    from sj_bert.ops.bpsn.cupy import bpsn_cupy

    return bpsn_cupy


GRID = [
    (backend, T, direction, dtype, per_channel)
    for backend in ("triton", "cupy")
    for T in (1, 37, 300)
    for direction in DIRECTIONS
    for dtype in DTYPES
    for per_channel in (False, True)
]


def _id(backend, T, direction, dtype, per_channel):
    return f"{backend}-T{T}-B{B}-C{C}-{direction}-{str(dtype)[6:]}-{'perchannel' if per_channel else 'shared'}"


@pytest.mark.parametrize("backend,T,direction,dtype,per_channel", GRID, ids=[_id(*c) for c in GRID])
def test_matches_reference(bpsn_cases, backend, T, direction, dtype, per_channel):
    kernel = _kernel(backend)
    case = bpsn_cases.make_case(T, B, C, per_channel, dtype, device="cuda", seed=T)
    bpsn_cases.compare(kernel, case, direction, dtype)


@pytest.mark.parametrize("backend", ("triton", "cupy"))
@pytest.mark.parametrize(
    "name", ("Sigmoid", "ATan", "Erf", "PiecewiseQuadratic", "PiecewiseExp", "SoftSign", "SuperSpike")
)
def test_surrogates(bpsn_cases, backend, name):
    kernel = _kernel(backend)
    case = bpsn_cases.make_case(64, B, C, True, torch.float32, device="cuda", seed=1)
    bpsn_cases.compare(kernel, case, "bi", torch.float32, bpsn_cases.surrogate_by_name(name), v_loss=False)


@pytest.mark.parametrize("backend", ("triton", "cupy"))
@pytest.mark.parametrize("dtype", (torch.float32, torch.bfloat16), ids=str)
def test_long_sequence_unmasked(bpsn_cases, backend, dtype):
    """T = 1024 over 16k columns, no mask, gradient through the potential only. The
    parameter gradients sum 16M random-signed terms in fp32 on both sides: looser."""
    kernel = _kernel(backend)
    case = bpsn_cases.make_case(1024, 8, 1024, False, dtype, device="cuda", masked=False, seed=2)
    bpsn_cases.compare(kernel, case, "bi", dtype, spike_loss=False, tolerances={"params": (1e-3, 1e-3)})


@pytest.mark.parametrize("backend", ("triton", "cupy"))
def test_non_contiguous_input(bpsn_cases, backend):
    kernel = _kernel(backend)
    case = bpsn_cases.make_case(16, B, C, True, torch.float32, device="cuda", seed=3)
    case["x"] = case["x"].transpose(0, 1).contiguous().transpose(0, 1)  # [T, B, 2, C] view, not contiguous
    assert not case["x"].is_contiguous()
    bpsn_cases.compare(kernel, case, "forward", torch.float32)


@pytest.mark.parametrize("backend", ("triton", "cupy"))
def test_node_matches_torch(bpsn_cases, backend):
    """The node on CUDA: fused backend vs torch path, outputs and parameter gradients."""
    _kernel(backend)
    g = torch.Generator().manual_seed(4)
    x0 = torch.randn(50, B, C, generator=g).cuda()
    mask = bpsn_cases.padding_mask(50, B, g, device="cuda")
    results = {}
    for impl in ("torch", backend):
        torch.manual_seed(0)
        node = BPSN(tau=3.0, surrogate_function=surrogate.Erf(), channels=C, learnable_threshold=True, backend=impl)
        node = node.cuda()
        x = x0.clone().requires_grad_()
        spike = node(x, mask=mask)
        spike.sum().backward()
        assert node.implementation == impl
        results[impl] = (spike.detach(), x.grad, {n: p.grad for n, p in node.named_parameters()})
    (s0, gx0, gp0), (s1, gx1, gp1) = results["torch"], results[backend]
    assert (s0 != s1).float().mean() < 1e-3  # only at |v - threshold| ~ rounding
    torch.testing.assert_close(gx1, gx0, rtol=1e-4, atol=1e-5)
    for name in gp0:
        torch.testing.assert_close(gp1[name], gp0[name], rtol=1e-4, atol=1e-4, msg=name)


def test_auto_backend_is_triton():
    pytest.importorskip("triton")
    assert BPSN().resolve_implementation(torch.device("cuda")) == "triton"


def test_torch_compile_inductor(bpsn_cases):
    """The registered op inside an Inductor-compiled function, forward and backward."""
    from sj_bert.ops.bpsn.triton import bpsn_triton

    case = bpsn_cases.make_case(33, B, C, True, torch.bfloat16, device="cuda", seed=5)
    params = [case[k].requires_grad_() for k in ("lam_f", "lam_b", "alpha", "threshold")]
    x = case["x"].requires_grad_()

    def loss(x, mask, *params):
        spike, v = bpsn_triton(torch.tanh(x), mask, *params, "bi", 1, 2.0)
        return (spike.float() * case["w_spike"]).sum() + v.square().mean()

    compiled = torch.compile(loss, fullgraph=True)
    expected = torch.autograd.grad(loss(x, case["mask"], *params), [x, *params])
    actual = torch.autograd.grad(compiled(x, case["mask"], *params), [x, *params])
    # Inductor fuses tanh and its backward, rounding to bf16 once where eager rounds per op:
    # x's gradient differs by a bf16 ulp, so it gets the bf16 tolerance of every other test
    rtol, atol = bpsn_cases.tolerances[torch.bfloat16]["grad_x"]
    torch.testing.assert_close(actual[0], expected[0], rtol=rtol, atol=atol * float(expected[0].abs().max()))
    for a, e in zip(actual[1:], expected[1:]):
        torch.testing.assert_close(a, e, rtol=1e-3, atol=1e-3)
