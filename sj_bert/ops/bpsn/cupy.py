"""Fused BPSN forward and backward as CuPy RawKernels (CUDA C, compiled by NVRTC).

The same contract and the same algorithm as :mod:`.triton` (read its docstring for the
equations and for why the backward recomputes ``h_f``/``h_b`` and uses the ``Q``/``R``
scans): one thread per neuron column, time scanned in registers with fp32 accumulation,
one step per load (the Triton kernels load tiles of steps; ``auto`` picks Triton on CUDA).
It takes the mask as an fp32 copy and scales spikes carrying their threshold after the
kernel (:func:`launch_forward`).
Kernels are templates over the storage type (fp32, fp16, bf16, converted with PTX ``cvt``
and bit arithmetic, so NVRTC needs no CUDA headers), the direction, the surrogate and
binary or ternary spikes;
each combination is compiled on first use. The surrogate derivatives are SpikingJelly's
own ``cuda_surrogate.cuh``, read at run time and prepended to the source.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Optional

import numpy as np
import torch
from torch import Tensor

from . import _host
from ._spikingjelly import cuda_surrogate_source
from .autograd import bpsn_fused

__all__ = ["bpsn_cupy", "launch_backward", "launch_forward"]

_CTYPES = {torch.float32: "float", torch.float16: "sj_half", torch.bfloat16: "sj_bf16"}

_SOURCE = r"""
struct sj_half { unsigned short bits; };
struct sj_bf16 { unsigned short bits; };

