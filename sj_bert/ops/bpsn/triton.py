r"""Fused BPSN forward and backward in Triton.

One program owns ``BLOCK`` neurons (columns of the ``[T, N]`` view of ``x``) and scans
time in registers with fp32 accumulation; consecutive columns make every load and store
coalesced. Notation as in :mod:`.reference` (``u[t] = m[t] x[t]``).

Forward (``DIRECTION``: 0 bi, 1 forward, 2 backward; unused scans are compiled out)::

    pass 1, t = 0 .. T-1:   h_f = lam_f h_f + u        (bi: park h_f in the v buffer)
    pass 2, t = T-1 .. 0:   h_b = lam_b h_b + u ;  v = alpha h_f + (1 - alpha) h_b
    spike = m * (v - threshold >= 0)                    (TERNARY: minus m * (-v - threshold >= 0))

Backward. With ``g_s[t] = grad_spike[t] m[t] sg'(v[t] - threshold)`` and
``g_v = g_s + grad_v`` (``grad_v``: gradient of the returned potential, if any); with
ternary spikes ``g_s`` gains ``grad_spike m sg'(-v - threshold)`` and the threshold's
share becomes ``g_th = grad_spike m (sg'(v - th) - sg'(-v - th))`` (``g_s`` when binary)::

    G_f[t] = alpha g_v[t] + lam_f G_f[t+1]          (reverse time)
    G_b[t] = (1 - alpha) g_v[t] + lam_b G_b[t-1]    (forward time)
    grad_x[t]      = m[t] (G_f[t] + G_b[t])
    grad_lam_f     = sum_t G_f[t] h_f[t-1] = sum_t u[t] Q[t],  Q[t] = G_f[t+1] + lam_f Q[t+1]
    grad_lam_b     = sum_t G_b[t] h_b[t+1] = sum_t u[t] R[t],  R[t] = G_b[t-1] + lam_b R[t-1]
    grad_alpha     = sum_t g_v[t] (h_f[t] - h_b[t])
    grad_threshold = -sum_t g_th[t]

What the forward saves: ``x`` and the fp32 ``v`` it returns anyway, nothing else. The
backward recomputes ``h_f`` and ``h_b`` from ``x`` (one extra read of ``x`` per pass),
which is cheaper than writing and reading back two fp32 ``[T, N]`` tensors. Rewriting the
decay gradients with ``Q`` and ``R`` pairs every product with quantities of the same scan
direction, so the forward-time pass (``h_f``, ``G_b``, ``R``) and the reverse-time pass
(``h_b``, ``G_f``, ``Q``) need no stored history; the only value crossing passes is
``G_b[t]``, parked in ``grad_x`` (fp32 inputs) or an fp32 scratch (half inputs).
``direction="forward"`` and ``"backward"`` need a single pass each way.

Interpreter. Triton 3.x picks compiled or interpreted kernels when ``@triton.jit`` runs,
i.e. from ``TRITON_INTERPRET`` at import time. These kernels instead keep both: CUDA
tensors launch the compiled kernels (unless ``TRITON_INTERPRET=1`` when launching), CPU
tensors always run interpreted copies made from the same Python functions (so tests on
CPU and on a GPU can share one process). For that the kernels call Triton builtins only,
no ``triton.language`` helpers that are themselves ``@triton.jit`` functions.
"""

from __future__ import annotations

import contextlib
import types
from functools import lru_cache
from typing import Optional

import torch
import triton
import triton.language as tl
from torch import Tensor
from triton.runtime.interpreter import InterpretedFunction
from triton.runtime.jit import JITFunction

from . import _host
from ._spikingjelly import triton_surrogate_gradient
from .autograd import bpsn_fused

__all__ = ["bpsn_triton", "launch_backward", "launch_forward"]

# SpikingJelly's surrogate derivatives (ids as in spikingjelly._ops.surrogate)
_SURROGATE_FN = triton_surrogate_gradient()
_surrogate_gradient = JITFunction(_SURROGATE_FN)
_jit = JITFunction  # always compilable, whatever TRITON_INTERPRET said at import
_INTERPRETED_BLOCK = 4096  # numpy does one program's columns at once: few, wide programs


