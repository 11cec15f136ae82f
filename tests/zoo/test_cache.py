"""The zoo's cache of joined checkpoints: what it serves is verified, a bad cache rebuilds
itself, concurrent first loads are safe, and a zoo name is never shadowed by a folder."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import sj_bert
from sj_bert import zoo

ROOT = Path(__file__).resolve().parents[2]
SENTENCES = ["a fine film", "dull and lifeless ."]


def logits_of(model):
    with torch.no_grad():
        return model(**model.tokenizer(SENTENCES, return_tensors="pt", padding=True)).logits


def test_a_cache_altered_in_place_is_rebuilt(tiny_zoo):
    before = logits_of(sj_bert.from_pretrained("tiny"))
    cached = zoo.resolve("tiny") / "model.safetensors"
    digest = zoo.sha256_file(cached)
    data = bytearray(cached.read_bytes())
    data[len(data) // 4 : len(data) // 2] = bytes(len(data) // 2 - len(data) // 4)  # zeroed, same size
    cached.write_bytes(bytes(data))
    with pytest.warns(UserWarning, match=r"model\.safetensors.*rebuil"):
        model = sj_bert.from_pretrained("tiny")
    assert zoo.sha256_file(cached) == digest
    torch.testing.assert_close(logits_of(model), before, rtol=0, atol=0)


def test_a_truncated_cache_is_rebuilt(tiny_zoo):
    before = logits_of(sj_bert.from_pretrained("tiny"))
    cached = zoo.resolve("tiny") / "model.safetensors"
    with open(cached, "r+b") as f:
        f.truncate(cached.stat().st_size // 2)
    with pytest.warns(UserWarning, match=r"model\.safetensors.*rebuil"):
        model = sj_bert.from_pretrained("tiny")
    torch.testing.assert_close(logits_of(model), before, rtol=0, atol=0)


def test_a_cache_file_removed_is_rebuilt(tiny_zoo):
    cache = zoo.resolve("tiny")
    (cache / "config.json").unlink()
    with pytest.warns(UserWarning, match=r"config\.json.*rebuil"):
        assert zoo.resolve("tiny") == cache
    assert (cache / "config.json").is_file()


def test_an_unchanged_cache_is_served_without_hashing_it_again(tiny_zoo, monkeypatch):
    cache = zoo.resolve("tiny")
    hashed = []
    original = zoo.sha256_file
    # the module that checks the joined folder (sj_bert.zoo.cache) counts the hashing
    monkeypatch.setattr(zoo.cache, "sha256_file", lambda path: hashed.append(Path(path)) or original(path))
    assert zoo.resolve("tiny") == cache
    assert not [p for p in hashed if cache in p.parents]
    # a touched file is hashed again, found unchanged and kept
    os.utime(cache / "model.safetensors", ns=(1, 1))
    assert zoo.resolve("tiny") == cache
    assert cache / "model.safetensors" in hashed
    hashed.clear()
    assert zoo.resolve("tiny") == cache and not [p for p in hashed if cache in p.parents]


def test_the_cache_location_is_sj_bert_cache(tiny_zoo, tmp_path):
    assert zoo.cache_dir() == tmp_path / "cache"
    assert zoo.resolve("tiny").parent == tmp_path / "cache"


# -- concurrent first loads ----------------------------------------------------------------

RACE = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from sj_bert import zoo

    folder, barrier, index, count = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    (barrier / index).touch()
    while len(list(barrier.iterdir())) < count:  # start joining together
        time.sleep(0.001)
    print(zoo.join_parts(folder))
    """
)


@pytest.mark.slow
def test_concurrent_first_loads_all_succeed_and_leave_nothing_behind(tmp_path):
    folder = tmp_path / "big"
    folder.mkdir()
    blob = os.urandom(24 * 1000**2)  # big enough that the joins overlap
    (folder / "weights.bin").write_bytes(blob)
    (folder / "config.json").write_text("{}")
    zoo.split_file(folder / "weights.bin", 4 * 1000**2)
    cache, barrier = tmp_path / "cache", tmp_path / "barrier"
    barrier.mkdir()
    # the checkout first, then whatever the environment already needs on the path
    pythonpath = os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH"))))
    env = {**os.environ, "SJ_BERT_CACHE": str(cache), "PYTHONPATH": pythonpath}
    count = 3
    procs = [
        subprocess.Popen([sys.executable, "-c", RACE, str(folder), str(barrier), str(i), str(count)],
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(count)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    served = {out.strip() for out, _ in outs}
    assert len(served) == 1
    joined = Path(served.pop())
    assert (joined / "weights.bin").read_bytes() == blob
    assert [p.name for p in cache.iterdir() if p.is_dir()] == [joined.name]  # no temporary folder left


# -- names and paths -----------------------------------------------------------------------


def test_a_folder_named_like_a_zoo_checkpoint_does_not_shadow_it(tiny_zoo, tiny_checkpoint, tmp_path, monkeypatch):
    work = tmp_path / "work"
    tiny_checkpoint(work / "tiny", seed=1)  # another model, under the zoo's name
    monkeypatch.chdir(work)
    # the zoo's, and a warning that says so and how to get the folder (a run trained with
    # --output_dir tiny must not be mistaken for the zoo's silently); the recipes' flags alike
    shadowed = r"'tiny' is a zoo name and also a folder here.*write \./tiny"
    with pytest.warns(UserWarning, match=shadowed):
        zoo_logits = logits_of(sj_bert.from_pretrained("tiny"))
    with pytest.warns(UserWarning, match=shadowed):
        assert zoo.resolve("tiny").parent == tmp_path / "cache"
    with pytest.warns(UserWarning, match=shadowed):
        assert Path(zoo.resolve_checkpoint("tiny", "--model_name_or_path")).parent == tmp_path / "cache"
    assert Path(zoo.resolve_checkpoint("./tiny", "--model_name_or_path")).resolve() == (work / "tiny").resolve()
    for path in ("./tiny", str(work / "tiny"), Path("tiny")):
        assert zoo.resolve(path).resolve() == (work / "tiny").resolve(), path
    folder_logits = logits_of(sj_bert.from_pretrained("./tiny"))
    assert not torch.allclose(zoo_logits, folder_logits)
    with pytest.warns(UserWarning, match=shadowed):
        assert zoo.locate("tiny").describe() == "zoo checkpoint 'tiny'"
    assert zoo.locate("./tiny").describe() == "local folder ./tiny"


def test_a_join_killed_midway_leaves_nothing_once_the_next_load_is_done(tiny_zoo):
    cache = zoo.resolve("tiny")
    shutil.rmtree(cache)
    stale = cache.with_name(f".{cache.name}.tmp-99999-dead")  # what a join killed with kill -9 leaves
    (stale / "half").mkdir(parents=True)
    assert zoo.resolve("tiny") == cache
    assert not stale.exists() and sorted(p.name for p in cache.parent.iterdir() if p.is_dir()) == [cache.name]
