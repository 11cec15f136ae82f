"""Fixtures for the recipe tests: tiny GLUE folders in the real layouts, a tiny BERT, the scripts."""

from __future__ import annotations

import importlib.util
import os
import random

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RECIPES = os.path.join(REPO, "recipes")

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


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> str:
    """A randomly initialised 2-layer, 32-wide BERT with the offline MiniLM tokenizer."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    import sj_bert

    folder = str(tmp_path_factory.mktemp("tiny_bert"))
    tokenizer = AutoTokenizer.from_pretrained(sj_bert.offline_bert())
    config = BertConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=48, max_position_embeddings=64,
    )
    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"sj_bert_recipe_{name}", os.path.join(RECIPES, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
        self.modules = type("Modules", (), {n: _load_script(n) for n in ("finetune", "evaluate", "energy", "publish")})
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


@pytest.fixture(scope="session")
def recipes():
    return Recipes()


def with_flags(argv, *extra):
    """``argv`` with ``extra`` flags: a flag already there gets the new value, others are appended
    (a flag followed by another flag, or last, takes no value)."""
    argv, extra = [str(a) for a in argv], [str(a) for a in extra]
    i = 0
    while i < len(extra):
        flag = extra[i]
        has_value = i + 1 < len(extra) and not extra[i + 1].startswith("--")
        if has_value and flag in argv:
            argv[argv.index(flag) + 1] = extra[i + 1]
        elif flag not in argv:
            argv += extra[i : i + 1 + has_value]
        i += 1 + has_value
    return argv


class FinishedRun:
    """A finished finetune.py run on tiny SST-2 data: ``data`` (the GLUE root), ``out`` (its
    folder: model, results, card, ``step_1`` and ``step_2``) and ``argv(output_dir, *extra)``,
    its arguments for another folder with ``extra`` flags set (see :func:`with_flags`)."""

    # 8 samples, batch 4: 2 steps an epoch; a checkpoint after each step
    N_DEV = 5
    FLAGS = ("--seed", "0", "--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "4",
             "--num_train_epochs", "1", "--max_train_steps", "2", "--checkpointing_steps", "1",
             "--lr_scheduler_type", "constant")

    def __init__(self, root, model, recipes, glue_files):
        self.model = model
        self.data = glue_files.make(root / "glue", "sst2", n_train=8, n_dev=self.N_DEV)
        self.out = root / "out"
        recipes.finetune(self.argv(self.out))

    def argv(self, output_dir, *extra):
        base = ["--task", "sst2", "--data_dir", self.data, "--model_name_or_path", self.model,
                "--output_dir", output_dir, *self.FLAGS]
        return with_flags(base, *extra)

    def copy(self, dest):
        """A copy of the run's folder at ``dest``, to change or damage."""
        import shutil

        shutil.copytree(self.out, dest)
        return dest


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory, tiny_bert, recipes, glue_files) -> FinishedRun:
    return FinishedRun(tmp_path_factory.mktemp("finished"), tiny_bert, recipes, glue_files)
