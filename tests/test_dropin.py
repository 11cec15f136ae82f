"""BPSN as a drop-in SpikingJelly neuron beyond BERT: after conv and linear layers (outputs and
gradients against the reference), in SpikingJelly's serialized configs (``NeuronConfig``), and
the drop-in bench on Fashion-MNIST files (synthetic ones, and the real Debian package when
installed)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from spikingjelly.activation_based import functional, layer, monitor, surrogate

import sj_bert
from sj_bert import BPSN
from sj_bert.testing import bpsn_naive

DEBIAN_FMNIST = Path("/usr/share/datasets/fashion-mnist")


def _node(**kwargs) -> BPSN:
    """A node whose per-channel parameters differ channel by channel, so a channel mix-up shows."""
    torch.manual_seed(0)
    node = BPSN(tau=3.0, tau_backward=1.5, v_threshold=0.4, learnable_threshold=True, **kwargs)
    with torch.no_grad():
        for p in node.parameters():
            p.add_(0.5 * torch.randn_like(p))
    return node


def _grads(node: BPSN, x: torch.Tensor, mask=None, weight=None):
    """Spikes, potential and the gradients of x and every parameter for a weighted spike loss."""
    x = x.detach().clone().requires_grad_()
    node.zero_grad()
    spike = node(x, mask=mask) if mask is not None else node(x)
    weight = torch.linspace(-1, 1, spike.numel()).reshape(spike.shape) if weight is None else weight
    (spike * weight).sum().backward()
    return spike.detach(), node.v_seq, x.grad, {n: p.grad.clone() for n, p in node.named_parameters()}


def _naive_grads(node: BPSN, x_last: torch.Tensor, mask, weight_last):
    """The per-step loop of DESIGN's equations on channels-last ``x_last`` with ``node``'s parameters."""
    x = x_last.detach().clone().requires_grad_()
    logits = {n: p.detach().clone().requires_grad_() for n, p in node.named_parameters()}
    lam_f, lam_b, alpha = (torch.sigmoid(logits[k]) for k in ("a_f", "a_b", "a_m"))
    spike, v = bpsn_naive(x, mask, lam_f, lam_b, alpha, logits["v_threshold"], node.surrogate_function)
    (spike * weight_last).sum().backward()
    return spike.detach(), v.detach(), x.grad, {n: p.grad for n, p in logits.items()}


# -- after conv layers: [T, N, C, H, W] ------------------------------------------------------------
@pytest.mark.parametrize("masked", [False, True], ids=["no-mask", "mask"])
def test_per_channel_after_conv_matches_reference(masked):
    """``channels=C`` indexes dim 2 of ``[T, N, C, H, W]``: spikes, potential and every gradient
    equal the per-step loop run on the same features moved channels-last."""
    T, N, C, H, W = 6, 2, 3, 4, 5
    node = _node(channels=C, store_v_seq=True)
    x = 1.5 * torch.randn(T, N, C, H, W, generator=torch.Generator().manual_seed(1))
    mask = None
    if masked:
        mask = torch.ones(T, N, dtype=torch.bool)
        mask[4:, 1] = False
    weight = torch.randn(T, N, C, H, W, generator=torch.Generator().manual_seed(2))
    spike, v, gx, gp = _grads(node, x, mask, weight)
    assert spike.shape == v.shape == (T, N, C, H, W) and node.v.shape == (N, C, H, W)

    def last(t):
        return t.movedim(2, -1)

    ref_spike, ref_v, ref_gx, ref_gp = _naive_grads(node, last(x), mask, last(weight))
    decided = (ref_v - node.v_threshold.detach()).abs() > 1e-4
    assert torch.equal(last(spike)[decided], ref_spike[decided])
    torch.testing.assert_close(last(v), ref_v, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(last(gx), ref_gx, rtol=1e-4, atol=1e-5)
    for name in ("a_f", "a_b", "a_m", "v_threshold"):
        torch.testing.assert_close(gp[name], ref_gp[name], rtol=1e-4, atol=1e-5, msg=name)


def test_scalar_node_after_conv_layers_in_a_sequential_net():
    """SpikingJelly's conv -> BN -> neuron blocks with BPSN (scalar and per-channel) train a step."""
    torch.manual_seed(0)
    net = nn.Sequential(
        layer.Conv2d(1, 4, 3, padding=1, bias=False), layer.BatchNorm2d(4), BPSN(),
        layer.Conv2d(4, 4, 3, padding=1, bias=False), layer.BatchNorm2d(4), BPSN(channels=4),
        layer.Flatten(), layer.Linear(4 * 8 * 8, 10), BPSN(channels=10),
    )
    functional.set_step_mode(net, "m")
    x = torch.rand(3, 2, 1, 8, 8)
    out = net(x)
    assert out.shape == (3, 2, 10)
    out.mean(0).sum().backward()
    assert all(m.a_f.grad is not None for m in net.modules() if isinstance(m, BPSN))
    functional.reset_net(net)
    assert all(m.v == 0.0 for m in net.modules() if isinstance(m, BPSN))