@_jit
def _step_input(x_ptr, m_ptr, t, N, B, cols, sample, ok, HAS_MASK: tl.constexpr):
    """Offsets of step ``t``, the masked input ``u = m x`` (fp32) and ``m``."""
    off = tl.cast(t, tl.int64) * N + cols
    x = tl.load(x_ptr + off, mask=ok, other=0.0).to(tl.float32)
    if HAS_MASK:
        m = tl.load(m_ptr + tl.cast(t, tl.int64) * B + sample, mask=ok, other=0.0)
    else:
        m = tl.full(x.shape, 1.0, tl.float32)
    return off, m * x, m


@_jit
def _store_step(spike_ptr, v_ptr, off, v, th, m, ok, TERNARY: tl.constexpr):
    tl.store(v_ptr + off, v, mask=ok)
    spike = tl.where(v - th >= 0.0, m, 0.0)
    if TERNARY:
        spike = spike - tl.where(-v - th >= 0.0, m, 0.0)
    tl.store(spike_ptr + off, spike.to(spike_ptr.dtype.element_ty), mask=ok)


@_jit
def _grad_v(gs_ptr, gv_ptr, v_ptr, off, m, th, sg_alpha, ok,
            HAS_GS: tl.constexpr, HAS_GV: tl.constexpr, SURROGATE: tl.constexpr, TERNARY: tl.constexpr):
    """``(g_th, g_v)``: the threshold's share of the gradient through the spike (negated
    in the sum), and the gradient reaching ``v`` in total."""
    v = tl.load(v_ptr + off, mask=ok, other=0.0)
    if HAS_GS:
        gs = tl.load(gs_ptr + off, mask=ok, other=0.0).to(tl.float32) * m
        g_s = gs * _surrogate_gradient(v - th, sg_alpha, SURROGATE)
        g_th = g_s
        if TERNARY:  # s = H(v - th) - H(-v - th): both thresholds pass gradient to v
            g_neg = gs * _surrogate_gradient(-v - th, sg_alpha, SURROGATE)
            g_s = g_s + g_neg
            g_th = g_th - g_neg
    else:
        g_s = tl.full(v.shape, 0.0, tl.float32)
        g_th = g_s
    if HAS_GV:
        g_v = g_s + tl.load(gv_ptr + off, mask=ok, other=0.0)
    else:
        g_v = g_s
    return g_th, g_v


@_jit
def _columns(prm_ptr, N, D, P, BLOCK: tl.constexpr):
    """This program's columns, their validity, sample index and the four parameters."""
    cols = tl.cast(tl.program_id(0), tl.int64) * BLOCK + tl.arange(0, BLOCK)
    ok = cols < N
    ch = cols % P
    lam_f = tl.load(prm_ptr + ch, mask=ok, other=0.0)
    lam_b = tl.load(prm_ptr + P + ch, mask=ok, other=0.0)
    alpha = tl.load(prm_ptr + 2 * P + ch, mask=ok, other=0.0)
    th = tl.load(prm_ptr + 3 * P + ch, mask=ok, other=0.0)
    return cols, ok, cols // D, lam_f, lam_b, alpha, th


@_jit
def _bpsn_fwd_kernel(x_ptr, m_ptr, prm_ptr, spike_ptr, v_ptr, T, N, B, D, P,
                     HAS_MASK: tl.constexpr, DIRECTION: tl.constexpr, TERNARY: tl.constexpr, BLOCK: tl.constexpr):
    cols, ok, sample, lam_f, lam_b, alpha, th = _columns(prm_ptr, N, D, P, BLOCK)
    if DIRECTION != 2:  # h_f, forward in time
        h = tl.full([BLOCK], 0.0, tl.float32)
        for t in range(T):
            off, u, m = _step_input(x_ptr, m_ptr, t, N, B, cols, sample, ok, HAS_MASK)
            h = lam_f * h + u
            if DIRECTION == 1:
                _store_step(spike_ptr, v_ptr, off, h, th, m, ok, TERNARY)
            else:
                tl.store(v_ptr + off, h, mask=ok)  # h_f, read back by the reverse scan
    if DIRECTION != 1:  # h_b, reverse time, and the fusion
        h = tl.full([BLOCK], 0.0, tl.float32)
        for i in range(T):
            t = T - 1 - i
            off, u, m = _step_input(x_ptr, m_ptr, t, N, B, cols, sample, ok, HAS_MASK)
            h = lam_b * h + u
            if DIRECTION == 0:
                v = alpha * tl.load(v_ptr + off, mask=ok, other=0.0) + (1.0 - alpha) * h
            else:
                v = h
            _store_step(spike_ptr, v_ptr, off, v, th, m, ok, TERNARY)


