"""BPSN as a drop-in neuron: SpikingJelly's own Fashion-MNIST networks, trained on the real data.

Each network is SpikingJelly's, built unchanged except for the neuron class:

- ``plain``: ``PlainNet`` of ``spikingjelly.activation_based.examples.rsnn_sequential_fmnist``,
  sequential Fashion-MNIST: each image is read as T=28 steps of 28 pixels, ``[T, N, 28]``
  (the example's ``img.permute(2, 0, 1)``: one column per step); ``ss``: its
  ``StatefulSynapseNet`` (a learnable synapse filter between the layers); ``fb``: its
  ``FeedBackNet`` (a recurrent layer; only with ``--nets``). Their
  ``IFNode(surrogate_function=ATan())`` modules are replaced by the neuron under test,
  keeping the surrogate.
- ``csnn``: ``parametric_lif_net.FashionMNISTNet(channels, spiking_neuron=...)``, the static
  image repeated for T steps, ``[T, N, 1, 28, 28]``: the neuron sits after conv layers
  (``[T, N, C, H, W]``) and after linear ones (``[T, N, F]``).

Neurons: SpikingJelly's ``IFNode`` and ``LIFNode`` (tau 2), ``PSN`` (T weights) and
``SlidingPSN`` (k taps), and BPSN (tau 2) with ``direction="bi"`` and ``"forward"``. Every
neuron gets the same optimiser (Adam, cosine schedule over the epochs, as the example's
``-opt adam -lr 0.001``), loss (MSE of the output firing rate against the one-hot label, as
both SpikingJelly examples), seed, training subset and batch order. A neuron that cannot run
in a network (``FeedBackNet`` drives its recurrent neuron one step at a time, which
``PSN`` and a bidirectional BPSN cannot do) is reported as skipped, with the reason.

Timing is the wall time of each training epoch. Neurons take turns epoch by epoch, so a
change in machine load affects them alike; ``s/epoch`` is the median over epochs and
``x LIF`` divides it by LIF's in the same network. The firing rate is the fraction of
neuron outputs that are spikes on the test set, over every neuron layer (the output layer
included).

Data: the Debian package ``dataset-fashion-mnist`` (``apt-get install dataset-fashion-mnist``,
60,000 train / 10,000 test images in ``/usr/share/datasets/fashion-mnist/``), or
``--data_dir`` holding the four ``*-idx*-ubyte(.gz)`` files.

    python bench/dropin.py                  # defaults: about 16 min on 2 busy CPU cores
    python bench/dropin.py --resume         # continue an interrupted run from its state file
    python bench/dropin.py --nets plain fb --epochs 20    # FeedBackNet: recurrent, single-step
"""

from __future__ import annotations

import argparse
import gzip
import inspect
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from spikingjelly.activation_based import functional, neuron, surrogate
from spikingjelly.activation_based.model import parametric_lif_net

from sj_bert import BPSN
from sj_bert.files import write_json
from sj_bert.timing import torch_threads, versions

RESULTS = Path(__file__).resolve().parent / "results"
DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"
NEURONS = ("if", "lif", "psn", "sliding_psn", "bpsn_bi", "bpsn_forward")
SEQUENTIAL = {"plain": "PlainNet", "ss": "StatefulSynapseNet", "fb": "FeedBackNet"}
NETS = tuple(SEQUENTIAL) + ("csnn",)
SPIKING_TYPES = (neuron.BaseNode, neuron.PSN, neuron.SlidingPSN)
SEQ_T = 28  # rows of a Fashion-MNIST image


# -- data --------------------------------------------------------------------------------------
def _read_idx(path: Path, offset: int) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        return np.frombuffer(f.read(), dtype=np.uint8, offset=offset)


