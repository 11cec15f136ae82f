r"""Fused BPSN forward and backward in Triton.

One program owns ``BLOCK`` neurons (columns of the ``[T, N]`` view of ``x``) and scans
time in registers with fp32 accumulation; consecutive columns make every load and store
coalesced. Notation as in :mod:`.reference` (``u[t] = m[t] x[t]``).

Tiles of time. A program loads ``STEPS`` steps of its columns at once, a ``[STEPS, BLOCK]``
tile, scans the tile with ``tl.associative_scan`` (each step a pair ``(lam, u)``, composed
as ``(lam_a lam_b, lam_b u_a + u_b)``, starting from the state the previous tile left) and
carries the state to the next tile. Every recurrence below is such a leaky scan. With
few columns (SNN-BERT's ~10^4) there is too little other work to hide a load's latency;
one step per load made the scan a chain of ``T`` round trips to memory, tiles make it
``T / STEPS``. With many columns other programs hide it, and tiles only cost: on an H200
the per-step scan was the faster one there (:func:`tile_shape`; ``STEPS_PER_TILE = 1`` is
the per-step scan).

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
``direction="forward"`` and ``"backward"`` need a single pass each way. In tiles, ``R`` is
scanned one step ahead (``R[t+1] = G_b[t] + lam_b R[t]``, the plain scan of ``G_b``) and
paired with ``u`` loaded one step later; ``Q`` likewise one step behind.

Interpreter. Triton 3.x picks compiled or interpreted kernels when ``@triton.jit`` runs,
i.e. from ``TRITON_INTERPRET`` at import time. These kernels instead keep both: CUDA
tensors launch the compiled kernels (unless ``TRITON_INTERPRET=1`` when launching), CPU
tensors always run interpreted copies made from the same Python functions (so tests on
CPU and on a GPU can share one process). For that the kernels call Triton builtins only,
no ``triton.language`` helpers that are themselves ``@triton.jit`` functions. The copies sum
with the interpreter's numpy sum (``_add`` is Triton's own sum combiner there) and scan row by
row (:mod:`._interpreter`): the interpreter's element-by-element defaults made a tiny model's
training step take seconds per neuron.
"""

from __future__ import annotations

import contextlib
import os
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
from ._interpreter import interpreter_patches
from ._spikingjelly import triton_surrogate_gradient
from .autograd import bpsn_fused

__all__ = ["bpsn_triton", "launch_backward", "launch_forward"]

# SpikingJelly's surrogate derivatives (ids as in spikingjelly._ops.surrogate)
_SURROGATE_FN = triton_surrogate_gradient()
_surrogate_gradient = JITFunction(_SURROGATE_FN)
_jit = JITFunction  # always compilable, whatever TRITON_INTERPRET said at import
_INTERPRETED_BLOCK = 4096  # numpy does one program's columns at once: few, wide programs
DEFAULT_STEPS = 16  # time steps per tile below TILED_MAX_COLUMNS columns (see tile_shape)
TILED_MAX_COLUMNS = 2**16  # from here on the per-step scan (see tile_shape)
STEPS_ENV_VAR = "SJ_BPSN_TRITON_STEPS"


def _steps_from_environment() -> Optional[int]:
    value = os.environ.get(STEPS_ENV_VAR, "").strip()
    if not value:
        return None
    if not value.isdigit() or int(value) < 1 or int(value) & (int(value) - 1):
        raise ValueError(f"{STEPS_ENV_VAR}={value!r}: expected a power of two (time steps per Triton tile)")
    return int(value)


#: time steps per tile, overriding :func:`tile_shape`'s choice (1: one step per round trip);
#: from ``SJ_BPSN_TRITON_STEPS`` at import, else ``None``
STEPS_PER_TILE: Optional[int] = _steps_from_environment()


@contextlib.contextmanager
def steps_per_tile(steps: Optional[int]):
    """:data:`STEPS_PER_TILE` set to ``steps`` inside the block, as it was afterwards
    (benchmarks compare tile lengths side by side this way)."""
    global STEPS_PER_TILE
    saved, STEPS_PER_TILE = STEPS_PER_TILE, steps
    try:
        yield
    finally:
        STEPS_PER_TILE = saved


