"""Knowledge distillation from a fine-tuned ANN teacher: the loss terms ``finetune.py`` adds.

- **logits** (``--teacher``, ``--kd_alpha``, ``--kd_temperature``): soft targets, blended with
  the hard label loss as ``(1 - alpha) hard + alpha kd``;
- **hidden states** (``--kd_hidden_weight``): the MSE of every encoder layer's output at real
  tokens, as TinyBERT, SpikingBERT and SpikeBERT distil;
- **attention maps** (``--kd_attention_weight``): the KL divergence from the teacher's softmax
  attention to the student's, per head and real query token, as MiniLM's self-attention
  distillation (TinyBERT takes the MSE of the scores instead);
- **sentence embeddings** (``distill_base.py --kd_pooled_weight``): ``1 - cos`` between the
  student's and the teacher's last layer, each mean-pooled over real tokens, the embedding a
  bi-encoder compares (Sentence-BERT's pooling; Reimers and Gurevych's embedding distillation
  takes their MSE).

The two layer-by-layer terms pair layer ``i`` of the student with layer ``i`` of the teacher,
so they need a teacher of the student's depth (and width, or head count): its ANN twin. Like
``_common``, this module lives beside the scripts that import it.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import torch
import torch.nn.functional as F

from sj_bert.modeling.modeling_spiking_bert import masked_mean

__all__ = [
    "distillation_loss", "hidden_distillation_loss", "attention_distillation_loss", "pooled_distillation_loss",
    "pooled_cosines", "check_layer_teacher",
    "check_layer_terms", "LossTerms", "combined_loss",
]

# Below this a probability counts as 0 in the attention term's logarithms: masked keys hold
# exactly 0 (softmax of the dtype's minimum) and contribute nothing, as 0 log 0 = 0.
_PROBABILITY_FLOOR = 1e-12


def distillation_loss(student_logits, teacher_logits, temperature: float, regression: bool):
    """Soft-target loss: ``T^2 KL(softmax(t/T) || softmax(s/T))`` per sample; MSE to the teacher for regression."""
    if regression:
        return F.mse_loss(student_logits.squeeze(-1), teacher_logits.squeeze(-1).to(student_logits.dtype))
    t = temperature
    return F.kl_div(
        F.log_softmax(student_logits / t, dim=-1),
        F.log_softmax(teacher_logits.to(student_logits.dtype) / t, dim=-1),
        reduction="batchmean",
        log_target=True,
    ) * (t * t)


def hidden_distillation_loss(student_states, teacher_states, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean over encoder layers of the MSE between student and teacher layer outputs at real
    tokens. ``*_states``: ``hidden_states`` of BERT-style outputs (embeddings first, then one
    ``[B, L, C]`` per layer; the embeddings are skipped); ``attention_mask``: ``[B, L]``."""
    mask = attention_mask.unsqueeze(-1).float()  # [B, L, 1]; fp32 whatever autocast computed in
    count = mask.sum() * student_states[-1].shape[-1]
    per_layer = [((s.float() - t.float()).square() * mask).sum() / count
                 for s, t in zip(student_states[1:], teacher_states[1:])]
    return torch.stack(per_layer).mean()


