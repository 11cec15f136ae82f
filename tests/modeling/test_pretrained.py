"""Loading BERT checkpoints, save/load round trips, Auto classes and the pipeline."""

import pytest
import torch
from safetensors.torch import load_file
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertConfig,
    BertForSequenceClassification,
    pipeline,
)

import sj_bert
from sj_bert import SpikingBertConfig, SpikingBertForSequenceClassification, SpikingBertModel

NEURON_KEYS = ("a_f", "a_b", "a_m", "v_threshold")


def neuron_keys(model) -> set[str]:
    return {k for k in model.state_dict() if k.rsplit(".", 1)[-1] in NEURON_KEYS}


def test_minilm_loads_every_bert_weight(minilm_path):
    """The sentence-transformers MiniLM (keys without ``bert.``) loads with nothing renamed:
    only neuron parameters and the classifier are new."""
    model, info = SpikingBertForSequenceClassification.from_pretrained(
        minilm_path, coding="individual", num_labels=2, output_loading_info=True
    )
    assert isinstance(model.config, SpikingBertConfig) and model.config.model_type == "spiking_bert"
    new = neuron_keys(model)
    assert len(new) == model.config.num_hidden_layers * 4 * len(NEURON_KEYS)
    assert set(info["missing_keys"]) == new | {"classifier.weight", "classifier.bias"}
    # loading reports are lists in transformers 4, sets in 5
    assert not info["unexpected_keys"] and not info["mismatched_keys"] and not info["error_msgs"]
    checkpoint = load_file(f"{minilm_path}/model.safetensors")
    state = model.state_dict()
    loaded = [k for k in checkpoint if f"bert.{k}" in state]
    assert len(loaded) == len([k for k in checkpoint if k != "embeddings.position_ids"])
    for key in loaded:
        assert torch.equal(state[f"bert.{key}"], checkpoint[key]), key
    # neurons missing from the checkpoint start at BPSN's initial values
    node = model.bert.encoder.layer[3].intermediate.intermediate_act_fn
    assert torch.equal(node.a_f, torch.zeros(1)) and torch.equal(node.v_threshold, torch.ones(1))


def test_bert_checkpoint_loads_in_both_codings_and_trains(tmp_path, tiny):
    """A BertForSequenceClassification folder (``bert.`` prefix, its classifier) loads into
    either coding with the same weights; each trains one optimizer step."""
    config = tiny.config()
    bert_config = BertConfig(**{k: v for k, v in config.to_dict().items() if k in BertConfig().to_dict()})
    torch.manual_seed(0)
    BertForSequenceClassification(bert_config).save_pretrained(tmp_path)
    ann = load_file(f"{tmp_path}/model.safetensors")
    ids, mask = tiny.padded([6, 3])
    labels = torch.tensor([1, 0])
    for coding in ("individual", "repeat"):
        model, info = SpikingBertForSequenceClassification.from_pretrained(
            tmp_path, coding=coding, v_threshold=0.5, output_loading_info=True
        )
        assert set(info["missing_keys"]) == neuron_keys(model) and not info["unexpected_keys"]
        state = model.state_dict()
        for key, value in ann.items():
            assert torch.equal(state[key], value), (coding, key)
        before = {k: v.clone() for k, v in state.items()}
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
        loss = model.train()(ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        assert model.bert.encoder.layer[0].attention.self.query.weight.grad.abs().sum() > 0
        optimizer.step()
        changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
        assert "bert.encoder.layer.0.attention.self.query.weight" in changed
        assert "classifier.weight" in changed


@pytest.mark.parametrize("coding", ["individual", "repeat"])
def test_save_and_reload_gives_identical_logits(tmp_path, coding, tiny):
    model = tiny.model(coding=coding, neuron="bpsn", per_channel=True, learnable_threshold=True)
    with torch.no_grad():  # move the neuron parameters off their initial values
        for name, param in model.named_parameters():
            if name.rsplit(".", 1)[-1] in NEURON_KEYS:
                param.add_(0.1 * torch.randn_like(param))
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    reloaded = SpikingBertForSequenceClassification.from_pretrained(tmp_path).eval()
    ids, mask = tiny.padded([5, 2, 4])
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids, attention_mask=mask).logits, model(ids, attention_mask=mask).logits,
                                   rtol=0, atol=0)


