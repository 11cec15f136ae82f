"""The SpikingJelly internals the fused BPSN kernels reuse, imported here and nowhere else.

SpikingJelly 2.x keeps its fused surrogates private (``spikingjelly._ops``): a table from
surrogate objects to ``(id, alpha)``, the derivatives as a Triton function, and the same
derivatives as CUDA C (``cuda_surrogate.cuh``). Reusing them keeps BPSN's surrogate ids
and gradients identical to SpikingJelly's own neurons; a SpikingJelly upgrade that moves
them touches this file only.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from typing import Callable, Optional

# The surrogates the fused BPSN kernels (Triton, CuPy) compute in-kernel: SpikingJelly's
# fused set, each with a float alpha. Any other surrogate runs on the torch path (one
# warning); a test checks that this is exactly what surrogate_spec accepts.
FUSED_SURROGATES = ("Sigmoid", "ATan", "Erf", "PiecewiseQuadratic", "PiecewiseExp", "SoftSign", "SuperSpike")


def surrogate_spec(surrogate_function) -> Optional[tuple[int, float]]:
    """``(surrogate_id, alpha)`` for SpikingJelly's fused surrogate set, else ``None``."""
    from spikingjelly._ops.surrogate import _surrogate_spec

    if surrogate_function is None:
        return None
    return _surrogate_spec(surrogate_function)


def triton_surrogate_gradient() -> Callable:
    """The plain Python function under SpikingJelly's ``@triton.jit`` surrogate derivative
    (its module may have been imported in either Triton mode, compiled or interpreted)."""
    from spikingjelly._ops import triton_surrogate

    jitted = triton_surrogate._surrogate_gradient
    return getattr(jitted, "fn", jitted)


@lru_cache(maxsize=None)
def cuda_surrogate_source() -> str:
    """SpikingJelly's CUDA C surrogate derivatives, to prepend to a kernel's source."""
    return resources.files("spikingjelly._ops").joinpath("cuda_surrogate.cuh").read_text()
