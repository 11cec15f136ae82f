"""SNN-BERT: Hugging Face's BERT with spiking neurons in front of every encoder weight matrix.

SNN-BERT (Neural Networks 180, 2024). Module and parameter names follow
``transformers.models.bert`` exactly, so a BERT state dict (``BertModel`` or
``BertForSequenceClassification``, with or without the ``bert.`` prefix) loads unchanged;
the neurons' parameters are the only new keys (plus ``classifier`` for a base checkpoint).

Per encoder layer (residual stream and LayerNorm real-valued)::

    s = N(h)                                    attention.self.neuron
    q, k, v = Wq s, Wk s, Wv s                  attention.self.query / key / value
      softmax:  a = softmax(q k^T / sqrt(d) + mask) v
      spiking:  q, k, v = N(q), N(k), N(v);  a = ((q k^T / sqrt(d)) * mask) v     (no softmax)
    h = LN(h + Wo N(a))                         attention.output.neuron, .dense, .LayerNorm
    f = N_act(W1 N(h))                          intermediate.neuron, .dense, .intermediate_act_fn
    h = LN(h + W2 f)                            output.dense, output.LayerNorm

``N`` is a SpikingJelly neuron (``sj_bert.BPSN`` or ``LIFNode``); the FFN's GELU slot
(``intermediate_act_fn``) holds a neuron, so both FFN matrices see spikes.

Layouts inside the encoder (time first, SpikingJelly's multi-step convention):

- individual coding: ``[T, B, D]`` with ``T = L``, one token per step; every neuron gets
  the attention mask ``[T, B]`` so padded steps neither integrate nor fire.
- repeat coding: ``[S, B, L, D]``, the embeddings repeated ``S = time_steps`` times, neurons
  running over ``S``; the encoder output is averaged over ``S`` before the pooler.

Embeddings and the pooler are BERT's own (real-valued) modules.
"""

from __future__ import annotations

import math
import warnings
from typing import NamedTuple, Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from spikingjelly.activation_based import layer
from spikingjelly.activation_based.base import MemoryModule
from spikingjelly.activation_based.neuron import BaseNode, LIFNode
from transformers import PreTrainedModel
from transformers.modeling_outputs import BaseModelOutputWithPooling, SequenceClassifierOutput
from transformers.models.bert.modeling_bert import BertEmbeddings, BertPooler

from .._compat import init
from ..neuron import BPSN
from ..ops.bpsn.dispatch import scale_by_threshold
from .configuration_spiking_bert import SpikingBertConfig

__all__ = [
    "SpikingBertPreTrainedModel",
    "SpikingBertModel",
    "SpikingBertForSequenceClassification",
    "EncoderMask",
    "IdRange",
    "check_id_ranges",
    "masked_mean",
    "make_neuron",
    "fire",
]


class EncoderMask(NamedTuple):
    """Where the real tokens are, in the shapes the encoder needs.

    - ``neuron``: bool, ``[T, B]`` (individual coding) or ``[1, B, L]`` (repeat coding)
    - ``keys``: bool ``[B, 1, 1, L]``, broadcast over heads, queries (and steps)
    - ``time_major``: True in individual coding, where tokens lie on dim 0
    """

    neuron: torch.Tensor
    keys: torch.Tensor
    time_major: bool


class IdRange(NamedTuple):
    """A check on an integer input's values: every entry of ``tensor`` (but ``ignore``)
    must lie in ``[0, size)``, where ``size`` is the config's ``field``. ``noun``: what an
    entry is, in the error (``"id"``, ``"class"``)."""

    arg: str
    tensor: torch.Tensor
    size: int
    field: str
    noun: str = "id"
    ignore: Optional[int] = None