def test_forward_streaming_after_conv_equals_multi_step():
    """Single-step ``[N, C, H, W]`` with per-channel parameters, state carried in ``v``."""
    x = torch.randn(7, 2, 3, 4, 4)
    multi = _node(channels=3, direction="forward")
    stream = BPSN(channels=3, direction="forward", learnable_threshold=True, step_mode="s", store_v_seq=True)
    stream.load_state_dict(multi.state_dict())
    expected = multi(x)
    got = torch.stack([stream(x[t]) for t in range(7)])
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(stream.v, multi.v)


def test_channels_last_layout_with_channel_dim():
    """``[T, N, L, C]`` (tokens then channels) takes ``channel_dim=-1``; the default (dim 2)
    names the mismatch and the fix."""
    x = torch.randn(5, 2, 7, 3)
    node = _node(channels=3, channel_dim=-1)
    ref = _node(channels=3)  # same seed: same parameters
    torch.testing.assert_close(node(x), ref(x.reshape(5, 14, 3)).reshape(5, 2, 7, 3))
    with pytest.raises(ValueError, match=r"channel_dim=2\).*channel_dim=-1"):
        BPSN(channels=3)(x)
    with pytest.raises(ValueError, match="channel_dim must be"):
        BPSN(channels=3, channel_dim=1)


# -- after linear layers: [T, N, F] -----------------------------------------------------------------
@pytest.mark.parametrize("per_channel", [False, True], ids=["shared", "perchannel"])
def test_after_linear_layer_matches_reference(per_channel):
    """``layer.Linear`` -> BPSN, without a mask (as SpikingJelly nets call it): spikes and the
    gradients of the input, the weights and every neuron parameter against the per-step loop."""
    torch.manual_seed(3)
    fc = layer.Linear(4, 5, step_mode="m")
    node = _node(channels=5 if per_channel else None)
    x = torch.randn(9, 3, 4)
    weight = torch.randn(9, 3, 5)

    spike = node(fc(x))
    (spike * weight).sum().backward()
    got = {n: p.grad.clone() for n, p in node.named_parameters()}, fc.weight.grad.clone()

    fc.zero_grad()
    logits = {n: p.detach().clone().requires_grad_() for n, p in node.named_parameters()}
    lam_f, lam_b, alpha = (torch.sigmoid(logits[k]) for k in ("a_f", "a_b", "a_m"))
    ref_spike, _ = bpsn_naive(fc(x), None, lam_f, lam_b, alpha, logits["v_threshold"], node.surrogate_function)
    (ref_spike * weight).sum().backward()
    torch.testing.assert_close(spike, ref_spike)
    torch.testing.assert_close(got[1], fc.weight.grad, rtol=1e-4, atol=1e-5)
    for name, grad in got[0].items():
        torch.testing.assert_close(grad, logits[name].grad, rtol=1e-4, atol=1e-5, msg=name)


