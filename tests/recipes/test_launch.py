"""finetune.py under ``accelerate launch`` with two CPU processes (gloo): the dev metric counts
every sample exactly once, with an odd dev size that leaves the last batch ragged."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

N_DEV = 7


@pytest.mark.slow
def test_two_process_launch_scores_the_whole_dev_set_once(tmp_path, glue_files, tiny_bert, recipes):
    data = glue_files.make(tmp_path / "glue", "mnli", n_train=12, n_dev=N_DEV)
    out = tmp_path / "out"
    command = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--config_file", "recipes/configs/multi_cpu.yaml", "--num_processes", "2",
        "recipes/finetune.py", "--task", "mnli", "--data_dir", data, "--model_name_or_path", tiny_bert,
        "--output_dir", str(out), "--seed", "0", "--num_train_epochs", "1", "--per_device_train_batch_size", "2",
        "--per_device_eval_batch_size", "2", "--checkpointing_steps", "2",
    ]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=recipes.repo, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    assert "Num processes: 2" in done.stderr + done.stdout

    results = json.load(open(out / "all_results.json"))
    assert results["num_processes"] == 2
    # 12 samples, 2 a process a step: 3 steps; 7 and 8 dev samples split 4+4 with one (mismatched: none) repeated
    assert results["train_steps"] == 3
    assert results["eval_samples"] == N_DEV and results["eval_samples_mm"] == N_DEV + 1
    assert sorted(f for f in os.listdir(out / "step_2") if f.startswith("random_states")) == [
        "random_states_0.pkl", "random_states_1.pkl"]
    assert results["command"].startswith("accelerate launch --multi_gpu --num_processes 2 --mixed_precision no ")

    # one process scoring the saved model over the whole dev sets finds the same metrics
    single = recipes.evaluate(["--model_name_or_path", out, "--data_dir", data, "--per_device_eval_batch_size", "2"])
    for key in ("eval_accuracy", "eval_accuracy_mm", "eval_samples", "eval_samples_mm"):
        assert single[key] == results[key], key
