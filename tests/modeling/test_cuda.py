"""SNN-BERT on CUDA (the fused BPSN kernels inside the model) against the same model on the
CPU (the torch path): logits, loss and every gradient. Skipped without CUDA."""

from __future__ import annotations

import pytest
import torch

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]
GRADIENT_FLOOR = 1e-4  # of the largest gradient norm: below it, a gradient is rounding noise


def assert_gradients_close(actual: dict, expected: dict) -> None:
    """Every parameter's gradient within 1e-3 of ``expected``'s, in norm.

    A spike flipped where ``|v - threshold|`` is at rounding level changes a gradient locally,
    so gradients are compared in norm. Some are zero in exact arithmetic (the key bias, which
    softmax cancels; the neurons' ``a_m`` under repeat coding): float64 gives 1e-19 there, fp32
    rounding noise. An error relative to such a norm means nothing, so the floor is a fraction
    of the largest."""
    assert set(actual) == set(expected)
    floor = GRADIENT_FLOOR * max(float(grad.norm()) for grad in expected.values())
    for name, grad in expected.items():
        error = (actual[name] - grad).norm() / max(float(grad.norm()), floor)
        assert error < 1e-3, (name, float(error))


@pytest.fixture(autouse=True)
def _compiled(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)


@pytest.mark.parametrize("coding", ["individual", "repeat"])
def test_model_on_cuda_matches_cpu(tiny, coding):
    ids, mask = tiny.padded([7, 3, 12])
    labels = torch.tensor([1, 0, 1])
    results = {}
    for device in ("cpu", "cuda"):
        # the same seed gives the same weights; no dropout, whose masks differ by device
        model = tiny.model(coding=coding, neuron="bpsn", per_channel=True, learnable_threshold=True,
                           hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0).train().to(device)
        out = model(ids.to(device), attention_mask=mask.to(device), labels=labels.to(device))
        out.loss.backward()
        if coding == "individual":
            node = model.bert.encoder.layer[0].attention.self.neuron
            assert node.implementation == node.resolve_implementation(torch.device(device))
        results[device] = (out.logits.detach().cpu(),
                           {n: p.grad.cpu() for n, p in model.named_parameters() if p.grad is not None})
    (logits_cpu, grads_cpu), (logits_cuda, grads_cuda) = results["cpu"], results["cuda"]
    torch.testing.assert_close(logits_cuda, logits_cpu, rtol=1e-4, atol=1e-4)
    assert_gradients_close(grads_cuda, grads_cpu)


def test_compiled_model_on_cuda_matches_eager(tiny):
    """``torch.compile(fullgraph=True)`` with Inductor around the whole SNN-BERT on CUDA (the
    fused BPSN as the custom op inside the graph): logits and every gradient as in eager."""
    torch._dynamo.reset()
    ids, mask = (t.cuda() for t in tiny.padded([7, 3, 12]))
    labels = torch.tensor([1, 0, 1], device="cuda")
    model = tiny.model(coding="individual", neuron="bpsn", per_channel=True, learnable_threshold=True,
                       hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0).train().cuda()
    runs = {}
    for name, run in (("eager", model), ("compiled", torch.compile(model, fullgraph=True))):
        model.zero_grad(set_to_none=True)
        out = run(ids, attention_mask=mask, labels=labels)
        out.loss.backward()
        runs[name] = (out.logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    (logits, grads), (logits_compiled, grads_compiled) = runs["eager"], runs["compiled"]
    torch.testing.assert_close(logits_compiled, logits, rtol=1e-4, atol=1e-4)
    assert_gradients_close(grads_compiled, grads)


def test_training_under_cuda_graphs(tiny):
    """Three optimizer steps of SNN-BERT compiled with ``mode="reduce-overhead"`` (CUDA
    graphs), dropout on, as ``bench/coding.py`` times it. On the H200 the second step failed
    reading the dropout mask that SpikingJelly's dropout had kept from the first, a graph
    output the replay had overwritten. Every loss is finite, and on the trained weights the
    compiled and eager logits agree in ``eval()`` (no dropout, whose masks differ)."""
    torch._dynamo.reset()
    ids, mask = (t.cuda() for t in tiny.padded([7, 3, 12]))
    labels = torch.tensor([1, 0, 1], device="cuda")
    model = tiny.model(coding="individual", hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1).train().cuda()
    compiled = torch.compile(model, mode="reduce-overhead", fullgraph=True)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    for _ in range(3):
        torch.compiler.cudagraph_mark_step_begin()
        loss = compiled(ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        assert torch.isfinite(loss).item()
    model.eval()  # the same weights, no dropout: the compiled and eager forwards agree
    with torch.no_grad():
        torch.compiler.cudagraph_mark_step_begin()
        compiled_logits = torch.compile(model, fullgraph=True)(ids, attention_mask=mask).logits.clone()
        torch.testing.assert_close(compiled_logits, model(ids, attention_mask=mask).logits, rtol=1e-4, atol=1e-4)


def test_training_attention_keeps_no_square_maps(tiny):
    """In individual coding softmax attention trains through SDPA, dropout included: on CUDA
    its kernels keep no ``[B, H, L, L]`` map for the backward (the CPU's math fallback does,
    when dropout is on), as the ANN twin's SDPA attention does not. A mask expanded to
    ``[B, H, L, L]`` as a view may be kept: it holds ``B * L`` values."""
    B, H, L = 2, 2, 20
    ids, mask = (t.cuda() for t in tiny.padded([L, 9]))
    model = tiny.model(coding="individual", attention_probs_dropout_prob=0.1).train().cuda()
    assert model.config.num_attention_heads == H
    square = {}

    def keep(tensor):
        if tensor.dim() >= 2 and tuple(tensor.shape[-2:]) == (L, L):
            square[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(ids, attention_mask=mask, labels=torch.tensor([1, 0], device="cuda")).loss
    assert sum(square.values()) < B * H * L * L * 2  # less than one bf16 map in all
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
