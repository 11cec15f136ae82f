"""sj_bert.glue: the nine tasks' file layouts, the hub path, the official metrics, clear errors."""

from __future__ import annotations

import math
import os

import datasets
import pytest

from sj_bert import glue

NINE = ["cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli"]

# One hand-written row per task in its file layout, and what load_glue must make of it.
GOLDEN = {
    "cola": (["gj04", "0", "*", "Cats sat on ."], {"sentence": "Cats sat on .", "label": 0}),
    "sst2": (["a charming film . ", "1"], {"sentence": "a charming film . ", "label": 1}),
    "mrpc": (
        ["1", "11", "12", "He said it .", '" He said it , " she said .'],
        {"sentence1": "He said it .", "sentence2": '" He said it , " she said .', "label": 1},
    ),
    "stsb": (
        ["0", "main-news", "f", "2012", "0", "none", "none", "A man runs .", "A man jogs .", "3.500"],
        {"sentence1": "A man runs .", "sentence2": "A man jogs .", "label": 3.5},
    ),
    "qqp": (["0", "1", "2", "Why ?", "How ?", "1"], {"question1": "Why ?", "question2": "How ?", "label": 1}),
    "mnli": (
        ["0", "", "", "", "", "", "", "", "A dog barks .", "A cat sleeps . ", "", "", "", "", "", "contradiction"],
        {"premise": "A dog barks .", "hypothesis": "A cat sleeps . ", "label": 2},
    ),
    "qnli": (
        ["0", "Who ran ?", "Bob ran .", "not_entailment"],
        {"question": "Who ran ?", "sentence": "Bob ran .", "label": 1},
    ),
    "rte": (
        ["0", "Bob ran .", "Bob moved .", "entailment"],
        {"sentence1": "Bob ran .", "sentence2": "Bob moved .", "label": 0},
    ),
    "wnli": (
        ["0", "Bob ran .", "Bob moved .", "1"],
        {"sentence1": "Bob ran .", "sentence2": "Bob moved .", "label": 1},
    ),
}


@pytest.mark.parametrize("task", NINE)
def test_each_task_folder_loads(tmp_path, glue_files, task):
    glue_files.make(tmp_path, task, n_train=5, n_dev=3)
    folder = tmp_path / glue_files.DIRS[task]
    header, rows = glue_files.rows(task, 4, seed=1)
    glue_files.write(folder / "train.tsv", header, [GOLDEN[task][0], *rows], bom=task == "mrpc")

    data = glue.load_glue(task, str(tmp_path))
    dev = ["validation_matched", "validation_mismatched"] if task == "mnli" else ["validation"]
    assert list(data) == ["train", *dev]
    assert [len(data[split]) for split in data] == [5] + [3 + i for i in range(len(dev))]
    first, second = glue.TASK_TO_KEYS[task]
    assert data["train"].column_names == [c for c in (first, second) if c] + ["label", "idx"]
    assert data["train"][0] == {**GOLDEN[task][1], "idx": 0}
    if task == "stsb":
        assert data["train"].features["label"].dtype == "float32"
    else:
        assert data["train"].features["label"].names == list(glue.TASK_LABELS[task])
    # the task's own folder works as data_dir too
    assert glue.load_glue(task, str(folder), split="train")["train"][0] == data["train"][0]


def test_mrpc_bom_and_cola_headerless_are_read_as_in_the_official_files(tmp_path, glue_files):
    glue_files.make(tmp_path, "mrpc")
    glue_files.make(tmp_path, "cola", n_train=4)
    with open(tmp_path / "MRPC" / "train.tsv", "rb") as f:
        assert f.read(3) == b"\xef\xbb\xbf"  # the fixture writes the BOM, as GLUE does
    with open(tmp_path / "CoLA" / "train.tsv", encoding="utf-8") as f:
        assert len(f.readline().split("\t")) == 4 and not f.readline().startswith("source")
    assert len(glue.read_glue_file(tmp_path / "CoLA" / "train.tsv", "cola")) == 4  # no row taken as header
    assert glue.read_glue_file(tmp_path / "MRPC" / "train.tsv", "mrpc")["label"][0] in (0, 1)


