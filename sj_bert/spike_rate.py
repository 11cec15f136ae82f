"""A firing rate that gradients flow through: the training penalty that trades spikes for loss.

:class:`SpikeRate` hooks every SpikingJelly neuron of a model. During a forward it counts
each neuron's spikes from the spikes themselves (``|s|`` over the spike's amplitude, so a
ternary ``-1`` is one spike and a spike carrying its channel's threshold is one spike too),
so the count's gradient reaches the potentials through the neuron's surrogate, and with a
learnable threshold reaches the threshold as well (raising it fires less). Its
:meth:`~SpikeRate.rate` is the count over the neuron updates at real tokens: the value
:func:`sj_bert.energy.energy_report` reports as the firing rate, which is what energy per
sample grows with. ``recipes/finetune.py --spike_rate_weight W`` adds ``W * rate`` to the
loss.

A padded position never fires in SNN-BERT (``modeling_spiking_bert.fire`` masks BPSN and
gives other neurons zero input there), so spikes are summed over the whole output and only
the count of updates needs the attention mask.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
from spikingjelly.activation_based.neuron import BaseNode

from .neuron import BPSN

__all__ = ["SpikeRate"]

# Below this a threshold-carrying spike is treated as having amplitude 0: it holds 0, feeds
# nothing and is not counted (as the energy report does not count it).
_AMPLITUDE_FLOOR = 1e-12


class SpikeRate:
    """Differentiable firing rate of every neuron in ``model`` over one training forward.

    Use as a context manager (hooks attached inside, removed on exit); call :meth:`reset`
    with the batch's attention mask before each forward, then :meth:`rate`. Only neurons in
    training mode count, so a model scored in ``eval()`` mode inside the block adds nothing::

        with SpikeRate(model) as meter:
            meter.reset(batch["attention_mask"])
            loss = model(**batch).loss + weight * meter.rate()

    :param model: a module holding SpikingJelly neurons: SNN-BERT, or any SpikingJelly net
        (then :meth:`reset` without a mask)
    :raises ValueError: ``model`` has no SpikingJelly neuron
    """

    def __init__(self, model: nn.Module):
        self.neurons = [m for m in model.modules() if isinstance(m, BaseNode)]
        if not self.neurons:
            raise ValueError(f"SpikeRate: {type(model).__name__} has no spiking neuron (an ANN has no firing rate)")
        self._handles: list = []
        self._real_share: Optional[torch.Tensor] = None
        self._spikes: list[torch.Tensor] = []
        self._updates: list[torch.Tensor] = []

    def attach(self) -> "SpikeRate":
        """Hook the neurons (what ``with`` does on entry)."""
        if not self._handles:
            self._handles = [n.register_forward_hook(self._hook) for n in self.neurons]
        return self

    def detach(self) -> None:
        """Remove the hooks (what ``with`` does on exit)."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def __enter__(self) -> "SpikeRate":
        return self.attach()

    def __exit__(self, *exc) -> None:
        self.detach()

    def reset(self, attention_mask: Optional[torch.Tensor] = None) -> None:
        """Start counting a new forward. ``attention_mask``: ``[B, L]``, nonzero at real
        tokens; ``None`` (a net without padding, e.g. images): every neuron update counts."""
        if attention_mask is None:
            self._real_share = torch.tensor(1.0)
        elif attention_mask.dim() != 2 or attention_mask.numel() == 0:
            raise ValueError(f"SpikeRate.reset: attention_mask must be [B, L] and non-empty, got "
                             f"{tuple(attention_mask.shape)}")
        else:
            # every neuron output holds the [B, L] token grid once per step and channel, so its
            # updates at real tokens are this share of its elements (a tensor: no host sync)
            self._real_share = (attention_mask != 0).float().mean()
        self._spikes, self._updates = [], []

    def _hook(self, module: BaseNode, args, out: torch.Tensor) -> None:
        if not module.training:
            return
        if self._real_share is None:
            raise RuntimeError("SpikeRate: call reset(attention_mask) before the forward")
        magnitude = out.abs()
        if isinstance(module, BPSN) and module.spike_amplitude == "threshold":
            # a spike holds its channel's threshold; dividing by it (not detached) counts it as
            # 1 and leaves the gradient of the step function alone: d(th H(v - th) / th) = dH
            threshold = module._per_channel(module.v_threshold, out, multi_step=module.step_mode == "m")
            magnitude = magnitude / threshold.abs().clamp_min(_AMPLITUDE_FLOOR).to(out.dtype)
        self._spikes.append(magnitude.sum(dtype=torch.float32))  # counts in fp32 whatever autocast did
        self._updates.append(out.numel() * self._real_share)

    def rate(self) -> torch.Tensor:
        """Spikes over neuron updates at real tokens since :meth:`reset`: a scalar in [0, 1]
        (fp32) with the spikes' graph."""
        if not self._spikes:
            raise RuntimeError("SpikeRate: no neuron ran since reset(); run the model in train() mode inside `with`")
        return torch.stack(self._spikes).sum() / torch.stack(self._updates).sum().clamp_min(1.0)
