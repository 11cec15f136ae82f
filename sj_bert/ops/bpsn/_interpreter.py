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
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import numpy as np

try:  # the interpreter's scan; absent or renamed in other Triton versions
    from triton.runtime.interpreter import ScanOps as _ScanOps
except ImportError:  # pragma: no cover - depends on the installed Triton
    _ScanOps = None

__all__ = ["vectorized_scans"]


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
