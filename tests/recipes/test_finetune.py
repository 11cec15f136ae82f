"""recipes/finetune.py, evaluate.py and energy.py, run in-process on a tiny BERT and tiny GLUE folders."""

from __future__ import annotations

import glob
import json
import math
import os
import shlex
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoTokenizer

N_DEV = 7  # odd: the last eval batch is ragged


def run_args(data_dir, model, output_dir, *extra, task="sst2"):
    return [
        "--task", task, "--data_dir", str(data_dir), "--model_name_or_path", str(model),
        "--output_dir", str(output_dir), "--seed", "0", "--per_device_train_batch_size", "4",
        "--per_device_eval_batch_size", "4", "--num_train_epochs", "1", *map(str, extra),
    ]


def weights(folder):
    return load_file(os.path.join(folder, "model.safetensors"))


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def results_of(folder):
    with open(os.path.join(folder, "all_results.json"), encoding="utf-8") as f:
        return json.load(f)


@pytest.fixture(scope="module")
def sst2_run(tmp_path_factory, tiny_bert, recipes, glue_files):
    """One SNN-BERT fine-tuning run on SST-2 with epoch checkpoints and tracking, shared by the tests."""
    root = tmp_path_factory.mktemp("sst2")
    data = glue_files.make(root / "glue", "sst2", n_train=16, n_dev=N_DEV)
    out = root / "out"
    args = run_args(data, tiny_bert, out, "--checkpointing_steps", "epoch", "--with_tracking", "--neuron_lr", "1e-2")
    return data, out, recipes.finetune(args), args


def test_finetune_trains_evaluates_and_writes_checkpoint_results_and_card(sst2_run):
    data, out, results, args = sst2_run
    config = json.load(open(out / "config.json"))
    assert config["model_type"] == "spiking_bert" and config["coding"] == "individual"
    assert config["finetuning_task"] == "sst2" and config["id2label"] == {"0": "negative", "1": "positive"}
    for name in ("model.safetensors", "tokenizer.json", "README.md", "all_results.json"):
        assert (out / name).is_file(), name
    # transformers 5 saves tokenizer.json alone (no vocab.txt); what counts is that it loads
    # and tokenizes as the tokenizer trained with
    sentence = "a gripping , beautifully acted film ."
    saved, original = AutoTokenizer.from_pretrained(out), AutoTokenizer.from_pretrained(args[args.index("--model_name_or_path") + 1])
    assert saved(sentence)["input_ids"] == original(sentence)["input_ids"]

    recorded = results_of(out)
    assert recorded == json.loads(json.dumps(results))
    assert recorded["task"] == "sst2"
    assert recorded["eval_samples"] == N_DEV and recorded["train_samples"] == 16
    assert recorded["train_steps"] == 4 and recorded["epochs"] == 1
    assert 0.0 <= recorded["eval_accuracy"] <= 1.0 and math.isfinite(recorded["train_loss"])
    assert recorded["command"] == "python recipes/finetune.py " + shlex.join(args)
    energy = recorded["energy"]
    assert energy["model"] == "snn" and energy["batch_size"] == N_DEV == recorded["energy_samples"]
    assert energy["energy_per_sample_mj"] > 0 and energy["ann"]["energy_per_sample_mj"] > 0

    card = (out / "README.md").read_text()
    assert "GLUE SST-2" in card and "## GLUE dev results" in card
    assert f"| accuracy | {recorded['eval_accuracy']:.4f} |" in card
    assert f"| dev samples | {N_DEV} |" in card
    assert recorded["command"] in card
    assert "## Energy" in card and "energy (mJ, 45 nm)" in card and "ANN / SNN energy" in card

    # epoch checkpoint: complete, with the position to resume from; nothing half-written left
    state = json.load(open(out / "epoch_0" / "training_state.json"))
    assert state == {"completed_steps": 4, "epoch": 1, "batches_in_epoch": 0}
    assert not glob.glob(str(out / ".tmp-*"))
    # TensorBoard through Accelerate
    assert glob.glob(str(out / "sj_bert_glue" / "**" / "events.out.tfevents.*"), recursive=True)


def test_individual_coding_from_bert_gets_the_recipe_defaults(sst2_run):
    """Built from a BERT checkpoint, individual coding takes the best settings of
    docs/accuracy.md unless a flag says otherwise."""
    _, out, _, _ = sst2_run
    config = json.load(open(out / "config.json"))
    assert (config["per_channel"], config["v_threshold"], config["pooling"]) == (True, 0.25, "mean")


def test_snn_bert_starts_from_the_fine_tuned_ann_twin(tmp_path, glue_files, tiny_bert, recipes):
    """Two stages (docs/accuracy.md): fine-tune the ANN, then build SNN-BERT from its output.
    The student starts from every weight of the twin, its classifier included, and takes
    the recipe's individual-coding defaults (the twin is a BERT checkpoint)."""
    from transformers import AutoModelForSequenceClassification

    import sj_bert

    data = glue_files.make(tmp_path / "glue", "sst2", n_train=8, n_dev=N_DEV)
    ann = tmp_path / "ann"
    recipes.finetune(run_args(data, tiny_bert, ann, "--coding", "ann", "--max_train_steps", "1"))
    twin = AutoModelForSequenceClassification.from_pretrained(ann)
    config = sj_bert.SpikingBertConfig.from_pretrained(ann, coding="individual")
    student = sj_bert.SpikingBertForSequenceClassification.from_pretrained(ann, config=config)
    twin_weights, student_weights = twin.state_dict(), student.state_dict()
    shared = set(twin_weights) & set(student_weights)
    assert {"classifier.weight", "classifier.bias", "bert.embeddings.word_embeddings.weight"} <= shared
    assert all(k.startswith("bert.pooler") for k in set(twin_weights) - shared)  # SNN-BERT pools by mean
    for name in shared:
        assert torch.equal(student_weights[name], twin_weights[name]), name
    snn = tmp_path / "snn"
    recipes.finetune(run_args(data, ann, snn, "--coding", "individual", "--max_train_steps", "1"))
    saved = json.load(open(snn / "config.json"))
    assert saved["model_type"] == "spiking_bert" and saved["coding"] == "individual"
    assert (saved["per_channel"], saved["v_threshold"], saved["pooling"]) == (True, 0.25, "mean")
    # the card reproduces the first stage too: the twin's folder may not outlive the run
    first_stage = json.load(open(ann / "all_results.json"))
    card = (snn / "README.md").read_text()
    assert (f"Fine-tuned from `{ann}` (a finetune.py run: accuracy {first_stage['eval_accuracy']:.4f} on the "
            f"SST-2 dev set; its command: `{first_stage['command']}`)") in card


