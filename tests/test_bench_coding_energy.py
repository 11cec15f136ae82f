"""Both benches run end to end at tiny size into temporary paths (no timing assertions)."""

import json

import pytest
import torch


def test_coding_bench(tmp_path, capsys, bench_script):
    out = tmp_path / "coding.json"
    result = bench_script("coding").main([
        "--device", "cpu", "--shape", "tiny", "--batch_size", "2", "--lengths", "8",
        "--warmup", "0", "--steps", "1", "--infer_batch_sizes", "1", "--infer_lengths", "8", "200",
        "--out", str(out),
    ])
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    assert {r["model"] for r in result["results"]} == {"ann", "individual", "repeat"}
    assert all(r["step_ms"] > 0 and r["peak_mem_mb"] >= 0 and r["saved_mb"] > 0 for r in result["results"])
    assert "repeat/individual saved" in result["ratios"]["8"]
    assert "profiler" in result["memory_method"] and "repeat/individual time" in result["ratios"]["8"]
    assert {(r["model"], r["batch_size"], r["length"]) for r in result["inference"]} == {
        ("ann", 1, 8), ("individual", 1, 8), ("individual/ann", 1, 8)
    }
    assert result["skipped"] == ["inference L=200: above max_position_embeddings"]
    assert "peak mem (MiB)" in capsys.readouterr().out
    assert result["compile"]["lengths"] == [] and not any("+compile" in r["model"] for r in result["results"])


def test_coding_bench_times_compiled_models_side_by_side(tmp_path, monkeypatch, bench_script):
    # the GPU's neuron (Triton, interpreted here): the CPU's chunked path sizes its chunks
    # from the decays' values, which a full graph cannot do
    pytest.importorskip("triton")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    out = tmp_path / "coding.json"
    result = bench_script("coding").main([
        "--device", "cpu", "--shape", "tiny", "--batch_size", "2", "--lengths", "8", "--compile_lengths", "8",
        "--compile_backend", "aot_eager", "--neuron_backend", "triton", "--warmup", "1", "--steps", "1", "--infer_batch_sizes", "1",
        "--infer_lengths", "8", "--out", str(out),
    ])
    assert {r["model"] for r in result["results"]} == {"ann", "individual", "repeat", "ann+compile",
                                                       "individual+compile"}
    assert {"individual+compile/ann+compile time", "ann+compile/ann time"} <= set(result["ratios"]["8"])
    assert {(r["model"], r["batch_size"], r["length"]) for r in result["inference"]} == {
        (kind, 1, 8) for kind in ("ann", "individual", "individual/ann", "ann+compile", "individual+compile",
                                  "individual+compile/ann+compile")
    }
    assert result["compile"] == {"lengths": [8], "backend": "aot_eager", "mode": None, "fullgraph": True,
                                 "models": ["ann+compile", "individual+compile"]}


def test_coding_bench_leaves_cuda_graph_memory_unmeasured(bench_script):
    coding = bench_script("coding")
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert not coding.memory_measured("reduce-overhead", cuda) and not coding.memory_measured("max-autotune", cuda)
    assert coding.memory_measured("default", cuda) and coding.memory_measured(None, cuda)
    assert coding.memory_measured("max-autotune-no-cudagraphs", cuda) and coding.memory_measured("reduce-overhead", cpu)
    rows = [{"model": "ann", "length": 8, "step_ms": 2.0, "peak_mem_mb": 10.0},
            {"model": "individual", "length": 8, "step_ms": 4.0, "peak_mem_mb": 30.0},
            {"model": "ann+compile", "length": 8, "step_ms": 1.0, "peak_mem_mb": None},
            {"model": "individual+compile", "length": 8, "step_ms": 1.5, "peak_mem_mb": None}]
    ratios = coding.ratios_of(rows, [8])["8"]
    assert ratios["individual/ann memory"] == 3.0 and ratios["individual+compile/ann+compile time"] == 1.5
    # no ratio is made of a memory that was not measured
    assert not any(k.endswith("memory") and "compile" in k for k in ratios)


def test_coding_bench_refuses_compile_lengths_it_does_not_train(bench_script):
    with pytest.raises(SystemExit):
        bench_script("coding").parse_args(["--device", "cpu", "--lengths", "8", "--compile_lengths", "16"])


def test_energy_bench(tmp_path, capsys, bench_script):
    try:
        from sj_bert import offline_bert

        offline_bert()
    except (ImportError, FileNotFoundError) as err:
        pytest.skip(str(err))
    sst2 = tmp_path / "glue" / "SST-2"
    sst2.mkdir(parents=True)
    (sst2 / "dev.tsv").write_text(
        "sentence\tlabel\nit 's a charming and often affecting journey . \t1\n"
        "unflinchingly bleak and desperate \t0\nallows us to hope that nolan is poised to embark a major career . \t1\n"
    )
    out, png = tmp_path / "energy.json", tmp_path / "firing.png"
    result = bench_script("energy").main([
        "--data_dir", str(tmp_path / "glue"), "--batch_size", "2", "--time_steps", "2",
        "--out", str(out), "--plot", str(png),
    ])
    saved = json.loads(out.read_text())
    assert saved["sentences"] == 2 and set(saved["summary"]) == {"ann", "individual", "repeat"}
    assert saved["summary"]["ann"]["firing_rate"] is None
    assert saved["reports"]["repeat"]["steps"] == 2
    assert result["summary"]["ann"]["energy_per_sample_mj"] > result["summary"]["individual"]["energy_per_sample_mj"]
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert "SNN individual" in capsys.readouterr().out


def test_saved_for_backward_counts_each_storage_once(bench_script):
    """Two products keep the same [64, 256] input (and their parameters, for its gradient):
    the input is counted once, the parameters not at all."""
    coding = bench_script("coding")

    class Twice(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.Parameter(torch.ones(256))
            self.b = torch.nn.Parameter(torch.ones(256))

        def forward(self, x, labels=None):
            hidden = x * 2.0  # a product with a number keeps nothing
            loss = (hidden * self.a).sum() + (hidden * self.b).sum()
            return type("Output", (), {"loss": loss})()

    x = torch.randn(64, 256, requires_grad=True)
    mib = coding.saved_for_backward_mb(Twice(), {"x": x}, torch.device("cpu"))
    assert mib == pytest.approx(64 * 256 * 4 / 2**20)
