"""recipes/glue_suite.py --smoke: three models per task through finetune.py, one table; a
task without train data is skipped with its reason; a second call resumes (runs nothing).
The wall-clock budget (--minutes) and --results_dir, on finetune.py stand-ins and a clock the
tests move."""

import json
import os
import subprocess
import sys
import threading
import time
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
               "--results", str(tmp_path / "glue_suite.json"), "--minutes", "60",
               "--results_dir", str(tmp_path / "keep")]
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
            assert run["command"] == recorded["command"] and "--max_minutes" in run["command"]
            assert not recorded["stopped_early"]
            assert json.loads((tmp_path / "keep" / f"{task}_{model}.json").read_text()) == recorded
            assert "Running training" in (tmp_path / "keep" / f"{task}_{model}.log").read_text()
        assert runs["ann"]["firing_rate"] is None and 0 <= runs["individual"]["firing_rate"] <= 1
        assert runs["individual"]["ann_energy_mj"] > runs["individual"]["energy_mj"] > 0
    assert len(os.listdir(tmp_path / "keep")) == 2 + 2 * 6  # the tables, each run's results and output tail
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
    # one flag alone, as the docs write it (argparse would take it for a flag of the suite's)
    alone = suite.parse_args(["--output_dir", str(tmp_path), "--individual_flags", "--learnable_threshold"])
    assert alone.individual_flags == ["--learnable_threshold"] and alone.finetune_flags == []
    for bad in (["--snn_from_twin", "--models", "individual"],
                ["--snn_from_twin", "--individual_flags", "--model_name_or_path x"]):
        with pytest.raises(SystemExit):
            suite.parse_args(["--output_dir", str(tmp_path), *bad])


def test_distil_from_twin_commands(tmp_path, monkeypatch, recipes):
    """``--distil_from_twin``: SNN-BERT's teacher is its task's twin (from MiniLM, or from the
    twin too), the other runs have none; without a finished twin SNN-BERT is not started."""
    suite = recipes.modules.glue_suite
    base = ["--output_dir", str(tmp_path), "--tasks", "sst2", "--distil_from_twin",
            "--individual_flags", "--kd_attention_weight 1"]
    twin = str(tmp_path / "sst2" / "ann")
    for extra, starts_from in (([], None), (["--snn_from_twin"], twin)):
        args = suite.parse_args(base + extra)
        snn = suite.run_command(args, "sst2", "individual", tmp_path / "sst2" / "individual")
        assert snn[snn.index("--teacher") + 1] == twin and snn[-2:] == ["--kd_attention_weight", "1"]
        assert (snn[snn.index("--model_name_or_path") + 1] if "--model_name_or_path" in snn else None) == starts_from
        for model in ("ann", "repeat"):
            assert "--teacher" not in suite.run_command(args, "sst2", model, tmp_path / "sst2" / model)
    for bad in (["--models", "individual", "repeat"], ["--individual_flags", "--teacher=x"]):
        with pytest.raises(SystemExit):
            suite.parse_args(["--output_dir", str(tmp_path), "--distil_from_twin", *bad])
    calls = []
    monkeypatch.setattr(suite, "run_logged", lambda command, log: calls.append(command) or 1)
    result = suite.main(["--output_dir", str(tmp_path / "out"), "--tasks", "sst2", "--models", "ann", "individual",
                         "--distil_from_twin"])
    assert len(calls) == 1 and "--distil_from_twin: the task's ANN twin did not finish" in result["failed"]["sst2/individual"]


def test_snn_from_twin_without_a_twin_is_reported(tmp_path, monkeypatch, recipes):
    """The twin's run fails: SNN-BERT is not started from nothing, and both are reported."""
    suite = recipes.modules.glue_suite
    calls = []
    monkeypatch.setattr(suite, "run_logged", lambda command, log: calls.append(command) or 1)
    result = suite.main(["--output_dir", str(tmp_path / "out"), "--tasks", "sst2", "--models", "ann", "individual",
                         "--snn_from_twin"])
    assert len(calls) == 1 and "--coding" in calls[0] and calls[0][calls[0].index("--coding") + 1] == "ann"
    assert set(result["failed"]) == {"sst2/ann", "sst2/individual"}
    assert "ANN twin did not finish" in result["failed"]["sst2/individual"]