@_jit
def _bpsn_bwd_kernel(x_ptr, m_ptr, prm_ptr, v_ptr, gs_ptr, gv_ptr, gx_ptr, gb_ptr, part_ptr,
                     T, N, B, D, P, sg_alpha,
                     HAS_MASK: tl.constexpr, HAS_GS: tl.constexpr, HAS_GV: tl.constexpr,
                     DIRECTION: tl.constexpr, SURROGATE: tl.constexpr, TERNARY: tl.constexpr,
                     BLOCK: tl.constexpr):
    # Inductor may pass Python floats as fp64; all arithmetic here is fp32.
    sg_alpha = tl.cast(sg_alpha, tl.float32)
    cols, ok, sample, lam_f, lam_b, alpha, th = _columns(prm_ptr, N, D, P, BLOCK)
    row = tl.cast(N, tl.int64)  # stride of the [4, N] partial-sum table
    zero = tl.full([BLOCK], 0.0, tl.float32)
    sum_gs = zero  # of g_th, the threshold's share
    if DIRECTION != 1:  # forward time: G_b, R (and h_f for grad_alpha when bi)
        g_b = zero
        r = zero
        h_f = zero
        sum_lam_b = zero
        sum_alpha = zero
        for t in range(T):
            off, u, m = _step_input(x_ptr, m_ptr, t, N, B, cols, sample, ok, HAS_MASK)
            g_th, g_v = _grad_v(gs_ptr, gv_ptr, v_ptr, off, m, th, sg_alpha, ok, HAS_GS, HAS_GV, SURROGATE, TERNARY)
            r = g_b + lam_b * r
            sum_lam_b += u * r
            if DIRECTION == 0:
                g_b = (1.0 - alpha) * g_v + lam_b * g_b
                h_f = lam_f * h_f + u
                sum_alpha += g_v * h_f
                tl.store(gb_ptr + off, g_b, mask=ok)
            else:
                g_b = g_v + lam_b * g_b
                sum_gs += g_th
                tl.store(gx_ptr + off, (m * g_b).to(gx_ptr.dtype.element_ty), mask=ok)
        tl.store(part_ptr + row + cols, sum_lam_b, mask=ok)
    if DIRECTION != 2:  # reverse time: G_f, Q (and h_b for grad_alpha when bi)
        g_f = zero
        q = zero
        h_b = zero
        sum_lam_f = zero
        for i in range(T):
            t = T - 1 - i
            off, u, m = _step_input(x_ptr, m_ptr, t, N, B, cols, sample, ok, HAS_MASK)
            g_th, g_v = _grad_v(gs_ptr, gv_ptr, v_ptr, off, m, th, sg_alpha, ok, HAS_GS, HAS_GV, SURROGATE, TERNARY)
            q = g_f + lam_f * q
            sum_lam_f += u * q
            sum_gs += g_th
            if DIRECTION == 0:
                g_f = alpha * g_v + lam_f * g_f
                h_b = lam_b * h_b + u
                sum_alpha -= g_v * h_b
                g_x = m * (g_f + tl.load(gb_ptr + off, mask=ok, other=0.0))
            else:
                g_f = g_v + lam_f * g_f
                g_x = m * g_f
            tl.store(gx_ptr + off, g_x.to(gx_ptr.dtype.element_ty), mask=ok)
        tl.store(part_ptr + cols, sum_lam_f, mask=ok)
    if DIRECTION == 0:
        tl.store(part_ptr + 2 * row + cols, sum_alpha, mask=ok)
    tl.store(part_ptr + 3 * row + cols, -sum_gs, mask=ok)


@lru_cache(maxsize=None)
def _interpreted_kernels() -> dict:
    """Interpreted twins of every kernel and helper above, resolving each other (and the
    surrogate) by name in a private copy of this module's globals."""
    scope = dict(globals())
    scope["_surrogate_gradient"] = InterpretedFunction(_SURROGATE_FN)
    for name, value in globals().items():
        if isinstance(value, JITFunction) and name != "_surrogate_gradient":
            fn = value.fn
            twin = types.FunctionType(fn.__code__, scope, fn.__name__, fn.__defaults__, fn.__closure__)
            twin.__annotations__ = dict(fn.__annotations__)  # tl.constexpr markers
            scope[name] = InterpretedFunction(twin)
    return scope


