"""The compiled CPU scans (``cpu.py``, the CPU default where a C++ compiler is found)
against the ``[T, T]`` reference: spikes, potential and the gradients of x and every
parameter; the inference path that also fires; the node's choice and cache; and what
happens without a compiler."""

from __future__ import annotations

import pytest
import torch
from spikingjelly.activation_based import surrogate

from sj_bert import BPSN, testing
from sj_bert import neuron as neuron_module
from sj_bert.ops.bpsn import bpsn_reference, cpu, dispatch
from sj_bert.ops.bpsn.cpu import ScanWeights, bpsn_cpu, cpu_potential
from sj_bert.ops.bpsn.reference import DIRECTIONS

pytestmark = pytest.mark.skipif(not cpu.available()[0], reason=f"no CPU scans here: {cpu.available()[1]}")

B, C = 3, 4

# T from one step to past the chunked path's chunk (32) and to a thousand; odd lengths
GRID = [
    (T, direction, dtype, per_channel)
    for T in (1, 2, 7, 33, 100, 1061)
    for direction in DIRECTIONS
    for dtype in (torch.float32, torch.float64)
    for per_channel in (False, True)
]


@pytest.mark.parametrize(
    "T,direction,dtype,per_channel", GRID,
    ids=[f"T{c[0]}-{c[1]}-{str(c[2])[6:]}-{'perchannel' if c[3] else 'shared'}" for c in GRID],
)
def test_matches_reference(T, direction, dtype, per_channel):
    """Padded batches (sample 0 full, odd ones right-padded, even ones left-padded), x
    ``[T, B, 2, C]``: several neuron rows per sample."""
    case = testing.make_case(T, B, C, per_channel, dtype, seed=T)
    testing.compare(bpsn_cpu, case, direction, dtype, fused_signature=False)


@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("per_channel", [False, True], ids=["shared", "perchannel"])
@pytest.mark.parametrize("T", [9, 100])
def test_ternary_spikes_match_reference(T, direction, per_channel):
    """Spikes in {-1, 0, 1}, with autograd (firing in torch) and in inference (in the scan)."""
    case = testing.make_case(T, B, C, per_channel, torch.float64, seed=T)
    testing.compare(bpsn_cpu, case, direction, torch.float64, fused_signature=False, ternary=True)
    args = [case[k] for k in ("x", "mask", "lam_f", "lam_b", "alpha", "threshold")]
    with torch.no_grad():
        spikes, _ = bpsn_cpu(*args, surrogate.ATan(), direction, ternary=True)
        expected, v = bpsn_reference(*args, surrogate.ATan(), direction, ternary=True)
    assert torch.equal(spikes, expected) and (spikes < 0).any()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs_accumulate_in_fp32(dtype):
    case = testing.make_case(40, B, C, True, dtype, seed=4)
    testing.compare(bpsn_cpu, case, "bi", dtype, fused_signature=False)


@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("per_channel", [False, True], ids=["shared", "perchannel"])
def test_unmasked_and_potential_only(direction, per_channel):
    """Without a mask, shared parameters make one row of every neuron of a step."""
    case = testing.make_case(45, B, C, per_channel, torch.float32, masked=False, seed=2)
    testing.compare(bpsn_cpu, case, direction, torch.float32, fused_signature=False)
    testing.compare(bpsn_cpu, case, direction, torch.float32, fused_signature=False, spike_loss=False)


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_extreme_decays(direction):
    """Decays from 1e-30 to 0.999 in one layer, T=300: a scan has no range limit."""
    case = testing.make_case(300, B, C, True, torch.float32, seed=3)
    case["lam_f"] = torch.tensor([1e-30, 1e-3, 0.5, 0.999])
    case["lam_b"] = case["lam_f"].flip(0)
    testing.compare(bpsn_cpu, case, direction, torch.float32, fused_signature=False)