def check_id_ranges(ranges: Sequence[IdRange], padding: Optional[tuple[torch.Tensor, int]] = None) -> bool:
    """Raise a ValueError naming the argument of the first range broken; return whether
    ``padding = (input_ids, pad_token_id)`` holds that id (``False`` without ``padding``).

    All of it is one reduction per tensor and one read back to the host: on a GPU each
    read is a sync, which stops the host from queueing the forward's kernels ahead of the
    device, so every value check of a forward shares this one."""
    if not ranges and padding is None:
        return False
    # per tensor a [2] (min, max), the padding test a [1]; stacked per device (one, unless a
    # caller mixes devices, which the forward then rejects on its own)
    by_device: dict[torch.device, list[torch.Tensor]] = {}
    for check in ranges:
        values = check.tensor if check.ignore is None else check.tensor.masked_fill(check.tensor == check.ignore, 0)
        by_device.setdefault(values.device, []).extend(torch.aminmax(values))
    if padding is not None:
        ids, pad_token_id = padding
        by_device.setdefault(ids.device, []).append((ids == pad_token_id).any())
    # the one read per device, the one sync on a GPU (ints and a bool stack as int64)
    read = {}
    for device, values in by_device.items():
        read[device] = torch.stack(values).tolist()
    position = dict.fromkeys(read, 0)
    for check in ranges:
        device = check.tensor.device
        low, high = read[device][position[device]:position[device] + 2]
        position[device] += 2
        if low < 0 or high >= check.size:
            bad = low if low < 0 else high
            raise ValueError(
                f"{check.arg} holds {check.noun} {bad}, outside [0, {check.size}) ({check.field} of the config)"
            )
    return padding is not None and bool(read[padding[0].device][-1])


def masked_mean(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """``[N, L, D]`` -> ``[N, D]``: the mean over real tokens (``attention_mask`` ``[N, L]``,
    nonzero at real tokens); a row without any is 0, not NaN."""
    weights = attention_mask.to(hidden.dtype).unsqueeze(-1)  # [N, L, 1]
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)


def make_neuron(config: SpikingBertConfig, channels: int, site: str) -> BaseNode:
    """The configured multi-step neuron for inputs with ``channels`` features at ``site`` (of
    ``NEURON_SITES``: what ``ternary_spikes`` and ``site_thresholds`` may name). Its
    ``spike_amplitude`` says what a spike carries: BPSN scales its spikes itself, other
    neurons are scaled by :func:`fire`."""
    node = _neuron(config, channels, site)
    node.spike_amplitude = config.spike_amplitude
    return node


def _neuron(config: SpikingBertConfig, channels: int, site: str) -> BaseNode:
    if config.neuron == "bpsn":
        return BPSN(
            tau=config.tau,
            v_threshold=config.threshold_at(site),
            surrogate_function=config.make_surrogate(),
            direction=config.direction,
            channels=channels if config.per_channel else None,
            channel_dim=-1,  # BERT's features are channels-last: [T, B, D], repeat coding [S, B, L, D]
            learnable_threshold=config.learnable_threshold,
            backend=config.neuron_backend,
            step_mode="m",
            ternary=config.is_ternary(site),
            spike_amplitude=config.spike_amplitude,
            store_v_last=False,  # nothing reads a neuron's last potential here: one copy per call saved
        )
    return LIFNode(
        tau=float(config.tau),
        v_threshold=float(config.threshold_at(site)),
        surrogate_function=config.make_surrogate(),
        step_mode="m",
    )


