"""Triton's interpreter, scanning a whole row of a tile at once.

The Triton kernels' CPU twins (``TRITON_INTERPRET=1``: every CPU test of the fused path, and
CI's check of each kernel against the torch reference) run under Triton's interpreter, which
evaluates ``tl.associative_scan`` with a combiner of its own, like the kernels' leaky scan, one
element at a time: a Python call of the combiner per element of the ``[STEPS, BLOCK]`` tile.
That was nine tenths of a twin's time (a tiny SNN-BERT training step took seconds per neuron).

:func:`vectorized_scans` swaps in, while the twins run, a scan that steps along the scanned
axis only and applies the combiner to everything across it at once. A combiner is elementwise
(Triton's contract for scan combiners), so each element sees the same float32 operations in
the same order as in the element-by-element scan: the results are bit-identical
(``tests/ops/test_bpsn_kernels.py::test_vectorized_scan_is_bit_identical``). Compiled kernels
on a GPU never pass through here. Where the interpreter's internals differ from what this
expects (another Triton version), it leaves them alone and the twins run as before, only slower.

:func:`scalar_indices` mends one incompatibility of Triton 3.6's interpreter (the GPU image's)
with NumPy 2.5: the interpreter keeps a kernel's scalar arguments as ``[1]`` arrays and
converts them with ``int()`` for ``range(n_tiles)``, which NumPy 2.5 refuses for arrays with
a dimension (Triton 3.8 squeezes them first, as this does).
"""

from __future__ import annotations

import contextlib
import inspect
from typing import Iterator

import numpy as np

try:  # the interpreter's scan; absent or renamed in other Triton versions
    from triton.runtime import interpreter as _interpreter_module
    from triton.runtime.interpreter import ScanOps as _ScanOps
except ImportError:  # pragma: no cover - depends on the installed Triton
    _interpreter_module = _ScanOps = None

__all__ = ["interpreter_patches", "scalar_indices", "vectorized_scans"]


def _row_by_row_scan(self, inputs) -> list:
    """``ScanOps.generic_scan`` over whole slices: ``h[i] = combine(h[i-1], x[i])`` along
    ``self.axis``, every other index at once."""
    data = [arg.handle.data for arg in inputs]
    out = [np.empty_like(d) for d in data]
    lead = (slice(None),) * self.axis
    carried = None
    for i in range(data[0].shape[self.axis]):
        step = tuple(self.to_tensor(d[lead + (i,)], arg.dtype) for d, arg in zip(data, inputs))
        if carried is None:
            carried = step
        else:
            combined = self.combine_fn.fn(*carried, *step)
            carried = combined if isinstance(combined, tuple) else (combined,)
        for o, value in zip(out, carried):
            # a slice of a 1-D scan is one element, which to_tensor made a [1] array
            o[lead + (i,)] = value.handle.data.reshape(o[lead + (i,)].shape)
    return [self.to_tensor(o, arg.dtype) for o, arg in zip(out, inputs)]


def _patchable() -> bool:
    return _ScanOps is not None and callable(getattr(_ScanOps, "generic_scan", None)) and \
        callable(getattr(_ScanOps, "to_tensor", None))


@contextlib.contextmanager
def vectorized_scans(enabled: bool = True) -> Iterator[bool]:
    """Inside the block, Triton's interpreter scans row by row (module docstring); yields
    whether it does (``enabled`` false, or an interpreter of another shape: as it was)."""
    if not (enabled and _patchable()):
        yield False
        return
    saved = _ScanOps.generic_scan
    _ScanOps.generic_scan = _row_by_row_scan
    try:
        yield True
    finally:
        _ScanOps.generic_scan = saved


def scalar_index(self) -> int:
    """``tensor.__index__`` of an interpreted scalar, held as a ``[1]`` (or ``[]``) array."""
    return int(np.asarray(self.handle.data).reshape(()))


@contextlib.contextmanager
def scalar_indices() -> Iterator[bool]:
    """Inside the block, the interpreter's scalars convert to ``int`` whatever their array's
    shape (module docstring); yields whether the interpreter is of the shape this patches."""
    original = getattr(_interpreter_module, "_patch_lang_tensor", None)
    if not callable(original) or list(inspect.signature(original).parameters) != ["tensor", "scope"]:
        yield False
        return

    def patch_lang_tensor(tensor, scope):
        original(tensor, scope)
        # the scope restores attributes in reverse order, so this one is undone first
        scope.set_attr(tensor, "__index__", scalar_index)

    _interpreter_module._patch_lang_tensor = patch_lang_tensor
    try:
        yield True
    finally:
        _interpreter_module._patch_lang_tensor = original


@contextlib.contextmanager
def interpreter_patches() -> Iterator[None]:
    """Both patches, for one interpreted launch of the kernels' twins."""
    with vectorized_scans(), scalar_indices():
        yield
