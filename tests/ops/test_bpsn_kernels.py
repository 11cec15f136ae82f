"""The fused BPSN kernels against the plain-torch reference, over (backend, device).

- ``triton-cpu``: Triton's interpreter. Triton 3.x decides between compiled and interpreted
  kernels when ``@triton.jit`` runs (``TRITON_INTERPRET`` at import time), which is fragile
  inside one pytest process. The BPSN kernels sidestep it (CPU tensors always run interpreted
  twins of the kernels, see ``sj_bert/ops/bpsn/triton.py``), so ``TRITON_INTERPRET=1`` is set
  per test, only for the dispatcher, which accepts ``backend="triton"`` on CPU only under it.
- ``triton-cuda``, ``cupy-cuda``: the compiled kernels on a real GPU (marked ``cuda``, skipped
  without CUDA; CuPy's skipped without CuPy). ``TRITON_INTERPRET`` is removed for them, so
  Triton runs its compiled kernels.

The comparison itself (inputs, one forward and backward, tolerances) is :mod:`sj_bert.testing`.
"""

from __future__ import annotations

import pytest
import torch
from spikingjelly.activation_based import surrogate

from sj_bert import BPSN, testing
from sj_bert.modeling.configuration_spiking_bert import FUSED_SURROGATES
from sj_bert.ops.bpsn.reference import DIRECTIONS

DTYPES = (torch.float32, torch.float16, torch.bfloat16)
ON_CUDA = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]
# (backend, device) pairs, as test ids "triton-cpu", ...
INTERPRETED = [pytest.param("triton", "cpu", id="triton-cpu")]
COMPILED = [pytest.param(backend, "cuda", id=f"{backend}-cuda", marks=ON_CUDA) for backend in ("triton", "cupy")]
TARGETS = INTERPRETED + COMPILED

# Sizes per device: on CUDA N = B * 2 * C = 384 columns, more than one Triton program and a
# ragged last one; lengths up to 300 steps. The interpreter gets small cases.
SIZES = {"cpu": {"B": 3, "C": 4, "T": (1, 7, 33)}, "cuda": {"B": 4, "C": 48, "T": (1, 37, 300)}}
# every fused surrogate; the interpreter also checks a non-default alpha
SURROGATES = {"cpu": FUSED_SURROGATES + ("ATan-alpha5",), "cuda": FUSED_SURROGATES}


@pytest.fixture(autouse=True)
def _triton_mode(request, monkeypatch):
    """Interpreted Triton for CPU cases, compiled for CUDA ones (see the module docstring)."""
    callspec = getattr(request.node, "callspec", None)
    device = callspec.params.get("device") if callspec else None
    if device == "cpu":
        monkeypatch.setenv("TRITON_INTERPRET", "1")
    elif device == "cuda":
        monkeypatch.delenv("TRITON_INTERPRET", raising=False)


def _kernel(backend: str):
    pytest.importorskip(backend)
    if backend == "triton":
        from sj_bert.ops.bpsn.triton import bpsn_triton

        return bpsn_triton
    from sj_bert.ops.bpsn.cupy import bpsn_cupy

    return bpsn_cupy


def _grid(targets):
    """Each target x its device's lengths x directions x dtypes x shared/per-channel
    parameters, as pytest params with ids from :func:`sj_bert.testing.case_id`."""
    out = []
    for target in targets:
        backend, device = target.values
        size = SIZES[device]
        for T in size["T"]:
            for direction in DIRECTIONS:
                for dtype in DTYPES:
                    for per_channel in (False, True):
                        case = testing.case_id(T, size["B"], size["C"], direction, dtype, per_channel)
                        out.append(pytest.param(backend, device, T, direction, dtype, per_channel,
                                                id=f"{target.id}-{case}", marks=target.marks))
    return out


def _surrogate_grid(targets):
    return [pytest.param(*target.values, name, id=f"{target.id}-{name}", marks=target.marks)
            for target in targets for name in SURROGATES[target.values[1]]]


@pytest.mark.parametrize("backend,device,T,direction,dtype,per_channel", _grid(TARGETS))
def test_matches_reference(backend, device, T, direction, dtype, per_channel):
    """Spikes, potential and the gradients of x and all four parameters, padded batches."""
    kernel = _kernel(backend)
    size = SIZES[device]
    case = testing.make_case(T, size["B"], size["C"], per_channel, dtype, device=device, seed=T)
    testing.compare(kernel, case, direction, dtype)


