"""finetune.py --pair_encoding bi: bi-encoders trained, scored, measured and reloaded, with the
recipe's other features (a twin as teacher, calibration, the firing-rate penalty)."""

from __future__ import annotations

import json

import pytest
import torch

N_DEV = 5


def bi_args(data, model, out, *extra, task="mrpc"):
    return ["--task", task, "--data_dir", str(data), "--model_name_or_path", str(model), "--output_dir", str(out),
            "--seed", "0", "--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "4",
            "--num_train_epochs", "1", "--pair_encoding", "bi", "--energy_samples", "3", *map(str, extra)]


@pytest.fixture(scope="module")
def mrpc_runs(tmp_path_factory, tiny_bert, recipes, glue_files):
    """The ANN twin as a bi-encoder, then SNN-BERT as a bi-encoder taught by it (logits, every
    layer's output and attention map), calibrated and with the firing-rate penalty."""
    root = tmp_path_factory.mktemp("mrpc_bi")
    data = glue_files.make(root / "glue", "mrpc", n_train=8, n_dev=N_DEV)
    twin = recipes.finetune(bi_args(data, tiny_bert, root / "ann", "--coding", "ann"))
    snn = recipes.finetune(bi_args(data, tiny_bert, root / "snn", "--teacher", root / "ann", "--kd_hidden_weight", "1",
                                   "--kd_attention_weight", "1", "--spike_rate_weight", "0.1",
                                   "--calibrate_thresholds", "0.2", "--calibrate_conversion", "4"))
    return data, root, twin, snn


def test_bi_encoders_train_and_record_how_they_read_a_pair(mrpc_runs):
    data, root, twin, snn = mrpc_runs
    for run, folder, model_type in ((twin, "ann", "bert_bi_encoder"), (snn, "snn", "spiking_bert_bi_encoder")):
        assert {"eval_accuracy", "eval_f1"} <= set(run) and run["eval_samples"] == N_DEV
        assert "--pair_encoding bi" in run["command"]
        config = json.loads((root / folder / "config.json").read_text())
        assert config["model_type"] == model_type and config["similarity_scale"] == 5.0
        manifest = json.loads((root / folder / "run_manifest.json").read_text())
        assert manifest["run"]["pair_encoding"] == "bi"
    assert "energy" not in twin
    # every term of the loss was on, each computed on both sides' sentences
    for term in ("train_kd_loss", "train_hidden_loss", "train_attention_loss", "train_spike_rate"):
        assert snn[term] > 0, term
    assert snn["energy"]["model"] == "snn" and snn["energy"]["batch_size"] == 3
    assert [op["name"] for op in snn["energy"]["ops"]][-1] == "classifier"
    card = (root / "snn" / "README.md").read_text()
    assert "# SNN-BERT (individual coding) bi-encoder fine-tuned on GLUE MRPC" in card
    assert "`--pair_encoding bi`" in card and "input_ids_a" in card


def test_evaluate_and_energy_read_a_bi_encoder_as_it_was_trained(mrpc_runs, recipes, tmp_path):
    data, root, twin, snn = mrpc_runs
    for run, folder in ((twin, "ann"), (snn, "snn")):
        scored = recipes.evaluate(["--model_name_or_path", str(root / folder), "--data_dir", str(data),
                                   "--per_device_eval_batch_size", "4"])
        assert (scored["eval_accuracy"], scored["eval_f1"]) == (run["eval_accuracy"], run["eval_f1"])
    report = recipes.energy(["--model_name_or_path", str(root / "snn"), "--data_dir", str(data), "--num_samples", "3",
                             "--output_file", str(tmp_path / "energy.json")])
    assert report.energy_per_sample_mj == pytest.approx(snn["energy"]["energy_per_sample_mj"])


@pytest.mark.filterwarnings("ignore::scipy.stats.NearConstantInputWarning")  # an untrained tiny regressor
def test_stsb_bi_encoder_scores_by_cosine(tmp_path, glue_files, tiny_bert, recipes):
    data = glue_files.make(tmp_path / "glue", "stsb", n_train=8, n_dev=N_DEV)
    results = recipes.finetune(bi_args(data, tiny_bert, tmp_path / "out", "--max_train_steps", "1", task="stsb"))
    assert {"eval_pearson", "eval_spearmanr"} <= set(results) and results["energy"]["batch_size"] == 3
    from sj_bert import zoo

    _, model = zoo.load_checkpoint(tmp_path / "out")
    assert type(model).__name__ == "SpikingBertBiEncoder" and model.classifier is None