@_jit
def _tile_input(x_ptr, m_ptr, t0, T, N, m_st, m_sb, cols, sample, ok, rows, HAS_MASK: tl.constexpr):
    """Steps ``t0 .. t0 + STEPS - 1`` of this program's columns: offsets, validity, the
    masked input ``u = m x`` (fp32) and ``m``, each ``[STEPS, BLOCK]`` (0 where invalid:
    before step 0, from step T on, past column N)."""
    t = tl.cast(t0 + rows, tl.int64)
    valid = ((t >= 0) & (t < T))[:, None] & ok[None, :]
    off = t[:, None] * N + cols[None, :]
    x = tl.load(x_ptr + off, mask=valid, other=0.0).to(tl.float32)
    if HAS_MASK:
        # the mask as the caller holds it (bool or integer, any strides): no fp32 copy per call
        m = tl.load(m_ptr + t[:, None] * m_st + sample[None, :] * m_sb, mask=valid, other=0).to(tl.float32)
    else:
        m = tl.where(valid, 1.0, 0.0)
    return off, valid, m * x, m


@_jit
def _compose(decay_a, value_a, decay_b, value_b):
    """Two consecutive spans of ``h <- lam h + u``, as (product of decays, what the span adds)."""
    return decay_a * decay_b, decay_b * value_a + value_b


@_jit
def _add(a, b):
    return a + b


@_jit
def _leaky_scan(u, lam, carry, rows, REVERSE: tl.constexpr, STEPS: tl.constexpr):
    """``h[t] = lam h[t-1] + u[t]`` over a ``[STEPS, BLOCK]`` tile (``REVERSE``: ``h[t+1]``),
    starting from ``carry``, the state just before the tile in scan order. All steps of the
    tile at once (``tl.associative_scan``), so the loads of a tile are in flight together
    instead of one step's after another's. Returns the tile's ``h`` and the carry for the
    next tile."""
    if REVERSE:
        seed = rows == STEPS - 1
        last = rows == 0
    else:
        seed = rows == 0
        last = rows == STEPS - 1
    u = tl.where(seed[:, None], u + (lam * carry)[None, :], u)
    decay = tl.broadcast_to(lam[None, :], u.shape)
    _, h = tl.associative_scan((decay, u), 0, _compose, reverse=REVERSE)
    return h, tl.reduce(tl.where(last[:, None], h, 0.0), 0, _add)


@_jit
def _store_step(spike_ptr, v_ptr, off, v, th, m, ok, TERNARY: tl.constexpr, AMPLITUDE: tl.constexpr):
    tl.store(v_ptr + off, v, mask=ok)
    spike = tl.where(v - th >= 0.0, m, 0.0)
    if TERNARY:
        spike = spike - tl.where(-v - th >= 0.0, m, 0.0)
    if AMPLITUDE:  # spikes carry the threshold (rounded once, as spike.mul_(threshold) does)
        spike = spike * th
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
def _bpsn_fwd_kernel(x_ptr, m_ptr, prm_ptr, spike_ptr, v_ptr, T, N, m_st, m_sb, D, P, n_tiles,
                     HAS_MASK: tl.constexpr, DIRECTION: tl.constexpr, TERNARY: tl.constexpr,
                     AMPLITUDE: tl.constexpr, BLOCK: tl.constexpr, STEPS: tl.constexpr):
    cols, ok, sample, lam_f, lam_b, alpha, th = _columns(prm_ptr, N, D, P, BLOCK)
    rows = tl.arange(0, STEPS)
    if DIRECTION != 2:  # h_f, forward in time
        h = tl.full([BLOCK], 0.0, tl.float32)
        for i in range(n_tiles):
            off, valid, u, m = _tile_input(x_ptr, m_ptr, i * STEPS, T, N, m_st, m_sb, cols, sample, ok, rows, HAS_MASK)
            h_f, h = _leaky_scan(u, lam_f, h, rows, False, STEPS)
            if DIRECTION == 1:
                _store_step(spike_ptr, v_ptr, off, h_f, th[None, :], m, valid, TERNARY, AMPLITUDE)
            else:
                tl.store(v_ptr + off, h_f, mask=valid)  # h_f, read back by the reverse scan
    if DIRECTION != 1:  # h_b, reverse time, and the fusion
        h = tl.full([BLOCK], 0.0, tl.float32)
        for i in range(n_tiles):
            t0 = (n_tiles - 1 - i) * STEPS
            off, valid, u, m = _tile_input(x_ptr, m_ptr, t0, T, N, m_st, m_sb, cols, sample, ok, rows, HAS_MASK)
            h_b, h = _leaky_scan(u, lam_b, h, rows, True, STEPS)
            if DIRECTION == 0:
                v = alpha[None, :] * tl.load(v_ptr + off, mask=valid, other=0.0) + (1.0 - alpha[None, :]) * h_b
            else:
                v = h_b
            _store_step(spike_ptr, v_ptr, off, v, th[None, :], m, valid, TERNARY, AMPLITUDE)