def test_recipe_defaults_yield_to_flags_and_to_snn_checkpoints(recipes, tiny_bert, tmp_path):
    import argparse

    finetune = recipes.modules.finetune
    args = argparse.Namespace(**{name: None for name in finetune.SNN_FLAGS}, neuron_lr=None, calibrate_conversion=None,
                              calibrate_thresholds=None)
    args.v_threshold = 0.5
    snn = finetune.apply_recipe_defaults(args, tiny_bert)
    assert snn["v_threshold"] == 0.5 and snn["per_channel"] is True and args.neuron_lr == 1e-2
    args = argparse.Namespace(**{name: None for name in finetune.SNN_FLAGS}, neuron_lr=None, calibrate_conversion=None,
                              calibrate_thresholds=None)
    args.coding = "repeat"
    assert finetune.apply_recipe_defaults(args, tiny_bert) == {"coding": "repeat"} and args.neuron_lr is None


def test_every_spiking_setting_of_the_config_is_a_flag(recipes, tiny_bert):
    """The flags are the config's SPIKING_FIELDS, so none can drift out of reach, and each
    reaches the model's config."""
    from sj_bert.modeling.configuration_spiking_bert import SPIKING_FIELDS

    finetune = recipes.modules.finetune
    assert finetune.SNN_FLAGS == SPIKING_FIELDS
    args = finetune.parse_args([
        "--task", "rte", "--model_name_or_path", tiny_bert, "--direction", "forward", "--spike_amplitude", "unit",
        "--surrogate", "Sigmoid", "--surrogate_alpha", "3.0", "--neuron_backend", "reference", "--attention", "spiking",
        "--ternary_spikes",
    ])
    _, model = finetune.load_model(args, 2)
    scaled = finetune.load_model(finetune.parse_args([
        "--task", "rte", "--model_name_or_path", tiny_bert, "--attention_score_scale", "6"]), 2)[1]
    assert scaled.config.attention_score_scale == 6.0
    config = model.config
    assert (config.direction, config.spike_amplitude, config.surrogate, config.surrogate_alpha) == (
        "forward", "unit", "Sigmoid", 3.0)
    assert (config.neuron_backend, config.attention, config.ternary_spikes) == ("reference", "spiking", True)
    node = model.bert.encoder.layer[0].attention.self.neuron
    assert node.direction == "forward" and node.backend == "reference" and node.ternary
    with pytest.raises(SystemExit):
        finetune.parse_args(["--task", "rte", "--direction", "sideways"])


def test_ternary_spikes_and_thresholds_by_site_from_the_command_line(recipes, tiny_bert, capsys):
    """``--ternary_spikes SITE ...`` and ``--site_thresholds SITE=THRESHOLD ...`` reach the config
    and the neurons there (the recipe's 0.25 elsewhere); ``--no-ternary_spikes`` gives binary
    spikes; a site that is not one, or a threshold that is not positive, is refused by name."""
    finetune = recipes.modules.finetune
    args = finetune.parse_args([
        "--task", "rte", "--model_name_or_path", tiny_bert, "--ternary_spikes", "attention.self.neuron",
        "intermediate.neuron", "--site_thresholds", "attention.self.neuron=0.5", "intermediate.neuron=0.75",
    ])
    _, model = finetune.load_model(args, 2)
    config, layer = model.config, model.bert.encoder.layer[-1]
    assert config.ternary_spikes == ["attention.self.neuron", "intermediate.neuron"]
    assert config.site_thresholds == {"attention.self.neuron": 0.5, "intermediate.neuron": 0.75}
    assert layer.attention.self.neuron.ternary and layer.intermediate.neuron.ternary
    assert not layer.attention.output.neuron.ternary and not layer.intermediate.intermediate_act_fn.ternary
    thresholds = {site: float(layer.get_submodule(site).v_threshold.unique()) for site in (
        "attention.self.neuron", "intermediate.neuron", "attention.output.neuron")}
    assert thresholds == {"attention.self.neuron": 0.5, "intermediate.neuron": 0.75, "attention.output.neuron": 0.25}
    assert finetune.parse_args(["--task", "rte", "--no-ternary_spikes"]).ternary_spikes is False
    for bad, message in ((["--ternary_spikes", "ffn"], "invalid choice: 'ffn'"),
                         (["--site_thresholds", "ffn=0.5"], "expected SITE=THRESHOLD with SITE one of"),
                         (["--site_thresholds", "intermediate.neuron=0"], "with a positive finite THRESHOLD")):
        with pytest.raises(SystemExit):
            finetune.parse_args(["--task", "rte", *bad])
        assert message in capsys.readouterr().err


@pytest.mark.parametrize("score_scale", [None, 8.0])
def test_neuron_lr_is_a_separate_param_group(recipes, tiny_bert, score_scale):
    """The neurons' parameters, and the attention score scales where there are some."""
    import sj_bert

    model = sj_bert.SpikingBertForSequenceClassification.from_pretrained(
        tiny_bert, num_labels=2, attention_score_scale=score_scale)
    args = recipes.modules.finetune.parse_args(["--task", "rte", "--neuron_lr", "0.01", "--weight_decay", "0.1"])
    groups = recipes.modules.finetune.parameter_groups(model, args)
    assert [g.get("lr") for g in groups] == [None, None, 0.01]
    neuron_names = {n for n, p in model.named_parameters() if any(p is q for q in groups[2]["params"])}
    assert neuron_names and all(".neuron." in n or "intermediate_act_fn" in n or n.endswith(".score_scale")
                                for n in neuron_names)
    scales = {n for n in neuron_names if n.endswith(".score_scale")}
    assert len(scales) == (0 if score_scale is None else model.config.num_hidden_layers)
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