def test_head_lr_trains_the_head_at_its_own_rate(mrpc_runs, tiny_bert, recipes, tmp_path):
    """One step, the encoder at a negligible rate: the classifier moves by about --head_lr
    (AdamW's first step), and the encoder no more than with the head at the negligible rate."""
    from safetensors.torch import load_file

    data = mrpc_runs[0]
    runs = {}
    for name, extra in (("plain", ["--head_lr", "1e-9"]), ("head", ["--head_lr", "1e-2"])):
        recipes.finetune(bi_args(data, tiny_bert, tmp_path / name, "--coding", "ann", "--max_train_steps", "1",
                                 "--learning_rate", "1e-9", *extra))
        runs[name] = load_file(tmp_path / name / "model.safetensors")
    manifest = json.loads((tmp_path / "head" / "run_manifest.json").read_text())
    assert manifest["run"]["head_lr"] == 1e-2
    moved = (runs["head"]["classifier.weight"] - runs["plain"]["classifier.weight"]).abs()
    assert 5e-3 < moved.max().item() < 2e-2
    for key in runs["plain"]:
        if not key.startswith("classifier."):
            assert torch.allclose(runs["head"][key], runs["plain"][key], atol=1e-6), key


@pytest.mark.parametrize("task, encoding, expected", [("mrpc", "bi", "default"), ("stsb", "bi", None),
                                                      ("mrpc", "cross", None), ("mrpc", "bi", 5e-3)])
def test_a_bi_encoders_classifier_gets_the_recipes_head_lr(recipes, tiny_bert, task, encoding, expected):
    """The default --head_lr is for a bi-encoder's classifier only (STS-B's scores by cosine, a
    cross-encoder's classifier trains with its encoder); a given one wins."""
    finetune = recipes.modules.finetune
    argv = ["--task", task, "--model_name_or_path", str(tiny_bert), "--pair_encoding", encoding, "--coding", "ann"]
    args = finetune.parse_args([*argv, *(["--head_lr", str(expected)] if isinstance(expected, float) else [])])
    finetune.load_model(args, 1 if task == "stsb" else 2)
    assert args.head_lr == (finetune.BI_ENCODER_HEAD_LR if expected == "default" else expected)


def test_bi_encoding_mistakes_are_named(mrpc_runs, tiny_bert, recipes, glue_files, tmp_path, capsys):
    data, root, _, _ = mrpc_runs
    sst2 = glue_files.make(tmp_path / "sst2", "sst2", n_train=4, n_dev=3)
    with pytest.raises(SystemExit):
        recipes.finetune(bi_args(sst2, tiny_bert, tmp_path / "a", task="sst2"))
    assert "--pair_encoding bi encodes the two sentences of a pair apart; sst2 has one sentence" in capsys.readouterr().err
    cross = [a for a in bi_args(data, root / "ann", tmp_path / "b", "--max_train_steps", "1") if a not in ("--pair_encoding", "bi")]
    with pytest.raises(ValueError, match="is a bi-encoder .* continue it with --pair_encoding bi"):
        recipes.finetune(cross)
    cross_teacher = tmp_path / "cross_twin"
    recipes.finetune(["--task", "mrpc", "--data_dir", str(data), "--model_name_or_path", str(tiny_bert),
                      "--output_dir", str(cross_teacher), "--coding", "ann", "--max_train_steps", "1"])
    with pytest.raises(ValueError, match="is a cross-encoder and the student a bi-encoder"):
        recipes.finetune(bi_args(data, tiny_bert, tmp_path / "d", "--teacher", cross_teacher, "--max_train_steps", "1"))


def test_cross_is_the_default_and_resumes_runs_from_before_the_flag(recipes):
    finetune = recipes.modules.finetune
    given = finetune.parse_args(["--task", "mrpc", "--pair_encoding", "cross"])
    assert given.pair_encoding is None and finetune.parse_args(["--task", "mrpc"]).pair_encoding is None
    assert finetune.parse_args(["--task", "mrpc", "--pair_encoding", "bi"]).pair_encoding == "bi"
    # a manifest written before --pair_encoding existed is the same run
    here = {"run": {"pair_encoding": given.pair_encoding, "seed": 0}}
    assert finetune.run_differences({"run": {"seed": 0}}, here) == []
    assert finetune.run_differences({"run": {"seed": 0}}, {"run": {"pair_encoding": "bi", "seed": 0}}) == [
        "--pair_encoding: None there, bi here"]
