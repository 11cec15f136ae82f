"""Calibrating an ANN BERT converted to SNN-BERT: each neuron's spikes mapped onto the values
the ANN's matrices read.

Right after conversion a neuron's spikes (``0`` or its threshold) stand where the ANN's
matrices read real values: the neuron's input, or GELU of it for the FFN's activation
(``intermediate.intermediate_act_fn``). :func:`calibrate_spike_maps` fits, per channel, the
least-squares map ``g s + o`` from a neuron's spikes ``s`` to that value, on the model's own
forward over a few sentences, and folds it into the matrices that read the spikes:
``W diag(g)`` and bias ``b + W o``. The matrices still read spikes only, so the cost stays
accumulates; the state dict keeps its keys. It goes neuron by neuron in forward order, each
measured after the ones before it were folded (a later neuron's input depends on them).

The fit's R^2, the share of the value's variance the spikes explain (``fidelity``), says what
a spike keeps: a third at the first layer of a converted MiniLM twin, a fifth at the last
(``bench/hidden_drift.py --calibrate``, docs/accuracy.md). As a start for training it gained
1.4 points on SST-2 over three runs at 250 CPU steps (``recipes/finetune.py
--calibrate_conversion``).

:func:`calibrate_thresholds` can come before it. A converted twin's neurons all start at one
threshold (the recipe's 0.25), but their potentials have different scales by neuron and channel
(the thresholds it sets on SST-2's twin average 0.18-0.27 at the attention output and 0.46-0.71 at
the attention and FFN inputs; docs/accuracy.md). It sets each channel's threshold to the quantile
of its potential that makes it fire on a chosen share of the real tokens.
"""

from __future__ import annotations

import contextlib
import math
from typing import Callable, Collection, Iterable, Iterator, NamedTuple, Optional

import torch
import torch.nn as nn
from transformers.activations import ACT2FN

from .modeling.configuration_spiking_bert import is_spiking

__all__ = ["SpikeFedUnit", "spike_fed_units", "NEURON_KINDS", "REAL_READS", "kind_of", "real_valued",
           "calibrate_spike_maps", "calibrate_thresholds"]

# The kinds of neuron in every encoder layer (a unit's name after "layer.N."), in forward order.
NEURON_KINDS = ("attention.self.neuron", "attention.output.neuron", "intermediate.neuron",
                "intermediate.intermediate_act_fn")
# What real_valued computes a neuron's real value from.
REAL_READS = ("input", "potential", "average")


class SpikeFedUnit(NamedTuple):
    """One neuron of SNN-BERT and what reads it."""

    name: str  # "layer.3.attention.self.neuron"
    neuron: nn.Module
    readers: list  # the nn.Linear layers fed by its spikes
    target: Callable[[torch.Tensor], torch.Tensor]  # its input -> what the ANN's matrices read


def spike_fed_units(model) -> list[SpikeFedUnit]:
    """Every neuron of a softmax-attention SNN-BERT (``SpikingBertModel`` or a model with one
    as ``base_model``), in forward order."""
    def identity(x):
        return x

    act = ACT2FN[model.config.hidden_act]
    units = []
    for i, block in enumerate(model.base_model.encoder.layer):
        attention, prefix = block.attention, f"layer.{i}."
        units += [
            SpikeFedUnit(prefix + "attention.self.neuron", attention.self.neuron,
                         [attention.self.query, attention.self.key, attention.self.value], identity),
            SpikeFedUnit(prefix + "attention.output.neuron", attention.output.neuron, [attention.output.dense],
                         identity),
            SpikeFedUnit(prefix + "intermediate.neuron", block.intermediate.neuron, [block.intermediate.dense],
                         identity),
            SpikeFedUnit(prefix + "intermediate.intermediate_act_fn", block.intermediate.intermediate_act_fn,
                         [block.output.dense], act),
        ]
    return units


def kind_of(unit_name: str) -> str:
    """``layer.3.attention.self.neuron`` -> ``attention.self.neuron``."""
    return unit_name.split(".", 2)[2]