@pytest.mark.parametrize("architecture", ["SpikingBertBiEncoder", "BertBiEncoder", "SpikingBertForSequenceClassification"])
def test_head_lr_is_a_group_of_its_own(recipes, tiny_bert, architecture):
    """--head_lr puts the classifier's weight (decayed) and bias (not) in groups at that rate;
    without it the classifier trains with the encoder, as before the flag."""
    import sj_bert

    model = getattr(sj_bert, architecture).from_pretrained(tiny_bert, num_labels=2)
    finetune = recipes.modules.finetune
    argv = ["--task", "mrpc", "--weight_decay", "0.1", *(["--neuron_lr", "0.01"] if "Spiking" in architecture else [])]
    groups = finetune.parameter_groups(model, finetune.parse_args([*argv, "--head_lr", "3e-3"]))
    head = [g for g in groups if g.get("lr") == 3e-3]
    named = {id(p): n for n, p in model.named_parameters()}
    assert [[named[id(p)] for p in g["params"]] for g in head] == [["classifier.weight"], ["classifier.bias"]]
    assert [g["weight_decay"] for g in head] == [0.1, 0.0]
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    plain = finetune.parameter_groups(model, finetune.parse_args(argv))
    assert all(g.get("lr") in (None, 0.01) for g in plain)
    assert sum(len(g["params"]) for g in plain) == len(list(model.parameters()))


def test_head_lr_without_a_head_is_named_and_ignored(recipes, tiny_bert, caplog):
    """An STS-B bi-encoder scores by cosine: there is no head for --head_lr to act on."""
    import sj_bert

    from accelerate import PartialState

    PartialState()  # the recipe's logger is accelerate's, which needs its state
    model = sj_bert.SpikingBertBiEncoder.from_pretrained(tiny_bert, num_labels=1)
    finetune = recipes.modules.finetune
    with caplog.at_level("WARNING"):
        groups = finetune.parameter_groups(model, finetune.parse_args(["--task", "stsb", "--head_lr", "1e-3"]))
    assert "--head_lr: the model has no task head" in caplog.text
    assert all(g.get("lr") != 1e-3 for g in groups)


def test_freeze_embeddings_keeps_them_as_loaded(tmp_path, glue_files, tiny_bert, recipes):
    data = glue_files.make(tmp_path / "glue", "sst2", n_train=8, n_dev=N_DEV)
    runs = {}
    for name, extra in (("frozen", ["--freeze_embeddings"]), ("free", [])):
        recipes.finetune(run_args(data, tiny_bert, tmp_path / name, "--max_train_steps", "2", "--learning_rate", "1e-2",
                                  *extra))
        runs[name] = weights(tmp_path / name)
    base = weights(tiny_bert)  # a BertModel: the same names without the "bert." prefix

    def loaded(key):
        return base[key.removeprefix("bert.")]

    embeddings = [k for k in runs["frozen"] if k.startswith("bert.embeddings.")]
    encoder = [k for k in runs["frozen"] if k.startswith("bert.encoder.") and k.endswith("dense.weight")]
    assert embeddings and encoder
    assert all(torch.equal(runs["frozen"][k], loaded(k)) for k in embeddings)
    assert any(not torch.equal(runs["free"][k], loaded(k)) for k in embeddings)  # without the flag they move
    assert any(not torch.equal(runs["frozen"][k], loaded(k)) for k in encoder)  # the rest still trains
    manifest = json.loads((tmp_path / "frozen" / "run_manifest.json").read_text())
    assert manifest["run"]["freeze_embeddings"] is True


def test_evaluate_reproduces_the_recorded_dev_metric(sst2_run, recipes, tmp_path):
    data, out, results, _ = sst2_run
    scored = recipes.evaluate(
        ["--model_name_or_path", str(out), "--data_dir", str(data), "--per_device_eval_batch_size", "4",
         "--output_file", str(tmp_path / "eval.json")]
    )
    assert scored["task"] == "sst2"  # from the checkpoint's config
    assert scored["eval_accuracy"] == results["eval_accuracy"]
    assert scored["eval_samples"] == N_DEV
    assert json.load(open(tmp_path / "eval.json")) == scored


def test_evaluate_scores_any_glue_file(sst2_run, recipes, glue_files, tmp_path):
    _, out, _, _ = sst2_run
    header, rows = glue_files.rows("sst2", 5, seed=3)
    glue_files.write(tmp_path / "mine.tsv", header, rows)
    scored = recipes.evaluate(
        ["--model_name_or_path", str(out), "--task", "sst2", "--file", str(tmp_path / "mine.tsv")]
    )
    assert scored["eval_samples"] == 5 and scored["data"] == str(tmp_path / "mine.tsv")


def test_evaluate_by_length_buckets(sst2_run, recipes, capsys):
    """Each bucket is scored as a split of its own; together they are the whole dev set."""
    data, out, _, _ = sst2_run
    base = ["--model_name_or_path", str(out), "--data_dir", str(data), "--per_device_eval_batch_size", "4", "--cpu"]
    whole = recipes.evaluate(base)
    scored = recipes.evaluate(base + ["--length_buckets", "12", "16"])
    buckets = {k.removeprefix("eval_samples"): v for k, v in scored.items() if k.startswith("eval_samples_len_")}
    assert buckets and set(buckets) <= {"_len_0_12", "_len_12_16", "_len_16_plus"}
    assert sum(buckets.values()) == whole["eval_samples"] == scored["eval_samples"]
    right = sum(scored[f"eval_accuracy{b}"] * n for b, n in buckets.items())
    assert right == pytest.approx(whole["eval_accuracy"] * whole["eval_samples"])
    assert scored["eval_accuracy"] == whole["eval_accuracy"]
    with pytest.raises(SystemExit):
        recipes.evaluate(base + ["--length_buckets", "16", "12"])
    assert "--length_buckets: expected increasing token counts, got 16 12" in capsys.readouterr().err


def test_evaluate_runs_as_a_script(sst2_run, recipes, tmp_path):
    data, out, results, _ = sst2_run
    subprocess.run(
        [sys.executable, "recipes/evaluate.py", "--model_name_or_path", str(out), "--data_dir", str(data),
         "--per_device_eval_batch_size", "4", "--output_file", str(tmp_path / "eval.json")],
        cwd=recipes.repo, check=True, capture_output=True, timeout=300,
    )
    assert json.load(open(tmp_path / "eval.json"))["eval_accuracy"] == results["eval_accuracy"]