@pytest.mark.parametrize("backend,device,name", _surrogate_grid(TARGETS))
def test_surrogates(backend, device, name):
    """Every fused surrogate, through the spikes only (no gradient of v)."""
    kernel = _kernel(backend)
    size = SIZES[device]
    T = 7 if device == "cpu" else 64
    case = testing.make_case(T, size["B"], size["C"], True, torch.float32, device=device, seed=1)
    testing.compare(kernel, case, "bi", torch.float32, testing.surrogate_by_name(name), v_loss=False)


@pytest.mark.parametrize("backend,device", TARGETS)
@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("dtype", (torch.float32, torch.bfloat16), ids=str)
def test_ternary_spikes_match_reference(backend, device, direction, dtype):
    """Spikes in {-1, 0, 1}: outputs and every gradient, both thresholds' surrogate terms."""
    kernel = _kernel(backend)
    size = SIZES[device]
    T = 9 if device == "cpu" else 300
    case = testing.make_case(T, size["B"], size["C"], True, dtype, device=device, seed=4)
    testing.compare(kernel, case, direction, dtype, ternary=True)


TRITON_TARGETS = [t for t in TARGETS if t.values[0] == "triton"]


@pytest.mark.parametrize("backend,device", TRITON_TARGETS)
@pytest.mark.parametrize("steps", (1, 2, 4, 32))
@pytest.mark.parametrize("direction", DIRECTIONS)
def test_triton_tile_steps(backend, device, steps, direction, monkeypatch):
    """The Triton kernels scan time a tile of ``steps`` steps at a time, carrying the state
    from tile to tile: one step per tile (the per-step scan), several tiles with a ragged
    last one, and one tile longer than the sequence all match the reference (outputs and
    every gradient, ternary spikes for both thresholds' terms)."""
    kernel = _kernel(backend)
    from sj_bert.ops.bpsn import triton as triton_kernels

    monkeypatch.setattr(triton_kernels, "STEPS_PER_TILE", steps)
    assert triton_kernels.tile_shape(33, 100, interpreted=device == "cpu")[1] == min(steps, 64)
    size = SIZES[device]
    T = 33 if device == "cpu" else 300
    case = testing.make_case(T, size["B"], size["C"], True, torch.float32, device=device, seed=6)
    testing.compare(kernel, case, direction, torch.float32, ternary=True)


# -- interpreted (CPU) only: the op's registration, edge cases and errors ---------------------


@pytest.mark.parametrize("backend,device", INTERPRETED)
@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("dtype", (torch.float32, torch.bfloat16), ids=str)
def test_vectorized_scan_is_bit_identical(backend, device, direction, dtype, monkeypatch):
    """The twins' row-by-row scan (``sj_bert/ops/bpsn/_interpreter.py``) gives exactly what
    Triton's own element-by-element scan gives: spikes, potential and every gradient, bit for
    bit, over several tiles with a ragged last one, ternary spikes, a padded batch."""
    kernel = testing.fused(_kernel(backend))
    from sj_bert.ops.bpsn import _interpreter, triton as triton_kernels

    monkeypatch.setattr(triton_kernels, "STEPS_PER_TILE", 4)
    case = testing.make_case(11, 2, 3, True, dtype, seed=8)
    fast = testing.run(kernel, case, direction, ternary=True)
    with _interpreter.vectorized_scans() as patched:
        assert patched, "the installed Triton's interpreter is not the one _interpreter.py patches"
    row_by_row = _interpreter.vectorized_scans
    monkeypatch.setattr(_interpreter, "vectorized_scans", lambda: row_by_row(enabled=False))
    slow = testing.run(kernel, case, direction, ternary=True)
    for name, expected in slow.items():
        assert (fast[name] is None) == (expected is None), name
        if expected is not None:
            assert torch.equal(fast[name], expected), f"{name} differs from Triton's own scan"


