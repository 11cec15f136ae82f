"""Chunked BPSN: the torch path, linear in T in time and memory, autograd throughout.

The reference (``reference.py``) applies the whole ``[T, T]`` map from the masked input
``u`` to the potential ``v``: ``O(P T^2)`` memory and work. Cut time into chunks of ``K``
steps instead. With ``t, k`` steps inside chunk ``c`` and ``a`` the fusion weight
(``alpha``; 1 or 0 for one direction)::

    v[c, t] = a h_f[c, t] + (1 - a) h_b[c, t]
    h_f[c, t] = sum_{k <= t} lam_f**(t-k) u[c, k] + lam_f**(t+1) H_f[c-1]
    h_b[c, t] = sum_{k >= t} lam_b**(k-t) u[c, k] + lam_b**(K-t) H_b[c+1]
    H_f[c] = lam_f**K H_f[c-1] + E_f[c],   E_f[c] = sum_k lam_f**(K-1-k) u[c, k]
    H_b[c] = lam_b**K H_b[c+1] + E_b[c],   E_b[c] = sum_k lam_b**k u[c, k]

``H_f`` (``h_f`` at a chunk's last step) and ``H_b`` (``h_b`` at its first) are the states
carried between chunks: one-directional BPSN scans over the ``n = T / K`` chunks with
decays ``lam**K``.

Within a chunk, in the layout the data comes in (``[T, N, C]``, channels last, no
transposes: on the CPU a transpose costs several passes over the data), the in-chunk sums
are one matmul with a ``[K, K]`` triangle (of ones, up to an exact factor) shared by all
channels, once the input is scaled per channel around the chunk's middle step ``m``::

    sum_{k <= t} lam**(t-k) u[k] = lam**(t-m) * sum_{k <= t} (lam**(m-k) u[k])

The powers stay within ``lam**(+-K/2)``, so ``K`` is capped where the smallest decay
would push them past the dtype's range (``DecayTables``); the sums keep the rounding of
a direct sum. The chunk-level scans are short (``T / K`` steps): they run channel-major
with a ``[K, K]`` decay matrix per channel (``ScanTables``, exact for any decay),
recursing once more per factor ``K`` of ``T``. No Python loop over T anywhere; per step
and neuron about ``2 K + 8`` multiply-adds; memory ``O(T)``.

Everything that depends on the parameters alone lives in :class:`DecayTables`, which
``BPSN`` caches between calls while its parameters do not change.
"""

from __future__ import annotations

import contextlib
import math
from typing import Callable, Optional

import torch

from .reference import (
    DIRECTIONS,
    _broadcast_params,
    compute_dtype,
    fusion_matrix,
    masked_input,
    spikes_from_potential,
)

__all__ = ["CHUNK", "DecayTables", "bpsn_chunk"]

# Steps per chunk. Per step and direction the work is K multiply-adds in one matmul;
# shorter chunks make the chunk-level scans longer. Measured on the project's CPU in
# SNN-BERT inference (MiniLM shape, batch 1 and 32): 32 beat 8 and 16.
CHUNK = 32
# Steps per chunk of the chunk-level scans (see DecayTables).
SCAN_CHUNK = 8


@contextlib.contextmanager
def _cacheable():
    """Where tables that get cached are built lazily: normal tensors even inside
    ``inference_mode`` (cached tables may serve autograd later), grad mode as the caller's
    (``inference_mode(False)`` alone would turn it on)."""
    grad = torch.is_grad_enabled()
    with torch.inference_mode(False), torch.set_grad_enabled(grad):
        yield


def _per_channel(lam_f: torch.Tensor, lam_b: torch.Tensor, alpha: torch.Tensor, direction: str):
    """``(P, lam_f, lam_b, alpha)``, each expanded to ``[P]``; clear errors for a bad
    direction or parameters of different sizes."""
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    P = _broadcast_params(1, lam_f, lam_b, alpha)
    return (P, *(p.reshape(-1).expand(P) for p in (lam_f, lam_b, alpha)))