def test_unlabelled_test_file_reads_with_minus_one_labels(tmp_path, glue_files):
    for task in ("cola", "sst2", "mnli"):
        glue_files.make(tmp_path, task)
    glue_files.write(tmp_path / "CoLA" / "test.tsv", *glue_files.rows("cola", 3, labelled=False))
    glue_files.write(tmp_path / "SST-2" / "test.tsv", ["index", "sentence"], [["0", "Fine ."], ["1", "Bad ."]])
    assert glue.load_glue("cola", str(tmp_path), split="test")["test"]["label"] == [-1] * 3
    sst2_test = glue.load_glue("sst2", str(tmp_path), split="test")["test"]
    assert sst2_test[1] == {"sentence": "Bad .", "label": -1, "idx": 1}
    with pytest.raises(FileNotFoundError, match=r"MNLI/test_matched\.tsv"):
        glue.load_glue("mnli", str(tmp_path), split="test")


def test_hub_path_loads_nyu_mll_glue_and_keeps_the_requested_splits(monkeypatch):
    calls = []
    splits = ["train", "validation_matched", "validation_mismatched", "test_matched", "test_mismatched"]

    def fake_load_dataset(path, name):
        calls.append((path, name))
        return datasets.DatasetDict({s: datasets.Dataset.from_dict({"premise": ["p"]}) for s in splits})

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    assert list(glue.load_glue("MNLI")) == ["train", "validation_matched", "validation_mismatched"]
    assert list(glue.load_glue("mnli", split="validation_mismatched")) == ["validation_mismatched"]
    assert calls == [("nyu-mll/glue", "mnli")] * 2


@pytest.mark.parametrize(
    "task, predictions, references, expected",
    [
        # TP=2 TN=1 FP=1 FN=1: (2*1 - 1*1) / sqrt(3*3*2*2) = 1/6
        ("cola", [1, 1, 0, 0, 1], [1, 0, 0, 1, 1], {"matthews_correlation": 1 / 6}),
        ("sst2", [0, 1, 1, 0], [0, 1, 0, 0], {"accuracy": 0.75}),
        # accuracy 3/5; F1 = 2TP / (2TP + FP + FN) = 4/6
        ("mrpc", [1, 1, 0, 0, 1], [1, 0, 0, 1, 1], {"accuracy": 0.6, "f1": 2 / 3}),
        ("qqp", [1, 1, 0, 0, 1], [1, 0, 0, 1, 1], {"accuracy": 0.6, "f1": 2 / 3}),
        # ranks (3,1,2) vs (1,2,3): rho = 1 - 6*6/(3*8) = -0.5; Pearson of the same values: -1/2
        ("stsb", [3.0, 1.0, 2.0], [1.0, 2.0, 3.0], {"pearson": -0.5, "spearmanr": -0.5}),
        # cov 4, var 2 and 78/9: r = 12/sqrt(156); monotone, so Spearman 1
        ("stsb", [0.0, 1.0, 2.0], [0.0, 1.0, 4.0], {"pearson": 12 / math.sqrt(156), "spearmanr": 1.0}),
        ("mnli", [0, 1, 2, 2], [0, 1, 2, 1], {"accuracy": 0.75}),
        ("qnli", [0, 1, 1, 1, 0], [0, 1, 0, 1, 0], {"accuracy": 0.8}),
        ("rte", [1, 1], [0, 1], {"accuracy": 0.5}),
        ("wnli", [1, 0, 0], [1, 0, 0], {"accuracy": 1.0}),
    ],
)
def test_metrics_on_hand_made_predictions(task, predictions, references, expected):
    got = glue.compute_metrics(task, predictions, references)
    assert set(got) == set(expected)
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, rel=1e-12, abs=1e-12)
        assert isinstance(got[name], float)


def test_mnli_is_scored_on_matched_and_mismatched():
    assert glue.eval_splits("mnli") == ["validation_matched", "validation_mismatched"]
    assert [glue.metric_suffix(s) for s in glue.eval_splits("mnli")] == ["", "_mm"]
    assert glue.eval_splits("rte") == ["validation"]