__device__ __forceinline__ float sj_load(const float* p, long long i) { return p[i]; }
__device__ __forceinline__ float sj_load(const sj_half* p, long long i) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(p[i].bits));
    return f;
}
__device__ __forceinline__ float sj_load(const sj_bf16* p, long long i) {
    return __uint_as_float(((unsigned int)p[i].bits) << 16);
}
__device__ __forceinline__ void sj_store(float* p, long long i, float f) { p[i] = f; }
__device__ __forceinline__ void sj_store(sj_half* p, long long i, float f) {
    unsigned short h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
    p[i].bits = h;
}
__device__ __forceinline__ void sj_store(sj_bf16* p, long long i, float f) {
    const unsigned int u = __float_as_uint(f);
    // round to nearest even; a NaN stays a (quiet) NaN
    p[i].bits = (u & 0x7fffffffu) > 0x7f800000u
        ? (unsigned short)((u >> 16) | 0x40u)
        : (unsigned short)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

#define SJ_BI 0
#define SJ_FORWARD 1
#define SJ_BACKWARD 2

// Column n of the [T, N] view: sample n / D, parameters n % P from the [4, P] table.
#define SJ_COLUMN                                                                   \
    const long long n = (long long)blockIdx.x * blockDim.x + threadIdx.x;          \
    if (n >= N) return;                                                             \
    const long long c = n % P, b = n / D;                                           \
    const float lam_f = prm[c], lam_b = prm[P + c], alpha = prm[2 * P + c], th = prm[3 * P + c];

template <typename scalar_t, bool Ternary>
__device__ __forceinline__ void sj_fire(scalar_t* spike, float* v, long long i, float vt, float th, float mt) {
    v[i] = vt;
    float s = vt - th >= 0.0f ? mt : 0.0f;
    if (Ternary) s -= -vt - th >= 0.0f ? mt : 0.0f;  // a -1 spike below -th
    sj_store(spike, i, s);
}

template <typename scalar_t, int Direction, bool Ternary>
__global__ void bpsn_forward(const scalar_t* __restrict__ x, const float* __restrict__ m,
                             const float* __restrict__ prm, scalar_t* __restrict__ spike, float* v,
                             long long T, long long N, long long B, long long D, long long P) {
    SJ_COLUMN
    if (Direction != SJ_BACKWARD) {  // h_f, forward in time
        float h = 0.0f;
        for (long long t = 0; t < T; ++t) {
            const long long i = t * N + n;
            const float mt = m ? m[t * B + b] : 1.0f;
            h = lam_f * h + mt * sj_load(x, i);
            if (Direction == SJ_FORWARD) sj_fire<scalar_t, Ternary>(spike, v, i, h, th, mt);
            else v[i] = h;  // h_f, read back by the reverse scan
        }
    }
    if (Direction != SJ_FORWARD) {  // h_b, reverse time, and the fusion
        float h = 0.0f;
        for (long long t = T - 1; t >= 0; --t) {
            const long long i = t * N + n;
            const float mt = m ? m[t * B + b] : 1.0f;
            h = lam_b * h + mt * sj_load(x, i);
            sj_fire<scalar_t, Ternary>(spike, v, i, Direction == SJ_BI ? alpha * v[i] + (1.0f - alpha) * h : h, th, mt);
        }
    }
}

// g_th: the threshold's share of the gradient through the spike (negated in the sum);
// g_v: the gradient reaching v in total (plus the returned v's). Ternary spikes,
// s = H(v - th) - H(-v - th), pass gradient to v at both thresholds.
template <typename scalar_t, int Surrogate, bool Ternary>
__device__ __forceinline__ void sj_grad_v(const scalar_t* gs, const float* gv, const float* v, long long i,
                                          float mt, float th, float sg_alpha, float& g_th, float& g_v) {
    float g_s = 0.0f;
    g_th = 0.0f;
    if (gs) {
        const float g = sj_load(gs, i) * mt;
        g_s = g * sj_surrogate_gradient<Surrogate>(v[i] - th, sg_alpha);
        g_th = g_s;
        if (Ternary) {
            const float g_neg = g * sj_surrogate_gradient<Surrogate>(-v[i] - th, sg_alpha);
            g_s += g_neg;
            g_th -= g_neg;
        }
    }
    g_v = gv ? g_s + gv[i] : g_s;
}

// gx and gb may be the same buffer (fp32 inputs): no __restrict__ on them.
template <typename scalar_t, int Direction, int Surrogate, bool Ternary>
__global__ void bpsn_backward(const scalar_t* __restrict__ x, const float* __restrict__ m,
                              const float* __restrict__ prm, const float* __restrict__ v,
                              const scalar_t* __restrict__ gs, const float* __restrict__ gv,
                              scalar_t* gx, float* gb, float* __restrict__ part,
                              long long T, long long N, long long B, long long D, long long P, float sg_alpha) {
    SJ_COLUMN
    float sum_gs = 0.0f, sum_alpha = 0.0f, g_th, g_v;  // sum_gs: of g_th
    if (Direction != SJ_FORWARD) {  // forward time: G_b, R (and h_f when bi)
        float g_b = 0.0f, r = 0.0f, h_f = 0.0f, sum_lam_b = 0.0f;
        for (long long t = 0; t < T; ++t) {
            const long long i = t * N + n;
            const float mt = m ? m[t * B + b] : 1.0f, u = mt * sj_load(x, i);
            sj_grad_v<scalar_t, Surrogate, Ternary>(gs, gv, v, i, mt, th, sg_alpha, g_th, g_v);
            r = g_b + lam_b * r;
            sum_lam_b += u * r;
            if (Direction == SJ_BI) {
                g_b = (1.0f - alpha) * g_v + lam_b * g_b;
                h_f = lam_f * h_f + u;
                sum_alpha += g_v * h_f;
                gb[i] = g_b;
            } else {
                g_b = g_v + lam_b * g_b;
                sum_gs += g_th;
                sj_store(gx, i, mt * g_b);
            }
        }
        part[N + n] = sum_lam_b;
    }
    if (Direction != SJ_BACKWARD) {  // reverse time: G_f, Q (and h_b when bi)
        float g_f = 0.0f, q = 0.0f, h_b = 0.0f, sum_lam_f = 0.0f;
        for (long long t = T - 1; t >= 0; --t) {
            const long long i = t * N + n;
            const float mt = m ? m[t * B + b] : 1.0f, u = mt * sj_load(x, i);
            sj_grad_v<scalar_t, Surrogate, Ternary>(gs, gv, v, i, mt, th, sg_alpha, g_th, g_v);
            q = g_f + lam_f * q;
            sum_lam_f += u * q;
            sum_gs += g_th;
            if (Direction == SJ_BI) {
                g_f = alpha * g_v + lam_f * g_f;
                h_b = lam_b * h_b + u;
                sum_alpha -= g_v * h_b;
                sj_store(gx, i, mt * (g_f + gb[i]));
            } else {
                g_f = g_v + lam_f * g_f;
                sj_store(gx, i, mt * g_f);
            }
        }
        part[n] = sum_lam_f;
    }
    if (Direction == SJ_BI) part[2 * N + n] = sum_alpha;
    part[3 * N + n] = -sum_gs;
}
"""


def _bool(flag: bool) -> str:
    """A C++ template argument."""
    return "true" if flag else "false"


def _cupy():
    try:
        import cupy
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "BPSN backend 'cupy' needs CuPy: pip install 'sj-bert[cupy]' "
            "(or the cupy-cudaXXx wheel matching your CUDA)"
        ) from err
    return cupy


@lru_cache(maxsize=None)
def _kernel(name: str):
    """One compiled template instance, e.g. ``bpsn_backward<sj_bf16, 0, 1>``."""
    cupy = _cupy()
    source = cuda_surrogate_source().replace("#pragma once", "") + _SOURCE
    module = cupy.RawModule(code=source, options=("--std=c++17",), name_expressions=(name,))
    return module.get_function(name)


def _launch(name: str, device: torch.device, N: int, *args) -> None:
    cupy = _cupy()

    def arg(value):
        if value is None or isinstance(value, Tensor):  # pointers; None is nullptr
            return np.uint64(0 if value is None else value.data_ptr())
        return np.float32(value) if isinstance(value, float) else np.int64(value)

    threads = _host.columns_per_program(N)
    stream = torch.cuda.current_stream(device).cuda_stream
    with cupy.cuda.Device(device.index), cupy.cuda.ExternalStream(stream):
        _kernel(name)(((N + threads - 1) // threads,), (threads,), tuple(arg(a) for a in args))


def launch_forward(
    x: Tensor, m: Optional[Tensor], prm: Tensor, spike: Tensor, v: Tensor, direction: str, ternary: bool = False,
    amplitude: bool = False,
) -> None:
    """The forward kernel over buffers from :mod:`.autograd` (see there for the contract)."""
    T, N, B, D = _host.layout(x)
    name = f"bpsn_forward<{_CTYPES[x.dtype]}, {_host.DIRECTION_CODES[direction]}, {_bool(ternary)}>"
    _launch(name, x.device, N, x, _host.mask_table(m), prm, spike, v, T, N, B, D, prm.shape[1])
    if amplitude:  # the threshold row, on the channels (last dimension), as the Triton kernel does
        spike.mul_(prm[3])


def launch_backward(
    x: Tensor, m: Optional[Tensor], prm: Tensor, v: Tensor, gs: Optional[Tensor], gv: Optional[Tensor],
    grad_x: Tensor, gb: Tensor, partials: Tensor, direction: str, surrogate_id: int, surrogate_alpha: float,
    ternary: bool = False,
) -> None:
    """The backward kernel over buffers from :mod:`.autograd`."""
    T, N, B, D = _host.layout(x)
    codes = f"{_host.DIRECTION_CODES[direction]}, {int(surrogate_id)}, {_bool(ternary)}"
    name = f"bpsn_backward<{_CTYPES[x.dtype]}, {codes}>"
    _launch(name, x.device, N, x, _host.mask_table(m), prm, v, gs, gv, grad_x, gb, partials, T, N, B, D, prm.shape[1],
            float(surrogate_alpha))


def bpsn_cupy(
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
    """BPSN with CuPy kernels; same contract as :func:`.triton.bpsn_triton`.

    :param x: ``[T, B, *]`` CUDA tensor, float32, float16 or bfloat16 (fp32 accumulation)
    :param mask: ``[T, B]`` bool or integer, 1 at real steps, or ``None``
    :param lam_f, lam_b, alpha, threshold: ``[1]`` or ``[C]`` with ``C = x.shape[-1]``
    :param direction: ``"bi"``, ``"forward"`` or ``"backward"``
    :param surrogate_id, surrogate_alpha: SpikingJelly's fused surrogate and its ``alpha``
    :param ternary: spikes in {-1, 0, 1} (:func:`.reference.spikes_from_potential`)
    :returns: ``(spike, v)``: spikes ``[T, B, *]`` in ``x.dtype``, potential ``[T, B, *]`` fp32

    Example (needs CUDA and CuPy)::

        >>> x = torch.randn(6, 2, 4, device="cuda")
        >>> p = lambda v: torch.tensor([v], device="cuda")
        >>> spike, v = bpsn_cupy(x, None, p(0.5), p(0.5), p(0.5), p(1.0), "bi", 1, 2.0)
    """
    return bpsn_fused(
        "cupy", x, mask, lam_f, lam_b, alpha, threshold, direction, surrogate_id, surrogate_alpha, ternary
    )
