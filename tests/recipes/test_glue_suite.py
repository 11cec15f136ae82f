"""recipes/glue_suite.py --smoke: three models per task through finetune.py, one table; a
task without train data is skipped with its reason; a second call resumes (runs nothing)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

SUITE = Path(__file__).resolve().parents[2] / "recipes" / "glue_suite.py"


@pytest.mark.slow
def test_smoke_table_skip_and_resume(tmp_path, tiny_bert, glue_files):
    data = tmp_path / "glue"
    for task in ("sst2", "stsb"):
        glue_files.make(data, task, n_train=16, n_dev=8)
    out = tmp_path / "out"
    command = [sys.executable, str(SUITE), "--smoke", "--data_dir", str(data), "--output_dir", str(out),
               "--tasks", "sst2", "stsb", "rte", "--model_name_or_path", tiny_bert,
               "--results", str(tmp_path / "glue_suite.json")]
    first = subprocess.run(command, capture_output=True, text=True)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]

    result = json.loads((out / "glue_results.json").read_text())
    assert json.loads((tmp_path / "glue_suite.json").read_text()) == result
    assert set(result["runs"]) == {"sst2", "stsb"} and "rte" in result["skipped"]
    assert "RTE" in result["skipped"]["rte"] and "rte" in first.stdout and not result["failed"]
    for task, metric in (("sst2", "eval_accuracy"), ("stsb", "eval_pearson")):
        runs = result["runs"][task]
        assert set(runs) == {"ann", "individual", "repeat"}
        for model, run in runs.items():
            recorded = json.loads((out / task / model / "all_results.json").read_text())
            assert run["metric"] == recorded[metric] and run["train_steps"] == 2
            assert run["command"] == recorded["command"]
        assert runs["ann"]["firing_rate"] is None and 0 <= runs["individual"]["firing_rate"] <= 1
        assert runs["individual"]["ann_energy_mj"] > runs["individual"]["energy_mj"] > 0
    markdown = (out / "glue_results.md").read_text()
    assert markdown.startswith("| task | metric | ann | individual | repeat |") and "average (2 tasks)" in markdown

    stamps = {p: p.stat().st_mtime_ns for p in out.glob("*/*/all_results.json")}
    second = subprocess.run(command, capture_output=True, text=True)
    assert second.returncode == 0 and second.stdout.count("done earlier") == 6
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/*/all_results.json")} == stamps


def test_snn_from_twin_commands(tmp_path, recipes):
    """``--snn_from_twin``: the twin runs first and SNN-BERT starts from its folder;
    ``--individual_flags`` reach the SNN-BERT runs only; contradictions are refused."""
    suite = recipes.modules.glue_suite
    args = suite.parse_args(["--output_dir", str(tmp_path), "--tasks", "sst2", "--models", "repeat", "individual",
                             "ann", "--snn_from_twin", "--individual_flags", "--learnable_threshold --tau 3",
                             "--model_name_or_path", "some/bert"])
    assert args.models == ["ann", "individual", "repeat"]
    run_dir = tmp_path / "sst2" / "individual"
    snn = suite.run_command(args, "sst2", "individual", run_dir)
    assert snn[snn.index("--model_name_or_path") + 1] == str(tmp_path / "sst2" / "ann")
    assert snn[-3:] == ["--learnable_threshold", "--tau", "3"]
    for model in ("ann", "repeat"):
        command = suite.run_command(args, "sst2", model, tmp_path / "sst2" / model)
        assert command[command.index("--model_name_or_path") + 1] == "some/bert"
        assert "--learnable_threshold" not in command
    for bad in (["--snn_from_twin", "--models", "individual"],
                ["--snn_from_twin", "--individual_flags", "--model_name_or_path x"]):
        with pytest.raises(SystemExit):
            suite.parse_args(["--output_dir", str(tmp_path), *bad])


def test_snn_from_twin_without_a_twin_is_reported(tmp_path, monkeypatch, recipes):
    """The twin's run fails: SNN-BERT is not started from nothing, and both are reported."""
    suite = recipes.modules.glue_suite
    calls = []

    class Done:
        returncode = 1

    monkeypatch.setattr(suite.subprocess, "run", lambda command, cwd: calls.append(command) or Done())
    result = suite.main(["--output_dir", str(tmp_path / "out"), "--tasks", "sst2", "--models", "ann", "individual",
                         "--snn_from_twin"])
    assert len(calls) == 1 and "--coding" in calls[0] and calls[0][calls[0].index("--coding") + 1] == "ann"
    assert set(result["failed"]) == {"sst2/ann", "sst2/individual"}
    assert "ANN twin did not finish" in result["failed"]["sst2/individual"]