def test_unknown_task_lists_the_nine():
    message = "unknown GLUE task 'sst5'; expected one of: cola, sst2, mrpc, stsb, qqp, mnli, qnli, rte, wnli"
    with pytest.raises(ValueError, match=message):
        glue.load_glue("sst5", "/nonexistent")
    with pytest.raises(ValueError, match=message):
        glue.compute_metrics("sst5", [0], [0])


def test_missing_file_is_named(tmp_path, glue_files):
    glue_files.make(tmp_path, "rte")
    os.remove(tmp_path / "RTE" / "dev.tsv")
    with pytest.raises(FileNotFoundError, match=f"GLUE rte data file not found: {tmp_path}/RTE/dev.tsv"):
        glue.load_glue("rte", str(tmp_path))
    # a glue_data root without the task's folder names the file under <root>/<TASK>
    with pytest.raises(FileNotFoundError, match=f"GLUE qqp data file not found: {tmp_path}/QQP/train.tsv"):
        glue.load_glue("qqp", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="GLUE data_dir not found: /nonexistent/glue"):
        glue.load_glue("rte", "/nonexistent/glue")


def test_wrong_columns_are_named(tmp_path, glue_files):
    sst2 = tmp_path / "SST-2"
    sst2.mkdir()
    glue_files.write(sst2 / "train.tsv", ["text", "label"], [["Fine .", "1"]])
    with pytest.raises(ValueError, match=r"not a GLUE sst2 file: missing column\(s\) \['sentence'\]; "
                                         r"expected \['sentence', 'label'\], found \['text', 'label'\]"):
        glue.load_glue("sst2", str(tmp_path), split="train")
    # an SST-2 file given as CoLA: neither CoLA's header nor its 4 header-less columns
    with pytest.raises(ValueError, match=r"or no header and 4 columns: source, label, original_mark, sentence"):
        glue.read_glue_file(sst2 / "train.tsv", "cola")
    # a dev file without its label column cannot be scored
    glue_files.write(sst2 / "dev.tsv", ["index", "sentence"], [["0", "Fine ."]])
    with pytest.raises(ValueError, match=r"dev\.tsv: no label column 'label' in GLUE sst2 file"):
        glue.load_glue("sst2", str(tmp_path), split="validation")


def test_bad_rows_are_named_with_their_line(tmp_path, glue_files):
    header, rows = glue_files.rows("rte", 3)
    rows[1][3] = "maybe"
    glue_files.write(tmp_path / "dev.tsv", header, rows)
    with pytest.raises(ValueError, match=r"dev\.tsv:3: bad rte label 'maybe'; expected one of \['entailment', "):
        glue.read_glue_file(tmp_path / "dev.tsv", "rte")
    rows[1] = rows[1][:3]
    glue_files.write(tmp_path / "dev.tsv", header, rows)
    with pytest.raises(ValueError, match=r"dev\.tsv:3: 3 fields, expected 4"):
        glue.read_glue_file(tmp_path / "dev.tsv", "rte")


REAL_GLUE = os.environ.get(
    "SJ_BERT_GLUE_DIR",
    os.path.join(os.path.dirname(__file__), os.pardir, os.pardir, "shared", "data", "glue"),
)


@pytest.mark.skipif(not os.path.isdir(REAL_GLUE), reason="no GLUE copy (set SJ_BERT_GLUE_DIR)")
def test_real_glue_dev_sets_load_with_their_official_sizes():
    sizes = {
        "cola": [1043], "sst2": [872], "mrpc": [408], "stsb": [1500], "mnli": [9815, 9832],
        "qnli": [5463], "rte": [277], "wnli": [71],
    }
    for task, expected in sizes.items():
        dev = glue.load_glue(task, REAL_GLUE, split="validation")
        assert [len(split) for split in dev.values()] == expected, task
        labels = dev[next(iter(dev))]["label"]
        assert min(labels) >= 0, task
    assert glue.load_glue("cola", REAL_GLUE, split="train")["train"]["label"].count(1) == 6023


