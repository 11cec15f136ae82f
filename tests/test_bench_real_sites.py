"""bench/real_sites.py: finetune.py with some kinds of neuron real, on a tiny BERT and tiny SST-2."""

from __future__ import annotations

import json

import pytest


@pytest.fixture
def real_sites(bench_script):
    from accelerate.state import AcceleratorState, GradientState

    yield bench_script("real_sites")
    AcceleratorState._reset_state(reset_partial_state=True)  # as a new process would start
    GradientState._reset_state()


def finetune_flags(data, model, out, *extra):
    return ["--task", "sst2", "--data_dir", str(data), "--model_name_or_path", str(model), "--output_dir", str(out),
            "--max_train_steps", "2", "--per_device_train_batch_size", "4", "--seed", "0", *extra]


@pytest.mark.parametrize("read", ["input", "average"])
def test_real_sites_trains_and_scores_with_those_neurons_real(real_sites, tiny_bert_twin, glue_files, tmp_path,
                                                             monkeypatch, read):
    from sj_bert import conversion

    data = glue_files.make(tmp_path / "glue", "sst2", n_train=8, n_dev=5)
    model = tiny_bert_twin(tmp_path / "bert")
    entered = []
    real_valued = conversion.real_valued
    monkeypatch.setattr(real_sites, "real_valued",
                        lambda m, kinds, **how: entered.append((kinds, how)) or real_valued(m, kinds, **how))
    out = tmp_path / "result.json"
    read_flags = [] if read == "input" else ["--read", read]  # input is the default: no flag
    results = real_sites.main(["--real", "attention.self.neuron", "intermediate.neuron", *read_flags, "--out", str(out),
                               "--", *finetune_flags(data, model, tmp_path / "run")])
    assert entered == [(["attention.self.neuron", "intermediate.neuron"], {"read": read})]
    assert json.loads(out.read_text()) == results
    assert results["real_sites"] == ["attention.self.neuron", "intermediate.neuron"] and results["train_steps"] == 2
    assert results["real_from"] == read
    assert "eval_accuracy" in results and "energy" not in results  # the saved model fires everywhere: not measured
    assert results["command"].startswith(
        f"python bench/real_sites.py --real attention.self.neuron intermediate.neuron{' '.join(['', *read_flags])} "
        f"--out {out} -- --task sst2")


def test_real_sites_refuses_what_it_cannot_do(real_sites, tiny_bert_twin, glue_files, tmp_path):
    data = glue_files.make(tmp_path / "glue", "sst2", n_train=8, n_dev=5)
    model = tiny_bert_twin(tmp_path / "bert")
    with pytest.raises(SystemExit, match="give finetune.py's flags after --"):
        real_sites.main(["--real", "intermediate.neuron", "--out", str(tmp_path / "x.json")])
    with pytest.raises(ValueError, match="--coding ann has none"):
        real_sites.main(["--real", "intermediate.neuron", "--out", str(tmp_path / "x.json"), "--",
                         *finetune_flags(data, model, tmp_path / "ann", "--coding", "ann")])
    assert not (tmp_path / "x.json").exists()