@contextlib.contextmanager
def real_valued(model, kinds: Collection[str], read: str = "input") -> Iterator[None]:
    """Inside the block, the neurons of ``kinds`` (of :data:`NEURON_KINDS`) pass on what the
    ANN's matrices would read there (their input; GELU of it at the FFN's activation), zero at
    padding, instead of spikes; gradients flow through it. A diagnostic: which neurons lose
    what (``bench/hidden_drift.py --sites``, ``bench/real_sites.py``).

    ``read`` (one of :data:`REAL_READS`) is what that value is computed from: ``"input"``;
    ``"potential"``, the neuron's potential ``v`` ``[T, B, C]`` (its forward and backward leaky
    integration of the input over time, without firing), which mixes neighbouring tokens and also
    grows (up to twice the input at tau 2); or ``"average"``, ``v`` divided by the potential an
    input of ones would give, a weighted average of the neighbours at the input's scale.
    :raises ValueError: naming a kind that is not one of :data:`NEURON_KINDS`, or another ``read``"""
    unknown = sorted(set(kinds) - set(NEURON_KINDS))
    if unknown:
        raise ValueError(f"unknown neuron kind(s) {', '.join(unknown)}; expected some of: {', '.join(NEURON_KINDS)}")
    if read not in REAL_READS:
        raise ValueError(f"read must be one of {', '.join(REAL_READS)}, got {read!r}")

    def pass_on(target):
        def hook(module, args, kwargs, spikes):
            x, mask = args[0], kwargs["mask"]
            if read == "input":
                value = x
            else:
                value = module.v_seq.to(x.dtype)  # set by this very call
                if read == "average":  # the weights' sum at each token: the potential of ones
                    (_, weights), _ = module.multi_step_functional_forward((torch.ones_like(x), mask), (module.v,))
                    value = value / weights.to(x.dtype).clamp_min(1e-6)  # tiny only at padding, zeroed below
            return target(value) * mask.unsqueeze(-1).to(x.dtype)
        return hook

    neurons = [unit for unit in spike_fed_units(model) if kind_of(unit.name) in kinds]
    kept = [unit.neuron.store_v_seq for unit in neurons]
    hooks = [unit.neuron.register_forward_hook(pass_on(unit.target), with_kwargs=True) for unit in neurons]
    try:
        if read != "input":
            for unit in neurons:
                unit.neuron.store_v_seq = True
        yield
    finally:
        for hook in hooks:
            hook.remove()
        for unit, keep in zip(neurons, kept):
            unit.neuron.store_v_seq = keep  # the setter drops v_seq: no [T, B, C] graph outlives the block


class _Measured(Exception):
    """Raised by the hook once its neuron is measured: the rest of the forward is not needed."""


def _forward_to(model, node, measure, batches: list, enough: Callable[[], bool] = lambda: False) -> None:
    """Run each batch through ``model`` as far as ``node``, whose forward hook ``measure`` reads
    what it needs and raises :class:`_Measured`; stop early once ``enough()``."""
    hook = node.register_forward_hook(measure, with_kwargs=True)
    try:
        for batch in batches:
            try:
                model(**batch)
            except _Measured:
                pass
            if enough():
                break
    finally:
        hook.remove()


def _check_calibratable(model) -> None:
    config = getattr(model, "config", None)
    if config is None or not is_spiking(config):
        raise TypeError(f"calibrate_spike_maps: model must be SNN-BERT, got {type(model).__name__}")
    if config.attention != "softmax" or config.coding != "individual":
        raise ValueError(
            "calibrate_spike_maps: needs individual coding and softmax attention (each neuron feeds "
            f"matrices), got coding={config.coding!r}, attention={config.attention!r}"
        )