def test_variants_are_more_snn_runs_with_their_own_flags(tmp_path, recipes):
    """``--variant "NAME: FLAGS"``: one more SNN-BERT run per task after ``individual``, with
    ``--individual_flags`` and then its own (which win where they repeat one), ``{twin}`` the
    task's twin; the ANN and repeat runs get none of them."""
    suite = recipes.modules.glue_suite
    args = suite.parse_args(["--output_dir", str(tmp_path), "--tasks", "sst2", "--snn_from_twin",
                             "--individual_flags", "--learnable_threshold",
                             "--variant", "kd: --teacher {twin} --num_train_epochs 1",
                             "--variant", "lr3e5:--learning_rate 3e-5"])
    assert args.models == ["ann", "individual", "individual-kd", "individual-lr3e5", "repeat"]
    twin = str(tmp_path / "sst2" / "ann")
    kd = suite.run_command(args, "sst2", "individual-kd", tmp_path / "sst2" / "individual-kd")
    assert kd[kd.index("--output_dir") + 1] == str(tmp_path / "sst2" / "individual-kd")
    assert kd[kd.index("--coding") + 1] == "individual" and kd[kd.index("--model_name_or_path") + 1] == twin
    assert kd[-5:] == ["--learnable_threshold", "--teacher", twin, "--num_train_epochs", "1"]
    lr = suite.run_command(args, "sst2", "individual-lr3e5", tmp_path / "sst2" / "individual-lr3e5")
    assert lr[-3:] == ["--learnable_threshold", "--learning_rate", "3e-5"]
    assert lr.index("--learning_rate", lr.index("--learning_rate") + 1) > lr.index("--learning_rate")  # last wins
    for model in ("ann", "individual", "repeat"):
        command = suite.run_command(args, "sst2", model, tmp_path / "sst2" / model)
        assert "--teacher" not in command and "3e-5" not in command
    assert suite.needs_twin(args, "individual-lr3e5") and not suite.needs_twin(args, "repeat")
    # only the twin and a variant: the variant alone needs the twin
    alone = suite.parse_args(["--output_dir", str(tmp_path), "--models", "ann", "--variant", "kd: --teacher {twin}"])
    assert alone.models == ["ann", "individual-kd"] and suite.needs_twin(alone, "individual-kd")
    assert not suite.needs_twin(suite.parse_args(["--output_dir", str(tmp_path), "--variant", "t4: --tau 4"]),
                                "individual-t4")


