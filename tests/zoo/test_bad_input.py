"""Bad input to the zoo: a damaged registry or checkpoint, a name that is not in the zoo, a path
that is not a checkpoint. Each is an error of the right type whose message names the file or
name and what was expected, not a raw JSON, UTF-8 or safetensors traceback."""

from __future__ import annotations

import json
import shutil

import pytest

import sj_bert
from sj_bert import zoo


@pytest.mark.parametrize("content, match", [
    (b"{bad", r"zoo registry .*registry\.json is not valid JSON \(line 1, column 2"),
    (b"\xff{}", r"zoo registry .*registry\.json is not UTF-8 text"),
    (b"[1]", r"zoo registry .*registry\.json: expected an object with a list \"checkpoints\""),
    (json.dumps({"checkpoints": [{"name": "x"}]}).encode(),
     r"registry\.json: checkpoint record 'x' has missing field\(s\) \['architecture'"),
    (json.dumps({"checkpoints": [{"name": "x", "colour": "red"}]}).encode(), r"unknown field\(s\) \['colour'\]"),
], ids=["json", "utf8", "shape", "missing-field", "unknown-field"])
def test_a_damaged_registry(tiny_zoo, content, match):
    (tiny_zoo.parent / "registry.json").write_bytes(content)
    with pytest.raises(ValueError, match=match):
        sj_bert.from_pretrained("tiny")


def test_a_name_not_in_the_zoo_lists_the_names_and_points_to_a_folder_of_that_name(tiny_zoo, tmp_path, monkeypatch,
                                                                                     tiny_checkpoint):
    tiny_checkpoint(tmp_path / "work" / "mine")
    monkeypatch.chdir(tmp_path / "work")
    with pytest.raises(KeyError, match=r"'mine' is not a zoo checkpoint; known checkpoints: tiny\..*write \./mine"):
        sj_bert.from_pretrained("mine")
    assert sj_bert.from_pretrained("./mine").source == "local folder ./mine"


@pytest.fixture
def folder(tmp_path, tiny_checkpoint):
    """A copy of a tiny checkpoint folder, to damage."""
    tiny_checkpoint(tmp_path / "ckpt")
    return tmp_path / "ckpt"


def test_paths_that_are_not_checkpoints(folder, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"checkpoint folder not found: \./no-such-folder"):
        zoo.resolve("./no-such-folder")
    with pytest.raises(NotADirectoryError, match=r"config\.json is a file; expected a checkpoint folder"):
        zoo.resolve(str(folder / "config.json"))
    (folder / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match=rf"{folder} has no config\.json; expected a checkpoint folder"):
        sj_bert.from_pretrained(folder)


@pytest.mark.parametrize("size", [0, 100, -1], ids=["empty", "header-cut", "half"])
def test_damaged_weights_name_the_file(folder, size):
    weights = folder / "model.safetensors"
    with open(weights, "r+b") as f:
        f.truncate(size if size >= 0 else weights.stat().st_size // 2)
    with pytest.raises(ValueError, match=rf"checkpoint {folder}: the weights \(model\.safetensors\) could not be read"):
        sj_bert.from_pretrained(folder)


@pytest.mark.parametrize("content", [b"\xff\xfe garbage", b"{not json"], ids=["utf8", "json"])
def test_a_damaged_tokenizer_file(folder, content):
    (folder / "tokenizer.json").write_bytes(content)
    with pytest.raises(ValueError, match=rf"checkpoint {folder}: a config or tokenizer file is not valid UTF-8 JSON"):
        sj_bert.from_pretrained(folder)


def test_a_damaged_config_file(folder):
    (folder / "config.json").write_text("{not json")
    with pytest.raises(OSError, match=r"config\.json' is not a valid JSON file"):  # transformers' own, clear
        sj_bert.from_pretrained(folder)


def test_a_damaged_cache_manifest_rebuilds_the_cache(tiny_zoo):
    cache = zoo.resolve("tiny")
    (cache / zoo.CACHE_MANIFEST).write_text("{")
    with pytest.warns(UserWarning, match=rf"{zoo.CACHE_MANIFEST} is missing or unreadable; rebuilding"):
        assert zoo.resolve("tiny") == cache
    shutil.rmtree(cache)  # a deleted cache is simply joined again
    assert zoo.resolve("tiny") == cache and (cache / "model.safetensors").is_file()
