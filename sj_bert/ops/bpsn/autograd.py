"""The one op boundary of the fused BPSN kernels: autograd and ``torch.library`` ops over a
launcher pair per backend.

A backend (``triton.py``, ``cupy.py``) provides two launchers and nothing else::

    launch_forward(x, m, prm, spike, v, direction, ternary, amplitude)
    launch_backward(x, m, prm, v, gs, gv, grad_x, gb, partials, direction, surrogate_id, surrogate_alpha, ternary)

over the buffers :mod:`._host` prepares (``x`` contiguous ``[T, B, *]``, ``prm`` the fp32
``[4, P]`` parameter table) and the caller's ``[T, B]`` mask as given (bool or integer,
any strides) or ``None``: the Triton kernels read it in place, the CuPy launchers make
the fp32 copy their kernels take (:func:`._host.mask_table`). Everything else
(checks, buffers, the reduction of the parameter gradients, autograd) lives here, once.

Two routes into the same launchers:

- eager: :class:`BPSNFunction`, a plain ``autograd.Function``. Its forward keeps the
  parameter table and the mask for the backward, and its host work is a handful of
  tensor ops: at SNN-BERT's shapes a GPU step is bound by host time, not by the kernels
  (``bench/results/neuron_cuda.json``: 1.2 to 2.4 ms per BPSN step up to T=256 whatever T is);
- traced (``torch.compile``, ``torch.export``): the custom ops ``sj_bert::bpsn_fwd`` and
  ``sj_bert::bpsn_bwd`` with fake implementations and registered autograd, so a compiled
  graph keeps the kernels whole. The dispatcher's per-call cost is paid only there.
"""

from __future__ import annotations

import importlib
from functools import lru_cache
from typing import Optional

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from . import _host

__all__ = ["BPSNFunction", "ThresholdScaledSpikes", "bpsn_fused"]

# backend -> the module holding its launcher pair (imported on first use: CuPy is optional,
# and the launchers import this module for their public wrappers)
LAUNCHER_MODULES = {"triton": f"{__package__}.triton", "cupy": f"{__package__}.cupy"}


@lru_cache(maxsize=None)
def launchers(backend: str):
    """The module with ``launch_forward`` and ``launch_backward`` for ``backend``."""
    if backend not in LAUNCHER_MODULES:
        raise ValueError(f"no fused BPSN backend {backend!r}; expected one of {tuple(LAUNCHER_MODULES)}")
    return importlib.import_module(LAUNCHER_MODULES[backend])


def forward(
    backend: str, x: Tensor, m: Optional[Tensor], prm: Tensor, direction: str, ternary: bool = False,
    amplitude: bool = False,
) -> tuple[Tensor, Tensor, Tensor]:
    """``(spike, v, x)``: spikes in ``x.dtype`` (in {-1, 0, 1} if ``ternary``; times the
    threshold if ``amplitude``), the fp32 potential, and ``x`` as the kernel read it
    (contiguous). ``m``, ``prm``: the mask as given, :func:`._host.param_table`."""
    x, spike, v = _host.forward_buffers(x)
    if spike.numel() > 0:
        launchers(backend).launch_forward(x, m, prm, spike, v, direction, ternary, amplitude)
    return spike, v, x


def backward(
    backend: str,
    grad_spike: Optional[Tensor],
    grad_v: Optional[Tensor],
    x: Tensor,
    m: Optional[Tensor],
    prm: Tensor,
    v: Tensor,
    direction: str,
    surrogate_id: int,
    surrogate_alpha: float,
    ternary: bool = False,
) -> tuple[Tensor, Tensor]:
    """``(grad_x, partials)``: the input's gradient and the fp32 ``[4, N]`` per-column sums
    of the parameter gradients (rows a direction does not use are left unwritten)."""
    x, v, gs, gv, grad_x, gb, partials = _host.backward_buffers(x, v, grad_spike, grad_v, direction)
    if grad_x.numel() > 0:
        launchers(backend).launch_backward(
            x, m, prm, v, gs, gv, grad_x, gb, partials, direction, surrogate_id, surrogate_alpha, ternary
        )
    return grad_x, partials


