"""Comparing a BPSN implementation with the plain-torch reference, for the tests and for anyone
adding a backend (as ``torch.testing`` serves torch's): inputs (:func:`make_case`), one forward
and backward (:func:`run`), and the comparison of outputs and every gradient within
:data:`TOLERANCES` (:func:`compare`).

A kernel passes when its potential and gradients match the reference within the tolerance of
the input dtype and its spikes match wherever the potential is more than :data:`SPIKE_MARGIN`
from the threshold (closer than that, rounding may decide either way).
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
from spikingjelly.activation_based import surrogate

from .ops.bpsn.dispatch import fused_surrogate_spec
from .ops.bpsn.reference import bpsn_reference, compute_dtype

__all__ = [
    "bpsn_naive", "PARAMS", "DTYPE_NAMES", "TOLERANCES", "SPIKE_MARGIN", "case_id", "padding_mask", "make_case", "run", "fused",
    "assert_matches", "compare", "surrogate_by_name",
]

PARAMS = ("lam_f", "lam_b", "alpha", "threshold")
DTYPE_NAMES = {torch.float64: "fp64", torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}
# (rtol, atol as a fraction of the reference's largest magnitude). The potential and the
# parameter gradients are fp32 in both paths whatever x's dtype; grad_x is rounded to
# x's dtype, once by the reference and at most once more by the kernels.
TOLERANCES = {
    torch.float64: {"v": (1e-10, 1e-12), "grad_x": (1e-9, 1e-10), "params": (1e-9, 1e-9)},
    torch.float32: {"v": (1e-5, 1e-6), "grad_x": (1e-4, 1e-5), "params": (1e-4, 1e-4)},
    torch.float16: {"v": (1e-5, 1e-6), "grad_x": (2e-3, 1e-3), "params": (1e-4, 1e-4)},
    torch.bfloat16: {"v": (1e-5, 1e-6), "grad_x": (1.6e-2, 8e-3), "params": (1e-4, 1e-4)},
}
SPIKE_MARGIN = 1e-3  # spikes must agree wherever |v - threshold| exceeds this


def case_id(T: int, B: int, C: int, direction: str, dtype: torch.dtype, per_channel: bool) -> str:
    return f"T{T}-B{B}-C{C}-{direction}-{DTYPE_NAMES[dtype]}-{'perchannel' if per_channel else 'shared'}"


def padding_mask(T: int, B: int, generator: torch.Generator, device="cpu") -> torch.Tensor:
    """``[T, B]`` bool: sample 0 full length, odd samples right-padded, even ones left-padded."""
    mask = torch.zeros(T, B, dtype=torch.bool)
    lengths = torch.randint(1, T + 1, (B,), generator=generator)
    for b in range(B):
        L = T if b == 0 else int(lengths[b])
        if b % 2:
            mask[:L, b] = True
        else:
            mask[T - L :, b] = True
    return mask.to(device)


def make_case(
    T: int,
    B: int,
    C: int,
    per_channel: bool,
    dtype: torch.dtype,
    device="cpu",
    masked: bool = True,
    seed: int = 0,
) -> dict:
    """``x`` ``[T, B, 2, C]`` (a middle dimension, so a sample spans several channel
    groups), a padding mask, parameters in (0, 1) (one per channel or shared; fp64 for
    fp64 inputs, else fp32) and the weights of a random linear loss on spikes and potential."""
    g = torch.Generator().manual_seed(seed)
    P = C if per_channel else 1
    shape = (T, B, 2, C)

    def rand(*size, low=0.0, high=1.0):
        return (low + (high - low) * torch.rand(*size, generator=g)).to(device, compute_dtype(dtype))

    return {
        "x": (1.5 * torch.randn(shape, generator=g)).to(device=device, dtype=dtype),
        "mask": padding_mask(T, B, g, device) if masked else None,
        "lam_f": rand(P, low=0.2, high=0.95),
        "lam_b": rand(P, low=0.2, high=0.95),
        "alpha": rand(P, low=0.1, high=0.9),
        "threshold": rand(P, low=0.3, high=1.2),
        "w_spike": torch.randn(shape, generator=g).to(device),
        "w_v": torch.randn(shape, generator=g).to(device),
    }


def run(
    fn: Callable, case: dict, direction: str, surrogate_function=None, spike_loss=True, v_loss=True,
    ternary: bool = False,
) -> dict:
    """One forward and backward of ``fn`` (the reference's signature, surrogate given as
    a SpikingJelly object; fused backends are adapted by :func:`fused`). ``ternary`` is
    passed on (as a keyword) only when true, so functions without the option still run."""
    surrogate_function = surrogate_function or surrogate.ATan()
    leaves = {k: case[k].detach().clone().requires_grad_() for k in ("x", *PARAMS)}
    options = {"ternary": True} if ternary else {}
    spike, v = fn(leaves["x"], case["mask"], *(leaves[k] for k in PARAMS), surrogate_function, direction, **options)
    loss = 0.0
    if spike_loss:
        loss = loss + (spike.float() * case["w_spike"]).sum()
    if v_loss:
        loss = loss + (v * case["w_v"]).sum()
    loss.backward()
    return {"spike": spike.detach(), "v": v.detach(), **{k: leaves[k].grad for k in leaves}}


def fused(kernel: Callable) -> Callable:
    """Adapt ``bpsn_triton``/``bpsn_cupy`` to the reference's call signature."""

    def call(x, mask, lam_f, lam_b, alpha, threshold, surrogate_function, direction, ternary=False):
        surrogate_id, surrogate_alpha = fused_surrogate_spec(surrogate_function)
        return kernel(x, mask, lam_f, lam_b, alpha, threshold, direction, surrogate_id, surrogate_alpha, ternary)

    return call


