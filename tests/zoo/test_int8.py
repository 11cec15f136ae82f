"""Checkpoints whose spike-fed weight matrices are stored as int8 codes and per-row scales (a
record's ``quantized``): they store fewer bytes, load as the fp16 checkpoint with those matrices
fake-quantized, refuse to load as a plain folder, and their dequantized cache file is verified
and rebuilt like any other; records without ``quantized`` are read and written as before."""

from __future__ import annotations

import json
import os
import shutil
import types
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

import sj_bert
from sj_bert import zoo

ROOT = Path(__file__).resolve().parents[2]
SENTENCES = ["a fine film", "dull and lifeless ."]
# the encoder Linears of the 1-layer tiny checkpoint (tests/conftest.py): all fed by spikes
SPIKE_FED = [f"bert.encoder.layer.0.{m}.weight" for m in (
    "attention.output.dense", "attention.self.key", "attention.self.query", "attention.self.value",
    "intermediate.dense", "output.dense")]


def logits_of(model):
    with torch.no_grad():
        return model(**model.tokenizer(SENTENCES, return_tensors="pt", padding=True)).logits


def tensors_of(path: Path) -> dict[str, torch.Tensor]:
    with safe_open(path, "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


def fake_int8(w: torch.Tensor) -> torch.Tensor:
    """The format written out independently of sj_bert.zoo.quantize: per row s = max|w| / 127,
    codes round(w / s) in [-127, 127], codes * s in fp32 rounded once to fp16."""
    x = w.float()
    s = x.abs().amax(dim=1, keepdim=True) / 127
    return (torch.round(x / s).clamp(-127, 127) * s).half()


def register(zoo_root: Path, folder: Path, quantized, base=None) -> None:
    record = zoo.PretrainedRecord(
        name=folder.name, task="sst2", architecture="SpikingBertForSequenceClassification", labels=("a", "b"),
        coding="individual", neuron="bpsn", files={f.name: zoo.sha256_file(f) for f in folder.iterdir()},
        metrics={"eval_accuracy": 0.5}, main_metric="eval_accuracy", command="python recipes/finetune.py --task sst2",
        hub_id="sj-bert/tiny", license="apache-2.0", base_model="tiny base", base=base, quantized=quantized,
    )
    (zoo_root / "registry.json").write_text(json.dumps({"checkpoints": [record.to_dict()]}))


@pytest.fixture
def int8_zoo(tmp_path, monkeypatch, tiny_checkpoint):
    """A zoo (``tmp_path / "zoo"``) holding ``tiny``, its spike-fed matrices stored in int8 (as
    ``recipes/publish.py --int8_spike_fed`` stores them) and cut into parts; ``full`` is the
    complete fp16 checkpoint, ``folder`` the zoo's, ``record`` its ``quantized`` entry."""
    fp32, full = tmp_path / "fp32", tmp_path / "full"
    tiny_checkpoint(fp32)
    shutil.copytree(fp32, full)
    sj_bert.SpikingBertForSequenceClassification.from_pretrained(fp32).half().save_pretrained(full)
    root = tmp_path / "zoo"
    root.mkdir()
    folder = root / "tiny"
    shutil.copytree(full, folder)
    keys = zoo.quantize_file(folder / "model.safetensors", "float16")
    zoo.split_file(folder / "model.safetensors", 20_000)
    record = zoo.QuantizedWeights(scheme=zoo.INT8_SCHEME, dtype="float16", tensors=tuple(keys))
    register(root, folder, record)
    monkeypatch.setenv("SJ_BERT_ZOO", str(root))
    monkeypatch.setenv("SJ_BERT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return types.SimpleNamespace(folder=folder, full=full, record=record, root=root)


def test_the_spike_fed_matrices_are_stored_as_int8_codes_and_row_scales_in_fewer_bytes(int8_zoo):
    stored_file = zoo.join_parts(int8_zoo.folder) / "model.safetensors"  # the parts joined, nothing dequantized
    stored, full = tensors_of(stored_file), tensors_of(int8_zoo.full / "model.safetensors")
    assert list(int8_zoo.record.tensors) == SPIKE_FED
    for key in SPIKE_FED:
        codes, scale = stored.pop(key + ".int8"), stored.pop(key + ".int8_scale")
        assert codes.dtype == torch.int8 and codes.shape == full[key].shape
        assert int(codes.abs().max()) == 127 and int(codes.min()) >= -127
        assert scale.dtype == torch.float32 and scale.shape == (full[key].shape[0], 1)
        torch.testing.assert_close(scale, full[key].float().abs().amax(dim=1, keepdim=True) / 127, rtol=0, atol=0)
    # every other tensor stored as it was, bit for bit
    assert set(stored) == set(full) - set(SPIKE_FED)
    assert all(torch.equal(stored[k], full[k]) for k in stored)
    # the payload: one byte a weight plus four a row instead of two a weight (this tiny model's
    # 8-wide matrices are smaller than the safetensors header entries they add; see
    # tests/recipes/test_publish.py for a file that shrinks)
    payload = lambda tensors: sum(t.numel() * t.element_size() for t in tensors.values())  # noqa: E731
    int8_payload = payload(tensors_of(stored_file))
    assert payload(full) - int8_payload == sum(full[k].numel() - 4 * full[k].shape[0] for k in SPIKE_FED)


def test_loading_serves_the_fp16_checkpoint_with_its_spike_fed_matrices_fake_quantized(int8_zoo):
    model = sj_bert.from_pretrained("tiny")
    assert model.source == "zoo checkpoint 'tiny'"
    expected = sj_bert.from_pretrained(int8_zoo.full)
    full = tensors_of(int8_zoo.full / "model.safetensors")
    with torch.no_grad():
        for name, parameter in expected.named_parameters():
            if name in SPIKE_FED:
                parameter.copy_(fake_int8(full[name]).float())
    served, wanted = model.state_dict(), expected.state_dict()
    assert set(served) == set(wanted) and all(torch.equal(served[k], wanted[k]) for k in wanted)
    assert not torch.equal(served[SPIKE_FED[0]], full[SPIKE_FED[0]].float())  # int8 is not fp16
    torch.testing.assert_close(logits_of(model), logits_of(expected), rtol=0, atol=0)
    cached = tensors_of(zoo.resolve("tiny") / "model.safetensors")  # an ordinary fp16 checkpoint
    assert set(cached) == set(full) and all(cached[k].dtype == torch.float16 for k in SPIKE_FED)


def test_the_stored_weights_alone_are_refused_as_a_folder_and_the_dequantized_ones_load(int8_zoo):
    """Loaded as a plain folder, the int8 keys are unknown and the matrices would start from
    random values without an error: the folder is refused, naming the way that completes it."""
    stored = zoo.join_parts(int8_zoo.folder)  # the parts joined, not dequantized
    with pytest.raises(ValueError, match=rf"local folder {stored}: model\.safetensors stores its spike-fed weight "
                                         r"matrices as int8 codes and scales \(written by recipes/publish\.py "
                                         r"--int8_spike_fed\); load it by its zoo name"):
        sj_bert.from_pretrained(stored)
    with pytest.raises(ValueError, match="int8 codes and scales"):
        zoo.load_checkpoint(stored, "--model_name_or_path")
    completed = zoo.resolve("tiny")
    torch.testing.assert_close(logits_of(sj_bert.from_pretrained(completed)), logits_of(sj_bert.from_pretrained("tiny")),
                               rtol=0, atol=0)


def test_the_dequantized_cache_file_is_rebuilt_when_altered(int8_zoo):
    before = logits_of(sj_bert.from_pretrained("tiny"))
    cached = zoo.resolve("tiny") / "model.safetensors"
    digest = zoo.sha256_file(cached)
    data = bytearray(cached.read_bytes())
    data[-64:] = bytes(64)  # zeroed, same size
    cached.write_bytes(bytes(data))
    with pytest.warns(UserWarning, match=r"model\.safetensors.*rebuil"):
        model = sj_bert.from_pretrained("tiny")
    assert zoo.sha256_file(cached) == digest and set(SPIKE_FED) <= set(tensors_of(cached))
    torch.testing.assert_close(logits_of(model), before, rtol=0, atol=0)


def test_the_manifest_records_the_dequantized_file_so_a_touched_one_is_served(int8_zoo, recwarn):
    """Only its times changed: hashed again, it matches what the join wrote (the dequantized
    file, not the stored one), so it is served without a rebuild."""
    cached = zoo.resolve("tiny") / "model.safetensors"
    os.utime(cached, ns=(cached.stat().st_atime_ns, cached.stat().st_mtime_ns + 10**9))
    assert zoo.resolve("tiny") == cached.parent
    assert not [w for w in recwarn if "rebuil" in str(w.message)]


def test_another_quantized_record_is_another_cache_folder(int8_zoo):
    first = zoo.resolve("tiny")
    assert zoo.join_parts(int8_zoo.folder) != first
    other = zoo.QuantizedWeights(**{**int8_zoo.record.__dict__, "dtype": "float32"})
    assert zoo.join_parts(int8_zoo.folder, quantized=other) != first


def test_a_record_naming_other_matrices_than_the_files_is_refused(int8_zoo):
    record = zoo.QuantizedWeights(**{**int8_zoo.record.__dict__, "tensors": int8_zoo.record.tensors[1:]})
    register(int8_zoo.root, int8_zoo.folder, record)
    with pytest.raises(ValueError, match=r"checkpoint 'tiny': model\.safetensors stores int8 codes and scales of 6 "
                                         r"matrices, its record names 5 .*the record and the files disagree"):
        sj_bert.from_pretrained("tiny")


def test_int8_with_a_base_model_loads_both_completed(int8_zoo, tmp_path):
    """Stripped of its base's tensors, then quantized (publish.py's order): loading puts both back."""
    base = tmp_path / "base"
    base.mkdir()
    full = tensors_of(int8_zoo.full / "model.safetensors")
    from safetensors.torch import save_file

    save_file({k.removeprefix("bert."): v for k, v in full.items() if k.startswith("bert.embeddings.")},
              base / "model.safetensors", metadata={"format": "pt"})
    shutil.rmtree(int8_zoo.folder)
    shutil.copytree(int8_zoo.full, int8_zoo.folder)
    weights = int8_zoo.folder / "model.safetensors"
    shared = zoo.strip_base(weights, base, "float16")
    keys = zoo.quantize_file(weights, "float16")
    stored = set(tensors_of(weights))
    assert not stored & set(shared) and {k + ".int8" for k in SPIKE_FED} <= stored
    base_weights = zoo.BaseWeights(dtype="float16", tensors=shared, hub_id="", offline=str(base))
    register(int8_zoo.root, int8_zoo.folder, zoo.QuantizedWeights(zoo.INT8_SCHEME, "float16", tuple(keys)), base_weights)
    served = tensors_of(zoo.resolve("tiny") / "model.safetensors")
    assert set(served) == set(full)
    assert all(torch.equal(served[k], fake_int8(full[k]) if k in SPIKE_FED else full[k]) for k in full)


# -- records -------------------------------------------------------------------------------


def test_records_without_quantized_read_and_write_as_before():
    data = json.loads((ROOT / "sj_bert" / "zoo" / "registry.json").read_text())
    for item in data["checkpoints"]:
        record = zoo.PretrainedRecord.from_dict(item)
        assert record.quantized is None and "quantized" not in item
        assert record.to_dict() == item


def test_a_record_with_quantized_round_trips(int8_zoo):
    saved = json.loads((int8_zoo.root / "registry.json").read_text())["checkpoints"][0]["quantized"]
    assert saved == {"scheme": "int8_per_channel", "dtype": "float16", "tensors": SPIKE_FED,
                     "file": "model.safetensors"}
    record = zoo.load_registry()["tiny"]
    assert record.quantized == int8_zoo.record
    assert zoo.PretrainedRecord.from_dict(json.loads(json.dumps(record.to_dict()))) == record
    assert record.to_dict()["quantized"] == saved


@pytest.mark.parametrize("quantized, match", [
    ([], r"\"quantized\" must be a JSON object, got list"),
    ({"scheme": "int8_per_channel", "tensors": []}, r"\"quantized\" has missing field\(s\) \['dtype'\]"),
    ({"scheme": "int8_per_channel", "dtype": "float16", "tensors": "a.weight"},
     r"\"quantized\" has \"tensors\" that is not a list of tensor names"),
    ({"scheme": "int8_per_channel", "dtype": "float16", "tensors": [], "bits": 8},
     r"\"quantized\" has unknown field\(s\) \['bits'\]"),
], ids=["type", "missing", "tensors", "unknown"])
def test_a_damaged_quantized_entry_names_the_record(int8_zoo, quantized, match):
    registry = int8_zoo.root / "registry.json"
    data = json.loads(registry.read_text())
    data["checkpoints"][0]["quantized"] = quantized
    registry.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"checkpoint record 'tiny': " + match):
        sj_bert.from_pretrained("tiny")


def test_an_unknown_scheme_is_refused_naming_it(int8_zoo):
    register(int8_zoo.root, int8_zoo.folder, zoo.QuantizedWeights("int4_packed", "float16", int8_zoo.record.tensors))
    with pytest.raises(ValueError, match=r"checkpoint 'tiny': quantization scheme 'int4_packed' is unknown .*"
                                         r"expected 'int8_per_channel'"):
        sj_bert.from_pretrained("tiny")