@pytest.mark.parametrize("argv, message", [
    (["--variant", "--tau 4"], 'expected "NAME: FLAGS"'),
    (["--variant", "Big: --tau 4"], 'expected "NAME: FLAGS" with NAME of a-z, 0-9 and _, got \'Big: --tau 4\''),
    (["--variant", "t: --tau 4", "--variant", "t: --tau 3"], "'t' is given twice"),
    (["--models", "individual", "--variant", "kd: --teacher {twin}"], "--models does not train it"),
    (["--snn_from_twin", "--variant", "x: --model_name_or_path y"], "individual-x sets it too"),
    (["--distil_from_twin", "--models", "ann", "repeat"], "--models must hold ann, and individual or a --variant"),
])
def test_bad_variants_are_refused(tmp_path, recipes, capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        recipes.modules.glue_suite.parse_args(["--output_dir", str(tmp_path), *argv])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


# -- the wall-clock budget and --results_dir ----------------------------------------------------


class FakeRuns:
    """Stands in for finetune.py: each run takes ``minutes[model]`` on the suite's clock, writes
    its all_results.json (cut by its budget the first time, for the models ``cut`` names) and a line
    of output."""

    def __init__(self, suite, monkeypatch, minutes, cut=()):
        self.now, self.minutes, self.cut, self.commands = 0.0, minutes, cut, {}
        monkeypatch.setattr(suite, "wall_clock", lambda: self.now)
        monkeypatch.setattr(suite, "run_logged", self.run)

    def run(self, command, log):
        model = Path(command[command.index("--output_dir") + 1]).name
        self.commands[model] = command
        self.now += 60 * self.minutes[model]
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(f"{model} trained\n")
        cut = model in self.cut
        self.cut = [m for m in self.cut if m != model]  # cut once: a continued run finishes
        results = {"task": "sst2", "eval_accuracy": 0.8, "train_steps": 5 if cut else 10, "stopped_early": cut,
                   **({"stop_reason": "--max_minutes 1 reached: stopped at step 5 of 10"} if cut else {})}
        (log.parent / model).mkdir(exist_ok=True)
        (log.parent / model / "all_results.json").write_text(json.dumps(results))
        return 0

    def max_minutes(self, model):
        command = self.commands[model]
        return command[command.index("--max_minutes") + 1] if "--max_minutes" in command else None


def suite_args(tmp_path, *extra):
    return ["--output_dir", str(tmp_path / "out"), "--tasks", "sst2", "--snn_from_twin", *map(str, extra)]


def test_a_spent_budget_starts_nothing_and_says_so(tmp_path, monkeypatch, recipes):
    suite = recipes.modules.glue_suite
    runs = FakeRuns(suite, monkeypatch, {})
    result = suite.main(suite_args(tmp_path, "--minutes", "0", "--results_dir", tmp_path / "keep"))
    assert runs.commands == {} and not result["failed"] and result["runs"] == {"sst2": {}}
    for model in ("ann", "individual", "repeat"):
        assert result["skipped"][f"sst2/{model}"].startswith("--minutes 0: 0.0 min left, under the 2.5 min")
    notes = (tmp_path / "keep" / "glue_results.md").read_text()
    assert "not in the table: sst2/repeat: --minutes 0: 0.0 min left" in notes
    assert sorted(os.listdir(tmp_path / "keep")) == ["glue_results.json", "glue_results.md"]


def test_each_run_gets_the_time_left_and_results_are_kept(tmp_path, monkeypatch, recipes):
    suite = recipes.modules.glue_suite
    keep = tmp_path / "keep"
    runs = FakeRuns(suite, monkeypatch, {"ann": 3, "individual": 5, "repeat": 1}, cut=("individual",))
    result = suite.main(suite_args(tmp_path, "--minutes", "10", "--results_dir", keep))
    # 10 min, less the 45 s reserve; then 7 min left, less the reserve; then 2 min: not started
    assert runs.max_minutes("ann") == "9.25" and runs.max_minutes("individual") == "6.25"
    assert "repeat" not in runs.commands and not result["failed"]
    assert result["skipped"]["sst2/repeat"].startswith("--minutes 10: 2.0 min left, under the 2.5 min")
    snn = result["runs"]["sst2"]["individual"]
    assert snn["stopped_early"] and snn["train_steps"] == 5 and not result["runs"]["sst2"]["ann"]["stopped_early"]
    assert "| sst2 | accuracy | 80.0 | 80.0* | - |" in result["table"] and "average" not in result["table"]
    assert "\\* sst2 individual: --max_minutes 1 reached: stopped at step 5 of 10" in result["table"]
    # what a session keeps: results, output tails and tables, and nothing else (no weights)
    assert sorted(os.listdir(keep)) == ["glue_results.json", "glue_results.md", "sst2_ann.json", "sst2_ann.log",
                                        "sst2_individual.json", "sst2_individual.log"]
    assert json.loads((keep / "sst2_individual.json").read_text())["stopped_early"] is True
    assert (keep / "sst2_ann.log").read_text() == "ann trained\n"
    assert json.loads((keep / "glue_results.json").read_text()) == result

    # the next call, without a budget: the twin is done; the cut run continues, the skipped one starts
    runs.commands.clear()
    again = suite.main(suite_args(tmp_path, "--results_dir", keep))
    assert sorted(runs.commands) == ["individual", "repeat"] and runs.max_minutes("repeat") is None
    assert "| sst2 | accuracy | 80.0 | 80.0 | 80.0 |" in again["table"] and not again["skipped"]
    assert (keep / "sst2_individual.log").read_text() == "individual trained\n"


def test_run_logged_shows_and_keeps_the_output(tmp_path, recipes, capfd):
    suite = recipes.modules.glue_suite
    log = tmp_path / "sst2" / "ann.log"
    code = suite.run_logged([sys.executable, "-c", "import sys; print('first'); sys.exit(3)"], log)
    assert code == 3 and "first" in capfd.readouterr().out
    assert suite.run_logged([sys.executable, "-c", "print('second')"], log) == 0
    assert log.read_text().split() == ["first", "second"]  # a continued run's output follows the earlier


@pytest.mark.parametrize("argv, message", [
    (["--minutes", "-1"], "argument --minutes: expected a finite number >= 0, got '-1'"),
    (["--minutes", "nan"], "argument --minutes: expected a finite number >= 0, got 'nan'"),
    (["--minutes", "ten"], "argument --minutes: expected a finite number >= 0, got 'ten'"),
    (["--minutes", "5", "--max_minutes", "2"], "--minutes sets each run's --max_minutes"),
    (["--results_dir", "{out}"], "--results_dir must not be --output_dir"),
])
def test_bad_budget_and_results_flags(tmp_path, recipes, capsys, argv, message):
    argv = [a.replace("{out}", str(tmp_path / "out")) for a in argv]
    with pytest.raises(SystemExit) as exit_info:
        recipes.modules.glue_suite.parse_args(["--output_dir", str(tmp_path / "out"), *argv])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_variants_share_the_budget_and_get_their_own_rows(tmp_path, monkeypatch, recipes):
    """The twin, then each variant with the time left; every SNN-BERT run's row in the second
    table and its files kept; a variant that needs a twin that failed is not started."""
    suite = recipes.modules.glue_suite
    keep = tmp_path / "keep"
    runs = FakeRuns(suite, monkeypatch, {"ann": 2, "individual-kd": 3, "individual-lr": 1})
    result = suite.main(["--output_dir", str(tmp_path / "out"), "--tasks", "sst2", "--models", "ann",
                         "--variant", "kd: --teacher {twin}", "--variant", "lr: --learning_rate 3e-5",
                         "--minutes", "10", "--results_dir", str(keep)])
    assert list(runs.commands) == ["ann", "individual-kd", "individual-lr"] and not result["failed"]
    assert runs.max_minutes("individual-kd") == "7.25" and runs.max_minutes("individual-lr") == "4.25"
    assert result["model_flags"]["individual-kd"][-2:] == ["--teacher", "{twin}"]
    assert "| task | metric | ann | individual-kd | individual-lr | SNN firing |" in result["table"]
    assert "| sst2 | accuracy | 80.0 | 80.0 | 80.0 |" in result["table"]
    assert "| sst2 | individual-kd | 80.0 | - | - | - | - |" in result["table"]
    assert {"sst2_individual-kd.json", "sst2_individual-lr.log"} <= set(os.listdir(keep))

    calls = []
    monkeypatch.setattr(suite, "run_logged", lambda command, log: calls.append(command) or 1)
    failed = suite.main(["--output_dir", str(tmp_path / "again"), "--tasks", "sst2", "--models", "ann",
                         "--variant", "kd: --teacher {twin}"])
    assert len(calls) == 1
    assert failed["failed"]["sst2/individual-kd"].startswith("--variant kd ({twin}): the task's ANN twin did not")


# -- --jobs: runs side by side ----------------------------------------------------------------


class ParallelRuns:
    """Stands in for finetune.py in threads: each run takes ``seconds`` of real time, notes when it
    started and ended and how many ran at once, and writes its all_results.json (the accuracy
    its model's, so the table shows which result went where). Twins named in ``fail`` exit 1."""

    ACCURACY = {"ann": 0.9, "individual": 0.8, "individual-x": 0.7, "repeat": 0.6}

    def __init__(self, suite, monkeypatch, seconds=0.3, fail=()):
        self.seconds, self.fail, self.lock = seconds, fail, threading.Lock()
        self.active, self.most, self.spans, self.echo = 0, 0, {}, []
        monkeypatch.setattr(suite, "run_logged", self.run)

    def run(self, command, log, echo=True):
        run_dir = Path(command[command.index("--output_dir") + 1])
        name = f"{run_dir.parent.name}/{run_dir.name}"
        with self.lock:
            self.active += 1
            self.most = max(self.most, self.active)
            self.echo.append(echo)
        began = time.monotonic()
        time.sleep(self.seconds)
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(f"{name} trained\n")
        code = 1 if name in self.fail else 0
        if not code:
            run_dir.mkdir(exist_ok=True)
            (run_dir / "all_results.json").write_text(json.dumps(
                {"task": run_dir.parent.name, "eval_accuracy": self.ACCURACY[run_dir.name], "train_steps": 10}))
        with self.lock:
            self.active -= 1
            self.spans[name] = (began, time.monotonic())
        return code


def parallel_args(out, *extra):
    return ["--output_dir", str(out), "--tasks", "sst2", "rte", "--models", "ann", "individual", "repeat",
            "--snn_from_twin", "--variant", "x: --learning_rate 3e-5", *map(str, extra)]


def test_jobs_run_side_by_side_and_wait_for_their_twin(tmp_path, monkeypatch, recipes):
    """``--jobs 2``: two runs at a time, quiet on the console; a run built from its task's twin
    starts only after that twin ended, while the other task's runs go on; the table is the one
    the same runs give one at a time."""
    suite = recipes.modules.glue_suite
    runs = ParallelRuns(suite, monkeypatch)
    result = suite.main(parallel_args(tmp_path / "two", "--jobs", "2", "--results_dir", tmp_path / "keep"))
    assert runs.most == 2 and runs.echo == [False] * 8 and not result["failed"]
    for task in ("sst2", "rte"):
        twin_ended = runs.spans[f"{task}/ann"][1]
        for model in ("individual", "individual-x"):
            assert runs.spans[f"{task}/{model}"][0] >= twin_ended
    # sst2's repeat run needs no twin: it starts beside sst2's twin, before rte's twin
    assert runs.spans["sst2/repeat"][0] < runs.spans["sst2/ann"][1]
    assert (tmp_path / "keep" / "rte_individual-x.log").read_text() == "rte/individual-x trained\n"

    one = ParallelRuns(suite, monkeypatch)
    alone = suite.main(parallel_args(tmp_path / "one"))
    assert one.most == 1 and one.echo == [True] * 8
    assert result["table"] == alone["table"]
    assert "| sst2 | accuracy | 90.0 | 80.0 | 70.0 | 60.0 |" in result["table"]
    assert "| rte | accuracy | 90.0 | 80.0 | 70.0 | 60.0 |" in result["table"]


def test_jobs_a_failed_twin_stops_only_its_own_task(tmp_path, monkeypatch, recipes):
    suite = recipes.modules.glue_suite
    runs = ParallelRuns(suite, monkeypatch, seconds=0.1, fail=("sst2/ann",))
    result = suite.main(parallel_args(tmp_path / "out", "--jobs", "3"))
    assert set(runs.spans) == {"sst2/ann", "sst2/repeat", "rte/ann", "rte/individual", "rte/individual-x",
                               "rte/repeat"}
    assert result["failed"]["sst2/ann"].startswith("finetune.py exited 1")
    for model in ("individual", "individual-x"):
        assert result["failed"][f"sst2/{model}"].startswith("--snn_from_twin: the task's ANN twin did not finish")
    assert "| rte | accuracy | 90.0 | 80.0 | 70.0 | 60.0 |" in result["table"]


def test_bad_jobs_are_refused(tmp_path, recipes, capsys):
    for bad in ("0", "-1", "two"):
        with pytest.raises(SystemExit) as exit_info:
            recipes.modules.glue_suite.parse_args(["--output_dir", str(tmp_path), "--jobs", bad])
        assert exit_info.value.code == 2 and "--jobs" in capsys.readouterr().err


def test_repeat_from_twin(tmp_path, monkeypatch, recipes, capsys):
    """``--repeat_from_twin``: the repeat baseline starts from its task's twin as SNN-BERT does,
    waits for it under ``--jobs``, and is not started when the twin failed."""
    suite = recipes.modules.glue_suite
    args = suite.parse_args(["--output_dir", str(tmp_path), "--tasks", "sst2", "--repeat_from_twin",
                             "--model_name_or_path", "some/bert"])
    twin = str(tmp_path / "sst2" / "ann")
    repeat = suite.run_command(args, "sst2", "repeat", tmp_path / "sst2" / "repeat")
    assert repeat[repeat.index("--model_name_or_path") + 1] == twin and "--coding" in repeat
    for model in ("ann", "individual"):  # SNN-BERT from the twin only with --snn_from_twin
        command = suite.run_command(args, "sst2", model, tmp_path / "sst2" / model)
        assert command[command.index("--model_name_or_path") + 1] == "some/bert"
    assert suite.write_tables(args, tmp_path, {}, {}, {})["repeat_from_twin"] is True
    for models in (["individual", "repeat"], ["ann", "individual"]):
        with pytest.raises(SystemExit):
            suite.parse_args(["--output_dir", str(tmp_path), "--repeat_from_twin", "--models", *models])
        assert "--repeat_from_twin builds the repeat baseline" in capsys.readouterr().err

    runs = ParallelRuns(suite, monkeypatch)
    result = suite.main(parallel_args(tmp_path / "two", "--jobs", "2", "--repeat_from_twin"))
    for task in ("sst2", "rte"):
        assert runs.spans[f"{task}/repeat"][0] >= runs.spans[f"{task}/ann"][1]
    assert not result["failed"]
    ParallelRuns(suite, monkeypatch, seconds=0.05, fail=("sst2/ann",))
    failed = suite.main(parallel_args(tmp_path / "failed", "--repeat_from_twin"))["failed"]
    assert failed["sst2/repeat"].startswith("--repeat_from_twin: the task's ANN twin did not finish")


def test_pair_encoding_bi_reaches_every_run_of_the_pair_tasks_only(tmp_path, recipes):
    suite = recipes.modules.glue_suite
    args = suite.parse_args(["--output_dir", str(tmp_path), "--tasks", "sst2", "stsb", "--pair_encoding", "bi"])
    for model in args.models:
        for task, expected in (("stsb", True), ("sst2", False)):
            command = suite.run_command(args, task, model, tmp_path / task / model)
            assert (command[command.index("--pair_encoding") + 1] == "bi" if expected
                    else "--pair_encoding" not in command), (task, model)
    cross = suite.parse_args(["--output_dir", str(tmp_path), "--tasks", "stsb"])
    assert cross.pair_encoding == "cross" and "--pair_encoding" not in suite.run_command(
        cross, "stsb", "individual", tmp_path / "stsb" / "individual")
    table = suite.write_tables(args, tmp_path, {"stsb": {}, "sst2": {}}, {}, {})
    assert table["pair_encoding"] == "bi"
    assert "bi-encoders (each sentence encoded alone, then compared) on the pair tasks: stsb" in \
        (tmp_path / "glue_results.md").read_text()