def attention_distillation_loss(student_maps, teacher_maps, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean over encoder layers of ``KL(teacher || student)`` between attention distributions,
    averaged over heads and real query tokens. ``*_maps``: ``attentions`` of BERT-style outputs,
    one ``[B, H, L, L]`` softmax map per layer (rows: queries, columns: keys); ``attention_mask``:
    ``[B, L]``. Padded keys hold 0 in both maps and add nothing; padded query rows are skipped."""
    rows = attention_mask[:, None, :].float()  # [B, 1, L]: real query tokens, fp32 whatever autocast did
    per_layer = []
    for s, t in zip(student_maps, teacher_maps):
        s, t = s.float(), t.float()
        kl = (t * (t.clamp_min(_PROBABILITY_FLOOR).log() - s.clamp_min(_PROBABILITY_FLOOR).log())).sum(-1)  # [B, H, L]
        per_layer.append((kl * rows).sum() / (rows.sum() * s.shape[1]))
    return torch.stack(per_layer).mean()


def pooled_cosines(student_last, teacher_last, attention_mask: torch.Tensor) -> torch.Tensor:
    """``[B]`` cosine between each text's student and teacher sentence embeddings: the last
    layer's output ``[B, L, C]`` mean-pooled over the real tokens of ``attention_mask`` ``[B, L]``
    (in fp32, whatever autocast computed in)."""
    student = masked_mean(student_last.float(), attention_mask)  # [B, C]
    teacher = masked_mean(teacher_last.float(), attention_mask)
    return F.cosine_similarity(student, teacher, dim=-1)


def pooled_distillation_loss(student_last, teacher_last, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean over texts of ``1 - cos`` between student and teacher sentence embeddings
    (``pooled_cosines``): 0 where every embedding points the teacher's way, whatever its length."""
    return (1.0 - pooled_cosines(student_last, teacher_last, attention_mask)).mean()


def check_layer_teacher(student, teacher, teacher_name: str, flag: str, fields: Sequence[str]) -> None:
    """A layer-by-layer term (``flag``) pairs the student's layers with the teacher's, one to one
    in each of ``fields`` (config names): a clear error where the two differ."""
    for field in fields:
        mine, theirs = getattr(student.config, field), getattr(teacher.config, field)
        if mine != theirs:
            raise ValueError(
                f"{flag} pairs the student's layers with the teacher's, but --teacher {teacher_name} "
                f"has {field}={theirs} and the student {mine}; use the student's ANN twin as teacher"
            )


def check_layer_terms(student, teacher, teacher_name: str, hidden: bool, maps: bool) -> None:
    """The checks of the layer-by-layer terms that are on (``hidden``: ``--kd_hidden_weight``,
    ``maps``: ``--kd_attention_weight``): a teacher of the student's depth and width or head
    count, and a student whose attention maps are softmax maps."""
    if hidden:
        check_layer_teacher(student, teacher, teacher_name, "--kd_hidden_weight", ("num_hidden_layers", "hidden_size"))
    if maps:
        check_layer_teacher(student, teacher, teacher_name, "--kd_attention_weight",
                            ("num_hidden_layers", "num_attention_heads"))
        if getattr(student.config, "attention", "softmax") != "softmax":
            raise ValueError(
                f"--kd_attention_weight distils softmax attention maps, but the student has "
                f"attention={student.config.attention!r}, whose maps are spike scores; use --attention softmax"
            )


class LossTerms(NamedTuple):
    """The parts of one batch's loss, each a scalar tensor (0 where the term is off). The
    last is not distillation: the firing rate that ``finetune.py --spike_rate_weight`` adds."""

    hard: torch.Tensor
    kd: torch.Tensor
    hidden: torch.Tensor
    attention: torch.Tensor
    spike_rate: torch.Tensor

    @classmethod
    def hard_only(cls, hard: torch.Tensor) -> "LossTerms":
        """The terms of a batch trained on its labels alone."""
        zero = torch.zeros_like(hard)
        return cls(hard, zero, zero, zero, zero)


def combined_loss(outputs, teacher_outputs, attention_mask: torch.Tensor, args, regression: bool):
    """``(loss, LossTerms)`` of a batch: ``(1 - kd_alpha) hard + kd_alpha kd`` plus the weighted
    layer-by-layer terms. ``outputs``/``teacher_outputs``: the student's and teacher's model
    outputs (with ``hidden_states``/``attentions`` where those terms are on)."""
    hard = outputs.loss
    kd = distillation_loss(outputs.logits, teacher_outputs.logits, args.kd_temperature, regression)
    loss = (1.0 - args.kd_alpha) * hard + args.kd_alpha * kd
    hidden = attention = torch.zeros_like(hard)
    if args.kd_hidden_weight > 0:
        hidden = hidden_distillation_loss(outputs.hidden_states, teacher_outputs.hidden_states, attention_mask)
        loss = loss + args.kd_hidden_weight * hidden
    if args.kd_attention_weight > 0:
        attention = attention_distillation_loss(outputs.attentions, teacher_outputs.attentions, attention_mask)
        loss = loss + args.kd_attention_weight * attention
    return loss, LossTerms(hard, kd, hidden, attention, torch.zeros_like(hard))
