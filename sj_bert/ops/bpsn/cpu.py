"""BPSN on the CPU as compiled scans: the ``cpu`` backend, the CPU default where a C++
compiler is found.

The potential is a linear map of the masked input, two leaky scans over time. On the CPU
a scan in compiled code walks the data twice and keeps only a state per neuron in cache,
where the chunked torch path (``chunk.py``) needs about ten passes of torch ops. The scans
live in ``cpu_scan.cpp`` (its header gives the equations of the forward and the backward
pass), built on first use with the system's C++ compiler into
``$SJ_BERT_CACHE/kernels/`` (about a second: no torch headers) and called through ctypes.
ctypes releases the GIL during the call; the scans use ``torch.get_num_threads()``
threads through OpenMP (one for small inputs).

With autograd, the scans give ``v`` and its backward; firing (``s = m * H(v - threshold)``
with the surrogate's gradient) stays in torch, so every surrogate works. In inference
the scans also fire, for SpikingJelly's spiking surrogates (their forward is the step):
one call, no torch op on the data. Where no compiler is found, or the build fails,
:func:`available` says why and ``auto`` keeps the torch path.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable, NamedTuple, Optional

import torch

from ...files import cache_dir
from ._host import DIRECTION_CODES
from ._spikingjelly import surrogate_spec
from .reference import DIRECTIONS, _broadcast_params, compute_dtype, spikes_from_potential

__all__ = ["ScanWeights", "available", "bpsn_cpu", "cpu_potential"]

SOURCE = Path(__file__).with_name("cpu_scan.cpp")
DTYPES = {torch.float32: "f32", torch.float64: "f64"}
# below this many elements one thread does the scans: waking others costs more than it saves
PARALLEL_MIN_ELEMENTS = 1 << 15
_library: Optional[ctypes.CDLL] = None
_failure: Optional[str] = None


def _compiler() -> Optional[str]:
    for name in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        if name and shutil.which(name):
            return name
    return None


def _build(target: Path, compiler: str) -> None:
    """Compile ``SOURCE`` into ``target``: to a temporary name beside it, then renamed into
    place, so concurrent first uses never load half a library."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        command = [compiler, "-O3", "-std=c++17", "-shared", "-fPIC", "-fopenmp", str(SOURCE), "-o", tmp]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr.strip()[-2000:]}")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _load() -> Optional[ctypes.CDLL]:
    """The compiled scans, built on first use; ``None`` (and :func:`available`'s reason) when
    they cannot be."""
    global _library, _failure
    if _library is not None or _failure is not None:
        return _library
    compiler = _compiler()
    if compiler is None:
        _failure = "no C++ compiler found (looked for $CXX, c++, g++, clang++)"
        return None
    # one library per source text, compiler and machine: a shared cache folder may serve
    # several hosts or Pythons
    key = hashlib.sha256(
        SOURCE.read_bytes() + f"{compiler}|{platform.machine()}|{sys.implementation.cache_tag}".encode()
    ).hexdigest()[:16]
    target = cache_dir() / "kernels" / f"bpsn_cpu_scan-{key}.so"
    try:
        if not target.exists():
            _build(target, compiler)
        library = ctypes.CDLL(str(target))
    except (OSError, RuntimeError) as error:
        _failure = f"building the CPU scan failed: {error}"
        return None
    i64, ptr, i32 = ctypes.c_int64, ctypes.c_void_p, ctypes.c_int
    for tag in DTYPES.values():
        forward = getattr(library, f"bpsn_cpu_forward_{tag}")
        forward.argtypes = [ptr, ptr, i64, ptr, ptr, ptr, i64, i64, i64, ptr, ptr, ptr, ptr, i32, i32, i32]
        forward.restype = None
        backward = getattr(library, f"bpsn_cpu_backward_{tag}")
        backward.argtypes = [ptr, ptr, i64, ptr, ptr, ptr, i64, i64, i64, ptr, ptr, ptr, ptr, i32, i32]
        backward.restype = None
    _library = library
    return library


def available() -> tuple[bool, str]:
    """``(True, "")`` when the compiled scans load (building them if needed), else
    ``(False, why)``."""
    return (True, "") if _load() is not None else (False, _failure or "unknown")


