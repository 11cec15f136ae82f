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


@pytest.mark.parametrize("labels, match", [
    (torch.tensor([-100, 5]), r"labels holds class 5, outside \[0, 2\)"),  # the ignored -100 is not the culprit
    (torch.tensor([-3, 1]), r"labels holds class -3, outside \[0, 2\)"),
])
def test_bad_labels_beside_ignored_ones(labels, match, tiny):
    with pytest.raises(ValueError, match=match):
        tiny.model()(input_ids=torch.tensor([[1, 2], [3, 4]]), labels=labels)


def test_first_bad_argument_is_named(tiny):
    """Ids and token types checked in one read: the error names input_ids, the first in order."""
    with pytest.raises(ValueError, match=r"input_ids holds id 200"):
        tiny.model()(input_ids=torch.tensor([[1, 200]]), token_type_ids=torch.tensor([[0, 7]]))


def test_every_value_check_is_one_host_read(tiny, monkeypatch):
    """Ids, token types, positions, labels and the padding test are read back to the host
    once per forward: on a GPU each read is a sync that stops the host running ahead."""
    reads = []
    tolist = torch.Tensor.tolist
    monkeypatch.setattr(torch.Tensor, "tolist", lambda self: reads.append(self.shape) or tolist(self), raising=False)
    model = tiny.model().train()
    ids, mask = tiny.padded([4, 2])
    ids = ids.masked_fill(mask == 0, model.config.pad_token_id)
    with pytest.warns(UserWarning, match="holds padding"):  # no mask given: the padding test runs too
        model(input_ids=ids, token_type_ids=torch.zeros_like(ids), position_ids=torch.arange(4)[None],
              labels=torch.tensor([1, -100])).loss.backward()
    assert reads == [torch.Size([2 * 4 + 1])]  # (min, max) of four tensors and the padding flag
