"""BPSN operator: plain-torch reference and chunked path, Triton and CuPy kernels, and the dispatcher."""

from .chunk import CHUNK, DecayTables, bpsn_chunk
from .dispatch import BACKENDS, ENV_VAR, bpsn_multistep, fused_surrogate_spec, select_backend
from .reference import bpsn_potential, bpsn_reference

__all__ = [
    "BACKENDS",
    "CHUNK",
    "DecayTables",
    "ENV_VAR",
    "bpsn_chunk",
    "bpsn_multistep",
    "bpsn_potential",
    "bpsn_reference",
    "fused_surrogate_spec",
    "select_backend",
]
