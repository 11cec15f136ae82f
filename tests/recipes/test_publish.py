"""recipes/publish.py: a fine-tuned checkpoint becomes a verified zoo record with small files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

import sj_bert
from sj_bert import zoo


def test_publish_into_the_zoo_records_what_the_published_files_score(tmp_path, monkeypatch, tiny_bert, recipes, glue_files):
    data = glue_files.make(tmp_path / "glue", "sst2", n_train=8, n_dev=7)
    out = tmp_path / "run"
    recipes.finetune(["--task", "sst2", "--data_dir", data, "--model_name_or_path", tiny_bert, "--output_dir", out,
                      "--seed", "0", "--per_device_train_batch_size", "4", "--max_train_steps", "2"])
    monkeypatch.setenv("SJ_BERT_ZOO", str(tmp_path / "zoo"))
    monkeypatch.setenv("SJ_BERT_CACHE", str(tmp_path / "cache"))
    (tmp_path / "zoo").mkdir()
    record = recipes.publish([
        "--checkpoint", out, "--name", "tiny-sst2", "--hub_id", "someone/tiny-sst2", "--data_dir", data,
        "--into_zoo", "--max_shard_size", "0.5MB", "--ann_results", out / "all_results.json",
    ])
    folder = tmp_path / "zoo" / "tiny-sst2"
    parts = sorted(folder.glob("model.safetensors.part-*"))
    assert len(parts) > 1 and all(p.stat().st_size <= 500_000 for p in parts)
    registry = json.loads((tmp_path / "zoo" / "registry.json").read_text())["checkpoints"]
    assert [r["name"] for r in registry] == ["tiny-sst2"]
    assert registry[0]["files"] == {f.name: zoo.sha256_file(f) for f in folder.iterdir()}
    assert registry[0]["baselines"]["ann"]["eval_accuracy"] == pytest.approx(
        json.loads((out / "all_results.json").read_text())["eval_accuracy"])
    assert "## Published checkpoint `tiny-sst2`" in (folder / "README.md").read_text()
    measured = recipes.evaluate(["--model_name_or_path", zoo.resolve("tiny-sst2"), "--data_dir", data, "--cpu"])
    assert measured["eval_accuracy"] == record.metrics["eval_accuracy"]
    model = sj_bert.from_pretrained("tiny-sst2")
    assert next(model.parameters()).dtype.is_floating_point


def _publish_into(tmp_path, monkeypatch, recipes, run, data, name, *extra):
    monkeypatch.setenv("SJ_BERT_ZOO", str(tmp_path / "zoo"))
    monkeypatch.setenv("SJ_BERT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (tmp_path / "zoo").mkdir(exist_ok=True)
    return recipes.publish(["--checkpoint", run, "--name", name, "--hub_id", f"someone/{name}", "--data_dir", data,
                            "--into_zoo", "--max_shard_size", "0.5MB", *extra])


def test_publish_delta_from_base_stores_what_differs_and_loads_the_full_model(tmp_path, monkeypatch, tiny_bert,
                                                                              recipes, glue_files):
    """A run trained with --freeze_embeddings shares BERT's embeddings with its base: published
    with --delta_from_base they are left out of the files, recorded with their sha256, and put
    back on loading, so the zoo serves exactly the fp16 checkpoint."""
    from safetensors import safe_open

    data = glue_files.make(tmp_path / "glue", "sst2", n_train=8, n_dev=7)
    out = tmp_path / "run"
    recipes.finetune(["--task", "sst2", "--data_dir", data, "--model_name_or_path", tiny_bert, "--output_dir", out,
                      "--seed", "0", "--per_device_train_batch_size", "4", "--max_train_steps", "2",
                      "--freeze_embeddings"])
    record = _publish_into(tmp_path, monkeypatch, recipes, out, data, "tiny-sst2",
                           "--delta_from_base", tiny_bert, "--base_hub_id", "someone/tiny-bert")
    saved = json.loads((tmp_path / "zoo" / "registry.json").read_text())["checkpoints"][0]["base"]
    assert saved["hub_id"] == "someone/tiny-bert" and saved["offline"] == str(Path(tiny_bert).resolve())
    assert saved["dtype"] == "float16"
    embeddings = {"word_embeddings.weight", "position_embeddings.weight", "token_type_embeddings.weight",
                  "LayerNorm.weight", "LayerNorm.bias"}
    # all the frozen embeddings (and whatever else two tiny steps left bit-identical in fp16);
    # the base is a BertModel (keys without "bert."): SNN-BERT's loading rule maps them
    assert {f"bert.embeddings.{k}" for k in embeddings} <= set(saved["tensors"])
    assert all(v["key"] == k.removeprefix("bert.") for k, v in saved["tensors"].items())
    assert record.base == zoo.BaseWeights.from_dict(saved, "registry")
    with safe_open(zoo.join_parts(tmp_path / "zoo" / "tiny-sst2") / "model.safetensors", "pt") as f:
        stored = set(f.keys())  # the parts alone
    _, trained = zoo.load_checkpoint(out)
    assert stored == set(trained.state_dict()) - set(saved["tensors"])
    served = sj_bert.from_pretrained("tiny-sst2").state_dict()
    expected = trained.half().float().state_dict()
    assert set(served) == set(expected)
    assert all(torch.equal(served[k], expected[k]) for k in expected), "the zoo serves the fp16 checkpoint exactly"
    measured = recipes.evaluate(["--model_name_or_path", zoo.resolve("tiny-sst2"), "--data_dir", data, "--cpu"])
    assert measured["eval_accuracy"] == record.metrics["eval_accuracy"]


def test_publish_delta_from_base_that_shares_nothing_stores_every_tensor(tmp_path, monkeypatch, tiny_bert, recipes,
                                                                       finished_run, capsys):
    """Against a base none of whose tensors the run holds (another BERT of the same shapes),
    nothing is left out and the record has no ``base``: it loads as any full checkpoint."""
    from safetensors.torch import load_file, save_file

    other = tmp_path / "other-bert"
    shutil.copytree(tiny_bert, other)
    save_file({k: v + 1 for k, v in load_file(other / "model.safetensors").items()}, other / "model.safetensors",
              metadata={"format": "pt"})
    record = _publish_into(tmp_path, monkeypatch, recipes, finished_run.out, finished_run.data, "tiny-all",
                           "--delta_from_base", other)
    assert record.base is None
    assert "base" not in json.loads((tmp_path / "zoo" / "registry.json").read_text())["checkpoints"][0]
    assert "no tensor of --checkpoint" in capsys.readouterr().out


def test_publish_delta_from_a_base_that_is_neither_folder_nor_hub_id_names_it(tmp_path, monkeypatch, recipes,
                                                                             finished_run):
    with pytest.raises(FileNotFoundError, match=r"--delta_from_base '\./no-such-base' is not a local folder .*"
                                                r"expected a base model's folder or hub id"):
        _publish_into(tmp_path, monkeypatch, recipes, finished_run.out, finished_run.data, "tiny-x",
                      "--delta_from_base", "./no-such-base")
    assert not (tmp_path / "zoo" / "tiny-x").exists() and not (tmp_path / "zoo" / "registry.json").exists()


# -- --int8_spike_fed --------------------------------------------------------------------------


def _spike_fed(keys) -> list[str]:
    """The encoder Linears' weights, named without sj_bert.zoo.quantize's pattern."""
    return sorted(k for k in keys if ".encoder.layer." in k and k.endswith(("query.weight", "key.weight",
                                                                             "value.weight", "dense.weight")))


def _int8_then_fp16(w: torch.Tensor) -> torch.Tensor:
    """The int8 format written out independently: per row s = max|w| / 127, codes round(w / s)
    in [-127, 127], codes * s in fp32 rounded once to fp16."""
    x = w.half().float()
    s = x.abs().amax(dim=1, keepdim=True) / 127
    return (torch.round(x / s).clamp(-127, 127) * s).half()


def _stored(folder: Path) -> dict:
    """The tensors of ``folder``'s weights as stored (parts joined, nothing completed)."""
    from safetensors import safe_open

    with safe_open(zoo.join_parts(folder) / "model.safetensors", "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


def _assert_serves_int8(served: dict, trained: dict, int8) -> None:
    """``served`` is ``trained`` in fp16, the matrices ``int8`` names int8-then-fp16."""
    expected = {k: (_int8_then_fp16(v) if k in int8 else v.half()).float() for k, v in trained.items()}
    assert set(served) == set(expected)
    assert all(torch.equal(served[k], expected[k]) for k in expected), "the zoo serves the int8 matrices dequantized"


def test_publish_int8_spike_fed_stores_codes_and_scales_and_records_what_they_score(tmp_path, monkeypatch, recipes,
                                                                                    finished_run):
    fp16 = _publish_into(tmp_path, monkeypatch, recipes, finished_run.out, finished_run.data, "tiny-fp16")
    record = _publish_into(tmp_path, monkeypatch, recipes, finished_run.out, finished_run.data, "tiny-int8",
                           "--int8_spike_fed")
    _, trained = zoo.load_checkpoint(finished_run.out)
    trained = trained.state_dict()
    spike_fed = _spike_fed(trained)
    assert fp16.quantized is None and len(spike_fed) == 6 * 2
    saved = {r["name"]: r for r in json.loads((tmp_path / "zoo" / "registry.json").read_text())["checkpoints"]}
    assert "quantized" not in saved["tiny-fp16"]
    assert saved["tiny-int8"]["quantized"] == {"scheme": "int8_per_channel", "dtype": "float16", "tensors": spike_fed,
                                               "file": "model.safetensors"}
    assert zoo.PretrainedRecord.from_dict(saved["tiny-int8"]) == record
    stored = _stored(tmp_path / "zoo" / "tiny-int8")
    assert set(stored) == (set(trained) - set(spike_fed)) | {k + s for k in spike_fed for s in (".int8", ".int8_scale")}
    assert all(stored[k + ".int8"].dtype == torch.int8 and stored[k + ".int8_scale"].dtype == torch.float32
               for k in spike_fed)
    size = lambda name: sum(p.stat().st_size for p in (tmp_path / "zoo" / name).glob("model.safetensors.part-*"))  # noqa: E731
    assert size("tiny-int8") < size("tiny-fp16")
    _assert_serves_int8(sj_bert.from_pretrained("tiny-int8").state_dict(), trained, spike_fed)
    # the registry's metric is what the int8 files give, scored through the zoo's loading path
    measured = recipes.evaluate(["--model_name_or_path", zoo.resolve("tiny-int8"), "--data_dir", finished_run.data,
                                 "--cpu"])
    assert measured["eval_accuracy"] == record.metrics["eval_accuracy"]
    assert "stored as int8 codes" in (tmp_path / "zoo" / "tiny-int8" / "README.md").read_text()


def test_publish_int8_spike_fed_to_a_hub_folder_is_refused_as_a_plain_folder_and_scored_dequantized(
        tmp_path, monkeypatch, recipes, finished_run):
    dest = tmp_path / "hub-folder"
    monkeypatch.setenv("SJ_BERT_ZOO", str(tmp_path / "zoo"))
    monkeypatch.setenv("SJ_BERT_CACHE", str(tmp_path / "cache"))
    (tmp_path / "zoo").mkdir()
    record = recipes.publish(["--checkpoint", finished_run.out, "--name", "tiny-hub", "--hub_id", "someone/tiny-hub",
                              "--data_dir", finished_run.data, "--output_dir", dest, "--int8_spike_fed"])
    assert not list(dest.glob("*.part-*")) and record.quantized is not None
    with pytest.raises(ValueError, match=r"int8 codes and scales \(written by recipes/publish\.py --int8_spike_fed\)"):
        sj_bert.from_pretrained(dest)
    loadable = zoo.join_parts(dest, quantized=record.quantized)
    measured = recipes.evaluate(["--model_name_or_path", loadable, "--data_dir", finished_run.data, "--cpu"])
    assert measured["eval_accuracy"] == record.metrics["eval_accuracy"]


def test_publish_int8_spike_fed_with_delta_from_base_stores_both_and_loads_both_back(tmp_path, monkeypatch, tiny_bert,
                                                                                     recipes, glue_files):
    data = glue_files.make(tmp_path / "glue", "sst2", n_train=8, n_dev=7)
    out = tmp_path / "run"
    recipes.finetune(["--task", "sst2", "--data_dir", data, "--model_name_or_path", tiny_bert, "--output_dir", out,
                      "--seed", "0", "--per_device_train_batch_size", "4", "--max_train_steps", "2",
                      "--freeze_embeddings"])
    delta = _publish_into(tmp_path, monkeypatch, recipes, out, data, "tiny-delta", "--delta_from_base", tiny_bert)
    record = _publish_into(tmp_path, monkeypatch, recipes, out, data, "tiny-both", "--delta_from_base", tiny_bert,
                           "--int8_spike_fed")
    _, trained = zoo.load_checkpoint(out)
    trained = trained.state_dict()
    # a matrix two tiny steps left bit-identical to the base's in fp16 is taken from it, exactly
    spike_fed = [k for k in _spike_fed(trained) if k not in record.base.tensors]
    assert record.base == delta.base and record.quantized.tensors == tuple(spike_fed) and spike_fed
    stored = _stored(tmp_path / "zoo" / "tiny-both")
    assert set(stored) == ((set(trained) - set(record.base.tensors) - set(spike_fed))
                           | {k + s for k in spike_fed for s in (".int8", ".int8_scale")})
    size = lambda name: sum(p.stat().st_size for p in (tmp_path / "zoo" / name).glob("model.safetensors.part-*"))  # noqa: E731
    assert size("tiny-both") < size("tiny-delta")
    _assert_serves_int8(sj_bert.from_pretrained("tiny-both").state_dict(), trained, spike_fed)
    measured = recipes.evaluate(["--model_name_or_path", zoo.resolve("tiny-both"), "--data_dir", data, "--cpu"])
    assert measured["eval_accuracy"] == record.metrics["eval_accuracy"]


@pytest.mark.filterwarnings("ignore::scipy.stats.NearConstantInputWarning")  # an untrained tiny regressor
def test_a_bi_encoder_is_published_stored_as_the_zoo_stores_and_served_as_a_bi_encoder(tmp_path, monkeypatch,
                                                                                    tiny_bert, recipes, glue_files):
    """An STS-B bi-encoder (no head: its keys are all ``bert.*``) shares its frozen embeddings
    with its base and stores its spike-fed matrices in int8; from_pretrained serves it as a
    SpikingBertBiEncoder that scores exactly what the registry records."""
    data = glue_files.make(tmp_path / "glue", "stsb", n_train=8, n_dev=7)
    out = tmp_path / "run"
    recipes.finetune(["--task", "stsb", "--data_dir", data, "--model_name_or_path", tiny_bert, "--output_dir", out,
                      "--seed", "0", "--per_device_train_batch_size", "4", "--max_train_steps", "2",
                      "--freeze_embeddings", "--pair_encoding", "bi"])
    record = _publish_into(tmp_path, monkeypatch, recipes, out, data, "tiny-stsb-bi", "--delta_from_base", tiny_bert,
                           "--int8_spike_fed")
    assert record.architecture == "SpikingBertBiEncoder" and record.base.tensors and record.quantized.tensors
    served = sj_bert.from_pretrained("tiny-stsb-bi")
    assert type(served).__name__ == "SpikingBertBiEncoder" and served.classifier is None
    measured = recipes.evaluate(["--model_name_or_path", "tiny-stsb-bi", "--data_dir", data, "--cpu"])
    assert measured["eval_pearson"] == record.metrics["eval_pearson"]