def test_energy_prints_and_saves_the_report(sst2_run, recipes, capsys):
    data, out, _, _ = sst2_run
    report = recipes.energy(["--model_name_or_path", str(out), "--data_dir", str(data), "--num_samples", "3"])
    printed = capsys.readouterr().out
    assert report.batch_size == 3
    assert report.format() in printed
    saved = json.load(open(out / "energy.json"))
    assert saved["task"] == "sst2" and saved["batch_size"] == 3
    assert saved["energy_per_sample_mj"] == pytest.approx(report.energy_per_sample_mj)


def test_mnli_ann_scores_matched_and_mismatched(tmp_path, glue_files, tiny_bert, recipes):
    data = glue_files.make(tmp_path / "glue", "mnli", n_train=8, n_dev=N_DEV)
    out = tmp_path / "out"
    results = recipes.finetune(run_args(data, tiny_bert, out, "--coding", "ann", task="mnli"))
    assert json.load(open(out / "config.json"))["model_type"] == "bert"
    assert results["eval_samples"] == N_DEV and results["eval_samples_mm"] == N_DEV + 1
    assert {"eval_accuracy", "eval_accuracy_mm"} <= set(results) and "energy" not in results
    assert "| accuracy_mm |" in (out / "README.md").read_text()
    scored = recipes.evaluate(["--model_name_or_path", str(out), "--data_dir", str(data),
                                    "--per_device_eval_batch_size", "4"])
    for key in ("eval_accuracy", "eval_accuracy_mm"):
        assert scored[key] == results[key], key


@pytest.mark.filterwarnings("ignore::scipy.stats.NearConstantInputWarning")  # an untrained tiny regressor
def test_stsb_regression_reports_pearson_and_spearman(tmp_path, glue_files, tiny_bert, recipes):
    data = glue_files.make(tmp_path / "glue", "stsb", n_train=8, n_dev=N_DEV)
    results = recipes.finetune(run_args(data, tiny_bert, tmp_path / "out", "--coding", "repeat",
                                             "--time_steps", "2", task="stsb"))
    assert {"eval_pearson", "eval_spearmanr"} <= set(results) and results["eval_samples"] == N_DEV
    assert len(json.load(open(tmp_path / "out" / "config.json"))["id2label"]) == 1
    assert results["energy"]["coding"] == "repeat" and results["energy"]["steps"] == 2


# -- resume ------------------------------------------------------------------------------------

# 18 samples, batch 4: 5 batches an epoch (the last of 2); 2 batches a step: 3 steps an epoch
RESUME = ("--gradient_accumulation_steps", "2", "--num_train_epochs", "2", "--lr_scheduler_type", "constant")


@pytest.fixture(scope="module")
def resume_runs(tmp_path_factory, tiny_bert, recipes, glue_files):
    """An uninterrupted run (6 steps over 2 epochs) with epoch checkpoints."""
    root = tmp_path_factory.mktemp("resume")
    data = glue_files.make(root / "glue", "sst2", n_train=18, n_dev=N_DEV)
    whole = root / "whole"
    recipes.finetune(run_args(data, tiny_bert, whole, *RESUME, "--checkpointing_steps", "epoch"))
    return data, whole


def test_resume_after_a_stop_matches_an_uninterrupted_run(resume_runs, tiny_bert, recipes, tmp_path):
    data, whole = resume_runs
    out = tmp_path / "stopped"
    # stopped right after its first checkpoint, mid-epoch (4 of 5 batches seen)
    stopped = recipes.finetune(run_args(data, tiny_bert, out, *RESUME, "--checkpointing_steps", "2",
                                             "--max_train_steps", "2"))
    assert stopped["train_steps"] == 2
    assert json.load(open(out / "step_2" / "training_state.json")) == {
        "completed_steps": 2, "epoch": 0, "batches_in_epoch": 4}
    resumed = recipes.finetune(run_args(data, tiny_bert, out, *RESUME, "--checkpointing_steps", "2",
                                             "--resume_from_checkpoint", "latest"))
    assert resumed["train_steps"] == results_of(whole)["train_steps"] == 6
    assert sorted(os.listdir(out)).count("step_6") == 1 and not glob.glob(str(out / ".tmp-*"))
    assert_same_weights(weights(out), weights(whole))
    assert resumed["eval_accuracy"] == results_of(whole)["eval_accuracy"]


def test_resume_from_an_epoch_checkpoint_matches(resume_runs, tiny_bert, recipes, tmp_path):
    data, whole = resume_runs
    resumed = recipes.finetune(run_args(data, tiny_bert, tmp_path / "out", *RESUME,
                                             "--resume_from_checkpoint", str(whole / "epoch_0")))
    assert resumed["train_steps"] == 6
    assert_same_weights(weights(tmp_path / "out"), weights(whole))