@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("per_channel", [False, True], ids=["shared", "perchannel"])
def test_gradcheck_float64(direction, per_channel):
    """Float64 gradcheck of every input with a padded sample, with the smooth form of the
    surrogate so that the threshold's gradient is checked too."""
    g = torch.Generator().manual_seed(0)
    P = 3 if per_channel else 1
    x = torch.randn(11, 2, 3, generator=g, dtype=torch.float64, requires_grad=True)
    mask = torch.ones(11, 2, dtype=torch.bool)
    mask[8:, 1] = False
    mask[:2, 0] = False
    params = [(0.2 + 0.7 * torch.rand(P, generator=g, dtype=torch.float64)).requires_grad_() for _ in range(4)]
    sg = surrogate.Sigmoid(alpha=2.0, spiking=False)

    def fn(x, lam_f, lam_b, alpha, threshold):
        return bpsn_cpu(x, mask, lam_f, lam_b, alpha, threshold, sg, direction)

    assert torch.autograd.gradcheck(fn, (x, *params), eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("per_channel", [False, True], ids=["shared", "perchannel"])
def test_inference_fires_in_the_scan_as_the_reference_does(direction, per_channel):
    """Without autograd the scans fire themselves: the same spikes (away from the
    threshold) and potential as the reference, silent at padded steps, in x's dtype."""
    case = testing.make_case(77, 5, C, per_channel, torch.float32, seed=8)
    args = [case[k] for k in ("x", "mask", "lam_f", "lam_b", "alpha", "threshold")]
    with torch.inference_mode():
        spikes, v = bpsn_cpu(*args, surrogate.ATan(), direction)
        expected_spikes, expected_v = bpsn_reference(*args, surrogate.ATan(), direction)
    torch.testing.assert_close(v, expected_v, rtol=1e-5, atol=1e-5)
    decided = (expected_v - case["threshold"]).abs() > testing.SPIKE_MARGIN
    assert torch.equal(spikes[decided], expected_spikes[decided])
    assert not spikes[~case["mask"]].any() and spikes.dtype == torch.float32
    assert 0 < spikes.mean() < 1  # the case fires, and not everywhere


def test_inference_with_a_non_spiking_surrogate_keeps_its_forward():
    """A surrogate in its real-valued mode (``spiking=False``) is not a step: torch applies it."""
    x = torch.randn(20, 2, 3)
    p = torch.full((3,), 0.5)
    sg = surrogate.Sigmoid(spiking=False)
    with torch.no_grad():
        out, _ = bpsn_cpu(x, None, p, p, p, p, sg)
        expected, _ = bpsn_reference(x, None, p, p, p, p, sg)
    torch.testing.assert_close(out, expected)
    assert ((out > 0) & (out < 1)).any()


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_threads_split_rows_or_columns_with_the_same_result(threads, monkeypatch):
    """Many rows (split by rows) and one row of many columns (split by columns)."""
    monkeypatch.setattr(cpu, "PARALLEL_MIN_ELEMENTS", 0)  # small tensors, several threads all the same
    g = torch.Generator().manual_seed(9)
    before = torch.get_num_threads()
    try:
        for shape, P in (((50, 7, 5), 5), ((50, 1, 64), 64), ((50, 1, 64), 1)):
            x = torch.randn(shape, generator=g, dtype=torch.float64, requires_grad=True)
            params = [torch.rand(P, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(3)]
            w = torch.randn(shape, generator=g, dtype=torch.float64)
            results = []
            for n in (1, threads):
                torch.set_num_threads(n)
                v = cpu_potential(x, None, *params)
                results.append((v, torch.autograd.grad((v * w).sum(), [x, *params])))
            torch.testing.assert_close(results[0], results[1], rtol=0, atol=1e-12)
    finally:
        torch.set_num_threads(before)


def test_channels_after_other_dimensions_and_two_dim_input():
    """``x`` ``[T, B, H, W, C]``, a transposed (strided) view, and ``[T, C]``."""
    x = torch.randn(2, 30, 3, 2, 5).transpose(0, 1)
    p = torch.rand(5) * 0.8 + 0.1
    for inputs in (x, x[:, :, 0, 0]):
        _, v = bpsn_cpu(inputs, None, p, p, p, p, surrogate.ATan())
        _, expected = bpsn_reference(inputs, None, p, p, p, p, surrogate.ATan())
        torch.testing.assert_close(v, expected, rtol=1e-5, atol=1e-6)
    _, v = bpsn_cpu(x[:, 0, 0, 0], None, p[:1], p[:1], p[:1], p[:1], surrogate.ATan())
    torch.testing.assert_close(v, bpsn_reference(x[:, 0, 0, 0], None, *[p[:1]] * 4, surrogate.ATan())[1])


def test_input_errors():
    x = torch.randn(4, 2, 3)
    p = torch.full((1,), 0.5)
    with pytest.raises(ValueError, match="3 channels"):
        bpsn_cpu(x, None, torch.full((2,), 0.5), p, p, p, surrogate.ATan())
    with pytest.raises(ValueError, match="direction"):
        bpsn_cpu(x, None, p, p, p, p, surrogate.ATan(), "sideways")
    with pytest.raises(ValueError, match=r"mask must be \[T, B\]"):
        bpsn_cpu(x, torch.ones(4, 3, dtype=torch.bool), p, p, p, p, surrogate.ATan())
    with pytest.raises(TypeError, match="float"):
        bpsn_cpu(x.long(), None, p, p, p, p, surrogate.ATan())
    with pytest.raises(ValueError, match=r"\[T, B, \*\]"):
        bpsn_cpu(torch.randn(4), None, p, p, p, p, surrogate.ATan())
    with pytest.raises(ValueError, match="1 or C"):
        ScanWeights.build(torch.full((2,), 0.5), torch.full((3,), 0.5), p, "bi")


# -- the node: which path runs, and the cache of what the scans read from the parameters ---


def test_node_runs_the_scans_by_default_on_the_cpu():
    g = torch.Generator().manual_seed(6)
    x = torch.randn(70, 2, 4, generator=g)
    mask = torch.ones(70, 2, dtype=torch.bool)
    mask[:9, 1] = False
    node = BPSN(tau=3.0, channels=4, store_v_seq=True)
    spikes = node(x, mask=mask)
    assert node.implementation == "cpu"
    reference = BPSN(tau=3.0, channels=4, store_v_seq=True, backend="reference")
    torch.testing.assert_close(spikes, reference(x, mask=mask))
    torch.testing.assert_close(node.v_seq, reference.v_seq, rtol=1e-5, atol=1e-6)


@pytest.fixture
def builds(monkeypatch):
    """Counts the node's ``ScanWeights`` builds."""
    count = {"n": 0}
    build = ScanWeights.build.__func__

    def counting(cls, *args, **kwargs):
        count["n"] += 1
        return build(cls, *args, **kwargs)

    monkeypatch.setattr(neuron_module.ScanWeights, "build", classmethod(counting))
    return count


def test_eval_builds_weights_once_and_rebuilds_when_parameters_change(builds):
    node = BPSN(tau=2.0, channels=4, store_v_seq=True).eval()
    x = torch.randn(50, 2, 4)
    with torch.no_grad():
        for _ in range(3):
            node(x)
        assert builds["n"] == 1
        node.a_f.add_(0.5)  # an optimizer step, in place
        node(x)
        assert builds["n"] == 2
        lam_f, lam_b, alpha = node.decays()
        expected = bpsn_reference(x, None, lam_f, lam_b, alpha, node.v_threshold, node.surrogate_function)[1]
        torch.testing.assert_close(node.v_seq, expected)


def test_training_builds_in_the_graph_every_call_and_every_parameter_learns(builds):
    node = BPSN(channels=4, learnable_threshold=True)
    x = torch.randn(40, 2, 4)
    for _ in range(2):
        node(x).sum().backward()
    assert builds["n"] == 2 and node.implementation == "cpu"
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in node.parameters())


# -- without a compiler ------------------------------------------------------------------


@pytest.fixture
def no_compiler(monkeypatch, tmp_path):
    """A fresh process's view: nothing loaded yet, an empty cache, and a compiler that fails."""
    monkeypatch.setattr(cpu, "_library", None)
    monkeypatch.setattr(cpu, "_failure", None)
    monkeypatch.setenv("SJ_BERT_CACHE", str(tmp_path))
    fake = tmp_path / "bin" / "broken-c++"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho 'broken-c++: no such toolchain' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("CXX", str(fake))
    return tmp_path


def test_a_failing_build_leaves_nothing_and_auto_keeps_the_torch_path(no_compiler):
    usable, why = cpu.available()
    assert not usable and "no such toolchain" in why
    assert not list((no_compiler / "kernels").glob("*")), "a failed build leaves no file behind"
    assert dispatch.select_backend(torch.device("cpu"), None, surrogate.ATan()) == "torch"
    node = BPSN(channels=3)
    node(torch.randn(5, 2, 3))
    assert node.implementation == "torch"
    with pytest.raises(RuntimeError, match="(?s)backend 'cpu' is not available.*no such toolchain"):
        BPSN(channels=3, backend="cpu")(torch.randn(5, 2, 3))


def test_the_build_lands_in_the_cache_and_is_reused(monkeypatch, tmp_path):
    monkeypatch.setattr(cpu, "_library", None)
    monkeypatch.setattr(cpu, "_failure", None)
    monkeypatch.setenv("SJ_BERT_CACHE", str(tmp_path))
    assert cpu.available() == (True, "")
    built = list((tmp_path / "kernels").iterdir())
    assert len(built) == 1 and built[0].suffix == ".so"
    monkeypatch.setattr(cpu, "_library", None)
    monkeypatch.setattr(cpu, "_build", lambda *a: pytest.fail("rebuilt a library that was in the cache"))
    assert cpu.available() == (True, "")


def test_inside_torch_compile_auto_takes_the_traceable_torch_path(monkeypatch):
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    assert dispatch.select_backend(torch.device("cpu"), None, surrogate.ATan()) == "torch"
    monkeypatch.undo()
    assert dispatch.select_backend(torch.device("cpu"), None, surrogate.ATan()) == "cpu"
