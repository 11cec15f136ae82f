"""Bad input to the recipes: damaged data, checkpoints and state files, numbers out of range. Each
is an error of the right type whose message names the file or flag and what was expected, raised
before any training (more cases: test_finetune.py's bad-input section, test_glue.py)."""

from __future__ import annotations

import os

import pytest

N_DEV = 3


@pytest.fixture
def run(finished_run, tmp_path):
    """A copy of a finished run's folder (with checkpoints step_1 and step_2), to damage."""
    return finished_run.copy(tmp_path / "run")


def test_a_data_file_that_is_not_utf8_names_its_line(tmp_path, glue_files, finished_run, recipes):
    data = glue_files.make(tmp_path / "glue", "sst2", n_train=8, n_dev=N_DEV)
    with open(tmp_path / "glue" / "SST-2" / "dev.tsv", "ab") as f:
        f.write("caf\u00e9 film\t1\n".encode("latin-1"))
    with pytest.raises(ValueError, match=rf"SST-2/dev\.tsv:{N_DEV + 2}: not UTF-8 text .*GLUE files are UTF-8"):
        recipes.finetune(finished_run.argv(tmp_path / "out", "--data_dir", data))


def test_a_data_file_without_rows_is_refused_before_training(tmp_path, glue_files, finished_run, recipes):
    data = glue_files.make(tmp_path / "glue", "sst2", n_train=0, n_dev=N_DEV)
    with pytest.raises(ValueError, match=r"GLUE sst2 train split \(.*glue\) has no rows"):
        recipes.finetune(finished_run.argv(tmp_path / "out", "--data_dir", data))
    assert not (tmp_path / "out" / "model.safetensors").exists()


@pytest.mark.parametrize("name", ["training_state.json", "run_manifest.json"])
def test_a_damaged_checkpoint_state_file(finished_run, run, recipes, name):
    (run / "step_1" / name).write_text('{"completed_steps": ')
    with pytest.raises(ValueError, match=rf"step_1/{name} is not valid JSON \(line 1, column 21"):
        recipes.finetune(finished_run.argv(run, "--resume_from_checkpoint", run / "step_1"))


def test_a_checkpoint_without_a_run_manifest(finished_run, run, recipes, tmp_path):
    os.remove(run / "step_1" / "run_manifest.json")
    with pytest.raises(ValueError, match=r"step_1 has no run_manifest\.json, so it cannot be told to belong to this run"):
        recipes.finetune(finished_run.argv(tmp_path / "new", "--resume_from_checkpoint", run / "step_1"))


def test_a_damaged_run_manifest_in_the_output_dir(finished_run, run, recipes):
    (run / "run_manifest.json").write_bytes(b"\xff")
    with pytest.raises(ValueError, match=r"run manifest .*run_manifest\.json is not UTF-8 text"):
        recipes.finetune(finished_run.argv(run))


def test_a_folder_of_something_else_is_not_overwritten_silently(finished_run, recipes, tmp_path):
    (tmp_path / "else").mkdir()
    (tmp_path / "else" / "thesis.tex").write_text("...")
    with pytest.raises(ValueError, match=r"else is not empty and has no run_manifest\.json.*--overwrite_output_dir"):
        recipes.finetune(finished_run.argv(tmp_path / "else"))


def test_damaged_weights_are_named_by_evaluate(finished_run, run, recipes):
    with open(run / "model.safetensors", "r+b") as f:
        f.truncate(100)
    with pytest.raises(ValueError, match=rf"checkpoint {run}: the weights \(model\.safetensors\) could not be read"):
        recipes.evaluate(["--model_name_or_path", run, "--data_dir", finished_run.data])


def test_publish_needs_the_results_of_a_finetune_run(run, recipes, tmp_path):
    os.remove(run / "all_results.json")
    with pytest.raises(FileNotFoundError, match=r"--checkpoint results \(finetune\.py output\) .*all_results\.json not found"):
        recipes.publish(["--checkpoint", run, "--name", "x", "--hub_id", "a/b", "--output_dir", tmp_path / "pub"])


@pytest.mark.parametrize("script, argv, flag", [
    ("evaluate", ["--model_name_or_path", "x", "--max_eval_samples", "0"], "--max_eval_samples"),
    ("evaluate", ["--model_name_or_path", "x", "--per_device_eval_batch_size", "-2"], "--per_device_eval_batch_size"),
    ("energy", ["--model_name_or_path", "x", "--num_samples", "0"], "--num_samples"),
    ("energy", ["--model_name_or_path", "x", "--max_length", "zero"], "--max_length"),
    ("finetune", ["--task", "rte", "--weight_decay", "-0.1"], "--weight_decay"),
    ("finetune", ["--task", "rte", "--neuron_lr", "nan"], "--neuron_lr"),
    ("finetune", ["--task", "rte", "--head_lr", "0"], "--head_lr"),
    ("finetune", ["--task", "rte", "--max_minutes", "-1"], "--max_minutes"),
    ("finetune", ["--task", "rte", "--max_minutes", "inf"], "--max_minutes"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_numbers_out_of_range(recipes, capsys, script, argv, flag):
    with pytest.raises(SystemExit) as exit_info:
        getattr(recipes.modules, script).parse_args(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}: expected a" in err and repr(argv[-1]) in err


def test_overwrite_and_resume_latest_contradict(recipes, capsys):
    with pytest.raises(SystemExit):
        recipes.modules.finetune.parse_args(["--task", "rte", "--output_dir", "o", "--overwrite_output_dir",
                                             "--resume_from_checkpoint", "latest"])
    assert "--overwrite_output_dir removes the checkpoints that --resume_from_checkpoint latest" in capsys.readouterr().err