def fire(node: BaseNode, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Spikes of ``node`` for ``x`` (``[T, B, C]`` or ``[S, B, L, C]``), silent at padding.

    BPSN takes the ``[T, B]`` mask itself (it zeroes padded steps before integrating);
    other neurons get zero input and have their output zeroed there. With
    ``spike_amplitude="threshold"`` a spike of channel ``c`` carries the value
    ``V_th[c]`` instead of 1: a fixed per-channel scale that the next weight matrix can
    absorb (``W diag(V_th) s``), so it still costs accumulates only."""
    if isinstance(node, BPSN) and mask.dim() == 2:
        spikes = node(x, mask=mask)
    else:
        m = mask.unsqueeze(-1).to(x.dtype)
        spikes = node(x * m) * m
    if not isinstance(node, BPSN) and getattr(node, "spike_amplitude", "unit") == "threshold":
        spikes = scale_by_threshold(spikes, node.v_threshold)
    return spikes


def reset_states(net: nn.Module) -> None:
    """``functional.reset_net(net)``, traceable by Dynamo in torch 2.11 too.

    SpikingJelly 2.0's ``MemoryModule.reset`` deep-copies a reset value that is not a tensor
    (a neuron's ``v = 0.0``), and that Dynamo cannot trace, so a compiled SNN-BERT broke its
    graph at its first line. Such immutable values are assigned here instead, for modules
    that keep SpikingJelly's own ``reset``; any other reset runs as SpikingJelly's
    ``reset_net`` would run it."""
    for module in net.modules():
        reset = getattr(type(module), "reset", None)
        if reset is None:
            continue
        initial = getattr(module, "_memories_rv", None)
        plain = reset in (MemoryModule.reset, BaseNode.reset) and isinstance(initial, dict) and all(
            value is None or isinstance(value, (bool, int, float)) for value in initial.values())
        if not plain:
            module.reset()
            continue
        for name, value in initial.items():
            setattr(module, name, value)
        if isinstance(module, BaseNode):
            module.v_seq = None  # what BaseNode.reset adds


class SequenceDropout(nn.Dropout):
    """Dropout that keeps nothing between forwards. ``x``: ``[T, ...]``.

    ``shared_over_steps``: one mask for every step, drawn on ``x[0]`` (as SpikingJelly's
    multi-step ``layer.Dropout``): right for repeat coding, whose steps are the same tokens.
    Otherwise every element independently (``nn.Dropout``): in individual coding the steps
    are different tokens, which BERT drops independently.

    SpikingJelly's ``layer.Dropout`` kept its last mask as a module state after the forward.
    Under ``torch.compile(mode="reduce-overhead")`` that mask was a CUDA graph's output,
    overwritten by the next replay, and the next forward failed reading it back (H200, torch 2.11)."""

    def __init__(self, p: float, shared_over_steps: bool = False):
        super().__init__(p)
        self.shared_over_steps = shared_over_steps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        if not self.shared_over_steps:
            return super().forward(x)
        return x * F.dropout(torch.ones_like(x[0]), self.p, training=True)

    def extra_repr(self) -> str:
        return f"p={self.p}, shared_over_steps={self.shared_over_steps}"


def make_dropout(p: float, config: SpikingBertConfig) -> SequenceDropout:
    return SequenceDropout(p, shared_over_steps=config.coding == "repeat")


class SpikingBertSelfAttention(nn.Module):
    """``attention.self``: neuron, Q/K/V projections of spikes, masked attention.

    ``hidden``: ``[T, B, D]`` or ``[S, B, L, D]`` -> context of the same shape, and the
    attention map ``[B, H, L, L]`` or ``[S, B, H, L, L]`` (softmax probabilities, or the
    masked spike scores in spiking attention) when ``need_map``, else ``None``.

    Softmax attention without a map to return runs as one fused
    ``scaled_dot_product_attention``: the same function of q, k, v and the mask as the
    explicit form, without the ``[B, H, L, L]`` tensors that training would otherwise keep
    for the backward (scores, probabilities, dropout mask: most of a step's memory at long
    L). In training it also drops attention probabilities, element by element as BERT and
    the ANN twin's SDPA do, from its own random draws. Repeat coding shares one dropout mask
    over its steps, which SDPA cannot, so it trains through the explicit form."""

    def __init__(self, config: SpikingBertConfig):
        super().__init__()
        if config.hidden_size % config.num_attention_heads:
            raise ValueError(
                f"hidden_size ({config.hidden_size}) must be a multiple of "
                f"num_attention_heads ({config.num_attention_heads})"
            )
        self.num_attention_heads = config.num_attention_heads
        self.attention_head_size = config.hidden_size // config.num_attention_heads
        self.all_head_size = config.hidden_size
        self.scale = 1.0 / math.sqrt(self.attention_head_size)
        self.spiking = config.attention == "spiking"
        self.neuron = make_neuron(config, config.hidden_size, "attention.self.neuron")
        self.query = layer.Linear(config.hidden_size, self.all_head_size, step_mode="m")
        self.key = layer.Linear(config.hidden_size, self.all_head_size, step_mode="m")
        self.value = layer.Linear(config.hidden_size, self.all_head_size, step_mode="m")
        if self.spiking:
            self.query_neuron = make_neuron(config, self.all_head_size, "attention.self.query_neuron")
            self.key_neuron = make_neuron(config, self.all_head_size, "attention.self.key_neuron")
            self.value_neuron = make_neuron(config, self.all_head_size, "attention.self.value_neuron")
        self.dropout = make_dropout(config.attention_probs_dropout_prob, config)
        # spike-fed Q and K give near-uniform softmax attention (bench/attention_focus.py): a
        # learnable factor per head, ``[H]``, that sharpens the scores (absent: BERT's scores)
        scale = config.attention_score_scale
        self.register_parameter(
            "score_scale", None if scale is None else nn.Parameter(torch.full((self.num_attention_heads,), float(scale)))
        )

    def split_heads(self, x: torch.Tensor, time_major: bool) -> torch.Tensor:
        """``[T, B, D]`` or ``[S, B, L, D]`` -> ``[B, H, L, d]`` or ``[S, B, H, L, d]``."""
        if time_major:
            x = x.transpose(0, 1)
        return x.unflatten(-1, (self.num_attention_heads, self.attention_head_size)).transpose(-3, -2)

    def merge_heads(self, x: torch.Tensor, time_major: bool) -> torch.Tensor:
        """Inverse of :meth:`split_heads`."""
        x = x.transpose(-3, -2).flatten(-2)
        return x.transpose(0, 1) if time_major else x

    def forward(
        self, hidden: torch.Tensor, mask: EncoderMask, need_map: bool = True
    ) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        spikes = fire(self.neuron, hidden, mask.neuron)
        q, k, v = self.query(spikes), self.key(spikes), self.value(spikes)
        if self.spiking:
            q = fire(self.query_neuron, q, mask.neuron)
            k = fire(self.key_neuron, k, mask.neuron)
            v = fire(self.value_neuron, v, mask.neuron)
        q, k, v = (self.split_heads(t, mask.time_major) for t in (q, k, v))
        if self.score_scale is not None:  # on q: the same scores, and the fused SDPA takes one scale only
            q = q * self.score_scale.to(q.dtype).view(-1, 1, 1)
        dropout_active = self.dropout.training and self.dropout.p > 0
        if not (self.spiking or need_map or (dropout_active and self.dropout.shared_over_steps)):
            context = nn.functional.scaled_dot_product_attention(
                q, k, v, attn_mask=mask.keys, dropout_p=self.dropout.p if dropout_active else 0.0, scale=self.scale
            )
            return self.merge_heads(context, mask.time_major), None
        scores = torch.matmul(q, k.transpose(-1, -2)) * self.scale
        if self.spiking:
            probs = scores * mask.keys
        else:
            probs = scores.masked_fill(~mask.keys, torch.finfo(scores.dtype).min).softmax(dim=-1)
        context = torch.matmul(self.dropout(probs), v)
        return self.merge_heads(context, mask.time_major), probs


class SpikingBertSelfOutput(nn.Module):
    """``attention.output``: ``LN(input + dropout(dense(N(context))))``."""

    def __init__(self, config: SpikingBertConfig):
        super().__init__()
        self.neuron = make_neuron(config, config.hidden_size, "attention.output.neuron")
        self.dense = layer.Linear(config.hidden_size, config.hidden_size, step_mode="m")
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = make_dropout(config.hidden_dropout_prob, config)

    def forward(self, hidden: torch.Tensor, input_tensor: torch.Tensor, mask: EncoderMask) -> torch.Tensor:
        hidden = self.dense(fire(self.neuron, hidden, mask.neuron))
        return self.LayerNorm(self.dropout(hidden) + input_tensor)


class SpikingBertAttention(nn.Module):
    def __init__(self, config: SpikingBertConfig):
        super().__init__()
        self.self = SpikingBertSelfAttention(config)
        self.output = SpikingBertSelfOutput(config)

    def forward(
        self, hidden: torch.Tensor, mask: EncoderMask, need_map: bool = True
    ) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        context, probs = self.self(hidden, mask, need_map)
        return self.output(context, hidden, mask), probs


class SpikingBertIntermediate(nn.Module):
    """``intermediate``: spikes ``N_act(dense(N(h)))``, ``[..., D]`` -> ``[..., I]``.

    ``intermediate_act_fn`` (BERT's GELU slot) is a neuron, so ``output.dense`` sees spikes."""

    def __init__(self, config: SpikingBertConfig):
        super().__init__()
        self.neuron = make_neuron(config, config.hidden_size, "intermediate.neuron")
        self.dense = layer.Linear(config.hidden_size, config.intermediate_size, step_mode="m")
        self.intermediate_act_fn = make_neuron(config, config.intermediate_size, "intermediate.intermediate_act_fn")

    def forward(self, hidden: torch.Tensor, mask: EncoderMask) -> torch.Tensor:
        hidden = self.dense(fire(self.neuron, hidden, mask.neuron))
        return fire(self.intermediate_act_fn, hidden, mask.neuron)


class SpikingBertOutput(nn.Module):
    """``output``: ``LN(input + dropout(dense(spikes)))``."""

    def __init__(self, config: SpikingBertConfig):
        super().__init__()
        self.dense = layer.Linear(config.intermediate_size, config.hidden_size, step_mode="m")
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = make_dropout(config.hidden_dropout_prob, config)

    def forward(self, spikes: torch.Tensor, input_tensor: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(spikes)) + input_tensor)


class SpikingBertLayer(nn.Module):
    def __init__(self, config: SpikingBertConfig):
        super().__init__()
        self.attention = SpikingBertAttention(config)
        self.intermediate = SpikingBertIntermediate(config)
        self.output = SpikingBertOutput(config)

    def forward(
        self, hidden: torch.Tensor, mask: EncoderMask, need_map: bool = True
    ) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """``need_map``: return the attention map (else ``None``, and a faster attention)."""
        attention_output, probs = self.attention(hidden, mask, need_map)
        return self.output(self.intermediate(attention_output, mask), attention_output), probs


class SpikingBertEncoder(nn.Module):
    def __init__(self, config: SpikingBertConfig):
        super().__init__()
        self.layer = nn.ModuleList(SpikingBertLayer(config) for _ in range(config.num_hidden_layers))

    def forward(
        self, hidden: torch.Tensor, mask: EncoderMask, output_hidden_states: bool, output_attentions: bool
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
        """Returns the last hidden state, every layer's input and output (when asked) and
        every layer's attention map (when asked), all in the encoder's layout."""
        states, maps = (hidden,), ()
        for block in self.layer:
            hidden, probs = block(hidden, mask, need_map=output_attentions)
            states += (hidden,) if output_hidden_states else ()
            maps += (probs,) if output_attentions else ()
        return hidden, states if output_hidden_states else (), maps


class SpikingBertPreTrainedModel(PreTrainedModel):
    """Weight init and loading shared by the SNN-BERT models; ``base_model_prefix="bert"``
    lets checkpoints with and without the ``bert.`` prefix load into either model."""

    config_class = SpikingBertConfig
    config: SpikingBertConfig
    base_model_prefix = "bert"
    supports_gradient_checkpointing = False
    _no_split_modules = ["SpikingBertLayer", "BertEmbeddings"]

    def _init_weights(self, module: nn.Module) -> None:
        """BERT's initialisation, BERT's embedding buffers and BPSN's initial values. Written
        with the init functions of :mod:`sj_bert._compat`, which leave alone every tensor
        that ``from_pretrained`` loaded (transformers 5 calls this on partly loaded modules)."""
        super()._init_weights(module)  # Linear, Embedding, LayerNorm as in BERT
        if isinstance(module, BertEmbeddings):
            # non-persistent buffers: never in a checkpoint, so always filled here; under
            # transformers 5 they are otherwise left uninitialised on the meta device
            init.copy_(module.position_ids, torch.arange(module.position_ids.shape[-1]).expand((1, -1)))
            init.zeros_(module.token_type_ids)
        elif isinstance(module, SpikingBertSelfAttention) and module.score_scale is not None:
            # a BERT (or an SNN-BERT saved without the factor) has no score_scale: its start value
            init.constant_(module.score_scale, float(self.config.attention_score_scale))
        elif isinstance(module, BPSN):
            # a BERT checkpoint has no neuron keys: those start at BPSN's own initial values
            for name, value in module.initial_values().items():
                init.constant_(getattr(module, name), value)

    def _check_inputs(
        self,
        input_ids: Optional[torch.Tensor],
        attention_mask: Optional[torch.Tensor],
        token_type_ids: Optional[torch.Tensor],
        inputs_embeds: Optional[torch.Tensor],
        position_ids: Optional[torch.Tensor] = None,
        extra_checks: Sequence[IdRange] = (),
    ) -> tuple[int, int]:
        """Clear errors for inputs BERT would mis-handle silently or deep inside; ``(B, L)``.

        The checks of values (ids in range, ``extra_checks`` such as the labels', padding
        without a mask) read them back to the host once for all: one sync on a GPU."""
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("give exactly one of input_ids [batch, length] and inputs_embeds [batch, length, hidden]")
        for arg, tensor in (("input_ids", input_ids), ("attention_mask", attention_mask),
                            ("token_type_ids", token_type_ids), ("inputs_embeds", inputs_embeds)):
            if tensor is not None and not isinstance(tensor, torch.Tensor):
                raise TypeError(f"{arg} must be a torch.Tensor (tokenizer: return_tensors='pt'), got {type(tensor).__name__}")
        if inputs_embeds is not None and inputs_embeds.shape[-1:] != (self.config.hidden_size,):
            raise ValueError(
                f"inputs_embeds must be [batch, length, hidden_size={self.config.hidden_size}], "
                f"got shape {tuple(inputs_embeds.shape)}"
            )
        name = "input_ids" if input_ids is not None else "inputs_embeds"
        shape = tuple(input_ids.shape) if input_ids is not None else tuple(inputs_embeds.shape[:-1])
        if len(shape) != 2:
            full = tuple((input_ids if input_ids is not None else inputs_embeds).shape)
            raise ValueError(f"{name} must be batched, [batch, length], got shape {full}")
        batch, length = shape
        if batch == 0 or length == 0:
            raise ValueError(
                f"{name} is empty (batch={batch}, length={length}); expected at least one "
                "sequence of at least one token"
            )
        limit = self.config.max_position_embeddings
        if length > limit:
            raise ValueError(
                f"{name} has length {length} but max_position_embeddings is {limit}; truncate "
                f"the input (tokenizer: truncation=True, max_length={limit})"
            )
        for arg, tensor in (("attention_mask", attention_mask), ("token_type_ids", token_type_ids)):
            if tensor is not None and tuple(tensor.shape) != shape:
                raise ValueError(
                    f"{arg} must have the shape of {name}, [batch, length] = {list(shape)}, "
                    f"got {list(tensor.shape)}"
                )
        if position_ids is not None and position_ids.shape[-1] != length:
            raise ValueError(f"position_ids must have length {length} (of {name}), got shape {tuple(position_ids.shape)}")
        config = self.config
        ranges = []
        for arg, tensor, size, field in (
            ("input_ids", input_ids, config.vocab_size, "vocab_size"),
            ("token_type_ids", token_type_ids, config.type_vocab_size, "type_vocab_size"),
            ("position_ids", position_ids, config.max_position_embeddings, "max_position_embeddings"),
        ):
            if tensor is None:
                continue
            if tensor.dtype.is_floating_point or tensor.dtype.is_complex or tensor.dtype == torch.bool:
                raise TypeError(f"{arg} must hold integer ids (torch.long), got {tensor.dtype}")
            # ids outside their embedding table fail deep in torch ("index out of range in
            # self"), on a GPU as a device-side assert that ends the process's CUDA use
            ranges.append(IdRange(arg, tensor, size, field))
        # values are read only eagerly: a compiled graph cannot branch on data
        if torch.compiler.is_compiling():
            return batch, length
        look_for_padding = input_ids is not None and attention_mask is None and config.pad_token_id is not None
        padding = (input_ids, config.pad_token_id) if look_for_padding else None
        if check_id_ranges(ranges + list(extra_checks), padding):
            # as BERT warns: without the mask the padding is read as text, and each
            # sentence's logits depend on what it is batched with
            warnings.warn(
                f"input_ids holds padding (pad_token_id={config.pad_token_id}) but no attention_mask "
                "was given, so the padding is read as tokens and the logits differ from each "
                "sentence's alone; pass the tokenizer's attention_mask",
                UserWarning,
                stacklevel=4,
            )
        return batch, length


class SpikingBertModel(SpikingBertPreTrainedModel):
    """SNN-BERT encoder with BERT's embeddings and pooler.

    ``input_ids`` ``[B, L]`` -> ``last_hidden_state`` ``[B, L, D]`` (repeat coding: the mean
    over steps), ``pooler_output`` ``[B, D]``; ``hidden_states`` (``num_hidden_layers + 1``
    of ``[B, L, D]``) and ``attentions`` (``[B, H, L, L]``) on request, in BERT's layout."""

    def __init__(self, config: SpikingBertConfig, add_pooling_layer: bool = True):
        super().__init__(config)
        config.validate_spiking()
        if getattr(config, "position_embedding_type", "absolute") != "absolute":
            raise ValueError(
                f"SNN-BERT supports position_embedding_type='absolute' only, got {config.position_embedding_type!r}"
            )
        self.embeddings = BertEmbeddings(config)
        self.encoder = SpikingBertEncoder(config)
        self.pooler = BertPooler(config) if add_pooling_layer else None
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings.word_embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embeddings.word_embeddings = value

    def to_encoder(self, embeddings: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, EncoderMask]:
        """``[B, L, D]`` embeddings and ``[B, L]`` bool mask -> encoder input and masks."""
        keys = attention_mask[:, None, None, :]
        if self.config.coding == "individual":
            return embeddings.transpose(0, 1), EncoderMask(attention_mask.t(), keys, True)
        steps = self.config.time_steps
        return embeddings.unsqueeze(0).expand(steps, *embeddings.shape), EncoderMask(attention_mask[None], keys, False)

    def from_encoder(self, x: torch.Tensor) -> torch.Tensor:
        """Encoder layout back to BERT's: ``[T, B, ...]`` -> ``[B, T, ...]``; repeat coding
        averages over the steps, ``[S, B, ...]`` -> ``[B, ...]``."""
        return x.transpose(0, 1) if self.config.coding == "individual" else x.mean(dim=0)

    def pooler_input(self, sequence_output: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """``[B, L, D]`` -> what BERT's pooler reads at position 0: the tokens themselves
        (``pooling="cls"``) or ``[B, 1, D]``, the mean over real tokens (``"mean"``)."""
        if self.config.pooling == "cls":
            return sequence_output
        return masked_mean(sequence_output, attention_mask).unsqueeze(1)

    def forward(
        self,
        input_ids: Optional[torch.Tensor] = None,
        attention_mask: Optional[torch.Tensor] = None,
        token_type_ids: Optional[torch.Tensor] = None,
        position_ids: Optional[torch.Tensor] = None,
        inputs_embeds: Optional[torch.Tensor] = None,
        output_attentions: Optional[bool] = None,
        output_hidden_states: Optional[bool] = None,
        return_dict: Optional[bool] = None,
        extra_checks: Sequence[IdRange] = (),
        **kwargs,
    ) -> Union[tuple, BaseModelOutputWithPooling]:
        """``extra_checks``: value checks of a head's inputs (its labels), read back with the
        ids' own in one sync."""
        batch, length = self._check_inputs(
            input_ids, attention_mask, token_type_ids, inputs_embeds, position_ids, extra_checks
        )
        output_attentions = self.config.output_attentions if output_attentions is None else output_attentions
        output_hidden_states = (
            self.config.output_hidden_states if output_hidden_states is None else output_hidden_states
        )
        return_dict = self.config.return_dict if return_dict is None else return_dict
        reset_states(self)  # stateful neurons start fresh every batch
        embeddings = self.embeddings(
            input_ids=input_ids, token_type_ids=token_type_ids, position_ids=position_ids, inputs_embeds=inputs_embeds
        )
        if attention_mask is None:
            attention_mask = torch.ones(batch, length, dtype=torch.bool, device=embeddings.device)
        hidden, mask = self.to_encoder(embeddings, attention_mask.bool())
        hidden, states, maps = self.encoder(hidden, mask, output_hidden_states, output_attentions)
        sequence_output = self.from_encoder(hidden)
        pooled_output = self.pooler(self.pooler_input(sequence_output, attention_mask)) if self.pooler is not None else None
        hidden_states = (embeddings,) + tuple(self.from_encoder(h) for h in states[1:]) if states else None
        attentions = tuple(p if mask.time_major else p.mean(dim=0) for p in maps) if maps else None
        if not return_dict:
            return tuple(v for v in (sequence_output, pooled_output, hidden_states, attentions) if v is not None)
        return BaseModelOutputWithPooling(
            last_hidden_state=sequence_output,
            pooler_output=pooled_output,
            hidden_states=hidden_states,
            attentions=attentions,
        )


class SpikingBertForSequenceClassification(SpikingBertPreTrainedModel):
    """SNN-BERT with BERT's sequence head: ``dropout`` + ``classifier`` on the pooled output.

    Classification, regression (``num_labels == 1``) and multi-label classification, chosen
    by ``config.problem_type`` as in ``BertForSequenceClassification``. Load an ANN BERT::

        >>> model = SpikingBertForSequenceClassification.from_pretrained(
        ...     sj_bert.offline_bert(), coding="individual", num_labels=2)
    """

    def __init__(self, config: SpikingBertConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.bert = SpikingBertModel(config)
        p = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        self.dropout = SequenceDropout(p)  # on the pooled output: [B, hidden], no steps
        self.classifier = layer.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def _label_checks(self, labels: Optional[torch.Tensor]) -> tuple[IdRange, ...]:
        """The value check of class labels, read back with the input ids' (one sync), or
        none. Clear errors for labels the loss would reject deep in torch ("Target 5 is out
        of bounds"); -100 is the loss's ignore_index, as in BERT."""
        if labels is None:
            return ()
        if not isinstance(labels, torch.Tensor):
            raise TypeError(f"labels must be a torch.Tensor, got {type(labels).__name__}")
        classes = self.config.num_labels
        if classes == 1 or labels.is_floating_point():
            return ()
        return (IdRange("labels", labels, classes, "num_labels", noun="class", ignore=-100),)

    @staticmethod
    def _check_label_shape(labels: torch.Tensor, batch: int) -> None:
        if labels.dim() == 0 or labels.shape[0] != batch:
            raise ValueError(f"labels must have one entry per sample, [batch={batch}] or [batch, num_labels], "
                             f"got shape {tuple(labels.shape)}")

    def forward(
        self,
        input_ids: Optional[torch.Tensor] = None,
        attention_mask: Optional[torch.Tensor] = None,
        token_type_ids: Optional[torch.Tensor] = None,
        position_ids: Optional[torch.Tensor] = None,
        inputs_embeds: Optional[torch.Tensor] = None,
        labels: Optional[torch.Tensor] = None,
        output_attentions: Optional[bool] = None,
        output_hidden_states: Optional[bool] = None,
        return_dict: Optional[bool] = None,
        **kwargs,
    ) -> Union[tuple, SequenceClassifierOutput]:
        """``labels``: ``[B]`` class ids, ``[B]`` floats (regression) or ``[B, num_labels]``
        multi-hot floats; ``logits``: ``[B, num_labels]``."""
        return_dict = self.config.return_dict if return_dict is None else return_dict
        reset_states(self)
        outputs = self.bert(
            input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
            extra_checks=self._label_checks(labels),
        )
        logits = self.classifier(self.dropout(outputs.pooler_output))
        loss = None
        if labels is not None:
            self._check_label_shape(labels, logits.shape[0])
            loss = self.loss_function(labels, logits, self.config)
        if not return_dict:
            extra = tuple(v for v in (outputs.hidden_states, outputs.attentions) if v is not None)
            return ((loss,) if loss is not None else ()) + (logits,) + extra
        return SequenceClassifierOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )
