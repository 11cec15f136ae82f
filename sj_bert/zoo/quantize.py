"""Checkpoints whose spike-fed weight matrices are stored in 8 bits.

In SNN-BERT every encoder ``nn.Linear`` (query/key/value, ``attention.output.dense``,
``intermediate.dense``, ``output.dense``) is fed by spikes (:data:`SPIKE_FED`; the energy
report marks the same ones). ``recipes/publish.py --int8_spike_fed`` stores each of their
weights as int8 codes plus one float32 scale per output row (:func:`quantize_file`): symmetric,
no zero point, ``s = max|w| / 127`` per row, ``codes = clamp(round(w / s), -127, 127)``. In the
weights file the matrix ``<key>`` becomes two tensors:

- ``<key>.int8``: int8 codes, the matrix's shape ``[out, in]``;
- ``<key>.int8_scale``: float32 scales, ``[out, 1]`` (one per output row, broadcast over ``in``).

The record's ``quantized`` entry (:class:`~sj_bert.zoo.registry.QuantizedWeights`) names the
scheme, the publish dtype and the matrices. Loading puts them back
(:func:`dequantize_file`, called by :func:`sj_bert.zoo.cache.join_parts`, next to
:func:`~sj_bert.zoo.delta.merge_base`): ``codes * s`` in float32, rounded once to the publish
dtype, so the cache holds an ordinary complete ``model.safetensors``. The quantization error is
at most half a step, ``s / 2``, per weight (``bench/int8_storage.py`` measures what it does to
accuracy). The stored file alone is refused as a plain folder
(:func:`~sj_bert.zoo.delta.check_complete` reads :data:`MARKER`).
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from .delta import _save_atomic

__all__ = ["SPIKE_FED", "INT8_SCHEME", "CODES_SUFFIX", "SCALE_SUFFIX", "quantize_matrix", "dequantize_matrix", "fake_quant",
           "spike_fed_keys", "quantize_file", "dequantize_file"]

#: the encoder's spike-fed matrices (tests check them against the energy report's spike detection)
SPIKE_FED = re.compile(
    r"(^|\.)encoder\.layer\.\d+\.(attention\.self\.(query|key|value)|attention\.output\.dense"
    r"|intermediate\.dense|output\.dense)\.weight$"
)
INT8_SCHEME = "int8_per_channel"
CODES_SUFFIX = ".int8"
SCALE_SUFFIX = ".int8_scale"
SCALE_DTYPE = torch.float32
# in the safetensors metadata of stored (quantized) weights, removed when they are dequantized:
# loading them as a plain folder would leave the matrices at random values (their keys are unknown)
MARKER = "sj_bert.int8_spike_fed"


def quantize_matrix(w: torch.Tensor, bits: int = 8, per_channel: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric quantization of a 2-D ``w`` ``[out, in]``: int codes in ``[-qmax, qmax]``,
    ``qmax = 2**(bits-1) - 1``, and the scales (``[out, 1]`` per output channel, ``[1, 1]``
    per tensor; float32), ``s = max|w| / qmax`` (1 where a row is all zero)."""
    if w.dim() != 2:
        raise ValueError(f"quantize_matrix expects a 2-D weight, got shape {tuple(w.shape)}")
    if not 2 <= bits <= 8:
        raise ValueError(f"bits must be in [2, 8], got {bits}")
    qmax = 2 ** (bits - 1) - 1
    x = w.detach().to(torch.float32)
    absmax = x.abs().amax(dim=1, keepdim=True) if per_channel else x.abs().amax().reshape(1, 1)
    scale = torch.where(absmax > 0, absmax / qmax, torch.ones_like(absmax)).to(SCALE_DTYPE)
    codes = torch.round(x / scale.to(torch.float32)).clamp_(-qmax, qmax).to(torch.int8)
    return codes, scale