def test_interpreted_scalars_convert_whatever_their_array_shape():
    """Triton 3.6's interpreter holds a scalar argument as a ``[1]`` array and ``int()``s it for
    ``range(n_tiles)``, which NumPy 2.5 refuses (earlier NumPy warns): the patch squeezes it
    first, and leaves Triton's own ``__index__`` in place again after the launch."""
    import types
    import warnings

    import numpy as np
    import triton.language as tl

    from sj_bert.ops.bpsn import _interpreter

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # NumPy < 2.5's DeprecationWarning is 2.5's TypeError
        for data in (np.array([7]), np.array(7), np.array([[7]])):
            assert _interpreter.scalar_index(types.SimpleNamespace(handle=types.SimpleNamespace(data=data))) == 7
    with pytest.raises(ValueError):  # a block is no index
        _interpreter.scalar_index(types.SimpleNamespace(handle=types.SimpleNamespace(data=np.array([1, 2]))))
    before = getattr(tl.tensor, "__index__", None)
    with _interpreter.scalar_indices() as patched:
        assert patched, "the installed Triton's interpreter is not the one _interpreter.py patches"
        kernel = _kernel("triton")
        case = testing.make_case(5, 2, 3, True, torch.float32, seed=3)
        testing.compare(kernel, case, "bi", torch.float32)
    assert getattr(tl.tensor, "__index__", None) is before


@pytest.mark.parametrize("backend,device", INTERPRETED)
@pytest.mark.parametrize("direction", DIRECTIONS)
def test_unmasked_and_potential_only(backend, device, direction):
    """No mask, and a loss on the potential alone (no gradient through the spikes)."""
    kernel = _kernel(backend)
    size = SIZES[device]
    case = testing.make_case(9, size["B"], size["C"], True, torch.float32, masked=False, seed=2)
    testing.compare(kernel, case, direction, torch.float32)
    testing.compare(kernel, case, direction, torch.float32, spike_loss=False)


@pytest.mark.parametrize("backend,device", INTERPRETED)
def test_two_dim_input(backend, device):
    """``x`` ``[T, B]``: the last dimension is both batch and channel, as in the reference."""
    kernel = _kernel(backend)
    case = testing.make_case(5, 1, 6, True, torch.float32, seed=3)
    case.update({k: case[k][:, 0, 0] for k in ("x", "w_spike", "w_v")})  # [T, 6]
    case["mask"] = None
    testing.compare(kernel, case, "bi", torch.float32)


@pytest.mark.parametrize("backend,device", TARGETS)
@pytest.mark.parametrize("ternary", (False, True))
@pytest.mark.parametrize("dtype", (torch.float32, torch.bfloat16), ids=str)
def test_spikes_carrying_the_threshold(backend, device, ternary, dtype):
    """``spike_amplitude="threshold"`` through the fused path: with autograd the unit
    spikes times the threshold (gradients as through the product); in inference the
    kernels write the scaled spikes themselves, equal to the unit spikes scaled in place."""
    _kernel(backend)
    B, C = SIZES[device]["B"], SIZES[device]["C"]
    g = torch.Generator().manual_seed(9)
    x0 = (2 * torch.randn(21, B, C, generator=g)).to(device, dtype)
    mask = testing.padding_mask(21, B, g, device=device)
    weights = torch.randn(21, B, C, generator=g).to(device)
    kwargs = dict(tau=3.0, channels=C, learnable_threshold=True, ternary=ternary, backend=backend, channel_dim=-1)
    scaled, unit = BPSN(spike_amplitude="threshold", **kwargs).to(device), BPSN(**kwargs).to(device)
    with torch.no_grad():
        scaled.v_threshold.copy_(torch.linspace(0.2, 0.9, C))
    unit.load_state_dict(scaled.state_dict())
    results = []
    for node, scale in ((scaled, False), (unit, True)):
        x = x0.clone().requires_grad_()
        out = node(x, mask=mask)
        out = out * node.v_threshold if scale else out
        (out.float() * weights).sum().backward()
        results.append((out.detach(), x.grad, node.v_threshold.grad))
    for scaled_result, unit_result in zip(results[0], results[1]):  # outputs and gradients, bit for bit
        torch.testing.assert_close(scaled_result, unit_result, rtol=0, atol=0)
    with torch.no_grad():
        folded = scaled(x0, mask=mask)
        expected = unit(x0, mask=mask).mul_(unit.v_threshold)
    assert scaled.implementation == backend and folded.dtype == dtype and folded.abs().sum() > 0
    if device == "cpu" and dtype != torch.float32:
        # Triton's interpreter truncates fp32 -> bf16 where compiled kernels (and torch) round
        # to nearest even: within one bf16 step here, equal on a GPU
        torch.testing.assert_close(folded, expected, rtol=2**-7, atol=0)
    else:
        assert torch.equal(folded, expected)


