"""SNN-BERT under ``torch.compile(fullgraph=True)`` with the fused Triton neuron (interpreted
on CPU) and with the CPU default: one graph, no break, forward and every gradient equal to eager. What a GPU user
gets from ``torch.compile(model)``: the launch-bound eager step is what the H200 run
measured (``bench/results/coding_cuda.json``)."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")


@pytest.fixture(autouse=True)
def _interpret(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")


# (neuron backend, coding, what runs inside the graph, tolerance of the outputs)
COMPILE_CASES = [
    pytest.param("triton", "individual", "triton", 1e-6, id="triton-individual"),
    pytest.param("triton", "repeat", "triton", 1e-6, id="triton-repeat"),
    # the CPU default: eager runs the compiled scans, a traced graph the torch path, whose chunk
    # length cannot depend on the decays' values there; they differ in rounding only
    pytest.param(None, "individual", "torch", 1e-5, id="cpu-default-individual"),
]


@pytest.mark.slow
@pytest.mark.parametrize("backend,coding,traced,tolerance", COMPILE_CASES)
def test_model_compiles_to_one_graph(tiny, backend, coding, traced, tolerance):
    torch._dynamo.reset()
    ids, mask = tiny.padded([7, 3, 12])
    labels = torch.tensor([1, 0, 1])
    model = tiny.model(coding=coding, neuron="bpsn", per_channel=True, learnable_threshold=True,
                       neuron_backend=backend, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0).train()
    eager = model(ids, attention_mask=mask, labels=labels)
    eager.loss.backward()
    expected = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)

    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)  # raises on a graph break
    out = compiled(ids, attention_mask=mask, labels=labels)
    out.loss.backward()
    assert {m.implementation for m in model.modules() if hasattr(m, "implementation")} == {traced}
    torch.testing.assert_close(out.logits, eager.logits, rtol=tolerance, atol=tolerance)
    actual = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert set(actual) == set(expected)
    for name, grad in expected.items():
        torch.testing.assert_close(actual[name], grad, rtol=10 * tolerance, atol=tolerance,
                                   msg=lambda m: f"{name}: {m}")


def test_eager_still_checks_ids(tiny):
    """The value checks skipped inside a compiled graph still run in eager mode."""
    model = tiny.model()
    ids, mask = tiny.padded([4, 4])
    with pytest.raises(ValueError, match="input_ids holds id"):
        model(ids + 10_000, attention_mask=mask)


@pytest.mark.parametrize("coding", ["individual", "repeat"])
def test_reset_states_is_reset_net_without_deepcopy(tiny, coding, monkeypatch):
    """SNN-BERT resets its neurons at every forward with
    ``reset_states``: the same states as SpikingJelly's ``functional.reset_net``, without
    its ``copy.deepcopy`` of immutable reset values (Dynamo in torch 2.11 cannot trace it,
    so a compiled SNN-BERT broke its graph at that line)."""
    import copy

    from spikingjelly.activation_based import base, functional

    from sj_bert.modeling.modeling_spiking_bert import reset_states

    ids, mask = tiny.padded([5, 3])
    model = tiny.model(coding=coding).train()
    with torch.no_grad():  # states and masks set (leaves, so that the model can be copied)
        model(ids, attention_mask=mask)

    def states(net):
        return [(name, key, value) for name, m in net.named_modules() if isinstance(m, base.MemoryModule)
                for key, value in m._memories.items()]

    assert any(torch.is_tensor(value) for _, _, value in states(model)) or coding == "individual"
    twin = copy.deepcopy(model)
    functional.reset_net(twin)
    monkeypatch.setattr(base.copy, "deepcopy", lambda *a, **k: pytest.fail("reset_states deep-copied a state"))
    reset_states(model)
    assert states(model) == states(twin)
    assert all(getattr(m, "v_seq", None) is None for m in model.modules())


def tensor_states(net: torch.nn.Module) -> list[str]:
    """The SpikingJelly memories of ``net`` that hold a tensor after a forward."""
    from spikingjelly.activation_based import base

    return [f"{name}.{key}" for name, m in net.named_modules() if isinstance(m, base.MemoryModule)
            for key, value in m._memories.items() if torch.is_tensor(value)]


def test_individual_coding_keeps_no_state_between_forwards(tiny):
    """A training forward of SNN-BERT (individual coding, dropout on) leaves no tensor in the
    model. Under ``torch.compile(mode="reduce-overhead")`` such a tensor is a CUDA graph's
    output that the next replay overwrites; SpikingJelly's dropout kept its mask so, and the
    compiled training step failed on the H200 at its second call."""
    model = tiny.model(coding="individual", hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1).train()
    ids, mask = tiny.padded([6, 4])
    model(ids, attention_mask=mask, labels=torch.tensor([0, 1])).loss.backward()
    assert tensor_states(model) == []


def test_repeat_coding_keeps_only_its_neurons_potentials(tiny):
    """Repeat coding's LIF neurons keep their potential (SpikingJelly's own state, reset at
    the next forward); its dropouts keep nothing."""
    model = tiny.model(coding="repeat", hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1).train()
    ids, mask = tiny.padded([6, 4])
    model(ids, attention_mask=mask)
    kept = tensor_states(model)
    assert kept and all(key.endswith(".v") for key in kept), kept


@pytest.mark.parametrize("shared", [True, False])
def test_sequence_dropout_masks(shared):
    """One mask over all steps for repeat coding, every element on its own otherwise; the
    identity in ``eval()`` and at ``p = 0``."""
    from sj_bert.modeling.modeling_spiking_bert import SequenceDropout

    torch.manual_seed(0)
    x = torch.ones(4, 3, 64)  # [T, B, D]
    dropout = SequenceDropout(0.5, shared_over_steps=shared).train()
    out = dropout(x)
    dropped = out == 0
    assert bool((dropped == dropped[0]).all()) == shared
    assert 0.3 < dropped.float().mean() < 0.7
    assert bool((out[~dropped] == 2.0).all())  # kept elements scaled by 1 / (1 - p)
    assert torch.equal(dropout.eval()(x), x)
    assert torch.equal(SequenceDropout(0.0, shared).train()(x), x)


@pytest.mark.slow
def test_training_steps_compile_once(tiny):
    """Training steps of a compiled SNN-BERT (dropout on) reuse the first graph. A tensor left
    in the model by one step (SpikingJelly's dropout kept its mask) fails a guard at the next
    and is read back while Dynamo traces again: under CUDA graphs (H200, reduce-overhead) it
    was a graph output the replay had overwritten, and that read failed the second step."""
    torch._dynamo.reset()
    model = tiny.model(coding="individual", neuron_backend="triton", hidden_dropout_prob=0.1,
                       attention_probs_dropout_prob=0.1).train()
    # transformers' loss sets problem_type at its first call (a recompile for BERT too): set it
    model.config.problem_type = "single_label_classification"
    ids, mask = tiny.padded([6, 4])
    labels = torch.tensor([0, 1])
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    with torch._dynamo.config.patch(error_on_recompile=True):
        for _ in range(3):
            compiled(ids, attention_mask=mask, labels=labels).loss.backward()