class BPSNFunction(torch.autograd.Function):
    """Eager autograd over a backend's launchers; see the module docstring."""

    @staticmethod
    def forward(ctx, backend, x, mask, lam_f, lam_b, alpha, threshold, direction, surrogate_id, surrogate_alpha,
                ternary=False, prm=None):
        params = (lam_f, lam_b, alpha, threshold)
        prm = _host.param_table(params, x.shape[-1]) if prm is None else prm
        spike, v, x_read = forward(backend, x, mask, prm, direction, ternary)
        ctx.save_for_backward(x_read, mask, prm, v)
        ctx.options = (backend, direction, surrogate_id, surrogate_alpha, ternary)
        ctx.param_shapes = tuple((p.shape, p.dtype) for p in params)
        ctx.set_materialize_grads(False)  # a None gradient skips its loads in the kernel
        return spike, v

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_spike, grad_v):
        x, m, prm, v = ctx.saved_tensors
        backend, direction, surrogate_id, surrogate_alpha, ternary = ctx.options
        grad_x, partials = backward(
            backend, grad_spike, grad_v, x, m, prm, v, direction, surrogate_id, surrogate_alpha, ternary
        )
        grads = _host.param_grads(partials, ctx.param_shapes, direction, copy=False)
        return (None, grad_x, None, *grads, None, None, None, None, None)


class ThresholdScaledSpikes(torch.autograd.Function):
    """``spike * threshold`` (``threshold`` ``[1]`` or ``[C]``, on the last dimension) for
    spikes from :class:`BPSNFunction`, keeping nothing new for the backward: the product
    would keep the unit spikes for the threshold's gradient, a float ``[T, N, C]`` tensor of
    0/1 per neuron (on an H200, SNN-BERT's training step at L=128 took 1,280 MiB with
    learnable thresholds against 1,001 without). The spikes are rebuilt from the fp32
    potential and the mask that :class:`BPSNFunction` keeps anyway, as the kernels fire:
    ``m * (v - threshold >= 0)`` (ternary: minus ``m * (-v - threshold >= 0)``). Outputs and
    gradients equal the product's bit for bit. (The torch paths keep ``v - threshold`` for
    their surrogate, not ``v``: rebuilding there would keep ``v`` instead of the spikes,
    no smaller, so they keep the product.)"""

    @staticmethod
    def forward(ctx, spike, v, mask, threshold, ternary):
        ctx.save_for_backward(v, mask, threshold)
        ctx.spike_dtype, ctx.ternary = spike.dtype, ternary
        return spike * threshold

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        v, mask, threshold = ctx.saved_tensors
        # as the product's backward: each factor's gradient in its dtype, summed over the
        # dimensions the threshold was broadcast on
        grad_spike = (grad * threshold).to(ctx.spike_dtype)
        grad_threshold = None
        if ctx.needs_input_grad[3]:
            th = threshold.float()  # the kernels' parameter table holds it in fp32, as v is
            spike = (v - th >= 0).to(ctx.spike_dtype)
            if ctx.ternary:
                spike = spike - (-v - th >= 0).to(ctx.spike_dtype)
            if mask is not None:
                spike = spike * mask.reshape(mask.shape + (1,) * (v.dim() - mask.dim())).to(ctx.spike_dtype)
            grad_threshold = (grad * spike).sum_to_size(threshold.shape).to(threshold.dtype)
        return grad_spike, None, None, grad_threshold, None


# -- traced route: torch.library custom ops ------------------------------------------------
# ``backend`` and ``ternary`` come last, with defaults, so the op keeps the schema it had
# when it was the Triton path's alone.
@torch.library.custom_op("sj_bert::bpsn_fwd", mutates_args=())
def _bpsn_fwd(
    x: Tensor, mask: Optional[Tensor], lam_f: Tensor, lam_b: Tensor, alpha: Tensor,
    threshold: Tensor, direction: str, surrogate_id: int, surrogate_alpha: float, backend: str = "triton",
    ternary: bool = False,
) -> tuple[Tensor, Tensor]:
    params = (lam_f, lam_b, alpha, threshold)
    prm = _host.param_table(params, x.shape[-1])
    spike, v, _ = forward(backend, x, mask, prm, direction, ternary)
    return spike, v


@_bpsn_fwd.register_fake
def _(x, mask, lam_f, lam_b, alpha, threshold, direction, surrogate_id, surrogate_alpha, backend="triton",
      ternary=False):
    return torch.empty_like(x, memory_format=torch.contiguous_format), x.new_empty(x.shape, dtype=torch.float32)


