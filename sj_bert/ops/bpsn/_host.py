"""Host-side pieces shared by the fused BPSN backends (Triton and CuPy).

Both kernels see ``x`` as a contiguous ``[T, N]`` matrix (``N = B * D`` columns, one
neuron per column, ``D = prod(x.shape[2:])``), the mask as fp32 ``[T, B]`` (column ``n``
belongs to sample ``n // D``) and the four parameters as one fp32 ``[4, P]`` table
(rows ``lam_f, lam_b, alpha, threshold``; column ``n`` reads entry ``n % P``, ``P`` is 1
or ``C = x.shape[-1]``). The backward kernels leave per-column partial sums of the
parameter gradients in an fp32 ``[4, N]`` table, reduced here to each parameter's shape.
"""

from __future__ import annotations

import os
from typing import Optional

import torch

from .reference import DIRECTIONS

DIRECTION_CODES = {"bi": 0, "forward": 1, "backward": 2}
KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
# parameters each direction reads; the others get no gradient, as in the reference
USED_PARAMS = {
    "bi": (True, True, True, True),
    "forward": (True, False, False, True),
    "backward": (False, True, False, True),
}


def triton_interpreted() -> bool:
    """True when Triton runs kernels on the CPU (``TRITON_INTERPRET=1``): tests use this."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def check_inputs(
    backend: str,
    x: torch.Tensor,
    mask: Optional[torch.Tensor],
    params: tuple[torch.Tensor, ...],
    direction: str,
) -> None:
    """Clear errors for what the fused kernels do not take (the reference is lenient)."""
    if direction not in DIRECTIONS:
        raise ValueError(f"bpsn_{backend}: direction must be one of {DIRECTIONS}, got {direction!r}")
    if x.dtype not in KERNEL_DTYPES:
        raise TypeError(
            f"bpsn_{backend}: x must be float32, float16 or bfloat16 (fp32 accumulation), got {x.dtype}; "
            "use the torch backend for other dtypes"
        )
    if x.dim() < 2:
        raise ValueError(f"bpsn_{backend}: x must have shape [T, B, *], got {tuple(x.shape)}")
    C = x.shape[-1]
    for name, p in zip(("lam_f", "lam_b", "alpha", "threshold"), params):
        if p.numel() not in (1, C):
            raise ValueError(f"bpsn_{backend}: {name} must have 1 or C={C} elements, got shape {tuple(p.shape)}")
        if p.device != x.device:
            raise ValueError(f"bpsn_{backend}: {name} is on {p.device} but x is on {x.device}")
    if mask is not None and (tuple(mask.shape) != tuple(x.shape[:2]) or mask.device != x.device):
        raise ValueError(
            f"bpsn_{backend}: mask must be [T, B] = {list(x.shape[:2])} on {x.device}, "
            f"got {list(mask.shape)} on {mask.device}"
        )


def columns_per_program(N: int) -> int:
    """Columns one Triton program / CuPy thread block owns. Each column is a sequential
    scan over T, so a small ``N`` (a BERT layer: batch x hidden, ~10^4 columns) needs
    narrow programs to occupy every SM; a large one amortises better with wide ones.
    A heuristic, not tuned on hardware yet."""
    return 256 if N >= 2**18 else 128 if N >= 2**16 else 64


def layout(x: torch.Tensor) -> tuple[int, int, int, int]:
    """``(T, N, B, D)`` of the ``[T, N]`` view of ``x``."""
    T, B = x.shape[0], x.shape[1]
    N = x[0].numel()
    return T, N, B, (N // B if B else 1)


def mask_table(mask: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """fp32 ``[T, B]`` (the reference multiplies by ``mask.to(dtype)``, so do the kernels)."""
    return None if mask is None else mask.to(torch.float32).contiguous()


def param_table(params: tuple[torch.Tensor, ...], C: int) -> torch.Tensor:
    """fp32 ``[4, P]``: rows ``lam_f, lam_b, alpha, threshold``; ``P = C`` if any is per channel.

    Called where autograd records nothing (an ``autograd.Function``'s forward, a custom
    op's kernel, inference), so no ``detach``; and with as few tensor ops as the inputs
    allow (``[P]`` rows stack as they are): each costs host time on a GPU step."""
    P = C if any(p.numel() > 1 for p in params) else 1
    rows = [p if p.dim() == 1 else p.reshape(-1) for p in params]
    rows = [r if r.numel() == P else r.expand(P) for r in rows]
    return torch.stack([r if r.dtype == torch.float32 else r.to(torch.float32) for r in rows])


def param_grads(
    partials: torch.Tensor, params: tuple[tuple[torch.Size, torch.dtype], ...], direction: str, copy: bool
) -> list[Optional[torch.Tensor]]:
    """Reduce the kernels' fp32 ``[4, N]`` per-column sums to each parameter's
    ``(shape, dtype)``; ``None`` for parameters the direction does not use (their rows are
    never written). ``copy``: fresh tensors (custom ops may not return views)."""
    P = max(shape.numel() for shape, _ in params)
    per_channel = partials.reshape(4, -1, P).sum(1)  # column n holds channel n % P
    grads: list[Optional[torch.Tensor]] = []
    for row, (shape, dtype), used in zip(per_channel, params, USED_PARAMS[direction]):
        if not used:
            grads.append(None)
            continue
        g = row if shape.numel() == P else row.sum(0, keepdim=True)
        grads.append(g.reshape(shape).to(dtype, copy=copy))
    return grads


def forward_buffers(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``x`` made contiguous and the outputs: spikes in ``x.dtype``, the fp32 potential."""
    x = x.contiguous()
    return x, torch.empty_like(x), torch.empty(x.shape, dtype=torch.float32, device=x.device)


def backward_buffers(
    x: torch.Tensor,
    v: torch.Tensor,
    grad_spike: Optional[torch.Tensor],
    grad_v: Optional[torch.Tensor],
    direction: str,
):
    """Contiguous inputs of the backward kernels and their outputs:
    ``(x, v, grad_spike, grad_v, grad_x, gb, partials)``.

    ``gb`` is where the bidirectional backward parks ``G_b`` between its two passes:
    ``grad_x`` itself for fp32 (read back, then overwritten in place), else an fp32 buffer
    so that half inputs are rounded once, as in the reference. ``partials`` is the fp32
    ``[4, N]`` table of per-column parameter-gradient sums; the kernels write the rows of
    the parameters the direction uses (:data:`USED_PARAMS`), and only those are read."""
    x = x.contiguous()
    grad_x = torch.empty_like(x)
    gb = grad_x if direction != "bi" or x.dtype == torch.float32 else torch.empty_like(x, dtype=torch.float32)
    return (
        x,
        v.contiguous(),
        None if grad_spike is None else grad_spike.to(x.dtype).contiguous(),
        None if grad_v is None else grad_v.to(torch.float32).contiguous(),
        grad_x,
        gb,
        torch.empty(4, x[0].numel(), dtype=torch.float32, device=x.device),
    )