def test_resume_needs_a_checkpoint(resume_runs, tiny_bert, recipes, tmp_path):
    data, whole = resume_runs
    with pytest.raises(FileNotFoundError, match=f"checkpoint folder not found: {tmp_path}/nope"):
        recipes.finetune(run_args(data, tiny_bert, tmp_path / "out", "--resume_from_checkpoint", tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match=f"latest: no step_N or epoch_N checkpoint in {tmp_path}/empty"):
        recipes.finetune(run_args(data, tiny_bert, tmp_path / "empty", "--resume_from_checkpoint", "latest"))
    with pytest.raises(ValueError, match="has no training_state.json; not a finetune.py checkpoint"):
        recipes.finetune(run_args(data, tiny_bert, tmp_path / "out", "--resume_from_checkpoint", whole))


# -- wall-clock budget (--max_minutes) ---------------------------------------------------------


def test_a_spent_budget_trains_no_step_and_says_so(resume_runs, tiny_bert, recipes, tmp_path):
    data, _ = resume_runs
    out = tmp_path / "out"
    results = recipes.finetune(run_args(data, tiny_bert, out, *RESUME, "--checkpointing_steps", "epoch",
                                        "--max_minutes", "0"))
    assert results["train_steps"] == 0 and results["epochs_trained"] == 0 and results["planned_steps"] == 6
    assert results["stopped_early"] is True
    assert results["stop_reason"] == "--max_minutes 0 reached: stopped at step 0 of 6 (0.00 of 2 epochs)"
    assert results_of(out) == results and "eval_accuracy" in results  # scored and saved all the same
    assert not [n for n in os.listdir(out) if n.startswith(("step_", "epoch_"))]  # nothing to resume from


def test_a_run_cut_by_its_budget_resumes_to_the_uninterrupted_weights(resume_runs, tiny_bert, recipes, tmp_path,
                                                                     monkeypatch):
    data, whole = resume_runs
    finetune = recipes.modules.finetune
    looks = []  # each look at the clock is a minute after the one before: the start, before training, every step
    monkeypatch.setattr(finetune, "wall_clock", lambda: looks.append(1) or 60.0 * (len(looks) - 1))
    out = tmp_path / "cut"
    argv = run_args(data, tiny_bert, out, *RESUME, "--checkpointing_steps", "epoch")
    cut = recipes.finetune([*argv, "--max_minutes", "4.5"])  # spent after the 4th of 6 steps
    assert cut["train_steps"] == 4 and cut["stopped_early"] is True and cut["epochs_trained"] == round(4 / 3, 3)
    assert cut["stop_reason"] == "--max_minutes 4.5 reached: stopped at step 4 of 6 (1.33 of 2 epochs)"
    assert results_of(out)["stopped_early"] is True
    card = (out / "README.md").read_text()
    assert f"**Stopped early**: {cut['stop_reason']}. 1.333 of 2 planned epochs were trained" in card
    # a step checkpoint where it stopped, mid-epoch (2 of the second epoch's 5 batches seen)
    assert json.load(open(out / "step_4" / "training_state.json")) == {
        "completed_steps": 4, "epoch": 1, "batches_in_epoch": 2}

    monkeypatch.undo()
    resumed = recipes.finetune([*argv, "--resume_from_checkpoint", "latest"])
    assert resumed["train_steps"] == 6 and resumed["stopped_early"] is False and "stop_reason" not in resumed
    assert "Stopped early" not in (out / "README.md").read_text()  # the card is written anew
    assert_same_weights(weights(out), weights(whole))
    assert resumed["eval_accuracy"] == results_of(whole)["eval_accuracy"]


def test_an_unspent_budget_changes_nothing(resume_runs, tiny_bert, recipes, tmp_path):
    data, whole = resume_runs
    results = recipes.finetune(run_args(data, tiny_bert, tmp_path / "out", *RESUME, "--max_minutes", "60"))
    assert results["train_steps"] == 6 and results["stopped_early"] is False and results["epochs_trained"] == 2
    assert_same_weights(weights(tmp_path / "out"), weights(whole))


# -- distillation ------------------------------------------------------------------------------


def test_distillation_loss_values(recipes):
    kd = recipes.modules._distill.distillation_loss
    student = torch.zeros(1, 2)
    teacher = torch.tensor([[math.log(3.0), 0.0]])
    # T=1: KL([3/4, 1/4] || [1/2, 1/2])
    expected = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    assert kd(student, teacher, 1.0, False).item() == pytest.approx(expected, rel=1e-6)
    # T=2: soft targets softmax([ln3/2, 0]) = [r/(r+1), 1/(r+1)] with r = sqrt(3), times T^2
    p = math.sqrt(3) / (math.sqrt(3) + 1)
    expected = 4 * (p * math.log(2 * p) + (1 - p) * math.log(2 * (1 - p)))
    assert kd(student, teacher, 2.0, False).item() == pytest.approx(expected, rel=1e-6)
    assert kd(teacher, teacher, 2.0, False).item() == pytest.approx(0.0, abs=1e-7)
    assert kd(torch.tensor([[1.0], [2.0]]), torch.tensor([[1.5], [4.0]]), 2.0, True).item() == pytest.approx(2.125)


@pytest.fixture(scope="module")
def teachers(tmp_path_factory, tiny_bert):
    """Two different ANN teachers for SST-2 (random heads, different seeds)."""
    from transformers import AutoTokenizer, BertForSequenceClassification

    folders = []
    for seed in (1, 2):
        folder = tmp_path_factory.mktemp(f"teacher{seed}")
        torch.manual_seed(seed)
        model = BertForSequenceClassification.from_pretrained(tiny_bert, num_labels=2)
        torch.nn.init.normal_(model.classifier.weight, std=2.0)
        model.save_pretrained(folder)
        AutoTokenizer.from_pretrained(tiny_bert).save_pretrained(folder)
        folders.append(folder)
    return folders


def test_distillation_uses_the_teacher(tmp_path, glue_files, tiny_bert, teachers, recipes):
    data = glue_files.make(tmp_path / "glue", "sst2", n_train=8, n_dev=N_DEV)
    runs = {}
    for name, teacher, alpha in (("t1", teachers[0], 1.0), ("t2", teachers[1], 1.0), ("half", teachers[0], 0.5)):
        out = tmp_path / name
        runs[name] = recipes.finetune(run_args(data, tiny_bert, out, "--teacher", teacher, "--kd_alpha", alpha,
                                                    "--kd_temperature", "2"))
        runs[name]["weights"] = weights(out)
    for run in runs.values():
        assert run["train_kd_loss"] > 0
    # alpha = 1 trains on the teacher alone: another teacher, other weights
    t1, t2 = runs["t1"]["weights"], runs["t2"]["weights"]
    assert any(not torch.equal(t1[k], t2[k]) for k in t1)
    assert runs["t1"]["train_loss"] == pytest.approx(runs["t1"]["train_kd_loss"])
    # the loss is the blend (1 - alpha) hard + alpha kd
    half = runs["half"]
    assert half["train_loss"] == pytest.approx(0.5 * half["train_hard_loss"] + 0.5 * half["train_kd_loss"], rel=1e-5)
    assert half["train_loss"] != pytest.approx(runs["t1"]["train_loss"])


def test_hidden_distillation_loss_values(recipes):
    hidden = recipes.modules._distill.hidden_distillation_loss
    mask = torch.tensor([[1, 1, 0]])  # the third token is padding
    teacher = (torch.zeros(1, 3, 2), torch.zeros(1, 3, 2), torch.zeros(1, 3, 2))  # embeddings, two layers
    student = (torch.full((1, 3, 2), 9.0),  # embeddings: never compared
               torch.tensor([[[1.0, 1.0], [1.0, 1.0], [50.0, 50.0]]]),  # padding: never compared
               torch.tensor([[[2.0, 0.0], [0.0, 0.0], [0.0, 0.0]]]))
    # layer 1: MSE 1 over 4 real entries; layer 2: 4 / 4 = 1; mean over layers 1
    assert hidden(student, teacher, mask).item() == pytest.approx(1.0)
    assert hidden(teacher, teacher, mask).item() == 0.0


def test_hidden_distillation_trains_on_the_layers(tmp_path, glue_files, tiny_bert, teachers, recipes):
    data = glue_files.make(tmp_path / "glue", "sst2", n_train=8, n_dev=N_DEV)
    run = recipes.finetune(run_args(data, tiny_bert, tmp_path / "out", "--teacher", teachers[0], "--kd_alpha", "0.5",
                                    "--kd_hidden_weight", "2.0"))
    assert run["train_hidden_loss"] > 0
    # the loss optimized is the blend plus the weighted hidden term
    blend = 0.5 * run["train_hard_loss"] + 0.5 * run["train_kd_loss"]
    assert run["train_loss"] == pytest.approx(blend + 2.0 * run["train_hidden_loss"], rel=1e-5)
    manifest = json.loads((tmp_path / "out" / "run_manifest.json").read_text())
    assert manifest["run"]["kd_hidden_weight"] == 2.0


def teacher_like(tiny_bert, folder, **changes):
    """An SST-2 ANN teacher of ``tiny_bert``'s config with ``changes`` (random weights)."""
    from transformers import BertConfig, BertForSequenceClassification

    BertForSequenceClassification(BertConfig.from_pretrained(tiny_bert, num_labels=2, **changes)).save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_bert).save_pretrained(folder)
    return folder


