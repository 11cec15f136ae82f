"""BPSN operator: plain-torch reference, Triton and CuPy kernels, and the dispatcher."""

from .dispatch import BACKENDS, ENV_VAR, bpsn_multistep, fused_surrogate_spec, select_backend
from .reference import bpsn_naive, bpsn_potential, bpsn_reference

__all__ = [
    "BACKENDS",
    "ENV_VAR",
    "bpsn_multistep",
    "bpsn_naive",
    "bpsn_potential",
    "bpsn_reference",
    "fused_surrogate_spec",
    "select_backend",
]
