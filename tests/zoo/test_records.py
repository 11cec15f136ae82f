"""Every record of the registry the package ships, as timm's tests go over ``list_models()``:
its card, its files and a small golden output. Records whose files are neither in the
checkout nor reachable (offline) are skipped with the reason."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import sj_bert
from sj_bert import glue, zoo
from sj_bert.files import read_json

NAMES = sj_bert.list_pretrained(print_table=False)
# logits of each checkpoint for GOLDEN_SENTENCES (float32, the CPU torch path), measured once
# from the published files; a change in the model code or in the files shows here
GOLDEN_SENTENCES = ["a gripping , beautifully acted film .", "dull and lifeless ."]
GOLDEN_LOGITS = {
    "sst2": [[-3.2707, 3.8813], [2.8776, -3.3845]],
}


def _local(record: zoo.PretrainedRecord):
    folder = zoo.zoo_dir() / record.name
    if not all((folder / name).is_file() for name in record.files):
        pytest.skip(f"{record.name}: its files are not in this checkout (hub: {record.hub_id})")
    return folder


def test_the_registry_ships_inside_the_package(monkeypatch):
    monkeypatch.delenv("SJ_BERT_ZOO", raising=False)
    assert zoo.registry_path() == Path(zoo.__file__).resolve().parent / "registry.json"
    assert zoo.registry_path().is_file() and NAMES


@pytest.mark.parametrize("name", NAMES)
def test_record_card_names_the_record(name):
    """The card beside the files is the one publish.py wrote from this record."""
    record = zoo.load_registry()[name]
    folder = _local(record)
    card = (folder / "README.md").read_text(encoding="utf-8")
    config = read_json(folder / "config.json")
    dtype = config.get("dtype") or config.get("torch_dtype") or "float32"  # what the files were written in
    assert "README.md" in record.files
    assert f"- glue-{record.task}" in card
    assert card.endswith(zoo.published_section(record, dtype))


@pytest.mark.parametrize("name", NAMES)
def test_record_files_match_and_load(name):
    """The record's task, labels and files agree with what loads from them."""
    record = zoo.load_registry()[name]
    _local(record)
    model = sj_bert.from_pretrained(name)
    assert type(model).__name__ == record.architecture
    assert tuple(model.config.id2label[i] for i in sorted(model.config.id2label)) == record.labels
    assert record.main_metric == glue.MAIN_METRIC[record.task] and record.main_metric in record.metrics
    assert getattr(model.config, "coding", "ann") == record.coding


@pytest.mark.parametrize("name", NAMES)
def test_record_golden_output(name):
    record = zoo.load_registry()[name]
    _local(record)
    model = sj_bert.from_pretrained(name)
    for node in model.modules():
        if isinstance(node, sj_bert.BPSN):
            node.backend = "torch"
    batch = model.tokenizer(GOLDEN_SENTENCES, return_tensors="pt", padding=True)
    with torch.no_grad():
        logits = model(**batch).logits
    if name not in GOLDEN_LOGITS:  # a new record: its logits, measured here, for the table above
        measured = [[round(v, 4) for v in row] for row in logits.tolist()]
        pytest.fail(f"{name}: add its logits for GOLDEN_SENTENCES to GOLDEN_LOGITS: {name!r}: {measured},")
    torch.testing.assert_close(logits, torch.tensor(GOLDEN_LOGITS[name]), rtol=0, atol=1e-3)