class ScanTables:
    """The chunk-level scans' tables (channel-major, a decay matrix per channel), for
    chunks of ``chunk`` steps; ``lam_*``, ``alpha``: ``[1]`` or ``[P]``, in the compute dtype.

    - ``matrix``: ``[P, K + S, K]``: rows ``0..K-1`` the in-chunk map ``W``, then one row
      per direction in use (``S`` = 1 or 2) giving the chunk's summary ``E_f`` / ``E_b``.
    - ``carry``: ``[P, K, S]``: how each carried state reaches each step of the chunk.
    - :meth:`chunk_scans`: the tables of the chunk-level scans (decays ``lam**K``), built
      when first needed (``T > K``).
    """

    def __init__(self, lam_f: torch.Tensor, lam_b: torch.Tensor, alpha: torch.Tensor, direction: str, chunk: Optional[int] = None):
        chunk = CHUNK if chunk is None else chunk
        if not isinstance(chunk, int) or chunk < 2:
            raise ValueError(f"chunk must be at least 2 steps, got {chunk!r}")
        self.P, lam_f, lam_b, alpha = _per_channel(lam_f, lam_b, alpha, direction)
        self.chunk = K = chunk
        self.direction = direction
        self.lam_f, self.lam_b = lam_f, lam_b
        steps = torch.arange(K, device=lam_f.device, dtype=lam_f.dtype)
        rows, carry = [fusion_matrix(lam_f, lam_b, alpha, K, direction)], []
        if direction != "backward":
            weight = alpha if direction == "bi" else torch.ones_like(alpha)
            rows.append((lam_f[:, None] ** (K - 1 - steps))[:, None])  # E_f: h_f at the chunk's end
            carry.append(weight[:, None] * lam_f[:, None] ** (steps + 1))  # H_f[c-1] decayed to step t
        if direction != "forward":
            weight = 1 - alpha if direction == "bi" else torch.ones_like(alpha)
            rows.append((lam_b[:, None] ** steps)[:, None])  # E_b: h_b at the chunk's start
            carry.append(weight[:, None] * lam_b[:, None] ** (K - steps))  # H_b[c+1] decayed to step t
        self.matrix = torch.cat(rows, dim=1)  # [P, K + S, K]
        self.carry = torch.stack(carry, dim=2)  # [P, K, S]
        self._chunk_scans: Optional[list[tuple[ScanTables, bool]]] = None

    def chunk_scans(self) -> list[tuple["ScanTables", bool]]:
        """``(tables, reverse)`` of the scans over chunks, one per direction in use, in the
        order of the summary rows: forward with ``lam_f**K``, backward with ``lam_b**K``."""
        if self._chunk_scans is None:
            scans = []
            with _cacheable():
                K, one = self.chunk, torch.ones_like(self.lam_f)
                if self.direction != "backward":
                    scans.append((ScanTables(self.lam_f**K, one, one, "forward", K), False))
                if self.direction != "forward":
                    scans.append((ScanTables(one, self.lam_b**K, one, "backward", K), True))
            self._chunk_scans = scans
        return self._chunk_scans


