"""recipes/distill_base.py: a spiking base distilled from a tiny BERT on tiny GLUE texts, then
fine-tuned with finetune.py."""

from __future__ import annotations

import json
import os

import pytest
import torch
from safetensors.torch import load_file

N_SST2, N_MRPC = 24, 10


def distill_args(data, teacher, output_dir, *extra):
    return ["--data_dir", str(data), "--teacher", str(teacher), "--output_dir", str(output_dir),
            "--tasks", "sst2", "mrpc", "cola", "--eval_texts", "6", "--max_length", "32",
            "--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "4", "--seed", "0",
            *map(str, extra)]


@pytest.fixture(scope="module")
def texts(tmp_path_factory, glue_files):
    """GLUE folders for SST-2 (single sentences) and MRPC (pairs); CoLA has none."""
    root = tmp_path_factory.mktemp("texts") / "glue"
    glue_files.make(root, "sst2", n_train=N_SST2, n_dev=3)
    glue_files.make(root, "mrpc", n_train=N_MRPC, n_dev=3, seed=1)
    return root


@pytest.fixture(scope="module")
def teacher(tmp_path_factory, tiny_bert_twin):
    """A tiny BERT whose layers change what they read (large initial weights), so that a student
    that ignores them is far from it: the randomly initialised ``tiny_bert``'s layers barely move
    the residual stream, and a converted student starts almost on top of it."""
    return tiny_bert_twin(tmp_path_factory.mktemp("teacher"), initializer_range=0.5)


@pytest.fixture(scope="module")
def base_run(tmp_path_factory, teacher, recipes, texts):
    """An untrained start (a spent budget: the student as built) and 40 steps, same settings."""
    root = tmp_path_factory.mktemp("base")
    flags = ("--learning_rate", "3e-3", "--max_train_steps", "40", "--lr_scheduler_type", "constant")
    start = recipes.distill_base(distill_args(texts, teacher, root / "start", *flags, "--max_minutes", "0"))
    trained = recipes.distill_base(distill_args(texts, teacher, root / "out", *flags))
    return root / "out", start, trained


def test_distill_base_writes_a_spiking_base_with_its_texts_and_held_out_scores(base_run):
    out, _, results = base_run
    config = json.load(open(out / "config.json"))
    assert config["model_type"] == "spiking_bert" and config["coding"] == "individual"
    assert config["architectures"] == ["SpikingBertModel"]
    # the recipe's individual-coding defaults, as finetune.py gives an SNN-BERT built from BERT
    assert config["per_channel"] is True and config["v_threshold"] == 0.25 and config["pooling"] == "mean"
    assert results["texts"] == {"sst2": N_SST2, "mrpc": N_MRPC}
    assert set(results["skipped"]) == {"cola"} and "no train data" in results["skipped"]["cola"]
    assert results["held_out_texts"] == 6 and results["train_texts"] == N_SST2 + N_MRPC - 6
    assert results["train_steps"] == 40 and results["stopped_early"] is False
    assert len(results["eval_cosine_by_layer"]) == 2  # the teacher's two layers
    assert -1 <= results["eval_pooled_cosine"] <= 1 and "eval_pooled_loss" not in results  # measured, not trained
    assert 0 < results["energy"]["firing_rate"] < 1
    assert json.load(open(out / "all_results.json")) == results
    card = (out / "README.md").read_text()
    assert "distilled from an ANN BERT on unlabelled text" in card and results["command"] in card
    assert f"sentence embeddings (last layer, mean-pooled) | {results['eval_pooled_cosine']:.3f} |" in card
    assert "recipes/distill_base.py" in results["command"]


def test_distillation_brings_the_student_toward_its_teacher(base_run):
    _, start, trained = base_run
    assert start["train_steps"] == 0 and start["stopped_early"] is True
    assert start["train_loss"] is None and start["train_hidden_loss"] is None  # no batch: no mean, not 0
    assert trained["eval_hidden_loss"] < 0.7 * start["eval_hidden_loss"]
    assert trained["eval_cosine_by_layer"][-1] > start["eval_cosine_by_layer"][-1]


def test_pooled_distillation_loss_values(recipes):
    _distill = recipes.modules._distill
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])  # padding: never pooled
    teacher = torch.tensor([[[1.0, 0.0], [1.0, 2.0], [0.0, 0.0]],
                            [[0.0, 3.0], [0.0, 0.0], [0.0, 0.0]]])  # embeddings [1, 1] and [0, 3]
    student = torch.tensor([[[4.0, 4.0], [0.0, 0.0], [-99.0, 7.0]],  # [2, 2]: the teacher's direction
                            [[3.0, 0.0], [5.0, 5.0], [5.0, 5.0]]])  # [3, 0]: orthogonal to it
    assert _distill.pooled_cosines(student, teacher, mask).tolist() == pytest.approx([1.0, 0.0])
    assert _distill.pooled_distillation_loss(student, teacher, mask).item() == pytest.approx(0.5)
    assert _distill.pooled_distillation_loss(-teacher, teacher, mask).item() == pytest.approx(2.0)
    student.requires_grad_(True)
    _distill.pooled_distillation_loss(student, teacher, mask).backward()
    assert student.grad[:, 2].abs().sum() == 0 and student.grad[1, 1].abs().sum() == 0  # padding gets no gradient
    assert student.grad[1, 0, 1] < 0  # the orthogonal one is pulled toward the teacher's [0, 3]


