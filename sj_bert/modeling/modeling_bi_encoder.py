"""Bi-encoders for sentence pairs (Sentence-BERT): each sentence encoded alone, then compared.

A cross-encoder (``*ForSequenceClassification``) reads ``[CLS] a [SEP] b [SEP]`` and compares
the two sentences token by token inside attention; a bi-encoder encodes ``a`` and ``b`` apart,
mean-pools each over its real tokens (``u``, ``v``: ``[B, D]``) and compares only those:

- classification (MRPC, RTE, ...): a linear ``classifier`` on ``[u, v, |u - v|, u * v]``
  (``[B, 4 D]``), trained with cross-entropy (Sentence-BERT's classification objective);
- regression (STS-B, ``num_labels == 1``): the score is ``similarity_scale * cos(u, v)``, trained
  with its MSE to the label; no head. That is Sentence-BERT's ``CosineSimilarityLoss`` (the MSE
  of ``cos(u, v)`` to ``label / similarity_scale``) times ``similarity_scale ** 2``, which
  AdamW's steps do not depend on (up to its epsilon), in the label's units as BERT's regression
  loss is: so ``finetune.py --teacher`` weighs its distillation term (the MSE to the teacher's
  score) against it as for a cross-encoder.

Why SNN-BERT needs it: converted from MiniLM, a spiking encoder keeps what a sentence means
(STS-B Pearson 0.605 with no training, each sentence encoded alone) but as a cross-encoder it
does not learn to compare two sentences through spike-fed attention (0.134 after 3 GPU epochs);
docs/accuracy.md, "The pair tasks are lost in the comparison, not in the sentence".

Two classes, one per encoder, as transformers pairs ``BertForSequenceClassification`` with
:class:`~sj_bert.SpikingBertForSequenceClassification`: :class:`BertBiEncoder` (the ANN twin)
and :class:`SpikingBertBiEncoder`. Each has its own ``model_type`` (so the Auto classes, the zoo
and ``from_pretrained`` load a bi-encoder as one) and keeps the encoder as ``bert``, so its
state-dict keys are every other checkpoint's: ``bert.embeddings...``, ``bert.encoder...``, plus
``classifier.weight``/``classifier.bias``. The config is the encoder's own config class (a
:class:`~transformers.BertConfig` or :class:`~sj_bert.SpikingBertConfig` subclass) with
``similarity_scale``: a composite config holding the encoder's would need transformers'
sub-config machinery, which changed between 4.57 and 5.

Both sentences run through the encoder as one batch of ``2 B`` sentences, each padded to the
longer side's length: padding is masked (BPSN never fires there, attention never reads it), so
a sentence's embedding is the one it gets alone, and one encoder call costs half the launches.

Example::

    >>> model = SpikingBertBiEncoder.from_pretrained(sj_bert.offline_bert(), num_labels=1)
    >>> a = tok(["A man is playing a guitar."], return_tensors="pt")
    >>> b = tok(["Someone plays an instrument."], return_tensors="pt")
    >>> model(input_ids_a=a.input_ids, attention_mask_a=a.attention_mask,
    ...       input_ids_b=b.input_ids, attention_mask_b=b.attention_mask).logits  # [1, 1], in [-5, 5]
"""

from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers import BertConfig, BertModel, BertPreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput

from .configuration_spiking_bert import MODEL_TYPE, SpikingBertConfig
from .modeling_spiking_bert import IdRange, SpikingBertModel, SpikingBertPreTrainedModel, check_id_ranges, masked_mean

__all__ = [
    "BertBiEncoderConfig", "SpikingBertBiEncoderConfig", "BertBiEncoder", "SpikingBertBiEncoder",
    "BI_ENCODER_MODEL_TYPES", "PAIR_INPUTS", "pair_encoding", "stack_pair", "real_token_mask",
]

#: the inputs of a bi-encoder: each sentence tokenized alone
PAIR_INPUTS = ("input_ids_a", "attention_mask_a", "input_ids_b", "attention_mask_b")
#: what ``similarity_scale`` defaults to: STS-B's scores run from 0 to 5
DEFAULT_SIMILARITY_SCALE = 5.0