class ScanWeights(NamedTuple):
    """What the scans read from the parameters, each a contiguous ``[P]`` in the compute
    dtype: the decays and each scan's weight in ``v`` (``alpha`` and ``1 - alpha``, or 1
    for the one direction; the decay of a scan the direction does not run is kept as
    given and never read).
    ``BPSN`` caches them while its parameters do not change."""

    lam_f: torch.Tensor
    lam_b: torch.Tensor
    w_f: torch.Tensor
    w_b: torch.Tensor

    @classmethod
    def build(cls, lam_f, lam_b, alpha, direction: str, dtype: Optional[torch.dtype] = None) -> "ScanWeights":
        """From ``[1]`` or ``[P]`` parameters (in ``dtype``, default their own)."""
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
        P = _broadcast_params(1, lam_f, lam_b, alpha)
        lam_f, lam_b, alpha = (p.to(dtype or p.dtype).reshape(-1).expand(P) for p in (lam_f, lam_b, alpha))
        one = torch.ones_like(alpha)
        weights = {"bi": (alpha, 1 - alpha), "forward": (one, one), "backward": (one, one)}[direction]
        return cls(*(t.contiguous() for t in (lam_f, lam_b, *weights)))


def _threads(x: torch.Tensor) -> int:
    return torch.get_num_threads() if x.numel() >= PARALLEL_MIN_ELEMENTS else 1


def _address(t: Optional[torch.Tensor]) -> Optional[int]:
    return None if t is None else t.data_ptr()


def _mask_arguments(mask: Optional[torch.Tensor]) -> tuple[Optional[int], int]:
    return (None, 0) if mask is None else (mask.data_ptr(), mask.shape[1])


def _scan_forward(x, mask, weights, direction, threshold=None, ternary=False):
    """``v`` of ``x`` ``[T, R, W]`` (contiguous), and, given ``threshold`` ``[W]``, the
    spikes (in {-1, 0, 1} if ``ternary``; else ``None``). ``mask``: ``[T, B]`` uint8 or
    ``None``; ``weights``: the :class:`ScanWeights` fields widened to ``[W]``
    (:func:`_widen`); all in ``x.dtype``."""
    T, R, W = x.shape
    v = torch.empty_like(x)
    spikes = None if threshold is None else torch.empty_like(x)
    kernel = getattr(_load(), f"bpsn_cpu_forward_{DTYPES[x.dtype]}")
    kernel(x.data_ptr(), *_mask_arguments(mask), v.data_ptr(), _address(spikes), _address(threshold), T, R, W,
           *(t.data_ptr() for t in weights), DIRECTION_CODES[direction], int(ternary), _threads(x))
    return v, spikes


class _Potential(torch.autograd.Function):
    """``v`` ``[T, R, W]`` of ``x`` ``[T, R, W]`` (contiguous, fp32 or fp64) and ``mask``
    (``[T, B]`` uint8 or ``None``); the :class:`ScanWeights` fields widened to ``[W]``, in
    ``x``'s dtype. Each gets its gradient; autograd takes ``alpha``'s from ``w_f`` and ``w_b``."""

    @staticmethod
    def forward(ctx, x, mask, lam_f, lam_b, w_f, w_b, direction):
        weights = (lam_f, lam_b, w_f, w_b)
        v, _ = _scan_forward(x, mask, weights, direction)
        ctx.save_for_backward(x, *weights)
        ctx.mask, ctx.direction = mask, direction
        return v

    @staticmethod
    def backward(ctx, grad_v):
        x, *weights = ctx.saved_tensors
        T, R, W = x.shape
        g = grad_v.contiguous()
        grad_x = torch.empty_like(x)
        sums = torch.empty(4, R, W, dtype=x.dtype)  # per neuron: d/dlam_f, d/dlam_b, d/dw_f, d/dw_b
        kernel = getattr(_load(), f"bpsn_cpu_backward_{DTYPES[x.dtype]}")
        kernel(x.data_ptr(), *_mask_arguments(ctx.mask), g.data_ptr(), grad_x.data_ptr(), sums.data_ptr(), T, R, W,
               *(t.data_ptr() for t in weights), DIRECTION_CODES[ctx.direction], _threads(x))
        scanned = {"bi": (True, True), "forward": (True, False), "backward": (False, True)}[ctx.direction]
        # rows of a scan that did not run are never written
        grads = [
            sums[i].sum(0) if scanned[i % 2] and ctx.needs_input_grad[2 + i] else None for i in range(4)
        ]
        return grad_x if ctx.needs_input_grad[0] else None, None, *grads, None


