"""Chunked BPSN: the torch path, linear in T in time and memory, autograd throughout.

The reference (``reference.py``) applies the whole ``[T, T]`` map from the masked input
``u`` to the potential ``v``: ``O(P T^2)`` memory and work. That map depends on the lag
``t - k`` only, so cut time into chunks of ``K`` steps and it splits into

- one ``[K, K]`` block ``W`` (``fusion_matrix`` at ``T = K``), the same for every chunk:
  what a chunk's own inputs contribute to its potentials;
- two states per neuron carried between chunks: ``h_f`` at a chunk's last step and
  ``h_b`` at its first step.

With ``t, k`` steps inside chunk ``c`` and ``a`` the fusion weight (``alpha``, or 1 / 0
for one direction)::

    E_f[c] = sum_k lam_f**(K-1-k) u[c, k]          H_f[c] = lam_f**K H_f[c-1] + E_f[c]
    E_b[c] = sum_k lam_b**k       u[c, k]          H_b[c] = lam_b**K H_b[c+1] + E_b[c]
    v[c, t] = (W u[c])[t] + a lam_f**(t+1) H_f[c-1] + (1 - a) lam_b**(K-t) H_b[c+1]

``H_f`` and ``H_b`` are themselves one-directional BPSN scans over the ``n = T / K``
chunks, with decays ``lam**K``, so they recurse (depth ``log_K T``; no Python loop over
T). Per neuron and step: ``K + 4`` multiply-adds (one batched matmul gives ``W u`` and the
``E`` rows together, one more adds the carried states), memory ``O(T)``.

Everything that depends on the parameters alone (``W``, the ``E`` rows, the carry
coefficients, the next level's tables) lives in :class:`DecayTables`, which ``BPSN``
caches between calls while its parameters do not change.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch

from .reference import DIRECTIONS, compute_dtype, fusion_matrix, masked_input, spikes_from_potential

__all__ = ["CHUNK", "DecayTables", "bpsn_chunk"]

# Steps per chunk. Per step the work is ~K multiply-adds in one batched matmul; smaller
# chunks make that matmul less efficient and the chunk-level scans longer. Chosen by
# measurement on the CPU (see bench/neuron.py and the PR notes): 32.
CHUNK = 32


class DecayTables:
    """What the chunked path derives from ``(lam_f, lam_b, alpha)`` alone, for chunks of
    ``chunk`` steps; ``lam_*``, ``alpha``: ``[1]`` or ``[P]``, in the compute dtype.

    - ``matrix``: ``[P, K + S, K]``: rows ``0..K-1`` the in-chunk map ``W``, then one row
      per direction in use (``S`` = 1 or 2) giving the chunk's summary ``E_f`` / ``E_b``.
    - ``carry``: ``[P, K, S]``: how each carried state reaches each step of the chunk.
    - :meth:`chunk_scans`: the tables of the chunk-level scans (decays ``lam**K``), built
      when first needed (``T > K``).
    """

    def __init__(self, lam_f: torch.Tensor, lam_b: torch.Tensor, alpha: torch.Tensor, direction: str, chunk: int = CHUNK):
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
        if chunk < 2:
            raise ValueError(f"chunk must be at least 2 steps, got {chunk!r}")
        sizes = {p.numel() for p in (lam_f, lam_b, alpha)} - {1}
        if len(sizes) > 1:
            raise ValueError(f"BPSN parameters must all have 1 or C elements, got sizes {sorted(sizes)}")
        self.P = P = sizes.pop() if sizes else 1
        self.chunk = K = chunk
        self.direction = direction
        lam_f, lam_b, alpha = (p.reshape(-1).expand(P) for p in (lam_f, lam_b, alpha))
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
        self._chunk_scans: Optional[list[tuple[DecayTables, bool]]] = None

    def chunk_scans(self) -> list[tuple["DecayTables", bool]]:
        """``(tables, reverse)`` of the scans over chunks, one per direction in use, in the
        order of the summary rows: forward with ``lam_f**K``, backward with ``lam_b**K``."""
        if self._chunk_scans is None:
            K, one = self.chunk, torch.ones_like(self.lam_f)
            scans = []
            if self.direction != "backward":
                scans.append((DecayTables(self.lam_f**K, one, one, "forward", K), False))
            if self.direction != "forward":
                scans.append((DecayTables(one, self.lam_b**K, one, "backward", K), True))
            self._chunk_scans = scans
        return self._chunk_scans


def chunked_potential(u: torch.Tensor, tables: DecayTables) -> torch.Tensor:
    """``v`` of the masked input ``u`` ``[P, T, R]``, channel-major (one neuron per
    ``(p, r)``, parameters per ``p``), ``[P, T, R]``; the module docstring gives the equations."""
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
) -> tuple[torch.Tensor, torch.Tensor]:
    """BPSN in chunks, with :func:`~sj_bert.ops.bpsn.reference.bpsn_reference`'s contract.

    ``x``: ``[T, B, *]``, channels last; ``mask``: ``[T, B]`` or ``None``; parameters
    ``[1]`` or ``[C]``. ``tables``: prebuilt :class:`DecayTables` for these parameters
    in the compute dtype (``BPSN`` passes its cached ones); built here when ``None``.
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
    T = x.shape[0]
    u = masked_input(x, mask, dtype).reshape(T, -1, P)  # [T, R, P]
    if P == 1:
        v = chunked_potential(u.view(1, T, -1), tables)  # time-major is already [1, T, R]
    else:
        # channel-major for the matmuls over time: plain 2-d transposes, which torch copies
        # blockwise (a 4-d permute of the same data is several times slower)
        u = u.view(-1, P).t().contiguous().view(P, T, -1)
        v = chunked_potential(u, tables).reshape(P, -1).t().contiguous()
    v = v.view(x.shape)
    return spikes_from_potential(v, x, mask, threshold, surrogate_function), v
