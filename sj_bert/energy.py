"""Energy accounting for SNN-BERT, next to the ANN BERT of the same shape.

Method (DESIGN section 2; the convention of SpikeLM, SpikingBERT and Spikformer):

- **Firing rates.** A forward hook on every SpikingJelly neuron (``BaseNode``) counts its
  non-zero outputs at real positions. Rate = spikes / (real positions x channels x steps),
  overall and per token position (the heatmap of :func:`plot_firing_rates`).
- **Synaptic operations (AC).** A weight matrix fed by spikes costs one accumulate per
  non-zero input spike per output feature: ``SOPs = nnz(input) x out_features`` (equal to
  firing rate x dense MACs x steps). A forward hook on every ``nn.Linear`` decides from its
  input: a channel holding only 0 and one magnitude ``a_c`` ({0, 1}, or ``{0, V_th[c]}`` with
  ``spike_amplitude="threshold"``, whose scale the weights absorb) counts as spikes,
  anything else as real.
  Padded positions never spike (the neurons silence them), so they cost nothing. With
  softmax attention the total equals SpikingJelly's ``op_counter.SynOpCounter`` (tested);
  the hooks are used because they also give per-layer, per-position and real-token counts.
- **Dense operations (MAC).** A weight matrix fed by real values costs
  ``real rows x in_features x out_features`` (the pooler and classifier: one row per
  sample). Softmax attention multiplies real Q, K, V: ``2 x L_b^2 x hidden`` MACs per layer,
  per sample ``b`` with ``L_b`` real tokens, per step. Embedding look-ups cost nothing;
  biases are not counted.
- **Spiking attention.** ``Q K^T`` with spiking Q: each Q spike adds one K column for every
  real key, ``nnz(Q_b) x L_b`` AC; ``scores x V`` with spiking V: each V spike adds one score
  column for every real query, ``nnz(V_b) x L_b`` AC.
- **Reported on a separate line, not in the energy:** LayerNorm elements, softmax
  elements and neuron updates (real positions x channels x steps); for the ANN, GELU
  elements instead of neuron updates.
- **Coding.** Individual coding counts each real token once (``T = L``, padding excluded);
  repeat coding counts every token ``time_steps`` times (spikes and softmax attention of
  every step; the embeddings are computed once). The ANN twin is BERT with the same
  matrices, dense and counted once per real token.
- **Energy** per sample at 45 nm: ``0.9 pJ x AC + 4.6 pJ x MAC`` (Horowitz, ISSCC 2014).

Worked example (MiniLM-L6-H384, L = 128, hidden 384, FFN 1536): the linears cost
``128 x (4 x 384^2 + 2 x 384 x 1536) = 226.5 M`` MAC per layer and softmax attention
``2 x 128^2 x 384 = 12.6 M``; six layers give about 1.43 G MAC, about 6.6 mJ for the ANN. At a
10 % firing rate with softmax attention kept real the spiking model needs about 0.14 G AC
plus 0.08 G MAC, about 0.5 mJ.

Example::

    >>> report = energy_report(model, batch["input_ids"], batch["attention_mask"])
    >>> print(report.format())
    >>> plot_firing_rates(report, "firing.png")
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Optional

import torch
import torch.nn as nn
from spikingjelly.activation_based.neuron import BaseNode

from .modeling.modeling_bi_encoder import PAIR_INPUTS, SpikingBertBiEncoder, stack_pair
from .modeling.modeling_spiking_bert import (
    SpikingBertForSequenceClassification,
    SpikingBertModel,
    SpikingBertSelfAttention,
)

__all__ = [
    "E_AC_PJ", "E_MAC_PJ", "EnergyReport", "NeuronStats", "OpStats", "energy_report", "pair_energy_report",
    "energy_on_dataset", "plot_firing_rates",
]

E_AC_PJ = 0.9  # 45 nm, 32-bit float add
E_MAC_PJ = 4.6  # 45 nm, 32-bit float multiply (3.7) + add (0.9)


@dataclass
class NeuronStats:
    """One neuron layer over the batch: ``spikes`` non-zero outputs out of ``updates``
    (real positions x channels x steps); ``by_position[t]`` the rate at token position t
    (``None`` where no sample has a real token there)."""

    name: str
    channels: int
    spikes: int
    updates: int
    by_position: list[Optional[float]] = field(default_factory=list)

    @property
    def firing_rate(self) -> float:
        return self.spikes / self.updates if self.updates else 0.0


@dataclass
class OpStats:
    """One weight matrix or attention product over the batch."""

    name: str
    kind: str  # "linear" or "attention"
    spike_fed: bool
    sops: int
    macs: int


@dataclass
class EnergyReport:
    """Operation counts for one batch; ``*_per_sample`` divide by ``batch_size``.

    ``ann`` is the dense twin (same shape, same tokens), itself an :class:`EnergyReport`
    with no neurons and zero synaptic operations."""

    model: str  # "snn" or "ann"
    coding: str
    neuron: Optional[str]
    attention: str
    steps: int  # time steps per token: 1 (individual coding, ANN) or time_steps (repeat)
    batch_size: int
    tokens: int  # real tokens in the batch
    neurons: list[NeuronStats]
    ops: list[OpStats]
    other: dict[str, int]
    e_ac_pj: float = E_AC_PJ
    e_mac_pj: float = E_MAC_PJ
    ann: Optional["EnergyReport"] = None

    @property
    def sops(self) -> int:
        return sum(op.sops for op in self.ops)

    @property
    def macs(self) -> int:
        return sum(op.macs for op in self.ops)

    @property
    def firing_rate(self) -> float:
        updates = sum(n.updates for n in self.neurons)
        return sum(n.spikes for n in self.neurons) / updates if updates else 0.0

    @property
    def sops_per_sample(self) -> float:
        return self.sops / self.batch_size

    @property
    def macs_per_sample(self) -> float:
        return self.macs / self.batch_size

    @property
    def energy_per_sample_mj(self) -> float:
        """``(0.9 pJ x AC + 4.6 pJ x MAC) / batch_size``, in millijoules."""
        return (self.sops * self.e_ac_pj + self.macs * self.e_mac_pj) / self.batch_size * 1e-9

    def to_dict(self) -> dict:
        out = asdict(self)
        out["neurons"] = [{**asdict(n), "firing_rate": n.firing_rate} for n in self.neurons]
        out["ann"] = self.ann.to_dict() if self.ann is not None else None
        for name in ("sops", "macs", "firing_rate", "sops_per_sample", "macs_per_sample", "energy_per_sample_mj"):
            out[name] = getattr(self, name)
        return out

    def format(self) -> str:
        """A text table: neuron firing rates, per-matrix operations, totals beside the ANN."""
        per_token = self.tokens / self.batch_size
        lines = [
            f"SNN-BERT energy: {self.coding} coding, {self.neuron} neurons, {self.attention} attention, "
            f"{self.steps} step(s)/token; batch {self.batch_size}, {per_token:.1f} real tokens/sample",
            "",
            f"{'neuron layer':<56}{'channels':>9}{'firing rate':>13}",
        ]
        lines += [f"{n.name:<56}{n.channels:>9}{n.firing_rate:>12.2%}" for n in self.neurons]
        lines += [f"{'all neurons':<56}{'':>9}{self.firing_rate:>12.2%}", ""]
        lines.append(f"{'operation (per sample)':<56}{'input':>9}{'AC (SOP)':>13}{'MAC':>13}")
        for op in self.ops:
            source = "spikes" if op.spike_fed else "real"
            lines.append(
                f"{op.name:<56}{source:>9}{op.sops / self.batch_size:>13.4g}{op.macs / self.batch_size:>13.4g}"
            )
        lines.append("")
        twin = self.ann
        rows = [
            ("synaptic ops (AC)", self.sops_per_sample, twin.sops_per_sample if twin else None, ".4g"),
            ("dense ops (MAC)", self.macs_per_sample, twin.macs_per_sample if twin else None, ".4g"),
            ("energy (mJ, 45 nm)", self.energy_per_sample_mj, twin.energy_per_sample_mj if twin else None, ".4g"),
        ]
        lines.append(f"{'per sample':<40}{'SNN':>14}{'ANN':>14}")
        for label, snn, ann, fmt in rows:
            lines.append(f"{label:<40}{snn:>14{fmt}}{'' if ann is None else format(ann, fmt):>14}")
        if twin is not None and self.energy_per_sample_mj > 0:
            lines.append(f"{'ANN / SNN energy':<40}{twin.energy_per_sample_mj / self.energy_per_sample_mj:>14.2f}x")
        lines.append("")
        lines.append(f"not in the energy (per sample): SNN {_format_other(self)}")
        if twin is not None:
            lines.append(f"                                 ANN {_format_other(twin)}")
        return "\n".join(lines)


def _format_other(report: EnergyReport) -> str:
    return ", ".join(f"{k.replace('_', ' ')} {v / report.batch_size:.4g}" for k, v in report.other.items())


def _is_spike_tensor(x: torch.Tensor, per_channel_amplitude: bool = False) -> bool:
    """Spikes: values in {0, 1} or {-1, 0, 1}. With ``per_channel_amplitude`` every channel
    (last dim) may hold 0 and one magnitude ``a_c`` of its own (``spike_amplitude=
    "threshold"``): the amplitude folds into the weight matrix (``W diag(a) s``), so the
    layer still only accumulates. Only encoder layers, which the model feeds from neurons,
    use that looser test: a single real-valued row would pass it too."""
    if x.dtype == torch.bool:
        return True
    magnitude = x.abs()
    amplitude = magnitude.reshape(-1, x.shape[-1]).amax(dim=0) if per_channel_amplitude else 1
    return bool(((x == 0) | (magnitude == amplitude)).all())


class _Counter:
    """Forward hooks that fill the report while the model runs one batch."""

    def __init__(self, base: SpikingBertModel, mask: torch.Tensor):
        self.config = base.config
        self.mask = mask  # [B, L] bool
        self.individual = self.config.coding == "individual"
        self.steps = 1 if self.individual else self.config.time_steps
        self.neurons: list[NeuronStats] = []
        self.ops: list[OpStats] = []
        self.ann_ops: list[OpStats] = []
        self.per_sample_spikes: dict[str, torch.Tensor] = {}
        self.layernorm = [0, 0]  # [snn, ann] elements
        self.handles = []

    def real(self, x: torch.Tensor, region: str) -> torch.Tensor:
        """Bool mask of ``x.shape[:-1]``: true at real positions."""
        if region == "head":
            return torch.ones(x.shape[:-1], dtype=torch.bool, device=x.device)
        if region == "embeddings":
            return self.mask
        if self.individual:
            return self.mask.t()
        return self.mask.unsqueeze(0).expand(self.steps, *self.mask.shape)

    def attach(self, model: nn.Module) -> None:
        for name, module in model.named_modules():
            parts = name.split(".")
            region = "encoder" if "encoder" in parts else "embeddings" if "embeddings" in parts else "head"
            if isinstance(module, BaseNode):
                self.handles.append(module.register_forward_hook(self.neuron_hook(name, region)))
            elif isinstance(module, nn.Linear):
                self.handles.append(module.register_forward_hook(self.linear_hook(name, region)))
            elif isinstance(module, nn.LayerNorm):
                self.handles.append(module.register_forward_hook(self.layernorm_hook(region)))

    def detach(self) -> None:
        for handle in self.handles:
            handle.remove()

    def ann_rows(self, real: torch.Tensor, region: str) -> int:
        # the ANN runs each real token once; repeat coding's steps are not in the twin
        return int(real.sum()) // (self.steps if region == "encoder" else 1)

    def neuron_hook(self, name: str, region: str):
        def hook(module, args, out):
            real = self.real(out, region).unsqueeze(-1)
            nonzero = (out != 0) & real
            channels = out.shape[-1]
            token_dim = 0 if self.individual else 2
            other_dims = tuple(d for d in range(out.dim()) if d != token_dim)
            spikes_at = nonzero.sum(dim=other_dims).double()
            real_at = self.mask.sum(dim=0).double() * channels * self.steps
            rates = (spikes_at / real_at.clamp(min=1)).tolist()
            self.per_sample_spikes[name] = nonzero.sum(dim=tuple(d for d in range(out.dim()) if d != 1))
            self.neurons.append(
                NeuronStats(
                    name=name,
                    channels=channels,
                    spikes=int(nonzero.sum()),
                    updates=int(real.sum()) * channels,
                    by_position=[r if n > 0 else None for r, n in zip(rates, real_at.tolist())],
                )
            )

        return hook

    def linear_hook(self, name: str, region: str):
        def hook(module, args, out):
            x = args[0]
            real = self.real(x, region)
            dense = module.in_features * module.out_features
            spike_fed = _is_spike_tensor(x, per_channel_amplitude=region == "encoder")
            if spike_fed:
                sops, macs = int(((x != 0) & real.unsqueeze(-1)).sum()) * module.out_features, 0
            else:
                sops, macs = 0, int(real.sum()) * dense
            self.ops.append(OpStats(name, "linear", spike_fed, sops, macs))
            self.ann_ops.append(OpStats(name, "linear", False, 0, self.ann_rows(real, region) * dense))

        return hook

    def layernorm_hook(self, region: str):
        def hook(module, args, out):
            real = self.real(args[0], region)
            width = args[0].shape[-1]
            self.layernorm[0] += int(real.sum()) * width
            self.layernorm[1] += self.ann_rows(real, region) * width

        return hook


def _attention_ops(
    model: nn.Module, counter: _Counter, lengths: torch.Tensor
) -> tuple[list[tuple[int, OpStats]], list[OpStats], int, int]:
    """Attention products per layer, placed after each layer's value projection:
    ``(position, SNN op)`` pairs, the ANN ops, SNN and ANN softmax elements."""
    squares = int((lengths**2).sum())
    snn, ann, softmax = [], [], [0, 0]
    for name, module in model.named_modules():
        if not isinstance(module, SpikingBertSelfAttention):
            continue
        op_name = f"{name} (QK^T, AV)"
        dense = 2 * squares * module.all_head_size
        ann.append(OpStats(op_name, "attention", False, 0, dense))
        softmax[1] += squares * module.num_attention_heads
        if module.spiking:
            sops = sum(
                int((counter.per_sample_spikes[f"{name}.{n}"] * lengths).sum())
                for n in ("query_neuron", "value_neuron")
            )
            op = OpStats(op_name, "attention", True, sops, 0)
        else:
            op = OpStats(op_name, "attention", False, 0, dense * counter.steps)
            softmax[0] += squares * module.num_attention_heads * counter.steps
        position = next(i for i, o in enumerate(counter.ops) if o.name == f"{name}.value") + 1
        snn.append((position, op))
    return snn, ann, softmax[0], softmax[1]


def _insert(ops: list[OpStats], placed: list[tuple[int, OpStats]]) -> list[OpStats]:
    out = list(ops)
    for offset, (position, op) in enumerate(placed):
        out.insert(position + offset, op)
    return out


@torch.no_grad()
def energy_report(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: Optional[torch.Tensor] = None,
    token_type_ids: Optional[torch.Tensor] = None,
) -> EnergyReport:
    """Firing rates, synaptic and dense operations and energy per sample of one batch.

    :param model: :class:`~sj_bert.SpikingBertModel` or
        :class:`~sj_bert.SpikingBertForSequenceClassification` (run in eval mode; its mode
        is restored afterwards); a :class:`~sj_bert.SpikingBertBiEncoder` is measured by
        :func:`pair_energy_report`
    :param input_ids: ``[B, L]``
    :param attention_mask: ``[B, L]``, 1 at real tokens (default: all real)
    :param token_type_ids: ``[B, L]`` or ``None``
    :returns: an :class:`EnergyReport` whose ``ann`` is the dense BERT of the same shape
    """
    if isinstance(model, SpikingBertBiEncoder):
        raise TypeError("energy_report measures one input per sample; a SpikingBertBiEncoder reads two "
                        "sentences apart: use pair_energy_report(model, input_ids_a, attention_mask_a, "
                        "input_ids_b, attention_mask_b)")
    if isinstance(model, SpikingBertForSequenceClassification):
        base = model.bert
    elif isinstance(model, SpikingBertModel):
        base = model
    else:
        raise TypeError(
            "energy_report needs a SpikingBertModel or SpikingBertForSequenceClassification, "
            f"got {type(model).__name__}"
        )
    batch, length = base._check_inputs(input_ids, attention_mask, token_type_ids, None)
    if attention_mask is None:
        attention_mask = torch.ones(batch, length, dtype=torch.bool, device=input_ids.device)
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
    return _measure(model, base, inputs, attention_mask.bool(), batch)


@torch.no_grad()
def pair_energy_report(
    model: nn.Module,
    input_ids_a: torch.Tensor,
    attention_mask_a: Optional[torch.Tensor],
    input_ids_b: torch.Tensor,
    attention_mask_b: Optional[torch.Tensor],
) -> EnergyReport:
    """:func:`energy_report` of a :class:`~sj_bert.SpikingBertBiEncoder` on one batch of
    ``B`` pairs: a pair costs its two sentences' encodings (each counted at its own real
    tokens, as if encoded alone) plus the head's dense MACs on ``[u, v, |u - v|, u * v]``, one
    row per pair; per-sample numbers are per pair. The ANN twin is the dense bi-encoder of the
    same shape. Not counted, as the cross-encoder's pooling is not: the mean pooling, and for
    regression the cosine (a few ``hidden`` MACs per pair).

    :param input_ids_a: ``[B, La]``; ``input_ids_b``: ``[B, Lb]``; masks of their shapes (None: all real)
    """
    if not isinstance(model, SpikingBertBiEncoder):
        raise TypeError(f"pair_energy_report needs a SpikingBertBiEncoder, got {type(model).__name__}")
    inputs = dict(zip(PAIR_INPUTS, (input_ids_a, attention_mask_a, input_ids_b, attention_mask_b)))
    stacked_ids, stacked_mask = stack_pair(input_ids_a, attention_mask_a, input_ids_b, attention_mask_b,
                                           model.config.pad_token_id or 0)
    model.bert._check_inputs(stacked_ids, stacked_mask, None, None)
    return _measure(model, model.bert, inputs, stacked_mask.bool(), input_ids_a.shape[0])


def _measure(model: nn.Module, base: SpikingBertModel, inputs: dict, mask: torch.Tensor, batch: int) -> EnergyReport:
    """Run ``model(**inputs)`` once with the counting hooks; ``mask``: ``[N, L]`` bool, the real
    tokens of the ``N`` sentences the encoder runs; ``batch``: the samples the totals are per."""
    counter = _Counter(base, mask)
    was_training = model.training
    model.eval()
    counter.attach(model)
    try:
        model(**inputs)
    finally:
        counter.detach()
        model.train(was_training)

    lengths = mask.sum(dim=1)
    tokens = int(lengths.sum())
    placed, ann_attention, softmax, ann_softmax = _attention_ops(model, counter, lengths)
    config = base.config
    act_updates = sum(n.updates for n in counter.neurons if n.name.endswith("intermediate_act_fn"))
    ann = EnergyReport(
        model="ann",
        coding="ann",
        neuron=None,
        attention="softmax",
        steps=1,
        batch_size=batch,
        tokens=tokens,
        neurons=[],
        ops=_insert(counter.ann_ops, [(p, op) for (p, _), op in zip(placed, ann_attention)]),
        other={
            "layernorm_elements": counter.layernorm[1],
            "softmax_elements": ann_softmax,
            "gelu_elements": act_updates // counter.steps,
        },
    )
    return EnergyReport(
        model="snn",
        coding=config.coding,
        neuron=config.neuron,
        attention=config.attention,
        steps=counter.steps,
        batch_size=batch,
        tokens=tokens,
        neurons=counter.neurons,
        ops=_insert(counter.ops, placed),
        other={
            "layernorm_elements": counter.layernorm[0],
            "softmax_elements": softmax,
            "neuron_updates": sum(n.updates for n in counter.neurons),
        },
        ann=ann,
    )


def plot_firing_rates(report: EnergyReport, path: str) -> str:
    """Heatmap of firing rate per neuron layer (rows) and token position (columns), PNG."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise ImportError("plot_firing_rates needs matplotlib: pip install 'sj-bert[dev]'") from err
    if not report.neurons:
        raise ValueError("the report has no neuron layers to plot (an ANN report?)")
    rates = [[math.nan if r is None else r for r in n.by_position] for n in report.neurons]
    height = max(3.0, 0.22 * len(rates) + 1.5)
    width = max(5.0, min(18.0, 0.12 * len(rates[0]) + 5.0))
    fig, ax = plt.subplots(figsize=(width, height))
    image = ax.imshow(rates, aspect="auto", interpolation="nearest", cmap="viridis", vmin=0.0)
    ax.set_yticks(range(len(rates)))
    ax.set_yticklabels([n.name.removeprefix("bert.").removeprefix("encoder.") for n in report.neurons], fontsize=6)
    ax.set_xlabel("token position")
    ax.set_title(f"firing rate ({report.coding} coding, {report.neuron}, overall {report.firing_rate:.1%})")
    fig.colorbar(image, ax=ax, label="firing rate")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


@torch.no_grad()
def energy_on_dataset(model, dataset, collate, num_samples: int):
    """``sj_bert.energy.energy_report`` (:func:`pair_energy_report` for a bi-encoder) of ``model``
    on the first ``num_samples`` rows of a tokenized split."""
    rows = [dataset[i] for i in range(min(num_samples, len(dataset)))]
    if not rows:
        raise ValueError("no samples to measure energy on")
    batch = collate([{k: v for k, v in row.items() if k != "labels"} for row in rows])
    device = next(model.parameters()).device
    if isinstance(model, SpikingBertBiEncoder):
        return pair_energy_report(model, *(batch[name].to(device) for name in PAIR_INPUTS))
    inputs = {k: v.to(device) for k, v in batch.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
    return energy_report(model, **inputs)