def test_length_buckets_cut_a_split_by_tokenized_length():
    import datasets

    lengths = [3, 9, 10, 19, 20, 44, 45, 100]
    processed = datasets.DatasetDict({"validation_mismatched": datasets.Dataset.from_dict(
        {"input_ids": [[1] * n for n in lengths], "labels": list(range(len(lengths)))})})
    buckets = glue.length_buckets(processed, "validation_mismatched", [10, 20, 30, 45])
    assert {name: list(rows["labels"]) for name, rows in buckets.items()} == {
        "validation_mismatched@len_0_10": [0, 1], "validation_mismatched@len_10_20": [2, 3],
        "validation_mismatched@len_20_30": [4], "validation_mismatched@len_30_45": [5],
        "validation_mismatched@len_45_plus": [6, 7],
    }
    assert [glue.metric_suffix(name) for name in buckets] == ["_mm_len_0_10", "_mm_len_10_20", "_mm_len_20_30",
                                                              "_mm_len_30_45", "_mm_len_45_plus"]
    assert glue.metric_suffix("validation@len_0_10") == "_len_0_10"
    for bad in ([], [0, 10], [20, 10], [10, 10]):
        with pytest.raises(ValueError, match="length buckets: expected increasing positive token counts"):
            glue.length_buckets(processed, "validation_mismatched", bad)


def test_bi_encoder_rows_hold_each_sentence_alone_and_pad_per_side():
    import datasets
    from transformers import AutoTokenizer

    import sj_bert

    tokenizer = AutoTokenizer.from_pretrained(sj_bert.offline_bert())
    raw = datasets.DatasetDict({"validation": datasets.Dataset.from_dict({
        "sentence1": ["a cat sat on the mat", "dogs run"], "sentence2": ["the cat sat", "a big red dog runs far away"],
        "label": [1, 0], "idx": [0, 1]})})
    cross = glue.tokenize(raw, "mrpc", tokenizer, 64, False)["validation"]
    bi = glue.tokenize(raw, "mrpc", tokenizer, 64, False, pair_encoding="bi")["validation"]
    assert set(bi.column_names) == {"input_ids_a", "attention_mask_a", "input_ids_b", "attention_mask_b", "labels"}
    for i, (first, second) in enumerate(zip(raw["validation"]["sentence1"], raw["validation"]["sentence2"])):
        assert bi[i]["input_ids_a"] == tokenizer(first)["input_ids"]
        assert bi[i]["input_ids_b"] == tokenizer(second)["input_ids"]
        # the cross-encoder's row holds both, [CLS] a [SEP] b [SEP]
        assert len(cross[i]["input_ids"]) == len(bi[i]["input_ids_a"]) + len(bi[i]["input_ids_b"]) - 1
    batch = glue.make_collator(tokenizer, False, pair_encoding="bi")([bi[0], bi[1]])
    assert batch["input_ids_a"].shape == (2, 8) and batch["input_ids_b"].shape == (2, 9)
    assert batch["attention_mask_a"].sum(1).tolist() == [8, 4] and batch["labels"].tolist() == [1, 0]
    assert batch["input_ids_a"][1, 4:].tolist() == [tokenizer.pad_token_id] * 4
    # mixed precision pads each side to a multiple of 8
    padded = glue.make_collator(tokenizer, False, "bf16", pair_encoding="bi")([bi[0], bi[1]])
    assert padded["input_ids_a"].shape == (2, 8) and padded["input_ids_b"].shape == (2, 16)
    # length buckets go by the longer sentence: the steps the pair's batch runs for
    buckets = glue.length_buckets(datasets.DatasetDict({"validation": bi}), "validation", [9])
    assert {name: len(rows) for name, rows in buckets.items()} == {"validation@len_0_9": 1, "validation@len_9_plus": 1}


def test_bi_encoding_needs_a_pair_task():
    assert glue.is_pair_task("rte") and not glue.is_pair_task("sst2")
    assert set(glue.PAIR_TASKS) == {"mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli"}
    with pytest.raises(ValueError, match="GLUE cola has one sentence per example"):
        glue.check_pair_encoding("bi", "cola")
    with pytest.raises(ValueError, match="pair_encoding must be one of cross, bi, got 'siamese'"):
        glue.check_pair_encoding("siamese", "mrpc")
    assert glue.check_pair_encoding("cross", "sst2") == "cross"
