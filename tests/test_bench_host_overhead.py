"""bench/host_overhead.py runs at a tiny size, writes its JSON and leaves the process as it
found it (the launchers and the dispatcher are stubbed only while it measures)."""

import json

import pytest
import torch

pytest.importorskip("triton")



def test_host_overhead_bench(tmp_path, capsys, bench_script):
    import sj_bert.neuron as neuron_module
    from sj_bert.ops.bpsn import triton as triton_backend

    before = (triton_backend.launch_forward, triton_backend.launch_backward, neuron_module.select_backend)
    bench = bench_script("host_overhead")
    out = tmp_path / "host.json"
    threads = torch.get_num_threads()
    result = bench.main(["--T", "4", "--batch", "2", "--channels", "8", "--repeats", "3", "--warmup", "1",
                         "--model_shape", "tiny", "--model_batch", "2", "--model_length", "5", "--out", str(out)])

    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    assert set(result["host_us"]) == {"forward+backward", "forward (no_grad)"}
    assert all(us > 0 for us in result["host_us"].values())
    assert result["shape"] == {"T": 4, "batch": 2, "channels": 8} and result["sj_bert_revision"]
    assert (triton_backend.launch_forward, triton_backend.launch_backward, neuron_module.select_backend) == before
    assert torch.get_num_threads() == threads
    assert "launches stubbed" in capsys.readouterr().out
    counts = result["models"]["counts"]
    assert set(counts) == {"inference forward", "training forward+backward"}
    layers = result["models"]["config"]["num_hidden_layers"]
    for kind, per_pass in counts.items():
        # one fused launch per neuron forward (4 per layer: attention input, its output, both FFN
        # matrices' inputs), one more per neuron backward; the ANN has no spiking neuron
        assert per_pass["snn"]["fused_launches"] == 4 * layers * (1 if kind.startswith("inference") else 2)
        assert per_pass["ann"]["fused_launches"] == 0
        assert per_pass["snn"]["aten_ops"] > 0 and per_pass["ann"]["aten_ops"] > 0
        assert per_pass["snn/ann"] == per_pass["snn"]["total"] / per_pass["ann"]["total"]


def test_host_overhead_bench_rejects_empty_shapes(bench_script):
    bench = bench_script("host_overhead")
    with pytest.raises(SystemExit):
        bench.parse_args(["--T", "0"])
