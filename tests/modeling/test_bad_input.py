"""Bad input to SNN-BERT: each is an error of the right type whose message names the argument and
what was expected, not torch's ("index out of range in self", "Target 5 is out of bounds").
Shape errors of input_ids and the masks are in test_modeling.py's test_bad_inputs."""

from __future__ import annotations

import pytest
import torch

IDS = torch.tensor([[1, 2, 3]])

FORWARD = [
    (dict(input_ids=torch.tensor([[1, 200]])), ValueError, r"input_ids holds id 200, outside \[0, 99\) \(vocab_size"),
    (dict(input_ids=torch.tensor([[1, -1]])), ValueError, r"input_ids holds id -1, outside \[0, 99\)"),
    (dict(input_ids=torch.tensor([[1.0, 2.0]])), TypeError, r"input_ids must hold integer ids \(torch.long\), got torch.float32"),
    (dict(input_ids=[[1, 2]]), TypeError, r"input_ids must be a torch.Tensor .* got list"),
    (dict(input_ids=IDS, attention_mask=[[1, 1, 1]]), TypeError, r"attention_mask must be a torch.Tensor"),
    (dict(input_ids=IDS, token_type_ids=torch.tensor([[0, 5, 0]])), ValueError,
     r"token_type_ids holds id 5, outside \[0, 2\) \(type_vocab_size"),
    (dict(input_ids=IDS, position_ids=torch.tensor([[0, 1, 50]])), ValueError,
     r"position_ids holds id 50, outside \[0, 24\) \(max_position_embeddings"),
    (dict(input_ids=IDS, position_ids=torch.tensor([[0, 1]])), ValueError, r"position_ids must have length 3 \(of input_ids\)"),
    (dict(inputs_embeds=torch.randn(1, 3, 7)), ValueError, r"inputs_embeds must be \[batch, length, hidden_size=16\], got shape \(1, 3, 7\)"),
    (dict(input_ids=IDS, labels=torch.tensor([5])), ValueError, r"labels holds class 5, outside \[0, 2\) \(num_labels"),
    (dict(input_ids=IDS, labels=torch.tensor([1, 0])), ValueError, r"labels must have one entry per sample, \[batch=1\]"),
    (dict(input_ids=IDS, labels=[1]), TypeError, r"labels must be a torch.Tensor, got list"),
]


@pytest.mark.parametrize("kwargs, error, match", FORWARD, ids=[m[:32] for _, _, m in FORWARD])
def test_bad_forward_input(kwargs, error, match, tiny):
    with pytest.raises(error, match=match):
        tiny.model()(**kwargs)


def test_ignored_labels_are_not_out_of_range(tiny):
    """-100 is the loss's ignore_index, as in BERT: not an error."""
    loss = tiny.model()(input_ids=torch.tensor([[1, 2], [3, 4]]), labels=torch.tensor([1, -100])).loss
    assert torch.isfinite(loss)


@pytest.mark.parametrize("overrides, match", [
    (dict(v_threshold="x"), r"SpikingBertConfig: v_threshold must be a number, got 'x'"),
    (dict(v_threshold=True), r"SpikingBertConfig: v_threshold must be a number, got True"),
    (dict(time_steps=0, coding="repeat"), r"SpikingBertConfig: time_steps must be a positive int, got 0"),
    (dict(surrogate="Nope"), r"SpikingBertConfig: surrogate='Nope' is not supported; expected one of"),
])
def test_bad_config(overrides, match, tiny):
    from sj_bert import SpikingBertForSequenceClassification

    with pytest.raises(ValueError, match=match):
        SpikingBertForSequenceClassification(tiny.config(**overrides))