@_jit
def _bpsn_bwd_kernel(x_ptr, m_ptr, prm_ptr, v_ptr, gs_ptr, gv_ptr, gx_ptr, gb_ptr, part_ptr,
                     T, N, m_st, m_sb, D, P, n_tiles, sg_alpha,
                     HAS_MASK: tl.constexpr, HAS_GS: tl.constexpr, HAS_GV: tl.constexpr,
                     DIRECTION: tl.constexpr, SURROGATE: tl.constexpr, TERNARY: tl.constexpr,
                     BLOCK: tl.constexpr, STEPS: tl.constexpr):
    # Inductor may pass Python floats as fp64; all arithmetic here is fp32.
    sg_alpha = tl.cast(sg_alpha, tl.float32)
    cols, ok, sample, lam_f, lam_b, alpha, th = _columns(prm_ptr, N, D, P, BLOCK)
    rows = tl.arange(0, STEPS)
    th_row = th[None, :]
    row = tl.cast(N, tl.int64)  # stride of the [4, N] partial-sum table
    zero = tl.full([BLOCK], 0.0, tl.float32)
    sum_gs = zero  # of g_th, the threshold's share
    sum_alpha = zero
    if DIRECTION != 1:  # forward time: G_b, R (and h_f for grad_alpha when bi)
        g_b = zero
        r = zero
        h_f = zero
        sum_lam_b = zero
        for i in range(n_tiles):
            t0 = i * STEPS
            off, valid, u, m = _tile_input(x_ptr, m_ptr, t0, T, N, m_st, m_sb, cols, sample, ok, rows, HAS_MASK)
            g_th, g_v = _grad_v(gs_ptr, gv_ptr, v_ptr, off, m, th_row, sg_alpha, valid,
                                HAS_GS, HAS_GV, SURROGATE, TERNARY)
            if DIRECTION == 0:
                big_g_b, g_b = _leaky_scan((1.0 - alpha[None, :]) * g_v, lam_b, g_b, rows, False, STEPS)
                h_f_tile, h_f = _leaky_scan(u, lam_f, h_f, rows, False, STEPS)
                sum_alpha += tl.reduce(g_v * h_f_tile, 0, _add)
                tl.store(gb_ptr + off, big_g_b, mask=valid)
            else:
                big_g_b, g_b = _leaky_scan(g_v, lam_b, g_b, rows, False, STEPS)
                sum_gs += tl.reduce(g_th, 0, _add)
                tl.store(gx_ptr + off, (m * big_g_b).to(gx_ptr.dtype.element_ty), mask=valid)
            # R[t+1] = G_b[t] + lam_b R[t]: the scan of G_b, paired with u one step later
            r_next, r = _leaky_scan(big_g_b, lam_b, r, rows, False, STEPS)
            _, _, u_next, _ = _tile_input(x_ptr, m_ptr, t0 + 1, T, N, m_st, m_sb, cols, sample, ok, rows, HAS_MASK)
            sum_lam_b += tl.reduce(u_next * r_next, 0, _add)
        tl.store(part_ptr + row + cols, sum_lam_b, mask=ok)
    if DIRECTION != 2:  # reverse time: G_f, Q (and h_b for grad_alpha when bi)
        g_f = zero
        q = zero
        h_b = zero
        sum_lam_f = zero
        for i in range(n_tiles):
            t0 = (n_tiles - 1 - i) * STEPS
            off, valid, u, m = _tile_input(x_ptr, m_ptr, t0, T, N, m_st, m_sb, cols, sample, ok, rows, HAS_MASK)
            g_th, g_v = _grad_v(gs_ptr, gv_ptr, v_ptr, off, m, th_row, sg_alpha, valid,
                                HAS_GS, HAS_GV, SURROGATE, TERNARY)
            sum_gs += tl.reduce(g_th, 0, _add)
            if DIRECTION == 0:
                big_g_f, g_f = _leaky_scan(alpha[None, :] * g_v, lam_f, g_f, rows, True, STEPS)
                h_b_tile, h_b = _leaky_scan(u, lam_b, h_b, rows, True, STEPS)
                sum_alpha -= tl.reduce(g_v * h_b_tile, 0, _add)
                g_x = m * (big_g_f + tl.load(gb_ptr + off, mask=valid, other=0.0))
            else:
                big_g_f, g_f = _leaky_scan(g_v, lam_f, g_f, rows, True, STEPS)
                g_x = m * big_g_f
            tl.store(gx_ptr + off, g_x.to(gx_ptr.dtype.element_ty), mask=valid)
            # Q[t-1] = G_f[t] + lam_f Q[t]: the reverse scan of G_f, paired with u one step earlier
            q_prev, q = _leaky_scan(big_g_f, lam_f, q, rows, True, STEPS)
            _, _, u_prev, _ = _tile_input(x_ptr, m_ptr, t0 - 1, T, N, m_st, m_sb, cols, sample, ok, rows, HAS_MASK)
            sum_lam_f += tl.reduce(u_prev * q_prev, 0, _add)
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
    # Triton's interpreter sums with numpy only when handed its own sum combiner, and otherwise
    # calls the combiner once per element in Python: the same sums, the twins' main cost
    scope["_add"] = tl.standard._sum_combine
    return scope


