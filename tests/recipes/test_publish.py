"""recipes/publish.py: a fine-tuned checkpoint becomes a verified zoo record with small files."""

from __future__ import annotations

import json

import pytest

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