@torch.library.custom_op("sj_bert::bpsn_bwd", mutates_args=())
def _bpsn_bwd(
    grad_spike: Optional[Tensor], grad_v: Optional[Tensor], x: Tensor, mask: Optional[Tensor],
    v: Tensor, lam_f: Tensor, lam_b: Tensor, alpha: Tensor, threshold: Tensor,
    direction: str, surrogate_id: int, surrogate_alpha: float, backend: str = "triton", ternary: bool = False,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Gradients for ``x, lam_f, lam_b, alpha, threshold`` (zeros for unused parameters)."""
    params = (lam_f, lam_b, alpha, threshold)
    grad_x, partials = backward(
        backend, grad_spike, grad_v, x, mask, _host.param_table(params, x.shape[-1]), v,
        direction, surrogate_id, surrogate_alpha, ternary,
    )
    # custom ops may not return views of their inputs or of each other: copies
    grads = _host.param_grads(partials, tuple((p.shape, p.dtype) for p in params), direction, copy=True)
    return (grad_x, *(torch.zeros_like(p) if g is None else g for g, p in zip(grads, params)))


@_bpsn_bwd.register_fake
def _(grad_spike, grad_v, x, mask, v, lam_f, lam_b, alpha, threshold, direction, surrogate_id, surrogate_alpha,
      backend="triton", ternary=False):
    return (torch.empty_like(x, memory_format=torch.contiguous_format),
            *(torch.empty_like(p) for p in (lam_f, lam_b, alpha, threshold)))


def _setup_context(ctx, inputs, output):
    x, mask, *params, direction, surrogate_id, surrogate_alpha, backend, ternary = inputs
    ctx.save_for_backward(x, mask, output[1], *params)
    ctx.options = (direction, surrogate_id, surrogate_alpha, backend, ternary)
    ctx.set_materialize_grads(False)


def _backward(ctx, grad_spike, grad_v):
    x, mask, v, *params = ctx.saved_tensors
    direction = ctx.options[0]
    grads = torch.ops.sj_bert.bpsn_bwd(grad_spike, grad_v, x, mask, v, *params, *ctx.options)
    used = _host.USED_PARAMS[direction]
    return (grads[0], None, *(g if u else None for g, u in zip(grads[1:], used)), None, None, None, None, None)


_bpsn_fwd.register_autograd(_backward, setup_context=_setup_context)


def bpsn_fused(
    backend: str,
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
    prm: Optional[Tensor] = None,
    amplitude: bool = False,
) -> tuple[Tensor, Tensor]:
    """BPSN through ``backend``'s fused kernels (``"triton"`` or ``"cupy"``); the contract of
    :func:`.triton.bpsn_triton`. ``prm``: the parameter table (:func:`._host.param_table`)
    if the caller keeps one (a node in ``eval()`` does), else built here. ``amplitude``:
    spikes carry the threshold (the kernels write them so in inference). Eager calls take
    :class:`BPSNFunction`, or the kernels alone when nothing needs a gradient; traced ones
    the custom op."""
    params = (lam_f, lam_b, alpha, threshold)
    _host.check_inputs(backend, x, mask, params, direction)
    if backend == "cupy":  # Triton interprets its kernels on CPU tensors; CuPy cannot
        if x.device.type != "cuda":
            raise ValueError(f"bpsn_cupy runs on CUDA tensors only, got a tensor on {x.device}")
        launchers("cupy")._cupy()  # fail before any work, with the install hint
    surrogate_id, surrogate_alpha, ternary = int(surrogate_id), float(surrogate_alpha), bool(ternary)
    if not torch.compiler.is_compiling() and not (
        torch.is_grad_enabled() and any(t.requires_grad for t in (x, *params))
    ):
        # inference: the forward kernel alone, scaled spikes included, without autograd's
        # bookkeeping (host time is what bounds a GPU step at SNN-BERT's shapes)
        spike, v, _ = forward(backend, x, mask, _host.param_table(params, x.shape[-1]) if prm is None else prm,
                              direction, ternary, amplitude)
        return spike, v
    if torch.compiler.is_compiling():
        spike, v = torch.ops.sj_bert.bpsn_fwd(x, mask, *params, direction, surrogate_id, surrogate_alpha, backend,
                                             ternary)
    else:
        spike, v = BPSNFunction.apply(backend, x, mask, *params, direction, surrogate_id, surrogate_alpha, ternary,
                                      prm)
        if amplitude:
            return ThresholdScaledSpikes.apply(spike, v, mask, threshold, ternary), v
    return (spike * threshold if amplitude else spike), v