def load_fashion_mnist(data_dir: Optional[str] = None, split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """``(images [n, 28, 28] float in [0, 1], labels [n] int64)`` of the official split
    (``train``: 60,000, ``test``: 10,000) from the four idx files."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    root = Path(data_dir or DEBIAN_DIR)
    prefix = "train" if split == "train" else "t10k"
    paths = {}
    for kind in ("images-idx3", "labels-idx1"):
        found = [root / f"{prefix}-{kind}-ubyte{ext}" for ext in (".gz", "")]
        found = [p for p in found if p.exists()]
        if not found:
            raise FileNotFoundError(
                f"Fashion-MNIST file {prefix}-{kind}-ubyte(.gz) not found in {root}: "
                "apt-get install dataset-fashion-mnist (Debian/Ubuntu, files land in "
                f"{DEBIAN_DIR}) or pass --data_dir with the four idx files"
            )
        paths[kind] = found[0]
    images = _read_idx(paths["images-idx3"], 16).reshape(-1, 28, 28)
    labels = _read_idx(paths["labels-idx1"], 8)
    if len(images) != len(labels):
        raise ValueError(f"{root}: {len(images)} images but {len(labels)} labels in the {split} split")
    return torch.from_numpy(images.astype(np.float32) / 255.0), torch.from_numpy(labels.astype(np.int64))


def subset(images: torch.Tensor, labels: torch.Tensor, n: Optional[int], seed: int):
    """The first ``n`` samples of a seeded permutation (all of them when ``n`` is None)."""
    if n is None or n >= len(labels):
        return images, labels
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))[:n]
    return images[order], labels[order]


# -- networks ----------------------------------------------------------------------------------
def neuron_factory(name: str, T: int, sliding_k: int) -> tuple[type, dict]:
    """``(class, kwargs)`` of the neuron ``name`` for sequences of ``T`` steps; the surrogate
    is added by the network builder (the network's own, ATan in SpikingJelly's examples)."""
    table = {
        "if": (neuron.IFNode, {}),
        "lif": (neuron.LIFNode, {"tau": 2.0}),
        "psn": (neuron.PSN, {"T": T}),
        "sliding_psn": (neuron.SlidingPSN, {"k": min(sliding_k, T)}),
        "bpsn_bi": (BPSN, {"tau": 2.0, "direction": "bi"}),
        "bpsn_forward": (BPSN, {"tau": 2.0, "direction": "forward"}),
    }
    if name not in table:
        raise ValueError(f"neuron must be one of {NEURONS}, got {name!r}")
    return table[name]


def describe_neuron(name: str, args: argparse.Namespace) -> str:
    """``"LIFNode(tau=2.0)"``-style description, per network where T matters."""
    described = []
    for T in dict.fromkeys([SEQ_T if net in SEQUENTIAL else args.csnn_T for net in args.nets]):
        cls, kwargs = neuron_factory(name, T, args.sliding_k)
        described.append(f"{cls.__name__}({', '.join(f'{k}={v}' for k, v in kwargs.items())})")
    return " / ".join(dict.fromkeys(described))


def swap_neurons(module: nn.Module, make: Callable[[nn.Module], nn.Module], old: type = neuron.IFNode) -> int:
    """Replace every ``old`` neuron inside ``module`` (in place, recursively, containers such as
    ``LinearRecurrentContainer`` included) by ``make(old_node)``; returns how many."""
    count = 0
    for name, child in module.named_children():
        if isinstance(child, old):
            setattr(module, name, make(child))
            count += 1
        else:
            count += swap_neurons(child, make, old)
    return count


def build_net(net: str, neuron_name: str, args: argparse.Namespace) -> nn.Module:
    """SpikingJelly's network ``net`` with ``neuron_name`` in every neuron position, multi-step."""
    T = SEQ_T if net in SEQUENTIAL else args.csnn_T
    cls, kwargs = neuron_factory(neuron_name, T, args.sliding_k)
    if net in SEQUENTIAL:
        from spikingjelly.activation_based.examples import rsnn_sequential_fmnist as example

        model = getattr(example, SEQUENTIAL[net])()
        # as the example: set_step_mode leaves neurons inside LinearRecurrentContainer single-step
        functional.set_step_mode(model, "m")
        # keep each replaced node's own surrogate (ATan in the example) and step mode: the neuron
        # inside FeedBackNet's recurrent container stays single-step, as the example's IFNode
        takes_step_mode = "step_mode" in inspect.signature(cls).parameters
        swapped = swap_neurons(model, lambda old: cls(
            surrogate_function=old.surrogate_function,
            **({"step_mode": old.step_mode} if takes_step_mode else {}), **kwargs))
        assert swapped > 0, f"{SEQUENTIAL[net]} has no IFNode to replace"
        return model
    elif net == "csnn":
        extra = {"detach_reset": True} if cls in (neuron.IFNode, neuron.LIFNode, BPSN) else {}
        model = parametric_lif_net.FashionMNISTNet(
            channels=args.csnn_channels, spiking_neuron=cls, surrogate_function=surrogate.ATan(), **kwargs, **extra
        )
    else:
        raise ValueError(f"net must be one of {NETS}, got {net!r}")
    functional.set_step_mode(model, "m")
    return model


def same_initial_weights(model: nn.Module, net: str, args: argparse.Namespace) -> nn.Module:
    """Give ``model``'s non-neuron layers the initial weights of the seeded IF network, so every
    neuron starts from the same synapses (neurons with weights of their own, PSN's, draw from
    the random stream while FashionMNISTNet is built, which would shift the layers after them)."""
    torch.manual_seed(args.seed)
    reference = build_net(net, "if", args).state_dict()
    neuron_names = [name for name, m in model.named_modules() if isinstance(m, SPIKING_TYPES)]
    shared = {k: v for k, v in reference.items()
              if not any(k.startswith(f"{name}.") for name in neuron_names)}
    missing = [k for k in shared if k not in model.state_dict() or model.state_dict()[k].shape != shared[k].shape]
    if missing:
        raise RuntimeError(f"{net}: layers differ between neurons, cannot share initial weights: {missing}")
    model.load_state_dict(shared, strict=False)
    torch.manual_seed(args.seed)
    return model


def to_input(net: str, images: torch.Tensor, args: argparse.Namespace) -> torch.Tensor:
    """``[N, H, W]`` images -> the network's multi-step input: ``[W, N, H]`` for the sequential
    nets, exactly as the example (one 28-pixel column per step, T=28), or the image repeated
    ``[T, N, 1, H, W]`` for the CSNN."""
    if net in SEQUENTIAL:
        return images.permute(2, 0, 1)
    return images[None, :, None].expand(args.csnn_T, -1, -1, -1, -1)


def rate_output(net: str, out: torch.Tensor) -> torch.Tensor:
    """Output firing rates ``[N, 10]``: the sequential nets average over T themselves."""
    return out if net in SEQUENTIAL else out.mean(0)


class FiringRate:
    """Counts spikes and outputs of every neuron layer while attached (forward hooks)."""

    def __init__(self, model: nn.Module):
        self.layers: dict[str, list[float]] = {}
        self.handles = [
            m.register_forward_hook(self._hook(name))
            for name, m in model.named_modules()
            if isinstance(m, SPIKING_TYPES)
        ]

    def _hook(self, name: str):
        def hook(module, args, out):
            out = out[0] if isinstance(out, tuple) else out
            spikes, total = self.layers.setdefault(name, [0.0, 0.0])
            self.layers[name] = [spikes + float((out != 0).sum()), total + out.numel()]

        return hook

    def remove(self) -> None:
        for h in self.handles:
            h.remove()

    def rate(self) -> float:
        total = sum(t for _, t in self.layers.values())
        return sum(s for s, _ in self.layers.values()) / total if total else float("nan")


def can_run(net: str, neuron_name: str) -> Optional[str]:
    """Why ``neuron_name`` cannot run in ``net``, or None."""
    if net == "fb" and neuron_name in ("psn", "bpsn_bi"):
        return ("FeedBackNet's LinearRecurrentContainer feeds each step's spikes back into the next "
                "step's input, so it runs its neuron one step at a time; this neuron needs the whole "
                "sequence at once")
    return None


# -- training ----------------------------------------------------------------------------------
class Run:
    """One (network, neuron) pair: model, optimiser, schedule and history; resumable."""

    def __init__(self, net: str, neuron_name: str, args: argparse.Namespace):
        self.net, self.neuron = net, neuron_name
        self.model = same_initial_weights(build_net(net, neuron_name, args), net, args)
        self.epochs = args.csnn_epochs if net == "csnn" else args.epochs
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=args.lr)
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, self.epochs)
        self.history: list[dict] = []

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "history": self.history}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.history = state["history"]

    def train_epoch(self, images, labels, epoch: int, args) -> dict:
        self.model.train()
        # the same batch order (and dropout draws) for every neuron in this epoch
        order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(args.seed * 1000 + epoch))
        torch.manual_seed(args.seed * 1000 + epoch)
        loss_sum, correct, seen = 0.0, 0, 0
        start = time.perf_counter()
        for i in range(0, len(order) - args.batch_size + 1, args.batch_size):  # drop_last, as the example
            idx = order[i:i + args.batch_size]
            x, y = to_input(self.net, images[idx], args), labels[idx]
            out = rate_output(self.net, self.model(x))
            loss = F.mse_loss(out, F.one_hot(y, 10).float())
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            functional.reset_net(self.model)
            loss_sum += loss.item() * len(y)
            correct += int((out.argmax(1) == y).sum())
            seen += len(y)
        seconds = time.perf_counter() - start
        self.scheduler.step()
        return {"train_loss": loss_sum / seen, "train_acc": correct / seen, "train_seconds": seconds,
                "train_samples": seen}

    @torch.no_grad()
    def evaluate(self, images, labels, args) -> dict:
        self.model.eval()
        counter = FiringRate(self.model)
        correct = 0
        try:
            for i in range(0, len(labels), args.eval_batch_size):
                x = to_input(self.net, images[i:i + args.eval_batch_size], args)
                out = rate_output(self.net, self.model(x))
                correct += int((out.argmax(1) == labels[i:i + args.eval_batch_size]).sum())
                functional.reset_net(self.model)
        finally:
            counter.remove()
        return {"test_acc": correct / len(labels), "firing_rate": counter.rate(),
                "firing_rate_by_layer": {k: s / t for k, (s, t) in counter.layers.items()}}


