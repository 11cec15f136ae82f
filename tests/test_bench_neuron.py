"""bench/neuron.py runs end to end on CPU at a tiny size into a temporary path (no timing assertions)."""

import json

import pytest

from sj_bert.ops.bpsn.cpu import available as cpu_scans_available





def test_neuron_bench(tmp_path, capsys, bench_script):
    bench = bench_script("neuron")
    out = tmp_path / "neuron.json"
    result = bench.main(
        ["--device", "cpu", "--T", "4", "9", "--N", "64", "--channels", "8", "--warmup", "0", "--repeats", "2",
         "--out", str(out)]
    )

    saved = json.loads(out.read_text())
    assert saved == json.loads(json.dumps(result))
    assert not list(tmp_path.glob("*.tmp"))
    assert saved["bench"] == "neuron" and saved["device"] == "cpu" and saved["dtype"] == "fp32"
    assert saved["complete"] is True
    assert saved["T"] == [4, 9] and saved["N"] == 64 and saved["repeats"] == 2
    assert {"time_method", "bytes_method", "memory_method", "copy_method", "versions", "skipped"} <= set(saved)
    assert {(r["neuron"], r["backend"], r["T"], r["channels"]) for r in saved["results"]} >= {
        ("bpsn", "torch", 4, None), ("bpsn", "torch", 9, 8), ("bpsn", "reference", 9, None), ("lif", None, 4, None),
        ("lif", None, 9, 8), ("psn", None, 4, None), ("slidingpsn", None, 9, 8),
    }
    assert saved["copy_gbps"] > 0
    assert all(r["copy_fraction"] == pytest.approx(r["gbps"] / saved["copy_gbps"]) for r in saved["results"])
    assert all({"bpsn_over_psn", "bpsn_over_slidingpsn"} <= set(r) for r in saved["ratios"])
    for r in saved["results"]:
        assert {"neuron", "backend", "T", "N", "channels", "ms", "ms_min", "bytes", "gbps", "peak_mem_mb"} <= set(r)
        N = 64 if r["channels"] is None else 4 * 8  # per channel: x [T, batch=4, C=8]
        assert r["ms"] > 0 and r["gbps"] > 0 and r["peak_mem_mb"] >= 0 and r["bytes"] == r["T"] * N * (4 * 4 + 8)
    scans = ("cpu",) if cpu_scans_available()[0] else ()  # the compiled CPU scans, where they build
    assert {(r["T"], r["channels"], r["backend"]) for r in saved["ratios"]} == {
        (T, C, b) for T in (4, 9) for C in (None, 8) for b in ("torch", "reference", *scans)
    }
    assert all(r["bpsn_over_lif"] > 0 for r in saved["ratios"])
    assert "bpsn/torch / lif" in capsys.readouterr().out


def test_neuron_bench_keeps_each_finished_T(tmp_path, monkeypatch, bench_script):
    """A run stopped after its first T (a time budget) leaves that T's rows, marked incomplete."""
    bench = bench_script("neuron")
    out = tmp_path / "neuron.json"
    real_measure, calls = bench.measure, []

    def measure_then_stop(*args, **kwargs):
        calls.append(1)
        if len(calls) > 2:  # T=4: shared and per channel; stop in T=9
            raise KeyboardInterrupt
        return real_measure(*args, **kwargs)

    monkeypatch.setattr(bench, "measure", measure_then_stop)
    with pytest.raises(KeyboardInterrupt):
        bench.main(["--device", "cpu", "--T", "4", "9", "--N", "64", "--channels", "8", "--warmup", "0",
                    "--repeats", "1", "--neurons", "bpsn", "lif", "--out", str(out)])
    saved = json.loads(out.read_text())
    assert saved["complete"] is False
    assert {r["T"] for r in saved["results"]} == {4} and {r["T"] for r in saved["ratios"]} == {4}


def test_triton_tile_rows(monkeypatch, bench_script):
    """``--triton_steps``: on CUDA the Triton backend is also timed per tile length, as
    ``triton@S``; each such step runs the kernels at that tile length and restores the
    default after (checked here on the interpreted kernels)."""
    pytest.importorskip("triton")
    import torch

    from sj_bert.ops.bpsn import triton as triton_kernels

    bench = bench_script("neuron")
    backends = bench.bpsn_backends(torch.device("cuda"), 16, 0, (1, 8))
    assert backends[backends.index("triton"):][:3] == ["triton", "triton@1", "triton@8"]
    assert bench.bpsn_backends(torch.device("cpu"), 16, 0, (1, 8)) == bench.bpsn_backends(torch.device("cpu"), 16, 0)
    # no row twice: at many columns Triton's own choice is the per-step scan, at few 16-step tiles
    many, few = triton_kernels.TILED_MAX_COLUMNS, 1000
    assert "triton@1" not in bench.bpsn_backends(torch.device("cuda"), 64, 0, (1, 16), N=many)
    assert "triton@16" in bench.bpsn_backends(torch.device("cuda"), 64, 0, (1, 16), N=many)
    assert "triton@16" not in bench.bpsn_backends(torch.device("cuda"), 64, 0, (1, 16), N=few)
    assert "triton@1" in bench.bpsn_backends(torch.device("cuda"), 64, 0, (1, 16), N=few)
    with pytest.raises(SystemExit):
        bench.parse_args(["--triton_steps", "3"])

    monkeypatch.setenv("TRITON_INTERPRET", "1")  # the dispatcher takes backend="triton" on CPU only so
    seen = []
    launch = triton_kernels.tile_shape
    monkeypatch.setattr(triton_kernels, "tile_shape", lambda *a, **k: seen.append(launch(*a, **k)[1]) or launch(*a, **k))
    x = torch.randn(5, 3, requires_grad=True)
    bench.make_step("bpsn", "triton@2", 5, x, torch.ones(5, 3))()
    assert seen == [2, 2]  # forward and backward, two steps per tile
    assert triton_kernels.STEPS_PER_TILE is None and x.grad is not None


def test_turns_are_taken_in_a_new_order_each_round():
    """With ``shuffle_seed`` no step always follows the same one (a fixed order timed the same
    kernel 26 % apart in two turns on an H200); every step is timed ``repeats`` times, and
    the same seed gives the same orders."""
    import torch

    from sj_bert.timing import interleaved_times

    def orders(seed):
        calls = []
        steps = {name: (lambda name=name: calls.append(name)) for name in "abcd"}
        times = interleaved_times(steps, torch.device("cpu"), warmup=0, repeats=12, shuffle_seed=seed)
        assert all(len(t) == 12 for t in times.values())
        return [tuple(calls[i:i + 4]) for i in range(0, len(calls), 4)]

    shuffled = orders(0)
    assert all(sorted(turn) == list("abcd") for turn in shuffled)
    assert len(set(shuffled)) > 1 and {turn[0] for turn in shuffled} == set("abcd")
    assert shuffled == orders(0)
    assert set(orders(None)) == {tuple("abcd")}  # without a seed: the dict's order every round
