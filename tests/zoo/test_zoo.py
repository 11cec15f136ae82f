"""The zoo: registry consistency, verified loading, the generated table, the kept checkpoints' dev
metrics, the sst2 checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import sj_bert
from sj_bert import glue, zoo

ROOT = Path(__file__).resolve().parents[2]
GLUE = ROOT.parent / "shared" / "data" / "glue"
REGISTRY = zoo.load_registry(ROOT / "sj_bert" / "zoo" / "registry.json")  # the one the package ships
FIELDS = ("name", "task", "architecture", "labels", "coding", "neuron", "files", "metrics", "main_metric", "command", "hub_id", "license", "base_model")


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_registry_record_is_complete_and_its_files_match(name):
    record = REGISTRY[name]
    for field in FIELDS:
        assert getattr(record, field), f"{name}: {field} is empty"
    assert record.main_metric in record.metrics
    assert all(0.0 <= abs(v) <= 1.0 for v in record.metrics.values())
    assert "recipes/finetune.py" in record.command and f"--task {record.task}" in record.command
    folder = ROOT / "zoo" / name
    if folder.is_dir():
        for file, digest in record.files.items():
            assert zoo.sha256_file(folder / file) == digest, file
            assert (folder / file).stat().st_size <= 15 * 1000**2, f"{file} is over 15 MB"
        assert sum((folder / f).stat().st_size for f in record.files) <= 50 * 1000**2
    else:
        assert "/" in record.hub_id


# What the repository may hold of checkpoints (docs/zoo_storage.md, "How many live here"): the
# full fp16 sst2 (45.6 MB) and five GLUE task checkpoints stored as the zoo stores them
# (embeddings left to MiniLM, spike-fed matrices int8: about 12 MB each); the others go to the hub
ZOO_BYTES_BUDGET = 110 * 1000**2
KEPT = sorted(name for name in REGISTRY if (ROOT / "zoo" / name).is_dir())


def test_the_checkpoints_kept_in_the_repository_fit_its_budget():
    kept = sum((ROOT / "zoo" / name / f).stat().st_size for name in KEPT for f in REGISTRY[name].files)
    assert kept <= ZOO_BYTES_BUDGET, f"zoo/ holds {kept:,} bytes of checkpoints, over {ZOO_BYTES_BUDGET:,}"


def test_zoo_readme_table_matches_the_registry():
    readme = (ROOT / "zoo" / "README.md").read_text()
    table = readme.split("<!-- table:start -->\n", 1)[1].split("\n<!-- table:end -->", 1)[0]
    assert table == zoo.results_table(REGISTRY), "run: python -m sj_bert.zoo --write-table"


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(KeyError, match="known checkpoints: .*" + (sorted(REGISTRY)[0] if REGISTRY else "")):
        sj_bert.from_pretrained("no-such-checkpoint")


def test_parts_are_verified_joined_and_loaded(tiny_zoo):
    assert len([p for p in tiny_zoo.iterdir() if ".part-" in p.name]) > 1
    model = sj_bert.from_pretrained("tiny")
    logits = model(**model.tokenizer(["a fine film", "dull"], return_tensors="pt", padding=True)).logits
    assert logits.shape == (2, 2)


def test_an_altered_byte_is_refused(tiny_zoo):
    part = sorted(p for p in tiny_zoo.iterdir() if ".part-" in p.name)[1]
    data = bytearray(part.read_bytes())
    data[len(data) // 2] ^= 0x01
    part.write_bytes(bytes(data))
    with pytest.raises(zoo.ChecksumError, match=part.name):
        sj_bert.from_pretrained("tiny")


def test_a_missing_file_offline_names_it_and_how_to_get_it(tiny_zoo):
    """A record whose files are not here (a checkpoint kept on the hub only), offline: the
    error names the hub repository and the command that trains it again."""
    (tiny_zoo / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"(?s)sj-bert/tiny.*to train it again instead: "
                                                r"python recipes/finetune.py --task sst2"):
        sj_bert.from_pretrained("tiny")


@pytest.mark.skipif("sst2" not in REGISTRY, reason="the zoo has no sst2 checkpoint yet")
def test_sst2_checkpoint_classifies_offline():
    model = sj_bert.from_pretrained("sst2")
    batch = model.tokenizer(["a gripping , beautifully acted film .", "dull and lifeless ."], return_tensors="pt", padding=True)
    with torch.no_grad():
        logits = model(**batch).logits
    assert logits.shape == (2, 2) and torch.isfinite(logits).all()


@pytest.mark.skipif("sst2" not in REGISTRY, reason="the zoo has no sst2 checkpoint yet")
def test_zoo_models_have_float32_parameters_whatever_the_stored_dtype():
    """The sst2 parts are fp16 (config ``dtype: float16``); transformers 5 would load them
    as fp16 where 4.x loads float32. The zoo serves float32 under both, as measured."""
    assert json.loads((zoo.zoo_dir() / "sst2" / "config.json").read_text())["dtype"] == "float16"
    model = sj_bert.from_pretrained("sst2")
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert next(sj_bert.from_pretrained("sst2", dtype=torch.float16).parameters()).dtype == torch.float16


@pytest.mark.parametrize("name", KEPT)
def test_each_kept_checkpoint_scores_its_recorded_dev_metrics(name, recipes):
    """Every checkpoint kept in the repository, loaded offline as a user loads it (parts joined,
    a base model's tensors put back, int8 dequantized), scores exactly the dev metrics its
    record holds."""
    record = REGISTRY[name]
    dev = GLUE / glue.TASK_TO_DIR[record.task]
    if not dev.is_dir():
        pytest.skip(f"{dev} is absent")
    results = recipes.evaluate(["--model_name_or_path", name, "--data_dir", str(GLUE), "--cpu",
                                "--per_device_eval_batch_size", "64"])
    for metric, value in record.metrics.items():
        assert results[metric] == pytest.approx(value, abs=1e-9), metric
    if record.task == "sst2":
        assert results["eval_samples"] == 872


@pytest.mark.skipif("sst2" not in REGISTRY, reason="the zoo has no sst2 checkpoint yet")
@pytest.mark.skipif(not (GLUE / "SST-2" / "dev.tsv").is_file(), reason=f"{GLUE}/SST-2/dev.tsv is absent")
def test_from_pretrained_sst2_scores_the_registry_accuracy_on_every_backend():
    """What a user loads, ``sj_bert.from_pretrained("sst2")``, scores the recorded dev accuracy
    exactly, on the CPU default (the compiled scans), the chunked torch path and the [T, T] reference."""
    from sj_bert.glue import read_glue_file

    dev = read_glue_file(GLUE / "SST-2" / "dev.tsv", "sst2")
    model = sj_bert.from_pretrained("sst2")
    nodes = [m for m in model.modules() if isinstance(m, sj_bert.BPSN)]
    for backend in ("cpu", "torch", "reference"):
        for node in nodes:
            node.backend = backend
        correct = 0
        with torch.no_grad():
            for start in range(0, len(dev), 64):
                rows = dev[start:start + 64]
                batch = model.tokenizer(rows["sentence"], padding=True, truncation=True, max_length=128,
                                        return_tensors="pt")
                correct += int((model(**batch).logits.argmax(-1) == torch.tensor(rows["label"])).sum())
        assert nodes[0].implementation == backend
        assert correct / len(dev) == pytest.approx(REGISTRY["sst2"].metrics["eval_accuracy"], abs=1e-9), backend


def test_a_refreshed_checkpoint_is_not_served_from_a_stale_cache(tiny_zoo):
    """Same file sizes, new weights (a retrained checkpoint): the joined copy is rebuilt."""
    batch_text = ["a fine film"]
    first = sj_bert.from_pretrained("tiny")
    before = first(**first.tokenizer(batch_text, return_tensors="pt")).logits
    with torch.no_grad():
        first.classifier.bias.add_(1.0)
    for part in tiny_zoo.glob("*.part-*"):
        part.unlink()
    first.save_pretrained(tiny_zoo)
    zoo.split_file(tiny_zoo / "model.safetensors", 200_000)
    registry = tiny_zoo.parent / "registry.json"
    data = json.loads(registry.read_text())
    data["checkpoints"][0]["files"] = {f.name: zoo.sha256_file(f) for f in tiny_zoo.iterdir()}
    registry.write_text(json.dumps(data))
    second = sj_bert.from_pretrained("tiny")
    after = second(**second.tokenizer(batch_text, return_tensors="pt")).logits
    torch.testing.assert_close(after, before + 1.0)
