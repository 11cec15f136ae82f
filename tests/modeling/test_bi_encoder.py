"""The bi-encoders (BertBiEncoder, SpikingBertBiEncoder): each sentence encoded alone, the pair
head and loss, loading through the Auto classes, and input errors (tiny configs)."""

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForSequenceClassification, BertConfig, BertModel

from sj_bert import BertBiEncoder, SpikingBertBiEncoder, SpikingBertModel
from sj_bert.modeling.modeling_bi_encoder import (
    BertBiEncoderConfig, SpikingBertBiEncoderConfig, pair_encoding, real_token_mask, stack_pair,
)

ANN_SHAPE = dict(vocab_size=99, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                 max_position_embeddings=24)


def bi_model(kind: str, tiny, num_labels: int = 2, seed: int = 0, **overrides):
    torch.manual_seed(seed)
    if kind == "ann":
        return BertBiEncoder(BertBiEncoderConfig(**ANN_SHAPE, num_labels=num_labels, **overrides)).eval()
    # a config's label maps fix its num_labels (transformers 4): leave them to num_labels
    config = {k: v for k, v in tiny.config(**overrides).to_dict().items() if k not in ("id2label", "label2id")}
    return SpikingBertBiEncoder(SpikingBertBiEncoderConfig(**{**config, "num_labels": num_labels})).eval()


def pair_batch(tiny, lengths_a=(5, 2, 7), lengths_b=(3, 9, 1)):
    ids_a, mask_a = tiny.padded(list(lengths_a), seed=1)
    ids_b, mask_b = tiny.padded(list(lengths_b), seed=2)
    return {"input_ids_a": ids_a, "attention_mask_a": mask_a, "input_ids_b": ids_b, "attention_mask_b": mask_b}


KINDS = ["ann", "individual", "repeat"]


def kind_overrides(kind):
    return {} if kind == "ann" else {"coding": kind}


