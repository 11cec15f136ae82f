"""bench/int8_storage.py's quantization and byte accounting on tiny SNN-BERTs (no real data,
no timing): the error bounds of symmetric fake quant, which tensors a scheme touches, and the
bytes a quantized checkpoint would store."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from sj_bert.energy import energy_report

BENCH = Path(__file__).resolve().parents[1] / "bench"


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bench = load("int8_storage")


@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize("per_channel", [True, False])
def test_fake_quant_error_is_at_most_half_a_step(bits, per_channel):
    torch.manual_seed(0)
    w = torch.randn(24, 40) * torch.logspace(-3, 0, 24).unsqueeze(1)  # rows of very different ranges
    codes, scale = bench.quantize(w, bits, per_channel)
    qmax = 2 ** (bits - 1) - 1
    assert codes.dtype == torch.int8 and codes.shape == w.shape
    assert int(codes.abs().max()) == qmax
    assert scale.shape == ((24, 1) if per_channel else (1, 1)) and scale.dtype == torch.float32
    w_hat, _ = bench.fake_quant(w, bits, per_channel)
    err = (w - w_hat).abs()
    assert bool((err <= scale / 2 * (1 + 1e-6)).all())
    # the largest magnitude (per row, or of the tensor) is kept up to rounding
    absmax = w.abs().amax(dim=1) if per_channel else w.abs().amax()
    torch.testing.assert_close(w_hat.abs().amax(dim=1) if per_channel else w_hat.abs().amax(), absmax)
    # at most 2 qmax + 1 levels per row
    assert max(len(row.unique()) for row in w_hat) <= 2 * qmax + 1
    # idempotent: quantizing what it gave changes nothing
    torch.testing.assert_close(bench.fake_quant(w_hat, bits, per_channel)[0], w_hat)


def test_per_channel_beats_per_tensor_on_rows_of_different_ranges():
    torch.manual_seed(0)
    w = torch.randn(24, 40) * torch.logspace(-3, 0, 24).unsqueeze(1)
    per_row = (w - bench.fake_quant(w, 8, True)[0]).abs()
    per_tensor = (w - bench.fake_quant(w, 8, False)[0]).abs()
    # the small rows are all rounded to zero by one scale for the tensor, not by their own
    assert float(per_tensor[0].abs().max()) == pytest.approx(float(w[0].abs().max()))
    assert float(per_row[0].max()) < 1e-2 * float(w[0].abs().max())


def test_zero_rows_and_bad_input():
    w = torch.zeros(3, 5)
    w[1] = torch.arange(5.0) - 2
    codes, scale = bench.quantize(w, 8, True)
    assert scale[0].item() == 1.0 and scale[2].item() == 1.0 and not codes[0].any()
    w_hat = bench.fake_quant(w, 8, True)[0]
    assert not w_hat[0].any() and not w_hat[2].any() and w_hat[1, 0] == -2 and w_hat[1, 4] == 2
    with pytest.raises(ValueError, match="2-D"):
        bench.quantize(torch.ones(4), 8, True)
    with pytest.raises(ValueError, match="bits"):
        bench.quantize(w, 16, True)


def test_spike_fed_names_are_the_ones_the_energy_report_marks(tiny):
    model = tiny.model(num_hidden_layers=3)
    ids, mask = tiny.padded([7, 4, 5])
    marked = {op.name for op in energy_report(model, ids, mask).ops if op.kind == "linear" and op.spike_fed}
    named = {n[: -len(".weight")] for n in bench.selected(bench.layout_of(model), ("spike_fed",))}
    assert len(named) == 6 * 3 and named == marked


@pytest.mark.parametrize("name", list(bench.SCHEMES))
def test_apply_scheme_touches_only_what_the_scheme_names(tiny, name):
    scheme = bench.SCHEMES[name]
    model = tiny.model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    stats = bench.apply_scheme(model, scheme)
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    quantized = set(stats["quantized"])
    assert changed <= quantized and len(changed) >= len(quantized) - 1  # a tensor may already sit on its grid
    expected = 12 + (2 if "head" in scheme["targets"] else 0) + (3 if "embeddings" in scheme["targets"] else 0)
    assert stats["tensors"] == len(quantized) == expected
    assert all(k.endswith(".weight") and before[k].dim() == 2 for k in quantized)
    # the zoo's stored form adds fp16 rounding of codes * s: at most 2**-11 of |w_hat| <= 127 s
    bound = 1 + 127 * 2**-10 if "stored_dtype" in scheme else 1
    assert 0 < stats["max_error_over_half_step"] <= bound + 1e-5
    assert 0 < stats["relative_frobenius_error"] < (0.05 if scheme["bits"] == 8 else 0.3)
    if "head" not in scheme["targets"]:
        assert "classifier.weight" not in quantized and "bert.pooler.dense.weight" not in quantized
    assert not any("bias" in k or "LayerNorm" in k or ".neuron." in k for k in quantized)


def test_byte_accounting_of_a_tiny_checkpoint(tiny, tmp_path):
    model = tiny.model()  # D = 16, I = 32, 2 layers, vocab 99, 24 positions, 2 token types
    model.half().save_pretrained(tmp_path)
    layout = bench.safetensors_layout(tmp_path / "model.safetensors")
    assert layout == bench.layout_of(model)
    fp16 = 2 * sum(v.numel() for v in model.state_dict().values())
    assert bench.storage_bytes(layout, (), 8, True) == {"codes": 0, "scales": 0, "other": fp16,
                                                      "left_to_base": 0, "total": fp16}
    spike_fed = bench.selected(layout, ("spike_fed",))
    weights = 2 * (4 * 16 * 16 + 2 * 16 * 32)  # per layer: Q, K, V, attention output; intermediate, output
    rows = 2 * (4 * 16 + 32 + 16)
    int8 = bench.storage_bytes(layout, spike_fed, 8, True)
    assert int8 == {"codes": weights, "scales": 4 * rows, "other": fp16 - 2 * weights, "left_to_base": 0,
                    "total": fp16 - weights + 4 * rows}
    assert bench.storage_bytes(layout, spike_fed, 8, False)["scales"] == 4 * 12
    assert bench.storage_bytes(layout, spike_fed, 4, True)["codes"] == weights // 2
    odd = {"w": {"shape": [3, 3], "bytes": 18}}
    assert bench.storage_bytes(odd, ["w"], 4, False) == {"codes": 5, "scales": 4, "other": 0, "left_to_base": 0,
                                                         "total": 9}
    embeddings = 2 * (99 * 16 + 24 * 16 + 2 * 16 + 2 * 16)  # word, position, token type, LayerNorm
    delta = bench.storage_bytes(layout, spike_fed, 8, True, leave_out=bench.LEFT_TO_BASE)
    assert delta["left_to_base"] == embeddings and delta["total"] == int8["total"] - embeddings
    with pytest.raises(KeyError):
        bench.storage_bytes(layout, ["not.a.tensor"], 8, True)


def test_compare_counts_flips_and_logit_change():
    base = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    new = torch.tensor([[0.0, 1.0], [0.0, 1.5], [1.0, 0.0], [1.0, 0.0]])
    labels = torch.tensor([1, 1, 0, 1])
    out = bench.compare(new, base, labels, base_correct=3)
    # 3 correct before and after, yet two predictions changed
    assert out == {"correct": 3, "total": 4, "accuracy": 0.75, "delta_correct": 0, "flips": 2, "fixed": 1,
                   "broken": 1, "max_abs_logit_change": 1.0}


def test_controls_perturb_the_spike_fed_matrices_by_the_promised_amount(tiny):
    model = tiny.model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    stats = bench.apply_scheme(model, bench.CONTROLS["bf16"])
    assert stats["tensors"] == 12 and stats["max_error_over_half_step"] is None
    for name in stats["quantized"]:
        w, w_hat = before[name], model.state_dict()[name]
        assert bool(((w - w_hat).abs() <= w.abs() * 2.0 ** -8).all()) and not torch.equal(w, w_hat)
    model.load_state_dict(before)
    bench.apply_scheme(model, bench.CONTROLS["noise0"])
    for name in bench.selected(before, ("spike_fed",)):
        w = before[name]
        int8_rms = (w - bench.fake_quant(w, 8, True)[0]).pow(2).mean().sqrt()
        noise_rms = (w - model.state_dict()[name]).pow(2).mean().sqrt()
        assert 0.8 < float(noise_rms / int8_rms) < 1.2  # 256 to 512 draws per tensor
    untouched = [k for k in before if k not in bench.selected(before, ("spike_fed",))]
    assert all(torch.equal(before[k], model.state_dict()[k]) for k in untouched)


def test_the_stored_scheme_is_what_the_zoo_loads_from_int8_files(tiny, tmp_path):
    """int8_channel_stored scores the weights the zoo serves from --int8_spike_fed files: the
    file written and dequantized by sj_bert.zoo holds exactly the scheme's matrices."""
    from safetensors.torch import load_file

    from sj_bert import zoo

    model = tiny.model().half()
    model.save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    keys = zoo.quantize_file(weights, "float16")
    zoo.dequantize_file(weights, zoo.QuantizedWeights(zoo.INT8_SCHEME, "float16", tuple(keys)), "tiny")
    served = load_file(weights)
    model = model.float()
    stats = bench.apply_scheme(model, bench.SCHEMES["int8_channel_stored"])
    assert sorted(stats["quantized"]) == keys and len(keys) == 12
    assert all(torch.equal(served[k].float(), v) for k, v in model.state_dict().items())
    # and it differs from the fp32-dequantized int8_channel (which the fp16 rounding moves)
    other = tiny.model().half().float()
    bench.apply_scheme(other, bench.SCHEMES["int8_channel"])
    assert any(not torch.equal(other.state_dict()[k], model.state_dict()[k]) for k in keys)