@pytest.mark.parametrize("flag, field", [("--kd_hidden_weight", "num_hidden_layers"),
                                         ("--kd_attention_weight", "num_attention_heads")])
def test_layer_distillation_needs_a_teacher_of_the_same_shape(tmp_path, glue_files, tiny_bert, recipes, capsys,
                                                              teachers, flag, field):
    data = glue_files.make(tmp_path / "glue", "sst2", n_train=4, n_dev=3)
    for bad, expected in (((flag, "1.0"), f"{flag} needs --teacher"),
                          (("--teacher", teachers[0], flag, "nan"), f"{flag} must be a number >= 0, got nan")):
        with pytest.raises(SystemExit):
            recipes.finetune(run_args(data, tiny_bert, tmp_path / "a", *bad))
        assert expected in capsys.readouterr().err
    other = teacher_like(tiny_bert, tmp_path / "other", **{field: 1})
    with pytest.raises(ValueError, match=f"{flag} pairs the student's layers .* has {field}=1 and the student 2"):
        recipes.finetune(run_args(data, tiny_bert, tmp_path / "b", "--teacher", other, flag, "1.0"))


def test_attention_distillation_loss_values(recipes):
    attention = recipes.modules._distill.attention_distillation_loss
    mask = torch.tensor([[1, 1, 0]])  # the third token is padding
    teacher = torch.tensor([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])[None, None]  # [B=1, H=1, L, L]
    student = torch.tensor([[0.25, 0.75, 0.0], [0.5, 0.5, 0.0], [1.0, 0.0, 0.0]])[None, None].requires_grad_()
    # layer 1: KL per real query row, row 0: 0.5 ln(0.5/0.25) + 0.5 ln(0.5/0.75), row 1: ln(1/0.5);
    # the padded row 2 (far apart) is skipped; layer 2 the same maps: 0; mean over layers
    row0, row1 = 0.5 * math.log(2.0) + 0.5 * math.log(2.0 / 3.0), math.log(2.0)
    loss = attention((student, teacher), (teacher, teacher), mask)
    assert loss.item() == pytest.approx((row0 + row1) / 2 / 2)
    loss.backward()
    assert torch.all(student.grad[..., 2, :] == 0)  # padded query: no gradient
    assert torch.all(student.grad[..., :2, 2] == 0)  # padded key: the teacher's 0 there asks nothing
    assert attention((teacher,), (teacher,), mask).item() == 0.0
    # heads are averaged: a second head equal to the teacher's halves the loss
    two_heads = torch.cat([student.detach(), teacher], dim=1)
    assert attention((two_heads,), (teacher.expand(1, 2, 3, 3),), mask).item() == pytest.approx((row0 + row1) / 2 / 2)


@pytest.mark.parametrize("coding", ["individual", "ann"])
def test_attention_distillation_trains_on_the_maps(tmp_path, glue_files, tiny_bert, teachers, recipes, coding):
    """Both students return their maps to the term (BERT through its eager attention: SDPA
    returns none), and the loss optimized includes it with its weight."""
    data = glue_files.make(tmp_path / "glue", "sst2", n_train=8, n_dev=N_DEV)
    run = recipes.finetune(run_args(data, tiny_bert, tmp_path / "out", "--coding", coding, "--teacher", teachers[0],
                                    "--kd_alpha", "0.5", "--kd_attention_weight", "3.0"))
    assert run["train_attention_loss"] > 0
    assert "train_hidden_loss" not in run
    blend = 0.5 * run["train_hard_loss"] + 0.5 * run["train_kd_loss"]
    assert run["train_loss"] == pytest.approx(blend + 3.0 * run["train_attention_loss"], rel=1e-5)
    manifest = json.loads((tmp_path / "out" / "run_manifest.json").read_text())
    assert manifest["run"]["kd_attention_weight"] == 3.0


def test_attention_distillation_needs_softmax_maps(tmp_path, glue_files, tiny_bert, recipes, teachers):
    data = glue_files.make(tmp_path / "glue", "sst2", n_train=4, n_dev=3)
    with pytest.raises(ValueError, match="student has attention='spiking', whose maps are spike scores"):
        recipes.finetune(run_args(data, tiny_bert, tmp_path / "c", "--teacher", teachers[0], "--attention", "spiking",
                                  "--kd_attention_weight", "1"))