@pytest.mark.parametrize("kind", KINDS)
def test_each_sentence_is_embedded_as_it_is_alone(kind, tiny):
    """Stacked with the other side and padded to its length, a sentence gets the embedding it
    gets alone: the pair head compares two independent encodings."""
    model = bi_model(kind, tiny, **kind_overrides(kind))
    batch = pair_batch(tiny)
    ids, mask = stack_pair(*batch.values())
    assert ids.shape == (6, 9) and mask.shape == (6, 9)
    with torch.no_grad():
        pooled = model.encode(ids, mask)
        for row, side in enumerate(["a"] * 3 + ["b"] * 3):
            i = row % 3
            n = int(batch[f"attention_mask_{side}"][i].sum())
            alone = model.encode(batch[f"input_ids_{side}"][i : i + 1, :n])
            torch.testing.assert_close(pooled[row : row + 1], alone, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(pooled[0], pooled[1])


@pytest.mark.parametrize("kind", KINDS)
def test_the_head_and_loss_are_sentence_berts(kind, tiny):
    batch = pair_batch(tiny)
    # classification: a linear map of [u, v, |u - v|, u * v], cross-entropy
    model = bi_model(kind, tiny, num_labels=3, **kind_overrides(kind))
    labels = torch.tensor([0, 2, 1])
    with torch.no_grad():
        out = model(**batch, labels=labels)
        u = model.encode(batch["input_ids_a"], batch["attention_mask_a"])
        v = model.encode(batch["input_ids_b"], batch["attention_mask_b"])
    expected = model.classifier(torch.cat([u, v, (u - v).abs(), u * v], dim=-1))
    assert model.classifier.in_features == 4 * model.config.hidden_size and out.logits.shape == (3, 3)
    torch.testing.assert_close(out.logits, expected)
    torch.testing.assert_close(out.loss, F.cross_entropy(expected, labels))
    # regression: scale * cos(u, v), its MSE to the label (Sentence-BERT's loss times scale^2); no head
    model = bi_model(kind, tiny, num_labels=1, similarity_scale=4.0, **kind_overrides(kind))
    scores = torch.tensor([0.5, 4.0, 2.0])
    with torch.no_grad():
        out = model(**batch, labels=scores)
        cosine = F.cosine_similarity(model.encode(batch["input_ids_a"], batch["attention_mask_a"]),
                                     model.encode(batch["input_ids_b"], batch["attention_mask_b"]))
    assert model.classifier is None and out.logits.shape == (3, 1)
    torch.testing.assert_close(out.logits[:, 0], 4.0 * cosine)
    torch.testing.assert_close(out.loss, F.mse_loss(cosine, scores / 4.0) * 16.0)


@pytest.mark.parametrize("kind", ["ann", "individual"])
def test_saved_bi_encoders_load_through_the_auto_classes(kind, tiny, tmp_path):
    model = bi_model(kind, tiny, **kind_overrides(kind))
    model.save_pretrained(tmp_path)
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    assert type(loaded) is type(model) and pair_encoding(loaded) == "bi" and pair_encoding(model.bert) == "bi"
    keys = set(loaded.state_dict())
    assert keys == set(model.state_dict())
    assert all(k.startswith(("bert.embeddings.", "bert.encoder.", "classifier.")) for k in keys), keys
    batch = pair_batch(tiny)
    with torch.no_grad():
        torch.testing.assert_close(loaded(**batch).logits, model(**batch).logits, rtol=0, atol=0)


def test_from_an_encoder_checkpoint_the_encoder_weights_are_kept(tmp_path):
    """A BERT checkpoint (no ``bert.`` prefix, with a pooler) gives both bi-encoders its
    encoder; the spiking one converts it (its neurons start at their initial values)."""
    torch.manual_seed(0)
    bert = BertModel(BertConfig(**ANN_SHAPE))
    bert.save_pretrained(tmp_path)
    expected = {f"bert.{k}": v for k, v in bert.state_dict().items() if not k.startswith("pooler.")}
    for cls, extra in ((BertBiEncoder, {}), (SpikingBertBiEncoder, {"coding": "individual", "per_channel": True})):
        model = cls.from_pretrained(tmp_path, num_labels=2, **extra)
        state = model.state_dict()
        for key, value in expected.items():
            if key.endswith("position_ids"):
                continue
            assert torch.equal(state[key], value), (cls.__name__, key)
        assert not any(".pooler." in k for k in state)
    assert model.config.coding == "individual" and model.config.per_channel is True
    assert pair_encoding(BertModel(BertConfig(**ANN_SHAPE))) == "cross"


def test_real_token_mask_of_either_batch(tiny):
    batch = pair_batch(tiny)
    mask = real_token_mask(batch)
    assert mask.shape == (6, 9)
    assert mask.sum(dim=1).tolist() == [5, 2, 7, 3, 9, 1]
    cross = {"input_ids": batch["input_ids_a"], "attention_mask": batch["attention_mask_a"]}
    assert real_token_mask(cross) is cross["attention_mask"]


@pytest.mark.parametrize("change, error, match", [
    (lambda b: {"input_ids": b["input_ids_a"], "attention_mask": b["attention_mask_a"]}, ValueError,
     "takes each sentence tokenized alone, input_ids_a and input_ids_b.*got input_ids"),
    (lambda b: {**b, "input_ids_b": b["input_ids_b"][:2], "attention_mask_b": b["attention_mask_b"][:2]},
     ValueError, "same number of pairs, got batches of 3 and 2"),
    (lambda b: {**b, "input_ids_a": b["input_ids_a"].float()}, TypeError, "input_ids_a must hold integer token ids"),
    (lambda b: {**b, "attention_mask_b": b["attention_mask_b"][:, :3]}, ValueError,
     "attention_mask_b must have the shape of input_ids_b"),
    (lambda b: {**b, "input_ids_a": b["input_ids_a"][0]}, ValueError, r"input_ids_a must be \[batch, length\]"),
    (lambda b: {**b, "input_ids_b": b["input_ids_b"].tolist()}, TypeError, "input_ids_b must be a torch.Tensor"),
    (lambda b: {**b, "labels": torch.tensor([0, 2, 1])}, ValueError,
     r"labels holds class 2, outside \[0, 2\) \(num_labels of the config\)"),
    (lambda b: {**b, "labels": torch.tensor([0, -5, -100])}, ValueError, r"labels holds class -5, outside \[0, 2\)"),
    (lambda b: {**b, "labels": torch.tensor([0, 1])}, ValueError, r"labels must be \[batch=3\], one per pair"),
    (lambda b: {**b, "labels": torch.tensor([0.0, 1.0, 1.0])}, TypeError, "class ids"),
])
def test_bad_inputs_are_named(change, error, match, tiny):
    model = bi_model("individual", tiny)
    with pytest.raises(error, match=match):
        model(**change(pair_batch(tiny)))


@pytest.mark.parametrize("kind", ["ann", "individual"])
def test_class_labels_are_checked_by_either_encoder_and_minus_100_is_ignored(kind, tiny):
    model = bi_model(kind, tiny, **kind_overrides(kind))
    with pytest.raises(ValueError, match=r"labels holds class 3, outside \[0, 2\)"):
        model(**pair_batch(tiny), labels=torch.tensor([0, 3, 1]))
    out = model(**pair_batch(tiny), labels=torch.tensor([0, -100, 1]))
    logits = out.logits.detach()
    torch.testing.assert_close(out.loss, F.cross_entropy(logits[[0, 2]], torch.tensor([0, 1])))


def test_a_bad_similarity_scale_is_refused():
    for bad in (0, -1.0, True, "5", float("inf")):
        with pytest.raises(ValueError, match="similarity_scale must be a positive number"):
            BertBiEncoderConfig(similarity_scale=bad)


def test_gradients_reach_both_sides_and_the_neurons(tiny):
    model = bi_model("individual", tiny, per_channel=True, learnable_threshold=True).train()
    out = model(**pair_batch(tiny), labels=torch.tensor([0, 1, 1]))
    out.loss.backward()
    assert model.classifier.weight.grad.abs().sum() > 0
    thresholds = [p for n, p in model.named_parameters() if n.endswith("v_threshold")]
    assert thresholds and all(p.grad is not None for p in thresholds)
    assert isinstance(model.bert, SpikingBertModel) and model.bert.pooler is None