def test_monitors_and_step_mode_in_a_spikingjelly_net():
    """OutputMonitor and an AttributeMonitor on v_seq see BPSN like any SpikingJelly node."""
    net = nn.Sequential(layer.Linear(4, 6), BPSN(store_v_seq=True), layer.Linear(6, 2), BPSN(direction="forward"))
    functional.set_step_mode(net, "m")
    spikes = monitor.OutputMonitor(net, BPSN)
    v_seq = monitor.AttributeMonitor("v_seq", pre_forward=False, net=net, instance=BPSN)
    net(torch.randn(5, 3, 4))
    assert [r.shape for r in spikes.records] == [(5, 3, 6), (5, 3, 2)]
    assert v_seq.records[0].shape == (5, 3, 6)
    spikes.remove_hooks()
    v_seq.remove_hooks()


# -- the triton kernels see the conv layout through the same dispatch ----------------------------------
def test_triton_per_channel_after_conv_matches_torch(monkeypatch):
    """``[T, N, C, H, W]`` per channel: the Triton kernels (interpreted on CPU) agree with the
    torch path in spikes, potential and every gradient."""
    pytest.importorskip("triton")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    x = 1.5 * torch.randn(5, 2, 3, 2, 3, generator=torch.Generator().manual_seed(4))
    mask = torch.ones(5, 2, dtype=torch.bool)
    mask[:2, 1] = False
    results = {}
    for backend in ("torch", "triton"):
        node = _node(channels=3, backend=backend, store_v_seq=True)
        results[backend] = _grads(node, x, mask)
        assert node.implementation == backend
    (s0, v0, gx0, gp0), (s1, v1, gx1, gp1) = results["torch"], results["triton"]
    torch.testing.assert_close(v1, v0, rtol=1e-5, atol=1e-6)
    threshold = _node(channels=3).v_threshold.detach().reshape(3, 1, 1)
    decided = (v0 - threshold).abs() > 1e-3
    assert torch.equal(s1[decided], s0[decided])
    torch.testing.assert_close(gx1, gx0, rtol=1e-4, atol=1e-6)
    for name in gp0:
        torch.testing.assert_close(gp1[name], gp0[name], rtol=1e-4, atol=1e-5, msg=name)


# -- SpikingJelly's serialized configs ---------------------------------------------------------------
def test_spikformer_built_from_neuron_config_trains_and_round_trips():
    """``import sj_bert`` registers BPSN: SpikingJelly's own Spikformer builds from a
    ``NeuronConfig`` naming it, runs forward and backward, and the config survives JSON."""
    from spikingjelly.activation_based.distributed.vision.config import ModelConfig, NeuronConfig
    from spikingjelly.activation_based.model.spikformer import SpikformerConfig

    assert sj_bert.BPSN_CLASS_PATH == "sj_bert.neuron.BPSN" == sj_bert.register_with_spikingjelly()
    config = SpikformerConfig(
        time_steps=2, num_classes=10, image_height=32, image_width=32, in_channels=3,
        neuron_config=NeuronConfig(
            class_path=sj_bert.BPSN_CLASS_PATH, kwargs={"tau": 2.0, "v_threshold": 0.5, "direction": "bi"},
            surrogate="spikingjelly.activation_based.surrogate.Sigmoid", surrogate_kwargs={"alpha": 4.0},
        ),
    )
    restored = ModelConfig.from_dict(json.loads(json.dumps(config.as_dict())))
    assert restored == config

    torch.manual_seed(0)
    model, *_ = restored.get_builder_cls()(restored).build(
        process_group=None, memopt_process_group=None, pipeline_rank=0, pipeline_size=1,
        pipeline_microbatches=1, device=torch.device("cpu"), micro_batch_size=2, memopt_level=0,
        memopt_compress_inputs=False, memopt_checkpoint_budget="memory",
    )
    nodes = [m for m in model.modules() if isinstance(m, BPSN)]
    assert nodes and all(n.direction == "bi" and n.v_threshold.item() == 0.5 for n in nodes)
    assert all(isinstance(n.surrogate_function, surrogate.Sigmoid) for n in nodes)
    out = model(torch.rand(2, 3, 32, 32))
    assert out.shape == (2, 2, 10)  # [T, N, classes]
    out.mean(0).sum().backward()
    assert all(n.a_f.grad is not None for n in nodes)
    functional.reset_net(model)


