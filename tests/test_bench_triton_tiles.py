"""bench/triton_tiles.py runs end to end on the CPU (Triton's interpreter) at a tiny size into
a temporary path, restores the kernels' tile choice, and rejects shapes that are not
powers of two (no timing assertions)."""

import json

import pytest

pytest.importorskip("triton")


def test_triton_tiles_bench(tmp_path, bench_script):
    from sj_bert.ops.bpsn import triton as triton_kernels

    bench = bench_script("triton_tiles")
    chosen = triton_kernels.tile_shape, triton_kernels.STEPS_PER_TILE
    out = tmp_path / "tiles.json"
    result = bench.main(["--device", "cpu", "--T", "5", "--N", "48", "--configs", "1", "4", "64x2x1",
                         "--warmup", "0", "--repeats", "1", "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    assert not list(tmp_path.glob("*.tmp"))
    assert [(r["T"], r["N"], r["config"]) for r in result["rows"]] == [
        (5, 48, "lif"), (5, 48, "1"), (5, 48, "4"), (5, 48, "64x2x1")]
    assert all(r["error"] is None and r["fwd_bwd_ms"] > 0 and r["fwd_ms"] > 0 for r in result["rows"])
    assert (triton_kernels.tile_shape, triton_kernels.STEPS_PER_TILE) == chosen


def test_tile_config_is_the_shape_the_kernels_get(bench_script):
    from sj_bert.ops.bpsn import triton as triton_kernels

    bench = bench_script("triton_tiles")
    with bench.tile_config((64, 2, 1)):
        assert triton_kernels.tile_shape(300, 10**6) == (64, 2, 1)
    with bench.tile_config((8,)):
        assert triton_kernels.tile_shape(300, 100, interpreted=True)[1] == 8


@pytest.mark.parametrize("config", ["3", "64x3x1", "64x2", "ax2x1", "0"])
def test_bad_tile_config(config, bench_script, capsys):
    with pytest.raises(SystemExit):
        bench_script("triton_tiles").parse_args(["--configs", config])
    assert "--configs" in capsys.readouterr().err