@torch.no_grad()
def calibrate_spike_maps(model, batches: Iterable[dict], log: Optional[Callable[[str], None]] = None
                         ) -> dict[str, float]:
    """Fit and fold each neuron's spike map (module docstring) over ``batches`` (dicts of the
    model's inputs: ``input_ids`` ``[B, L]``, ``attention_mask``, ...; at least one real token).
    Returns each neuron's fidelity (R^2 of its fit, mean over channels; a channel that never or
    always fires explains nothing) by :attr:`SpikeFedUnit.name`. The model is left in the
    training mode it had."""
    _check_calibratable(model)
    batches = list(batches)
    if not batches:
        raise ValueError("calibrate_spike_maps: batches is empty; give at least one batch of sentences")
    was_training = model.training
    model.eval()  # no dropout: the maps are fitted to the model as it runs
    fidelity = {}
    try:
        for name, node, readers, target in spike_fed_units(model):
            sums = {}

            def measure(module, args, kwargs, spikes):
                real = kwargs["mask"]  # [T, B]: individual coding hands BPSN the mask
                y, s = target(args[0])[real].double(), spikes[real].double()  # [tokens, C]
                for key, value in (("n", torch.tensor(float(len(s)), device=s.device)), ("s", s.sum(0)),
                                   ("y", y.sum(0)), ("ss", (s * s).sum(0)), ("yy", (y * y).sum(0)),
                                   ("sy", (s * y).sum(0))):
                    sums[key] = sums.get(key, 0) + value
                raise _Measured

            _forward_to(model, node, measure, batches)
            n = sums["n"]
            if n < 1:
                raise ValueError("calibrate_spike_maps: the batches hold no real token (attention_mask all 0)")
            mean_s, mean_y = sums["s"] / n, sums["y"] / n
            var_s, var_y = sums["ss"] / n - mean_s**2, sums["yy"] / n - mean_y**2
            cov = sums["sy"] / n - mean_s * mean_y
            fires = var_s > 1e-12  # a channel that never (or always) fires carries no information
            gain = torch.where(fires, cov / var_s.clamp_min(1e-12), torch.ones_like(var_s))
            offset = mean_y - gain * mean_s
            fidelity[name] = torch.where(fires, cov**2 / (var_s * var_y).clamp_min(1e-24), 0.0).mean().item()
            for linear in readers:
                weight = linear.weight.double()
                linear.bias.copy_(linear.bias.double() + weight @ offset)
                linear.weight.copy_(weight * gain)
            if log is not None:
                log(f"{name}: fidelity {fidelity[name]:.3f}")
    finally:
        model.train(was_training)
    return fidelity


def _check_per_channel(model) -> None:
    if not model.config.per_channel or model.config.neuron != "bpsn":
        raise ValueError(
            "calibrate_thresholds: sets one threshold per channel; the model needs per_channel=True and "
            f"neuron='bpsn', got per_channel={model.config.per_channel!r}, neuron={model.config.neuron!r}")


@torch.no_grad()
def calibrate_thresholds(model, batches: Iterable[dict], rate: float, max_tokens: int = 16384,
                         log: Optional[Callable[[str], None]] = None) -> dict[str, float]:
    """Set each neuron's per-channel threshold so that the channel fires on about ``rate`` of the
    real tokens of ``batches`` (dicts of the model's inputs, as :func:`calibrate_spike_maps`
    takes): the ``1 - rate`` quantile of its potential ``v`` ``[tokens, C]`` there, neuron by
    neuron in forward order, each measured after the ones before it were set. With spikes that
    carry their threshold (``spike_amplitude="threshold"``) a spike then also has the size of the
    values the channel sees. A channel whose quantile is not positive (its potential is mostly
    negative) keeps its threshold: a threshold at or below zero would fire on silence.

    ``max_tokens``: the quantile is taken over the first this many real tokens.
    Returns each neuron's share of channels that were set (by :attr:`SpikeFedUnit.name`). The
    model is left in the training mode it had; the state dict keeps its keys."""
    _check_calibratable(model)
    _check_per_channel(model)
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 < rate < 1:
        raise ValueError(f"calibrate_thresholds: rate must be a number in (0, 1), got {rate!r}")
    batches = list(batches)
    if not batches:
        raise ValueError("calibrate_thresholds: batches is empty; give at least one batch of sentences")
    was_training = model.training
    model.eval()  # no dropout: thresholds for the model as it runs
    share_set = {}
    try:
        for unit in spike_fed_units(model):
            node, seen = unit.neuron, []

            def measure(module, args, kwargs, spikes):
                seen.append(module.v_seq[kwargs["mask"]].float())  # [tokens, C] at real tokens
                raise _Measured

            stored = node.store_v_seq
            node.store_v_seq = True
            try:
                _forward_to(model, node, measure, batches, enough=lambda: sum(len(v) for v in seen) >= max_tokens)
            finally:
                node.store_v_seq, node.v_seq = stored, None
            v = torch.cat(seen)[:max_tokens]
            if len(v) == 0:
                raise ValueError("calibrate_thresholds: the batches hold no real token (attention_mask all 0)")
            # the k-th smallest of n values, k = ceil((1 - rate) n): about rate * n lie above it
            k = min(len(v), max(1, math.ceil((1 - rate) * len(v))))
            quantile = v.kthvalue(k, dim=0).values
            positive = quantile > 0
            node.v_threshold.copy_(torch.where(positive, quantile, node.v_threshold.float()).to(node.v_threshold.dtype))
            share_set[unit.name] = positive.float().mean().item()
            if log is not None:
                log(f"{unit.name}: thresholds of {share_set[unit.name]:.0%} of the channels set, "
                    f"mean {node.v_threshold.float().mean().item():.3f}")
    finally:
        model.train(was_training)
    return share_set
