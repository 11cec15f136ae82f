"""Bad input to BPSN: each is an error of the right type whose message names the argument and
what was expected (more cases, on shapes and masks, in test_neuron.py's misuse section)."""

from __future__ import annotations

import re

import pytest
import torch

from sj_bert import BPSN
from sj_bert.ops.bpsn.reference import DIRECTIONS

CONSTRUCTION = [
    (dict(v_threshold="a"), ValueError, r"v_threshold must be a finite number, got 'a'"),
    (dict(v_threshold=float("nan")), ValueError, r"v_threshold must be a finite number, got nan"),
    (dict(surrogate_function=None), TypeError, r"surrogate_function must be a SpikingJelly surrogate .* got NoneType"),
    (dict(surrogate_function="ATan"), TypeError, r"surrogate_function must be a SpikingJelly surrogate .* got str"),
    (dict(channels=0), ValueError, r"channels must be a positive int or None, got 0"),
    (dict(channels=2.5), ValueError, r"channels must be a positive int or None, got 2.5"),
    (dict(tau_backward=0.5), ValueError, r"tau_backward must be a finite number > 1 .* got 0.5"),
    (dict(tau="2"), ValueError, r"tau must be a finite number > 1 .* got '2'"),
    (dict(step_mode="x"), ValueError, r"step_mode must be 's' or 'm', got 'x'"),
    (dict(direction=None), ValueError, rf"direction must be one of {re.escape(str(DIRECTIONS))}, got None"),
]


@pytest.mark.parametrize("kwargs, error, match", CONSTRUCTION, ids=[str(c[0]) for c in CONSTRUCTION])
def test_bad_construction(kwargs, error, match):
    with pytest.raises(error, match=match):
        BPSN(**kwargs)


def test_a_list_instead_of_a_tensor():
    with pytest.raises(TypeError, match=r"x_seq must be a floating-point tensor, got <class 'list'>"):
        BPSN()([[1.0, 2.0]])
    with pytest.raises(TypeError, match=r"mask must be a tensor, got list"):
        BPSN()(torch.randn(3, 2, 4), mask=[[1, 1]] * 3)


def test_a_mask_on_another_device():
    with pytest.raises(ValueError, match=r"mask is on meta but x_seq is on cpu"):
        BPSN()(torch.randn(3, 2, 4), mask=torch.ones(3, 2, dtype=torch.bool, device="meta"))


def test_single_step_shapes():
    node = BPSN(direction="forward", step_mode="s")
    with pytest.raises(ValueError, match=r"x must have shape \[N, \*\], got a 0-d tensor"):
        node(torch.tensor(1.0))
    with pytest.raises(ValueError, match=r"mask must have shape \[2\] \(\[N\] of x\), got \[3\]"):
        node(torch.randn(2, 4), mask=torch.ones(3, dtype=torch.bool))
    with pytest.raises(TypeError, match=r"mask must be bool or integer .* got torch.float32"):
        node(torch.randn(2, 4), mask=torch.ones(2))