@pytest.mark.parametrize("backend,device", INTERPRETED)
@pytest.mark.parametrize("ternary", (False, True))
def test_spikes_carrying_a_learnable_threshold_keep_no_spikes_for_backward(backend, device, ternary):
    """The unit spikes are rebuilt from the kept potential for the threshold's gradient: a
    training forward keeps no more than it does for unit spikes plus the threshold (the
    product ``spike * threshold`` kept a ``[T, B, C]`` tensor of 0/1 more)."""
    _kernel(backend)
    T, B, C = 21, SIZES[device]["B"], SIZES[device]["C"]
    g = torch.Generator().manual_seed(4)
    x0 = (2 * torch.randn(T, B, C, generator=g)).to(device, torch.bfloat16)
    mask = testing.padding_mask(T, B, g, device=device)
    kwargs = dict(tau=3.0, channels=C, learnable_threshold=True, ternary=ternary, backend=backend, channel_dim=-1)
    kept = {}
    for amplitude in ("threshold", "unit"):
        node = BPSN(spike_amplitude=amplitude, **kwargs).to(device)
        storages = {}

        def keep(t):
            storages.setdefault(t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())
            return t

        with torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t):
            out = node(x0.clone().requires_grad_(), mask=mask)
        assert node.implementation == backend and out.requires_grad
        kept[amplitude] = sum(storages.values())
    assert kept["threshold"] <= kept["unit"] + 4 * C  # the fp32 [C] threshold at most


@pytest.mark.parametrize("backend,device", INTERPRETED)
@pytest.mark.parametrize("layout", ("transposed", "int64", "uint8"))
def test_mask_read_in_place(backend, device, layout):
    """The Triton kernels read the caller's mask where it lies: a transposed view (SNN-BERT's
    ``attention_mask.T``), an integer mask (the reference multiplies by its value, so do the
    kernels) and uint8; outputs and every gradient."""
    kernel = _kernel(backend)
    size = SIZES[device]
    case = testing.make_case(13, size["B"], size["C"], True, torch.float32, seed=7)
    mask = case["mask"]
    if layout == "transposed":
        case["mask"] = mask.t().contiguous().t()
        assert not case["mask"].is_contiguous()
    else:
        case["mask"] = mask.to(getattr(torch, layout))
    testing.compare(kernel, case, "bi", torch.float32)


@pytest.mark.parametrize("backend,device", INTERPRETED)
def test_node_inference_keeps_parameter_table(backend, device):
    """In ``eval()`` without autograd the node hands the fused kernels a parameter table
    built once, rebuilt when a parameter or the threshold changes in place; its outputs
    equal those of a call with autograd."""
    _kernel(backend)
    B, C = SIZES[device]["B"], SIZES[device]["C"]
    x = torch.randn(9, B, C, generator=torch.Generator().manual_seed(8))
    mask = torch.ones(9, B, dtype=torch.bool)
    mask[6:, 1] = False
    node = _node(backend, C).eval()
    with torch.enable_grad():
        expected = node(x.clone().requires_grad_(), mask=mask).detach()
    node.reset()
    with torch.no_grad():
        first = node(x, mask=mask)
        table = node._parameter_cache[2][3]
        node.reset()
        again = node(x, mask=mask)
        assert node._parameter_cache[2][3] is table  # kept, not rebuilt
        assert table.shape == (4, C) and table.dtype == torch.float32
        torch.testing.assert_close(table[3], node.v_threshold.float())
        node.v_threshold.add_(0.5)
        node.reset()
        higher = node(x, mask=mask)
        assert node._parameter_cache[2][3] is not table
    assert torch.equal(first, expected) and torch.equal(again, expected)
    assert higher.abs().sum() < first.abs().sum()  # a higher threshold fires less


def _node(backend: str, C: int) -> BPSN:
    torch.manual_seed(0)
    node = BPSN(tau=3.0, tau_backward=1.5, v_threshold=0.6, surrogate_function=surrogate.Sigmoid(),
                channels=C, learnable_threshold=True, backend=backend, store_v_seq=True)
    with torch.no_grad():
        for p in node.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return node


