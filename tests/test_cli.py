"""``python -m sj_bert``: says what it loaded, fails on a checkpoint it cannot load."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from sj_bert import __main__ as cli
from sj_bert import zoo

ROOT = Path(__file__).resolve().parents[1]


def test_a_checkpoint_typo_fails_listing_the_zoo_names(tiny_zoo, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--checkpoint", "tyny"])
    assert exit_info.value.code != 0
    err = capsys.readouterr().err
    assert "--checkpoint" in err and "'tyny'" in err and "tiny" in err.replace("'tyny'", "")


@pytest.mark.slow
def test_a_checkpoint_typo_exits_non_zero_from_the_shell():
    # the checkout first, then whatever the environment already needs on the path
    pythonpath = os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH"))))
    done = subprocess.run([sys.executable, "-m", "sj_bert", "--checkpoint", "sst3"], cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": pythonpath, "HF_HUB_OFFLINE": "1"},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    assert "sst3" in done.stderr and ", ".join(sorted(zoo.load_registry())) in done.stderr


def test_the_output_names_what_was_loaded(tiny_zoo, tiny_checkpoint, tmp_path, monkeypatch, capsys):
    work = tmp_path / "work"
    tiny_checkpoint(work / "tiny", seed=1)
    monkeypatch.chdir(work)
    with pytest.warns(UserWarning, match=r"'tiny' is a zoo name and also a folder here.*write \./tiny"):
        cli.main(["--checkpoint", "tiny", "a fine film"])
    assert "model: zoo checkpoint 'tiny'" in capsys.readouterr().out
    cli.main(["--checkpoint", "./tiny", "a fine film"])
    out = capsys.readouterr().out
    assert "model: local folder ./tiny" in out and "zoo checkpoint" not in out


def test_sentences_of_different_lengths_go_in_with_their_mask(tiny_zoo, capsys):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cli.main(["--checkpoint", "tiny", "short", "a much longer sentence than the first one"])
    assert not [w for w in caught if "attention_mask" in str(w.message)]
    assert "model: zoo checkpoint 'tiny'" in capsys.readouterr().out
