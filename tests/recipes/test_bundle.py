"""recipes/bundle.py: a run folder through small parts and back, the weights in fp16; a
missing, damaged or misplaced part is refused with its name."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file


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


def test_pack_as_the_zoo_stores_it_and_unpack_completes_it(tmp_path, tiny_bert, recipes, capsys):
    """``--delta_from_base --int8_spike_fed``: a run trained with frozen embeddings travels
    without them and with int8 spike-fed matrices, smaller; unpacked it is the fp16 run with
    the base's embeddings put back bit for bit and each spike-fed matrix its int8 rounding,
    which quantizes to the same codes again (what ``publish.py --int8_spike_fed`` then stores)."""
    import shutil

    from safetensors import safe_open
    from transformers import AutoTokenizer, BertForSequenceClassification

    from sj_bert import zoo

    bundle = recipes.modules.bundle
    base = tmp_path / "base"
    shutil.copytree(tiny_bert, base)
    run = tmp_path / "run"
    torch.manual_seed(1)
    model = BertForSequenceClassification.from_pretrained(base, num_labels=2)
    with torch.no_grad():  # trained, embeddings frozen: every other tensor moved
        for name, param in model.named_parameters():
            if not name.startswith("bert.embeddings."):
                param.add_(0.01 * torch.randn_like(param))
    model.save_pretrained(run)
    AutoTokenizer.from_pretrained(base).save_pretrained(run)
    (run / "all_results.json").write_text(json.dumps({"task": "sst2"}))
    original = {k: v.half() for k, v in load_file(run / "model.safetensors").items()}
    spike_fed = zoo.spike_fed_keys(original)
    assert len(spike_fed) == 12  # 2 layers x (query, key, value, attention.output, intermediate, output)

    plain = bundle.pack(run, tmp_path / "out" / "plain", 15, "float16")
    small = bundle.main(["pack", str(run), str(tmp_path / "out" / "small"), "--delta_from_base", str(base),
                         "--int8_spike_fed"])
    assert sum(p.stat().st_size for p in small) < 0.6 * sum(p.stat().st_size for p in plain)

    dest = tmp_path / "back"
    manifest = bundle.main(["unpack", str(tmp_path / "out" / "small"), str(dest)])
    assert "5 tensors from the base model; 12 matrices from int8" in capsys.readouterr().out
    assert sorted(manifest["base"]["tensors"]) == sorted(k for k in original if k.startswith("bert.embeddings."))
    assert manifest["quantized"]["tensors"] == spike_fed and manifest["quantized"]["dtype"] == "float16"
    with safe_open(dest / "model.safetensors", "pt") as f:
        assert not any(key.startswith("sj_bert.") for key in (f.metadata() or {}))  # complete: no marker
    carried = load_file(dest / "model.safetensors")
    assert carried.keys() == original.keys()
    for key, tensor in original.items():
        expected = zoo.fake_quant(tensor)[0] if key in spike_fed else tensor
        assert torch.equal(carried[key], expected), key
    for key in spike_fed:
        assert torch.equal(zoo.quantize_matrix(carried[key])[0], zoo.quantize_matrix(original[key])[0]), key
    zoo.load_checkpoint(dest)  # an ordinary checkpoint folder again

    shutil.rmtree(base)  # the base is gone: refused, naming it, and nothing is left half-written
    with pytest.raises(zoo.BaseModelError, match=r"takes 5 tensor\(s\) from it.*the folder .*base is unavailable"):
        bundle.main(["unpack", str(tmp_path / "out" / "small"), str(tmp_path / "again")])
    assert not any(p.name.startswith((".tmp", "again")) for p in tmp_path.iterdir())


def test_delta_of_a_run_that_shares_nothing_packs_every_tensor(tmp_path, run_dir, tiny_bert, recipes, capsys):
    """A run trained without frozen embeddings: said so, and carried whole."""
    bundle = recipes.modules.bundle
    base = tmp_path / "base"  # tiny_bert with every tensor changed
    base.mkdir()
    save_file({k: v + 1 for k, v in load_file(f"{tiny_bert}/model.safetensors").items()}, base / "model.safetensors")
    bundle.pack(run_dir, tmp_path / "out", 15, "float16", base=str(base))
    assert f"no tensor of {run_dir} equals the base's in float16" in capsys.readouterr().out
    manifest = bundle.unpack(tmp_path / "out", tmp_path / "back")
    assert "base" not in manifest and "quantized" not in manifest
