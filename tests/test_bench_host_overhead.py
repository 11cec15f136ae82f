"""bench/host_overhead.py runs at a tiny size, writes its JSON and leaves the process as it
found it (the launchers and the dispatcher are stubbed only while it measures)."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("triton")

BENCH = Path(__file__).resolve().parents[1] / "bench" / "host_overhead.py"


def test_host_overhead_bench(tmp_path, capsys):
    import sj_bert.neuron as neuron_module
    from sj_bert.ops.bpsn import triton as triton_backend

    before = (triton_backend.launch_forward, triton_backend.launch_backward, neuron_module.select_backend)
    spec = importlib.util.spec_from_file_location("bench_host_overhead", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "host.json"
    threads = torch.get_num_threads()
    result = bench.main(["--T", "4", "--batch", "2", "--channels", "8", "--repeats", "3", "--warmup", "1",
                         "--out", str(out)])

    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    assert set(result["host_us"]) == {"forward+backward", "forward (no_grad)"}
    assert all(us > 0 for us in result["host_us"].values())
    assert result["shape"] == {"T": 4, "batch": 2, "channels": 8} and result["sj_bert_revision"]
    assert (triton_backend.launch_forward, triton_backend.launch_backward, neuron_module.select_backend) == before
    assert torch.get_num_threads() == threads
    assert "launches stubbed" in capsys.readouterr().out


def test_host_overhead_bench_rejects_empty_shapes():
    spec = importlib.util.spec_from_file_location("bench_host_overhead", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    with pytest.raises(SystemExit):
        bench.parse_args(["--T", "0"])