def test_pooled_distillation_brings_the_sentence_embeddings_toward_the_teacher(teacher, recipes, texts, tmp_path):
    flags = ("--learning_rate", "3e-3", "--max_train_steps", "40", "--lr_scheduler_type", "constant",
             "--kd_hidden_weight", "0", "--kd_pooled_weight", "1")
    start = recipes.distill_base(distill_args(texts, teacher, tmp_path / "start", *flags, "--max_minutes", "0"))
    trained = recipes.distill_base(distill_args(texts, teacher, tmp_path / "out", *flags))
    assert trained["train_loss"] == pytest.approx(trained["train_pooled_loss"])  # the only term on
    # the loss is a mean over batches (of 4 and 2 texts), the cosine one over texts
    assert trained["eval_pooled_loss"] == pytest.approx(1 - trained["eval_pooled_cosine"], abs=0.02)
    assert trained["eval_pooled_cosine"] > start["eval_pooled_cosine"] + 0.05
    manifest = json.loads((tmp_path / "out" / "run_manifest.json").read_text())
    assert manifest["run"]["kd_pooled_weight"] == 1.0


def test_pairs_are_distilled_as_pairs(tiny_bert, recipes, texts):
    from transformers import AutoTokenizer

    distill_base = recipes.modules.distill_base

    args = distill_base.parse_args(distill_args(texts, tiny_bert, "/unused", "--tasks", "mrpc"))
    pool, _ = distill_base.load_texts(args, AutoTokenizer.from_pretrained(tiny_bert))
    assert len(pool) == N_MRPC
    assert all(1 in row["token_type_ids"] for row in pool)  # the second sentence is segment B


def test_pairs_are_distilled_apart_with_pair_encoding_bi(tiny_bert, recipes, texts, tmp_path):
    from transformers import AutoTokenizer

    distill_base = recipes.modules.distill_base
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    args = distill_base.parse_args(distill_args(texts, tiny_bert, "/unused", "--pair_encoding", "bi"))
    pool, sources = distill_base.load_texts(args, tokenizer)
    assert sources["texts"] == {"sst2": N_SST2, "mrpc": 2 * N_MRPC}  # a pair gives two texts
    raw = recipes.modules.distill_base.glue.load_glue("mrpc", str(texts), split="train")["train"]
    sentences = [row["sentence1"] for row in raw] + [row["sentence2"] for row in raw]
    alone = tokenizer(sentences, truncation=True, max_length=32)["input_ids"]
    assert pool["input_ids"][N_SST2:] == alone  # each sentence as it is encoded alone
    assert "token_type_ids" not in pool.column_names  # all 0 for a sentence alone: the default
    assert all(sum(mask) == len(ids) for ids, mask in zip(pool["input_ids"], pool["attention_mask"]))
    cross = distill_base.parse_args(distill_args(texts, tiny_bert, "/unused", "--pair_encoding", "cross"))
    assert cross.pair_encoding is None  # the default, recorded as unset
    results = recipes.distill_base(distill_args(texts, tiny_bert, tmp_path / "out", "--tasks", "mrpc",
                                                "--pair_encoding", "bi", "--max_train_steps", "1"))
    assert results["pair_encoding"] == "bi" and results["texts"] == {"mrpc": 2 * N_MRPC}
    assert "each sentence of a pair a text of its own" in (tmp_path / "out" / "README.md").read_text()


def test_finetune_starts_from_the_distilled_base(base_run, teacher, recipes, texts, tmp_path):
    out, _, _ = base_run
    results = recipes.finetune(["--task", "mrpc", "--data_dir", texts, "--model_name_or_path", out,
                                "--output_dir", tmp_path / "mrpc", "--max_train_steps", "2", "--freeze_embeddings",
                                "--per_device_train_batch_size", "4", "--neuron_lr", "1e-2", "--seed", "0"])
    assert results["train_steps"] == 2 and "eval_f1" in results
    tuned, base = load_file(tmp_path / "mrpc" / "model.safetensors"), load_file(out / "model.safetensors")
    original = load_file(os.path.join(teacher, "model.safetensors"))
    key = "embeddings.word_embeddings.weight"
    assert not torch.equal(base[key], original[f"bert.{key}"])  # the distillation trained them...
    assert torch.equal(tuned[f"bert.{key}"], base[key])  # ... and the task run starts from (and keeps) them


