"""Plain-torch BPSN: the parallel reference every fused kernel is tested against.

Shapes (the contract shared by every backend):

- ``x``: ``[T, B, *]``, time first. The last dimension holds the channels.
- ``mask``: ``[T, B]`` (bool or float, 1 at real tokens) or ``None``.
- ``lam_f``, ``lam_b``, ``alpha``, ``threshold``: ``[1]`` (shared) or ``[C]`` with
  ``C = x.shape[-1]`` (one per channel). ``lam_*`` and ``alpha`` are already squashed
  into (0, 1): the node owns the logits.

Equations (DESIGN section 1), with ``m[t] = mask[t]``::

    h_f[t] = lam_f * h_f[t-1] + m[t] * x[t]      h_f[-1] = 0
    h_b[t] = lam_b * h_b[t+1] + m[t] * x[t]      h_b[T]  = 0
    v[t]   = alpha * h_f[t] + (1 - alpha) * h_b[t]
    s[t]   = m[t] * Heaviside(v[t] - threshold)
           - m[t] * Heaviside(-v[t] - threshold)    (ternary spikes only: s in {-1, 0, 1})

There is no reset, so both scans are linear maps of the input over time:
``h_f = L_f u`` and ``h_b = U_b u`` with ``u = m * x``, ``L_f[t, k] = lam_f ** (t - k)``
for ``k <= t`` and ``U_b[t, k] = lam_b ** (k - t)`` for ``k >= t``. The reference builds the
fused ``[T, T]`` matrix ``alpha L_f + (1 - alpha) U_b`` (one per channel when the
parameters are per channel) and applies it with one matmul: no Python loop over T.
Memory is ``O(C T^2)`` for per-channel parameters: this is the statement the tests trust,
not what users run; the torch path (``chunk.py``) works in chunks, linear in T, and the
fused kernels scan in registers.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch

DIRECTIONS = ("bi", "forward", "backward")


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Half inputs accumulate in fp32; fp32 and fp64 keep their own precision."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _decay_matrix(lam: torch.Tensor, T: int, causal: bool) -> torch.Tensor:
    """``[P, T, T]`` matrix of ``lam ** |t - k|`` on the causal (``k <= t``) or
    anti-causal (``k >= t``) triangle, zero elsewhere. ``lam``: ``[P]``."""
    steps = torch.arange(T, device=lam.device)
    lag = steps[:, None] - steps[None, :]  # t - k
    if not causal:
        lag = -lag
    # T powers, then gathered by lag: one pow per lag, not per matrix entry (also in backward)
    powers = lam[:, None] ** steps.to(lam.dtype)  # [P, T]
    triangle = (lag >= 0).to(lam.dtype)
    return powers[:, lag.clamp(min=0)] * triangle


def fusion_matrix(
    lam_f: torch.Tensor, lam_b: torch.Tensor, alpha: torch.Tensor, T: int, direction: str
) -> torch.Tensor:
    """``[P, T, T]`` map from the masked input ``u`` to the potential ``v`` (``v = M u``).

    ``P`` is 1 for shared parameters or ``C`` per channel."""
    if direction == "forward":
        return _decay_matrix(lam_f, T, causal=True)
    if direction == "backward":
        return _decay_matrix(lam_b, T, causal=False)
    a = alpha[:, None, None]
    return a * _decay_matrix(lam_f, T, True) + (1 - a) * _decay_matrix(lam_b, T, False)


def masked_input(x: torch.Tensor, mask: Optional[torch.Tensor], dtype: torch.dtype) -> torch.Tensor:
    """``u = m * x`` ``[T, B, *]`` in ``dtype``: padded steps are zeroed before integration."""
    u = x.to(dtype)
    if mask is not None:
        u = u * mask.to(dtype).reshape(mask.shape + (1,) * (x.dim() - 2))
    return u


def spikes_from_potential(
    v: torch.Tensor,
    m: Optional[torch.Tensor],
    threshold: torch.Tensor,
    surrogate_function: Callable[[torch.Tensor], torch.Tensor],
    ternary: bool = False,
) -> torch.Tensor:
    """``s = m * Heaviside(v - threshold)`` (the surrogate's gradient) in ``v.dtype``:
    padded steps are silenced after firing. ``m`` (or ``None``) and ``threshold``
    broadcast against ``v``, whatever its layout.

    ``ternary``: also a spike of -1 where ``v <= -threshold`` (SpikingJelly's ternary
    neurons, SpikeLM's bi-spiking): ``H(v - th) - H(-v - th)``, the surrogate's gradient at
    both thresholds. A -1 spike costs the next layer a subtraction, still an accumulate."""
    threshold = threshold.to(v.dtype)
    spike = surrogate_function(v - threshold)
    if ternary:
        spike = spike - surrogate_function(-v - threshold)
    return spike if m is None else spike * m.to(v.dtype)


def _broadcast_params(n_params: int, *params: torch.Tensor) -> int:
    sizes = {p.numel() for p in params}
    sizes.discard(1)
    if len(sizes) > 1:
        raise ValueError(f"BPSN parameters must all have 1 or C elements, got sizes {sorted(sizes)}")
    return sizes.pop() if sizes else n_params


def bpsn_potential(
    x: torch.Tensor,
    mask: Optional[torch.Tensor],
    lam_f: torch.Tensor,
    lam_b: torch.Tensor,
    alpha: torch.Tensor,
    direction: str = "bi",
) -> torch.Tensor:
    """Membrane potential ``v``: ``[T, B, *]`` in the compute dtype (fp32 for half inputs)."""
    T = x.shape[0]
    dtype = compute_dtype(x.dtype)
    u = masked_input(x, mask, dtype)
    P = _broadcast_params(1, lam_f, lam_b, alpha)
    lam_f, lam_b, alpha = (p.to(dtype).expand(P) for p in (lam_f, lam_b, alpha))
    M = fusion_matrix(lam_f, lam_b, alpha, T, direction)  # [P, T, T]
    if P == 1:
        return (M[0] @ u.reshape(T, -1)).reshape(u.shape)
    C = x.shape[-1]
    if C != P:
        raise ValueError(f"per-channel BPSN parameters have {P} entries but x has {C} channels")
    v = torch.einsum("ctk,knc->tnc", M, u.reshape(T, -1, C))
    return v.reshape(u.shape)


def bpsn_reference(
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
    """Parallel BPSN in plain torch (autograd through every input and parameter).

    Returns ``(spikes, v)``: spikes ``[T, B, *]`` in ``x.dtype`` (0 at padded steps; in
    {-1, 0, 1} with ``ternary``), potential ``v`` ``[T, B, *]`` in the compute dtype.
    """
    v = bpsn_potential(x, mask, lam_f, lam_b, alpha, direction)
    m = None if mask is None else mask.reshape(mask.shape + (1,) * (x.dim() - 2))
    return spikes_from_potential(v, m, threshold, surrogate_function, ternary).to(x.dtype), v