def _launch(name: str, device: torch.device, N: int, *args, **constexprs) -> None:
    if device.type == "cuda" and not _host.triton_interpreted():
        kernel, block = globals()[name], _host.columns_per_program(N)
        guard = torch.cuda.device(device)
        options = {"num_warps": block // 64}  # two columns per thread
    else:
        kernel, block = _interpreted_kernels()[name], min(_INTERPRETED_BLOCK, triton.next_power_of_2(N))
        guard, options = contextlib.nullcontext(), {}
    with guard:
        kernel[(triton.cdiv(N, block),)](*args, **constexprs, BLOCK=block, **options)


def _pointer(t: Optional[Tensor], like: Tensor) -> Tensor:
    """Triton needs a tensor for every pointer argument; absent ones are never read."""
    return like if t is None else t


def launch_forward(
    x: Tensor, m: Optional[Tensor], prm: Tensor, spike: Tensor, v: Tensor, direction: str, ternary: bool = False
) -> None:
    """The forward kernel over buffers from :mod:`.autograd` (see there for the contract)."""
    T, N, B, D = _host.layout(x)
    _launch(
        "_bpsn_fwd_kernel", x.device, N, x, _pointer(m, prm), prm, spike, v, T, N, B, D, prm.shape[1],
        HAS_MASK=m is not None, DIRECTION=_host.DIRECTION_CODES[direction], TERNARY=bool(ternary),
    )


def launch_backward(
    x: Tensor, m: Optional[Tensor], prm: Tensor, v: Tensor, gs: Optional[Tensor], gv: Optional[Tensor],
    grad_x: Tensor, gb: Tensor, partials: Tensor, direction: str, surrogate_id: int, surrogate_alpha: float,
    ternary: bool = False,
) -> None:
    """The backward kernel over buffers from :mod:`.autograd`."""
    T, N, B, D = _host.layout(x)
    _launch(
        "_bpsn_bwd_kernel", x.device, N,
        x, _pointer(m, prm), prm, v, _pointer(gs, x), _pointer(gv, v), grad_x, gb, partials,
        T, N, B, D, prm.shape[1], float(surrogate_alpha),
        HAS_MASK=m is not None, HAS_GS=gs is not None, HAS_GV=gv is not None,
        DIRECTION=_host.DIRECTION_CODES[direction], SURROGATE=surrogate_id, TERNARY=bool(ternary),
    )


def bpsn_triton(
    x: Tensor,
    mask: Optional[Tensor],
    lam_f: Tensor,
    lam_b: Tensor,
    alpha: Tensor,
    threshold: Tensor,
    direction: str = "bi",
    surrogate_id: int = 1,
    surrogate_alpha: float = 2.0,
    ternary: bool = False,
) -> tuple[Tensor, Tensor]:
    """BPSN with fused Triton kernels; same contract as :func:`.reference.bpsn_reference`.

    :param x: ``[T, B, *]``, float32, float16 or bfloat16 (fp32 accumulation)
    :param mask: ``[T, B]`` bool or integer, 1 at real steps, or ``None``
    :param lam_f, lam_b, alpha, threshold: ``[1]`` or ``[C]`` with ``C = x.shape[-1]``;
        decays and fusion already in (0, 1). Gradients flow to all four.
    :param direction: ``"bi"``, ``"forward"`` (``v = h_f``) or ``"backward"`` (``v = h_b``)
    :param surrogate_id, surrogate_alpha: SpikingJelly's fused surrogate
        (``spikingjelly._ops.surrogate._SURROGATE_IDS``) and its ``alpha``
    :param ternary: spikes in {-1, 0, 1} (:func:`.reference.spikes_from_potential`)
    :returns: ``(spike, v)``: spikes ``[T, B, *]`` in ``x.dtype`` (0 at masked steps) and
        the fused potential ``v`` ``[T, B, *]`` in fp32

    CUDA tensors run compiled kernels; CPU tensors run them in Triton's interpreter (slow,
    for tests). Under ``torch.compile`` it is the custom op ``torch.ops.sj_bert.bpsn_fwd``
    (:mod:`.autograd`), so a compiled graph keeps it whole. Example::

        >>> x = torch.randn(6, 2, 4)                      # [T, B, C]
        >>> p = lambda v: torch.tensor([v])
        >>> spike, v = bpsn_triton(x, None, p(0.5), p(0.5), p(0.5), p(1.0), "bi", 1, 2.0)
        >>> spike.shape, v.dtype
        (torch.Size([6, 2, 4]), torch.float32)
    """
    return bpsn_fused(
        "triton", x, mask, lam_f, lam_b, alpha, threshold, direction, surrogate_id, surrogate_alpha, ternary
    )
