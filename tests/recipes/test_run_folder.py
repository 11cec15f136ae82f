"""finetune.py's output folder belongs to one run: another run's folder or checkpoint is refused,
the final set (model, results, card) is consistent, arguments are checked before training and the
trained model is saved before anything that can fail after it."""

from __future__ import annotations

import errno
import glob
import json
import os

import pytest
import torch
from safetensors.torch import load_file

def snapshot(folder):
    """Every path below ``folder`` with its size and modification time."""
    return {
        os.path.relpath(os.path.join(root, name), folder): (os.stat(os.path.join(root, name)).st_size,
                                                            os.stat(os.path.join(root, name)).st_mtime_ns)
        for root, dirs, files in os.walk(folder) for name in dirs + files
    }


def manifest_of(folder):
    with open(os.path.join(folder, "run_manifest.json"), encoding="utf-8") as f:
        return json.load(f)["run"]


@pytest.fixture
def run(finished_run, tmp_path):
    """A copy of the finished run's folder."""
    return finished_run.copy(tmp_path / "run")


# -- 1. a run's folder says which run it belongs to --------------------------------------------

CHANGES = [("--seed", "1"), ("--learning_rate", "1e-3"), ("--per_device_train_batch_size", "2")]


@pytest.mark.parametrize("flag, value", CHANGES, ids=[c[0] for c in CHANGES])
@pytest.mark.parametrize("resume", [True, False], ids=["resume-latest", "reuse"])
def test_another_runs_folder_is_refused(finished_run, run, recipes, flag, value, resume):
    before = snapshot(run)
    argv = finished_run.argv(run, flag, value, *(["--resume_from_checkpoint", "latest"] if resume else []))
    with pytest.raises(ValueError, match=rf"{flag}: .*--overwrite_output_dir") as error:
        recipes.finetune(argv)
    assert str(run) in str(error.value)
    assert snapshot(run) == before  # nothing written, nothing removed


def test_a_checkpoint_of_another_run_is_refused(finished_run, recipes, tmp_path):
    argv = finished_run.argv(tmp_path / "new", "--seed", "1", "--resume_from_checkpoint", finished_run.out / "step_1")
    with pytest.raises(ValueError, match=r"step_1.*--seed: 0 there, 1 here"):
        recipes.finetune(argv)


def test_a_run_recorded_before_a_flag_existed_resumes_while_the_flag_is_unset(finished_run, run, recipes):
    """A run cut short on an older finetune.py resumes on a newer one, whose manifest has a field
    the old one lacks, while that flag is unset; set, the runs differ and the folder is refused."""
    path = run / "run_manifest.json"
    recorded = json.loads(path.read_text())
    assert recorded["run"].pop("calibrate_thresholds") is None  # as a manifest written before the flag
    path.write_text(json.dumps(recorded))
    results = recipes.finetune(finished_run.argv(run, "--max_train_steps", "3", "--resume_from_checkpoint", "latest"))
    assert results["train_steps"] == 3
    path.write_text(json.dumps(recorded))
    with pytest.raises(ValueError, match=r"--calibrate_thresholds: None there, 0.2 here"):
        recipes.finetune(finished_run.argv(run, "--max_train_steps", "3", "--resume_from_checkpoint", "latest",
                                           "--calibrate_thresholds", "0.2"))


def test_the_same_run_resumes_and_may_run_longer(finished_run, run, recipes):
    results = recipes.finetune(finished_run.argv(run, "--max_train_steps", "3", "--resume_from_checkpoint", "latest"))
    assert results["train_steps"] == 3 and manifest_of(run)["seed"] == 0


def test_overwrite_output_dir_replaces_the_other_run(finished_run, run, recipes):
    (run / "notes.txt").write_text("mine")
    recipes.finetune(finished_run.argv(run, "--seed", "1", "--max_train_steps", "1", "--checkpointing_steps", "2",
                                       "--overwrite_output_dir"))
    assert manifest_of(run)["seed"] == 1
    assert not glob.glob(str(run / "step_*")) and not glob.glob(str(run / ".tmp-*"))  # no checkpoint of seed 0
    results = json.loads((run / "all_results.json").read_text())
    assert results["train_steps"] == 1 and "--seed 1" in results["command"]
    assert (run / "notes.txt").read_text() == "mine"  # what finetune.py did not write stays


