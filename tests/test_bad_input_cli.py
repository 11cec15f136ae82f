"""Bad input to ``python -m sj_bert``: each is a usage error (exit status 2) whose message names
the argument and what is wrong, not a traceback (the typo case is in test_cli.py)."""

from __future__ import annotations

import pytest

from sj_bert import __main__ as cli


def usage_error(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    return capsys.readouterr().err


@pytest.fixture
def folder(tmp_path, tiny_checkpoint):
    tiny_checkpoint(tmp_path / "ckpt")
    return tmp_path / "ckpt"


def test_a_missing_folder(tmp_path, capsys):
    err = usage_error(["--checkpoint", str(tmp_path / "nope")], capsys)
    assert f"--checkpoint {tmp_path}/nope: checkpoint folder not found" in err


def test_a_file_instead_of_a_folder(folder, capsys):
    err = usage_error(["--checkpoint", str(folder / "config.json")], capsys)
    assert "config.json is a file; expected a checkpoint folder" in err


def test_damaged_weights(folder, capsys):
    with open(folder / "model.safetensors", "r+b") as f:
        f.truncate(50)
    err = usage_error(["--checkpoint", str(folder)], capsys)
    assert f"checkpoint {folder}: the weights (model.safetensors) could not be read" in err


def test_an_ann_checkpoint(tmp_path, capsys):
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    import sj_bert

    tokenizer = AutoTokenizer.from_pretrained(sj_bert.offline_bert())
    BertForSequenceClassification(BertConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=16, max_position_embeddings=32)).save_pretrained(tmp_path / "ann")
    tokenizer.save_pretrained(tmp_path / "ann")
    err = usage_error(["--checkpoint", str(tmp_path / "ann"), "a film"], capsys)
    assert "is a BertForSequenceClassification (bert); this command classifies with SNN-BERT checkpoints" in err


def test_an_empty_sentence(folder, capsys):
    assert "sentences must not be empty" in usage_error(["--checkpoint", str(folder), "a film", " "], capsys)


def test_a_sentence_longer_than_the_model_is_cut_to_fit(folder, capsys):
    cli.main(["--checkpoint", str(folder), "word " * 100])  # the tiny model holds 32 positions
    assert f"model: local folder {folder}" in capsys.readouterr().out


def test_an_altered_zoo_file(tiny_zoo, capsys):
    part = sorted(tiny_zoo.glob("*.part-*"))[0]
    data = bytearray(part.read_bytes())
    data[len(data) // 2] ^= 0x01
    part.write_bytes(bytes(data))
    err = usage_error(["--checkpoint", "tiny"], capsys)
    assert f"--checkpoint tiny: checkpoint 'tiny': {part} has sha256" in err and "refusing to load it" in err
