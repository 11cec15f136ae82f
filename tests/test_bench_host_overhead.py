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
        for model in ("ann", "snn"):
            syncs = per_pass[model]["sync_ops"]
            assert per_pass[model]["syncs"] == sum(s["count"] for s in syncs)
            assert all(set(s) == {"op", "where", "count"} and s["count"] > 0 for s in syncs)
        # every value check of SNN-BERT's forward (ids, token types, labels) shares one read
        assert per_pass["snn"]["syncs"] == 1
        assert "modeling_spiking_bert.py" in per_pass["snn"]["sync_ops"][0]["where"]
    assert "Tensor.tolist" in result["sync_ops_counted"] and result["sync_method"]


class Reads(torch.nn.Module):
    """Three syncs of three kinds, one op that syncs only with a bool index, and none else."""

    def forward(self, x):
        scale = x.abs().max().item()  # a value read back: _local_scalar_dense
        kept = x[x > 0]  # a bool index: a nonzero inside
        low, high = torch.aminmax(x)
        bounds = torch.stack([low, high]).tolist()  # on the CPU no op, counted where called
        picked = x[torch.tensor([0, 1])]  # an integer index: no sync
        return kept.sum() / scale + bounds[0] + picked.sum()


def test_dispatch_count_names_each_sync_and_its_caller(bench_script):
    bench = bench_script("host_overhead")
    model, x = Reads(), torch.tensor([1.0, -2.0, 3.0])
    tolist = torch.Tensor.__dict__.get("tolist")
    with bench.DispatchCount() as counted:
        model(x)
    assert torch.Tensor.__dict__.get("tolist") is tolist  # put back as it was
    by_op = {s["op"]: s for s in counted.sync_list()}
    assert {op: s["count"] for op, s in by_op.items()} == {
        "aten._local_scalar_dense.default": 1, "aten.index.Tensor": 1, "Tensor.tolist": 1}
    assert sum(counted.syncs.values()) == 3 and counted.ops > 3
    lines = {op: Reads.forward.__code__.co_firstlineno + offset for op, offset in (
        ("aten._local_scalar_dense.default", 1), ("aten.index.Tensor", 2), ("Tensor.tolist", 4))}
    for op, line in lines.items():
        assert by_op[op]["where"] == f"test_bench_host_overhead.py:{line} forward"


def test_dispatch_count_sees_no_sync_in_a_plain_forward(bench_script):
    bench = bench_script("host_overhead")
    with bench.DispatchCount() as counted:
        torch.nn.Linear(3, 2)(torch.randn(4, 3)).relu()[torch.tensor([0, 2])]
    assert counted.ops > 0 and counted.sync_list() == []


def test_host_overhead_bench_rejects_empty_shapes(bench_script):
    bench = bench_script("host_overhead")
    with pytest.raises(SystemExit):
        bench.parse_args(["--T", "0"])