# -- the bench ---------------------------------------------------------------------------------
def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nets", nargs="+", choices=NETS, default=["plain", "ss", "csnn"],
                        help="plain/ss/fb: PlainNet/StatefulSynapseNet/FeedBackNet of the sequential example; "
                             "csnn: FashionMNISTNet")
    parser.add_argument("--neurons", nargs="+", choices=NEURONS, default=list(NEURONS))
    parser.add_argument("--data_dir", default=None, help=f"folder with the idx files (default {DEBIAN_DIR})")
    parser.add_argument("--train_samples", type=int, default=60000,
                        help="sequential nets: training images per epoch (a seeded subset when under 60,000)")
    parser.add_argument("--epochs", type=int, default=10, help="sequential nets: epochs")
    parser.add_argument("--csnn_train_samples", type=int, default=12800,
                        help="CSNN: training images per epoch, a seeded subset of the 60,000")
    parser.add_argument("--csnn_epochs", type=int, default=1)
    parser.add_argument("--csnn_channels", type=int, default=8, help="CSNN conv channels (SpikingJelly's default 128)")
    parser.add_argument("--csnn_T", type=int, default=4, help="CSNN time steps (the image repeated)")
    parser.add_argument("--test_samples", type=int, default=None, help="test images (default: all 10,000)")
    parser.add_argument("--batch_size", type=int, default=128, help="the example's -b default")
    parser.add_argument("--eval_batch_size", type=int, default=1000)
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam, as the example's -opt adam -lr 0.001")
    parser.add_argument("--sliding_k", type=int, default=4, help="SlidingPSN taps (capped at T)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads; 1 (default) is steadier and, on a busy shared CPU, far faster "
                             "than threads that wait for each other; 0 keeps torch's default")
    parser.add_argument("--out", default=None, help="JSON path (default: bench/results/dropin_cpu.json)")
    parser.add_argument("--resume", action="store_true",
                        help="continue from <out>.state/ (one file per network and neuron, written after each "
                             "of its epochs) where the settings match")
    args = parser.parse_args(argv)
    for name in ("train_samples", "epochs", "csnn_train_samples", "csnn_epochs", "csnn_channels", "csnn_T",
                 "batch_size", "eval_batch_size", "sliding_k"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be a positive integer, got {getattr(args, name)}")
    if args.test_samples is not None and args.test_samples < 1:
        parser.error(f"--test_samples must be a positive integer, got {args.test_samples}")
    return args


SETTINGS = ("nets", "neurons", "train_samples", "epochs", "csnn_train_samples", "csnn_epochs", "csnn_channels",
            "csnn_T", "test_samples", "batch_size", "lr", "sliding_k", "seed")


def summarise(runs: dict, args) -> tuple[list[dict], list[dict]]:
    """Rows (one per network and neuron) and the ratios to LIF in the same network."""
    rows = []
    for (net, name), run in runs.items():
        if not run.history:
            continue
        last = run.history[-1]
        seconds = [h["train_seconds"] for h in run.history]
        rows.append({
            "net": net, "neuron": name, "epochs_done": len(run.history), "epochs": run.epochs,
            "test_acc": last["test_acc"], "best_test_acc": max(h["test_acc"] for h in run.history),
            "train_acc": last["train_acc"], "firing_rate": last["firing_rate"],
            "seconds_per_epoch": statistics.median(seconds), "train_samples_per_second":
                last["train_samples"] / statistics.median(seconds),
            "parameters": sum(p.numel() for p in run.model.parameters()),
            "history": run.history,
        })
    ratios = []
    for net in args.nets:
        lif = next((r for r in rows if r["net"] == net and r["neuron"] == "lif"), None)
        for r in rows:
            if lif and r["net"] == net:
                ratios.append({"net": net, "neuron": r["neuron"],
                               "test_acc_minus_lif": r["test_acc"] - lif["test_acc"],
                               "time_over_lif": r["seconds_per_epoch"] / lif["seconds_per_epoch"]})
    return rows, ratios


def table(rows: list[dict], ratios: list[dict]) -> str:
    """The side-by-side table printed at the end: accuracy and time relative to LIF."""
    ratio = {(r["net"], r["neuron"]): r for r in ratios}
    head = ["net", "neuron", "test acc", "vs LIF", "s/epoch", "x LIF", "firing rate"]
    widths = (-7, -14, 9, 9, 10, 8, 13)  # negative: left-aligned
    lines = ["".join(f"{c:<{-w}}" if w < 0 else f"{c:>{w}}" for c, w in zip(head, widths))]
    for r in rows:
        q = ratio.get((r["net"], r["neuron"]))
        diff = f"{100 * q['test_acc_minus_lif']:+.1f}" if q else "-"
        slower = f"{q['time_over_lif']:.2f}x" if q else "-"
        cells = [r["net"], r["neuron"], f"{100 * r['test_acc']:.1f}%", diff, f"{r['seconds_per_epoch']:.1f}",
                 slower, f"{100 * r['firing_rate']:.1f}%"]
        lines.append("".join(f"{c:<{-w}}" if w < 0 else f"{c:>{w}}" for c, w in zip(cells, widths)))
    return "\n".join(lines)


def main(argv=None) -> dict:
    args = parse_args(argv)
    with torch_threads(args.threads):
        return _main(args)


def _main(args: argparse.Namespace) -> dict:
    out = Path(args.out) if args.out else RESULTS / "dropin_cpu.json"
    state_dir = Path(f"{out}.state")  # one file per (net, neuron): a save rewrites only the run that moved
    settings = {k: getattr(args, k) for k in SETTINGS}

    train_images, train_labels = load_fashion_mnist(args.data_dir, "train")
    test_images, test_labels = subset(*load_fashion_mnist(args.data_dir, "test"), args.test_samples, args.seed)
    data = {
        "plain": subset(train_images, train_labels, args.train_samples, args.seed),
        "csnn": subset(train_images, train_labels, args.csnn_train_samples, args.seed),
    }

    runs, skipped = {}, []
    for net in args.nets:
        for name in args.neurons:
            reason = can_run(net, name)
            if reason:
                skipped.append({"net": net, "neuron": name, "reason": reason})
                continue
            runs[(net, name)] = Run(net, name, args)
    resumed = False
    if args.resume:
        for (net, name), run in runs.items():
            path = state_dir / f"{net}-{name}.pt"
            if not path.exists():
                continue
            saved = torch.load(path, weights_only=False)
            if saved["settings"] != settings:
                print(f"{path} was written with other settings; {net}/{name} starts afresh", flush=True)
                continue
            run.load_state_dict(saved["run"])
            resumed = True
            print(f"resumed {net}/{name} after epoch {len(run.history)} from {path}", flush=True)

    started = time.perf_counter()

    def report(final: bool) -> dict:
        rows, ratios = summarise(runs, args)
        result = {
            "bench": "dropin",
            "device": "cpu",
            "device_name": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "threads": torch.get_num_threads(),
            "load_average_1min": os.getloadavg()[0],  # other processes on a shared machine skew times
            "versions": versions(),
            "complete": final,
            "resumed": resumed,
            "wall_seconds_this_session": time.perf_counter() - started,
            "settings": settings,
            "data": {"source": str(args.data_dir or DEBIAN_DIR), "train_total": len(train_labels),
                     "test": len(test_labels),
                     **({"sequential_train_per_epoch": len(data["plain"][1])}
                        if set(args.nets) & set(SEQUENTIAL) else {}),
                     **({"csnn_train_per_epoch": len(data["csnn"][1])} if "csnn" in args.nets else {})},
            "method": {
                "networks": {net: (f"spikingjelly.activation_based.examples.rsnn_sequential_fmnist.{SEQUENTIAL[net]}, "
                                   "IFNode(surrogate_function=ATan()) replaced by the neuron, input [28, N, 28]"
                                   if net in SEQUENTIAL else
                                   f"spikingjelly.activation_based.model.parametric_lif_net.FashionMNISTNet("
                                   f"channels={args.csnn_channels}, spiking_neuron=<neuron>, surrogate_function=ATan()), "
                                   f"image repeated T={args.csnn_T} times, output averaged over T")
                             for net in args.nets},
                "neurons": {name: describe_neuron(name, args) for name in args.neurons},
                "training": f"Adam lr {args.lr}, cosine annealing over the epochs, batch {args.batch_size} (drop last), "
                            "MSE of the output firing rate against the one-hot label, the same seed, initial weights "
                            "of shared layers and batch order for every neuron",
                "time": "wall time of each training epoch; neurons take turns epoch by epoch; seconds_per_epoch is "
                        "the median over epochs, time_over_lif divides it by LIF's in the same network",
                "firing_rate": "fraction of non-zero neuron outputs on the test set, all neuron layers pooled",
            },
            "results": rows,
            "ratios": ratios,
            "skipped": skipped,
        }
        write_json(str(out), result)
        return result

    total_epochs = max((run.epochs for run in runs.values()), default=0)
    for epoch in range(total_epochs):
        for (net, name), run in runs.items():
            if epoch >= run.epochs or len(run.history) > epoch:
                continue  # this net has fewer epochs, or the resumed state already holds it
            images, labels = data["csnn" if net == "csnn" else "plain"]
            train = run.train_epoch(images, labels, epoch, args)
            test = run.evaluate(test_images, test_labels, args)
            run.history.append({"epoch": epoch + 1, **train, **test})
            print(f"[{time.perf_counter() - started:7.0f}s] {net:<6}{name:<14}epoch {epoch + 1}/{run.epochs}  "
                  f"train {train['train_seconds']:6.1f}s  loss {train['train_loss']:.4f}  "
                  f"train acc {100 * train['train_acc']:5.1f}%  test acc {100 * test['test_acc']:5.1f}%  "
                  f"firing {100 * test['firing_rate']:5.1f}%", flush=True)
            # temporary name, then rename: an interrupted save never spoils the state to resume from
            state_dir.mkdir(parents=True, exist_ok=True)
            path = state_dir / f"{net}-{name}.pt"
            torch.save({"settings": settings, "run": run.state_dict()}, f"{path}.tmp")
            os.replace(f"{path}.tmp", path)
            report(final=False)

    result = report(final=True)
    print()
    print(f"SpikingJelly's Fashion-MNIST networks, neurons swapped; test acc on {len(test_labels)} test images; "
          f"{result['threads']} threads")
    print(table(result["results"], result["ratios"]))
    for s in skipped:
        print(f"skipped {s['net']}/{s['neuron']}: {s['reason']}")
    print(f"wrote {out}")
    # the run is complete; the JSON holds everything worth keeping
    for (net, name) in runs:
        (state_dir / f"{net}-{name}.pt").unlink(missing_ok=True)
    if state_dir.exists() and not any(state_dir.iterdir()):
        state_dir.rmdir()
    return result


if __name__ == "__main__":
    main()