def test_auto_classes_and_pipeline(tmp_path, minilm_path, tiny):
    """Registered on ``import sj_bert``: Auto classes resolve SNN-BERT folders, and the
    text-classification pipeline returns the model's own label."""
    assert sj_bert.SpikingBertConfig is SpikingBertConfig
    model = tiny.model(vocab_size=30522, max_position_embeddings=64, id2label={0: "neg", 1: "pos"},
                       label2id={"neg": 0, "pos": 1})
    model.save_pretrained(tmp_path)
    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    tokenizer.save_pretrained(tmp_path)
    assert isinstance(AutoConfig.from_pretrained(tmp_path), SpikingBertConfig)
    assert type(AutoModel.from_pretrained(tmp_path)) is SpikingBertModel
    auto = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    assert type(auto) is SpikingBertForSequenceClassification
    classify = pipeline("text-classification", model=str(tmp_path), device="cpu")
    sentences = ["a charming and often affecting journey", "unflinchingly bleak and desperate"]
    with torch.no_grad():
        logits = auto(**tokenizer(sentences, padding=True, return_tensors="pt")).logits
    predictions = classify(sentences)
    assert [p["label"] for p in predictions] == [model.config.id2label[int(i)] for i in logits.argmax(-1)]
    for p, row in zip(predictions, logits.softmax(-1)):
        assert p["score"] == pytest.approx(row.max().item(), abs=1e-5)


def assert_same_logits_at_every_length(loaded, by_hand, lengths: tuple[int, ...]):
    """Exact logits on inputs of several lengths (one row padded), so a position or
    token-type buffer left uninitialised by loading would show."""
    for length in lengths:
        generator = torch.Generator().manual_seed(length)
        ids = torch.randint(1, loaded.config.vocab_size, (2, length), generator=generator)
        mask = torch.ones_like(ids)
        mask[1, length // 2 + 1:] = 0
        with torch.no_grad():
            expected = by_hand(ids, attention_mask=mask).logits
            torch.testing.assert_close(loaded(ids, attention_mask=mask).logits, expected, rtol=0, atol=0)


def test_buffers_and_logits_after_from_pretrained_equal_a_model_built_by_hand(minilm_path):
    """Regression (transformers 5 builds models on the meta device): BERT's non-persistent
    buffers are filled by ``_init_weights``, and ``from_pretrained`` gives exactly the model
    built by its constructor and loaded with ``load_state_dict``."""
    loaded = SpikingBertForSequenceClassification.from_pretrained(minilm_path, num_labels=2, per_channel=True).eval()
    embeddings = loaded.bert.embeddings
    assert torch.equal(embeddings.position_ids, torch.arange(embeddings.position_ids.shape[-1])[None])
    assert torch.equal(embeddings.token_type_ids, torch.zeros_like(embeddings.token_type_ids))

    by_hand = SpikingBertForSequenceClassification(SpikingBertConfig.from_pretrained(minilm_path, num_labels=2,
                                                                                     per_channel=True)).eval()
    state = {f"bert.{k}": v for k, v in load_file(f"{minilm_path}/model.safetensors").items()
             if k != "embeddings.position_ids"}
    # the classifier is new in both: take the loaded one's; the neurons keep their constructor values
    state.update({k: v for k, v in loaded.state_dict().items() if k.startswith("classifier.")})
    missing, unexpected = by_hand.load_state_dict(state, strict=False)
    assert set(missing) == neuron_keys(by_hand) and not unexpected
    assert_same_logits_at_every_length(loaded, by_hand, lengths=(1, 9, 64))


@pytest.mark.parametrize("coding", ["individual", "repeat"])
def test_snn_checkpoint_from_pretrained_equals_load_state_dict(tmp_path, coding, tiny):
    model = tiny.model(coding=coding, per_channel=coding == "individual", learnable_threshold=coding == "individual",
                       neuron="bpsn")
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.05 * torch.randn_like(param))
    model.save_pretrained(tmp_path)
    loaded = SpikingBertForSequenceClassification.from_pretrained(tmp_path).eval()
    by_hand = SpikingBertForSequenceClassification(SpikingBertConfig.from_pretrained(tmp_path)).eval()
    by_hand.load_state_dict(load_file(f"{tmp_path}/model.safetensors"), strict=True)
    assert_same_logits_at_every_length(loaded, by_hand, lengths=(1, 5, 24))