@pytest.mark.parametrize("backend,device", INTERPRETED)
def test_node_triton_matches_torch(backend, device):
    """``BPSN(backend="triton")`` and ``backend="torch"``: spikes, v, and the gradients of
    the input and of the node's logits (through torch's sigmoid) and threshold."""
    _kernel(backend)
    B, C = SIZES[device]["B"], SIZES[device]["C"]
    g = torch.Generator().manual_seed(4)
    x0 = torch.randn(11, B, C, generator=g)
    mask = torch.ones(11, B, dtype=torch.bool)
    mask[8:, 1] = False
    mask[:3, 2] = False
    results = {}
    for impl in ("torch", backend):
        node = _node(impl, C)
        x = x0.clone().requires_grad_()
        spike = node(x, mask=mask)
        (spike * torch.linspace(-1, 1, C)).sum().backward()
        assert node.implementation == impl
        results[impl] = (spike, node.v_seq, x.grad, {n: p.grad for n, p in node.named_parameters()})
    (s0, v0, gx0, gp0), (s1, v1, gx1, gp1) = results["torch"], results[backend]
    torch.testing.assert_close(v1, v0, rtol=1e-5, atol=1e-6)
    decided = (v0 - 0.6).abs() > 1e-3
    assert torch.equal(s1.detach()[decided], s0.detach()[decided])
    torch.testing.assert_close(gx1, gx0, rtol=1e-4, atol=1e-6)
    assert set(gp1) == {"a_f", "a_b", "a_m", "v_threshold"}
    for name in gp0:
        torch.testing.assert_close(gp1[name], gp0[name], rtol=1e-4, atol=1e-5, msg=name)


def _op_args():
    case = testing.make_case(5, 2, 3, True, torch.float32, seed=5)
    params = [case[k].requires_grad_() for k in ("lam_f", "lam_b", "alpha", "threshold")]
    return case["x"].requires_grad_(), case["mask"], params


@pytest.mark.parametrize("backend,device", INTERPRETED)
def test_opcheck(backend, device):
    """Schema, fake tensor, autograd registration and AOT dispatch of the custom op."""
    _kernel(backend)
    x, mask, params = _op_args()
    torch.library.opcheck(torch.ops.sj_bert.bpsn_fwd.default, (x, mask, *params, "bi", 1, 2.0))
    torch.library.opcheck(torch.ops.sj_bert.bpsn_fwd.default, (x, mask, *params, "bi", 1, 2.0, backend, True))


@pytest.mark.parametrize("backend,device", INTERPRETED)
def test_torch_compile_fullgraph(backend, device):
    """``torch.compile`` traces the op (fake) and its backward without a graph break."""
    kernel = _kernel(backend)
    x, mask, params = _op_args()

    def loss(x, mask, *params):
        spike, v = kernel(x, mask, *params, "bi", 1, 2.0)
        return spike.sum() + v.square().mean()

    compiled = torch.compile(loss, backend="aot_eager", fullgraph=True)
    expected = torch.autograd.grad(loss(x, mask, *params), [x, *params])
    actual = torch.autograd.grad(compiled(x, mask, *params), [x, *params])
    for a, e in zip(actual, expected):
        torch.testing.assert_close(a, e)


@pytest.mark.parametrize("backend,device", INTERPRETED)
@pytest.mark.parametrize("direction", DIRECTIONS)
def test_fires_at_threshold(backend, device, direction):
    """Heaviside(0) = 1, as SpikingJelly's: ``v == threshold`` fires; masked steps never do."""
    kernel = _kernel(backend)
    x = torch.tensor([[1.0, 1.0]])  # [T=1, B=2]; v = m x exactly in every direction
    half, one = torch.full((1,), 0.5), torch.ones(1)
    spike, v = kernel(x, torch.tensor([[True, False]]), half, half, half, one, direction)
    assert v.tolist() == [[1.0, 0.0]] and spike.tolist() == [[1.0, 0.0]]
    spike, _ = kernel(x, None, half, half, half, one, direction)
    assert spike.tolist() == [[1.0, 1.0]]


@pytest.mark.parametrize("backend,device", INTERPRETED)
def test_input_errors(backend, device):
    kernel = _kernel(backend)
    x = torch.randn(4, 2, 3)
    p = torch.full((1,), 0.5)
    with pytest.raises(TypeError, match="float32, float16 or bfloat16"):
        kernel(x.double(), None, p, p, p, p)
    with pytest.raises(ValueError, match="1 or C=3"):
        kernel(x, None, torch.full((2,), 0.5), p, p, p)
    with pytest.raises(ValueError, match="mask"):
        kernel(x, torch.ones(4, 3, dtype=torch.bool), p, p, p, p)
    with pytest.raises(ValueError, match="direction"):
        kernel(x, None, p, p, p, p, "sideways")


# -- compiled (CUDA) only: long sequences, strided input, the node and Inductor ----------------


