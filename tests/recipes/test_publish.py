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