class _BiEncoderConfigMixin:
    """Loading an encoder checkpoint of the family (``_encoder_types``) into a bi-encoder's
    config without transformers' model-type warning: building a bi-encoder from one is
    intended. (Each config writes its own ``__init__``: transformers 5 builds a config's
    ``__init__`` from its class, and one inherited from a mixin is not called.)"""

    _encoder_types: tuple[str, ...] = ()

    @classmethod
    def get_config_dict(cls, pretrained_model_name_or_path, **kwargs):
        config_dict, kwargs = super().get_config_dict(pretrained_model_name_or_path, **kwargs)
        if config_dict.get("model_type") in cls._encoder_types:
            config_dict = {**config_dict, "model_type": cls.model_type}
        return config_dict, kwargs


class BertBiEncoderConfig(_BiEncoderConfigMixin, BertConfig):
    """A :class:`~transformers.BertConfig` plus ``similarity_scale`` (regression: the score is
    ``similarity_scale * cos(u, v)``). A BERT ``config.json`` loads into it unchanged."""

    model_type = "bert_bi_encoder"
    _encoder_types = ("bert",)

    def __init__(self, similarity_scale: float = DEFAULT_SIMILARITY_SCALE, **kwargs):
        kwargs.pop("model_type", None)  # an encoder's config.json names its own type
        super().__init__(**kwargs)
        self.similarity_scale = _check_scale(similarity_scale)


class SpikingBertBiEncoderConfig(_BiEncoderConfigMixin, SpikingBertConfig):
    """A :class:`~sj_bert.SpikingBertConfig` plus ``similarity_scale``. A BERT or SNN-BERT
    ``config.json`` loads into it unchanged (an ANN BERT is converted, as by
    ``SpikingBertForSequenceClassification.from_pretrained``)."""

    model_type = "spiking_bert_bi_encoder"
    _encoder_types = ("bert", MODEL_TYPE)

    def __init__(self, similarity_scale: float = DEFAULT_SIMILARITY_SCALE, **kwargs):
        kwargs.pop("model_type", None)
        super().__init__(**kwargs)
        self.similarity_scale = _check_scale(similarity_scale)


