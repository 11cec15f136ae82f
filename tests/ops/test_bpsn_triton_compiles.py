"""The Triton BPSN kernels compile for Hopper (sm_90, the H100/H200 the project is lent),
ahead of time and without a GPU: Triton's own front end, layouts and ptxas, at the tile
shapes :func:`sj_bert.ops.bpsn.triton.tile_shape` picks for SNN-BERT's and for large
neuron counts. The interpreter checks what the kernels compute; this checks that the
compiled form exists, so a GPU run does not spend its minutes on a compile error."""

from __future__ import annotations

import pytest

triton = pytest.importorskip("triton")

from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from sj_bert.ops.bpsn import triton as kernels  # noqa: E402
from sj_bert.ops.bpsn._host import DIRECTION_CODES  # noqa: E402

HOPPER = GPUTarget("cuda", 90, 32)
# pointer argument -> element type: x and what shares its dtype; the mask as SNN-BERT passes it
HALF_POINTERS = ("x_ptr", "spike_ptr", "gs_ptr", "gx_ptr")


def signature(kernel, dtype: str, constexprs: dict) -> dict:
    """Triton's signature for ``kernel``'s parameters: pointers typed by role, ints, fp32."""
    types = {}
    for param in kernel.params:
        if param.is_constexpr:
            types[param.name] = "constexpr"
        elif param.name == "m_ptr":
            types[param.name] = "*i1"
        elif param.name.endswith("_ptr"):
            types[param.name] = f"*{dtype}" if param.name in HALF_POINTERS else "*fp32"
        else:
            types[param.name] = "fp32" if param.name == "sg_alpha" else "i32"
    assert set(constexprs) == {name for name, kind in types.items() if kind == "constexpr"}
    return types


@pytest.mark.slow
@pytest.mark.parametrize("direction", tuple(DIRECTION_CODES))
@pytest.mark.parametrize("dtype", ("fp32", "bf16"))
@pytest.mark.parametrize("T,N,tiled", ((128, 32 * 384, True), (1024, 2**20, False)), ids=("bert", "large"))
def test_kernels_compile_for_hopper(direction, dtype, T, N, tiled):
    block, steps, num_warps = kernels.tile_shape(T, N)
    assert (steps > 1) == tiled  # SNN-BERT's few columns scan in tiles, many columns per step
    common = {"HAS_MASK": True, "DIRECTION": DIRECTION_CODES[direction], "TERNARY": True, "BLOCK": block,
              "STEPS": steps}
    for kernel, constexprs in (
        (kernels._bpsn_fwd_kernel, {**common, "AMPLITUDE": True}),
        (kernels._bpsn_bwd_kernel, {**common, "HAS_GS": True, "HAS_GV": direction == "bi", "SURROGATE": 1}),
    ):
        source = ASTSource(kernel, signature(kernel, dtype, constexprs), constexprs)
        compiled = triton.compile(source, target=HOPPER, options={"num_warps": num_warps})
        assert compiled.asm["cubin"] and ".target sm_90" in compiled.asm["ptx"]


def test_tile_shape_tiles_few_columns_only(monkeypatch):
    """Tiles of ``DEFAULT_STEPS`` below ``TILED_MAX_COLUMNS`` columns (capped at T), the
    per-step scan from there on (where it measured faster), and ``STEPS_PER_TILE`` over both."""
    monkeypatch.setattr(kernels, "STEPS_PER_TILE", None)
    few, many = kernels.TILED_MAX_COLUMNS - 1, kernels.TILED_MAX_COLUMNS
    assert kernels.tile_shape(512, few)[1] == kernels.DEFAULT_STEPS
    assert kernels.tile_shape(4, few)[1] == 4
    assert kernels.tile_shape(512, many)[1] == 1
    assert kernels.tile_shape(512, many)[0] == kernels._host.columns_per_program(many)
    monkeypatch.setattr(kernels, "STEPS_PER_TILE", 32)
    assert kernels.tile_shape(512, few)[1] == kernels.tile_shape(512, many)[1] == 32


def test_steps_per_tile_is_set_inside_the_block_only(monkeypatch):
    monkeypatch.setattr(kernels, "STEPS_PER_TILE", None)
    with pytest.raises(RuntimeError, match="inside"):
        with kernels.steps_per_tile(4):
            assert kernels.tile_shape(512, kernels.TILED_MAX_COLUMNS)[1] == 4
            raise RuntimeError("inside")
    assert kernels.STEPS_PER_TILE is None
