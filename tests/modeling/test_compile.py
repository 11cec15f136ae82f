"""SNN-BERT under ``torch.compile(fullgraph=True)`` with the fused Triton neuron (interpreted
on CPU): one graph, no break, forward and every gradient equal to eager. What a GPU user
gets from ``torch.compile(model)``: the launch-bound eager step is what the H200 run
measured (``bench/results/coding_cuda.json``)."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")


@pytest.fixture(autouse=True)
def _interpret(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")


@pytest.mark.slow
@pytest.mark.parametrize("coding", ["individual", "repeat"])
def test_model_compiles_to_one_graph(tiny, coding):
    torch._dynamo.reset()
    ids, mask = tiny.padded([7, 3, 12])
    labels = torch.tensor([1, 0, 1])
    model = tiny.model(coding=coding, neuron="bpsn", per_channel=True, learnable_threshold=True,
                       neuron_backend="triton", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0).train()
    eager = model(ids, attention_mask=mask, labels=labels)
    eager.loss.backward()
    expected = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)

    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)  # raises on a graph break
    out = compiled(ids, attention_mask=mask, labels=labels)
    out.loss.backward()
    torch.testing.assert_close(out.logits, eager.logits, rtol=1e-6, atol=1e-6)
    actual = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert set(actual) == set(expected)
    for name, grad in expected.items():
        torch.testing.assert_close(actual[name], grad, rtol=1e-5, atol=1e-6, msg=lambda m: f"{name}: {m}")


def test_eager_still_checks_ids(tiny):
    """The value checks skipped inside a compiled graph still run in eager mode."""
    model = tiny.model()
    ids, mask = tiny.padded([4, 4])
    with pytest.raises(ValueError, match="input_ids holds id"):
        model(ids + 10_000, attention_mask=mask)
