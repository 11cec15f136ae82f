"""Choosing a BPSN implementation: by device, per node (``backend=``) or globally.

Order, as in SpikingJelly 2.x: an explicit ``backend=`` on the node wins, then the
environment variable ``SJ_BPSN_IMPLEMENTATION``, then the device (CUDA: triton, else
cupy, else torch; CPU: cpu where a C++ compiler builds it, else torch). Fused backends
support SpikingJelly's fused surrogate set; any other surrogate falls back to the torch
path with a one-time warning.

``torch`` is the chunked path (``chunk.py``), linear in T; ``reference`` is the ``[T, T]``
matrix form (``reference.py``), quadratic in T, the statement the tests trust; ``cpu`` the
compiled CPU scans (``cpu.py``), which take every surrogate (they compute the potential;
firing stays in torch). Inside ``torch.compile`` the CPU default is the torch path, which
the compiler can trace.
"""

from __future__ import annotations

import importlib.util
import os
import warnings
from typing import Callable, Optional, Union

import torch

from ._host import KERNEL_DTYPES as FUSED_DTYPES
from ._host import triton_interpreted
from ._spikingjelly import FUSED_SURROGATES, surrogate_spec
from . import cpu
from .autograd import bpsn_fused
from .chunk import DecayTables, bpsn_chunk
from .reference import bpsn_reference

ENV_VAR = "SJ_BPSN_IMPLEMENTATION"
BACKENDS = ("torch", "reference", "cpu", "triton", "cupy")
TORCH_BACKENDS = ("torch", "reference")
FUSED_BACKENDS = ("triton", "cupy")
_warned_fallbacks: set[str] = set()
#: what a spike carries: 1 (``"unit"``) or its channel's threshold (``"threshold"``)
AMPLITUDES = ("unit", "threshold")


# A plain dict, not lru_cache: torch.compile reads it as is. Filled at import for the fused
# backends' packages: filled by the first traced call instead, the dict changed under the
# graph's guard and the second call of a compiled model compiled it again.
_installed: dict[str, bool] = {name: importlib.util.find_spec(name) is not None for name in FUSED_BACKENDS}


def _has_module(name: str) -> bool:
    if name not in _installed:
        _installed[name] = importlib.util.find_spec(name) is not None
    return _installed[name]


#: ``(surrogate_id, alpha)`` for SpikingJelly's fused surrogate set, else ``None`` (its own
#: table, so ids match its Triton and CUDA surrogate code).
fused_surrogate_spec = surrogate_spec


def requested_backend(backend: Optional[str]) -> str:
    """The node's ``backend`` argument, else the environment variable, else ``"auto"``."""
    choice = backend if backend is not None else os.environ.get(ENV_VAR, "auto")
    choice = choice.strip().lower()
    if choice not in BACKENDS + ("auto",):
        source = "backend" if backend is not None else ENV_VAR
        raise ValueError(
            f"{source}={choice!r} is not a BPSN implementation; expected one of "
            f"{('auto',) + BACKENDS}"
        )
    return choice


def select_backend(
    device: torch.device,
    backend: Optional[str],
    surrogate_function: Callable,
    dtype: torch.dtype = torch.float32,
) -> str:
    """Resolve the implementation that runs on ``device`` for ``dtype`` inputs; raises a
    clear error when an explicitly requested fused backend cannot run there."""
    choice = requested_backend(backend)
    if choice == "auto":
        if device.type == "cpu":
            # a traced graph cannot call the compiled scans (ctypes); the chunked path traces
            use_scan = not torch.compiler.is_compiling() and cpu.available()[0]
            return "cpu" if use_scan else "torch"
        # the fused kernels take fp32/fp16/bf16; float64 (gradcheck, science) stays exact in torch
        if device.type != "cuda" or dtype not in FUSED_DTYPES:
            return "torch"
        choice = "triton" if _has_module("triton") else "cupy" if _has_module("cupy") else "torch"
        if choice == "torch":
            return choice
    if choice in TORCH_BACKENDS:
        return choice
    if choice == "cpu":
        usable, why = cpu.available()
        if not usable:
            raise RuntimeError(f"BPSN backend 'cpu' is not available here: {why}; use backend='torch'")
        if device.type != "cpu":
            raise ValueError(f"BPSN backend 'cpu' runs on CPU tensors only, got a tensor on {device}")
        return choice
    if dtype not in FUSED_DTYPES:
        raise TypeError(f"BPSN backend {choice!r} takes float32, float16 or bfloat16 inputs, got {dtype}")
    if fused_surrogate_spec(surrogate_function) is None:
        name = type(surrogate_function).__name__
        if name not in _warned_fallbacks:
            _warned_fallbacks.add(name)
            warnings.warn(
                f"BPSN: surrogate {name} has no fused kernel (supported: {', '.join(FUSED_SURROGATES)} "
                "with a float alpha); using the torch path",
                stacklevel=3,
            )
        return "torch"
    if not _has_module(choice):
        extra = "triton" if choice == "triton" else "cupy"
        raise ImportError(
            f"BPSN backend {choice!r} needs the {choice} package: pip install 'sj-bert[{extra}]'"
        )
    on_cpu_ok = choice == "triton" and triton_interpreted()
    if device.type != "cuda" and not on_cpu_ok:
        raise ValueError(
            f"BPSN backend {choice!r} runs on CUDA tensors only, got a tensor on {device}; "
            "use backend='torch' (or TRITON_INTERPRET=1 to interpret the Triton kernels on CPU)"
        )
    return choice


def bpsn_multistep(
    x: torch.Tensor,
    mask: Optional[torch.Tensor],
    lam_f: torch.Tensor,
    lam_b: torch.Tensor,
    alpha: torch.Tensor,
    threshold: torch.Tensor,
    surrogate_function: Callable,
    direction: str,
    implementation: str,
    tables: Optional[Union[DecayTables, cpu.ScanWeights, torch.Tensor]] = None,
    ternary: bool = False,
    amplitude: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run one implementation. Returns ``(spikes [T, B, *] in x.dtype, v [T, B, *])``.
    ``tables``: what the implementation derives from the parameters alone, if prebuilt:
    the torch path's :class:`DecayTables`, the cpu path's :class:`~.cpu.ScanWeights` or
    the fused kernels' parameter table (:func:`._host.param_table`).
    ``ternary``: spikes in {-1, 0, 1} (:func:`~.reference.spikes_from_potential`).
    ``amplitude``: spikes carry ``threshold`` (``[1]`` or ``[C]``, the last dimension)."""
    params = (x, mask, lam_f, lam_b, alpha, threshold)
    if implementation in FUSED_BACKENDS:
        surrogate_id, surrogate_alpha = fused_surrogate_spec(surrogate_function)
        return bpsn_fused(implementation, *params, direction, surrogate_id, surrogate_alpha, ternary, prm=tables,
                          amplitude=amplitude)
    if implementation == "torch":
        spike, v = bpsn_chunk(*params, surrogate_function, direction, tables, ternary)
    elif implementation == "reference":
        spike, v = bpsn_reference(*params, surrogate_function, direction, ternary)
    else:
        spike, v = cpu.bpsn_cpu(*params, surrogate_function, direction, tables, ternary)
    return (scale_by_threshold(spike, threshold) if amplitude else spike), v


def scale_by_threshold(spike: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    """Spikes carrying their channel's threshold (``threshold`` broadcast on the last
    dimension). Where no graph needs the unit spikes, scaled in place: no second tensor."""
    if spike.requires_grad or torch.compiler.is_compiling():
        return spike * threshold
    return spike.mul_(threshold)