def chunked_potential(u: torch.Tensor, tables: ScanTables) -> torch.Tensor:
    """``v`` of the masked input ``u`` ``[P, T, R]``, channel-major (one neuron per
    ``(p, r)``, parameters per ``p``), ``[P, T, R]``: one ``[K + S, K]`` matrix per channel
    gives the in-chunk sums and the summaries ``E``, the carried states are added after."""
    P, T, R = u.shape
    K = tables.chunk
    if T <= K:
        # one chunk: W's top-left [T, T] block is exactly the reference's matrix for T steps
        return torch.matmul(tables.matrix[:, :T, :T], u)
    n = -(-T // K)
    if n * K != T:
        u = torch.nn.functional.pad(u, (0, 0, 0, n * K - T))  # zeros after the end change neither scan
    # [P, K, n R]: step-in-chunk as rows, so one [K + S, K] matrix per channel serves all chunks
    lanes = u.view(P, n, K, R).transpose(1, 2).reshape(P, K, n * R)
    out = torch.matmul(tables.matrix, lanes)  # [P, K + S, n R]
    carried = []
    for s, (scan, reverse) in enumerate(tables.chunk_scans()):
        state = chunked_potential(out[:, K + s].view(P, n, R), scan)  # [P, n, R]: H[c], at chunk c's far end
        zero = torch.zeros_like(state[:, :1])
        # a chunk receives its neighbour's state: H_f[c-1] from the left, H_b[c+1] from the right
        carried.append(torch.cat([state[:, 1:], zero], 1) if reverse else torch.cat([zero, state[:, :-1]], 1))
    states = torch.stack(carried, dim=1).view(P, -1, n * R)  # [P, S, n R]
    v = torch.baddbmm(out[:, :K], tables.carry, states)  # [P, K, n R]
    return v.view(P, K, n, R).transpose(1, 2).reshape(P, n * K, R)[:, :T]


class DecayTables:
    """What the chunked path derives from ``(lam_f, lam_b, alpha)`` alone (``[1]`` or
    ``[P]`` each, in the compute dtype), for chunks of at most ``chunk`` steps.

    ``chunk`` (``K``) is capped so that ``lam**(-K/2)`` stays below ``finfo.max ** 0.4``
    (about 3e15 in fp32) for the smallest decay in use: 32 steps for every decay above
    0.11 in fp32; a smaller decay gets shorter chunks, never a wrong result. Per direction
    in use (``f``, ``b``), ``[K, 1, P]`` columns broadcast over ``[n, K, R, P]``:

    - ``scale``: the input's scale around the middle step ``m``: ``lam_f**(m-k)``, ``lam_b**(k-m)``;
    - ``out``: back from it, with the fusion weight: ``a lam_f**(t-m)``, ``(1-a) lam_b**(m-t)``;
    - ``triangle``: ``[K, K]``, on and below (forward) or above (backward) the diagonal;
    - ``carry`` (``[P]``): a neighbour chunk's state in the scaled sums: ``lam_f**(m+1)``, ``lam_b**(K-m)``;
    - ``edge`` (``[P]``): a chunk's summary ``E`` from its scaled sums: ``lam_f**(K-1-m)`` at
      its last step, ``lam_b**m`` at its first;
    - :meth:`chunk_scan`: the chunk-level scan's :class:`ScanTables` (decay ``lam**K``),
      built when first needed (``T > K``).
    """

    def __init__(self, lam_f: torch.Tensor, lam_b: torch.Tensor, alpha: torch.Tensor, direction: str, chunk: Optional[int] = None):
        chunk = CHUNK if chunk is None else chunk
        if not isinstance(chunk, int) or chunk < 1:
            raise ValueError(f"chunk must be a positive number of steps, got {chunk!r}")
        self.P, lam_f, lam_b, alpha = _per_channel(lam_f, lam_b, alpha, direction)
        self.direction = direction
        if torch.compiler.is_compiling():
            # a traced graph cannot size its chunks by the decays' values: chunks of one
            # step, no negative power at all, exact for any decay (the chunk-level scan
            # below does the work, in its own short chunks)
            half = 0
        else:
            used = {"bi": (lam_f, lam_b), "forward": (lam_f,), "backward": (lam_b,)}[direction]
            smallest = min(float(lam.detach().min()) for lam in used)
            # the largest power used is lam**(-half): keep it below finfo.max ** 0.4
            limit = 0.4 * math.log(torch.finfo(lam_f.dtype).max)
            half = int(limit // -math.log(smallest)) if 0.0 < smallest < 1.0 else chunk
        self.chunk = K = max(1, min(chunk, 2 * half + 1))
        # the chunk-level scans' own chunks (exact for any decay, so no cap): short, since
        # their per-channel matrices are rebuilt with the parameters every training step
        self._scan_chunk = max(2, min(chunk, SCAN_CHUNK))
        self._scans: dict[bool, ScanTables] = {}
        mid = K // 2
        k = torch.arange(K, device=lam_f.device, dtype=lam_f.dtype)[:, None, None] - mid  # [K, 1, 1]: step - m
        # The triangles hold 1/2 and the scales carry a factor 2 (both exact in binary
        # floating point): a 0/1 matrix would make SpikingJelly's SynOpCounter count the
        # neuron's own sums as synaptic operations. (Built by comparison: torch.tril on
        # the CPU took milliseconds for a 32 x 32 matrix on a busy machine.)
        upper = (k <= k.view(1, K)).view(K, K).to(lam_f.dtype) * 0.5  # [K, K]: t <= k
        lower = upper.t().contiguous()
        self.parts = []  # one dict per direction in use: forward first
        if direction != "backward":
            weight = alpha if direction == "bi" else torch.ones_like(alpha)
            self.parts.append(dict(
                reverse=False, scale=2 * lam_f ** (-k), out=weight * lam_f**k, triangle=upper.t(),
                carry=lam_f ** (mid + 1), edge=lam_f ** (K - 1 - mid),
                lam=lam_f,
            ))
        if direction != "forward":
            weight = 1 - alpha if direction == "bi" else torch.ones_like(alpha)
            self.parts.append(dict(
                reverse=True, scale=2 * lam_b**k, out=weight * lam_b ** (-k), triangle=lower.t(),
                carry=lam_b ** (K - mid), edge=lam_b**mid,
                lam=lam_b,
            ))

    def chunk_scan(self, part: dict) -> ScanTables:
        """The :class:`ScanTables` of ``part``'s scan over chunks (decay ``lam**K``)."""
        reverse = part["reverse"]
        if reverse not in self._scans:
            with _cacheable():
                lam, one = part["lam"] ** self.chunk, torch.ones_like(part["lam"])
                decays = (one, lam) if reverse else (lam, one)
                self._scans[reverse] = ScanTables(*decays, one, "backward" if reverse else "forward", self._scan_chunk)
        return self._scans[reverse]


def time_major_potential(u: torch.Tensor, tables: DecayTables) -> torch.Tensor:
    """``v`` of the masked input ``u`` ``[T, R, P]`` (time first, channels last, as the
    data comes; parameters per ``p``), ``[T, R, P]``; the module docstring gives the equations."""
    T, R, P = u.shape
    K = tables.chunk
    n = -(-T // K)
    # zeros before the start or after the end change neither scan. Centring the steps in
    # the padded chunks keeps a short sequence near the middle step, where the scale
    # factors are near 1 (their cancelling gradients least rounded).
    front = (n * K - T) // 2
    if n * K != T:
        u = torch.nn.functional.pad(u, (0, 0, 0, 0, front, n * K - T - front))
    u = u.view(n, K, R, P)
    v = None
    for part in tables.parts:
        scaled = (u * part["scale"]).reshape(n, K, R * P)  # (a copy only for strided input)
        # every chunk's in-chunk sums (bmm: torch.matmul would fold the chunks and copy
        # the data transposed; a transposed triangle is the faster operand for BLAS)
        sums = torch.bmm(part["triangle"].expand(n, K, K), scaled).view(n, K, R, P)
        if n > 1:
            # E at the chunk's far end -> H, the scan over chunks (channel-major: it is short)
            edge = sums[:, 0 if part["reverse"] else K - 1] * part["edge"]  # [n, R, P]
            scan = tables.chunk_scan(part)
            state = chunked_potential(edge.permute(2, 0, 1).contiguous(), scan).permute(1, 2, 0)
            zero = torch.zeros_like(state[:1])
            # a chunk receives its neighbour's state: H_f[c-1] from the left, H_b[c+1] from the right
            state = torch.cat([state[1:], zero]) if part["reverse"] else torch.cat([zero, state[:-1]])
            sums = sums + (state * part["carry"])[:, None]
        v = sums * part["out"] if v is None else torch.addcmul(v, sums, part["out"])
    return v.view(n * K, R, P)[front : front + T]


def bpsn_chunk(
    x: torch.Tensor,
    mask: Optional[torch.Tensor],
    lam_f: torch.Tensor,
    lam_b: torch.Tensor,
    alpha: torch.Tensor,
    threshold: torch.Tensor,
    surrogate_function: Callable[[torch.Tensor], torch.Tensor],
    direction: str = "bi",
    tables: Optional[DecayTables] = None,
    ternary: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BPSN in chunks, with :func:`~sj_bert.ops.bpsn.reference.bpsn_reference`'s contract.

    ``x``: ``[T, B, *]``, channels last; ``mask``: ``[T, B]`` or ``None``; parameters
    ``[1]`` or ``[C]``. ``tables``: prebuilt :class:`DecayTables` for these parameters
    in the compute dtype (``BPSN`` passes its cached ones); built here when ``None``.
    ``ternary``: spikes in {-1, 0, 1} (see :func:`~.reference.spikes_from_potential`).
    Returns ``(spikes [T, B, *] in x.dtype, v [T, B, *] in the compute dtype)``.

    Example::

        >>> x = torch.randn(100, 2, 8)
        >>> lam = torch.full((8,), 0.5)
        >>> spikes, v = bpsn_chunk(x, None, lam, lam, lam, torch.ones(8), surrogate.ATan())
    """
    dtype = compute_dtype(x.dtype)
    if tables is None:
        tables = DecayTables(*(p.to(dtype) for p in (lam_f, lam_b, alpha)), direction)
    elif tables.direction != direction:
        raise ValueError(f"bpsn_chunk: tables were built for direction={tables.direction!r}, got {direction!r}")
    P = tables.P
    if P > 1 and x.shape[-1] != P:
        raise ValueError(f"per-channel BPSN parameters have {P} entries but x has {x.shape[-1]} channels")
    if mask is not None and x.device.type == "cpu" and not torch.compiler.is_compiling() and bool(mask.all()):
        # nothing padded: skip two passes over the data (on CUDA the check would sync, and
        # a compiled graph would break on it)
        mask = None
    T = x.shape[0]
    u = masked_input(x, mask, dtype)
    v = time_major_potential(u.reshape(T, -1, P), tables).view(u.shape)
    m = None if mask is None else mask.reshape(mask.shape + (1,) * (x.dim() - 2))
    return spikes_from_potential(v, m, threshold, surrogate_function, ternary).to(x.dtype), v
