"""Fixtures shared across the test folders: a private zoo cache, a tiny zoo (used by the zoo
and the CLI tests)."""

from __future__ import annotations

import json

import pytest
import torch

import sj_bert
from sj_bert import zoo


@pytest.fixture(scope="session", autouse=True)
def _private_zoo_cache(tmp_path_factory):
    """Joined checkpoints go to a folder of this test session, never to the machine's
    ``~/.cache/sj_bert`` (which other checkouts may be reading)."""
    import os

    previous = os.environ.get("SJ_BERT_CACHE")
    os.environ["SJ_BERT_CACHE"] = str(tmp_path_factory.mktemp("sj_bert_cache"))
    yield
    if previous is None:
        os.environ.pop("SJ_BERT_CACHE", None)
    else:
        os.environ["SJ_BERT_CACHE"] = previous


def save_tiny_checkpoint(folder, seed: int = 0) -> None:
    """A 1-layer, 8-wide SNN-BERT for SST-2 labels with the offline MiniLM tokenizer, in ``folder``."""
    from transformers import AutoTokenizer

    config = sj_bert.SpikingBertConfig(
        vocab_size=30522, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16,
        max_position_embeddings=32, num_labels=2, id2label={0: "negative", 1: "positive"},
        label2id={"negative": 0, "positive": 1},
    )
    torch.manual_seed(seed)
    sj_bert.SpikingBertForSequenceClassification(config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(sj_bert.offline_bert()).save_pretrained(folder)


@pytest.fixture
def tiny_zoo(tmp_path, monkeypatch):
    """A zoo folder (``tmp_path``) with one tiny checkpoint, ``tiny``, stored as byte parts, and
    its registry; the cache is ``tmp_path / "cache"``. Returns the checkpoint's zoo folder."""
    folder = tmp_path / "tiny"
    save_tiny_checkpoint(folder)
    zoo.split_file(folder / "model.safetensors", 200_000)
    record = zoo.PretrainedRecord(
        name="tiny", task="sst2", architecture="SpikingBertForSequenceClassification", labels=("a", "b"),
        coding="individual", neuron="bpsn", files={f.name: zoo.sha256_file(f) for f in folder.iterdir()},
        metrics={"eval_accuracy": 0.5}, main_metric="eval_accuracy", command="python recipes/finetune.py --task sst2",
        hub_id="sj-bert/tiny", license="apache-2.0", base_model="tiny",
    )
    (tmp_path / "registry.json").write_text(json.dumps({"checkpoints": [record.to_dict()]}))
    monkeypatch.setenv("SJ_BERT_ZOO", str(tmp_path))
    monkeypatch.setenv("SJ_BERT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return folder


@pytest.fixture
def tiny_checkpoint():
    """``tiny_checkpoint(folder, seed=0)`` writes a tiny SNN-BERT checkpoint folder."""
    return save_tiny_checkpoint