def test_the_baseline_check_reads_the_zoo_record():
    """The baseline a run must reproduce is the zoo record's metric over the whole dev set, not a
    number written into the script (which went stale when the zoo's sst2 was refreshed)."""
    from sj_bert import zoo

    recorded = zoo.load_registry()["sst2"].metrics["eval_accuracy"]
    assert bench.recorded_correct("sst2", 872) == round(recorded * 872)
    assert bench.recorded_correct("sst2", 64) is None  # --max_sentences: a part of dev
    assert bench.recorded_correct("/some/folder", 872) is None


@pytest.mark.skipif(not bench.DEV.is_file(), reason=f"{bench.DEV} is absent")
def test_a_short_run_writes_its_results(tmp_path):
    """The whole script on the zoo's sst2 and the first 8 dev sentences: one scheme, no
    controls, its JSON written (a part of dev: no record to check against)."""
    out = tmp_path / "int8.json"
    result = bench.main(["--limit", "8", "--schemes", "int8_channel", "--controls", "--threads", "1", "--out", str(out)])
    written = json.loads(out.read_text())
    assert written["data"]["sentences"] == 8 and written["data"]["full_dev"] is False
    assert written["expected_correct"] is None
    assert [r["scheme"] for r in written["results"]] == ["fp16", "int8_channel"]
    assert result["results"][0]["correct"] == written["results"][0]["correct"]