def test_text_file_adds_its_lines(tiny_bert, recipes, texts, tmp_path):
    lines = tmp_path / "texts.txt"
    lines.write_text("the first text\n\n  \nthe second one\na third\n" * 4, encoding="utf-8")
    results = recipes.distill_base(distill_args(texts, tiny_bert, tmp_path / "out", "--tasks", "sst2",
                                                "--text_file", lines, "--max_train_steps", "1"))
    assert results["texts"] == {"sst2": N_SST2, "text_file": 12}  # blank lines skipped
    only = recipes.distill_base(distill_args(texts, tiny_bert, tmp_path / "only", "--no_tasks", "--text_file", lines,
                                             "--max_train_steps", "1"))
    assert only["texts"] == {"text_file": 12} and only["train_texts"] == 6


def test_a_cut_run_resumes_to_the_uninterrupted_weights(tiny_bert, recipes, texts, tmp_path):
    flags = ("--max_train_steps", "6", "--lr_scheduler_type", "constant")
    recipes.distill_base(distill_args(texts, tiny_bert, tmp_path / "whole", *flags))
    cut = tmp_path / "cut"
    stopped = recipes.distill_base(distill_args(texts, tiny_bert, cut, "--max_train_steps", "3",
                                                "--lr_scheduler_type", "constant", "--checkpointing_steps", "3"))
    assert stopped["train_steps"] == 3 and os.path.isdir(cut / "step_3")
    resumed = recipes.distill_base(distill_args(texts, tiny_bert, cut, *flags, "--checkpointing_steps", "3",
                                                "--resume_from_checkpoint", "latest"))
    assert resumed["train_steps"] == 6
    whole, again = load_file(tmp_path / "whole" / "model.safetensors"), load_file(cut / "model.safetensors")
    assert whole.keys() == again.keys() and all(torch.equal(whole[k], again[k]) for k in whole)


def test_another_run_in_the_folder_is_refused(base_run, teacher, recipes, texts):
    out, _, _ = base_run
    with pytest.raises(ValueError, match=r"holds another run .*--learning_rate: 0.003 there, 0.0001 here"):
        recipes.distill_base(distill_args(texts, teacher, out, "--max_train_steps", "40"))


@pytest.mark.parametrize("extra, message", [
    (("--no_tasks",), "no text to distil on: give --tasks, --text_file or both"),
    (("--text_file", "/nonexistent/texts.txt"), "--text_file: no such file: /nonexistent/texts.txt"),
    (("--kd_hidden_weight", "0"), "--kd_hidden_weight, --kd_attention_weight and --kd_pooled_weight are all 0"),
    (("--kd_hidden_weight", "0", "--kd_pooled_weight", "0"), "--kd_pooled_weight are all 0: nothing to distil"),
    (("--kd_pooled_weight", "-1"), "argument --kd_pooled_weight: expected a finite number >= 0, got '-1'"),
    (("--kd_hidden_weight", "-1"), "argument --kd_hidden_weight: expected a finite number >= 0, got '-1'"),
    (("--tasks", "sst3"), "sst3"),
    (("--pair_encoding", "siamese"), "argument --pair_encoding: invalid choice: 'siamese'"),
])
def test_bad_arguments_are_named(tiny_bert, recipes, texts, tmp_path, capsys, extra, message):
    with pytest.raises((SystemExit, ValueError)) as raised:
        recipes.distill_base(distill_args(texts, tiny_bert, tmp_path / "out", *extra))
    said = capsys.readouterr().err + (str(raised.value) if isinstance(raised.value, ValueError) else "")
    assert message in said
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_bad_data_is_named(tiny_bert, recipes, texts, tmp_path):
    with pytest.raises(ValueError, match=r"--eval_texts 100 would hold out all 34 texts"):
        recipes.distill_base(distill_args(texts, tiny_bert, tmp_path / "out", "--eval_texts", "100"))
    with pytest.raises(ValueError, match=r"none of --tasks cola has train data"):
        recipes.distill_base(distill_args(texts, tiny_bert, tmp_path / "none", "--tasks", "cola"))
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(ValueError, match=f"--text_file {binary} is not UTF-8"):
        recipes.distill_base(distill_args(texts, tiny_bert, tmp_path / "bin", "--no_tasks", "--text_file", binary))


def test_a_spiking_teacher_is_refused(base_run, tiny_bert, recipes, texts, tmp_path):
    out, _, _ = base_run
    with pytest.raises(ValueError, match=f"--teacher {out} is SNN-BERT; the teacher must be an ANN BERT"):
        recipes.distill_base(distill_args(texts, out, tmp_path / "out"))
