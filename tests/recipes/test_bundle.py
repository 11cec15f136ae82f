"""recipes/bundle.py: a run folder through small parts and back, the weights in fp16; a
missing, damaged or misplaced part is refused with its name."""

import json

import pytest
import torch
from safetensors.torch import load_file


@pytest.fixture
def run_dir(tmp_path, tiny_bert):
    """A finetune.py-like output folder: weights (fp32), tokenizer, results, a checkpoint folder."""
    from transformers import AutoTokenizer, BertForSequenceClassification

    folder = tmp_path / "run"
    torch.manual_seed(0)
    BertForSequenceClassification.from_pretrained(tiny_bert, num_labels=2).save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_bert).save_pretrained(folder)
    (folder / "all_results.json").write_text(json.dumps({"task": "sst2", "eval_accuracy": 0.5}))
    (folder / "step_1").mkdir()
    (folder / "step_1" / "optimizer.bin").write_bytes(b"\0" * 1000)
    return folder


def test_pack_and_unpack_give_the_run_back_in_fp16(tmp_path, run_dir, recipes):
    from sj_bert import zoo

    bundle = recipes.modules.bundle
    parts = bundle.main(["pack", str(run_dir), str(tmp_path / "out" / "sst2_snn"), "--part_mib", "0.25"])
    assert [p.name for p in parts] == [f"sst2_snn.tar.part-{i:02d}" for i in range(len(parts))] and len(parts) > 2
    assert all(p.stat().st_size <= 0.25 * 2**20 for p in parts)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [p.name for p in parts]  # no temporary left

    dest = tmp_path / "back"
    manifest = bundle.main(["unpack", str(tmp_path / "out" / "sst2_snn"), str(dest)])
    kept = sorted(p.name for p in run_dir.iterdir() if p.is_file())
    assert sorted(p.name for p in dest.iterdir()) == kept and sorted(manifest["files"]) == kept  # not step_1
    for name in kept:
        if name != "model.safetensors":
            assert (dest / name).read_bytes() == (run_dir / name).read_bytes()
    original, carried = load_file(run_dir / "model.safetensors"), load_file(dest / "model.safetensors")
    assert original.keys() == carried.keys()
    for key, tensor in original.items():
        assert carried[key].dtype == (torch.float16 if tensor.is_floating_point() else tensor.dtype)
        assert torch.equal(carried[key], tensor.to(carried[key].dtype))
    _, model = zoo.load_checkpoint(dest)  # loads as a checkpoint folder again
    assert model.config.num_labels == 2


def test_a_missing_or_damaged_part_is_refused(tmp_path, run_dir, recipes):
    bundle = recipes.modules.bundle
    prefix = tmp_path / "out" / "run"
    parts = bundle.pack(run_dir, prefix, 0.25, "float32")
    with pytest.raises(FileExistsError, match="exist already"):
        bundle.pack(run_dir, prefix, 0.25, "float32")

    last = parts[-1].read_bytes()
    parts[-1].unlink()  # the last part lost: the tar ends early
    with pytest.raises(ValueError, match="not a whole tar|does not match its sha256"):
        bundle.unpack(prefix, tmp_path / "a")
    parts[-1].write_bytes(last)

    middle = parts[1].read_bytes()
    parts[1].write_bytes(middle[:100] + bytes([middle[100] ^ 1]) + middle[101:])  # one bit of the weights
    with pytest.raises(ValueError, match="model.safetensors does not match its sha256"):
        bundle.unpack(prefix, tmp_path / "b")
    parts[1].write_bytes(middle)

    moved = parts[1].rename(parts[1].with_name("run.tar.part-99"))  # a gap in the numbering
    with pytest.raises(ValueError, match=r"parts \[0, 2, .*, 99\] are not 00 to"):
        bundle.unpack(prefix, tmp_path / "c")
    moved.rename(parts[1])
    assert not any(p.name.startswith(("a", "b", "c", ".tmp")) for p in tmp_path.iterdir())  # nothing half-written

    with pytest.raises(FileNotFoundError, match="no parts"):
        bundle.unpack(tmp_path / "nothing", tmp_path / "d")
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "x").write_text("mine")
    with pytest.raises(FileExistsError, match="not empty"):
        bundle.unpack(prefix, occupied)


def test_pack_needs_a_finished_run(tmp_path, recipes, capsys):
    bundle = recipes.modules.bundle
    with pytest.raises(FileNotFoundError, match="no model.safetensors to pack; is it a finished finetune.py run"):
        bundle.pack(tmp_path, tmp_path / "out", 15, "float16")
    with pytest.raises(SystemExit):
        bundle.main(["pack", str(tmp_path), str(tmp_path / "out"), "--part_mib", "0"])
    assert "--part_mib" in capsys.readouterr().err