def test_unregistered_path_is_refused_by_spikingjelly():
    """The registry is what makes the path resolvable (SpikingJelly never imports it)."""
    from spikingjelly.activation_based.distributed.vision.config import NeuronConfig, _resolve_neuron_config

    cls, kwargs = _resolve_neuron_config(NeuronConfig(class_path=sj_bert.BPSN_CLASS_PATH, kwargs={"tau": 3.0}))
    assert cls is BPSN and kwargs == {"tau": 3.0}
    with pytest.raises(ValueError, match="Unregistered"):
        _resolve_neuron_config(NeuronConfig(class_path="sj_bert.neuron.NotANeuron"))


# -- the drop-in bench ---------------------------------------------------------------------------------
@pytest.fixture
def dropin_bench(bench_script):
    # SpikingJelly's sequential Fashion-MNIST example, whose nets the bench builds, imports torchvision
    pytest.importorskip("torchvision", reason="SpikingJelly's rsnn_sequential_fmnist example needs torchvision")
    return bench_script("dropin")


def _write_idx(folder: Path, n_train: int, n_test: int) -> None:
    """Fashion-MNIST-format idx files: label-dependent blobs, so there is something to learn."""
    g = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = g.integers(0, 10, n).astype(np.uint8)
        images = g.integers(0, 60, (n, 28, 28)).astype(np.uint8)
        for i, label in enumerate(labels):
            images[i, 2 * label:2 * label + 8, 4:24] = 250
        with gzip.open(folder / f"{prefix}-images-idx3-ubyte.gz", "wb") as f:
            f.write(np.array([0x803, n, 28, 28], dtype=">i4").tobytes() + images.tobytes())
        with gzip.open(folder / f"{prefix}-labels-idx1-ubyte.gz", "wb") as f:
            f.write(np.array([0x801, n], dtype=">i4").tobytes() + labels.tobytes())


TINY = ["--train_samples", "64", "--epochs", "2", "--csnn_train_samples", "32", "--csnn_channels", "2",
        "--csnn_T", "2", "--batch_size", "16", "--eval_batch_size", "50"]