def test_a_run_stopped_in_its_final_save_leaves_no_results_of_other_weights(finished_run, run, recipes, monkeypatch):
    """Killed after the new weights are in place, before results and card: the folder must not
    pair them with the previous results and card."""
    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(recipes.modules.finetune, "energy_on_dataset", killed)
    with pytest.raises(KeyboardInterrupt):
        recipes.finetune(finished_run.argv(run, "--max_train_steps", "3"))
    new_weights = load_file(run / "model.safetensors")
    old_weights = load_file(run / "step_2" / "model.safetensors")
    assert any(not torch.equal(new_weights[k], old_weights[k]) for k in new_weights)
    if (run / "all_results.json").exists():
        assert json.loads((run / "all_results.json").read_text())["train_steps"] == 3
    if (run / "README.md").exists():
        assert "optimizer steps: 3" in (run / "README.md").read_text()


# -- 6. arguments checked before training; the model saved before what can fail -------------

BAD = [
    ("--max_eval_samples", "0"), ("--max_train_samples", "0"), ("--max_train_steps", "-3"),
    ("--max_train_steps", "0"), ("--num_train_epochs", "0"), ("--per_device_train_batch_size", "0"),
    ("--per_device_eval_batch_size", "-1"), ("--gradient_accumulation_steps", "0"), ("--max_length", "0"),
    ("--num_warmup_steps", "-1"), ("--energy_samples", "0"), ("--learning_rate", "-0.001"),
    ("--kd_temperature", "0"), ("--time_steps", "0"),
]


@pytest.mark.parametrize("flag, value", BAD, ids=[f"{f}={v}" for f, v in BAD])
def test_bad_numbers_are_refused_before_anything_runs(recipes, capsys, flag, value):
    with pytest.raises(SystemExit) as exit_info:
        recipes.modules.finetune.parse_args(["--task", "sst2", flag, value])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}" in err and repr(value) in err


def test_the_trained_model_is_saved_before_the_final_evaluation(finished_run, recipes, tmp_path, monkeypatch):
    def failing(*args, **kwargs):
        raise RuntimeError("evaluation failed")

    monkeypatch.setattr(recipes.modules.finetune.glue, "evaluate", failing)
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="evaluation failed"):
        recipes.finetune(finished_run.argv(out))
    assert (out / "model.safetensors").is_file() and (out / "config.json").is_file()
    assert not (out / "all_results.json").exists()  # no results claimed for it


def test_a_full_disk_at_the_final_save_leaves_no_partial_model(finished_run, recipes, tmp_path, monkeypatch):
    import transformers.modeling_utils

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(transformers.modeling_utils, "safe_save_file", full)
    out = tmp_path / "out"
    with pytest.raises(OSError, match=rf"{out}.*No space left on device.*step_2"):
        recipes.finetune(finished_run.argv(out))
    left = sorted(os.listdir(out))
    assert "config.json" not in left and not [n for n in left if n.startswith(".tmp")], left
    assert (out / "step_2" / "training_state.json").is_file()  # the training is kept in its checkpoint


# -- 5. the recipes always pass the attention mask -----------------------------------------


def test_tokenized_batches_carry_the_attention_mask(recipes, tiny_bert, glue_files, tmp_path):
    from transformers import AutoTokenizer

    from sj_bert import glue

    data = glue_files.make(tmp_path / "glue", "sst2", n_train=4, n_dev=3)
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    tokenizer.model_input_names = ["input_ids", "token_type_ids"]  # a tokenizer that leaves the mask out
    processed = glue.tokenize(glue.load_glue("sst2", data), "sst2", tokenizer, 32, False)
    batch = glue.make_collator(tokenizer, False)([processed["train"][i] for i in range(4)])
    assert batch["attention_mask"].shape == batch["input_ids"].shape
    assert (batch["attention_mask"] == 0).any()  # the batch is padded, the mask says where