def _assert_close(name: str, actual: torch.Tensor, expected: torch.Tensor, rtol: float, atol_frac: float):
    expected = expected.float()
    atol = atol_frac * max(expected.abs().max().item(), 1.0)
    torch.testing.assert_close(actual.float(), expected, rtol=rtol, atol=atol, msg=lambda m: f"{name}: {m}")


def assert_matches(
    actual: dict, expected: dict, threshold: torch.Tensor, dtype: torch.dtype, tolerances: Optional[dict] = None,
    ternary: bool = False,
) -> None:
    """Outputs and every gradient of a fused run against the reference run; ``tolerances``
    overrides entries of ``TOLERANCES[dtype]``. ``ternary``: spikes are also decided near
    ``-threshold``."""
    tol = {**TOLERANCES[dtype], **(tolerances or {})}
    assert actual["spike"].dtype == dtype and actual["v"].dtype == compute_dtype(dtype)
    _assert_close("v", actual["v"], expected["v"], *tol["v"])
    decided = (expected["v"] - threshold.float()).abs() > SPIKE_MARGIN
    if ternary:
        decided &= (expected["v"] + threshold.float()).abs() > SPIKE_MARGIN
    assert torch.equal(actual["spike"][decided], expected["spike"][decided]), "spikes differ away from threshold"
    _assert_close("grad x", actual["x"], expected["x"], *tol["grad_x"])
    for k in PARAMS:
        if expected[k] is None:  # unused by the direction (None), or outside the loss (zeros)
            assert actual[k] is None or not actual[k].any(), f"{k}: the reference gives no gradient, the kernel does"
        else:
            _assert_close(f"grad {k}", actual[k], expected[k], *tol["params"])


def compare(
    kernel: Callable, case: dict, direction: str, dtype: torch.dtype, surrogate_function=None,
    tolerances: Optional[dict] = None, fused_signature: bool = True, ternary: bool = False, **loss,
) -> None:
    """``kernel`` against the reference; ``fused_signature=False`` for a function that
    already takes the reference's arguments (``bpsn_chunk``); ``ternary``: both with
    spikes in {-1, 0, 1}."""
    expected = run(bpsn_reference, case, direction, surrogate_function, ternary=ternary, **loss)
    actual = run(fused(kernel) if fused_signature else kernel, case, direction, surrogate_function,
                 ternary=ternary, **loss)
    if ternary:
        assert (expected["spike"] < 0).any() and (expected["spike"] > 0).any(), "the case fires both ways"
    assert_matches(actual, expected, case["threshold"], dtype, tolerances, ternary)


def surrogate_by_name(name: str):
    """``"ATan"`` -> ``surrogate.ATan()``; ``"ATan-alpha5"`` -> ``surrogate.ATan(alpha=5.0)``."""
    cls, _, alpha = name.partition("-alpha")
    return getattr(surrogate, cls)(**({"alpha": float(alpha)} if alpha else {}))


def bpsn_naive(
    x: torch.Tensor,
    mask: Optional[torch.Tensor],
    lam_f: torch.Tensor,
    lam_b: torch.Tensor,
    alpha: torch.Tensor,
    threshold: torch.Tensor,
    surrogate_function: Callable[[torch.Tensor], torch.Tensor],
    direction: str = "bi",
    ternary: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The DESIGN equations as written: one Python step per time step, the yardstick of the
    reference itself (the tests check ``bpsn_reference`` against it). ``ternary``: a spike
    of -1 where ``v <= -threshold`` too."""
    T = x.shape[0]
    m = torch.ones(x.shape[:2], dtype=x.dtype, device=x.device) if mask is None else mask.to(x.dtype)
    m = m.reshape(m.shape + (1,) * (x.dim() - 2))
    u = m * x
    h_f, h_b = [None] * T, [None] * T
    state = torch.zeros_like(x[0])
    for t in range(T):
        state = lam_f * state + u[t]
        h_f[t] = state
    state = torch.zeros_like(x[0])
    for t in reversed(range(T)):
        state = lam_b * state + u[t]
        h_b[t] = state
    h_f, h_b = torch.stack(h_f), torch.stack(h_b)
    if direction == "forward":
        v = h_f
    elif direction == "backward":
        v = h_b
    else:
        v = alpha * h_f + (1 - alpha) * h_b
    spike = surrogate_function(v - threshold)
    if ternary:
        spike = spike - surrogate_function(-v - threshold)
    return m * spike, v