def tile_shape(T: int, N: int, interpreted: bool = False) -> tuple[int, int, int]:
    """``(BLOCK, STEPS, num_warps)``: a program owns ``BLOCK`` columns and scans them
    ``STEPS`` time steps per tile; :data:`STEPS_PER_TILE` overrides ``STEPS``.

    Measured on an H200 (``bench/results/triton_tiles*_cuda.json``, forward+backward, fp32):
    with few columns a tile helps at long T (``N = 12288``, T=512: 1.31 ms in tiles of 32
    against 1.81 ms per step), at ``2**20`` columns every tile shape tried was slower than the
    per-step scan (T=256: 5.05 ms per step, 6.2 to 23.5 ms in tiles), and at 49152 columns
    the two were even. So tiles below :data:`TILED_MAX_COLUMNS` columns, one step above."""
    steps = min(STEPS_PER_TILE or (1 if N >= TILED_MAX_COLUMNS else DEFAULT_STEPS),
                triton.next_power_of_2(max(T, 1)))
    if interpreted:  # numpy does a program's tile at once: few, wide programs
        return min(_INTERPRETED_BLOCK, triton.next_power_of_2(N)), steps, 1
    if steps == 1:  # one step per round trip: the per-step kernels' shape
        block = _host.columns_per_program(N)
        return block, 1, block // 64  # two columns per thread
    block = 128 if N >= 2**18 else 64 if N >= 2**15 else 32
    # 8 tile elements per thread: the bidirectional backward holds about a dozen tiles live
    # (ptxas for sm_90 at 8 per thread: 121 registers with Triton 3.8, up to 255 with 3.6,
    # the GPU image's; at 16 per thread it spills)
    return block, steps, max(1, min(8, block * steps // 256))


def _launch(name: str, x: Tensor, m: Optional[Tensor], pointers: tuple, P: int, scalars: tuple = (),
            **constexprs) -> None:
    """Launch kernel ``name`` over the ``[T, N]`` view of ``x``: its pointer arguments, then
    ``T, N``, the mask's strides, ``D, P``, the number of tiles and ``scalars``."""
    T, N, B, D = _host.layout(x)
    interpreted = x.device.type != "cuda" or _host.triton_interpreted()
    block, steps, num_warps = tile_shape(T, N, interpreted)
    if interpreted:
        kernel, guard, options = _interpreted_kernels()[name], interpreter_patches(), {}
    else:
        kernel, guard, options = globals()[name], torch.cuda.device(x.device), {"num_warps": num_warps}
    m_st, m_sb = (0, 0) if m is None else m.stride()
    with guard:
        kernel[(triton.cdiv(N, block),)](*pointers, T, N, m_st, m_sb, D, P, triton.cdiv(T, steps), *scalars,
                                         HAS_MASK=m is not None, **constexprs, BLOCK=block, STEPS=steps, **options)


def _pointer(t: Optional[Tensor], like: Tensor) -> Tensor:
    """Triton needs a tensor for every pointer argument; absent ones are never read."""
    return like if t is None else t


def launch_forward(
    x: Tensor, m: Optional[Tensor], prm: Tensor, spike: Tensor, v: Tensor, direction: str, ternary: bool = False,
    amplitude: bool = False,
) -> None:
    """The forward kernel over buffers from :mod:`.autograd` (see there for the contract)."""
    _launch(
        "_bpsn_fwd_kernel", x, m, (x, _pointer(m, prm), prm, spike, v), prm.shape[1],
        DIRECTION=_host.DIRECTION_CODES[direction], TERNARY=bool(ternary), AMPLITUDE=bool(amplitude),
    )


def launch_backward(
    x: Tensor, m: Optional[Tensor], prm: Tensor, v: Tensor, gs: Optional[Tensor], gv: Optional[Tensor],
    grad_x: Tensor, gb: Tensor, partials: Tensor, direction: str, surrogate_id: int, surrogate_alpha: float,
    ternary: bool = False,
) -> None:
    """The backward kernel over buffers from :mod:`.autograd`."""
    _launch(
        "_bpsn_bwd_kernel", x, m,
        (x, _pointer(m, prm), prm, v, _pointer(gs, x), _pointer(gv, v), grad_x, gb, partials), prm.shape[1],
        (float(surrogate_alpha),),
        HAS_GS=gs is not None, HAS_GV=gv is not None,
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