@pytest.mark.parametrize("backend,device", COMPILED)
@pytest.mark.parametrize("dtype", (torch.float32, torch.bfloat16), ids=str)
def test_long_sequence_unmasked(backend, device, dtype):
    """T = 1024 over 16k columns, no mask, gradient through the potential only. The
    parameter gradients sum 16M random-signed terms in fp32 on both sides: looser."""
    kernel = _kernel(backend)
    case = testing.make_case(1024, 8, 1024, False, dtype, device=device, masked=False, seed=2)
    testing.compare(kernel, case, "bi", dtype, spike_loss=False, tolerances={"params": (1e-3, 1e-3)})


@pytest.mark.parametrize("backend,device", COMPILED)
def test_non_contiguous_input(backend, device):
    kernel = _kernel(backend)
    size = SIZES[device]
    case = testing.make_case(16, size["B"], size["C"], True, torch.float32, device=device, seed=3)
    case["x"] = case["x"].transpose(0, 1).contiguous().transpose(0, 1)  # [T, B, 2, C] view, not contiguous
    assert not case["x"].is_contiguous()
    testing.compare(kernel, case, "forward", torch.float32)


@pytest.mark.parametrize("backend,device", COMPILED)
def test_node_matches_torch(backend, device):
    """The node on CUDA: fused backend vs torch path, outputs and parameter gradients."""
    _kernel(backend)
    B, C = SIZES[device]["B"], SIZES[device]["C"]
    g = torch.Generator().manual_seed(4)
    x0 = torch.randn(50, B, C, generator=g).to(device)
    mask = testing.padding_mask(50, B, g, device=device)
    results = {}
    for impl in ("torch", backend):
        torch.manual_seed(0)
        node = BPSN(tau=3.0, surrogate_function=surrogate.Erf(), channels=C, learnable_threshold=True, backend=impl)
        node = node.to(device)
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


@pytest.mark.parametrize("backend,device", COMPILED[:1])
def test_auto_backend_is_triton(backend, device):
    pytest.importorskip(backend)
    assert BPSN().resolve_implementation(torch.device(device)) == "triton"


@pytest.mark.parametrize("backend,device", COMPILED[:1])
def test_torch_compile_inductor(backend, device):
    """The registered op inside an Inductor-compiled function, forward and backward."""
    kernel = _kernel(backend)
    size = SIZES[device]
    case = testing.make_case(33, size["B"], size["C"], True, torch.bfloat16, device=device, seed=5)
    params = [case[k].requires_grad_() for k in ("lam_f", "lam_b", "alpha", "threshold")]
    x = case["x"].requires_grad_()

    def loss(x, mask, *params):
        spike, v = kernel(torch.tanh(x), mask, *params, "bi", 1, 2.0)
        return (spike.float() * case["w_spike"]).sum() + v.square().mean()

    compiled = torch.compile(loss, fullgraph=True)
    expected = torch.autograd.grad(loss(x, case["mask"], *params), [x, *params])
    actual = torch.autograd.grad(compiled(x, case["mask"], *params), [x, *params])
    # Inductor fuses tanh and its backward, rounding to bf16 once where eager rounds per op:
    # x's gradient differs by a bf16 ulp, so it gets the bf16 tolerance of every other test
    rtol, atol = testing.TOLERANCES[torch.bfloat16]["grad_x"]
    torch.testing.assert_close(actual[0], expected[0], rtol=rtol, atol=atol * float(expected[0].abs().max()))
    for a, e in zip(actual[1:], expected[1:]):
        torch.testing.assert_close(a, e, rtol=1e-3, atol=1e-3)


def test_tile_steps_from_the_environment(monkeypatch):
    """``SJ_BPSN_TRITON_STEPS`` sets the tile length at import (a power of two), for a run
    that must change it without code; anything else is refused with the variable's name."""
    pytest.importorskip("triton")
    from sj_bert.ops.bpsn import triton as triton_kernels

    monkeypatch.setenv(triton_kernels.STEPS_ENV_VAR, "4")
    assert triton_kernels._steps_from_environment() == 4
    monkeypatch.setenv(triton_kernels.STEPS_ENV_VAR, "")
    assert triton_kernels._steps_from_environment() is None
    for bad in ("3", "0", "-2", "many"):
        monkeypatch.setenv(triton_kernels.STEPS_ENV_VAR, bad)
        with pytest.raises(ValueError, match="SJ_BPSN_TRITON_STEPS"):
            triton_kernels._steps_from_environment()