def test_bench_runs_every_neuron_and_resumes(tmp_path, capsys, monkeypatch, dropin_bench):
    """Synthetic idx files (no dataset package needed): every network and neuron, the skipped
    pairs with their reason, the JSON, and an interrupted run resumed from its state file."""
    _write_idx(tmp_path, 96, 40)
    bench = dropin_bench
    out = tmp_path / "results" / "dropin.json"
    argv = ["--data_dir", str(tmp_path), "--nets", "plain", "fb", "csnn", "--out", str(out), *TINY]

    calls = {"n": 0}
    evaluate = bench.Run.evaluate

    def interrupted(self, *args):
        calls["n"] += 1
        if calls["n"] == 20:  # after the first epoch of every pair, mid-way through the second
            raise KeyboardInterrupt
        return evaluate(self, *args)

    monkeypatch.setattr(bench.Run, "evaluate", interrupted)
    with pytest.raises(KeyboardInterrupt):
        bench.main(argv)
    partial = json.loads(out.read_text())
    assert partial["complete"] is False and len(list(Path(f"{out}.state").glob("*.pt"))) == 16
    monkeypatch.setattr(bench.Run, "evaluate", evaluate)

    result = bench.main(argv + ["--resume"])
    assert "resumed plain/bpsn_bi after epoch 1" in capsys.readouterr().out
    saved = json.loads(out.read_text())
    assert saved == json.loads(json.dumps(result))
    assert saved["complete"] and saved["resumed"] and not Path(f"{out}.state").exists()
    assert not list(out.parent.glob("*.tmp*"))
    assert saved["bench"] == "dropin" and saved["device"] == "cpu" and saved["threads"] == 1
    assert {"versions", "settings", "data", "method", "ratios"} <= set(saved)
    ran = {(r["net"], r["neuron"]) for r in saved["results"]}
    skipped = {(s["net"], s["neuron"]) for s in saved["skipped"]}
    assert skipped == {("fb", "psn"), ("fb", "bpsn_bi")}
    assert ran | skipped == {(n, k) for n in ("plain", "fb", "csnn") for k in bench.NEURONS}
    for r in saved["results"]:
        assert r["epochs_done"] == r["epochs"] == (1 if r["net"] == "csnn" else 2)
        assert [h["epoch"] for h in r["history"]] == list(range(1, r["epochs"] + 1))
        assert 0 <= r["test_acc"] <= 1 and 0 <= r["firing_rate"] <= 1 and r["seconds_per_epoch"] > 0
    assert {q["neuron"] for q in saved["ratios"] if q["net"] == "plain"} == set(bench.NEURONS)


def test_bench_input_is_the_examples_layout(dropin_bench):
    """Sequential nets get the example's ``img.permute(2, 0, 1)`` ``[W, N, H]``; the CSNN the
    image repeated ``[T, N, 1, H, W]``; swapping keeps every neuron's surrogate and step mode."""
    bench = dropin_bench
    args = bench.parse_args(["--csnn_T", "3"])
    images = torch.rand(2, 28, 28)
    assert torch.equal(bench.to_input("plain", images, args), images.permute(2, 0, 1))
    assert bench.to_input("csnn", images, args).shape == (3, 2, 1, 28, 28)
    net = bench.build_net("fb", "bpsn_forward", args)
    nodes = [m for m in net.modules() if isinstance(m, BPSN)]
    assert sorted(n.step_mode for n in nodes) == ["m", "s"]  # the recurrent one stays single-step
    assert all(isinstance(n.surrogate_function, surrogate.ATan) for n in nodes)
    with pytest.raises(SystemExit):
        bench.parse_args(["--epochs", "0"])


@pytest.mark.skipif(not (DEBIAN_FMNIST / "t10k-labels-idx1-ubyte.gz").exists(),
                    reason="Fashion-MNIST not installed: apt-get install dataset-fashion-mnist")
def test_bench_on_real_fashion_mnist(tmp_path, dropin_bench):
    """A few hundred real images: the official split sizes, and BPSN learns above chance."""
    bench = dropin_bench
    images, labels = bench.load_fashion_mnist(split="test")
    assert images.shape == (10000, 28, 28) and labels.shape == (10000,)
    assert 0.0 <= float(images.min()) and float(images.max()) <= 1.0 and set(labels.tolist()) == set(range(10))
    out = tmp_path / "dropin.json"
    result = bench.main(["--nets", "plain", "--neurons", "lif", "bpsn_bi", "--train_samples", "512",
                         "--epochs", "2", "--test_samples", "300", "--lr", "1e-2", "--batch_size", "32",
                         "--out", str(out)])
    assert result["data"] == {"source": str(DEBIAN_FMNIST), "train_total": 60000, "test": 300,
                              "sequential_train_per_epoch": 512}
    bpsn = next(r for r in result["results"] if r["neuron"] == "bpsn_bi")
    assert bpsn["test_acc"] > 0.2  # chance is 0.1


def test_missing_dataset_is_a_clear_error(tmp_path, dropin_bench):
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        dropin_bench.load_fashion_mnist(str(tmp_path), "train")