def _check_scale(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
        raise ValueError(f"similarity_scale must be a positive number (STS-B: 5.0), got {value!r}")
    return float(value)


BI_ENCODER_MODEL_TYPES = (BertBiEncoderConfig.model_type, SpikingBertBiEncoderConfig.model_type)


def pair_encoding(model_or_config) -> str:
    """``"bi"`` for a bi-encoder (model or config), else ``"cross"`` (``sj_bert.glue.PAIR_ENCODINGS``)."""
    config = getattr(model_or_config, "config", model_or_config)
    return "bi" if getattr(config, "model_type", None) in BI_ENCODER_MODEL_TYPES else "cross"


def _check_side(name: str, tensor, integer: bool) -> None:
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor (tokenizer: return_tensors='pt'), got {type(tensor).__name__}")
    if tensor.dim() != 2 or tensor.numel() == 0:
        raise ValueError(f"{name} must be [batch, length] and non-empty, got shape {tuple(tensor.shape)}")
    if integer and (tensor.dtype.is_floating_point or tensor.dtype.is_complex or tensor.dtype == torch.bool):
        raise TypeError(f"{name} must hold integer token ids (torch.long), got {tensor.dtype}")


def stack_pair(
    input_ids_a: torch.Tensor,
    attention_mask_a: Optional[torch.Tensor],
    input_ids_b: torch.Tensor,
    attention_mask_b: Optional[torch.Tensor],
    pad_token_id: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The two sides of a batch of pairs as one batch of sentences: ``[B, La]`` and ``[B, Lb]``
    -> ``input_ids`` and ``attention_mask`` ``[2 B, max(La, Lb)]`` (rows ``:B`` the first
    sentences, ``B:`` the second), the shorter side padded with ``pad_token_id`` and mask 0.
    A missing mask means every token is real.

    :raises TypeError, ValueError: naming the argument, for a non-tensor, a shape other than
        ``[batch, length]``, float ids, or sides of different batch sizes
    """
    sides = []
    for side, ids, mask in (("a", input_ids_a, attention_mask_a), ("b", input_ids_b, attention_mask_b)):
        _check_side(f"input_ids_{side}", ids, integer=True)
        if mask is None:
            mask = torch.ones_like(ids)
        _check_side(f"attention_mask_{side}", mask, integer=False)
        if mask.shape != ids.shape:
            raise ValueError(f"attention_mask_{side} must have the shape of input_ids_{side}, {list(ids.shape)}, "
                             f"got {list(mask.shape)}")
        sides.append((ids, mask))
    (ids_a, mask_a), (ids_b, mask_b) = sides
    if ids_a.shape[0] != ids_b.shape[0]:
        raise ValueError(f"input_ids_a and input_ids_b must hold the same number of pairs, got batches of "
                         f"{ids_a.shape[0]} and {ids_b.shape[0]}")
    length = max(ids_a.shape[1], ids_b.shape[1])

    def pad(x: torch.Tensor, value: int) -> torch.Tensor:
        return F.pad(x, (0, length - x.shape[1]), value=value)

    input_ids = torch.cat([pad(ids_a, pad_token_id), pad(ids_b, pad_token_id)])
    attention_mask = torch.cat([pad(mask_a.to(ids_a.dtype), 0), pad(mask_b.to(ids_a.dtype), 0)])
    return input_ids, attention_mask


def real_token_mask(batch: dict) -> torch.Tensor:
    """``[B, L]`` (cross-encoder batch) or ``[2 B, L]`` (bi-encoder batch, as :func:`stack_pair`
    stacks it): the mask of the sentences the encoder runs, nonzero at real tokens. What the
    encoder's hidden states, attention maps and neurons are laid out by."""
    if "attention_mask" in batch:
        return batch["attention_mask"]
    return stack_pair(*(batch.get(name) for name in PAIR_INPUTS))[1]


class _BiEncoderMixin:
    """The pooling, head and loss shared by both bi-encoders; ``self.bert`` is the encoder."""

    def _build_head(self, config) -> None:
        self.num_labels = config.num_labels
        # regression compares by cosine alone; classification reads [u, v, |u - v|, u * v]
        self.classifier = nn.Linear(4 * config.hidden_size, config.num_labels) if config.num_labels > 1 else None

    def encode(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Sentence embeddings: ``[N, L]`` -> ``[N, D]``, the encoder's last hidden state
        mean-pooled over real tokens (what the head compares)."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask, return_dict=True).last_hidden_state
        return masked_mean(hidden, attention_mask)

    def _label_checks(self, labels, batch: int) -> tuple[IdRange, ...]:
        """Clear errors for labels of the wrong type or shape, and the value check of class
        labels (read back with the encoder's input checks where it has them: one sync)."""
        if labels is None:
            return ()
        if not isinstance(labels, torch.Tensor):
            raise TypeError(f"labels must be a torch.Tensor, got {type(labels).__name__}")
        if labels.shape != (batch,):
            raise ValueError(f"labels must be [batch={batch}], one per pair, got shape {tuple(labels.shape)}")
        if self.num_labels == 1:
            return ()
        if labels.is_floating_point():
            raise TypeError(f"labels must be class ids (torch.long) for {self.num_labels} labels, got {labels.dtype}")
        # -100: cross-entropy's ignore_index, as in BERT
        return (IdRange("labels", labels, self.num_labels, "num_labels", noun="class", ignore=-100),)

    def _encode_stacked(self, input_ids, attention_mask, label_checks, **outputs):
        """The encoder's outputs for the stacked sentences, after the labels' value check
        (BERT has no hook for it: read here)."""
        check_id_ranges(label_checks)
        return self.bert(input_ids=input_ids, attention_mask=attention_mask, return_dict=True, **outputs)

    def forward(
        self,
        input_ids_a: Optional[torch.Tensor] = None,
        attention_mask_a: Optional[torch.Tensor] = None,
        input_ids_b: Optional[torch.Tensor] = None,
        attention_mask_b: Optional[torch.Tensor] = None,
        labels: Optional[torch.Tensor] = None,
        output_attentions: Optional[bool] = None,
        output_hidden_states: Optional[bool] = None,
        return_dict: Optional[bool] = None,
        **kwargs,
    ):
        """``input_ids_a``/``_b`` ``[B, La]``/``[B, Lb]``: the first and second sentences,
        each tokenized alone (``sj_bert.glue.tokenize(..., pair_encoding="bi")``); ``labels``
        ``[B]``: class ids, or scores in ``[0, similarity_scale]`` for regression.
        ``logits``: ``[B, num_labels]``; ``hidden_states``/``attentions`` on request, those of
        the ``2 B`` sentences as :func:`stack_pair` stacks them."""
        if "input_ids" in kwargs or input_ids_a is None or input_ids_b is None:
            given = "input_ids" if "input_ids" in kwargs else "no input_ids_a/input_ids_b"
            raise ValueError(
                f"a bi-encoder takes each sentence tokenized alone, input_ids_a and input_ids_b (with "
                f"attention_mask_a/_b: sj_bert.glue.tokenize(..., pair_encoding='bi')); got {given}")
        return_dict = self.config.return_dict if return_dict is None else return_dict
        input_ids, attention_mask = stack_pair(input_ids_a, attention_mask_a, input_ids_b, attention_mask_b,
                                               self.config.pad_token_id or 0)
        batch = input_ids_a.shape[0]
        outputs = self._encode_stacked(input_ids, attention_mask, self._label_checks(labels, batch),
                                       output_attentions=output_attentions, output_hidden_states=output_hidden_states)
        pooled = masked_mean(outputs.last_hidden_state, attention_mask)  # [2B, D]
        u, v = pooled[:batch], pooled[batch:]
        loss = None
        if self.classifier is None:
            cosine = F.cosine_similarity(u, v, dim=-1)  # [B]
            logits = (self.config.similarity_scale * cosine).unsqueeze(-1)
            if labels is not None:
                loss = F.mse_loss(logits[:, 0].float(), labels.float())
        else:
            logits = self.classifier(torch.cat([u, v, (u - v).abs(), u * v], dim=-1))
            if labels is not None:
                loss = F.cross_entropy(logits.float(), labels)
        if not return_dict:
            extra = tuple(x for x in (outputs.hidden_states, outputs.attentions) if x is not None)
            return ((loss,) if loss is not None else ()) + (logits,) + extra
        return SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states,
                                        attentions=outputs.attentions)


class BertBiEncoder(_BiEncoderMixin, BertPreTrainedModel):
    """The ANN bi-encoder: BERT (``bert``, no pooler) and the pair head; the twin of
    :class:`SpikingBertBiEncoder`. Load a BERT checkpoint with ``from_pretrained(path, num_labels=...)``."""

    config_class = BertBiEncoderConfig

    def __init__(self, config: BertBiEncoderConfig):
        super().__init__(config)
        self.bert = BertModel(config, add_pooling_layer=False)
        self._build_head(config)
        self.post_init()


class SpikingBertBiEncoder(_BiEncoderMixin, SpikingBertPreTrainedModel):
    """The SNN-BERT bi-encoder: :class:`~sj_bert.SpikingBertModel` (``bert``, no pooler) and
    the pair head. ``from_pretrained`` takes a BERT (converted, with the spiking settings given
    as keywords) or an SNN-BERT checkpoint, as ``SpikingBertForSequenceClassification`` does."""

    config_class = SpikingBertBiEncoderConfig

    def __init__(self, config: SpikingBertBiEncoderConfig):
        super().__init__(config)
        self.bert = SpikingBertModel(config, add_pooling_layer=False)
        self._build_head(config)
        self.post_init()

    def _encode_stacked(self, input_ids, attention_mask, label_checks, **outputs):
        # the labels' value check read back with the ids' own, in one sync (as the cross-encoder does)
        return self.bert(input_ids=input_ids, attention_mask=attention_mask, return_dict=True,
                         extra_checks=label_checks, **outputs)