def dequantize_matrix(codes: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``codes * scale`` computed in float32, then rounded once to ``dtype``."""
    return (codes.to(torch.float32) * scale.to(torch.float32)).to(dtype)


def fake_quant(w: torch.Tensor, bits: int = 8, per_channel: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """``dequantize_matrix(quantize_matrix(w))`` in ``w``'s dtype, and the scales."""
    codes, scale = quantize_matrix(w, bits, per_channel)
    return dequantize_matrix(codes, scale, w.dtype), scale


def spike_fed_keys(keys) -> list[str]:
    """The keys of ``keys`` that name spike-fed weight matrices, sorted."""
    return sorted(k for k in keys if SPIKE_FED.search(k))


def _dtype(name: str, what: str) -> torch.dtype:
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"{what}: dtype {name!r} is not a torch floating dtype (expected e.g. 'float16')")
    return dtype


def quantize_file(path: Path, dtype: str) -> list[str]:
    """Rewrite the weights file ``path`` (written in ``dtype``) with its spike-fed matrices as
    int8 codes and per-row scales (module docstring); return their keys (empty, and ``path``
    unchanged, when it holds none, e.g. every one was left to a base model). Written to a
    temporary name, then renamed."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    cast = _dtype(dtype, "--int8_spike_fed")
    with safe_open(path, "pt") as f:
        header = f.metadata() or {}
        weights = {k: f.get_tensor(k) for k in f.keys()}
    keys = spike_fed_keys(weights)
    wrong = [k for k in keys if weights[k].dtype != cast or weights[k].dim() != 2]
    if wrong:
        raise ValueError(f"--int8_spike_fed: {path} holds {wrong[:3]} not as 2-D {dtype} matrices")
    for key in keys:
        codes, scale = quantize_matrix(weights.pop(key))
        weights[key + CODES_SUFFIX], weights[key + SCALE_SUFFIX] = codes, scale
    if keys:
        _save_atomic(save_file, weights, Path(path), {**header, MARKER: INT8_SCHEME})
    return keys


def dequantize_file(path: Path, quantized, name: str) -> None:
    """Put back, in the stored weights ``path`` (the checkpoint's ``quantized.file``), each
    matrix ``quantized`` (a record's :class:`~sj_bert.zoo.registry.QuantizedWeights`) names,
    as ``codes * scale`` rounded once to ``quantized.dtype``: after this ``path`` loads as an
    ordinary checkpoint. Written to a temporary name, then renamed.

    :raises ValueError: the scheme is unknown, or the file's codes and scales are not the
        matrices the record names (the record and the files disagree)
    """
    from safetensors import safe_open
    from safetensors.torch import save_file

    if quantized.scheme != INT8_SCHEME:
        raise ValueError(f"checkpoint {name!r}: quantization scheme {quantized.scheme!r} is unknown to this "
                         f"sj_bert (expected {INT8_SCHEME!r}); upgrade sj_bert")
    if not Path(path).is_file():
        raise FileNotFoundError(f"checkpoint {name!r}: its record stores int8 matrices in {quantized.file}, "
                                "which is not among its files")
    cast = _dtype(quantized.dtype, f"checkpoint {name!r}: quantized")
    with safe_open(path, "pt") as f:
        header = f.metadata() or {}
        weights = {k: f.get_tensor(k) for k in f.keys()}
    stored = sorted(k[: -len(CODES_SUFFIX)] for k in weights if k.endswith(CODES_SUFFIX))
    if stored != sorted(quantized.tensors) or any(k + SCALE_SUFFIX not in weights for k in stored):
        raise ValueError(f"checkpoint {name!r}: {quantized.file} stores int8 codes and scales of "
                         f"{len(stored)} matrices, its record names {len(quantized.tensors)} "
                         f"(first differing: {sorted(set(stored) ^ set(quantized.tensors))[:3]}); "
                         "the record and the files disagree")
    for key in stored:
        weights[key] = dequantize_matrix(weights.pop(key + CODES_SUFFIX), weights.pop(key + SCALE_SUFFIX), cast)
    header = {k: v for k, v in header.items() if k != MARKER}  # complete now: loadable as any folder
    _save_atomic(save_file, weights, Path(path), header)