def test_compiled_run_saves_bert_names_and_its_command(tmp_path, glue_files, tiny_bert, recipes, monkeypatch):
    """``accelerate launch --dynamo_backend ...`` compiles the model: the checkpoint keeps
    BERT's key names (public API, loadable as usual) and the command says how it ran."""
    data = glue_files.make(tmp_path / "glue", "sst2", n_train=8, n_dev=N_DEV)
    monkeypatch.delenv("ACCELERATE_DYNAMO_BACKEND", raising=False)
    plain = recipes.finetune(run_args(data, tiny_bert, tmp_path / "plain", "--max_train_steps", "1"))
    monkeypatch.setenv("ACCELERATE_DYNAMO_BACKEND", "aot_eager")
    out = tmp_path / "compiled"
    results = recipes.finetune(run_args(data, tiny_bert, out, "--max_train_steps", "1"))
    saved = weights(out)
    assert not any(key.startswith("_orig_mod.") for key in saved)
    assert saved.keys() == weights(tmp_path / "plain").keys()
    assert "--dynamo_backend aot_eager" in results["command"] and "--dynamo_backend" not in plain["command"]
    import sj_bert

    sj_bert.SpikingBertForSequenceClassification.from_pretrained(out)  # loads with no missing keys
    torch._dynamo.reset()


def test_teacher_must_have_the_task_labels(tmp_path, glue_files, tiny_bert, teachers, recipes):
    data = glue_files.make(tmp_path / "glue", "mnli", n_train=4, n_dev=3)
    with pytest.raises(ValueError, match="has 2 labels, task mnli needs 3"):
        recipes.finetune(run_args(data, tiny_bert, tmp_path / "out", "--teacher", teachers[0], task="mnli"))


# -- bad input ---------------------------------------------------------------------------------


def test_unknown_task(recipes, tmp_path):
    with pytest.raises(ValueError, match="unknown GLUE task 'sst5'; expected one of: cola, sst2, mrpc, stsb, qqp, "
                                         "mnli, qnli, rte, wnli"):
        recipes.finetune(["--task", "sst5", "--data_dir", str(tmp_path)])


def test_missing_data_file(recipes, glue_files, tiny_bert, tmp_path):
    data = glue_files.make(tmp_path / "glue", "rte")
    os.remove(tmp_path / "glue" / "RTE" / "train.tsv")
    with pytest.raises(FileNotFoundError, match=f"GLUE rte data file not found: {data}/RTE/train.tsv"):
        recipes.finetune(run_args(data, tiny_bert, tmp_path / "out", task="rte"))


def test_data_dir_with_wrong_columns(recipes, glue_files, tiny_bert, tmp_path):
    data = glue_files.make(tmp_path / "glue", "qnli")
    header, rows = glue_files.rows("rte", 4)  # RTE's columns in QNLI's folder
    glue_files.write(tmp_path / "glue" / "QNLI" / "dev.tsv", header, rows)
    with pytest.raises(ValueError, match=r"QNLI/dev\.tsv: not a GLUE qnli file: missing column\(s\) "
                                         r"\['question', 'sentence'\]"):
        recipes.finetune(run_args(data, tiny_bert, tmp_path / "out", task="qnli"))


def test_nonexistent_checkpoint_folder(recipes, glue_files, tiny_bert, tmp_path):
    data = glue_files.make(tmp_path / "glue", "rte")
    missing = tmp_path / "no_such_checkpoint"
    with pytest.raises(FileNotFoundError, match=f"checkpoint folder not found: {missing}"):
        recipes.evaluate(["--model_name_or_path", str(missing), "--data_dir", data])
    with pytest.raises(FileNotFoundError, match=f"checkpoint folder not found: {missing}"):
        recipes.energy(["--model_name_or_path", str(missing), "--data_dir", data])
    with pytest.raises(FileNotFoundError, match=f"--model_name_or_path folder not found: {missing}"):
        recipes.finetune(run_args(data, missing, tmp_path / "out", task="rte"))
    with pytest.raises(FileNotFoundError, match=f"--teacher folder not found: {missing}"):
        recipes.finetune(run_args(data, tiny_bert, tmp_path / "out", "--teacher", missing, task="rte"))


def test_flags_that_do_not_fit_are_refused(recipes, capsys):
    for argv, message in (
        (["--task", "rte", "--coding", "ann", "--neuron", "lif"], "--neuron only apply to spiking models"),
        (["--task", "rte", "--checkpointing_steps", "often"], 'must be a positive integer or "epoch"'),
        (["--task", "rte", "--kd_alpha", "2"], "--kd_alpha must be in [0, 1]"),
        (["--task", "rte", "--resume_from_checkpoint", "latest"], "--resume_from_checkpoint latest needs --output_dir"),
        (["--task", "rte", "--checkpointing_steps", "2"], "--checkpointing_steps needs --output_dir"),
    ):
        with pytest.raises(SystemExit):
            recipes.modules.finetune.parse_args(argv)
        assert message in capsys.readouterr().err


def test_energy_refuses_an_ann_checkpoint(recipes, tiny_bert, teachers, glue_files, tmp_path):
    data = glue_files.make(tmp_path / "glue", "sst2")
    with pytest.raises(TypeError, match="the energy report needs an SNN-BERT checkpoint"):
        recipes.energy(["--model_name_or_path", str(teachers[0]), "--task", "sst2", "--data_dir", data])


# -- --calibrate_conversion ---------------------------------------------------------------------


def test_calibrate_conversion_folds_the_maps_before_training(tmp_path, glue_files, tiny_bert, recipes):
    """With the flag, the model the run starts from is the converted BERT calibrated on the
    first N train examples (``sj_bert.conversion.calibrate_spike_maps``), and nothing else
    changes; the run manifest records N."""
    from sj_bert import SpikingBertForSequenceClassification, glue
    from sj_bert.conversion import calibrate_spike_maps

    data = glue_files.make(tmp_path / "glue", "sst2", n_train=12, n_dev=N_DEV)
    finetune, streams = recipes.modules.finetune, []
    calibrate = finetune.calibrate_conversion

    def watched(*args, **kwargs):  # the global random stream before and after
        streams.append(torch.random.get_rng_state())
        calibrate(*args, **kwargs)
        streams.append(torch.random.get_rng_state())

    finetune.calibrate_conversion = watched
    try:
        for name, extra in (("plain", []), ("calibrated", ["--calibrate_conversion", "6"])):
            recipes.finetune(run_args(data, tiny_bert, tmp_path / name, "--max_minutes", "0", "--v_threshold", "0.05",
                                      *extra))
    finally:
        finetune.calibrate_conversion = calibrate
    # nothing drawn: the training after it sees the dropout masks a run from the saved start would
    assert len(streams) == 2 and torch.equal(*streams)
    plain, calibrated = weights(tmp_path / "plain"), weights(tmp_path / "calibrated")
    changed = sorted(k for k in plain if not torch.equal(plain[k], calibrated[k]))
    readers = ("attention.self.query.", "attention.self.key.", "attention.self.value.", "attention.output.dense.",
               "intermediate.dense.", "output.dense.")
    assert changed and all(k.startswith("bert.encoder.") and any(r in k for r in readers) for k in changed), changed
    model = SpikingBertForSequenceClassification.from_pretrained(tmp_path / "plain")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "plain")
    sentences = list(glue.read_glue_file(os.path.join(data, "SST-2", "train.tsv"), "sst2")["sentence"][:6])
    calibrate_spike_maps(model, [dict(tokenizer(sentences[:4], padding=True, return_tensors="pt")),
                                 dict(tokenizer(sentences[4:], padding=True, return_tensors="pt"))])
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, calibrated[key], rtol=1e-5, atol=1e-6, msg=key)
    manifest = json.loads((tmp_path / "calibrated" / "run_manifest.json").read_text())
    assert manifest["run"]["calibrate_conversion"] == 6


