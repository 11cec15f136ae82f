"""Fixtures shared across the test folders: a private zoo cache, a tiny zoo (the zoo and CLI
tests), tiny SNN-BERTs (modeling and energy), GLUE folders in the real layouts (GLUE and
recipes) and the recipe scripts (recipes and zoo).

The suite imports test modules with ``--import-mode=importlib``, so what tests share is a
fixture here or a function of :mod:`sj_bert.testing`, never a sibling test module.
"""

from __future__ import annotations

import importlib
import json
import os
import random
import sys
import types

import pytest
import torch

import sj_bert
from sj_bert import SpikingBertConfig, SpikingBertForSequenceClassification, zoo

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPES = os.path.join(REPO, "recipes")


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


def save_tiny_bert_twin(folder, initializer_range: float = 0.02):
    """A 2-layer, 8-wide BERT classifier (2 labels) with the offline MiniLM tokenizer, in
    ``folder``: the benches' tiny "ANN twin". Returns ``folder``."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    config = BertConfig(vocab_size=30522, hidden_size=8, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=16, max_position_embeddings=32, num_labels=2,
                        initializer_range=initializer_range)
    torch.manual_seed(0)
    BertForSequenceClassification(config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(sj_bert.offline_bert()).save_pretrained(folder)
    return folder


def write_sst2_dev(glue_dir, sentences):
    """``glue_dir/SST-2/dev.tsv`` of ``sentences``, labelled 0, 1, 0, ...; returns ``glue_dir``."""
    (glue_dir / "SST-2").mkdir(parents=True, exist_ok=True)
    (glue_dir / "SST-2" / "dev.tsv").write_text(
        "sentence\tlabel\n" + "".join(f"{s}\t{i % 2}\n" for i, s in enumerate(sentences)))
    return glue_dir


@pytest.fixture(scope="session")
def tiny_bert_twin():
    """``tiny_bert_twin(folder, initializer_range=0.02)``: :func:`save_tiny_bert_twin`."""
    return save_tiny_bert_twin


@pytest.fixture
def sst2_dev_file():
    """``sst2_dev_file(glue_dir, sentences)``: :func:`write_sst2_dev`."""
    return write_sst2_dev


@pytest.fixture
def tiny_sst2_pair(tmp_path):
    """``tiny_sst2_pair(sentences)`` writes a tiny SNN-BERT (``tmp_path/snn``), a tiny BERT with
    MiniLM's tokenizer as its "twin" (``tmp_path/ann``) and an SST-2 dev file of ``sentences``
    (labels 0, 1, 0, ...) under ``tmp_path/glue``; returns ``(snn, ann, glue_dir)``. For the
    benches that compare a model with its twin on SST-2 dev."""
    def write(sentences):
        save_tiny_checkpoint(tmp_path / "snn")
        return tmp_path / "snn", save_tiny_bert_twin(tmp_path / "ann"), write_sst2_dev(tmp_path / "glue", sentences)
    return write


# -- tiny SNN-BERTs ---------------------------------------------------------------------

TINY = dict(
    vocab_size=99,
    hidden_size=16,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=32,
    max_position_embeddings=24,
    # large enough weights that every neuron fires now and then at init
    initializer_range=0.3,
    v_threshold=0.5,
)


def tiny_config(**overrides) -> SpikingBertConfig:
    return SpikingBertConfig(**{**TINY, **overrides})


def tiny_model(seed: int = 0, **overrides) -> SpikingBertForSequenceClassification:
    torch.manual_seed(seed)
    return SpikingBertForSequenceClassification(tiny_config(**overrides)).eval()


def right_padded(lengths: list[int], vocab: int = 99, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``input_ids``, ``attention_mask`` ``[B, max(lengths)]``, real tokens first; the
    padded positions hold random ids so that any leak would show."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, vocab, (len(lengths), max(lengths)), generator=generator)
    mask = torch.zeros_like(ids)
    for row, n in enumerate(lengths):
        mask[row, :n] = 1
    return ids, mask


@pytest.fixture
def tiny() -> types.SimpleNamespace:
    """``tiny.config(**overrides)``, ``tiny.model(seed=0, **overrides)`` (eval mode),
    ``tiny.padded(lengths)`` -> ``(input_ids, attention_mask)``."""
    return types.SimpleNamespace(config=tiny_config, model=tiny_model, padded=right_padded)


# -- GLUE folders -----------------------------------------------------------------------

WORDS = "the a cat dog sat ran on under mat log red blue big small happy sad film plot good bad".split()


def _sentence(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 9))).capitalize() + " ."


def _rows(task: str, n: int, rng: random.Random, labelled: bool = True):
    """Header (or None) and rows of a GLUE file of ``task``, in the official column layout."""
    s = lambda: _sentence(rng)  # noqa: E731
    if task == "cola":
        if not labelled:
            return ["index", "sentence"], [[str(i), s()] for i in range(n)]
        return None, [["gj04", str(rng.randint(0, 1)), rng.choice(["", "*"]), s()] for _ in range(n)]
    if task == "sst2":
        return ["sentence", "label"], [[s(), str(rng.randint(0, 1))] for _ in range(n)]
    if task == "mrpc":
        return ["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"], [
            [str(rng.randint(0, 1)), str(1000 + i), str(2000 + i), s(), s()] for i in range(n)
        ]
    if task == "stsb":
        header = ["index", "genre", "filename", "year", "old_index", "source1", "source2",
                  "sentence1", "sentence2", "score"]
        return header, [
            [str(i), "main-news", "2012", "2012test", str(i), "none", "none", s(), s(), f"{rng.uniform(0, 5):.3f}"]
            for i in range(n)
        ]
    if task == "qqp":
        return ["id", "qid1", "qid2", "question1", "question2", "is_duplicate"], [
            [str(i), str(2 * i), str(2 * i + 1), s(), s(), str(rng.randint(0, 1))] for i in range(n)
        ]
    if task == "mnli":
        header = ["index", "promptID", "pairID", "genre", "sentence1_binary_parse", "sentence2_binary_parse",
                  "sentence1_parse", "sentence2_parse", "sentence1", "sentence2",
                  "label1", "label2", "label3", "label4", "label5", "gold_label"]
        gold = ["entailment", "neutral", "contradiction"]
        return header, [
            [str(i), "", "", "", "", "", "", "", s(), s(), "", "", "", "", "", rng.choice(gold)] for i in range(n)
        ]
    if task == "qnli":
        return ["index", "question", "sentence", "label"], [
            [str(i), s(), s(), rng.choice(["entailment", "not_entailment"])] for i in range(n)
        ]
    if task == "rte":
        return ["index", "sentence1", "sentence2", "label"], [
            [str(i), s(), s(), rng.choice(["entailment", "not_entailment"])] for i in range(n)
        ]
    if task == "wnli":
        return ["index", "sentence1", "sentence2", "label"], [
            [str(i), s(), s(), str(rng.randint(0, 1))] for i in range(n)
        ]
    raise KeyError(task)


def write_tsv(path: str, header, rows, bom: bool = False) -> None:
    lines = ([] if header is None else ["\t".join(header)]) + ["\t".join(row) for row in rows]
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write(("\ufeff" if bom else "") + "\n".join(lines) + "\n")


DIRS = {"cola": "CoLA", "sst2": "SST-2", "mrpc": "MRPC", "stsb": "STS-B", "qqp": "QQP",
        "mnli": "MNLI", "qnli": "QNLI", "rte": "RTE", "wnli": "WNLI"}


def make_glue(root, task: str, n_train: int = 16, n_dev: int = 7, seed: int = 0) -> str:
    """Write ``root/<TASK>/{train,dev}.tsv`` (MNLI: ``dev_matched``/``dev_mismatched``); return root."""
    rng = random.Random(seed)
    folder = os.path.join(str(root), DIRS[task])
    os.makedirs(folder, exist_ok=True)
    bom = task == "mrpc"
    devs = ["dev_matched.tsv", "dev_mismatched.tsv"] if task == "mnli" else ["dev.tsv"]
    write_tsv(os.path.join(folder, "train.tsv"), *_rows(task, n_train, rng), bom=bom)
    for i, name in enumerate(devs):
        write_tsv(os.path.join(folder, name), *_rows(task, n_dev + i, rng), bom=bom)
    return str(root)


class GlueFiles:
    """Helpers to write GLUE-format files: ``make`` (a task folder), ``rows``, ``write``, ``DIRS``."""

    make = staticmethod(make_glue)
    rows = staticmethod(lambda task, n, seed=0, labelled=True: _rows(task, n, random.Random(seed), labelled))
    write = staticmethod(write_tsv)
    DIRS = DIRS


@pytest.fixture(scope="session")
def glue_files():
    return GlueFiles


# -- the recipe scripts -----------------------------------------------------------------

def _load_script(name: str):
    """The recipe script ``name`` as a module, imported as the scripts import each other: with
    ``recipes/`` on ``sys.path``, where Python puts it when a script runs."""
    if RECIPES not in sys.path:
        sys.path.insert(0, RECIPES)
    return importlib.import_module(name)


def _reset_accelerate() -> None:
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


class Recipes:
    """The recipe scripts, run in-process: ``recipes.finetune([...argv])`` returns what ``main`` returns.

    Each call starts from a fresh Accelerate state, as a new process would; the modules themselves
    are ``recipes.modules.finetune`` etc.
    """

    def __init__(self):
        self.modules = type("Modules", (), {n: _load_script(n) for n in ("finetune", "evaluate", "energy", "publish",
                                                                          "glue_suite", "_distill", "bundle",
                                                                          "distill_base")})
        self.repo = REPO

    def _run(self, name, argv):
        try:
            return getattr(self.modules, name).main([str(a) for a in argv])
        finally:
            _reset_accelerate()

    def finetune(self, argv):
        return self._run("finetune", argv)

    def evaluate(self, argv):
        return self._run("evaluate", argv)

    def energy(self, argv):
        return self._run("energy", argv)

    def publish(self, argv):
        return self._run("publish", argv)

    def distill_base(self, argv):
        return self._run("distill_base", argv)


@pytest.fixture(scope="session")
def recipes():
    return Recipes()


# -- the benchmark scripts ----------------------------------------------------------------

def load_bench_script(name: str) -> types.ModuleType:
    """``bench/<name>.py`` as a fresh module (benchmarks are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", os.path.join(REPO, "bench", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def bench_script():
    """``bench_script("neuron")``: ``bench/neuron.py`` as a fresh module."""
    return load_bench_script