def _prepare(x, mask, P):
    """``(x [T, R, W] contiguous in the compute dtype, mask [T, B] uint8 or None)``, with
    clear errors for what the scans do not take.

    The scans vectorise over a row's ``W`` columns: per-channel parameters make rows of
    ``W = P`` channels. Shared ones (``P = 1``) make rows as wide as the mask allows: a
    whole step without a mask, else a whole sample (the weights are then expanded to ``W``)."""
    if x.device.type != "cpu":
        raise ValueError(f"BPSN backend 'cpu' runs on CPU tensors, got a tensor on {x.device}")
    if _load() is None:
        raise RuntimeError(f"BPSN backend 'cpu' is not available: {_failure}; use backend='torch'")
    dtype = compute_dtype(x.dtype)
    if dtype not in DTYPES:
        raise TypeError(f"BPSN backend 'cpu' takes float16/bfloat16/float32/float64 inputs, got {x.dtype}")
    if x.dim() < 2:
        raise ValueError(f"BPSN backend 'cpu': x must have shape [T, B, *], got {tuple(x.shape)}")
    if P > 1 and x.shape[-1] != P:
        raise ValueError(f"per-channel BPSN parameters have {P} entries but x has {x.shape[-1]} channels")
    if mask is not None:
        if tuple(mask.shape) != tuple(x.shape[:2]):
            raise ValueError(f"BPSN backend 'cpu': mask must be [T, B] = {list(x.shape[:2])}, got {list(mask.shape)}")
        mask = (mask if mask.dtype == torch.bool else mask != 0).contiguous().view(torch.uint8)
    T = x.shape[0]
    width = P if P > 1 else max(1, x[0].numel() if mask is None else x[0, 0].numel())
    return x.to(dtype).contiguous().view(T, -1, width), mask


def _widen(params, width: int) -> list[torch.Tensor]:
    """``[P]`` parameters as ``[width]`` columns (shared ones expanded, a graph-keeping op)."""
    return [p if p.numel() == width else p.expand(width).contiguous() for p in params]


def cpu_potential(
    x: torch.Tensor,
    mask: Optional[torch.Tensor],
    lam_f: torch.Tensor,
    lam_b: torch.Tensor,
    alpha: torch.Tensor,
    direction: str = "bi",
) -> torch.Tensor:
    """Membrane potential ``v`` ``[T, B, *]`` in the compute dtype, as
    :func:`~sj_bert.ops.bpsn.reference.bpsn_potential`, from the compiled scans."""
    weights = ScanWeights.build(lam_f, lam_b, alpha, direction, compute_dtype(x.dtype))
    flat, mask = _prepare(x, mask, weights.lam_f.numel())
    return _Potential.apply(flat, mask, *_widen(weights, flat.shape[-1]), direction).view(x.shape)


def bpsn_cpu(
    x: torch.Tensor,
    mask: Optional[torch.Tensor],
    lam_f: torch.Tensor,
    lam_b: torch.Tensor,
    alpha: torch.Tensor,
    threshold: torch.Tensor,
    surrogate_function: Callable[[torch.Tensor], torch.Tensor],
    direction: str = "bi",
    weights: Optional[ScanWeights] = None,
    ternary: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BPSN from the compiled CPU scans, with
    :func:`~sj_bert.ops.bpsn.reference.bpsn_reference`'s contract: ``x`` ``[T, B, *]``
    (channels last), ``mask`` ``[T, B]`` or ``None``, parameters ``[1]`` or ``[C]``;
    ``weights``: prebuilt :class:`ScanWeights` of these parameters in the compute dtype
    (``BPSN`` passes its cached ones); ``ternary``: spikes in {-1, 0, 1} (see
    :func:`~.reference.spikes_from_potential`). Returns ``(spikes [T, B, *] in x.dtype,
    v [T, B, *] in the compute dtype)``.

    Without autograd (inference), and with a surrogate whose forward is SpikingJelly's
    Heaviside step, the scans fire too, so no torch op touches the data."""
    if weights is None:
        weights = ScanWeights.build(lam_f, lam_b, alpha, direction, compute_dtype(x.dtype))
    P = weights.lam_f.numel()
    flat, mask8 = _prepare(x, mask, P)
    width = flat.shape[-1]
    tracked = torch.is_grad_enabled() and any(t.requires_grad for t in (x, *weights, threshold))
    if not tracked and surrogate_spec(surrogate_function) is not None and threshold.numel() in (1, P):
        level = _widen([threshold.to(flat.dtype).reshape(-1)], width)[0]
        v, spikes = _scan_forward(flat, mask8, _widen(weights, width), direction, level, ternary)
        return spikes.view(x.shape).to(x.dtype), v.view(x.shape)
    v = _Potential.apply(flat, mask8, *_widen(weights, width), direction).view(x.shape)
    m = None if mask is None else mask.reshape(mask.shape + (1,) * (x.dim() - 2))
    return spikes_from_potential(v, m, threshold, surrogate_function, ternary).to(x.dtype), v