def test_calibrate_conversion_refuses_what_it_cannot_calibrate(tmp_path, glue_files, tiny_bert, recipes, sst2_run,
                                                               capsys):
    data = glue_files.make(tmp_path / "glue", "sst2", n_train=8, n_dev=N_DEV)
    for extra, message in ((["--coding", "repeat"], "not --coding repeat"),
                           (["--attention", "spiking"], "--attention spiking"),
                           (["--coding", "ann"], "not --coding ann")):
        with pytest.raises(SystemExit):
            recipes.finetune(run_args(data, tiny_bert, tmp_path / "x", "--calibrate_conversion", "4", *extra))
        assert message in capsys.readouterr().err
    _, snn_checkpoint, _, _ = sst2_run
    with pytest.raises(ValueError, match="already SNN-BERT"):
        recipes.finetune(run_args(data, snn_checkpoint, tmp_path / "y", "--calibrate_conversion", "4"))



def test_calibrate_thresholds_sets_them_before_the_maps(tmp_path, glue_files, tiny_bert, recipes, capsys):
    """``--calibrate_thresholds RATE``: the run starts from the converted BERT whose thresholds
    ``sj_bert.conversion.calibrate_thresholds`` set on the first N train examples (N from
    ``--calibrate_conversion``), then the spike maps fitted for those thresholds; recorded in
    the run manifest."""
    from sj_bert import SpikingBertForSequenceClassification, glue
    from sj_bert.conversion import calibrate_spike_maps, calibrate_thresholds

    data = glue_files.make(tmp_path / "glue", "sst2", n_train=12, n_dev=N_DEV)
    for name, extra in (("plain", []), ("thresholds", ["--calibrate_thresholds", "0.2", "--calibrate_conversion", "6"])):
        recipes.finetune(run_args(data, tiny_bert, tmp_path / name, "--max_minutes", "0", "--v_threshold", "0.05",
                                  *extra))
    model = SpikingBertForSequenceClassification.from_pretrained(tmp_path / "plain")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "plain")
    sentences = list(glue.read_glue_file(os.path.join(data, "SST-2", "train.tsv"), "sst2")["sentence"][:6])
    batches = [dict(tokenizer(sentences[:4], padding=True, return_tensors="pt")),
               dict(tokenizer(sentences[4:], padding=True, return_tensors="pt"))]
    calibrate_thresholds(model, batches, 0.2)
    calibrate_spike_maps(model, batches)
    calibrated = weights(tmp_path / "thresholds")
    assert any(not torch.equal(calibrated[k], weights(tmp_path / "plain")[k]) for k in calibrated if "v_threshold" in k)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, calibrated[key], rtol=1e-5, atol=1e-6, msg=key)
    manifest = json.loads((tmp_path / "thresholds" / "run_manifest.json").read_text())
    assert manifest["run"]["calibrate_thresholds"] == 0.2
    for extra, message in ((["--calibrate_thresholds", "1"], "strictly between 0 and 1, got '1'"),
                           (["--calibrate_thresholds", "0.2", "--no-per_channel"], "drop --no-per_channel"),
                           (["--calibrate_thresholds", "0.2", "--coding", "repeat"], "not --coding repeat")):
        with pytest.raises(SystemExit):
            recipes.finetune(run_args(data, tiny_bert, tmp_path / "x", *extra))
        assert message in capsys.readouterr().err
    with pytest.raises(ValueError, match="--calibrate_thresholds calibrates an ANN BERT.*already SNN-BERT"):
        recipes.finetune(run_args(data, str(tmp_path / "plain"), tmp_path / "y", "--calibrate_thresholds", "0.2"))

# -- --spike_rate_weight ------------------------------------------------------------------------


def test_spike_rate_weight_trains_fewer_spikes(tmp_path, glue_files, tiny_bert, recipes):
    """The same run with and without the penalty: the penalized model fires less, its mean
    train firing rate is reported, and the manifest records the weight."""
    data = glue_files.make(tmp_path / "glue", "sst2", n_train=16, n_dev=N_DEV)
    runs = {}
    for name, weight in (("plain", "0"), ("penalized", "100")):
        recipes.finetune(run_args(data, tiny_bert, tmp_path / name, "--num_train_epochs", "3", "--v_threshold", "0.05", "--learning_rate", "1e-3",
                                  "--spike_rate_weight", weight, "--energy_samples", str(N_DEV)))
        runs[name] = results_of(tmp_path / name)
    plain, penalized = runs["plain"], runs["penalized"]
    assert "train_spike_rate" not in plain
    assert 0 < penalized["train_spike_rate"] < 1
    assert penalized["train_loss"] == pytest.approx(penalized["train_hard_loss"] + 100 * penalized["train_spike_rate"])
    assert penalized["energy"]["firing_rate"] < 0.8 * plain["energy"]["firing_rate"]
    manifest = json.loads((tmp_path / "penalized" / "run_manifest.json").read_text())
    assert manifest["run"]["spike_rate_weight"] == 100


def test_spike_rate_weight_is_refused_where_nothing_spikes(recipes, capsys):
    for argv, message in ((["--coding", "ann", "--spike_rate_weight", "1"], "not --coding ann"),
                          (["--spike_rate_weight", "-1"], "--spike_rate_weight")):
        with pytest.raises(SystemExit):
            recipes.modules.finetune.parse_args(["--task", "sst2", *argv])
        assert message in capsys.readouterr().err
