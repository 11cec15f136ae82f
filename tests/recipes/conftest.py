"""Fixtures for the recipe tests: a tiny BERT and a finished fine-tuning run (the GLUE folders
and the scripts themselves are fixtures of ``tests/conftest.py``)."""

from __future__ import annotations

import pytest


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
